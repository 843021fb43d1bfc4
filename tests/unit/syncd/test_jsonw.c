/* Tests syncd/jsonw.c: structure, separators, and escaping of hostile bytes. */
#include <string.h>

#include "syncd/jsonw.h"
#include "tests/unit/hm_check.h"

static const char *finish(struct hm__buf *b)
{
	hm__buf_add(b, "", 1);
	return b->data;
}

START_TEST(structure)
{
	struct hm__buf b = {0};
	struct hm__jsonw w;

	hm__jw_init(&w, &b);
	hm__jw_obj(&w);
	hm__jw_kcstr(&w, "a", "x");
	hm__jw_ku64(&w, "n", 18446744073709551615ull);
	hm__jw_key(&w, "l");
	hm__jw_arr(&w);
	hm__jw_bool(&w, true);
	hm__jw_null(&w);
	hm__jw_obj(&w);
	hm__jw_obj_end(&w);
	hm__jw_arr(&w);
	hm__jw_arr_end(&w);
	hm__jw_i64(&w, -5);
	hm__jw_arr_end(&w);
	hm__jw_khex64(&w, "e", 0xabc);
	hm__jw_kcstr_or_null(&w, "s", "y");
	hm__jw_kcstr_or_null(&w, "sn", NULL);
	hm__jw_ku64_or_null(&w, "u", true, 7);
	hm__jw_ku64_or_null(&w, "un", false, 7);
	hm__jw_obj_end(&w);
	ck_assert_str_eq(finish(&b),
			 "{\"a\":\"x\",\"n\":18446744073709551615,\"l\":[true,null,{},[],-5],"
			 "\"e\":\"0000000000000abc\",\"s\":\"y\",\"sn\":null,\"u\":7,\"un\":null}");
	hm__buf_fini(&b);
}
END_TEST

START_TEST(escaping)
{
	struct hm__buf b = {0};

	static const char in[] = "q\"b\\n\nt\tc\x01 \xc3\xa9 \xff\xfe \xe2\x82";

	hm__json_escape(&b, in, sizeof(in) - 1);
	ck_assert_str_eq(finish(&b),
			 "\"q\\\"b\\\\n\\nt\\tc\\u0001 \xc3\xa9 \\u00ff\\u00fe \\u00e2\\u0082\"");
	hm__buf_fini(&b);
	/* An overlong encoding and a surrogate are not valid UTF-8. */
	hm__json_escape(&b, "\xc0\xaf\xed\xa0\x80", 5);
	ck_assert_str_eq(finish(&b), "\"\\u00c0\\u00af\\u00ed\\u00a0\\u0080\"");
	hm__buf_fini(&b);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("jsonw");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, structure);
	tcase_add_test(tc, escaping);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
