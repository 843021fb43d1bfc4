/*
 * Tests common/table.c: lookup rules, every operation and its errors, abort, digest order
 * independence, growth, resume after a writer dies, readers following a replaced file,
 * balancing, and two multi-process tests: readers checking every lookup against one published
 * version while a writer applies random batches, and a writer SIGKILLed mid-update.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/pubfile.h"
#include "common/table.h"
#include "common/util.h"
#include "tests/unit/common/sigbus.h"
#include "tests/unit/hm_check.h"

static char dir[64];
static char path[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-test-table-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/table", dir);
}

static void teardown(void)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- change builders ---- */

static struct hm_change app_put(const char *app, bool maint, bool aff, uint8_t bal)
{
	struct hm_change c = {.op = HM_OP_APP_PUT,
			      .app = app,
			      .app_len = (uint8_t)strlen(app),
			      .maintenance = maint,
			      .affinity = aff,
			      .balance = bal};
	return c;
}

static struct hm_change app_rm(const char *app)
{
	struct hm_change c = {.op = HM_OP_APP_RM, .app = app, .app_len = (uint8_t)strlen(app)};
	return c;
}

static struct hm_change domain_put(const char *host, const char *app)
{
	struct hm_change c = {.op = HM_OP_DOMAIN_PUT,
			      .app = app,
			      .app_len = (uint8_t)strlen(app),
			      .name = host,
			      .name_len = (uint16_t)strlen(host)};
	return c;
}

static struct hm_change domain_rm(const char *host)
{
	struct hm_change c = {
	    .op = HM_OP_DOMAIN_RM, .name = host, .name_len = (uint16_t)strlen(host)};
	return c;
}

/* Without ck_assert, for forked children (stress_apply): a bad address is left zero, which the
 * table refuses. */
static struct hm_change dyno_put_nock(const char *app, const char *dyno, const char *addr,
				      uint8_t st)
{
	struct hm_change c = {.op = HM_OP_DYNO_PUT,
			      .app = app,
			      .app_len = (uint8_t)strlen(app),
			      .name = dyno,
			      .name_len = (uint16_t)strlen(dyno),
			      .state = st};
	if (hm_addr_parse(addr, strlen(addr), &c.addr) != 0)
		memset(&c.addr, 0, sizeof(c.addr));
	return c;
}

static struct hm_change dyno_put(const char *app, const char *dyno, const char *addr, uint8_t st)
{
	struct hm_addr a;

	ck_assert_int_eq(hm_addr_parse(addr, strlen(addr), &a), 0);
	return dyno_put_nock(app, dyno, addr, st);
}

static struct hm_change dyno_rm(const char *app, const char *dyno)
{
	struct hm_change c = {.op = HM_OP_DYNO_RM,
			      .app = app,
			      .app_len = (uint8_t)strlen(app),
			      .name = dyno,
			      .name_len = (uint16_t)strlen(dyno)};
	return c;
}

/* Applies changes as one batch; returns the first error (the batch is then aborted). */
static int batch(struct hm_table_writer *w, uint64_t seq, const struct hm_change *cs, size_t n)
{
	int e;

	ck_assert_int_eq(hm_table_begin(w), 0);
	for (size_t i = 0; i < n; i++) {
		e = hm_table_apply(w, &cs[i]);
		if (e == HM_EFULL) {
			hm_table_abort(w);
			ck_assert_int_eq(hm_table_grow(w, NULL), 0);
			return batch(w, seq, cs, n);
		}
		if (e != 0) {
			hm_table_abort(w);
			return e;
		}
	}
	ck_assert_int_eq(hm_table_commit(w, 1, seq), 0);
	ck_assert_int_eq(hm_table_verify(w), 0);
	return 0;
}

#define BATCH(w, seq, ...)                                                                         \
	batch(w, seq, (struct hm_change[]){__VA_ARGS__},                                           \
	      sizeof((struct hm_change[]){__VA_ARGS__}) / sizeof(struct hm_change))

/* Routes a Host header value through a fresh reader; returns the app name or "" / error. */
static int route(struct hm_table_reader *r, const char *host, const struct hm_pick *pick,
		 struct hm_route *out)
{
	char key[HM_HOST_MAX + 1];
	int n = hm_host_key(host, strlen(host), key);
	struct hm_table_map *m = hm_table_reader_map(r);

	if (n < 0)
		return n;
	if (m == NULL)
		return HM_ENOTABLE;
	return hm_table_route(m, key, (size_t)n, pick, out);
}

static const char *app_of(struct hm_table_reader *r, const char *host)
{
	static struct hm_route out;
	int e = route(r, host, NULL, &out);

	return e == 0 ? out.app : hm_errname(e);
}

/* ---- tests ---- */

START_TEST(lookup_rules)
{
	struct hm_table_writer *w;
	struct hm_table_reader *r;

	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_ptr_null(hm_table_reader_map(r)); /* not installed before the first commit */
	ck_assert_int_eq(BATCH(w, 1, app_put("exact", 0, 0, 0), app_put("wide", 0, 0, 0),
			       app_put("narrow", 0, 0, 0), app_put("other", 0, 0, 0),
			       domain_put("www.example.com", "exact"),
			       domain_put("*.example.com", "wide"),
			       domain_put("*.api.example.com", "narrow"),
			       domain_put("Other.Example.ORG.", "other")),
			 0);
	/* after a failed look, the path is looked at again within 50 ms, or at once by a check */
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_str_eq(app_of(r, "www.example.com"), "exact");
	ck_assert_str_eq(app_of(r, "WWW.Example.Com"), "exact");
	ck_assert_str_eq(app_of(r, "www.example.com:8080"), "exact");
	ck_assert_str_eq(app_of(r, "www.example.com."), "exact");
	ck_assert_str_eq(app_of(r, "foo.example.com"), "wide");
	ck_assert_str_eq(app_of(r, "a.b.c.example.com"), "wide");
	ck_assert_str_eq(app_of(r, "v1.api.example.com"), "narrow");
	ck_assert_str_eq(app_of(r, "x.v1.api.example.com"), "narrow");
	ck_assert_str_eq(app_of(r, "api.example.com"), "wide");
	ck_assert_str_eq(app_of(r, "example.com"),
			 "ENOHOST"); /* a wildcard does not match its apex */
	ck_assert_str_eq(app_of(r, "other.example.org"), "other");
	ck_assert_str_eq(app_of(r, "OTHER.example.org:443"), "other");
	ck_assert_str_eq(app_of(r, "nope.example.net"), "ENOHOST");
	ck_assert_str_eq(app_of(r, "xexample.com"), "ENOHOST");
	/* an exact entry that is itself under a wildcard wins; removing it falls back */
	ck_assert_int_eq(BATCH(w, 2, domain_rm("WWW.example.com.")), 0);
	ck_assert_str_eq(app_of(r, "www.example.com"), "wide");
	ck_assert_int_eq(BATCH(w, 3, domain_rm("*.api.example.com")), 0);
	ck_assert_str_eq(app_of(r, "v1.api.example.com"), "wide");
	hm_table_reader_free(r);
	hm_table_writer_close(w);
}
END_TEST

START_TEST(operations_and_errors)
{
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_table_info info;
	struct hm_route out;

	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(BATCH(w, 1, domain_put("a.com", "ghost")), HM_ENOAPP);
	ck_assert_int_eq(BATCH(w, 1, dyno_put("ghost", "web.1", "127.0.0.1:1", HM_DYNO_UP)),
			 HM_ENOAPP);
	ck_assert_int_eq(BATCH(w, 1, app_rm("ghost")), HM_ENOAPP);
	ck_assert_int_eq(BATCH(w, 1, domain_rm("a.com")), HM_ENODOMAIN);
	ck_assert_int_eq(BATCH(w, 1, app_put("a", 0, 0, 0), dyno_rm("a", "web.1")), HM_ENODYNO);
	ck_assert_int_eq(BATCH(w, 1, app_put("Bad", 0, 0, 0)), HM_EAPPNAME);
	ck_assert_ptr_null(hm_table_reader_map(r)); /* nothing was ever committed */
	usleep(60000);

	ck_assert_int_eq(
	    BATCH(w, 1, app_put("a", 0, 0, 0), app_put("b", 1, 1, HM_BALANCE_LEAST_CONN),
		  domain_put("a.com", "a"), domain_put("b.com", "b"), domain_put("*.b.com", "b"),
		  dyno_put("a", "web.1", "10.0.0.1:5000", HM_DYNO_UP),
		  dyno_put("a", "web.2", "10.0.0.2:5000", HM_DYNO_STARTING),
		  dyno_put("a", "web.3", "[::1]:5000", HM_DYNO_CRASHED),
		  dyno_put("a", "worker-with-a-really-long-name.12", "10.0.0.4:5000", HM_DYNO_DOWN),
		  dyno_put("b", "web.1", "10.0.1.1:5000", HM_DYNO_UP)),
	    0);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 2);
	ck_assert_uint_eq(info.domains, 3);
	ck_assert_uint_eq(info.dynos, 5);
	ck_assert_uint_eq(info.epoch, 1);
	ck_assert_uint_eq(info.seq, 1);

	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	ck_assert_uint_eq(out.n_dynos, 4);
	ck_assert_uint_eq(out.n_up, 1);
	ck_assert_uint_eq(out.n_starting, 1);
	ck_assert_uint_eq(out.n_crashed, 1);
	ck_assert_uint_eq(out.n_down, 1);
	ck_assert(out.has_dyno);
	ck_assert_str_eq(out.dyno, "web.1");
	ck_assert(!out.maintenance);
	ck_assert_int_eq(route(r, "x.b.com", NULL, &out), 0);
	ck_assert_str_eq(out.app, "b");
	ck_assert(out.maintenance && out.affinity);
	ck_assert_uint_eq(out.balance, HM_BALANCE_LEAST_CONN);

	/* state changes move dynos between partitions; a failed batch changes nothing */
	ck_assert_int_eq(BATCH(w, 2, dyno_put("a", "web.2", "10.0.0.2:5001", HM_DYNO_UP),
			       dyno_put("a", "web.1", "10.0.0.1:5000", HM_DYNO_DOWN)),
			 0);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	ck_assert_uint_eq(out.n_up, 1);
	ck_assert_str_eq(out.dyno, "web.2");
	ck_assert_uint_eq(out.addr.port, 5001);
	hm_table_writer_info(w, &info);
	uint8_t before[HM_DIGEST_LEN];
	memcpy(before, info.digest, sizeof(before));
	ck_assert_int_eq(
	    BATCH(w, 3, dyno_rm("a", "web.2"), app_put("c", 0, 0, 0), domain_rm("zzz.com")),
	    HM_ENODOMAIN);
	ck_assert_int_eq(hm_table_verify(w), 0);
	hm_table_writer_info(w, &info);
	ck_assert_mem_eq(info.digest, before, sizeof(before));
	ck_assert_uint_eq(info.seq, 2);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	ck_assert_str_eq(out.dyno, "web.2");

	/* moving a domain between apps; app rm cascades */
	ck_assert_int_eq(BATCH(w, 3, domain_put("a.com", "b")), 0);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	ck_assert_str_eq(out.app, "b");
	ck_assert_int_eq(BATCH(w, 4, domain_put("a.com", "a"), app_rm("b")), 0);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 1);
	ck_assert_uint_eq(info.domains, 1);
	ck_assert_uint_eq(info.dynos, 4);
	ck_assert_int_eq(route(r, "b.com", NULL, &out), HM_ENOHOST);
	ck_assert_int_eq(route(r, "x.b.com", NULL, &out), HM_ENOHOST);
	ck_assert_int_eq(BATCH(w, 5, app_rm("a")), 0);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps + info.domains + info.dynos, 0);
	for (int i = 0; i < HM_DIGEST_LEN; i++)
		ck_assert_uint_eq(info.digest[i], 0); /* empty state, empty digest */
	hm_table_reader_free(r);
	hm_table_writer_close(w);
}
END_TEST

/* The open batch's digest and counts, as the origin's etcd store reads them before it commits:
 * what hm_table_commit() then publishes, and nothing published before it. */
START_TEST(batch_info_before_commit)
{
	struct hm_table_writer *w;
	struct hm_table_info open, pub, after;
	struct hm_change c1 = app_put("a", 0, 0, 0);
	struct hm_change c2 = dyno_put("a", "web.1", "10.0.0.1:5000", HM_DYNO_UP);

	ck_assert_int_eq(hm_table_writer_open(&w, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_batch_info(w, &open), -EINVAL); /* no batch open */
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 0), 0);
	hm_table_writer_info(w, &pub);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(hm_table_apply(w, &c1), 0);
	ck_assert_int_eq(hm_table_apply(w, &c2), 0);
	ck_assert_int_eq(hm_table_batch_info(w, &open), 0);
	ck_assert_uint_eq(open.apps, 1);
	ck_assert_uint_eq(open.dynos, 1);
	hm_table_writer_info(w, &after); /* the published version has not moved */
	ck_assert_mem_eq(after.digest, pub.digest, HM_DIGEST_LEN);
	ck_assert_uint_eq(after.apps, 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	hm_table_writer_info(w, &after);
	ck_assert_mem_eq(after.digest, open.digest, HM_DIGEST_LEN);
	ck_assert_uint_eq(after.apps, open.apps);
	ck_assert_uint_eq(after.dynos, open.dynos);
	/* An aborted batch leaves the next one's info starting from the published state. */
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(
	    hm_table_apply(w, &(struct hm_change){.op = HM_OP_APP_RM, .app = "a", .app_len = 1}),
	    0);
	hm_table_abort(w);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(hm_table_batch_info(w, &open), 0);
	ck_assert_mem_eq(open.digest, after.digest, HM_DIGEST_LEN);
	ck_assert_uint_eq(open.apps, 1);
	hm_table_abort(w);
	hm_table_writer_close(w);
}
END_TEST

static int collect(void *ctx, const struct hm_change *c)
{
	int *counts = ctx;

	counts[c->op]++;
	return 0;
}

START_TEST(foreach_and_resolve)
{
	struct hm_table_writer *w;
	struct hm_change app;
	int counts[8] = {0};

	ck_assert_int_eq(hm_table_writer_open(&w, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("a", 1, 0, 1), domain_put("*.a.com", "a"),
			       domain_put("a.com", "a"),
			       dyno_put("a", "web.1", "10.0.0.1:5000", HM_DYNO_UP),
			       dyno_put("a", "web.2", "10.0.0.2:5000", HM_DYNO_DOWN)),
			 0);
	ck_assert_int_eq(hm_table_foreach(w, collect, counts), 0);
	ck_assert_int_eq(counts[HM_OP_APP_PUT], 1);
	ck_assert_int_eq(counts[HM_OP_DOMAIN_PUT], 2);
	ck_assert_int_eq(counts[HM_OP_DYNO_PUT], 2);
	memset(counts, 0, sizeof(counts));
	ck_assert_int_eq(hm_table_resolve(w, "x.a.com", 7, &app, collect, counts), 0);
	ck_assert_int_eq(app.app_len, 1);
	ck_assert(app.maintenance);
	ck_assert_uint_eq(app.balance, 1);
	ck_assert_int_eq(counts[HM_OP_DYNO_PUT], 2);
	ck_assert_int_eq(hm_table_resolve(w, "b.com", 5, &app, collect, counts), HM_ENOHOST);
	hm_table_writer_close(w);
}
END_TEST

/* Builds one final state through different orders and detours; the digest must not care. */
START_TEST(digest_order_independence)
{
	struct hm_table_info i1, i2, i3;
	struct hm_table_writer *w1, *w2, *w3;
	struct hm_change final[64];
	char names[64][32], addrs[64][32];
	size_t n = 0;

	ck_assert_int_eq(hm_table_writer_open(&w1, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_writer_open(&w2, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_writer_open(&w3, NULL, NULL, 0, 0), 0);
	final[n++] = app_put("a", 0, 1, 0);
	final[n++] = app_put("b", 1, 0, 1);
	for (int i = 0; i < 20; i++) {
		snprintf(names[i], sizeof(names[i]), "web.%d", i);
		snprintf(addrs[i], sizeof(addrs[i]), "10.0.0.%d:%d", i, 5000 + i);
		final[n++] = dyno_put(i % 2 ? "a" : "b", names[i], addrs[i], (uint8_t)(1 + i % 4));
	}
	final[n++] = domain_put("a.com", "a");
	final[n++] = domain_put("*.b.com", "b");
	/* w1: in order, one batch */
	ck_assert_int_eq(batch(w1, 1, final, n), 0);
	/* w2: reverse order of the non-app changes, across several batches */
	ck_assert_int_eq(batch(w2, 1, final, 2), 0);
	for (size_t i = n - 1; i >= 2; i--)
		ck_assert_int_eq(batch(w2, 10 + i, &final[i], 1), 0);
	/* w3: detours: wrong values first, an extra app removed, domains moved back */
	ck_assert_int_eq(BATCH(w3, 1, app_put("a", 1, 1, 1), app_put("b", 0, 0, 0),
			       app_put("tmp", 0, 0, 0), domain_put("a.com", "tmp"),
			       dyno_put("tmp", "web.1", "1.1.1.1:1", HM_DYNO_UP)),
			 0);
	for (size_t i = 2; i < n; i += 2)
		ck_assert_int_eq(batch(w3, 2 + i, &final[i], 1), 0);
	ck_assert_int_eq(BATCH(w3, 100, app_rm("tmp")), 0);
	for (size_t i = 3; i < n; i += 2)
		ck_assert_int_eq(batch(w3, 200 + i, &final[i], 1), 0);
	ck_assert_int_eq(batch(w3, 300, final, 2), 0);

	hm_table_writer_info(w1, &i1);
	hm_table_writer_info(w2, &i2);
	hm_table_writer_info(w3, &i3);
	ck_assert_mem_eq(i1.digest, i2.digest, HM_DIGEST_LEN);
	ck_assert_mem_eq(i1.digest, i3.digest, HM_DIGEST_LEN);
	ck_assert_uint_eq(i1.dynos, i3.dynos);
	/* and any difference shows */
	ck_assert_int_eq(BATCH(w2, 400, dyno_put("a", "web.1", "10.0.0.1:5002", 2)), 0);
	hm_table_writer_info(w2, &i2);
	ck_assert_mem_ne(i1.digest, i2.digest, HM_DIGEST_LEN);
	hm_table_writer_close(w1);
	hm_table_writer_close(w2);
	hm_table_writer_close(w3);
}
END_TEST

START_TEST(growth_and_limits)
{
	struct hm_table_caps tiny = {2, 2, 4, 4096};
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_table_info info;
	struct hm_route out;
	char app[32], host[64], dyno[32], addr[32];
	uint64_t first_id;

	ck_assert_int_eq(hm_table_writer_open(&w, path, &tiny, 0, 0), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("a0", 0, 0, 0), domain_put("a0.com", "a0")), 0);
	ck_assert_int_eq(route(r, "a0.com", NULL, &out), 0);
	struct hm_table_map *m0 = hm_table_reader_map(r);
	hm_table_map_ref(m0);
	hm_table_map_info(m0, &info);
	first_id = info.file_id;
	/* one batch far over every capacity: batch() aborts, grows and retries until it fits */
	for (int i = 1; i <= 300; i++) {
		struct hm_change cs[3];

		snprintf(app, sizeof(app), "a%d", i);
		snprintf(host, sizeof(host), "host-with-a-long-name-to-use-the-heap-%d.example.com",
			 i);
		snprintf(dyno, sizeof(dyno), "web.%d", i);
		snprintf(addr, sizeof(addr), "10.1.%d.%d:80", i / 256, i % 256);
		cs[0] = app_put(app, 0, 0, 0);
		cs[1] = domain_put(host, app);
		cs[2] = dyno_put("a0", dyno, addr, HM_DYNO_UP);
		ck_assert_int_eq(batch(w, (uint64_t)i + 1, cs, 3), 0);
	}
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 301);
	ck_assert_uint_eq(info.dynos, 300);
	ck_assert_uint_ge(info.caps.dynos, 300);
	ck_assert_uint_eq(info.seq, 301);
	/* the reader followed the replaced files; the old map stays valid while referenced */
	ck_assert_int_eq(
	    route(r, "host-with-a-long-name-to-use-the-heap-300.example.com", NULL, &out), 0);
	ck_assert_str_eq(out.app, "a300");
	ck_assert_int_eq(route(r, "a0.com", NULL, &out), 0);
	ck_assert_uint_eq(out.n_up, 300);
	hm_table_map_info(hm_table_reader_map(r), &info);
	ck_assert_uint_ne(info.file_id, first_id);
	/* the retired map still answers, with the state it had when growth replaced it */
	ck_assert_int_eq(hm_table_route(m0, "a0.com", 6, NULL, &out), 0);
	ck_assert_uint_eq(out.n_dynos, 1);
	hm_table_map_unref(m0);
	hm_table_reader_free(r);
	hm_table_writer_close(w);

	/* max_bytes: growth stops with HM_EFULL and the last good version stays */
	ck_assert_int_eq(hm_table_writer_open(&w, NULL, &tiny, 0, 300000), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	int e = 0, i;
	for (i = 0; i < 1000 && e == 0; i++) {
		struct hm_change c;

		snprintf(app, sizeof(app), "b%d", i);
		c = app_put(app, 0, 0, 0);
		e = hm_table_apply(w, &c);
		if (e == HM_EFULL) {
			hm_table_abort(w);
			e = hm_table_grow(w, NULL);
			if (e == 0) {
				ck_assert_int_eq(hm_table_begin(w), 0);
				i = -1;
			}
		}
	}
	ck_assert_int_eq(e, HM_EFULL);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 0);
	ck_assert_int_eq(hm_table_verify(w), 0);
	hm_table_writer_close(w);
}
END_TEST

START_TEST(resume_and_replace)
{
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_table_info info, info2;
	struct hm_route out;

	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), HM_ENOTABLE);
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), 0);
	ck_assert_int_eq(BATCH(w, 7, app_put("a", 0, 0, 0), domain_put("a.com", "a")), 0);
	/* a second writer on the same path is refused */
	struct hm_table_writer *w2;
	ck_assert_int_eq(hm_table_writer_open(&w2, path, NULL, HM_TABLE_RESUME, 0), -EBUSY);
	hm_table_writer_info(w, &info);
	/* leave a half-applied batch behind, as a writer killed mid-batch would */
	ck_assert_int_eq(hm_table_begin(w), 0);
	struct hm_change c = app_put("half", 0, 0, 0);
	ck_assert_int_eq(hm_table_apply(w, &c), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	hm_table_writer_close(w); /* (close aborts; the kill test covers the real crash) */

	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), 0);
	hm_table_writer_info(w, &info2);
	ck_assert_uint_eq(info2.seq, 7);
	ck_assert_uint_eq(info2.file_id, info.file_id);
	ck_assert_mem_eq(info2.digest, info.digest, HM_DIGEST_LEN);
	ck_assert_int_eq(hm_table_verify(w), 0);
	hm_table_writer_close(w);

	/* a fresh writer replaces the file at its first commit; readers follow the retired bit */
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0); /* still the old file */
	ck_assert_int_eq(BATCH(w, 1, app_put("b", 0, 0, 0), domain_put("b.com", "b")), 0);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), HM_ENOHOST);
	ck_assert_int_eq(route(r, "b.com", NULL, &out), 0);
	hm_table_writer_close(w);

	/* a file replaced behind the reader's back (not retired) is found by the inode check */
	char tmp[160], cmd[400];
	snprintf(tmp, sizeof(tmp), "%s.copy", path);
	ck_assert_int_eq(hm_table_writer_open(&w, tmp, NULL, 0, 0), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("c", 0, 0, 0), domain_put("c.com", "c")), 0);
	hm_table_writer_close(w);
	snprintf(cmd, sizeof(cmd), "mv %s %s", tmp, path);
	ck_assert_int_eq(system(cmd), 0);
	ck_assert_int_eq(route(r, "b.com", NULL, &out), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_int_eq(route(r, "c.com", NULL, &out), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 0);

	/* garbage at the path (a new file): resume refuses it, readers keep their map */
	FILE *f = fopen(tmp, "w");
	ck_assert_ptr_nonnull(f);
	fputs("not a table", f);
	fclose(f);
	ck_assert_int_eq(rename(tmp, path), 0);
	ck_assert_int_lt(hm_table_reader_check(r), 0);
	ck_assert_int_eq(route(r, "c.com", NULL, &out), 0);
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), HM_EBADTABLE);
	hm_table_reader_free(r);
}
END_TEST

/* A writer killed before its first commit leaves "<path>.new.<pid>.<rand>"; the next writer of
 * the path removes it, and leaves a live writer's file alone. */
START_TEST(sweeps_dead_writers_files)
{
	struct hm_table_writer *w;
	char dead[200], live[200];
	pid_t child = fork();
	int status;

	if (child == 0) /* before any ck_assert: see stress_apply() */
		_exit(0);
	ck_assert_int_ge(child, 0);
	ck_assert_int_eq(waitpid(child, &status, 0), child);
	snprintf(dead, sizeof(dead), "%s.new.%d.0badf00d", path, child);
	snprintf(live, sizeof(live), "%s.new.%d.0badf00d", path, getppid());
	fclose(fopen(dead, "w"));
	fclose(fopen(live, "w"));
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), 0);
	ck_assert_int_ne(access(dead, F_OK), 0);
	ck_assert_int_eq(access(live, F_OK), 0);
	hm_table_writer_close(w);
	unlink(live);
}
END_TEST

static bool skip_port(void *ctx, const struct hm_addr *a, uint32_t slot)
{
	(void)slot;
	return a->port == *(uint16_t *)ctx;
}

START_TEST(picking)
{
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_route out;
	int seen[8] = {0};
	uint16_t skip = 5001;
	struct hm_pick pick = {.skip = skip_port, .ctx = &skip};

	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("a", 0, 1, 0), domain_put("a.com", "a"),
			       dyno_put("a", "web.1", "10.0.0.1:5001", HM_DYNO_UP),
			       dyno_put("a", "web.2", "10.0.0.1:5002", HM_DYNO_UP),
			       dyno_put("a", "web.3", "10.0.0.1:5003", HM_DYNO_UP),
			       dyno_put("a", "web.4", "10.0.0.1:5004", HM_DYNO_CRASHED)),
			 0);
	/* random: every up dyno is picked, never a crashed one, never a skipped one */
	for (uint64_t i = 0; i < 3000; i++) {
		pick.rnd = i * 0x9e3779b97f4a7c15ull;
		ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
		ck_assert(out.has_dyno);
		seen[out.addr.port - 5000]++;
	}
	ck_assert_int_eq(seen[1], 0);
	ck_assert_int_gt(seen[2], 1200);
	ck_assert_int_gt(seen[3], 1200);
	ck_assert_int_eq(seen[4], 0);
	/* affinity: the named dyno if up and not skipped */
	pick.affinity = "web.3";
	pick.affinity_len = 5;
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	ck_assert(out.affinity_hit);
	ck_assert_str_eq(out.dyno, "web.3");
	pick.affinity = "web.4"; /* crashed */
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	ck_assert(!out.affinity_hit && out.has_dyno);
	pick.affinity = "web.1"; /* skipped */
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	ck_assert(!out.affinity_hit);
	ck_assert_uint_ne(out.addr.port, 5001);
	pick.affinity = "web.9";
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	ck_assert(!out.affinity_hit);
	/* every up dyno skipped: an answer without a dyno */
	ck_assert_int_eq(BATCH(w, 2, dyno_rm("a", "web.2"), dyno_rm("a", "web.3")), 0);
	pick.affinity = NULL;
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	ck_assert(!out.has_dyno);
	ck_assert_uint_eq(out.n_up, 1);

	/* least-conn: two choices on the shared counters */
	ck_assert_int_eq(BATCH(w, 3, app_put("a", 0, 0, HM_BALANCE_LEAST_CONN),
			       dyno_put("a", "web.2", "10.0.0.1:5002", HM_DYNO_UP),
			       dyno_put("a", "web.3", "10.0.0.1:5003", HM_DYNO_UP)),
			 0);
	skip = 0;
	ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
	struct hm_table_map *m = hm_table_reader_map(r);
	uint32_t busy = out.slot;
	hm_table_inflight_add(m, busy, 100);
	ck_assert_int_eq(hm_table_inflight_get(m, busy), 100);
	int busy_hits = 0;
	for (uint64_t i = 0; i < 3000; i++) {
		pick.rnd = i * 0x9e3779b97f4a7c15ull + 7;
		ck_assert_int_eq(route(r, "a.com", &pick, &out), 0);
		busy_hits += out.slot == busy;
	}
	/* two different dynos are compared: the busy one only wins when neither choice is idle,
	 * which cannot happen with three dynos of which two are idle */
	ck_assert_int_eq(busy_hits, 0);
	hm_table_inflight_add(m, busy, -100);
	ck_assert_int_eq(hm_table_inflight_get(m, busy), 0);
	hm_table_reader_free(r);
	hm_table_writer_close(w);
}
END_TEST

/*
 * Stress: every batch b rewrites app "s" so that one lookup can tell whether everything it read
 * came from one batch. With m = b % 50000 (the port carries it): every dyno's port = 10000 + m,
 * n_up = m % 7 + 1, balance = m & 1, maintenance = (m >> 1) & 1; app "t" (another host) is
 * created on odd batches and removed on even ones. Two reader processes check every lookup;
 * versions must never go backwards.
 */
#define STRESS_DYNOS 8

static int stress_reader(volatile const uint32_t *writer_done)
{
	struct hm_table_reader *r;
	struct hm_route out;
	uint64_t last_version = 0, lookups = 0;
	struct hm_pick pick = {0};

	if (hm_table_reader_new(&r, path) != 0)
		return 10;
	/* Until the writer is done and this reader has made enough lookups to mean something,
	 * however slow the machine. */
	while (!*writer_done || lookups <= 1000) {
		struct hm_table_map *m = hm_table_reader_map(r);
		uint32_t b;

		if (m == NULL)
			continue;
		pick.rnd = lookups * 0x9e3779b97f4a7c15ull;
		if (hm_table_route(m, "s.com", 5, &pick, &out) != 0)
			return 11;
		if (out.version < last_version)
			return 12;
		last_version = out.version;
		b = out.addr.port - 10000u;
		if (!out.has_dyno || out.n_up != b % 7 + 1 || out.balance != (b & 1) ||
		    out.maintenance != ((b >> 1) & 1) || out.n_dynos != STRESS_DYNOS ||
		    out.n_up + out.n_down != STRESS_DYNOS) {
			fprintf(stderr, "torn read: port %u n_up %u balance %u maint %d\n",
				out.addr.port, out.n_up, out.balance, out.maintenance);
			return 13;
		}
		lookups++;
	}
	fprintf(stderr, "reader %d: %llu consistent lookups\n", getpid(),
		(unsigned long long)lookups);
	hm_table_reader_free(r);
	return 0;
}

/* Returns 0 or the first error. No ck_assert here, nor anywhere a forked child runs (not even
 * the one on fork()'s result, which the child would run too): Check's fork mode writes every
 * assertion's location to a temporary file that the test's own children share, and a child
 * SIGKILLed in the middle of such a write (one that crosses a page of the file) leaves half a
 * record there. Check then stops the whole run with "Bad message type arg": one run in ten under
 * load, while dyno_put()'s ck_assert ran in writer_killed_mid_update's writers. */
static int stress_apply(struct hm_table_writer *w, uint32_t b)
{
	char addrs[STRESS_DYNOS][32], names[STRESS_DYNOS][16];
	struct hm_change cs[STRESS_DYNOS + 4];
	size_t n = 0;

	uint32_t m = b % 50000;

	cs[n++] = app_put("s", (m >> 1) & 1, 0, (uint8_t)(m & 1));
	for (int i = 0; i < STRESS_DYNOS; i++) {
		snprintf(names[i], sizeof(names[i]), "web.%d", i);
		snprintf(addrs[i], sizeof(addrs[i]), "127.0.0.%d:%u", i + 1, 10000 + m);
		cs[n++] = dyno_put_nock("s", names[i], addrs[i],
					(uint32_t)i < m % 7 + 1 ? HM_DYNO_UP : HM_DYNO_DOWN);
	}
	if (b & 1) {
		cs[n++] = app_put("t", 0, 0, 0);
		cs[n++] = domain_put("t.com", "t");
	} else if (b > 1) {
		cs[n++] = app_rm("t");
	}
	int e = hm_table_begin(w);

	for (size_t i = 0; i < n && e == 0; i++)
		e = hm_table_apply(w, &cs[i]);
	return e != 0 ? e : hm_table_commit(w, 1, b);
}

/* A passing ck_assert writes a record to Check's message file: tens of thousands of them would
 * only slow the writer down. Only a failure is reported. */
static void stress_batch(struct hm_table_writer *w, uint32_t b)
{
	int e = stress_apply(w, b);

	if (e != 0)
		ck_abort_msg("batch %u: %s", b, hm_strerror(e));
}

START_TEST(multiprocess_stress)
{
	volatile uint32_t *done =
	    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct hm_table_writer *w;
	pid_t readers[2];
	uint32_t b = 1;
	uint64_t end;
	int status;

	ck_assert_ptr_ne((void *)done, MAP_FAILED);
	*done = 0;
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("s", 0, 0, 0), domain_put("s.com", "s")), 0);
	stress_batch(w, b++);
	for (int i = 0; i < 2; i++) {
		readers[i] = fork();
		if (readers[i] == 0)
			_exit(stress_reader(done));
	}
	/* At least 2.2 s and 1000 batches, whichever comes last. */
	end = hm_mono_ms() + 2200;
	while (hm_mono_ms() < end || b <= 1000)
		stress_batch(w, b++);
	__atomic_store_n(done, 1, __ATOMIC_RELEASE);
	fprintf(stderr, "writer: %u batches\n", b);
	ck_assert_int_eq(hm_table_verify(w), 0);
	for (int i = 0; i < 2; i++) {
		ck_assert_int_eq(waitpid(readers[i], &status, 0), readers[i]);
		ck_assert(WIFEXITED(status));
		ck_assert_int_eq(WEXITSTATUS(status), 0);
	}
	hm_table_writer_close(w);
	munmap((void *)done, 4096);
}
END_TEST

/*
 * A writer child applies large batches in a loop and reports each committed b in shared memory;
 * the parent SIGKILLs it at random moments. After each kill a reader must see a consistent
 * version equal to the last reported one (or the next, if the kill fell between commit and
 * report), and a resumed writer must verify and carry on.
 */
START_TEST(writer_killed_mid_update)
{
	volatile uint32_t *reported =
	    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_route out;
	struct hm_table_info info;
	uint32_t b = 1;

	ck_assert_ptr_ne((void *)reported, MAP_FAILED);
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("s", 0, 0, 0), domain_put("s.com", "s")), 0);
	stress_batch(w, b);
	hm_table_writer_close(w);
	*reported = b;
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	srand(12345);
	for (int round = 0; round < 12; round++) {
		pid_t child = fork();
		int status;

		if (child == 0) {
			struct hm_table_writer *cw;

			if (hm_table_writer_open(&cw, path, NULL, HM_TABLE_RESUME, 0) != 0)
				_exit(3);
			for (uint32_t cb = *reported + 1;; cb++) {
				if (stress_apply(cw, cb) != 0)
					_exit(4);
				*reported = cb;
			}
		}
		/* Kill it at a random moment after it has committed something of its own (a slow
		 * machine must not turn this round into one where the writer never ran). */
		for (uint32_t before = *reported; *reported == before;) {
			/* No passing ck_assert in this loop: each writes a Check record (see
			 * stress_batch). */
			if (waitpid(child, &status, WNOHANG) != 0)
				ck_abort_msg("the writer child exited before committing");
			usleep(1000);
		}
		usleep((useconds_t)(rand() % 40000));
		kill(child, SIGKILL);
		ck_assert_int_eq(waitpid(child, &status, 0), child);
		ck_assert(WIFSIGNALED(status));
		ck_assert_int_eq(hm_table_reader_check(r), 0);
		ck_assert_int_eq(route(r, "s.com", NULL, &out), 0);
		/* The batch number is the committed seq, exactly; the port only repeats it modulo
		 * 50000 (a fast writer wraps it within one round). */
		hm_table_map_info(hm_table_reader_map(r), &info);
		b = (uint32_t)info.seq;
		ck_assert_uint_eq(out.version, info.version);
		ck_assert_msg(b == *reported || b == *reported + 1, "table at %u, writer said %u",
			      b, *reported);
		ck_assert_uint_eq(out.addr.port, 10000u + b % 50000u);
		ck_assert_uint_eq(out.n_up, b % 50000u % 7 + 1);
		*reported = b;
		/* the next writer resumes the same file from the published version */
		ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), 0);
		hm_table_writer_info(w, &info);
		ck_assert_uint_eq(info.seq, b);
		ck_assert_int_eq(hm_table_verify(w), 0);
		hm_table_writer_close(w);
	}
	ck_assert_uint_gt(b, 12);
	hm_table_reader_free(r);
	munmap((void *)reported, 4096);
}
END_TEST

/* ---- a file truncated under its readers (issue 9) ------------------------------------------ */

static char *slurp(const char *p, size_t *n)
{
	FILE *f = fopen(p, "rb");
	char *buf;
	long len;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
	len = ftell(f);
	rewind(f);
	buf = malloc((size_t)len);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
	fclose(f);
	*n = (size_t)len;
	return buf;
}

/* Writes data back over the same file (same inode), as an operator restoring it would. */
static void restore_in_place(const char *data, size_t n)
{
	FILE *f = fopen(path, "r+b");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(data, 1, n, f), n);
	fclose(f);
}

START_TEST(truncated_under_readers)
{
	struct sigaction old;
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_route out;
	struct stat st;
	uint64_t bad0 = hm_table_bad_maps();
	size_t n;
	char *saved;

	ck_assert_int_eq(hm_test_catch_sigbus(&old), 0);
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(BATCH(w, 1, app_put("a", 0, 0, 0), domain_put("a.com", "a"),
			       dyno_put("a", "web.1", "127.0.0.1:5000", HM_DYNO_UP)),
			 0);
	hm_table_writer_close(w);
	saved = slurp(path, &n);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);

	/* Truncated behind the reader's back: the next read faults, and fails instead of dying. */
	ck_assert_int_eq(truncate(path, 4096), 0);
	{
		struct hm_table_map *m = hm_table_reader_map(r);

		ck_assert_ptr_nonnull(m);
		ck_assert_int_eq(hm_table_route(m, "a.com", 5, NULL, &out), HM_EBADTABLE);
		hm_table_inflight_add(m, 0, 1); /* the counters are zero pages too */
	}
	ck_assert_uint_eq(hm_table_bad_maps(), bad0 + 1);
	ck_assert_ptr_null(hm_table_reader_map(r));
	ck_assert_int_lt(hm_table_reader_check(r), 0); /* still too short to map */
	ck_assert_ptr_null(hm_table_reader_map(r));

	/* Written back in place (same inode): mapped again. */
	restore_in_place(saved, n);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);
	ck_assert(out.has_dyno);

	/* Truncated again: the periodic check sees it first, before any read could fault. */
	ck_assert_int_eq(truncate(path, 8192), 0);
	ck_assert_int_lt(hm_table_reader_check(r), 0);
	ck_assert_uint_eq(hm_table_bad_maps(), bad0 + 2);
	ck_assert_ptr_null(hm_table_reader_map(r));
	restore_in_place(saved, n);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	ck_assert_int_eq(route(r, "a.com", NULL, &out), 0);

	/* A fault anywhere else is not the table's. */
	ck_assert(!hm_pubfile_fault(&st));
	hm_table_reader_free(r);
	free(saved);
	sigaction(SIGBUS, &old, NULL);
}
END_TEST

/* Named secrets: set, read by a reader, replaced, removed; in the digest without showing in it;
 * abort, growth and resume keep them; 16 at most. */
static struct hm_change secret_put(const char *name, const uint8_t *v, uint16_t n)
{
	struct hm_change c = {.op = HM_OP_SECRET_PUT,
			      .name = name,
			      .name_len = (uint16_t)strlen(name),
			      .value = v,
			      .value_len = n};
	return c;
}

static int count_ops(void *ctx, const struct hm_change *c)
{
	int *n = ctx;

	n[c->op]++;
	return 0;
}

START_TEST(secrets)
{
	struct hm_table_writer *w, *w2;
	struct hm_table_reader *r;
	struct hm_table_map *m;
	struct hm_table_info a, b;
	uint8_t k1[32], k2[32], out[HM_SECRET_MAX];
	int ops[HM_OP_MAX + 1] = {0};
	char name[16];

	memset(k1, 0x11, sizeof(k1));
	memset(k2, 0x22, sizeof(k2));
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, 0, 0), 0);
	ck_assert_int_eq(batch(w, 1, (struct hm_change[]){app_put("a", 0, 0, 0)}, 1), 0);
	hm_table_writer_info(w, &a);
	ck_assert_int_eq(batch(w, 2, (struct hm_change[]){secret_put("affinity", k1, 32)}, 1), 0);
	hm_table_writer_info(w, &b);
	ck_assert_uint_eq(b.secrets, 1);
	ck_assert(memcmp(a.digest, b.digest, 16) != 0); /* the digest covers it */
	ck_assert_int_eq(hm_table_reader_new(&r, path), 0);
	ck_assert_ptr_nonnull(m = hm_table_reader_map(r));
	ck_assert_int_eq(hm_table_secret(m, "affinity", out), 32);
	ck_assert(memcmp(out, k1, 32) == 0);
	ck_assert_int_eq(hm_table_secret(m, "other", out), HM_ENOSECRET);
	/* A replaced value; an aborted batch leaves the old one. */
	ck_assert_int_eq(batch(w, 3, (struct hm_change[]){secret_put("affinity", k2, 32)}, 1), 0);
	ck_assert_int_eq(hm_table_secret(m, "affinity", out), 32);
	ck_assert(memcmp(out, k2, 32) == 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(
	    hm_table_apply(
		w, &(struct hm_change){.op = HM_OP_SECRET_RM, .name = "affinity", .name_len = 8}),
	    0);
	hm_table_abort(w);
	ck_assert_int_eq(hm_table_writer_secret(w, "affinity", out), 32);
	ck_assert_int_eq(hm_table_verify(w), 0);
	/* Equal state, equal digest, whatever the order; the digest does not hold the value. */
	ck_assert_int_eq(hm_table_writer_open(&w2, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(
	    batch(w2, 1,
		  (struct hm_change[]){secret_put("affinity", k1, 32),
				       secret_put("affinity", k2, 32), app_put("a", 0, 0, 0)},
		  3),
	    0);
	hm_table_writer_info(w, &a);
	hm_table_writer_info(w2, &b);
	ck_assert(memcmp(a.digest, b.digest, 16) == 0);
	ck_assert(memmem(a.digest, 16, k2, 4) == NULL);
	/* Listed by foreach (snapshots and growth need them), first. */
	ck_assert_int_eq(hm_table_foreach(w, count_ops, ops), 0);
	ck_assert_int_eq(ops[HM_OP_SECRET_PUT], 1);
	/* Growth keeps them. */
	ck_assert_int_eq(hm_table_grow(w, &(struct hm_table_caps){4096, 4096, 8192, 4u << 20}), 0);
	ck_assert_int_eq(hm_table_writer_secret(w, "affinity", out), 32);
	ck_assert(memcmp(out, k2, 32) == 0);
	/* 16 at most. */
	for (int i = 0; i < 15; i++) {
		snprintf(name, sizeof(name), "key-%d", i);
		ck_assert_int_eq(
		    batch(w, 4 + (uint64_t)i, (struct hm_change[]){secret_put(name, k1, 32)}, 1),
		    0);
	}
	ck_assert_int_eq(batch(w, 30, (struct hm_change[]){secret_put("one-more", k1, 32)}, 1),
			 HM_ESECRETS);
	ck_assert_int_eq(
	    batch(w, 30,
		  (struct hm_change[]){{.op = HM_OP_SECRET_RM, .name = "nothing", .name_len = 7}},
		  1),
	    HM_ENOSECRET);
	ck_assert_int_eq(
	    batch(w, 30,
		  (struct hm_change[]){{.op = HM_OP_SECRET_RM, .name = "key-3", .name_len = 5},
				       secret_put("one-more", k1, 32)},
		  2),
	    0);
	hm_table_writer_close(w);
	/* Resume keeps them. */
	ck_assert_int_eq(hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0), 0);
	hm_table_writer_info(w, &a);
	ck_assert_uint_eq(a.secrets, 16);
	ck_assert_int_eq(hm_table_writer_secret(w, "one-more", out), 32);
	ck_assert_int_eq(hm_table_writer_secret(w, "key-3", out), HM_ENOSECRET);
	hm_table_writer_close(w);
	hm_table_writer_close(w2);
	hm_table_reader_free(r);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("table");
	TCase *tc = tcase_create("table");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, lookup_rules);
	tcase_add_test(tc, operations_and_errors);
	tcase_add_test(tc, batch_info_before_commit);
	tcase_add_test(tc, foreach_and_resolve);
	tcase_add_test(tc, digest_order_independence);
	tcase_add_test(tc, growth_and_limits);
	tcase_add_test(tc, resume_and_replace);
	tcase_add_test(tc, sweeps_dead_writers_files);
	tcase_add_test(tc, picking);
	tcase_add_test(tc, multiprocess_stress);
	tcase_add_test(tc, writer_killed_mid_update);
	tcase_add_test(tc, truncated_under_readers);
	tcase_add_test(tc, secrets);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
