/*
 * Benchmark of the node's certificate store (not a test: run it by hand, on a quiet machine).
 *
 *   certstore_bench [--dir DIR] [--seconds S]
 *
 * Builds stores of 1,000 and 100,000 certificates in files under DIR (default /dev/shm), with
 * entries of the sizes real ones have (an ECDSA P-256 leaf and intermediate as PEM, 2.3 KiB, and
 * its key, 241 bytes; every fifth entry RSA 2048: 3.8 KiB of chain, a 1.7 KiB key; 120 bytes of
 * metadata; one name in ten a wildcard), then measures through a reader mapping, as a router
 * worker calls it:
 *  - lookups (hm_certstore_lookup: the SNI selection, no copy): the same name in the small and
 *    the large store (the cost of the store's size alone), names drawn uniformly from all
 *    (every lookup a likely cache miss), wildcard matches and default fall-backs;
 *  - a fetch (copy and checksum of one entry's chain and key: a worker's cache miss);
 *  - a commit of one changed certificate in the large store (the time until new handshakes see
 *    it), and puts per second when loading the large store in one batch (a snapshot);
 *  - memory: file bytes and bytes actually allocated (tmpfs blocks) per certificate, against
 *    the entry's own bytes;
 *  - the admin `certs` listing of the large store in 70 parts (its slices of 256 KiB of JSON
 *    hold about 1,430 entries), each entry formatted as a line: each part resumed from a cursor
 *    (hm_certstore_list) against each part skipping the entries listed before it (foreach),
 *    which is how syncd/admin.c listed them until the cursor.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/util.h"

#define BATCH 256

static void die(const char *what, int e)
{
	fprintf(stderr, "certstore_bench: %s: %s\n", what, hm_strerror(e));
	exit(1);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static char chain[4000], key[1800], meta[120];

/* The name of entry i: one in ten a wildcard. */
static int entry_name(uint32_t i, char *out, size_t n)
{
	return snprintf(out, n, i % 10 == 9 ? "*.app%u.example%u.com" : "app%u.example%u.com", i,
			i % 97);
}

static void put_entry(struct hm_certstore_writer *w, uint32_t i, uint32_t version)
{
	char name[64];
	bool rsa = i % 5 == 4;
	struct hm_cert_put p = {.name = name,
				.name_len = (size_t)entry_name(i, name, sizeof(name)),
				.cert = chain,
				.cert_len = rsa ? 3800 : 2300,
				.key = key,
				.key_len = rsa ? 1704 : 241,
				.meta = meta,
				.meta_len = sizeof(meta),
				.not_after = 1800000000 + i};
	uint64_t h = ((uint64_t)i << 32) | version;
	int e;

	memcpy(p.id, &h, sizeof(h));
	if ((e = hm_certstore_put(w, &p)) != 0)
		die("put", e);
}

struct store {
	char path[300];
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r;
	struct hm_certstore_map *m;
	uint32_t n;
	double load_s;
};

static void build(struct store *s, const char *dir, const char *name, uint32_t n)
{
	struct hm_certstore_caps caps = {n + n / 4, (uint64_t)n * 4096 + (1u << 20)};
	uint64_t t0;
	int e;

	snprintf(s->path, sizeof(s->path), "%s/%s", dir, name);
	s->n = n;
	if ((e = hm_certstore_writer_open(&s->w, s->path, &caps, 0, 0)) != 0)
		die("open", e);
	t0 = hm_mono_ns();
	if ((e = hm_certstore_begin(s->w)) != 0)
		die("begin", e);
	for (uint32_t i = 0; i < n; i++)
		put_entry(s->w, i, 0);
	{
		struct hm_cert_put d = {.name = "default",
					.name_len = 7,
					.cert = chain,
					.cert_len = 2300,
					.key = key,
					.key_len = 241,
					.not_after = 1800000000};

		if ((e = hm_certstore_put(s->w, &d)) != 0)
			die("put default", e);
	}
	if ((e = hm_certstore_commit(s->w, 1, 1)) != 0)
		die("commit", e);
	s->load_s = (double)(hm_mono_ns() - t0) / 1e9;
	if ((e = hm_certstore_reader_new(&s->r, s->path)) != 0 ||
	    (e = hm_certstore_reader_check(s->r)) < 0)
		die("reader", e);
	s->m = hm_certstore_reader_map(s->r);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Median ns per lookup over 256-lookup batches for `seconds`; names from next(). */
static double lookups(struct store *s, double seconds, void (*next)(uint32_t n, char *out),
		      uint8_t want)
{
	static uint64_t batches[1 << 16];
	char names[BATCH][80];
	size_t lens[BATCH], nb = 0;
	uint64_t start = hm_mono_ns();
	struct hm_cert_ref ref;

	while (nb < (1 << 16) && (double)(hm_mono_ns() - start) < seconds * 1e9) {
		uint64_t t0;

		for (int i = 0; i < BATCH; i++) {
			next(s->n, names[i]);
			lens[i] = strlen(names[i]);
		}
		t0 = hm_mono_ns();
		for (int i = 0; i < BATCH; i++) {
			struct hm_certstore_map *m = hm_certstore_reader_map(s->r);

			if (hm_certstore_lookup(m, names[i], lens[i], &ref) != 0 ||
			    ref.match != want)
				die("lookup missed", -ENOENT);
		}
		batches[nb++] = (hm_mono_ns() - t0);
	}
	qsort(batches, nb, sizeof(batches[0]), cmp_u64);
	return (double)batches[nb / 2] / BATCH;
}

static void same_name(uint32_t n, char *out)
{
	(void)n;
	strcpy(out, "app1.example1.com");
}

static void uniform_exact(uint32_t n, char *out)
{
	uint32_t i = (uint32_t)(rng() % n);

	if (i % 10 == 9)
		i--;
	entry_name(i, out, 80);
}

static void uniform_wildcard(uint32_t n, char *out)
{
	uint32_t i = (uint32_t)(rng() % (n / 10)) * 10 + 9;

	/* a name one label below the wildcard "*.app<i>.example<j>.com" */
	snprintf(out, 80, "x.app%u.example%u.com", i, i % 97);
}

static void unknown(uint32_t n, char *out)
{
	snprintf(out, 80, "nothing%u.example.org", (uint32_t)(rng() % n));
}

static double fetch_ns(struct store *s, double seconds)
{
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	uint64_t start = hm_mono_ns(), n = 0, t = 0;
	struct hm_cert_ref ref;
	struct hm_cert_bytes b;
	char name[80];
	int e;

	while ((double)(hm_mono_ns() - start) < seconds * 1e9) {
		uint64_t t0;

		uniform_exact(s->n, name);
		if ((e = hm_certstore_lookup(s->m, name, strlen(name), &ref)) != 0)
			die("lookup", e);
		t0 = hm_mono_ns();
		if ((e = hm_certstore_fetch(s->m, &ref, buf, sizeof(buf), &b)) != 0)
			die("fetch", e);
		t += hm_mono_ns() - t0;
		n++;
	}
	return (double)t / (double)n;
}

/* One certificate replaced per commit, in the large store: median us from begin to published. */
static double commit_us(struct store *s, int rounds)
{
	static uint64_t t[1000];
	int e;

	for (int i = 0; i < rounds; i++) {
		uint64_t t0 = hm_mono_ns();

		if ((e = hm_certstore_begin(s->w)) != 0)
			die("begin", e);
		put_entry(s->w, (uint32_t)(rng() % s->n), (uint32_t)i + 1);
		if ((e = hm_certstore_commit(s->w, 1, 2 + (uint64_t)i)) != 0) {
			hm_certstore_abort(s->w);
			if ((e = hm_certstore_grow(s->w, NULL)) != 0)
				die("grow", e);
			i--;
			continue;
		}
		t[i] = hm_mono_ns() - t0;
	}
	qsort(t, (size_t)rounds, sizeof(t[0]), cmp_u64);
	return (double)t[rounds / 2] / 1e3;
}

#define LIST_PARTS 70

/* A part of a listing: `skip` entries passed over, then up to `left` formatted. */
struct part {
	uint32_t skip, left, listed;
	char out[512];
	size_t bytes;
};

static int part_cb(void *ctx, const struct hm_cert_entry *e)
{
	struct part *p = ctx;
	int n;

	if (p->skip > 0) {
		p->skip--;
		return 0;
	}
	n = snprintf(p->out, sizeof(p->out), "{\"name\":\"%s\",\"not_after\":%lld,\"meta\":%zu}",
		     e->name, (long long)e->not_after, e->meta_len);
	p->bytes += (size_t)n;
	p->listed++;
	return --p->left == 0 ? 1 : 0;
}

/* Milliseconds to list the whole store in LIST_PARTS parts, resumed by a cursor or by skipping;
 * the median of `rounds`. */
static double listing_ms(struct store *s, bool cursor, int rounds)
{
	static uint64_t t[16];
	struct hm_certstore_info info;
	uint32_t per;

	hm_certstore_writer_info(s->w, &info);
	per = (info.certs + LIST_PARTS - 1) / LIST_PARTS;
	for (int k = 0; k < rounds; k++) {
		struct hm_certstore_cursor cur;
		struct part p = {0};
		uint64_t t0 = hm_mono_ns();
		int r;

		hm_certstore_cursor_init(&cur, s->w);
		do {
			p.skip = cursor ? 0 : p.listed;
			p.left = per;
			r = cursor ? hm_certstore_list(s->w, &cur, part_cb, &p)
				   : hm_certstore_foreach(s->w, part_cb, &p);
			if (r < 0)
				die("list", r);
		} while (r != 0);
		t[k] = hm_mono_ns() - t0;
		if (p.listed != info.certs)
			die("list: not every entry", -EPROTO);
	}
	qsort(t, (size_t)rounds, sizeof(t[0]), cmp_u64);
	return (double)t[rounds / 2] / 1e6;
}

int main(int argc, char **argv)
{
	const char *base = "/dev/shm";
	double seconds = 1;
	char dir[256];
	struct store small, large;
	struct hm_certstore_info info;
	struct stat st;
	double payload;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else {
			fprintf(stderr, "usage: certstore_bench [--dir DIR] [--seconds S]\n");
			return 2;
		}
	}
	snprintf(dir, sizeof(dir), "%s/hermod-certstore-bench-XXXXXX", base);
	if (mkdtemp(dir) == NULL)
		die("mkdtemp", -errno);
	memset(chain, 'c', sizeof(chain));
	memset(key, 'k', sizeof(key));
	memset(meta, 'm', sizeof(meta));
	build(&small, dir, "small", 1000);
	build(&large, dir, "large", 100000);

	printf("lookups (ns, median of %d-lookup batches)    1,000 certs   100,000 certs   ratio\n",
	       BATCH);
	{
		double a = lookups(&small, seconds, same_name, HM_CERT_EXACT),
		       b = lookups(&large, seconds, same_name, HM_CERT_EXACT);

		printf("  the same name                           %8.1f      %8.1f      %.2fx\n", a,
		       b, b / a);
		a = lookups(&small, seconds, uniform_exact, HM_CERT_EXACT);
		b = lookups(&large, seconds, uniform_exact, HM_CERT_EXACT);
		printf("  uniform over all names (exact)          %8.1f      %8.1f      %.2fx\n", a,
		       b, b / a);
		a = lookups(&small, seconds, uniform_wildcard, HM_CERT_WILDCARD);
		b = lookups(&large, seconds, uniform_wildcard, HM_CERT_WILDCARD);
		printf("  uniform, matched by a wildcard          %8.1f      %8.1f      %.2fx\n", a,
		       b, b / a);
		a = lookups(&small, seconds, unknown, HM_CERT_DEFAULT);
		b = lookups(&large, seconds, unknown, HM_CERT_DEFAULT);
		printf("  unknown names (default)                 %8.1f      %8.1f      %.2fx\n", a,
		       b, b / a);
	}
	printf("fetch of one entry (copy + CRC-32C of chain and key), large store: %.0f ns\n",
	       fetch_ns(&large, seconds));
	printf("one certificate replaced and published, large store: %.1f us (median of 1000)\n",
	       commit_us(&large, 1000));
	printf("loading 100,000 certificates in one batch: %.2f s (%.0f puts/s)\n", large.load_s,
	       large.n / large.load_s);
	{
		double skip = listing_ms(&large, false, 5), cur = listing_ms(&large, true, 5);

		printf("listing 100,000 certificates in %d parts (median of 5): skipping %.1f ms, "
		       "cursor %.1f ms (%.1fx)\n",
		       LIST_PARTS, skip, cur, skip / cur);
	}
	hm_certstore_writer_info(large.w, &info);
	if (stat(large.path, &st) != 0)
		die("stat", -errno);
	{
		/* the entries' own bytes: name, chain, key, metadata */
		double sum = 0;

		for (uint32_t i = 0; i < large.n; i++) {
			char name[64];

			sum += entry_name(i, name, sizeof(name)) - (i % 10 == 9 ? 2 : 0);
			sum += (i % 5 == 4 ? 3800 + 1704 : 2300 + 241) + sizeof(meta);
		}
		payload = sum / large.n;
	}
	printf("memory per certificate (100,000): entry bytes %.0f; heap used %.0f; file %.0f "
	       "(sparse), allocated %.0f (index %.0f = 2 x (128 + 2 x 8) x caps/certs)\n",
	       payload, (double)info.heap_used / info.certs, (double)info.file_bytes / info.certs,
	       (double)st.st_blocks * 512 / info.certs,
	       (double)(info.file_bytes - info.caps.heap) / info.certs);
	hm_certstore_reader_free(small.r);
	hm_certstore_reader_free(large.r);
	hm_certstore_writer_close(small.w);
	hm_certstore_writer_close(large.w);
	{
		char cmd[300];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "certstore_bench: could not remove %s\n", dir);
	}
	return 0;
}
