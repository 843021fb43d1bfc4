/*
 * Tests router/affinity.c: cookies round-trip, carry nothing node-local (a second context with
 * the same secret verifies them), and are refused when tampered with, expired, for another app,
 * or signed with another secret.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "router/affinity.h"
#include "tests/unit/hm_check.h"

#define NOW 1700000000u

static struct hm__router_affinity a, b, other;

static void setup(void)
{
	ck_assert_int_eq(hm__router_affinity_init(&a, "cluster-secret", 14), 0);
	ck_assert_int_eq(hm__router_affinity_init(&b, "cluster-secret", 14), 0);
	ck_assert_int_eq(hm__router_affinity_init(&other, "another-secret", 14), 0);
}

static void teardown(void)
{
	hm__router_affinity_fini(&a);
	hm__router_affinity_fini(&b);
	hm__router_affinity_fini(&other);
}

/* The cookie value ("<expiry>.<dyno>.<mac>") of a Set-Cookie line, NUL-terminated in out. */
static void value_of(const char *set_cookie, size_t n, char *out)
{
	const char *eq = memchr(set_cookie, '=', n), *semi = memchr(set_cookie, ';', n);

	ck_assert_ptr_nonnull(eq);
	ck_assert_ptr_nonnull(semi);
	memcpy(out, eq + 1, (size_t)(semi - eq - 1));
	out[semi - eq - 1] = '\0';
}

static int verify(struct hm__router_affinity *ctx, const char *app, const char *value, uint64_t now,
		  char *dyno)
{
	char cookie[512];

	snprintf(cookie, sizeof(cookie), "a=1; " HM__AFFINITY_COOKIE "=%s; b=2", value);
	return hm__router_affinity_verify(ctx, app, cookie, strlen(cookie), now, dyno);
}

/* The MAC is what the header says, byte for byte (computed independently, with Python's hmac
 * and base64.urlsafe_b64encode): routers of different builds must agree on it. */
START_TEST(known_answer)
{
	char line[HM__AFFINITY_SET_COOKIE_MAX + 1], v[256];
	size_t n = hm__router_affinity_set_cookie(&a, "app", "web.12", NOW + 86400, line);

	value_of(line, n, v);
	ck_assert_str_eq(v, "1700086400.web.12.rlr00S_j9DCF0z2yj1kPlWhyHFABz_z8URSVaZTVbYY");
}
END_TEST

START_TEST(round_trip_across_routers)
{
	char line[HM__AFFINITY_SET_COOKIE_MAX + 1], v[256], dyno[HM_DYNO_NAME_MAX + 1];
	size_t n = hm__router_affinity_set_cookie(&a, "app", "web.12", NOW + 86400, line);

	ck_assert_uint_gt(n, 0);
	ck_assert_uint_le(n, HM__AFFINITY_SET_COOKIE_MAX);
	line[n] = '\0';
	ck_assert_int_eq(strncmp(line, HM__AFFINITY_COOKIE "=1700086400.web.12.", 42), 0);
	ck_assert_ptr_nonnull(strstr(line, "; Max-Age=86400; Path=/; HttpOnly"));
	value_of(line, n, v);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), 6);
	ck_assert_str_eq(dyno, "web.12");
	/* Another router (context) with the same secret: same verdict. */
	ck_assert_int_eq(verify(&b, "app", v, NOW + 100, dyno), 6);
	/* Quoted cookie values are accepted too. */
	{
		char q[300];

		snprintf(q, sizeof(q), "\"%s\"", v);
		ck_assert_int_eq(verify(&a, "app", q, NOW, dyno), 6);
	}
}
END_TEST

START_TEST(refusals)
{
	char line[HM__AFFINITY_SET_COOKIE_MAX + 1], v[256], bad[256], dyno[HM_DYNO_NAME_MAX + 1];
	size_t n = hm__router_affinity_set_cookie(&a, "app", "web.1", NOW + 600, line);

	value_of(line, n, v);
	ck_assert_int_eq(verify(&other, "app", v, NOW, dyno), -EINVAL);
	ck_assert_int_eq(verify(&a, "app2", v, NOW, dyno), -EINVAL);
	ck_assert_int_eq(verify(&a, "app", v, NOW + 600, dyno), -ETIMEDOUT);
	/* Every single-character change is refused. */
	for (size_t i = 0; i < strlen(v); i++) {
		strcpy(bad, v);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		ck_assert_int_lt(verify(&a, "app", bad, NOW, dyno), 0);
	}
	/* Truncated, empty, junk, no cookie at all. */
	strcpy(bad, v);
	bad[strlen(bad) - 1] = '\0';
	ck_assert_int_eq(verify(&a, "app", bad, NOW, dyno), -EINVAL);
	ck_assert_int_eq(verify(&a, "app", "", NOW, dyno), -EINVAL);
	ck_assert_int_eq(verify(&a, "app", "garbage", NOW, dyno), -EINVAL);
	ck_assert_int_eq(hm__router_affinity_verify(&a, "app", "x=1; y=2", 8, NOW, dyno), -ENOENT);
}
END_TEST

/* Verified values are cached: a hit is as safe as a verify (issue 9). */
START_TEST(verify_cache)
{
	char line[HM__AFFINITY_SET_COOKIE_MAX + 1], v[256], bad[256], dyno[HM_DYNO_NAME_MAX + 1];
	size_t n = hm__router_affinity_set_cookie(&a, "app", "web.7", NOW + 600, line);
	uint64_t hits = a.cache_hits;

	value_of(line, n, v);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), 5);
	ck_assert_uint_eq(a.cache_hits, hits);
	/* The same value again: from the cache, same answer. */
	ck_assert_int_eq(verify(&a, "app", v, NOW + 1, dyno), 5);
	ck_assert_str_eq(dyno, "web.7");
	ck_assert_uint_eq(a.cache_hits, hits + 1);
	/* Keyed on the app: the cached value proves nothing for another. */
	ck_assert_int_eq(verify(&a, "app2", v, NOW, dyno), -EINVAL);
	/* Keyed on the whole value: any change is a miss, and refused. */
	for (size_t i = 0; i < strlen(v); i++) {
		strcpy(bad, v);
		bad[i] = bad[i] == 'A' ? 'B' : 'A';
		ck_assert_int_lt(verify(&a, "app", bad, NOW, dyno), 0);
	}
	strcpy(bad, v);
	strcat(bad, "A");
	ck_assert_int_eq(verify(&a, "app", bad, NOW, dyno), -EINVAL);
	/* Expiry is checked on a hit as on a verify. */
	hits = a.cache_hits;
	ck_assert_int_eq(verify(&a, "app", v, NOW + 600, dyno), -ETIMEDOUT);
	ck_assert_uint_eq(a.cache_hits, hits + 1);
	ck_assert_int_eq(verify(&a, "app", v, NOW + 599, dyno), 5);
	/* A new key empties the cache: a value verified with the old one is refused. */
	hm__router_affinity_fini(&a);
	ck_assert_int_eq(hm__router_affinity_init(&a, "rotated-secret", 14), 0);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), -EINVAL);
	/* Many values: each still verifies (collisions only evict). */
	for (int i = 0; i < 3 * HM__AFFINITY_CACHE_N; i++) {
		char d[16];

		snprintf(d, sizeof(d), "web.%d", i);
		n = hm__router_affinity_set_cookie(&a, "app", d, NOW + 600, line);
		value_of(line, n, v);
		ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), (int)strlen(d));
		ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), (int)strlen(d));
		ck_assert_str_eq(dyno, d);
	}
}
END_TEST

/* The cluster secret arriving in the table: re-keying is a no-op for the same key, and a new
 * key makes the context sign and verify as one keyed with it from the start. */
START_TEST(rekey)
{
	char line[HM__AFFINITY_SET_COOKIE_MAX + 1], v[256], dyno[HM_DYNO_NAME_MAX + 1];
	size_t n;

	ck_assert_int_eq(hm__router_affinity_rekey(&a, "cluster-secret", 14), 0);
	/* A value verified (and cached) under the old key is refused under the new one. */
	n = hm__router_affinity_set_cookie(&a, "app", "web.2", NOW + 86400, line);
	line[n] = '\0';
	value_of(line, n, v);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), 5);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), 5);
	ck_assert_int_eq(hm__router_affinity_rekey(&a, "another-secret", 14), 1);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), -EINVAL);
	n = hm__router_affinity_set_cookie(&a, "app", "web.3", NOW + 86400, line);
	line[n] = '\0';
	value_of(line, n, v);
	ck_assert_int_eq(verify(&other, "app", v, NOW, dyno), 5);
	ck_assert_int_eq(verify(&b, "app", v, NOW, dyno), -EINVAL);
	ck_assert_int_eq(hm__router_affinity_rekey(&a, "another-secret", 14), 0);
	ck_assert_int_eq(hm__router_affinity_rekey(&a, "", 0), -EINVAL);
	ck_assert_int_eq(verify(&a, "app", v, NOW, dyno), 5); /* a refused key changes nothing */
}
END_TEST

START_TEST(cookie_find)
{
	const char *v;
	size_t n;
	static const char h[] = " a=1;b = 2 ;hermod-session-affinity=val.ue ;c=\"q\"";

	ck_assert(hm__router_cookie_find(h, sizeof(h) - 1, "hermod-session-affinity", 23, &v, &n));
	ck_assert_int_eq(n, 6);
	ck_assert_int_eq(memcmp(v, "val.ue", 6), 0);
	ck_assert(hm__router_cookie_find(h, sizeof(h) - 1, "c", 1, &v, &n));
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(*v, 'q');
	ck_assert(!hm__router_cookie_find(h, sizeof(h) - 1, "hermod", 6, &v, &n));
	ck_assert(!hm__router_cookie_find(h, sizeof(h) - 1, "b", 1, &v, &n)); /* "b " != "b" */
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/affinity");
	TCase *tc = tcase_create("affinity");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, known_answer);
	tcase_add_test(tc, round_trip_across_routers);
	tcase_add_test(tc, refusals);
	tcase_add_test(tc, verify_cache);
	tcase_add_test(tc, cookie_find);
	tcase_add_test(tc, rekey);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
