/* Tests common/batchfile.c: the contract's batch format, streaming, and every error path. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/batchfile.h"
#include "common/errors.h"
#include "tests/unit/hm_check.h"

/* Reads all changes of text; returns the final code and the count, error text in err. */
static int read_all(const char *text, size_t *count, char *err, size_t errlen)
{
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct hm_batch_reader *r;
	struct hm_change c;
	int e;

	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(hm_batch_reader_new(&r, f), 0);
	while ((e = hm_batch_reader_next(r, &c)) == 1)
		;
	*count = hm_batch_reader_count(r);
	snprintf(err, errlen, "%s", hm_batch_reader_error(r));
	hm_batch_reader_free(r);
	fclose(f);
	return e;
}

START_TEST(valid_file)
{
	const char *text =
	    " { \"changes\" :\n[ {\"op\":\"app.put\",\"app\":\"a\",\"maintenance\":true,"
	    "\"balance\":\"least-conn\"},\n"
	    "{\"op\":\"domain.put\",\"domain\":\"*.A.com\",\"app\":\"a\"},"
	    "{\"app\":\"a\",\"op\":\"dyno.put\",\"dyno\":\"web.1\",\"addr\":\"[::1]:80\"},"
	    "{\"op\":\"dyno.rm\",\"app\":\"a\",\"dyno\":\"web.1\"},"
	    "{\"op\":\"domain.rm\",\"domain\":\"x.com\"},{\"op\":\"app.rm\",\"app\":\"a\"} ] }\n";
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct hm_batch_reader *r;
	struct hm_change c;

	ck_assert_int_eq(hm_batch_reader_new(&r, f), 0);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.op, HM_OP_APP_PUT);
	ck_assert(c.maintenance && !c.affinity);
	ck_assert_uint_eq(c.balance, HM_BALANCE_LEAST_CONN);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.op, HM_OP_DOMAIN_PUT);
	ck_assert_int_eq(c.name_len, 7);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.state, HM_DYNO_UP); /* the default */
	ck_assert_uint_eq(c.addr.family, 6);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.op, HM_OP_APP_RM);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 0);
	ck_assert_int_eq(hm_batch_reader_count(r), 6);
	hm_batch_reader_free(r);
	fclose(f);
}
END_TEST

START_TEST(empty_and_large)
{
	size_t n, len = 0, cap = 64 << 20;
	char err[256], *big = malloc(cap);

	ck_assert_int_eq(read_all("{\"changes\":[]}", &n, err, sizeof(err)), 0);
	ck_assert_uint_eq(n, 0);
	/* 200k changes stream through the 64 KiB buffer, elements straddling refills */
	len += (size_t)sprintf(big + len, "{\"changes\":[");
	for (int i = 0; i < 200000; i++)
		len +=
		    (size_t)sprintf(big + len,
				    "%s{\"op\":\"dyno.put\",\"app\":\"app-%d\",\"dyno\":\"web.%d\","
				    "\"addr\":\"10.%d.%d.%d:%d\",\"state\":\"starting\"}",
				    i ? ",\n" : "", i % 1000, i, i >> 16 & 255, i >> 8 & 255,
				    i & 255, 1 + i % 65535);
	len += (size_t)sprintf(big + len, "]}");
	ck_assert_uint_lt(len, cap);
	ck_assert_int_eq(read_all(big, &n, err, sizeof(err)), 0);
	ck_assert_uint_eq(n, 200000);
	free(big);
}
END_TEST

START_TEST(errors)
{
	static const struct {
		const char *text;
		int code;
		const char *msg;
	} cases[] = {
	    {"", HM_EJSON, "{\"changes\""},
	    {"[]", HM_EJSON, "{\"changes\""},
	    {"{\"change\":[]}", HM_EJSON, "{\"changes\""},
	    {"{\"changes\":[1]}", HM_EJSON, "change 0: not a JSON object"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\"}", HM_EJSON, "after change 0"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\"}]", HM_EJSON, "after the changes"},
	    {"{\"changes\":[]} x", HM_EJSON, "after the changes"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\"", HM_EJSON, "ends inside"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\",}]}", HM_EJSON, "invalid JSON"},
	    {"{\"changes\":[{\"app\":\"a\"}]}", HM_EJSON, "\"op\" is missing"},
	    {"{\"changes\":[{\"op\":\"app.putt\",\"app\":\"a\"}]}", HM_EOP, "unknown operation"},
	    {"{\"changes\":[{\"op\":\"app.put\"}]}", HM_EJSON, "needs \"app\""},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"A\"}]}", HM_EAPPNAME, "\"app\""},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\",\"dyno\":\"web.1\"}]}", HM_EJSON,
	     "does not take \"dyno\""},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\",\"colour\":1}]}", HM_EJSON,
	     "unknown field \"colour\""},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\",\"maintenance\":\"on\"}]}", HM_EJSON,
	     "true or false"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\",\"balance\":\"rr\"}]}", HM_EBALANCE,
	     "\"balance\""},
	    {"{\"changes\":[{\"op\":\"domain.put\",\"domain\":\"a..com\",\"app\":\"a\"}]}",
	     HM_EHOSTNAME, "\"domain\""},
	    {"{\"changes\":[{\"op\":\"dyno.put\",\"app\":\"a\",\"dyno\":\"web\",\"addr\":\"1.1.1.1:"
	     "1\"}]}",
	     HM_EDYNONAME, "\"dyno\""},
	    {"{\"changes\":[{\"op\":\"dyno.put\",\"app\":\"a\",\"dyno\":\"web.1\",\"addr\":\"x:1\"}"
	     "]}",
	     HM_EADDR, "\"addr\""},
	    {"{\"changes\":[{\"op\":\"dyno.put\",\"app\":\"a\",\"dyno\":\"web.1\",\"addr\":\"1.1.1."
	     "1:1\","
	     "\"state\":\"sleeping\"}]}",
	     HM_ESTATE, "\"state\""},
	    {"{\"changes\":[{\"op\":\"app.rm\",\"app\":\"a\"},{\"op\":\"app.rm\",\"app\":7}]}",
	     HM_EJSON, "change 1: \"app\" must be a string"},
	};
	char err[256];
	size_t n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int e = read_all(cases[i].text, &n, err, sizeof(err));

		ck_assert_msg(e == cases[i].code, "case %zu: got %d (%s), want %d", i, e, err,
			      cases[i].code);
		ck_assert_msg(strstr(err, cases[i].msg) != NULL,
			      "case %zu: message '%s' lacks '%s'", i, err, cases[i].msg);
	}
}
END_TEST

/* A string holding NUL or another control character is refused, with the field named, however
 * it is written: cJSON would cut "victim.test\u0000.tenant.example" at the NUL and hand back a
 * valid "victim.test". */
START_TEST(control_characters)
{
	static const struct {
		const char *text;
		const char *msg;
	} cases[] = {
	    {"{\"changes\":[{\"op\":\"domain.put\",\"domain\":\"victim.test\\u0000.tenant."
	     "example\","
	     "\"app\":\"a\"}]}",
	     "change 0: \"domain\": holds a control character (U+0000)"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\\u001b[31m\"}]}",
	     "change 0: \"app\": holds a control character (U+001B)"},
	    {"{\"changes\":[{\"op\":\"app.rm\",\"app\":\"a\"},{\"op\":\"app.put\",\"app\":\"b\\n\"}"
	     "]}",
	     "change 1: \"app\": holds a control character (U+000A)"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"b\x01\"}]}",
	     "\"app\": holds a control character (U+0001)"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"b\x7f\"}]}",
	     "\"app\": holds a control character (U+007F)"},
	    {"{\"changes\":[{\"op\":\"app.put\",\"app\":\"b\\u009b\"}]}",
	     "\"app\": holds a control character (U+009B)"},
	    {"{\"changes\":[{\"op\\u0000\":\"app.put\",\"app\":\"b\"}]}",
	     "a key holds a control character (U+0000)"},
	};
	char err[256];
	size_t n;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int e = read_all(cases[i].text, &n, err, sizeof(err));

		ck_assert_msg(e == HM_ECONTROL, "case %zu: got %d (%s)", i, e, err);
		ck_assert_msg(strstr(err, cases[i].msg) != NULL,
			      "case %zu: message '%s' lacks '%s'", i, err, cases[i].msg);
	}
	/* An escaped backslash before "u0000" is not an escape of NUL. */
	ck_assert_int_eq(read_all("{\"changes\":[{\"op\":\"app.put\",\"app\":\"a\\\\u0000\"}]}", &n,
				  err, sizeof(err)),
			 HM_EAPPNAME);
}
END_TEST

START_TEST(cert_ops)
{
	const char *text =
	    "{\"changes\":[{\"op\":\"cert.put\",\"name\":\"*.Example.com\","
	    "\"cert\":\"-----BEGIN CERTIFICATE-----\\nMIIB\\r\\n-----END CERTIFICATE-----\\n\","
	    "\"key\":\"-----BEGIN PRIVATE KEY-----\\nSECRETKEYBYTES\\n-----END PRIVATE "
	    "KEY-----\\n\"},"
	    "{\"op\":\"cert.rm\",\"name\":\"default\"}]}";
	static const struct {
		const char *text;
		int code;
		const char *msg;
	} bad[] = {
	    /* PEM's own line ends only: an escape sequence in a key is refused, and never quoted.
	     */
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a.b\",\"cert\":\"C\",\"key\":"
	     "\"SECRETKEYBYTES\\u001b[2J\"}]}",
	     HM_ECONTROL, "change 0: \"key\": holds a control character (U+001B)"},
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a.b\",\"cert\":\"C\\u0000\",\"key\":"
	     "\"SECRETKEYBYTES\"}]}",
	     HM_ECONTROL, "\"cert\": holds a control character (U+0000)"},
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a.b\",\"cert\":\"C\",\"key\":"
	     "\"SECRETKEYBYTES\\u00e9\"}]}",
	     HM_ECONTROL, "\"key\": not PEM text"},
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a.b\",\"cert\":\"C\",\"key\":\"\"}]}",
	     HM_ECERT, "\"key\": empty"},
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a.b\",\"cert\":\"C\"}]}", HM_EJSON,
	     "\"cert.put\" needs \"key\""},
	    {"{\"changes\":[{\"op\":\"cert.put\",\"name\":\"a..b\",\"cert\":\"C\",\"key\":\"K\"}]}",
	     HM_EHOSTNAME, "\"name\": invalid hostname"},
	    {"{\"changes\":[{\"op\":\"cert.rm\",\"name\":\"a.b\",\"key\":\"SECRETKEYBYTES\"}]}",
	     HM_EJSON, "\"cert.rm\" does not take \"key\""},
	    /* A line end is PEM's only in cert and key. */
	    {"{\"changes\":[{\"op\":\"cert.rm\",\"name\":\"a.b\\n\"}]}", HM_ECONTROL,
	     "\"name\": holds a control character (U+000A)"},
	};
	FILE *f = fmemopen((void *)text, strlen(text), "r");
	struct hm_batch_reader *r;
	struct hm_change c;
	char err[256];
	size_t n;

	ck_assert_int_eq(hm_batch_reader_new(&r, f), 0);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.op, HM_OP_CERT_PUT);
	ck_assert_int_eq(c.name_len, 13);
	ck_assert_ptr_null(c.id);
	ck_assert(c.cert_len > 0 && memchr(c.cert, '\r', c.cert_len) != NULL);
	ck_assert(c.key_len > 0 && strncmp(c.key, "-----BEGIN PRIVATE KEY-----\n", 28) == 0);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 1);
	ck_assert_uint_eq(c.op, HM_OP_CERT_RM);
	ck_assert_int_eq(hm_batch_reader_next(r, &c), 0);
	hm_batch_reader_free(r);
	fclose(f);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int e = read_all(bad[i].text, &n, err, sizeof(err));

		ck_assert_msg(e == bad[i].code, "case %zu: got %d (%s)", i, e, err);
		ck_assert_msg(strstr(err, bad[i].msg) != NULL, "case %zu: message '%s' lacks '%s'",
			      i, err, bad[i].msg);
		ck_assert_msg(strstr(err, "SECRETKEYBYTES") == NULL, "case %zu quotes the key: %s",
			      i, err);
	}
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("batchfile");
	TCase *tc = tcase_create("batchfile");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, valid_file);
	tcase_add_test(tc, empty_and_large);
	tcase_add_test(tc, errors);
	tcase_add_test(tc, control_characters);
	tcase_add_test(tc, cert_ops);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
