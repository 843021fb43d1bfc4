/* Tests common/hash.c: known CRC-32C vectors, hash stability and distribution. */
#include <stdio.h>
#include <string.h>

#include "common/hash.h"
#include "tests/unit/hm_check.h"

START_TEST(crc32c_vectors)
{
	uint8_t zeros[32] = {0}, ones[32];

	memset(ones, 0xff, sizeof(ones));
	/* RFC 3720 appendix B.4 */
	ck_assert_uint_eq(hm_crc32c(0, zeros, 32), 0x8a9136aa);
	ck_assert_uint_eq(hm_crc32c(0, ones, 32), 0x62a8ab43);
	ck_assert_uint_eq(hm_crc32c(0, "123456789", 9), 0xe3069283);
	/* incremental equals one-shot */
	ck_assert_uint_eq(hm_crc32c(hm_crc32c(0, "12345", 5), "6789", 4), 0xe3069283);
}
END_TEST

START_TEST(hash_properties)
{
	char buf[64];
	int buckets[64] = {0};

	/* deterministic, seed-dependent, length-dependent */
	ck_assert_uint_eq(hm_hash64("abc", 3, 1), hm_hash64("abc", 3, 1));
	ck_assert_uint_ne(hm_hash64("abc", 3, 1), hm_hash64("abc", 3, 2));
	ck_assert_uint_ne(hm_hash64("abc\0", 4, 1), hm_hash64("abc", 3, 1));
	ck_assert_uint_ne(hm_hash64("", 0, 1), hm_hash64("", 0, 2));
	/* sequential keys spread evenly over 64 buckets (low bits, as hash tables use them) */
	for (int i = 0; i < 64000; i++) {
		int n = snprintf(buf, sizeof(buf), "app-%d.example.com", i);

		buckets[hm_hash64(buf, (size_t)n, 42) & 63]++;
	}
	for (int i = 0; i < 64; i++) {
		ck_assert_int_gt(buckets[i], 850);
		ck_assert_int_lt(buckets[i], 1150);
	}
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("hash");

	tcase_add_test(tc, crc32c_vectors);
	tcase_add_test(tc, hash_properties);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
