/* Tests common/model.c: the contract's name grammar, hostname keys, addresses. */
#include <errno.h>
#include <string.h>

#include "common/errors.h"
#include "common/model.h"
#include "tests/unit/hm_check.h"

#define S(x) x, strlen(x)

START_TEST(app_names)
{
	ck_assert_int_eq(hm_app_name_check(S("a")), 0);
	ck_assert_int_eq(hm_app_name_check(S("my-app-2")), 0);
	ck_assert_int_eq(
	    hm_app_name_check(S("a23456789012345678901234567890123456789012345678901234567890123")),
	    0);
	ck_assert_int_eq(hm_app_name_check(
			     S("a234567890123456789012345678901234567890123456789012345678901234")),
			 HM_EAPPNAME);
	ck_assert_int_eq(hm_app_name_check(S("")), HM_EAPPNAME);
	ck_assert_int_eq(hm_app_name_check(S("1app")), HM_EAPPNAME);
	ck_assert_int_eq(hm_app_name_check(S("App")), HM_EAPPNAME);
	ck_assert_int_eq(hm_app_name_check(S("my_app")), HM_EAPPNAME);
	ck_assert_int_eq(hm_app_name_check(S("my.app")), HM_EAPPNAME);
}
END_TEST

START_TEST(dyno_names)
{
	ck_assert_int_eq(hm_dyno_name_check(S("web.1")), 0);
	ck_assert_int_eq(hm_dyno_name_check(S("worker_big-2.10")), 0);
	ck_assert_int_eq(hm_dyno_name_check(S("web")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S("web.")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S(".1")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S("web.1a")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S("Web.1")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S("1web.1")), HM_EDYNONAME);
	ck_assert_int_eq(hm_dyno_name_check(S("we.b.1")), HM_EDYNONAME);
}
END_TEST

START_TEST(hostnames)
{
	ck_assert_int_eq(hm_hostname_check(S("example.com"), false), 0);
	ck_assert_int_eq(hm_hostname_check(S("Example.COM."), false), 0);
	ck_assert_int_eq(hm_hostname_check(S("localhost"), false), 0);
	ck_assert_int_eq(hm_hostname_check(S("*.example.com"), true), 0);
	ck_assert_int_eq(hm_hostname_check(S("*.example.com"), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("*"), true), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("a.*.com"), true), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("-a.com"), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("a-.com"), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("a..com"), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("a b.com"), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S(""), false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(S("."), false), HM_EHOSTNAME);
	char big[300];
	memset(big, 'a', sizeof(big));
	for (int i = 60; i < 300; i += 61)
		big[i] = '.';
	ck_assert_int_eq(hm_hostname_check(big, 253, false), 0);
	ck_assert_int_eq(hm_hostname_check(big, 254, false), HM_EHOSTNAME);
	memset(big, 'a', 64);
	ck_assert_int_eq(hm_hostname_check(big, 64, false), HM_EHOSTNAME);
	ck_assert_int_eq(hm_hostname_check(big, 63, false), 0);

	char out[HM_HOST_MAX + 3];
	ck_assert_uint_eq(hm_host_canon(S("WWW.Example.COM."), out), 15);
	ck_assert_str_eq(out, "www.example.com");
}
END_TEST

START_TEST(host_keys)
{
	char out[HM_HOST_MAX + 1];

	ck_assert_int_eq(hm_host_key(S("A.Example.com:8080"), out), 13);
	ck_assert_str_eq(out, "a.example.com");
	ck_assert_int_eq(hm_host_key(S("a.example.com."), out), 13);
	ck_assert_str_eq(out, "a.example.com");
	ck_assert_int_eq(hm_host_key(S("a.example.com.:80"), out), 13);
	ck_assert_int_eq(hm_host_key(S("[::1]:80"), out), 3);
	ck_assert_str_eq(out, "::1");
	ck_assert_int_eq(hm_host_key(S(""), out), -EINVAL);
	ck_assert_int_eq(hm_host_key(S(":80"), out), -EINVAL);
	ck_assert_int_eq(hm_host_key(S("a b"), out), -EINVAL);
	ck_assert_int_eq(hm_host_key(S("a/b"), out), -EINVAL);
	ck_assert_int_eq(hm_host_key(S("user@host"), out), -EINVAL);
	char big[300];
	memset(big, 'a', sizeof(big));
	ck_assert_int_eq(hm_host_key(big, 254, out), -EINVAL);
	ck_assert_int_eq(hm_host_key(big, 253, out), 253);
}
END_TEST

START_TEST(addresses)
{
	struct hm_addr a;
	char buf[HM_ADDR_STR_MAX];

	ck_assert_int_eq(hm_addr_parse(S("10.0.0.1:5000"), &a), 0);
	ck_assert_uint_eq(a.family, 4);
	ck_assert_uint_eq(a.port, 5000);
	ck_assert_uint_eq(hm_addr_format(&a, buf), 13);
	ck_assert_str_eq(buf, "10.0.0.1:5000");
	ck_assert_int_eq(hm_addr_parse(S("[::1]:80"), &a), 0);
	ck_assert_uint_eq(a.family, 6);
	hm_addr_format(&a, buf);
	ck_assert_str_eq(buf, "[::1]:80");
	ck_assert_int_eq(hm_addr_parse(S("10.0.0.1:0"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("10.0.0.1:65536"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("10.0.0.1:080"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("10.0.0.1"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("localhost:80"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("::1:80"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("[::1]80"), &a), HM_EADDR);
	ck_assert_int_eq(hm_addr_parse(S("256.0.0.1:80"), &a), HM_EADDR);
}
END_TEST

START_TEST(changes)
{
	struct hm_change c = {.op = HM_OP_DYNO_PUT,
			      .app = "app",
			      .app_len = 3,
			      .name = "web.1",
			      .name_len = 5,
			      .state = HM_DYNO_UP};

	ck_assert_int_eq(hm_change_check(&c), HM_EADDR);
	hm_addr_parse(S("127.0.0.1:80"), &c.addr);
	ck_assert_int_eq(hm_change_check(&c), 0);
	c.state = 9;
	ck_assert_int_eq(hm_change_check(&c), HM_ESTATE);
	c.op = 77;
	ck_assert_int_eq(hm_change_check(&c), HM_EOP);
	c.op = HM_OP_DOMAIN_PUT;
	c.name = "*.x.org";
	c.name_len = 7;
	ck_assert_int_eq(hm_change_check(&c), 0);
	/* NUL and other control characters get their own code, whatever the field's grammar: on the
	 * wire a string has a length, so "victim.test\0.tenant.example" arrives whole. */
	c.name = "victim.test\0.tenant.example";
	c.name_len = 28;
	ck_assert_int_eq(hm_change_check(&c), HM_ECONTROL);
	c.name = "x.org";
	c.name_len = 5;
	c.app = "a\x1b[2J";
	c.app_len = 5;
	ck_assert_int_eq(hm_change_check(&c), HM_ECONTROL);
	c.app = "a\x7f";
	c.app_len = 2;
	ck_assert_int_eq(hm_change_check(&c), HM_ECONTROL);
	c.app = "app";
	c.app_len = 3;
	ck_assert_int_eq(hm_change_check(&c), 0);
	ck_assert_int_eq(hm_ctl_scan("abc\x80\x9f"
				     "def",
				     8),
			 -1); /* UTF-8 bytes are not controls */
	ck_assert_int_eq(hm_ctl_scan("ab\tc", 4), 2);
	ck_assert_int_eq(hm_ctl_scan("a\xc2\x9b"
				     "b",
				     4),
			 1); /* U+009B, CSI */
	ck_assert_int_eq(hm_ctl_scan("a\xc2\xa0"
				     "b",
				     4),
			 -1);

	uint8_t v;
	ck_assert_int_eq(hm_op_parse(S("dyno.rm"), &v), 0);
	ck_assert_uint_eq(v, HM_OP_DYNO_RM);
	ck_assert_int_eq(hm_balance_parse(S("least-conn"), &v), 0);
	ck_assert_uint_eq(v, HM_BALANCE_LEAST_CONN);
	ck_assert_int_eq(hm_dyno_state_parse(S("upp"), &v), HM_ESTATE);
	ck_assert_str_eq(hm_strerror(HM_ENOAPP), "no such app");
	ck_assert_str_eq(hm_errname(HM_ENOAPP), "ENOAPP");
	ck_assert_str_eq(hm_errname(-ECONNREFUSED), "ECONNREFUSED");
}
END_TEST

START_TEST(cert_names_and_pem)
{
	struct hm_change c = {.op = HM_OP_CERT_PUT,
			      .name = "*.example.com",
			      .name_len = 13,
			      .cert = "C\r\n",
			      .cert_len = 3,
			      .key = "K\n",
			      .key_len = 2};

	ck_assert_int_eq(hm_cert_name_check("default", 7), 0);
	ck_assert_int_eq(hm_cert_name_check("Default", 7), 0);
	ck_assert_int_eq(hm_cert_name_check("a.example.com.", 14), 0);
	ck_assert_int_eq(hm_cert_name_check("*.example.com", 13), 0);
	ck_assert_int_eq(hm_cert_name_check("defaults", 8), 0); /* a host name like any */
	ck_assert_int_eq(hm_cert_name_check("a..b", 4), HM_EHOSTNAME);
	ck_assert_int_eq(hm_cert_name_check("*.*.b", 5), HM_EHOSTNAME);
	ck_assert_int_eq(hm_pem_scan("AB\r\nCD\n", 7), -1);
	ck_assert_int_eq(hm_pem_scan("AB\tC", 4), 2);
	ck_assert_int_eq(hm_pem_scan("AB\x7f", 3), 2);
	ck_assert_int_eq(hm_pem_scan("A\xc3\xa9", 3), 1);
	ck_assert_int_eq(hm_change_check(&c), 0);
	c.key = "K\x1b";
	ck_assert_int_eq(hm_change_check(&c), HM_ECONTROL);
	c.key = "K\n";
	c.key_len = 0;
	ck_assert_int_eq(hm_change_check(&c), HM_ECERT);
	c.key_len = HM_CERT_KEY_MAX + 1;
	ck_assert_int_eq(hm_change_check(&c), HM_ECERT);
	c.key_len = 2;
	c.cert_len = HM_CERT_CHAIN_MAX + 1;
	ck_assert_int_eq(hm_change_check(&c), HM_ECERT);
	c.cert_len = 3;
	c.meta_len = 4; /* without the bytes */
	ck_assert_int_eq(hm_change_check(&c), HM_ECERT);
	c = (struct hm_change){.op = HM_OP_CERT_RM, .name = "default", .name_len = 7};
	ck_assert_int_eq(hm_change_check(&c), 0);
	ck_assert_str_eq(hm_op_name(HM_OP_CERT_PUT), "cert.put");
	ck_assert_str_eq(hm_op_name(HM_OP_CERT_RM), "cert.rm");
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("model");
	TCase *tc = tcase_create("model");

	tcase_add_test(tc, app_names);
	tcase_add_test(tc, dyno_names);
	tcase_add_test(tc, hostnames);
	tcase_add_test(tc, host_keys);
	tcase_add_test(tc, addresses);
	tcase_add_test(tc, changes);
	tcase_add_test(tc, cert_names_and_pem);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
