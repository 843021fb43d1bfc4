/* Tests common/base64.c: RFC 4648 vectors in both forms, round trips, canonical decoding only. */
#include <errno.h>
#include <string.h>

#include "common/base64.h"
#include "tests/unit/hm_check.h"

START_TEST(rfc4648_vectors)
{
	static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
	static const char *nopad[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char out[32];
	uint8_t back[32];

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		size_t n = strlen(plain[i]), len = hm_b64_encode(plain[i], n, out, 0);

		ck_assert_uint_eq(len, strlen(std[i]));
		ck_assert_uint_eq(len, hm_b64_encoded_len(n, 0));
		ck_assert(memcmp(out, std[i], len) == 0);
		ck_assert_int_eq(hm_b64_decode(std[i], len, back), (int)n);
		ck_assert(memcmp(back, plain[i], n) == 0);
		len = hm_b64_encode(plain[i], n, out, HM_B64_NOPAD);
		ck_assert_uint_eq(len, strlen(nopad[i]));
		ck_assert_uint_eq(len, hm_b64_encoded_len(n, HM_B64_NOPAD));
		ck_assert(memcmp(out, nopad[i], len) == 0);
	}
}
END_TEST

START_TEST(url_alphabet)
{
	static const uint8_t in[] = {0xfb, 0xff, 0xbf};
	char out[8];

	ck_assert_uint_eq(hm_b64_encode(in, 3, out, 0), 4);
	ck_assert(memcmp(out, "+/+/", 4) == 0);
	ck_assert_uint_eq(hm_b64_encode(in, 3, out, HM_B64_URL | HM_B64_NOPAD), 4);
	ck_assert(memcmp(out, "-_-_", 4) == 0);
}
END_TEST

START_TEST(round_trip_all_bytes)
{
	uint8_t in[256], back[256];
	char out[400];

	for (int i = 0; i < 256; i++)
		in[i] = (uint8_t)(255 - i);
	for (size_t n = 0; n <= sizeof(in); n += 37) {
		size_t len = hm_b64_encode(in, n, out, 0);

		ck_assert_int_eq(hm_b64_decode(out, len, back), (int)n);
		ck_assert(memcmp(in, back, n) == 0);
	}
}
END_TEST

START_TEST(rejects_non_canonical)
{
	static const char *bad[] = {"Zg=",	/* length */
				    "Zh==",	/* bits past the last byte set */
				    "Zm9=",	/* the same, one pad */
				    "Z!==",	/* alphabet */
				    "-_-_",	/* the URL alphabet */
				    "=Zg=",	/* pad first */
				    "Zg==Zg==", /* pad in the middle */
				    "Zm 9"};
	uint8_t out[16];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(hm_b64_decode(bad[i], strlen(bad[i]), out) == -EINVAL, "accepted %s",
			      bad[i]);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("base64");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, rfc4648_vectors);
	tcase_add_test(tc, url_alphabet);
	tcase_add_test(tc, round_trip_all_bytes);
	tcase_add_test(tc, rejects_non_canonical);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
