/* Tests router/rand.c: UUIDv4 shape, uniqueness, and the batched kernel pool. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "router/rand.h"
#include "tests/unit/hm_check.h"

/* Allocation for test data: failing it ends the test. */
static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

START_TEST(uuid_shape)
{
	static const uint8_t zero[16], ones[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
						   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	char u[HM__ROUTER_UUID_LEN + 1] = {0};

	hm__router_uuid_format(zero, u);
	ck_assert_str_eq(u, "00000000-0000-4000-8000-000000000000");
	hm__router_uuid_format(ones, u);
	ck_assert_str_eq(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
}
END_TEST

START_TEST(uuid_random_and_unique)
{
	regex_t re;
	char(*seen)[HM__ROUTER_UUID_LEN + 1] = xmalloc(2000 * sizeof(*seen));

	ck_assert_int_eq(hm__router_rand_reset(), 0);
	ck_assert_int_eq(regcomp(&re,
				 "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
				 "[0-9a-f]{12}$",
				 REG_EXTENDED | REG_NOSUB),
			 0);
	/* 2000 ids span several refills of the 4 KiB pool. */
	for (int i = 0; i < 2000; i++) {
		ck_assert_int_eq(hm__router_uuid4(seen[i]), 0);
		seen[i][HM__ROUTER_UUID_LEN] = '\0';
		ck_assert_int_eq(regexec(&re, seen[i], 0, NULL, 0), 0);
		for (int j = 0; j < i; j++)
			ck_assert_str_ne(seen[i], seen[j]);
	}
	regfree(&re);
	free(seen);
}
END_TEST

START_TEST(prng_spreads)
{
	int buckets[4] = {0};

	ck_assert_int_eq(hm__router_rand_reset(), 0);
	for (int i = 0; i < 40000; i++)
		buckets[hm__router_rand_u64() % 4]++;
	for (int i = 0; i < 4; i++)
		ck_assert_int_gt(buckets[i], 9000);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/rand");
	TCase *tc = tcase_create("rand");

	tcase_add_test(tc, uuid_shape);
	tcase_add_test(tc, uuid_random_and_unique);
	tcase_add_test(tc, prng_spreads);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
