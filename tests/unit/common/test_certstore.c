/*
 * Tests common/certstore.c: SNI selection rules, every operation and its errors, abort, the
 * digest, ticket keys, the soonest expiry, growth (readers follow the replaced file), 100k
 * certificates, resume after a writer died mid-batch, the file checks (truncated, garbage,
 * squatted, loosened mode), corruption, listing in parts with a cursor, and two multi-process
 * tests: a reader process checking every fetched entry against one put while a writer rotates
 * entries, and a writer SIGKILLed at random moments.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/pubfile.h"
#include "common/util.h"
#include "tests/unit/common/sigbus.h"
#include "tests/unit/hm_check.h"

static char dir[64];
static char path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-test-certs-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/hermod.certs", dir);
}

static void teardown(void)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- entries whose bytes say what they are ---- */

/* Entry content for (name, version): the chain and key name both, so a torn read shows; the
 * chain's length varies with the version so that rotations move blobs between size classes. */
struct content {
	char cert[8192];
	char key[256];
	char meta[64];
	struct hm_cert_put p;
};

static void fill_id(uint8_t id[HM_CERT_ID_LEN], const char *name, uint32_t version)
{
	uint64_t h = 1469598103934665603ull ^ version;

	for (const char *s = name; *s != '\0'; s++)
		h = (h ^ (uint8_t)*s) * 1099511628211ull;
	for (int i = 0; i < HM_CERT_ID_LEN; i++) {
		h = h * 6364136223846793005ull + 1442695040888963407ull;
		id[i] = (uint8_t)(h >> 56);
	}
}

static const struct hm_cert_put *content(struct content *c, const char *name, uint32_t version)
{
	int n = snprintf(c->cert, sizeof(c->cert), "CERT %s v%u|", name, version);
	size_t len = (size_t)n + (version * 37u) % 3000u;

	memset(c->cert + n, 'c', len - (size_t)n);
	snprintf(c->key, sizeof(c->key), "KEY %s v%u|", name, version);
	snprintf(c->meta, sizeof(c->meta), "META %s", name);
	memset(&c->p, 0, sizeof(c->p));
	c->p.name = name;
	c->p.name_len = strlen(name);
	c->p.cert = c->cert;
	c->p.cert_len = len;
	c->p.key = c->key;
	c->p.key_len = strlen(c->key);
	c->p.meta = c->meta;
	c->p.meta_len = strlen(c->meta);
	c->p.not_after = 1700000000 + version;
	fill_id(c->p.id, name, version);
	return &c->p;
}

/*
 * Runs fill in one batch committed at seq; when the store is full, aborts, grows it and runs the
 * batch again (what the edge does). Returns 0 or the first error. No ck_assert: the
 * multi-process tests call it in children (see test_table.c).
 */
static int batch(struct hm_certstore_writer *w, uint64_t seq,
		 int (*fill)(struct hm_certstore_writer *w, uint64_t seq, const void *arg),
		 const void *arg)
{
	int e;

	for (int tries = 0; tries < 2; tries++) {
		if ((e = hm_certstore_begin(w)) != 0)
			return e;
		if ((e = fill(w, seq, arg)) == 0)
			return hm_certstore_commit(w, 1, seq);
		hm_certstore_abort(w);
		if (e != -ENOSPC || (e = hm_certstore_grow(w, NULL)) != 0)
			return e;
	}
	return -ENOSPC;
}

struct put_arg {
	const char *name;
	uint32_t version;
};

static int fill_put(struct hm_certstore_writer *w, uint64_t seq, const void *arg)
{
	const struct put_arg *a = arg;
	struct content c;

	(void)seq;
	return hm_certstore_put(w, content(&c, a->name, a->version));
}

/* One put in its own batch, growing the store when it is full. */
static int put1(struct hm_certstore_writer *w, const char *name, uint32_t version, uint64_t seq)
{
	struct put_arg a = {name, version};

	return batch(w, seq, fill_put, &a);
}

/* A put under a name spelled otherwise than its canonical form (which the bytes carry). */
static int put_as(struct hm_certstore_writer *w, const char *given, const char *canonical,
		  uint32_t version, uint64_t seq)
{
	struct content c;
	int e = hm_certstore_begin(w);

	content(&c, canonical, version);
	c.p.name = given;
	c.p.name_len = strlen(given);
	if (e == 0 && (e = hm_certstore_put(w, &c.p)) != 0) {
		hm_certstore_abort(w);
		return e;
	}
	return e != 0 ? e : hm_certstore_commit(w, 1, seq);
}

static int rm1(struct hm_certstore_writer *w, const char *name, uint64_t seq)
{
	int e = hm_certstore_begin(w);

	if (e == 0 && (e = hm_certstore_rm(w, name, strlen(name))) != 0) {
		hm_certstore_abort(w);
		return e;
	}
	return e != 0 ? e : hm_certstore_commit(w, 1, seq);
}

/* Looks host up and fetches the entry; returns 0 and what the bytes say, or an error. */
static int get(struct hm_certstore_reader *r, const char *host, struct hm_cert_ref *ref, char *name,
	       uint32_t *version)
{
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	struct hm_certstore_map *m = hm_certstore_reader_map(r);
	struct hm_cert_bytes b;
	char kname[300];
	uint32_t kv;
	int e;

	if (m == NULL)
		return -ENOENT;
	if ((e = hm_certstore_lookup(m, host, strlen(host), ref)) != 0)
		return e;
	if ((e = hm_certstore_fetch(m, ref, buf, sizeof(buf), &b)) != 0)
		return e;
	ck_assert_uint_eq(b.cert_len, ref->cert_len);
	ck_assert_int_eq(sscanf((const char *)b.cert, "CERT %255s v%u|", name, version), 2);
	ck_assert_int_eq(sscanf((const char *)b.key, "KEY %299s v%u|", kname, &kv), 2);
	ck_assert_str_eq(name, kname);
	ck_assert_uint_eq(*version, kv);
	return 0;
}

static void expect(struct hm_certstore_reader *r, const char *host, const char *name,
		   uint32_t version, uint8_t match)
{
	struct hm_cert_ref ref;
	char got[300];
	uint32_t v;
	uint8_t id[HM_CERT_ID_LEN];

	ck_assert_msg(get(r, host, &ref, got, &v) == 0, "no certificate for %s", host);
	ck_assert_msg(strcmp(got, name) == 0, "%s got %s, want %s", host, got, name);
	ck_assert_uint_eq(v, version);
	ck_assert_uint_eq(ref.match, match);
	fill_id(id, name, version);
	ck_assert_mem_eq(ref.id, id, HM_CERT_ID_LEN);
	ck_assert_int_eq(ref.not_after, 1700000000 + version);
}

/* A store at path with a.example.com and b.example.com (version 1 each); what it holds in
 * *info. */
static void store_ab(struct hm_certstore_info *info)
{
	struct hm_certstore_writer *w;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 1, 1), 0);
	ck_assert_int_eq(put1(w, "b.example.com", 1, 2), 0);
	hm_certstore_writer_info(w, info);
	hm_certstore_writer_close(w);
}

static struct hm_certstore_reader *reader(void)
{
	struct hm_certstore_reader *r;

	ck_assert_int_eq(hm_certstore_reader_new(&r, path), 0);
	return r;
}

START_TEST(selection_rules)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_cert_ref ref;
	const char *longname = "a-rather-long-label-for-a-name.and-another-long-label.example.org";
	char longwild[128], longsub[128];

	ck_assert_ptr_null(hm_certstore_reader_map(r));
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 1, 1), 0);
	ck_assert_int_eq(put_as(w, "*.Example.COM.", "*.example.com", 2, 2), 0);
	ck_assert_int_eq(put1(w, "*.b.example.com", 3, 3), 0);
	ck_assert_int_eq(put1(w, longname, 4, 4), 0);
	snprintf(longwild, sizeof(longwild), "*.%s", longname);
	ck_assert_int_eq(put1(w, longwild, 5, 5), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);

	/* No default yet: no match is -ENOENT (the handshake's unrecognized_name). */
	ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r), "x.org", 5, &ref),
			 -ENOENT);
	ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r), "", 0, &ref), -ENOENT);
	ck_assert_int_eq(put_as(w, "DEFAULT", "default", 6, 6), 0);

	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);
	expect(r, "x.example.com", "*.example.com", 2, HM_CERT_WILDCARD);
	/* one label deep only: neither deeper names nor the bare domain */
	expect(r, "x.y.example.com", "default", 6, HM_CERT_DEFAULT);
	expect(r, "example.com", "default", 6, HM_CERT_DEFAULT);
	expect(r, "c.b.example.com", "*.b.example.com", 3, HM_CERT_WILDCARD);
	expect(r, "b.example.com", "*.example.com", 2, HM_CERT_WILDCARD);
	expect(r, longname, longname, 4, HM_CERT_EXACT);
	snprintf(longsub, sizeof(longsub), "zz.%s", longname);
	expect(r, longsub, longwild, 5, HM_CERT_WILDCARD);
	expect(r, "", "default", 6, HM_CERT_DEFAULT);
	expect(r, ".example.com", "default", 6, HM_CERT_DEFAULT);
	expect(r, "com", "default", 6, HM_CERT_DEFAULT);

	/* Removing the exact entry falls back to the wildcard; removing default to nothing. */
	ck_assert_int_eq(rm1(w, "A.example.com", 7), 0);
	expect(r, "a.example.com", "*.example.com", 2, HM_CERT_WILDCARD);
	ck_assert_int_eq(rm1(w, "default", 8), 0);
	ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r), "x.org", 5, &ref),
			 -ENOENT);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

START_TEST(operations_and_errors)
{
	struct hm_certstore_writer *w, *w2;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_map *m;
	struct hm_cert_ref ref, ref2;
	struct hm_cert_bytes b;
	struct hm_certstore_info info;
	struct content c;
	struct hm_cert_put p;
	uint8_t buf[16384];
	char name[300];
	uint32_t v;
	struct stat st;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_certstore_writer_open(&w2, path, NULL, 0, 0), -EBUSY);
	/* The file appears with the first commit, mode 0600. */
	ck_assert_int_ne(stat(path, &st), 0);
	ck_assert_int_eq(hm_certstore_put(w, content(&c, "a.example.com", 1)), -EINVAL);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_begin(w), -EBUSY);
	p = *content(&c, "bad name.example.com", 1);
	ck_assert_int_eq(hm_certstore_put(w, &p), HM_EHOSTNAME);
	p = *content(&c, "*.*.example.com", 1);
	ck_assert_int_eq(hm_certstore_put(w, &p), HM_EHOSTNAME);
	p = *content(&c, "a.example.com", 1);
	p.cert_len = 0;
	ck_assert_int_eq(hm_certstore_put(w, &p), -EINVAL);
	p = *content(&c, "a.example.com", 1);
	p.cert_len = HM_CERT_CHAIN_MAX + 1;
	ck_assert_int_eq(hm_certstore_put(w, &p), -EINVAL);
	p = *content(&c, "a.example.com", 1);
	p.key_len = 0;
	ck_assert_int_eq(hm_certstore_put(w, &p), -EINVAL);
	ck_assert_int_eq(hm_certstore_rm(w, "nope.example.com", 16), -ENOENT);
	ck_assert_int_eq(hm_certstore_put(w, content(&c, "a.example.com", 1)), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 7, 42), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);

	m = hm_certstore_reader_map(r);
	ck_assert_ptr_nonnull(m);
	hm_certstore_map_info(m, &info);
	ck_assert_uint_eq(info.epoch, 7);
	ck_assert_uint_eq(info.seq, 42);
	ck_assert_uint_eq(info.certs, 1);
	ck_assert_int_eq(hm_certstore_lookup(m, "a.example.com", 13, &ref), 0);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, 10, &b), -ENOBUFS);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b), 0);
	ck_assert_mem_eq(b.cert, c.cert, c.p.cert_len);
	ck_assert_mem_eq(b.key, c.key, c.p.key_len);
	ck_assert_uint_eq(b.key_len, c.p.key_len);

	/* A replacement: new generation and id; the old reference is stale, not wrong. */
	ck_assert_int_eq(put1(w, "a.example.com", 2, 43), 0);
	ck_assert_uint_ne(hm_certstore_map_version(m), ref.version);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b), -ESTALE);
	ck_assert_int_eq(hm_certstore_lookup(m, "a.example.com", 13, &ref2), 0);
	ck_assert_uint_ne(ref2.gen, ref.gen);
	ck_assert_mem_ne(ref2.id, ref.id, HM_CERT_ID_LEN);
	ck_assert_int_eq(get(r, "a.example.com", &ref2, name, &v), 0);
	ck_assert_uint_eq(v, 2);
	ck_assert_int_eq(rm1(w, "a.example.com", 44), 0);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref2, buf, sizeof(buf), &b), -ESTALE);
	ck_assert_int_eq(rm1(w, "a.example.com", 45), -ENOENT);
	hm_certstore_writer_info(w, &info);
	ck_assert_uint_eq(info.certs, 0);
	ck_assert_uint_eq(info.heap_used, 0);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

static int count_cb(void *ctx, const struct hm_cert_entry *e)
{
	(void)e;
	(*(int *)ctx)++;
	return 0;
}

START_TEST(abort_restores_the_published_version)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_info before, after;
	struct hm_ticket_key k = {{1}, {2}, {3}};
	struct content c;
	int n = 0;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	for (int i = 0; i < 20; i++) {
		char name[32];

		snprintf(name, sizeof(name), "h%d.example.com", i);
		ck_assert_int_eq(put1(w, name, 1, (uint64_t)i + 1), 0);
	}
	ck_assert_int_eq(put1(w, "default", 1, 21), 0);
	hm_certstore_writer_info(w, &before);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_put(w, content(&c, "h3.example.com", 9)), 0);
	ck_assert_int_eq(hm_certstore_put(w, content(&c, "new.example.com", 9)), 0);
	ck_assert_int_eq(hm_certstore_rm(w, "h4.example.com", 14), 0);
	ck_assert_int_eq(hm_certstore_rm(w, "default", 7), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, &k, 1), 0);
	hm_certstore_abort(w);
	hm_certstore_writer_info(w, &after);
	ck_assert_mem_eq(before.digest, after.digest, sizeof(before.digest));
	ck_assert_uint_eq(before.certs, after.certs);
	ck_assert_uint_eq(before.heap_used, after.heap_used);
	ck_assert_uint_eq(after.ticket_keys, 0);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "h3.example.com", "h3.example.com", 1, HM_CERT_EXACT);
	expect(r, "h4.example.com", "h4.example.com", 1, HM_CERT_EXACT);
	expect(r, "new.example.com", "default", 1, HM_CERT_DEFAULT);
	ck_assert_int_eq(hm_certstore_foreach(w, count_cb, &n), 0);
	ck_assert_int_eq(n, 21);
	/* The space the aborted batch took is used again: the heap does not creep. */
	for (int i = 0; i < 50; i++) {
		ck_assert_int_eq(hm_certstore_begin(w), 0);
		ck_assert_int_eq(hm_certstore_put(w, content(&c, "new.example.com", 9)), 0);
		hm_certstore_abort(w);
	}
	ck_assert_int_eq(put1(w, "new.example.com", 9, 22), 0);
	expect(r, "new.example.com", "new.example.com", 9, HM_CERT_EXACT);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

START_TEST(digest_depends_on_the_set_only)
{
	struct hm_certstore_writer *a, *b;
	struct hm_certstore_info ia, ib;
	uint8_t sum[HM_CERTSTORE_DIGEST_LEN], zero[HM_CERTSTORE_DIGEST_LEN] = {0};

	ck_assert_int_eq(hm_certstore_writer_open(&a, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_certstore_writer_open(&b, NULL, NULL, 0, 0), 0);
	hm_certstore_writer_info(a, &ia);
	ck_assert_mem_eq(ia.digest, zero, sizeof(zero));
	/* a: x1, y1, *.z1, default1; b: the same set reached another way. */
	ck_assert_int_eq(put1(a, "x.example.com", 1, 1), 0);
	ck_assert_int_eq(put1(a, "y.example.com", 1, 2), 0);
	ck_assert_int_eq(put1(a, "*.z.example.com", 1, 3), 0);
	ck_assert_int_eq(put1(a, "default", 1, 4), 0);
	ck_assert_int_eq(put1(b, "default", 5, 1), 0);
	ck_assert_int_eq(put1(b, "*.z.example.com", 1, 2), 0);
	ck_assert_int_eq(put1(b, "gone.example.com", 1, 3), 0);
	ck_assert_int_eq(put1(b, "y.example.com", 2, 4), 0);
	ck_assert_int_eq(put1(b, "x.example.com", 1, 5), 0);
	ck_assert_int_eq(put1(b, "y.example.com", 1, 6), 0);
	ck_assert_int_eq(rm1(b, "gone.example.com", 7), 0);
	ck_assert_int_eq(put1(b, "default", 1, 8), 0);
	hm_certstore_writer_info(a, &ia);
	hm_certstore_writer_info(b, &ib);
	ck_assert_mem_eq(ia.digest, ib.digest, sizeof(ia.digest));
	ck_assert_mem_ne(ia.digest, zero, sizeof(zero));
	/* Another content (id) under the same name changes it; the kind of name does too. */
	ck_assert_int_eq(put1(b, "x.example.com", 2, 9), 0);
	hm_certstore_writer_info(b, &ib);
	ck_assert_mem_ne(ia.digest, ib.digest, sizeof(ia.digest));
	ck_assert_int_eq(put1(b, "x.example.com", 1, 10), 0);
	ck_assert_int_eq(rm1(a, "*.z.example.com", 5), 0);
	ck_assert_int_eq(put1(a, "z.example.com", 1, 6), 0);
	hm_certstore_writer_info(a, &ia);
	hm_certstore_writer_info(b, &ib);
	ck_assert_mem_ne(ia.digest, ib.digest, sizeof(ia.digest));
	/* digest_add: lane-wise sum with carries inside a lane. */
	{
		uint8_t x[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, 1},
			y[16] = {1, 0, 0, 0, 0, 0, 0, 0, 2};

		hm_certstore_digest_add(sum, x, y);
		ck_assert_uint_eq(sum[0], 0);
		ck_assert_uint_eq(sum[1], 0);
		ck_assert_uint_eq(sum[2], 1);
		ck_assert_uint_eq(sum[8], 3);
	}
	ck_assert_int_eq(hm_certstore_verify(a), 0);
	ck_assert_int_eq(hm_certstore_verify(b), 0);
	hm_certstore_writer_close(a);
	hm_certstore_writer_close(b);
}
END_TEST

START_TEST(ticket_keys_and_soonest_expiry)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_info info;
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX + 1], got[HM_TICKET_KEYS_MAX];
	uint64_t gen, gen2;

	for (int i = 0; i <= HM_TICKET_KEYS_MAX; i++)
		memset(&keys[i], 0x10 + i, sizeof(keys[i]));
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 50, 1), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	ck_assert_int_eq(hm_certstore_ticket_keys(hm_certstore_reader_map(r), got, &gen), 0);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, keys, HM_TICKET_KEYS_MAX + 1), -EINVAL);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, keys, 3), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 2), 0);
	ck_assert_int_eq(hm_certstore_ticket_keys(hm_certstore_reader_map(r), got, &gen2), 3);
	ck_assert_uint_ne(gen, gen2);
	ck_assert_mem_eq(got, keys, 3 * sizeof(keys[0]));
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, keys + 1, 2), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 3), 0);
	ck_assert_int_eq(hm_certstore_ticket_keys(hm_certstore_reader_map(r), got, &gen), 2);
	ck_assert_uint_ne(gen, gen2);
	ck_assert_mem_eq(got, keys + 1, 2 * sizeof(keys[0]));

	/* The soonest not_after follows puts, replacements and removals. */
	hm_certstore_map_info(hm_certstore_reader_map(r), &info);
	ck_assert_int_eq(info.soonest_not_after, 1700000050);
	ck_assert_int_eq(put1(w, "b.example.com", 20, 4), 0);
	ck_assert_int_eq(put1(w, "c.example.com", 30, 5), 0);
	hm_certstore_map_info(hm_certstore_reader_map(r), &info);
	ck_assert_int_eq(info.soonest_not_after, 1700000020);
	ck_assert_int_eq(put1(w, "b.example.com", 60, 6), 0);
	hm_certstore_map_info(hm_certstore_reader_map(r), &info);
	ck_assert_int_eq(info.soonest_not_after, 1700000030);
	ck_assert_int_eq(rm1(w, "c.example.com", 7), 0);
	hm_certstore_map_info(hm_certstore_reader_map(r), &info);
	ck_assert_int_eq(info.soonest_not_after, 1700000050);
	ck_assert_int_eq(rm1(w, "a.example.com", 8), 0);
	ck_assert_int_eq(rm1(w, "b.example.com", 9), 0);
	hm_certstore_map_info(hm_certstore_reader_map(r), &info);
	ck_assert_int_eq(info.soonest_not_after, INT64_MAX);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

START_TEST(growth_keeps_everything_and_readers_follow)
{
	struct hm_certstore_caps small = {4, 8192};
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_map *first;
	struct hm_certstore_info info, info2;
	struct hm_ticket_key k;
	struct hm_ticket_key got[HM_TICKET_KEYS_MAX];
	uint64_t gen;
	char name[32];

	memset(&k, 7, sizeof(k));
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, &small, 0, 0), 0);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, &k, 1), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 1), 0);
	ck_assert_int_eq(put1(w, "first.example.com", 1, 2), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	first = hm_certstore_reader_map(r);
	hm_certstore_map_ref(first);
	hm_certstore_writer_info(w, &info);
	for (uint32_t i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "g%u.example.com", i);
		ck_assert_int_eq(put1(w, name, i, i + 3), 0);
	}
	hm_certstore_writer_info(w, &info2);
	ck_assert_uint_ne(info.file_id, info2.file_id);
	ck_assert_uint_ge(info2.caps.certs, 301);
	ck_assert_uint_eq(info2.certs, 301);
	ck_assert_uint_eq(info2.seq, 302);
	/* The reader noticed the retirement on its own; the old map stays valid while held. */
	ck_assert_ptr_ne(hm_certstore_reader_map(r), first);
	expect(r, "first.example.com", "first.example.com", 1, HM_CERT_EXACT);
	for (uint32_t i = 0; i < 300; i += 7) {
		snprintf(name, sizeof(name), "g%u.example.com", i);
		expect(r, name, name, i, HM_CERT_EXACT);
	}
	ck_assert_int_eq(hm_certstore_ticket_keys(hm_certstore_reader_map(r), got, &gen), 1);
	ck_assert_mem_eq(&got[0], &k, sizeof(k));
	/* The retired file still answers, with its last version, for whoever holds it. */
	{
		struct hm_cert_ref ref;

		ck_assert_int_eq(hm_certstore_lookup(first, "first.example.com", 17, &ref), 0);
		hm_certstore_map_info(first, &info);
		ck_assert_uint_ge(info.certs, 1);
		ck_assert_uint_lt(info.certs, 301);
	}
	hm_certstore_map_unref(first);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	/* max_bytes: a file may not grow past it, and the last good version stays. */
	hm_certstore_writer_close(w);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, &small, 0, 64 * 1024), 0);
	for (uint32_t i = 0;; i++) {
		int e;

		snprintf(name, sizeof(name), "m%u.example.com", i);
		e = put1(w, name, i, i + 1);
		if (e != 0) {
			ck_assert_int_eq(e, -ENOSPC);
			break;
		}
		ck_assert_uint_lt(i, 1000);
	}
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_info(w, &info);
	ck_assert_uint_le(info.file_bytes, 64 * 1024);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

static int blob_bytes_cb(void *ctx, const struct hm_cert_entry *e)
{
	uint64_t *sum = ctx;

	*sum += e->name_len + e->cert_len + e->key_len + e->meta_len;
	return 0;
}

/* 100k certificates in one file: every one is found, one change is visible at once, and the
 * memory per certificate is the entry's bytes plus a bounded overhead. */
START_TEST(hundred_thousand_certificates)
{
	enum { N = 100000 };
	struct hm_certstore_caps caps = {131072, 64ull << 20};
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_info info;
	struct hm_cert_ref ref;
	uint64_t live = 0;
	char name[48];
	struct content c;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, &caps, 0, 0), 0);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	for (uint32_t i = 0; i < N; i++) {
		if (i % 10 == 9)
			snprintf(name, sizeof(name), "*.w%u.example.com", i);
		else
			snprintf(name, sizeof(name), "h%u.example.com", i);
		/* small entries (version 0 has no padding): this test is about the count */
		ck_assert_int_eq(hm_certstore_put(w, content(&c, name, 0)), 0);
	}
	ck_assert_int_eq(hm_certstore_put(w, content(&c, "default", 0)), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 1), 0);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	for (uint32_t i = 0; i < N; i++) {
		struct hm_certstore_map *m = hm_certstore_reader_map(r);

		if (i % 10 == 9) {
			snprintf(name, sizeof(name), "x.w%u.example.com", i);
			ck_assert_int_eq(hm_certstore_lookup(m, name, strlen(name), &ref), 0);
			ck_assert_uint_eq(ref.match, HM_CERT_WILDCARD);
		} else {
			snprintf(name, sizeof(name), "h%u.example.com", i);
			ck_assert_int_eq(hm_certstore_lookup(m, name, strlen(name), &ref), 0);
			ck_assert_uint_eq(ref.match, HM_CERT_EXACT);
		}
	}
	expect(r, "h77.example.com", "h77.example.com", 0, HM_CERT_EXACT);
	expect(r, "nothing.example.net", "default", 0, HM_CERT_DEFAULT);
	/* One more change, seen by the next lookup. */
	ck_assert_int_eq(put1(w, "h77.example.com", 5, 2), 0);
	expect(r, "h77.example.com", "h77.example.com", 5, HM_CERT_EXACT);
	ck_assert_int_eq(rm1(w, "*.w99.example.com", 3), 0);
	expect(r, "x.w99.example.com", "default", 0, HM_CERT_DEFAULT);
	hm_certstore_writer_info(w, &info);
	ck_assert_uint_eq(info.certs, N);
	ck_assert_int_eq(hm_certstore_foreach(w, blob_bytes_cb, &live), 0);
	/* index (2 copies of 128 + 2 x 8 bytes per capacity slot) + blob rounded to 64 bytes */
	ck_assert_uint_le(info.heap_used, live + (uint64_t)(N + 1) * 64);
	ck_assert_uint_le(info.file_bytes - info.caps.heap,
			  (uint64_t)caps.certs * 2 * (128 + 2 * 8) + 3 * 4096);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

/* A writer that dies mid-batch: the published version is intact, the resumed writer verifies,
 * reclaims what the dead batch wrote, and carries on. Also: files of writers that died before
 * installing their first version are removed. */
START_TEST(resume_after_a_writer_died)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_info before, after;
	char orphan[200];
	pid_t child;
	int status;

	store_ab(&before);
	child = fork();
	ck_assert_int_ge(child, 0);
	if (child == 0) {
		struct hm_certstore_writer *cw;
		struct content c;

		if (hm_certstore_writer_open(&cw, path, NULL, HM_CERTSTORE_RESUME, 0) != 0 ||
		    hm_certstore_begin(cw) != 0)
			_exit(1);
		for (int i = 0; i < 40; i++) {
			char name[32];

			snprintf(name, sizeof(name), "dead%d.example.com", i);
			if (hm_certstore_put(cw, content(&c, name, 3)) != 0)
				_exit(2);
		}
		if (hm_certstore_rm(cw, "a.example.com", 13) != 0)
			_exit(3);
		_exit(0); /* no commit, no abort: as if killed */
	}
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);
	ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r), "dead1.example.com", 17,
					     &(struct hm_cert_ref){0}),
			 -ENOENT);

	/* A dead writer's uninstalled file is swept by the next writer. */
	snprintf(orphan, sizeof(orphan), "%s.new.%d.0000abcd", path, 999999);
	ck_assert_int_ge(close(open(orphan, O_CREAT | O_WRONLY, 0600)), 0);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0), 0);
	ck_assert_int_ne(access(orphan, F_OK), 0);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_info(w, &after);
	ck_assert_uint_eq(after.seq, 2);
	ck_assert_uint_eq(after.heap_used, before.heap_used);
	ck_assert_mem_eq(after.digest, before.digest, sizeof(after.digest));
	/* The dead batch's space is free again: many rotations do not grow the file. */
	for (uint32_t i = 0; i < 200; i++)
		ck_assert_int_eq(put1(w, "b.example.com", i % 5, 3 + i), 0);
	hm_certstore_writer_info(w, &after);
	ck_assert_uint_eq(after.file_id, before.file_id);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	expect(r, "b.example.com", "b.example.com", 199 % 5, HM_CERT_EXACT);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

static void copy_file(const char *from, const char *to, off_t len, mode_t mode)
{
	int in = open(from, O_RDONLY), out = open(to, O_CREAT | O_TRUNC | O_WRONLY, mode);
	char buf[65536];
	off_t done = 0;

	ck_assert_int_ge(in, 0);
	ck_assert_int_ge(out, 0);
	while (done < len) {
		ssize_t n = read(in, buf, (size_t)HM_MIN((off_t)sizeof(buf), len - done));

		if (n <= 0)
			break;
		ck_assert_int_eq(write(out, buf, (size_t)n), n);
		done += n;
	}
	ck_assert_int_eq(fchmod(out, mode), 0);
	close(in);
	close(out);
}

/* Truncated, garbage, squatted and loosened files: readers refuse them and keep their last good
 * map; a resuming writer refuses them; a new writer replaces them. */
START_TEST(file_checks)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_map *good;
	char saved[160], bad[160];
	struct stat st;
	int fd;

	snprintf(saved, sizeof(saved), "%s/saved", dir);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 1, 1), 0);
	hm_certstore_writer_close(w);
	ck_assert_int_eq(stat(path, &st), 0);
	copy_file(path, saved, st.st_size, 0600);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	good = hm_certstore_reader_map(r);

	/* truncated: shorter than its header says */
	copy_file(saved, bad, st.st_size / 2, 0600);
	ck_assert_int_eq(rename(bad, path), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), -EUCLEAN);
	ck_assert_ptr_eq(hm_certstore_reader_map(r), good);
	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0),
			 -EUCLEAN);
	/* garbage of the right size */
	fd = open(bad, O_CREAT | O_WRONLY | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, st.st_size), 0);
	ck_assert_int_eq(pwrite(fd, "HMDCRTS1garbage", 15, 0), 15);
	close(fd);
	ck_assert_int_eq(rename(bad, path), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), -EUCLEAN);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0),
			 -EUCLEAN);
	/* a valid store that others may read */
	copy_file(saved, bad, st.st_size, 0644);
	ck_assert_int_eq(rename(bad, path), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), -EPERM);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0), -EPERM);
	/* a valid store squatted by another user (this test runs as root or as its owner) */
	copy_file(saved, bad, st.st_size, 0600);
	if (chown(bad, 4242, 4242) == 0) {
		ck_assert_int_eq(rename(bad, path), 0);
		ck_assert_int_eq(hm_certstore_reader_check(r), -EPERM);
		ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0),
				 -EPERM);
	}
	ck_assert_ptr_eq(hm_certstore_reader_map(r), good);
	/* A new writer replaces whatever is there; readers take the new file. */
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 2, 1), 0);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "a.example.com", "a.example.com", 2, HM_CERT_EXACT);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_uid, geteuid());
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);
}
END_TEST

/* Bytes flipped inside the file: fetch reports damage, verify finds it, and lookups in an index
 * full of garbage never read outside the mapping (ASan and the bounds checks). */
START_TEST(corruption_is_detected_and_never_crashes)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r;
	struct hm_certstore_map *m;
	struct hm_cert_ref ref;
	struct hm_cert_bytes b;
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	struct stat st;
	char name[32];
	int fd;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	for (uint32_t i = 0; i < 64; i++) {
		snprintf(name, sizeof(name), i % 4 ? "c%u.example.com" : "*.c%u.example.com", i);
		ck_assert_int_eq(put1(w, name, i, i + 1), 0);
	}
	ck_assert_int_eq(put1(w, "default", 1, 65), 0);
	hm_certstore_writer_close(w);
	ck_assert_int_eq(stat(path, &st), 0);
	/* one byte inside the chain of c1 (its blob starts with its name) */
	{
		uint8_t *p;

		fd = open(path, O_RDWR);
		ck_assert_int_ge(fd, 0);
		p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		ck_assert_ptr_ne(p, MAP_FAILED);
		uint8_t *hit = memmem(p, (size_t)st.st_size, "CERT c1.example.com v1|", 23);
		ck_assert_ptr_nonnull(hit);
		hit[30] ^= 0x40;
		munmap(p, (size_t)st.st_size);
		close(fd);
	}
	ck_assert_int_eq(hm_certstore_reader_new(&r, path), 0);
	m = hm_certstore_reader_map(r);
	ck_assert_ptr_nonnull(m);
	ck_assert_int_eq(hm_certstore_lookup(m, "c1.example.com", 14, &ref), 0);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b), -EUCLEAN);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0), 0);
	ck_assert_int_eq(hm_certstore_verify(w), -EUCLEAN);
	hm_certstore_writer_close(w);
	hm_certstore_reader_free(r);

	/* Random garbage over the index, many times: lookups and fetches return whatever they
	 * return, within bounds. */
	srand(4321);
	for (int round = 0; round < 200; round++) {
		uint8_t *p;

		fd = open(path, O_RDWR);
		p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		ck_assert_ptr_ne(p, MAP_FAILED);
		for (int k = 0; k < 64; k++) {
			/* within the two index copies, past the file header */
			size_t off = 4096 + (size_t)rand() % (size_t)(st.st_size / 2 - 4096);

			p[off] = (uint8_t)rand();
		}
		munmap(p, (size_t)st.st_size);
		close(fd);
		ck_assert_int_eq(hm_certstore_reader_new(&r, path), 0);
		m = hm_certstore_reader_map(r);
		for (uint32_t i = 0; m != NULL && i < 80; i++) {
			snprintf(name, sizeof(name), "x.c%u.example.com", i);
			if (hm_certstore_lookup(m, name + (i % 2) * 2, strlen(name) - (i % 2) * 2,
						&ref) == 0)
				(void)hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b);
		}
		hm_certstore_reader_free(r);
	}
}
END_TEST

/*
 * The store at path mapped read-write (*len bytes at the return value), and where the cert_len
 * field of the entry with the inline key `key` is in each index copy (in *at[0], *at[1]): the
 * entry's key field is its last 40 bytes (offset 88), cert_len is at offset 24.
 */
static uint8_t *map_cert_lens(const char *key, uint32_t *at[2], size_t *len)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_info info;
	struct stat st;
	size_t index_end, n = 0, kn = strlen(key);
	uint8_t *p, *hit;
	int fd;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0), 0);
	hm_certstore_writer_info(w, &info);
	hm_certstore_writer_close(w);
	ck_assert_int_eq(stat(path, &st), 0);
	index_end = (size_t)(info.file_bytes - info.caps.heap);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(p, MAP_FAILED);
	close(fd);
	for (hit = p; (hit = memmem(hit, index_end - (size_t)(hit - p), key, kn)) != NULL;
	     hit += kn) {
		ck_assert_uint_lt(n, 2);
		at[n++] = (uint32_t *)(void *)(hit - 88 + 24);
	}
	ck_assert_uint_eq(n, 2);
	*len = (size_t)st.st_size;
	return p;
}

/* Lengths in an entry beyond what an entry can hold (a corrupt file): the lookup refuses the
 * entry, so that no caller sizes a buffer by them. */
START_TEST(lookup_bounds_the_lengths_it_returns)
{
	struct hm_certstore_reader *r;
	struct hm_certstore_info info;
	struct hm_cert_ref ref;
	uint32_t *at[2];
	size_t len;
	uint8_t *p;

	store_ab(&info);
	p = map_cert_lens("a.example.com", at, &len);
	*at[0] = *at[1] = 0xffffffffu; /* both copies: the published one is read */
	munmap(p, len);
	r = reader();
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r), "a.example.com", 13, &ref),
			 -EUCLEAN);
	expect(r, "b.example.com", "b.example.com", 1, HM_CERT_EXACT);
	hm_certstore_reader_free(r);
}
END_TEST

/* Someone with write access flipping an entry's length while a reader fetches it, without
 * touching `pub` (so no version check discards what the reader read): every fetch checks and
 * uses one copy of the entry, so it returns the whole entry or -EUCLEAN, and never lengths it
 * did not check (the reader used to load them again after the copy, and checksummed gigabytes
 * past the caller's buffer). */
struct flipper {
	uint32_t *at[2];
	uint32_t good;
	volatile int stop;
	uint64_t flips;
};

static void *flip(void *arg)
{
	struct flipper *f = arg;

	while (!f->stop) {
		uint32_t v = (f->flips++ & 1) ? f->good : 0x7fffffffu;

		__atomic_store_n(f->at[0], v, __ATOMIC_RELAXED);
		__atomic_store_n(f->at[1], v, __ATOMIC_RELAXED);
	}
	return NULL;
}

START_TEST(fetch_reads_an_entry_once)
{
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	static char big[60000]; /* a long copy: a wide window between check and use */
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r;
	struct hm_certstore_map *m;
	struct hm_cert_ref ref;
	struct hm_cert_bytes b;
	struct content c;
	struct flipper f = {0};
	uint64_t whole = 0, refused = 0;
	pthread_t t;
	size_t len;
	uint8_t *p;

	content(&c, "big.example.com", 1);
	memset(big, 'c', sizeof(big));
	memcpy(big, c.cert, 24); /* "CERT big.example.com v1|" */
	c.p.cert = big;
	c.p.cert_len = sizeof(big);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_put(w, &c.p), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 1), 0);
	hm_certstore_writer_close(w);
	r = reader();
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	m = hm_certstore_reader_map(r);
	ck_assert_int_eq(hm_certstore_lookup(m, "big.example.com", 15, &ref), 0);
	p = map_cert_lens("big.example.com", f.at, &len);
	f.good = *f.at[0];
	ck_assert_uint_eq(f.good, sizeof(big));
	ck_assert_int_eq(pthread_create(&t, NULL, flip, &f), 0);
	for (int i = 0; i < 100000 && (i < 20000 || refused == 0); i++) {
		int e = hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b);

		if (e == -EUCLEAN) {
			refused++;
			continue;
		}
		ck_assert_int_eq(e, 0);
		ck_assert_uint_eq(b.cert_len, sizeof(big));
		ck_assert_uint_eq(b.key_len, ref.key_len);
		ck_assert_int_eq(memcmp(b.cert, big, sizeof(big)), 0);
		whole++;
	}
	f.stop = 1;
	pthread_join(t, NULL);
	/* How many fetches raced a flip depends on the machine (a flipper that has a core to
	 * itself can spoil every one): what must hold is that none returned unchecked lengths,
	 * above, and that the entry is whole again once its bytes are. */
	*f.at[0] = *f.at[1] = f.good;
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b), 0);
	ck_assert_uint_eq(b.cert_len, sizeof(big));
	ck_assert_int_eq(memcmp(b.cert, big, sizeof(big)), 0);
	fprintf(stderr, "fetches: %llu whole, %llu refused, %llu flips\n",
		(unsigned long long)whole, (unsigned long long)refused,
		(unsigned long long)f.flips);
	munmap(p, len);
	hm_certstore_reader_free(r);
}
END_TEST

/* ---- a store truncated under its readers (the table's protection, one registry) ---- */

/* Writes data back over the file at path (same inode), as an operator restoring it would. */
static void restore_in_place(const char *data, size_t n)
{
	int fd = open(path, O_WRONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, data, n, 0), (ssize_t)n);
	close(fd);
}

START_TEST(truncated_under_readers)
{
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	struct sigaction old;
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r;
	struct hm_certstore_map *m;
	struct hm_certstore_info info;
	struct hm_ticket_key keys[2], got[HM_TICKET_KEYS_MAX];
	struct hm_cert_ref ref;
	struct hm_cert_bytes b;
	uint64_t bad0 = hm_certstore_bad_maps(), gen;
	char *saved;
	size_t heap_off;
	struct stat st;
	int fd;

	ck_assert_int_eq(hm_test_catch_sigbus(&old), 0);
	memset(keys, 0x5a, sizeof(keys));
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(put1(w, "a.example.com", 1, 1), 0);
	ck_assert_int_eq(put1(w, "default", 1, 2), 0);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, keys, 2), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 3), 0);
	hm_certstore_writer_info(w, &info);
	hm_certstore_writer_close(w);
	heap_off = (size_t)(info.file_bytes - info.caps.heap);
	ck_assert_int_eq(stat(path, &st), 0);
	saved = malloc((size_t)st.st_size);
	ck_assert_ptr_nonnull(saved);
	fd = open(path, O_RDONLY);
	ck_assert_int_eq(pread(fd, saved, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	r = reader();
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);

	/* The heap cut off behind the reader's back: the index still reads, the fetch faults on
	 * the heap and fails -ESTALE (the map went bad), never -EUCLEAN: the zeros it read are not
	 * damage in the entry, which a caller would remember as such. */
	m = hm_certstore_reader_map(r);
	ck_assert_int_eq(truncate(path, (off_t)heap_off), 0);
	ck_assert_int_eq(hm_certstore_lookup(m, "a.example.com", 13, &ref), 0);
	ck_assert_int_eq(hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b), -ESTALE);
	ck_assert_uint_eq(hm_certstore_bad_maps(), bad0 + 1);
	ck_assert_int_eq(hm_certstore_lookup(m, "a.example.com", 13, &ref), -ESTALE);
	ck_assert_int_eq(hm_certstore_ticket_keys(m, got, &gen), -ESTALE);
	ck_assert_ptr_null(hm_certstore_reader_map(r));
	ck_assert_int_lt(hm_certstore_reader_check(r), 0); /* too short to map */
	ck_assert_ptr_null(hm_certstore_reader_map(r));

	/* Written back in place (same inode): mapped again. */
	restore_in_place(saved, (size_t)st.st_size);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);
	ck_assert_int_eq(hm_certstore_ticket_keys(hm_certstore_reader_map(r), got, &gen), 2);

	/* Truncated to its header: the first read of the index faults. */
	m = hm_certstore_reader_map(r);
	ck_assert_int_eq(truncate(path, 4096), 0);
	ck_assert_int_eq(hm_certstore_lookup(m, "other.example.com", 17, &ref), -ESTALE);
	ck_assert_uint_eq(hm_certstore_bad_maps(), bad0 + 2);
	ck_assert_ptr_null(hm_certstore_reader_map(r));
	restore_in_place(saved, (size_t)st.st_size);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "other.example.com", "default", 1, HM_CERT_DEFAULT);

	/* Truncated again: the periodic check sees it first, before any read could fault. */
	ck_assert_int_eq(truncate(path, 8192), 0);
	ck_assert_int_lt(hm_certstore_reader_check(r), 0);
	ck_assert_uint_eq(hm_certstore_bad_maps(), bad0 + 3);
	ck_assert_ptr_null(hm_certstore_reader_map(r));
	restore_in_place(saved, (size_t)st.st_size);
	ck_assert_int_eq(hm_certstore_reader_check(r), 1);
	expect(r, "a.example.com", "a.example.com", 1, HM_CERT_EXACT);

	/* A fault anywhere else is not the store's. */
	ck_assert(!hm_pubfile_fault(&st));
	hm_certstore_reader_free(r);
	free(saved);
	sigaction(SIGBUS, &old, NULL);
}
END_TEST

/* ---- multi-process ---- */

#define RACE_NAMES 32

static uint32_t race_version(uint32_t name, uint64_t batch)
{
	return (uint32_t)(batch * 31 + name);
}

/* A reader process: every fetched entry must be one put, whole (name and version agree between
 * chain and key, and the id is that put's); every ticket key set must be one set. Runs until it
 * has seen many versions change under it. No ck_assert (see test_table.c). */
static int race_reader(void)
{
	struct hm_certstore_reader *r;
	static uint8_t buf[HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX];
	uint64_t fetches = 0, versions = 0, last = 0, stale = 0;
	unsigned seed = (unsigned)getpid();

	if (hm_certstore_reader_new(&r, path) != 0)
		return 10;
	while (versions < 400 || fetches < 20000) {
		struct hm_certstore_map *m = hm_certstore_reader_map(r);
		struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
		struct hm_cert_ref ref;
		struct hm_cert_bytes b;
		char host[32], cname[64], kname[64];
		uint32_t cv, kv, n = (uint32_t)rand_r(&seed) % RACE_NAMES;
		uint8_t id[HM_CERT_ID_LEN];
		uint64_t gen;
		int e, nk;

		if (m == NULL)
			return 11;
		snprintf(host, sizeof(host), "r%u.example.com", n);
		if ((e = hm_certstore_lookup(m, host, strlen(host), &ref)) != 0)
			return 12;
		e = hm_certstore_fetch(m, &ref, buf, sizeof(buf), &b);
		if (e == -ESTALE) {
			stale++;
			continue;
		}
		if (e != 0)
			return 13;
		if (sscanf((const char *)b.cert, "CERT %63s v%u|", cname, &cv) != 2 ||
		    sscanf((const char *)b.key, "KEY %63s v%u|", kname, &kv) != 2 ||
		    strcmp(cname, kname) != 0 || cv != kv || strcmp(cname, host) != 0) {
			fprintf(stderr, "torn entry: %.40s / %.40s\n", b.cert, b.key);
			return 14;
		}
		fill_id(id, cname, cv);
		if (memcmp(id, ref.id, sizeof(id)) != 0)
			return 15;
		nk = hm_certstore_ticket_keys(m, keys, &gen);
		for (int k = 0; k < nk; k++)
			for (size_t j = 0; j < sizeof(keys[k]); j++)
				if (((uint8_t *)&keys[k])[j] != (uint8_t)(gen + (uint64_t)k))
					return 16;
		fetches++;
		if (ref.version != last) {
			versions++;
			last = ref.version;
		}
	}
	fprintf(stderr, "reader %d: %llu whole fetches over %llu versions (%llu stale refs)\n",
		getpid(), (unsigned long long)fetches, (unsigned long long)versions,
		(unsigned long long)stale);
	hm_certstore_reader_free(r);
	return 0;
}

/* Batch b rotates four names and sets a new ticket key set (each key k of the set whose
 * generation is g filled with the byte g + k). */
static int fill_race(struct hm_certstore_writer *w, uint64_t b, const void *arg)
{
	struct hm_ticket_key keys[3];
	struct hm_certstore_info info;
	struct content c;
	int e = 0;

	(void)arg;
	for (uint32_t i = 0; i < 4 && e == 0; i++) {
		uint32_t n = (uint32_t)((b * 4 + i) % RACE_NAMES);
		char name[32];

		snprintf(name, sizeof(name), "r%u.example.com", n);
		e = hm_certstore_put(w, content(&c, name, race_version(n, b)));
	}
	hm_certstore_writer_info(w, &info);
	for (int k = 0; k < 3; k++)
		memset(&keys[k], (uint8_t)(info.ticket_keys_gen + 1 + (uint64_t)k),
		       sizeof(keys[k]));
	return e != 0 ? e : hm_certstore_set_ticket_keys(w, keys, 1 + (unsigned)(b % 3));
}

START_TEST(readers_racing_a_writer)
{
	struct hm_certstore_caps small = {64, 64 * 1024};
	struct hm_certstore_writer *w;
	pid_t readers[2];
	int alive = 2;
	uint64_t b = 1;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, &small, 0, 0), 0);
	for (uint32_t n = 0; n < RACE_NAMES; n++) {
		char name[32];

		snprintf(name, sizeof(name), "r%u.example.com", n);
		ck_assert_int_eq(put1(w, name, race_version(n, 0), b++), 0);
	}
	for (int i = 0; i < 2; i++) {
		readers[i] = fork();
		ck_assert_int_ge(readers[i], 0);
		if (readers[i] == 0)
			_exit(race_reader());
	}
	/* The writer rotates until both readers are satisfied (or one fails). */
	while (alive > 0) {
		int e = batch(w, b, fill_race, NULL), status;

		b++;

		if (e != 0)
			ck_abort_msg("batch %llu: %s", (unsigned long long)b, hm_strerror(e));
		for (int i = 0; i < 2; i++) {
			if (readers[i] > 0 && waitpid(readers[i], &status, WNOHANG) == readers[i]) {
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
					ck_abort_msg("reader failed: status %d", status);
				readers[i] = 0;
				alive--;
			}
		}
		ck_assert_uint_lt(b, 50000000);
	}
	fprintf(stderr, "writer: %llu batches\n", (unsigned long long)b);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
}
END_TEST

/* The state after batch b of the killed writer: every K entry at version b, "odd" iff b is odd. */
#define KILL_NAMES 24

static int fill_kill(struct hm_certstore_writer *w, uint64_t b, const void *arg)
{
	struct content c;
	int e = 0;

	(void)arg;
	for (uint32_t i = 0; i < KILL_NAMES && e == 0; i++) {
		char name[32];

		snprintf(name, sizeof(name), "k%u.example.com", i);
		e = hm_certstore_put(w, content(&c, name, (uint32_t)b));
	}
	if (e == 0 && (b & 1))
		e = hm_certstore_put(w, content(&c, "odd.example.com", (uint32_t)b));
	else if (e == 0 && b > 1)
		e = hm_certstore_rm(w, "odd.example.com", 15);
	return e;
}

START_TEST(writer_killed_at_random_moments)
{
	volatile uint64_t *reported =
	    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct hm_certstore_caps caps = {64, 256 * 1024};
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r = reader();
	struct hm_certstore_info info;
	struct hm_cert_ref ref;
	uint64_t b;

	ck_assert_ptr_ne((void *)reported, MAP_FAILED);
	ck_assert_int_eq(hm_certstore_writer_open(&w, path, &caps, 0, 0), 0);
	ck_assert_int_eq(batch(w, 1, fill_kill, NULL), 0);
	hm_certstore_writer_close(w);
	*reported = 1;
	srand(777);
	for (int round = 0; round < 16; round++) {
		uint64_t start = *reported, target = start + 1 + (uint64_t)(rand() % 40);
		pid_t child = fork();
		int status;

		ck_assert_int_ge(child, 0);
		if (child == 0) {
			struct hm_certstore_writer *cw;

			if (hm_certstore_writer_open(&cw, path, NULL, HM_CERTSTORE_RESUME, 0) != 0)
				_exit(3);
			for (uint64_t cb = start + 1;; cb++) {
				if (batch(cw, cb, fill_kill, NULL) != 0)
					_exit(4);
				*reported = cb;
			}
		}
		/* Kill it once it has made some progress, at a moment of no particular meaning. */
		while (*reported < target && waitpid(child, &status, WNOHANG) == 0)
			;
		for (int spin = rand() % 200000; spin > 0; spin--)
			__asm__ volatile("" ::: "memory");
		kill(child, SIGKILL);
		ck_assert_int_eq(waitpid(child, &status, 0), child);
		ck_assert_msg(WIFSIGNALED(status), "writer exited with %d",
			      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		ck_assert_int_eq(hm_certstore_reader_check(r) >= 0, 1);
		ck_assert_int_eq(
		    hm_certstore_lookup(hm_certstore_reader_map(r), "k0.example.com", 14, &ref), 0);
		b = (uint64_t)ref.not_after - 1700000000;
		ck_assert_msg(b == *reported || b == *reported + 1,
			      "store at %llu, writer said %llu", (unsigned long long)b,
			      (unsigned long long)*reported);
		for (uint32_t i = 0; i < KILL_NAMES; i++) {
			char name[32];

			snprintf(name, sizeof(name), "k%u.example.com", i);
			expect(r, name, name, (uint32_t)b, HM_CERT_EXACT);
		}
		if (b & 1)
			expect(r, "odd.example.com", "odd.example.com", (uint32_t)b, HM_CERT_EXACT);
		else
			ck_assert_int_eq(hm_certstore_lookup(hm_certstore_reader_map(r),
							     "odd.example.com", 15, &ref),
					 -ENOENT);
		*reported = b;
		ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, HM_CERTSTORE_RESUME, 0),
				 0);
		hm_certstore_writer_info(w, &info);
		ck_assert_uint_eq(info.seq, b);
		ck_assert_int_eq(hm_certstore_verify(w), 0);
		hm_certstore_writer_close(w);
	}
	hm_certstore_reader_free(r);
	munmap((void *)reported, 4096);
}
END_TEST

/* The origin keeps its certificates in private memory: the same API without a file. */
/* ---- listing in parts with a cursor ---- */

#define LIST_MAX 64

/* Names listed, in order; a part stops after `part` entries. */
struct listing {
	char names[LIST_MAX][HM_CERT_NAME_MAX + 1];
	unsigned n;
	unsigned part, in_part;
};

static int listing_cb(void *ctx, const struct hm_cert_entry *e)
{
	struct listing *l = ctx;

	ck_assert_uint_lt(l->n, LIST_MAX);
	snprintf(l->names[l->n++], sizeof(l->names[0]), "%s", e->name);
	return ++l->in_part == l->part ? 7 : 0;
}

/* The first part of a listing of `part` entries: cur is left after it. */
static void list_part(struct hm_certstore_writer *w, struct hm_certstore_cursor *cur,
		      struct listing *l, unsigned part)
{
	l->part = part;
	l->in_part = 0;
	ck_assert_int_eq(hm_certstore_list(w, cur, listing_cb, l), 7);
}

/* A part after a change: nothing is listed, the cursor is stale for good. */
static void expect_stale(struct hm_certstore_writer *w, struct hm_certstore_cursor *cur,
			 struct listing *l)
{
	unsigned n = l->n;

	l->part = 1;
	l->in_part = 0;
	ck_assert_int_eq(hm_certstore_list(w, cur, listing_cb, l), -ESTALE);
	ck_assert_int_eq(hm_certstore_list(w, cur, listing_cb, l), -ESTALE);
	ck_assert_uint_eq(l->n, n);
}

static int fill_swap(struct hm_certstore_writer *w, uint64_t seq, const void *arg)
{
	struct content c;
	int e;

	(void)seq;
	(void)arg;
	/* Freed in this order, the indexes are taken back the other way round. */
	if ((e = hm_certstore_rm(w, "e3.example.com", 14)) != 0 ||
	    (e = hm_certstore_rm(w, "e2.example.com", 14)) != 0 ||
	    (e = hm_certstore_put(w, content(&c, "e3.example.com", 1))) != 0)
		return e;
	return hm_certstore_put(w, content(&c, "e2.example.com", 1));
}

static int fill_keys(struct hm_certstore_writer *w, uint64_t seq, const void *arg)
{
	struct hm_ticket_key k;

	(void)arg;
	memset(&k, (int)seq, sizeof(k));
	return hm_certstore_set_ticket_keys(w, &k, 1);
}

static int fill_nothing(struct hm_certstore_writer *w, uint64_t seq, const void *arg)
{
	(void)w;
	(void)seq;
	(void)arg;
	return 0;
}

/*
 * hm_certstore_list() in parts of every size from 1 to past the end lists what foreach lists,
 * each entry once and in the same order (the default first, holes left by removals skipped);
 * a finished cursor lists nothing more. A part after a put, a removal, a growth, or two entries
 * removed and put back (which trade indexes under an unchanged digest) fails -ESTALE and lists
 * nothing; ticket keys and a commit that changes no entry leave the listing going.
 */
START_TEST(cursor_lists_in_parts)
{
	static struct listing all, l;
	struct hm_certstore_writer *w;
	struct hm_certstore_cursor cur;
	struct hm_certstore_info before, after;
	uint64_t seq = 1;
	char name[32];
	unsigned n;

	ck_assert_int_eq(hm_certstore_writer_open(&w, path, NULL, 0, 0), 0);
	for (uint32_t i = 0; i < 30; i++) {
		snprintf(name, sizeof(name), i % 5 == 4 ? "*.e%u.example.com" : "e%u.example.com",
			 i);
		ck_assert_int_eq(put1(w, name, 1, seq++), 0);
	}
	ck_assert_int_eq(put1(w, "default", 1, seq++), 0);
	ck_assert_int_eq(rm1(w, "e7.example.com", seq++), 0);
	ck_assert_int_eq(rm1(w, "e12.example.com", seq++), 0);
	ck_assert_int_eq(hm_certstore_foreach(w, listing_cb, &all), 0);
	hm_certstore_writer_info(w, &before);
	n = all.n;
	ck_assert_uint_eq(n, before.certs);
	ck_assert_uint_eq(n, 29);
	ck_assert_str_eq(all.names[0], "default");

	for (unsigned part = 1; part <= n + 1; part++) {
		int r;

		memset(&l, 0, sizeof(l));
		hm_certstore_cursor_init(&cur, w);
		do {
			unsigned was = l.n;

			l.part = part;
			l.in_part = 0;
			r = hm_certstore_list(w, &cur, listing_cb, &l);
			ck_assert_int_eq(r, l.n - was == part ? 7 : 0);
		} while (r != 0);
		ck_assert_uint_eq(l.n, n);
		for (unsigned i = 0; i < n; i++)
			ck_assert_str_eq(l.names[i], all.names[i]);
		ck_assert_int_eq(hm_certstore_list(w, &cur, listing_cb, &l), 0);
		ck_assert_uint_eq(l.n, n);
	}

	/* Changes that keep the entries where they are. */
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	list_part(w, &cur, &l, 3);
	ck_assert_int_eq(batch(w, seq++, fill_keys, NULL), 0);
	list_part(w, &cur, &l, 3);
	ck_assert_int_eq(batch(w, seq++, fill_nothing, NULL), 0);
	l.part = 0; /* no limit: the rest */
	l.in_part = 0;
	ck_assert_int_eq(hm_certstore_list(w, &cur, listing_cb, &l), 0);
	ck_assert_uint_eq(l.n, n);
	for (unsigned i = 0; i < n; i++)
		ck_assert_str_eq(l.names[i], all.names[i]);

	/* A put: a new entry, or the same bytes again. */
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	list_part(w, &cur, &l, 2);
	ck_assert_int_eq(put1(w, "new.example.com", 1, seq++), 0);
	expect_stale(w, &cur, &l);
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	list_part(w, &cur, &l, 2);
	ck_assert_int_eq(put1(w, "e1.example.com", 1, seq++), 0);
	expect_stale(w, &cur, &l);

	/* A removal. */
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	list_part(w, &cur, &l, 2);
	ck_assert_int_eq(rm1(w, "new.example.com", seq++), 0);
	expect_stale(w, &cur, &l);

	/* Two entries trade indexes; the set, and so the digest, is what it was. */
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	hm_certstore_writer_info(w, &before);
	list_part(w, &cur, &l, 2);
	ck_assert_int_eq(batch(w, seq++, fill_swap, NULL), 0);
	hm_certstore_writer_info(w, &after);
	ck_assert_mem_eq(after.digest, before.digest, sizeof(before.digest));
	ck_assert_uint_eq(after.file_id, before.file_id);
	expect_stale(w, &cur, &l);

	/* Growth onto a new file. */
	memset(&l, 0, sizeof(l));
	hm_certstore_cursor_init(&cur, w);
	list_part(w, &cur, &l, 2);
	ck_assert_int_eq(hm_certstore_grow(w, &(struct hm_certstore_caps){1024, 4u << 20}), 0);
	expect_stale(w, &cur, &l);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(private_memory)
{
	struct hm_certstore_writer *w;
	struct hm_cert_entry e;
	struct hm_certstore_info info;
	struct hm_certstore_caps small = {2, 4096};
	int n = 0;

	ck_assert_int_eq(hm_certstore_writer_open(&w, NULL, &small, 0, 0), 0);
	for (uint32_t i = 0; i < 40; i++) {
		char name[32];

		snprintf(name, sizeof(name), "p%u.example.com", i);
		ck_assert_int_eq(put1(w, name, i, i + 1), 0);
	}
	ck_assert_int_eq(put1(w, "*.example.com", 1, 41), 0);
	ck_assert_int_eq(hm_certstore_resolve(w, "p7.example.com", 14, &e), 0);
	ck_assert_str_eq(e.name, "p7.example.com");
	ck_assert_uint_eq(e.kind, HM_CERT_EXACT);
	ck_assert_int_eq(strncmp((const char *)e.cert, "CERT p7.example.com v7|", 23), 0);
	ck_assert_int_eq(strncmp((const char *)e.key, "KEY p7.example.com v7|", 22), 0);
	ck_assert_int_eq(strncmp((const char *)e.meta, "META p7.example.com", 19), 0);
	ck_assert_int_eq(hm_certstore_resolve(w, "zz.example.com", 14, &e), 0);
	ck_assert_str_eq(e.name, "*.example.com");
	ck_assert_int_eq(hm_certstore_resolve(w, "zz.example.org", 14, &e), -ENOENT);
	ck_assert_int_eq(hm_certstore_foreach(w, count_cb, &n), 0);
	ck_assert_int_eq(n, 41);
	hm_certstore_writer_info(w, &info);
	ck_assert_uint_ge(info.caps.certs, 41);
	ck_assert_int_eq(hm_certstore_verify(w), 0);
	hm_certstore_writer_close(w);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("certstore");
	TCase *tc = tcase_create("certstore");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, selection_rules);
	tcase_add_test(tc, operations_and_errors);
	tcase_add_test(tc, abort_restores_the_published_version);
	tcase_add_test(tc, digest_depends_on_the_set_only);
	tcase_add_test(tc, ticket_keys_and_soonest_expiry);
	tcase_add_test(tc, growth_keeps_everything_and_readers_follow);
	tcase_add_test(tc, hundred_thousand_certificates);
	tcase_add_test(tc, resume_after_a_writer_died);
	tcase_add_test(tc, file_checks);
	tcase_add_test(tc, corruption_is_detected_and_never_crashes);
	tcase_add_test(tc, lookup_bounds_the_lengths_it_returns);
	tcase_add_test(tc, fetch_reads_an_entry_once);
	tcase_add_test(tc, truncated_under_readers);
	tcase_add_test(tc, readers_racing_a_writer);
	tcase_add_test(tc, writer_killed_at_random_moments);
	tcase_add_test(tc, private_memory);
	tcase_add_test(tc, cursor_lists_in_parts);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
