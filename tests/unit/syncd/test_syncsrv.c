/*
 * Tests syncd/syncsrv.c without sockets (hm__syncsrv_answer): catch-up from the ring and from the
 * journal, replies cut at the size bound and resumed mid-batch, EPOCH and SNAPSHOT answers,
 * snapshot chunks by id, and the ring/index bookkeeping over many batches and compactions.
 */
#include <nng/nng.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/table.h"
#include "syncd/batch.h"
#include "syncd/journal.h"
#include "syncd/snapfile.h"
#include "syncd/syncsrv.h"
#include "tests/unit/hm_check.h"

#define EPOCH 0xabcull

static char dir[256];
static struct hm__journal *jr;
static struct hm_proto_decoder *dec;

static void setup(void)
{
	struct hm__journal_cfg cfg = {.epoch = EPOCH};
	char err[512];

	snprintf(dir, sizeof(dir), "/tmp/hm-test-syncsrv-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	cfg.dir = dir;
	ck_assert_int_eq(hm__journal_start(&jr, &cfg, 1, err, sizeof(err)), 0);
	ck_assert_int_eq(hm_proto_decoder_new(&dec), 0);
}

static void teardown(void)
{
	char cmd[300];

	hm__journal_stop(jr);
	hm_proto_decoder_free(dec);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Batch seq with n dyno puts (names long enough to make parts big) in parts of per. */
static struct hm__batch *make_batch(uint64_t seq, uint32_t n, uint32_t per)
{
	static char names[20000][80];
	struct hm__batch_builder bb = {0};
	struct hm__batch *b;
	uint32_t counts[256], nparts = 0;
	uint8_t id[16] = {0}, digest[16] = {0};

	for (uint32_t left = n; left > 0; left -= left < per ? left : per)
		counts[nparts++] = left < per ? left : per;
	ck_assert_int_eq(hm__batch_begin(&bb, EPOCH, seq, 0, counts, nparts), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct hm_change c = {.op = HM_OP_DYNO_PUT, .state = HM_DYNO_UP};

		snprintf(names[i], sizeof(names[i]), "w%0*u.%u", 50, i, (unsigned)seq);
		c.app = "app";
		c.app_len = 3;
		c.name = names[i];
		c.name_len = (uint16_t)strlen(names[i]);
		c.addr.family = 4;
		c.addr.port = 80;
		ck_assert_int_eq(hm__batch_add(&bb, &c), 0);
	}
	ck_assert_int_eq(hm__batch_end(&bb, id, digest, 1, 0, n, &b), 0);
	return b;
}

/* Publishes batches first..last, each appended to the journal first (as the origin does). */
static void publish(struct hm__syncsrv *ss, uint64_t first, uint64_t last, uint32_t n, uint32_t per)
{
	for (uint64_t s = first; s <= last; s++) {
		struct hm__batch *b = make_batch(s, n, per);
		struct hm__jpos pos;

		hm__journal_append(jr, b, &pos);
		while (hm__journal_durable(jr) < s)
			;
		hm__syncsrv_publish(ss, b, &pos);
		hm__batch_unref(b);
	}
}

static nng_msg *ask(struct hm__syncsrv *ss, const struct hm_pbuf *pb)
{
	nng_msg *req, *rep;

	ck_assert_int_eq(nng_msg_alloc(&req, pb->len), 0);
	memcpy(nng_msg_body(req), pb->data, pb->len);
	rep = hm__syncsrv_answer(ss, dec, req);
	nng_msg_free(req);
	return rep;
}

/* Asks for catch-up; returns the decoded reply (valid until the next decode); rep kept. */
static struct hm_msg catchup(struct hm__syncsrv *ss, uint64_t epoch, uint64_t after, uint32_t from,
			     nng_msg **keep)
{
	struct hm_pbuf pb = {0};
	struct hm_msg m;
	nng_msg *rep;

	ck_assert_int_eq(hm_proto_encode_catchup_req(&pb, epoch, after, from), 0);
	rep = ask(ss, &pb);
	hm_pbuf_fini(&pb);
	ck_assert_ptr_nonnull(rep);
	ck_assert_int_eq(hm_proto_decode(dec, nng_msg_body(rep), nng_msg_len(rep), &m), 0);
	ck_assert_uint_eq(m.type, HM_MSG_CATCHUP_REP);
	ck_assert_uint_le(nng_msg_len(rep), HM_PROTO_MAX_MSG);
	*keep = rep;
	return m;
}

START_TEST(status_answers)
{
	struct hm__syncsrv *ss;
	struct hm_msg m;
	nng_msg *rep;

	setup();
	ck_assert_int_eq(hm__syncsrv_new(&ss, dir, EPOCH, 1 << 20), 0);
	m = catchup(ss, EPOCH + 1, 0, 0, &rep);
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_EPOCH);
	nng_msg_free(rep);
	m = catchup(ss, 0, 0, 0, &rep); /* a new table has epoch 0 */
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_EPOCH);
	nng_msg_free(rep);
	m = catchup(ss, EPOCH, 0, 0, &rep); /* up to date with nothing published */
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_OK);
	ck_assert_uint_eq(m.catchup_rep.nparts, 0);
	ck_assert(!m.catchup_rep.more);
	nng_msg_free(rep);
	publish(ss, 1, 3, 2, 2);
	m = catchup(ss, EPOCH, 7, 0, &rep); /* ahead of the origin */
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_SNAPSHOT);
	ck_assert_uint_eq(m.catchup_rep.head_seq, 3);
	nng_msg_free(rep);
	{
		/* Not a sync request: no answer. */
		nng_msg *req;

		ck_assert_int_eq(nng_msg_alloc(&req, 3), 0);
		memcpy(nng_msg_body(req), "\x92\x01\x01", 3);
		ck_assert_ptr_null(hm__syncsrv_answer(ss, dec, req));
		nng_msg_free(req);
	}
	hm__syncsrv_free(ss);
	teardown();
}
END_TEST

/* Follows catch-up replies from after=0 to the head; checks every part comes once, in order. */
static void follow(struct hm__syncsrv *ss, uint64_t head, uint32_t nparts_per_batch,
		   uint32_t *replies, uint32_t *mid_batch)
{
	uint64_t after = 0;
	uint32_t from = 0;

	*replies = 0;
	*mid_batch = 0;
	for (;;) {
		nng_msg *rep;
		struct hm_msg m = catchup(ss, EPOCH, after, from, &rep);

		ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_OK);
		ck_assert_uint_eq(m.catchup_rep.head_seq, head);
		(*replies)++;
		for (uint32_t i = 0; i < m.catchup_rep.nparts; i++) {
			const struct hm_batch_part *p = &m.catchup_rep.parts[i];

			ck_assert_uint_eq(p->seq, after + 1);
			ck_assert_uint_eq(p->part, from);
			ck_assert_uint_eq(p->nparts, nparts_per_batch);
			if (++from == p->nparts) {
				after++;
				from = 0;
			}
		}
		nng_msg_free(rep);
		if (!m.catchup_rep.more)
			break;
		if (from != 0)
			(*mid_batch)++; /* the next reply resumes inside a batch (from_part) */
		ck_assert_uint_lt(*replies, 1000);
	}
	ck_assert_uint_eq(after, head);
	ck_assert_uint_eq(from, 0);
}

START_TEST(catchup_from_ring_and_journal)
{
	struct hm__syncsrv *ss;
	struct hm__syncsrv_stats st;
	uint32_t replies, mid;

	setup();
	/* A ring of 256 KiB; batches of 5 parts of ~200 KB: most come from the journal. */
	ck_assert_int_eq(hm__syncsrv_new(&ss, dir, EPOCH, 256 << 10), 0);
	publish(ss, 1, 12, 12000, 2400);
	hm__syncsrv_stats(ss, &st);
	ck_assert_uint_le(st.ring_batches, 2);
	ck_assert_uint_eq(st.index_batches, 12);
	follow(ss, 12, 5, &replies, &mid);
	ck_assert_uint_ge(replies, 3); /* ~4 MiB each at most: the replies were cut */
	ck_assert_uint_ge(mid, 1);     /* and at least one cut fell inside a batch */
	hm__syncsrv_stats(ss, &st);
	ck_assert_uint_gt(st.journal_reads, 0);
	hm__syncsrv_free(ss);
	teardown();
}
END_TEST

START_TEST(snapshots_and_index_pruning)
{
	struct hm__syncsrv *ss;
	struct hm__syncsrv_stats st;
	struct hm_table_writer *w;
	struct hm__snapfile *sf;
	struct hm_msg m;
	nng_msg *rep;
	char path[512], err[512];
	uint64_t id1 = 0, id2 = 0;

	setup();
	ck_assert_int_eq(hm__syncsrv_new(&ss, dir, EPOCH, 4096), 0);
	ck_assert_int_eq(hm_table_writer_open(&w, NULL, NULL, 0, 0), 0);
	/* Thousands of small batches with compactions in between: the index is pruned from the
	 * front while it grows at the back (under ASan, any slot out of bounds is caught). */
	for (uint64_t round = 0; round < 6; round++) {
		uint64_t first = round * 700 + 1;

		publish(ss, first, first + 699, 1, 1);
		ck_assert_int_eq(hm_table_begin(w), 0);
		ck_assert_int_eq(hm_table_commit(w, EPOCH, first + 600), 0);
		ck_assert_int_eq(hm__snap_write(dir, &(struct hm_state){.table = w}, 100 + round,
						NULL, path, sizeof(path), err, sizeof(err)),
				 0);
		ck_assert_int_eq(hm__snap_open(&sf, path, true), 0);
		hm__syncsrv_snapshot(ss, sf);
		hm__syncsrv_stats(ss, &st);
		ck_assert_uint_eq(st.snapshot_seq, first + 600);
		ck_assert_uint_eq(st.index_batches, 99);
	}
	id1 = 105;
	/* Behind the snapshot and the ring: a snapshot is the only answer. */
	m = catchup(ss, EPOCH, 100, 0, &rep);
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_SNAPSHOT);
	nng_msg_free(rep);
	/* After the snapshot: served. */
	m = catchup(ss, EPOCH, 4100, 0, &rep); /* 4101 is in the snapshot, not the journal */
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_SNAPSHOT);
	nng_msg_free(rep);
	m = catchup(ss, EPOCH, 4101, 0, &rep);
	ck_assert_uint_eq(m.catchup_rep.status, HM_CATCHUP_OK);
	ck_assert_uint_eq(m.catchup_rep.nparts, 99);
	nng_msg_free(rep);
	/* Snapshot chunks: by id, the latest for 0, the latest (chunk 0) for a vanished id. */
	{
		struct hm_pbuf pb = {0};

		for (int k = 0; k < 3; k++) {
			uint64_t ask_id = k == 0 ? 0 : k == 1 ? id1 : 999;

			hm_pbuf_reset(&pb);
			ck_assert_int_eq(hm_proto_encode_snapshot_req(&pb, ask_id, 0), 0);
			rep = ask(ss, &pb);
			ck_assert_ptr_nonnull(rep);
			ck_assert_int_eq(
			    hm_proto_decode(dec, nng_msg_body(rep), nng_msg_len(rep), &m), 0);
			ck_assert_uint_eq(m.type, HM_MSG_SNAPSHOT_REP);
			ck_assert_uint_eq(m.snapshot_rep.snap_id, id1);
			ck_assert_uint_eq(m.snapshot_rep.chunk, 0);
			nng_msg_free(rep);
		}
		/* a chunk that does not exist */
		hm_pbuf_reset(&pb);
		ck_assert_int_eq(hm_proto_encode_snapshot_req(&pb, id1, 5), 0);
		ck_assert_ptr_null(ask(ss, &pb));
		hm_pbuf_fini(&pb);
	}
	(void)id2;
	hm__syncsrv_tick(ss);
	hm_table_writer_close(w);
	hm__syncsrv_free(ss);
	teardown();
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("syncsrv");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, status_answers);
	tcase_add_test(tc, catchup_from_ring_and_journal);
	tcase_add_test(tc, snapshots_and_index_pruning);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
