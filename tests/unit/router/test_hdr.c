/*
 * Tests router/hdr.c: every field of the header table is found by its name in any case and
 * nothing else is (prefixes, one letter off, every length), the flags that carry the contract's
 * header policy, and the reason phrase table.
 */
#include <ctype.h>
#include <stdbool.h>
#include <string.h>

#include "router/hdr.h"
#include "tests/unit/hm_check.h"

START_TEST(every_known_name_in_any_case)
{
	for (uint8_t id = 1; id < HM__HDR_COUNT; id++) {
		const char *name = hm__router_hdr_name(id);
		size_t n = strlen(name);
		char up[64], mixed[64];

		ck_assert_uint_gt(n, 0);
		ck_assert_uint_lt(n, sizeof(up));
		for (size_t i = 0; i < n; i++) {
			up[i] = (char)toupper((unsigned char)name[i]);
			mixed[i] = i % 2 ? up[i] : name[i];
		}
		ck_assert_uint_eq(hm__router_hdr_classify(name, n), id);
		ck_assert_uint_eq(hm__router_hdr_classify(up, n), id);
		ck_assert_uint_eq(hm__router_hdr_classify(mixed, n), id);
	}
}
END_TEST

START_TEST(nothing_else_is_known)
{
	static const char *const others[] = {
	    "",
	    "x",
	    "hostx",
	    "hos",
	    "content-lengths",
	    "tex",
	    "t",
	    "vias",
	    "cookie2",
	    "set-cookie2",
	    "x-forwarded",
	    "x-request",
	    "accept",
	    "date",
	    "server",
	    "location",
	    "content-type",
	    "etag",
	    "connectio",
	    "onnection",
	    "x-forwarded-fo",
	    "trailers",
	    "proxy-authenticate",
	    "keep_alive",
	    "transfer-encodings",
	};

	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
		ck_assert_uint_eq(hm__router_hdr_classify(others[i], strlen(others[i])),
				  HM__HDR_OTHER);
	/* Every known name with one letter changed, and every proper prefix of it. */
	for (uint8_t id = 1; id < HM__HDR_COUNT; id++) {
		const char *name = hm__router_hdr_name(id);
		size_t n = strlen(name);
		char buf[64];

		for (size_t i = 0; i < n; i++) {
			memcpy(buf, name, n);
			buf[i] = buf[i] == 'q' ? 'z' : 'q';
			ck_assert_uint_eq(hm__router_hdr_classify(buf, n), HM__HDR_OTHER);
			ck_assert_uint_eq(hm__router_hdr_classify(name, i), HM__HDR_OTHER);
		}
	}
}
END_TEST

static bool flag(const char *name, unsigned f)
{
	return (hm__router_hdr_flags[hm__router_hdr_classify(name, strlen(name))] & f) != 0;
}

START_TEST(policy_flags)
{
	static const char *const hop[] = {"connection", "keep-alive", "proxy-connection", "te",
					  "proxy-authorization"};
	static const char *const h2_conn[] = {"connection",	   "keep-alive", "proxy-connection",
					      "transfer-encoding", "upgrade",	 "te"};
	static const char *const req_own[] = {"expect",
					      "x-forwarded-for",
					      "x-forwarded-proto",
					      "x-forwarded-port",
					      "x-request-id",
					      "x-request-start",
					      "via",
					      "connect-time",
					      "total-route-time"};
	static const char *const not_trailer[] = {
	    "host",	  "content-length",	"transfer-encoding", "trailer",
	    "connection", "keep-alive",		"proxy-connection",  "te",
	    "upgrade",	  "proxy-authorization"};
	unsigned nhop = 0, nh2 = 0, nreq = 0, nnt = 0;

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		ck_assert(flag(hop[i], HM__HF_HOP));
	for (size_t i = 0; i < sizeof(h2_conn) / sizeof(h2_conn[0]); i++)
		ck_assert(flag(h2_conn[i], HM__HF_H2_CONN));
	for (size_t i = 0; i < sizeof(req_own) / sizeof(req_own[0]); i++)
		ck_assert(flag(req_own[i], HM__HF_REQ_OWN));
	for (size_t i = 0; i < sizeof(not_trailer) / sizeof(not_trailer[0]); i++)
		ck_assert(flag(not_trailer[i], HM__HF_NOT_TRAILER));
	/* Exactly those: nothing else carries the flag. */
	for (uint8_t id = 0; id < HM__HDR_COUNT; id++) {
		nhop += (hm__router_hdr_flags[id] & HM__HF_HOP) != 0;
		nh2 += (hm__router_hdr_flags[id] & HM__HF_H2_CONN) != 0;
		nreq += (hm__router_hdr_flags[id] & HM__HF_REQ_OWN) != 0;
		nnt += (hm__router_hdr_flags[id] & HM__HF_NOT_TRAILER) != 0;
	}
	ck_assert_uint_eq(nhop, sizeof(hop) / sizeof(hop[0]));
	ck_assert_uint_eq(nh2, sizeof(h2_conn) / sizeof(h2_conn[0]));
	ck_assert_uint_eq(nreq, sizeof(req_own) / sizeof(req_own[0]));
	ck_assert_uint_eq(nnt, sizeof(not_trailer) / sizeof(not_trailer[0]));
	/* Toward the client the router writes Via only; framing fields are never dropped by name.
	 */
	ck_assert(flag("via", HM__HF_RESP_OWN));
	ck_assert(!flag("set-cookie", HM__HF_RESP_OWN));
	ck_assert(flag("host", HM__HF_FRAMING) && flag("content-length", HM__HF_FRAMING) &&
		  flag("transfer-encoding", HM__HF_FRAMING));
	ck_assert_uint_eq(hm__router_hdr_flags[HM__HDR_OTHER], 0);
}
END_TEST

START_TEST(reason_phrases)
{
	ck_assert_str_eq(hm__router_reason(200), "OK");
	ck_assert_str_eq(hm__router_reason(404), "Not Found");
	ck_assert_str_eq(hm__router_reason(499), "Client Closed Request");
	ck_assert_str_eq(hm__router_reason(503), "Service Unavailable");
	ck_assert_str_eq(hm__router_reason(101), "Switching Protocols");
	ck_assert_str_eq(hm__router_reason(299), "");
	ck_assert_str_eq(hm__router_reason(0), "");
	ck_assert_str_eq(hm__router_reason(-1), "");
	ck_assert_str_eq(hm__router_reason(999), "");
	ck_assert_str_eq(hm__router_reason(100000), "");
	ck_assert_str_eq(hm__router_hdr_name(HM__HDR_OTHER), "");
	ck_assert_str_eq(hm__router_hdr_name(HM__HDR_COUNT), "");
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("hdr");
	TCase *tc = tcase_create("hdr");

	tcase_add_test(tc, every_known_name_in_any_case);
	tcase_add_test(tc, nothing_else_is_known);
	tcase_add_test(tc, policy_flags);
	tcase_add_test(tc, reason_phrases);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
