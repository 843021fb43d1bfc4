/* Tests syncd/reqcache.c: lookups, updates, FIFO eviction, and index integrity under churn. */
#include <string.h>

#include "syncd/reqcache.h"
#include "tests/unit/hm_check.h"

static void id_of(uint32_t n, uint8_t id[16])
{
	memset(id, 0, 16);
	memcpy(id, &n, sizeof(n));
	id[15] = 0x5a;
}

START_TEST(put_get_update)
{
	struct hm__reqcache *c;
	uint8_t a[16], b[16];
	uint64_t seq = 0;

	ck_assert_int_eq(hm__reqcache_new(&c, 100), 0);
	ck_assert_uint_eq(hm__reqcache_capacity(c), 128);
	id_of(1, a);
	id_of(2, b);
	ck_assert(!hm__reqcache_get(c, a, &seq));
	hm__reqcache_put(c, a, 7);
	ck_assert(hm__reqcache_get(c, a, &seq));
	ck_assert_uint_eq(seq, 7);
	ck_assert(!hm__reqcache_get(c, b, &seq));
	hm__reqcache_put(c, a, 9); /* update keeps one entry */
	ck_assert_uint_eq(hm__reqcache_count(c), 1);
	ck_assert(hm__reqcache_get(c, a, &seq));
	ck_assert_uint_eq(seq, 9);
	hm__reqcache_free(c);
}
END_TEST

static int collect(void *ctx, const uint8_t id[16], uint64_t seq)
{
	uint64_t *v = ctx;

	(void)id;
	v[v[0] + 1] = seq;
	v[0]++;
	return 0;
}

START_TEST(eviction_is_fifo)
{
	struct hm__reqcache *c;
	uint8_t id[16];
	uint64_t seq, seen[40] = {0};

	ck_assert_int_eq(hm__reqcache_new(&c, 16), 0);
	for (uint32_t i = 0; i < 30; i++) {
		id_of(i, id);
		hm__reqcache_put(c, id, 1000 + i);
	}
	ck_assert_uint_eq(hm__reqcache_count(c), 16);
	for (uint32_t i = 0; i < 30; i++) {
		id_of(i, id);
		ck_assert_int_eq(hm__reqcache_get(c, id, &seq), i >= 14);
		if (i >= 14)
			ck_assert_uint_eq(seq, 1000 + i);
	}
	hm__reqcache_foreach(c, collect, seen);
	ck_assert_uint_eq(seen[0], 16);
	for (uint32_t i = 0; i < 16; i++)
		ck_assert_uint_eq(seen[i + 1], 1014 + i); /* oldest first */
	hm__reqcache_free(c);
}
END_TEST

START_TEST(churn_keeps_index_consistent)
{
	struct hm__reqcache *c;
	uint8_t id[16];
	uint64_t seq;

	/* Many more ids than capacity: evictions exercise backward-shift deletion everywhere. */
	ck_assert_int_eq(hm__reqcache_new(&c, 1024), 0);
	for (uint32_t i = 0; i < 200000; i++) {
		id_of(i * 2654435761u, id);
		hm__reqcache_put(c, id, i);
		if (i % 997 == 0) {
			for (uint32_t k = i >= 1023 ? i - 1023 : 0; k <= i; k++) {
				id_of(k * 2654435761u, id);
				ck_assert(hm__reqcache_get(c, id, &seq));
				ck_assert_uint_eq(seq, k);
			}
			if (i >= 1024) {
				id_of((i - 1024) * 2654435761u, id);
				ck_assert(!hm__reqcache_get(c, id, &seq));
			}
		}
	}
	hm__reqcache_free(c);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("reqcache");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, put_get_update);
	tcase_add_test(tc, eviction_is_fifo);
	tcase_add_test(tc, churn_keeps_index_consistent);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
