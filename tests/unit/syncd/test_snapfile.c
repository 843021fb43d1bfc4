/*
 * Tests syncd/snapfile.c: a snapshot of a table loads into an equal table (digest, counts,
 * request ids), large states are cut into chunks the sync socket can send, and damage is
 * detected.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/table.h"
#include "syncd/snapfile.h"
#include "tests/unit/hm_check.h"

#define EPOCH 0xfeedull

static char dir[256];

static void make_dir(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-test-snap-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void remove_dir(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void put(struct hm_table_writer *w, uint8_t op, const char *app, const char *name,
		const char *addr)
{
	struct hm_change c = {.op = op, .state = HM_DYNO_UP};

	c.app = app;
	c.app_len = (uint8_t)strlen(app);
	if (name != NULL) {
		c.name = name;
		c.name_len = (uint16_t)strlen(name);
	}
	if (addr != NULL)
		ck_assert_int_eq(hm_addr_parse(addr, strlen(addr), &c.addr), 0);
	ck_assert_int_eq(hm_table_apply(w, &c), 0);
}

/* apps a0.., each with a domain and dynos */
static struct hm_table_writer *make_table(uint32_t apps, uint32_t dynos_per_app, uint64_t seq)
{
	struct hm_table_writer *w;
	struct hm_table_caps caps = {1024, 2048, 65536, 16u << 20};
	char app[32], name[64], addr[32];

	ck_assert_int_eq(hm_table_writer_open(&w, NULL, &caps, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	for (uint32_t a = 0; a < apps; a++) {
		snprintf(app, sizeof(app), "a%u", a);
		for (;;) {
			int e;
			struct hm_change c = {
			    .op = HM_OP_APP_PUT, .app = app, .app_len = (uint8_t)strlen(app)};

			e = hm_table_apply(w, &c);
			if (e != HM_EFULL)
				break;
			ck_abort_msg("table full");
		}
		snprintf(name, sizeof(name), "www.%s.example.com", app);
		put(w, HM_OP_DOMAIN_PUT, app, name, NULL);
		for (uint32_t d = 0; d < dynos_per_app; d++) {
			snprintf(name, sizeof(name), "web.%u", d);
			snprintf(addr, sizeof(addr), "10.%u.%u.%u:80", a % 250, d / 250, d % 250);
			put(w, HM_OP_DYNO_PUT, app, name, addr);
		}
	}
	ck_assert_int_eq(hm_table_commit(w, EPOCH, seq), 0);
	return w;
}

static int ids_seen;

static void on_req(void *ctx, const uint8_t id[16], uint64_t seq)
{
	(void)ctx;
	ck_assert_uint_eq(id[0], (uint8_t)seq);
	ids_seen++;
}

START_TEST(round_trip)
{
	struct hm_table_writer *w = make_table(20, 5, 77), *w2;
	struct hm__reqcache *rc;
	struct hm__snapfile *s;
	struct hm_proto_decoder *d;
	struct hm_table_info a, b;
	char path[512], err[512];
	uint64_t *seqs, *ids;

	make_dir();
	ck_assert_int_eq(hm__reqcache_new(&rc, 16), 0);
	for (uint32_t i = 1; i <= 5; i++) {
		uint8_t id[16];

		memset(id, (int)i, sizeof(id));
		hm__reqcache_put(rc, id, i);
	}
	ck_assert_int_eq(hm__snap_write(dir, &(struct hm_state){.table = w}, 0xabcdef, rc, path,
					sizeof(path), err, sizeof(err)),
			 0);
	ck_assert_int_eq(hm__snap_list(dir, &seqs, &ids), 1);
	ck_assert_uint_eq(seqs[0], 77);
	ck_assert_uint_eq(ids[0], 0xabcdef);
	free(seqs);
	free(ids);
	ck_assert_int_eq(hm__snap_open(&s, path, true), 0);
	ck_assert_uint_eq(hm__snap_info(s)->seq, 77);
	ck_assert_uint_eq(hm__snap_info(s)->epoch, EPOCH);
	ck_assert_uint_eq(hm__snap_info(s)->apps, 20);
	ck_assert_uint_eq(hm__snap_info(s)->dynos, 100);
	ck_assert_uint_eq(hm__snap_info(s)->nchunks, 1);
	ck_assert_int_eq(hm_table_writer_open(&w2, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_proto_decoder_new(&d), 0);
	ck_assert_int_eq(hm__snap_load(s, &(struct hm_state){.table = w2}, d), 0);
	hm_table_writer_info(w, &a);
	hm_table_writer_info(w2, &b);
	ck_assert_int_eq(memcmp(a.digest, b.digest, 16), 0);
	ck_assert_uint_eq(b.seq, 77);
	ck_assert_uint_eq(b.epoch, EPOCH);
	ids_seen = 0;
	hm__snap_reqs(s, on_req, NULL);
	ck_assert_int_eq(ids_seen, 5);
	hm__snap_close(s);
	hm_proto_decoder_free(d);
	hm_table_writer_close(w);
	hm_table_writer_close(w2);
	hm__reqcache_free(rc);
	remove_dir();
}
END_TEST

START_TEST(large_state_in_chunks)
{
	/* 40 000 dynos: several chunks of at most 16 384 puts; the load grows a small table. */
	struct hm_table_writer *w = make_table(4, 10000, 5), *w2;
	struct hm__snapfile *s;
	struct hm_proto_decoder *d;
	struct hm_table_info a, b;
	struct hm_table_caps tiny = {16, 16, 16, 4096};
	char path[512], err[512];

	make_dir();
	ck_assert_int_eq(hm__snap_write(dir, &(struct hm_state){.table = w}, 1, NULL, path,
					sizeof(path), err, sizeof(err)),
			 0);
	ck_assert_int_eq(hm__snap_open(&s, path, true), 0);
	ck_assert_uint_ge(hm__snap_info(s)->nchunks, 3);
	for (uint32_t i = 0; i < hm__snap_info(s)->nchunks; i++)
		ck_assert_uint_le(hm__snap_chunk_len(s, i), HM_PROTO_MAX_MSG);
	ck_assert_int_eq(hm_table_writer_open(&w2, NULL, &tiny, 0, 0), 0);
	ck_assert_int_eq(hm_proto_decoder_new(&d), 0);
	ck_assert_int_eq(hm__snap_load(s, &(struct hm_state){.table = w2}, d), 0);
	hm_table_writer_info(w, &a);
	hm_table_writer_info(w2, &b);
	ck_assert_int_eq(memcmp(a.digest, b.digest, 16), 0);
	ck_assert_uint_eq(b.dynos, 40000);
	hm__snap_close(s);
	hm_proto_decoder_free(d);
	hm_table_writer_close(w);
	hm_table_writer_close(w2);
	remove_dir();
}
END_TEST

START_TEST(empty_state)
{
	struct hm_table_writer *w, *w2;
	struct hm__snapfile *s;
	struct hm_proto_decoder *d;
	char path[512], err[512];

	make_dir();
	ck_assert_int_eq(hm_table_writer_open(&w, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(hm_table_commit(w, EPOCH, 0), 0);
	ck_assert_int_eq(hm__snap_write(dir, &(struct hm_state){.table = w}, 9, NULL, path,
					sizeof(path), err, sizeof(err)),
			 0);
	ck_assert_int_eq(hm__snap_open(&s, path, true), 0);
	ck_assert_uint_eq(hm__snap_info(s)->nchunks, 1);
	ck_assert_int_eq(hm_table_writer_open(&w2, NULL, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_proto_decoder_new(&d), 0);
	ck_assert_int_eq(hm__snap_load(s, &(struct hm_state){.table = w2}, d), 0);
	hm__snap_close(s);
	hm_proto_decoder_free(d);
	hm_table_writer_close(w);
	hm_table_writer_close(w2);
	remove_dir();
}
END_TEST

START_TEST(damage_detected)
{
	struct hm_table_writer *w = make_table(10, 10, 3);
	struct hm__snapfile *s;
	char path[512], err[512];
	int fd;
	char c;

	make_dir();
	ck_assert_int_eq(hm__snap_write(dir, &(struct hm_state){.table = w}, 2, NULL, path,
					sizeof(path), err, sizeof(err)),
			 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	/* a byte of the first chunk */
	ck_assert_int_eq(pread(fd, &c, 1, 200), 1);
	c ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &c, 1, 200), 1);
	ck_assert_int_eq(hm__snap_open(&s, path, true), HM_ECORRUPT);
	ck_assert_int_eq(hm__snap_open(&s, path, false), 0); /* header and index still fine */
	{
		char *buf = malloc(hm__snap_chunk_len(s, 0));

		ck_assert_int_eq(hm__snap_chunk_read(s, 0, buf), HM_ECORRUPT);
		free(buf);
	}
	hm__snap_close(s);
	/* the header */
	c ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &c, 1, 200), 1);
	ck_assert_int_eq(pread(fd, &c, 1, 20), 1);
	c ^= 1;
	ck_assert_int_eq(pwrite(fd, &c, 1, 20), 1);
	ck_assert_int_eq(hm__snap_open(&s, path, false), HM_ECORRUPT);
	/* truncated */
	c ^= 1;
	ck_assert_int_eq(pwrite(fd, &c, 1, 20), 1);
	ck_assert_int_eq(ftruncate(fd, 300), 0);
	ck_assert_int_eq(hm__snap_open(&s, path, false), HM_ECORRUPT);
	close(fd);
	hm_table_writer_close(w);
	remove_dir();
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("snapfile");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, round_trip);
	tcase_add_test(tc, large_state_in_chunks);
	tcase_add_test(tc, empty_state);
	tcase_add_test(tc, damage_detected);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
