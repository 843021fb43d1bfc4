/* Tests syncd/nngx.c's URL lists (--publish/--sync of an edge, hermodctl's --control): split in
 * order, every element checked, bounded, no empties or repeats, nothing held on failure. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "syncd/nngx.h"
#include "tests/unit/hm_check.h"

START_TEST(splits_in_order)
{
	struct hm__urls u;
	char err[256];

	ck_assert_int_eq(hm__nng_urls_parse("tcp://127.0.0.1:1", &u, err, sizeof(err)), 0);
	ck_assert_uint_eq(u.n, 1);
	ck_assert_str_eq(u.v[0], "tcp://127.0.0.1:1");
	hm__nng_urls_free(&u);
	ck_assert_uint_eq(u.n, 0);
	ck_assert_int_eq(hm__nng_urls_parse("tls+tcp://a:1,ipc:///run/x.sock,tcp://[::1]:3", &u,
					    err, sizeof(err)),
			 0);
	ck_assert_uint_eq(u.n, 3);
	ck_assert_str_eq(u.v[0], "tls+tcp://a:1");
	ck_assert_str_eq(u.v[1], "ipc:///run/x.sock");
	ck_assert_str_eq(u.v[2], "tcp://[::1]:3");
	hm__nng_urls_free(&u);
}
END_TEST

static void refused(const char *list, const char *why)
{
	struct hm__urls u;
	char err[256] = "";

	ck_assert_int_eq(hm__nng_urls_parse(list, &u, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, why) != NULL, "%s: '%s' lacks '%s'", list, err, why);
	ck_assert_uint_eq(u.n, 0);
	ck_assert_int_eq(hm__nng_urls_check(list, err, sizeof(err)), -EINVAL);
}

START_TEST(bad_lists_are_refused)
{
	char many[64 * (HM__URLS_MAX + 2)], *p = many;

	refused("", "empty");
	refused(",", "empty");
	refused("tcp://a:1,", "empty");
	refused(",tcp://a:1", "empty");
	refused("tcp://a:1,,tcp://a:2", "empty");
	refused("tcp://a:1,tcp://a:1", "twice");
	refused("tcp://a:1,http://a:2", "want tcp://");
	refused("tcp://a:1,tcp://a", "want tcp://");
	for (int i = 0; i <= HM__URLS_MAX; i++)
		p += sprintf(p, "%stcp://127.0.0.1:%d", i ? "," : "", 1000 + i);
	refused(many, "more than 16");
	/* Exactly the bound is fine. */
	*strrchr(many, ',') = '\0';
	{
		struct hm__urls u;
		char err[256];

		ck_assert_int_eq(hm__nng_urls_parse(many, &u, err, sizeof(err)), 0);
		ck_assert_uint_eq(u.n, HM__URLS_MAX);
		hm__nng_urls_free(&u);
	}
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("nngx");
	TCase *tc = tcase_create("urls");

	tcase_add_test(tc, splits_in_order);
	tcase_add_test(tc, bad_lists_are_refused);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
