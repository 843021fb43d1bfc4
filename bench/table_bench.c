/*
 * Benchmark of the shared-memory routing table (not a test: run it by hand, on a quiet machine).
 *
 *   table_bench [--dir DIR] [--seconds S]
 *
 * Builds a small table (1 app, 1 domain, 2 dynos) and a large one (100k apps, 200k domains, 1M
 * dynos) in files under DIR (default /dev/shm), then measures:
 *  - lookups: hm_table_route() through a reader mapping, as a router worker calls it. In the
 *    large table hosts are drawn four ways: from the one app the small table has (the same
 *    work: this isolates the cost of the table's size from the cost of a bigger working set),
 *    from 1,000 apps,
 *    from a Zipf(1) distribution over all apps, and uniformly over every domain (the
 *    cache-hostile worst case: every lookup misses the CPU caches several times over).
 *    Reported: lookups/s on one core and the median ns of 256-lookup batches.
 *  - changes applied per second, with batches of 1, 100 and 10,000 dyno.put changes.
 *  - file bytes per dyno, and the same excluding the bytes that hold names.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/table.h"
#include "common/util.h"

#define BATCH 256

static void die(const char *what, int e)
{
	fprintf(stderr, "table_bench: %s: %s\n", what, hm_strerror(e));
	exit(1);
}

static void apply(struct hm_table_writer *w, const struct hm_change *c)
{
	int e = hm_table_apply(w, c);

	if (e == HM_EFULL)
		die("table full (caps too small)", e);
	if (e != 0)
		die("apply", e);
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

/* Builds a table of napps apps with 2 domains and dynos_per_app dynos each. */
static void build(const char *path, uint32_t napps, uint32_t dynos_per_app)
{
	struct hm_table_caps caps = {napps + 16, 2 * napps + 16, napps * dynos_per_app + 16,
				     (uint64_t)napps * (dynos_per_app * 8 + 64) + (1 << 20)};
	struct hm_table_writer *w;
	char app[32], host[64], dyno[32];
	uint64_t t0 = hm_mono_ns();
	int e;

	unlink(path);
	if ((e = hm_table_writer_open(&w, path, &caps, 0, 0)) != 0)
		die("open", e);
	hm_table_begin(w);
	for (uint32_t a = 0; a < napps; a++) {
		struct hm_change c = {.op = HM_OP_APP_PUT, .app = app};

		c.app_len = (uint8_t)snprintf(app, sizeof(app), "app-%u", a);
		apply(w, &c);
		for (int d = 0; d < 2; d++) {
			struct hm_change dc = {
			    .op = HM_OP_DOMAIN_PUT, .app = app, .app_len = c.app_len, .name = host};

			dc.name_len = (uint16_t)snprintf(
			    host, sizeof(host), "%s.app-%u.example.com", d ? "www" : "api", a);
			apply(w, &dc);
		}
		for (uint32_t y = 0; y < dynos_per_app; y++) {
			struct hm_change yc = {.op = HM_OP_DYNO_PUT,
					       .app = app,
					       .app_len = c.app_len,
					       .name = dyno,
					       .state = HM_DYNO_UP};

			yc.name_len = (uint16_t)snprintf(dyno, sizeof(dyno), "web.%u", y + 1);
			yc.addr.family = 4;
			yc.addr.ip[0] = 10;
			yc.addr.ip[1] = (uint8_t)(a >> 8);
			yc.addr.ip[2] = (uint8_t)a;
			yc.addr.ip[3] = (uint8_t)y;
			yc.addr.port = (uint16_t)(5000 + y);
			apply(w, &yc);
		}
	}
	if ((e = hm_table_commit(w, 1, 1)) != 0)
		die("commit", e);
	printf("built %s: %u apps, %u domains, %u dynos in %.2f s\n", path, napps, 2 * napps,
	       napps * dynos_per_app, (double)(hm_mono_ns() - t0) / 1e9);
	hm_table_writer_close(w);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Zipf(1) over n ranks by inverse transform on the harmonic numbers (approximation). */
static uint32_t zipf(uint32_t n)
{
	double u = (double)(rng() >> 11) / 9007199254740992.0;
	double hn = log((double)n) + 0.5772156649;
	uint32_t k = (uint32_t)exp(u * hn);

	return k >= 1 && k <= n ? k - 1 : 0;
}

static double lookups(const char *path, uint32_t napps, bool use_zipf, double seconds,
		      const char *label)
{
	struct hm_table_reader *r;
	struct hm_table_map *m;
	struct hm_route out;
	struct hm_pick pick = {0};
	size_t nhosts = 65536, nsamples = 0, cap = 1 << 20;
	char(*hosts)[64] = malloc(nhosts * 64);
	size_t *lens = malloc(nhosts * sizeof(size_t));
	double *samples = malloc(cap * sizeof(double));
	uint64_t total = 0, t_end, t_all = hm_mono_ns(), misses = 0;

	if (hm_table_reader_new(&r, path) != 0 || (m = hm_table_reader_map(r)) == NULL)
		die("reader", HM_ENOTABLE);
	/* Host strings are prepared up front so only the lookup is timed. */
	for (size_t i = 0; i < nhosts; i++) {
		uint32_t a = use_zipf ? zipf(napps) : (uint32_t)(rng() % napps);

		lens[i] = (size_t)snprintf(hosts[i], 64, "%s.app-%u.example.com",
					   rng() & 1 ? "www" : "api", a);
	}
	t_end = hm_mono_ns() + (uint64_t)(seconds * 1e9);
	for (size_t i = 0; hm_mono_ns() < t_end && nsamples < cap;) {
		uint64_t t0 = hm_mono_ns();

		for (int k = 0; k < BATCH; k++, i++) {
			size_t h = i & (nhosts - 1);

			pick.rnd = i;
			m = hm_table_reader_map(r);
			if (hm_table_route(m, hosts[h], lens[h], &pick, &out) != 0 || !out.has_dyno)
				misses++;
		}
		samples[nsamples++] = (double)(hm_mono_ns() - t0) / BATCH;
		total += BATCH;
	}
	t_all = hm_mono_ns() - t_all;
	qsort(samples, nsamples, sizeof(double), cmp_double);
	double med = samples[nsamples / 2];
	printf("  %-34s %10.0f lookups/s   median %6.1f ns   p99 %6.1f ns%s\n", label,
	       (double)total / ((double)t_all / 1e9), med, samples[nsamples * 99 / 100],
	       misses ? "   (MISSES!)" : "");
	hm_table_reader_free(r);
	free(hosts);
	free(lens);
	free(samples);
	return med;
}

static void changes_per_second(const char *path, uint32_t batch_size, double seconds)
{
	struct hm_table_writer *w;
	char dyno[32];
	uint64_t n = 0, seq = 2, t0, t_end;
	int e;

	if ((e = hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0)) != 0)
		die("resume", e);
	t0 = hm_mono_ns();
	t_end = t0 + (uint64_t)(seconds * 1e9);
	while (hm_mono_ns() < t_end) {
		hm_table_begin(w);
		for (uint32_t i = 0; i < batch_size; i++, n++) {
			uint32_t a = (uint32_t)(rng() % 100000);
			char app[32];
			struct hm_change c = {.op = HM_OP_DYNO_PUT,
					      .app = app,
					      .name = dyno,
					      .state = (uint8_t)(1 + rng() % 4)};

			c.app_len = (uint8_t)snprintf(app, sizeof(app), "app-%u", a);
			c.name_len = (uint16_t)snprintf(dyno, sizeof(dyno), "web.%u",
							(unsigned)(1 + rng() % 10));
			c.addr.family = 4;
			c.addr.ip[0] = 10;
			c.addr.port = (uint16_t)(1 + rng() % 60000);
			apply(w, &c);
		}
		if ((e = hm_table_commit(w, 1, seq++)) != 0)
			die("commit", e);
	}
	printf("  batches of %-6u %12.0f changes/s (%llu changes)\n", batch_size,
	       (double)n / ((double)(hm_mono_ns() - t0) / 1e9), (unsigned long long)n);
	hm_table_writer_close(w);
}

static uint64_t file_bytes(uint32_t apps, uint32_t domains, uint32_t dynos, uint64_t heap)
{
	struct hm_table_caps caps = {apps, domains, dynos, heap};
	struct hm_table_writer *w;
	struct hm_table_info info;

	if (hm_table_writer_open(&w, NULL, &caps, 0, 0) != 0)
		die("open", -ENOMEM);
	hm_table_writer_info(w, &info);
	hm_table_writer_close(w);
	return info.file_bytes;
}

int main(int argc, char **argv)
{
	const char *dir = "/dev/shm";
	double seconds = 3;
	char small[256], large[256];

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--dir") == 0)
			dir = argv[i + 1];
		else if (strcmp(argv[i], "--seconds") == 0)
			seconds = atof(argv[i + 1]);
	}
	snprintf(small, sizeof(small), "%s/hermod-bench-small.table", dir);
	snprintf(large, sizeof(large), "%s/hermod-bench-large.table", dir);

	build(small, 1, 2);
	build(large, 100000, 10);
	printf("lookups (one core, hm_table_route incl. dyno choice):\n");
	double s = lookups(small, 1, false, seconds, "1 app");
	double s1 = lookups(large, 1, false, seconds, "100k apps/1M dynos, the same 1 app");
	double s1k = lookups(large, 1000, false, seconds, "100k apps/1M dynos, 1k hot apps");
	double z = lookups(large, 100000, true, seconds, "100k apps/1M dynos, Zipf(1) hosts");
	double u = lookups(large, 100000, false, seconds, "100k apps/1M dynos, uniform hosts");
	printf(
	    "  large/small median: same app %.2fx, 1k hot apps %.2fx, Zipf %.2fx, uniform %.2fx\n",
	    s1 / s, s1k / s, z / s, u / s);

	printf("changes applied (dyno.put on the large table):\n");
	changes_per_second(large, 1, seconds);
	changes_per_second(large, 100, seconds);
	changes_per_second(large, 10000, seconds);

	/* Bytes per dyno: the difference between two files that differ only in dyno capacity. */
	uint64_t with = file_bytes(100000, 200000, 1000000, 64 << 20);
	uint64_t without = file_bytes(100000, 200000, 1, 64 << 20);
	double per = (double)(with - without) / 1e6;
	printf("file bytes per dyno (two copies, hash, counters): %.1f; excluding inline names "
	       "(2 x 28 B): %.1f\n",
	       per, per - 56);
	printf(
	    "(per-app dyno arrays live in the heap: 4 B per dyno per copy, up to 2x for growth)\n");
	unlink(small);
	unlink(large);
	return 0;
}
