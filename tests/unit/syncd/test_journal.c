/*
 * Tests syncd/batch.c and syncd/journal.c: the record format (round trip, every truncation and
 * a flipped bit detected), the writer (group commit, rolls), recovery (replay, torn tail
 * truncated, corruption outside the tail refused, gaps refused), reads by position, and the
 * deletion of segments a snapshot covers.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/util.h"
#include "syncd/batch.h"
#include "syncd/journal.h"
#include "tests/unit/hm_check.h"

#define EPOCH 0x1234567890abcdefull

/* A batch with n app.put changes named a<seq>x<i>, cut into parts of at most per changes. */
static struct hm__batch *make_batch(uint64_t seq, uint32_t n, uint32_t per)
{
	struct hm__batch_builder bb = {0};
	struct hm__batch *b;
	uint32_t counts[64], nparts = 0;
	char names[64][32];
	uint8_t id[16], digest[16];

	for (uint32_t left = n; left > 0; left -= HM_MIN(left, per))
		counts[nparts++] = HM_MIN(left, per);
	ck_assert_int_eq(hm__batch_begin(&bb, EPOCH, seq, 1000 + seq, counts, nparts), 0);
	for (uint32_t i = 0; i < n; i++) {
		struct hm_change c = {.op = HM_OP_APP_PUT};

		snprintf(names[i], sizeof(names[i]), "a%llux%u", (unsigned long long)seq, i);
		c.app = names[i];
		c.app_len = (uint8_t)strlen(names[i]);
		ck_assert_int_eq(hm__batch_add(&bb, &c), 0);
	}
	memset(id, (int)seq, sizeof(id));
	memset(digest, (int)(seq * 3), sizeof(digest));
	ck_assert_int_eq(hm__batch_end(&bb, id, digest, 1, 2, 3, &b), 0);
	return b;
}

START_TEST(record_round_trip)
{
	struct hm__batch *b = make_batch(42, 5, 2), *c;
	struct hm_proto_decoder *d;
	struct hm_msg m;
	size_t len = 0;
	char *copy;

	ck_assert_uint_eq(b->nparts, 3);
	copy = hm__batch_flatten(b);
	ck_assert_int_eq(hm__jrec_check(copy, b->rec_len, HM__JREC_MAX_BODY, &len), 1);
	ck_assert_uint_eq(len, b->rec_len);
	ck_assert_int_eq(hm__batch_from_record(copy, len, &c), 0);
	ck_assert_uint_eq(c->seq, 42);
	ck_assert_uint_eq(c->ts_ms, 1042);
	ck_assert_uint_eq(c->nparts, 3);
	ck_assert_uint_eq(c->apps, 1);
	ck_assert_uint_eq(c->dynos, 3);
	ck_assert_int_eq(memcmp(c->digest, b->digest, 16), 0);
	ck_assert_int_eq(hm_proto_decoder_new(&d), 0);
	for (uint32_t i = 0; i < 3; i++) {
		ck_assert_int_eq(hm_proto_decode(d, hm__batch_part(c, i), c->part_len[i], &m), 0);
		ck_assert_uint_eq(m.type, HM_MSG_BATCH);
		ck_assert_uint_eq(m.batch.epoch, EPOCH);
		ck_assert_uint_eq(m.batch.b.seq, 42);
		ck_assert_uint_eq(m.batch.b.part, i);
		ck_assert_uint_eq(m.batch.b.nparts, 3);
		ck_assert_uint_eq(m.batch.b.nchanges, i < 2 ? 2 : 1);
	}
	hm_proto_decoder_free(d);
	hm__batch_unref(b);
	hm__batch_unref(c);
}
END_TEST

START_TEST(record_damage_detected)
{
	struct hm__batch *b = make_batch(7, 3, 3);
	char *rec = hm__batch_flatten(b);
	size_t len = 0;

	/* Every cut is "incomplete", never valid, never a crash. */
	for (size_t n = 0; n < b->rec_len; n++)
		ck_assert_int_eq(hm__jrec_check(rec, n, HM__JREC_MAX_BODY, &len), 0);
	/* Every flipped bit in the body or head is caught. */
	for (size_t i = 0; i < b->rec_len; i++) {
		int r;

		rec[i] ^= 0x10;
		r = hm__jrec_check(rec, b->rec_len, HM__JREC_MAX_BODY, &len);
		/* A flip in the length field may make the record look incomplete instead. */
		ck_assert(r == HM_ECORRUPT || (r == 0 && i >= 4 && i < 8));
		rec[i] ^= 0x10;
	}
	ck_assert_int_eq(hm__jrec_check(rec, b->rec_len, 10, &len), HM_ECORRUPT); /* max_body */
	free(rec);
	hm__batch_unref(b);
}
END_TEST

/* ---- Files ---------------------------------------------------------------------------------- */

static char dir[256];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-test-journal-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static struct hm__jpos positions[200];

static void write_journal(uint64_t first, uint64_t last, uint64_t roll_at, uint64_t seg_bytes)
{
	struct hm__journal_cfg cfg = {.dir = dir, .epoch = EPOCH, .segment_bytes = seg_bytes};
	struct hm__journal *j;
	char err[512];

	ck_assert_int_eq(hm__journal_start(&j, &cfg, first, err, sizeof(err)), 0);
	for (uint64_t s = first; s <= last; s++) {
		struct hm__batch *b = make_batch(s, 1 + (uint32_t)(s % 5), 2);

		if (s == roll_at)
			hm__journal_roll(j, s);
		hm__journal_append(j, b, &positions[s]);
		hm__batch_unref(b);
	}
	hm__journal_stop(j);
}

struct seen {
	uint64_t n, last;
	uint64_t digests_ok;
};

static int on_batch(void *ctx, struct hm__batch *b, const struct hm__jpos *pos)
{
	struct seen *s = ctx;
	uint8_t want[16];

	memset(want, (int)(b->seq * 3), sizeof(want));
	ck_assert_uint_eq(pos->len, b->rec_len);
	if (memcmp(b->digest, want, 16) == 0)
		s->digests_ok++;
	s->n++;
	s->last = b->seq;
	hm__batch_unref(b);
	return 0;
}

static int recover(uint64_t after, struct seen *s, struct hm__jrecover *r)
{
	memset(s, 0, sizeof(*s));
	memset(r, 0, sizeof(*r));
	r->epoch = EPOCH;
	r->after_seq = after;
	r->batch = on_batch;
	r->ctx = s;
	return hm__journal_recover(dir, r);
}

START_TEST(write_and_recover)
{
	struct hm__jrecover r;
	struct seen s;
	uint64_t *firsts;

	make_dir();
	write_journal(1, 50, 30, 0);
	ck_assert_int_eq(hm__journal_list(dir, &firsts), 2);
	ck_assert_uint_eq(firsts[0], 1);
	ck_assert_uint_eq(firsts[1], 30);
	free(firsts);
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 50);
	ck_assert_uint_eq(s.digests_ok, 50);
	ck_assert_uint_eq(r.last_seq, 50);
	ck_assert_uint_eq(r.truncated, 0);
	/* After a snapshot at 40, only 41..50 are replayed. */
	ck_assert_int_eq(recover(40, &s, &r), 0);
	ck_assert_uint_eq(s.n, 10);
	ck_assert_uint_eq(r.last_seq, 50);
	/* A second start continues in a new segment. */
	write_journal(51, 60, 0, 0);
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 60);
	/* Reads by position. */
	for (uint64_t q = 1; q <= 60; q++) {
		struct hm__batch *b;

		ck_assert_int_eq(hm__journal_read(dir, &positions[q], q, &b), 0);
		ck_assert_uint_eq(b->seq, q);
		hm__batch_unref(b);
	}
	{
		struct hm__batch *b;

		ck_assert_int_eq(hm__journal_read(dir, &positions[5], 6, &b), HM_ECORRUPT);
	}
	/* Segments covered by a snapshot at 35: the first (1..29) goes, the others stay. */
	ck_assert_int_eq(hm__journal_drop_covered(dir, 35), 1);
	ck_assert_int_eq(hm__journal_list(dir, &firsts), 2);
	ck_assert_uint_eq(firsts[0], 30);
	free(firsts);
	ck_assert_int_eq(recover(35, &s, &r), 0);
	ck_assert_uint_eq(s.n, 25);
	/* Recovering from before the journal's start is a gap. */
	ck_assert_int_eq(recover(10, &s, &r), HM_ECORRUPT);
	{
		struct hm__batch *b;

		ck_assert_int_eq(hm__journal_read(dir, &positions[3], 3, &b), -ENOENT);
	}
	remove_dir();
}
END_TEST

static uint64_t file_size(const char *path)
{
	struct stat st;

	ck_assert_int_eq(stat(path, &st), 0);
	return (uint64_t)st.st_size;
}

START_TEST(torn_tail_truncated)
{
	char path[512];
	struct hm__jrecover r;
	struct seen s;
	uint64_t full, cut;

	make_dir();
	write_journal(1, 20, 0, 0);
	hm__journal_path(dir, 1, path, sizeof(path));
	full = file_size(path);
	/* Cut the last record in the middle: a write that never completed. */
	cut = positions[20].off + positions[20].len / 2;
	ck_assert_int_eq(truncate(path, (off_t)cut), 0);
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 19);
	ck_assert_uint_eq(r.last_seq, 19);
	ck_assert_uint_eq(r.truncated, cut - positions[20].off);
	ck_assert_uint_eq(file_size(path), positions[20].off);
	(void)full;
	/* Garbage after the last record (a torn write of the next one) goes too. */
	{
		int fd = open(path, O_WRONLY | O_APPEND);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write(fd, "HMJRgarbage", 11), 11);
		close(fd);
	}
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 19);
	ck_assert_uint_eq(r.truncated, 11);
	/* Recovery is idempotent. */
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 19);
	ck_assert_uint_eq(r.truncated, 0);
	remove_dir();
}
END_TEST

START_TEST(corruption_outside_the_tail_refused)
{
	char path[512];
	struct hm__jrecover r;
	struct seen s;
	int fd;

	make_dir();
	write_journal(1, 20, 10, 0);
	/* Flip a byte inside record 5, in the first (not last) segment. */
	hm__journal_path(dir, 1, path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	{
		char c;
		off_t at = (off_t)(positions[5].off + positions[5].len - 3);

		ck_assert_int_eq(pread(fd, &c, 1, at), 1);
		c ^= 1;
		ck_assert_int_eq(pwrite(fd, &c, 1, at), 1);
	}
	close(fd);
	ck_assert_int_eq(recover(0, &s, &r), HM_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(r.err, "corrupt"));
	ck_assert_uint_eq(s.n, 4);
	remove_dir();
}
END_TEST

START_TEST(wrong_epoch_refused)
{
	struct hm__jrecover r;
	struct seen s;

	make_dir();
	write_journal(1, 5, 0, 0);
	write_journal(6, 8, 0, 0);
	memset(&r, 0, sizeof(r));
	memset(&s, 0, sizeof(s));
	r.epoch = EPOCH + 1;
	r.batch = on_batch;
	r.ctx = &s;
	ck_assert_int_eq(hm__journal_recover(dir, &r), HM_ECORRUPT);
	remove_dir();
}
END_TEST

START_TEST(segments_roll_by_size)
{
	uint64_t *firsts;
	struct hm__jrecover r;
	struct seen s;
	int n;

	make_dir();
	write_journal(1, 100, 0, 4096);
	n = hm__journal_list(dir, &firsts);
	ck_assert_int_gt(n, 3);
	free(firsts);
	ck_assert_int_eq(recover(0, &s, &r), 0);
	ck_assert_uint_eq(s.n, 100);
	remove_dir();
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, record_round_trip);
	tcase_add_test(tc, record_damage_detected);
	tcase_add_test(tc, write_and_recover);
	tcase_add_test(tc, torn_tail_truncated);
	tcase_add_test(tc, corruption_outside_the_tail_refused);
	tcase_add_test(tc, wrong_epoch_refused);
	tcase_add_test(tc, segments_roll_by_size);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
