/*
 * Tests common/state.c, the one entry that applies a batch to a node's table and certificate
 * store: routing of each change to its file, growth of whichever file is full (sized for the
 * whole batch at once), the feed's own errors, the commit order and the skip of a file that
 * already holds the batch, a batch prepared and left open (hm_state_prepare, hm_state_batch_info)
 * and extended part by part (hm_state_extend: a failing part taken out, a growing one kept),
 * ticket keys in the store and never in the table, and the combined digest and foreach that
 * snapshots use.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/state.h"
#include "tests/unit/hm_check.h"

static char dir[64];
static char tpath[128], cpath[128];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-state-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(tpath, sizeof(tpath), "%s/n.table", dir);
	ck_assert_int_eq(hm_certstore_path(tpath, cpath, sizeof(cpath)), 0);
}

static void teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

struct files {
	struct hm_table_writer *t;
	struct hm_certstore_writer *c;
	struct hm_state s;
};

/* Small files, so that a modest batch fills them. */
static void open_files(struct files *f, unsigned flags)
{
	struct hm_table_caps tc = {4, 4, 4, 4096};
	struct hm_certstore_caps cc = {4, 8192};

	ck_assert_int_eq(hm_table_writer_open(&f->t, tpath, &tc, flags ? HM_TABLE_RESUME : 0, 0),
			 0);
	ck_assert_int_eq(
	    hm_certstore_writer_open(&f->c, cpath, &cc, flags ? HM_CERTSTORE_RESUME : 0, 0), 0);
	memset(&f->s, 0, sizeof(f->s));
	f->s.table = f->t;
	f->s.certs = f->c;
}

static void close_files(struct files *f)
{
	hm_table_writer_close(f->t);
	hm_certstore_writer_close(f->c);
}

/* A feed of n apps, each with a domain, and n certificates (cert.put records as the origin
 * makes them), plus optional extra changes. */
struct feed {
	int n;
	int calls, counting_calls;
	const struct hm_change *extra;
	int nextra;
	int fail_at; /* >= 0: return -EIO at this change (the feed's own error) */
};

static char pem[600];
static uint8_t id[HM_CERT_ID_LEN];

static int feed_fn(struct hm_state *s, void *arg)
{
	struct feed *f = arg;
	char app[16], host[32];
	int e, k = 0;

	f->calls++;
	if (hm_state_counting(s))
		f->counting_calls++;
	for (int i = 0; i < f->n; i++) {
		snprintf(app, sizeof(app), "a%d", i);
		snprintf(host, sizeof(host), "h%d.example.com", i);
		struct hm_change a = {
		    .op = HM_OP_APP_PUT, .app = app, .app_len = (uint8_t)strlen(app)};
		struct hm_change d = {.op = HM_OP_DOMAIN_PUT,
				      .app = app,
				      .app_len = (uint8_t)strlen(app),
				      .name = host,
				      .name_len = (uint16_t)strlen(host)};
		struct hm_change c = {.op = HM_OP_CERT_PUT,
				      .name = host,
				      .name_len = (uint16_t)strlen(host),
				      .cert = pem,
				      .cert_len = sizeof(pem) - 1,
				      .key = "KEY\n",
				      .key_len = 4,
				      .id = id,
				      .not_after = 2000000000 + i};

		if (f->fail_at == k++)
			return -EIO;
		if ((e = hm_state_change(s, &a)) != 0 || (e = hm_state_change(s, &d)) != 0 ||
		    (e = hm_state_change(s, &c)) != 0)
			return e;
	}
	for (int i = 0; i < f->nextra; i++)
		if ((e = hm_state_change(s, &f->extra[i])) != 0)
			return e;
	return 0;
}

static void init_pem(void)
{
	memset(pem, 'A', sizeof(pem) - 1);
	for (size_t i = 63; i < sizeof(pem) - 1; i += 64)
		pem[i] = '\n';
	pem[sizeof(pem) - 1] = '\0';
	memset(id, 7, sizeof(id));
}

START_TEST(grows_both_files_and_commits_both)
{
	struct files f;
	struct feed fd = {.n = 300, .fail_at = -1};
	struct hm_table_info ti;
	struct hm_certstore_info ci;

	init_pem();
	open_files(&f, 0);
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 1), 0);
	/* One counting pass sizes each file for the whole batch when it is first found full
	 * (the table first, then the store): no doubling rounds. */
	ck_assert_int_eq(fd.counting_calls, 1);
	ck_assert_int_eq(fd.calls, 4);
	hm_table_writer_info(f.t, &ti);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ti.apps, 300);
	ck_assert_uint_eq(ti.domains, 300);
	ck_assert_uint_eq(ci.certs, 300);
	ck_assert_uint_eq(ti.epoch, 5);
	ck_assert_uint_eq(ti.seq, 1);
	ck_assert_uint_eq(ci.epoch, 5);
	ck_assert_uint_eq(ci.seq, 1);
	ck_assert_int_eq(hm_table_verify(f.t), 0);
	ck_assert_int_eq(hm_certstore_verify(f.c), 0);
	close_files(&f);
}
END_TEST

/* hm_state_prepare (an origin whose store may refuse): the grown batch stays open in both
 * files, hm_state_batch_info gives the digest a commit will publish, and an abort leaves the
 * published state as it was; a commit then publishes exactly that digest. */
START_TEST(prepare_keeps_the_batch_open)
{
	struct files f;
	struct feed fd = {.n = 50, .fail_at = -1};
	uint8_t before[HM_DIGEST_LEN], open_digest[HM_DIGEST_LEN], after[HM_DIGEST_LEN];
	struct hm_table_info ti, bi;
	struct hm_certstore_info ci;

	init_pem();
	open_files(&f, 0);
	ck_assert_int_eq(hm_state_batch_info(&f.s, open_digest, &bi), -EINVAL);
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &(struct feed){.n = 1, .fail_at = -1}, 5, 1),
			 0);
	hm_state_digest(&f.s, before);
	ck_assert_int_eq(hm_state_prepare(&f.s, feed_fn, &fd, 5, 2), 0);
	ck_assert_int_gt(fd.counting_calls, 0); /* grew on the way */
	ck_assert_int_eq(hm_state_begin(&f.s, 5, 2), -EBUSY);
	ck_assert_int_eq(hm_state_batch_info(&f.s, open_digest, &bi), 0);
	ck_assert_uint_eq(bi.apps, 50);
	ck_assert_uint_eq(bi.domains, 50);
	ck_assert(memcmp(open_digest, before, HM_DIGEST_LEN) != 0);
	/* Nothing published yet. */
	hm_state_digest(&f.s, after);
	ck_assert(memcmp(after, before, HM_DIGEST_LEN) == 0);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ci.certs, 1);
	hm_state_abort(&f.s);
	hm_state_digest(&f.s, after);
	ck_assert(memcmp(after, before, HM_DIGEST_LEN) == 0);
	hm_table_writer_info(f.t, &ti);
	ck_assert_uint_eq(ti.seq, 1);
	ck_assert_uint_eq(ti.apps, 1);
	/* Again, committed this time: the published digest is the open batch's. */
	ck_assert_int_eq(hm_state_prepare(&f.s, feed_fn, &fd, 5, 2), 0);
	ck_assert_int_eq(hm_state_batch_info(&f.s, open_digest, &bi), 0);
	ck_assert_int_eq(hm_state_commit(&f.s, 5, 2), 0);
	hm_state_digest(&f.s, after);
	ck_assert(memcmp(after, open_digest, HM_DIGEST_LEN) == 0);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ci.certs, 50);
	ck_assert_uint_eq(ci.seq, 2);
	ck_assert_int_eq(hm_state_batch_info(&f.s, open_digest, &bi), -EINVAL);
	close_files(&f);
}
END_TEST

/* hm_state_extend()'s redo: the parts the open batch holds, fed again in order. */
struct parts {
	struct feed *v[4];
	int n, calls;
};

static int redo_fn(struct hm_state *s, void *arg)
{
	struct parts *p = arg;
	int e;

	p->calls++;
	for (int i = 0; i < p->n; i++)
		if ((e = feed_fn(s, p->v[i])) != 0)
			return e;
	return 0;
}

/* hm_state_extend (an origin's group): a part that fails is taken out again and the parts
 * before it stay open, with the digest they had; a part that needs more room grows the files and
 * keeps everything; the commit publishes the last open digest. */
START_TEST(extend_keeps_the_parts_before_a_failing_one)
{
	struct files f;
	struct hm_change g1 = {.op = HM_OP_APP_PUT, .app = "g1", .app_len = 2};
	struct hm_change bad[2] = {{.op = HM_OP_APP_PUT, .app = "g2", .app_len = 2},
				   {.op = HM_OP_DYNO_PUT,
				    .app = "nosuch",
				    .app_len = 6,
				    .name = "web.1",
				    .name_len = 5,
				    .addr = {.port = 80}}};
	struct feed first = {.extra = &g1, .nextra = 1, .fail_at = -1};
	struct feed failing = {.extra = bad, .nextra = 2, .fail_at = -1};
	struct feed big = {.n = 50, .fail_at = -1};
	struct parts redo = {.v = {&first}, .n = 1};
	uint8_t d1[HM_DIGEST_LEN], d[HM_DIGEST_LEN], pub[HM_DIGEST_LEN];
	struct hm_table_info bi;

	init_pem();
	open_files(&f, 0);
	ck_assert_int_eq(hm_state_extend(&f.s, feed_fn, &first, redo_fn, &redo), -EINVAL);
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &(struct feed){.n = 1, .fail_at = -1}, 5, 1),
			 0);
	ck_assert_int_eq(hm_state_prepare(&f.s, feed_fn, &first, 5, 2), 0);
	ck_assert_int_eq(hm_state_batch_info(&f.s, d1, &bi), 0);
	ck_assert_uint_eq(bi.apps, 2);
	/* The failing part: its error, and the batch as it was (g2 gone, g1 kept). */
	ck_assert_int_ne(hm_state_extend(&f.s, feed_fn, &failing, redo_fn, &redo), 0);
	ck_assert_int_eq(redo.calls, 1);
	ck_assert_int_eq(hm_state_batch_info(&f.s, d, &bi), 0);
	ck_assert_uint_eq(bi.apps, 2);
	ck_assert(memcmp(d, d1, HM_DIGEST_LEN) == 0);
	/* A part that fills both files: grown, everything still open. */
	ck_assert_int_eq(hm_state_extend(&f.s, feed_fn, &big, redo_fn, &redo), 0);
	ck_assert_int_gt(big.counting_calls, 0);
	ck_assert_int_eq(hm_state_batch_info(&f.s, d, &bi), 0);
	ck_assert_uint_eq(bi.apps, 51); /* a0 .. a49 and g1 */
	ck_assert_uint_eq(bi.domains, 50);
	ck_assert_int_eq(hm_state_commit(&f.s, 5, 3), 0);
	hm_state_digest(&f.s, pub);
	ck_assert(memcmp(pub, d, HM_DIGEST_LEN) == 0);
	ck_assert_int_eq(hm_table_verify(f.t), 0);
	ck_assert_int_eq(hm_certstore_verify(f.c), 0);
	close_files(&f);
}
END_TEST

START_TEST(errors_change_nothing)
{
	struct files f;
	struct feed fd = {.n = 2, .fail_at = -1};
	struct hm_change bad_rm = {.op = HM_OP_CERT_RM, .name = "nothere.example", .name_len = 15};
	struct hm_change client = {.op = HM_OP_CERT_PUT,
				   .name = "c.example",
				   .name_len = 9,
				   .cert = "C\n",
				   .cert_len = 2,
				   .key = "K\n",
				   .key_len = 2};
	struct hm_table_info ti;
	struct hm_certstore_info ci;

	init_pem();
	open_files(&f, 0);
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 1), 0);
	fd.n = 3;
	fd.extra = &bad_rm;
	fd.nextra = 1;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 2), HM_ENOCERT);
	fd.extra = &client; /* a client's record: the origin makes the canonical one first */
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 2), HM_ECERT);
	fd.nextra = 0;
	fd.fail_at = 2;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 2), -EIO);
	hm_table_writer_info(f.t, &ti);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ti.seq, 1);
	ck_assert_uint_eq(ci.seq, 1);
	ck_assert_uint_eq(ti.apps, 2);
	ck_assert_uint_eq(ci.certs, 2);
	/* Without a store, certificate changes are not for this state. */
	f.s.certs = NULL;
	fd.fail_at = -1;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 2), HM_EOP);
	close_files(&f);
}
END_TEST

/* The verify hook sees every cert.put and can refuse the batch (the edge checks ids). */
static int verify_calls;
static int refuse_verify(const struct hm_change *c)
{
	(void)c;
	verify_calls++;
	return HM_ECORRUPT;
}

START_TEST(verify_hook_refuses)
{
	struct files f;
	struct feed fd = {.n = 1, .fail_at = -1};

	init_pem();
	open_files(&f, 0);
	f.s.cert_verify = refuse_verify;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 1), HM_ECORRUPT);
	ck_assert_int_eq(verify_calls, 1);
	close_files(&f);
}
END_TEST

/* A process that died between the store's commit and the table's: the store holds the batch,
 * the table does not; applying the batch again skips the store and catches the table up. */
START_TEST(a_file_ahead_is_skipped)
{
	struct files f;
	struct feed fd = {.n = 3, .fail_at = -1};
	struct hm_state only_certs;
	struct hm_table_writer *scratch;
	struct hm_table_info ti;
	struct hm_certstore_info ci;
	uint8_t d1[HM_DIGEST_LEN], d2[HM_DIGEST_LEN];

	init_pem();
	open_files(&f, 0);
	/* The store alone at seq 1 (as if the table's commit never happened): a state over a
	 * private scratch table commits the store. */
	ck_assert_int_eq(hm_table_writer_open(&scratch, NULL, NULL, 0, 0), 0);
	memset(&only_certs, 0, sizeof(only_certs));
	only_certs.table = scratch;
	only_certs.certs = f.c;
	ck_assert_int_eq(hm_state_apply(&only_certs, feed_fn, &fd, 5, 1), 0);
	hm_table_writer_close(scratch);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ci.certs, 3);
	ck_assert_uint_eq(ci.seq, 1);
	ck_assert_uint_eq(ci.version, 1);
	/* Replay seq 1 on both: the store is skipped (it would refuse nothing, but must not be
	 * written twice), the table gets it. */
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 1), 0);
	hm_table_writer_info(f.t, &ti);
	hm_certstore_writer_info(f.c, &ci);
	ck_assert_uint_eq(ti.apps, 3);
	ck_assert_uint_eq(ti.seq, 1);
	ck_assert_uint_eq(ci.version, 1); /* not written again */
	hm_state_digest(&f.s, d1);
	/* Restart: both resumed, the digest is the same. */
	close_files(&f);
	open_files(&f, 1);
	hm_state_digest(&f.s, d2);
	ck_assert_mem_eq(d1, d2, HM_DIGEST_LEN);
	close_files(&f);
}
END_TEST

static int count_changes(void *ctx, const struct hm_change *c)
{
	int *n = ctx;

	n[c->op]++;
	return 0;
}

START_TEST(ticket_keys_go_to_the_store_only)
{
	struct files f;
	struct hm_ticket_key k[3];
	struct hm_change puts[3];
	static const char *const names[] = {"tls-ticket-0", "tls-ticket-1", "tls-ticket-2"};
	struct feed fd = {.n = 1, .fail_at = -1, .extra = puts, .nextra = 2};
	struct hm_ticket_key got[HM_TICKET_KEYS_MAX];
	struct hm_table_info ti;
	uint8_t v[HM_SECRET_MAX];
	int counts[HM_OP_MAX + 1] = {0};

	init_pem();
	for (int i = 0; i < 3; i++) {
		memset(&k[i], 'a' + i, sizeof(k[i]));
		puts[i] = (struct hm_change){.op = HM_OP_SECRET_PUT,
					     .name = names[i],
					     .name_len = 12,
					     .value = (const uint8_t *)&k[i],
					     .value_len = HM_TICKET_KEY_LEN};
	}
	open_files(&f, 0);
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 1), 0);
	ck_assert_int_eq(hm_certstore_writer_ticket_keys(f.c, got), 2);
	ck_assert_mem_eq(&got[0], &k[0], sizeof(k[0]));
	ck_assert_mem_eq(&got[1], &k[1], sizeof(k[1]));
	hm_table_writer_info(f.t, &ti);
	ck_assert_uint_eq(ti.secrets, 0);
	ck_assert_int_eq(hm_table_writer_secret(f.t, "tls-ticket-0", v), HM_ENOSECRET);
	/* A rotation: [next, new, current]. */
	puts[0].value = (const uint8_t *)&k[1];
	puts[1].value = (const uint8_t *)&k[2];
	puts[2].value = (const uint8_t *)&k[0];
	fd.n = 0;
	fd.nextra = 3;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 2), 0);
	ck_assert_int_eq(hm_certstore_writer_ticket_keys(f.c, got), 3);
	ck_assert_mem_eq(&got[0], &k[1], sizeof(k[0]));
	ck_assert_mem_eq(&got[2], &k[0], sizeof(k[0]));
	/* Snapshots see the certificate and the three keys after the table's objects. */
	ck_assert_int_eq(hm_state_foreach(&f.s, count_changes, counts), 0);
	ck_assert_int_eq(counts[HM_OP_CERT_PUT], 1);
	ck_assert_int_eq(counts[HM_OP_SECRET_PUT], 3);
	ck_assert_int_eq(counts[HM_OP_APP_PUT], 1);
	/* A slot is filled only after the ones before it; a key is 80 bytes. */
	puts[0] = (struct hm_change){.op = HM_OP_SECRET_PUT,
				     .name = "tls-ticket-3",
				     .name_len = 12,
				     .value = (const uint8_t *)&k[0],
				     .value_len = 40};
	fd.nextra = 1;
	ck_assert_int_eq(hm_state_apply(&f.s, feed_fn, &fd, 5, 3), HM_ESECRET);
	ck_assert_int_eq(hm_ticket_secret_slot("tls-ticket-3", 12), 3);
	ck_assert_int_eq(hm_ticket_secret_slot("tls-ticket-4", 12), -1);
	ck_assert_int_eq(hm_ticket_secret_slot("affinity", 8), -1);
	close_files(&f);
}
END_TEST

START_TEST(store_path)
{
	char out[64];

	ck_assert_int_eq(hm_certstore_path("/run/hermod/hermod.table", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "/run/hermod/hermod.certs");
	ck_assert_int_eq(hm_certstore_path("/x/routes", out, sizeof(out)), 0);
	ck_assert_str_eq(out, "/x/routes.certs");
	ck_assert_int_eq(hm_certstore_path("/x/routes", out, 10), -ENAMETOOLONG);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("state");
	TCase *tc = tcase_create("state");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, grows_both_files_and_commits_both);
	tcase_add_test(tc, prepare_keeps_the_batch_open);
	tcase_add_test(tc, extend_keeps_the_parts_before_a_failing_one);
	tcase_add_test(tc, errors_change_nothing);
	tcase_add_test(tc, verify_hook_refuses);
	tcase_add_test(tc, a_file_ahead_is_skipped);
	tcase_add_test(tc, ticket_keys_go_to_the_store_only);
	tcase_add_test(tc, store_path);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
