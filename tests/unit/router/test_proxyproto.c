/*
 * Tests router/proxyproto.c: PROXY v1 and v2 headers that carry an address (IPv4, IPv6), none
 * (v1 UNKNOWN, v2 LOCAL, UNSPEC, UNIX), every malformation the parser must refuse, and that
 * every split of a valid header is "more, please" until its last byte.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#include "router/proxyproto.h"
#include "tests/unit/hm_check.h"

static const uint8_t sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int parse(const void *p, size_t n, char *addr, unsigned *port)
{
	struct sockaddr_storage ss;
	bool has = false;
	int r = hm__router_proxy_parse(p, n, &ss, &has);

	addr[0] = '\0';
	*port = 0;
	if (r > 0 && has && ss.ss_family == AF_INET) {
		const struct sockaddr_in *s = (const struct sockaddr_in *)&ss;

		inet_ntop(AF_INET, &s->sin_addr, addr, INET6_ADDRSTRLEN);
		*port = ntohs(s->sin_port);
	} else if (r > 0 && has) {
		const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)&ss;

		inet_ntop(AF_INET6, &s->sin6_addr, addr, INET6_ADDRSTRLEN);
		*port = ntohs(s->sin6_port);
	}
	return r;
}

/* Every proper prefix of p[0..n) asks for more; the whole is n long. */
static void splits(const void *p, size_t n)
{
	char a[INET6_ADDRSTRLEN];
	unsigned port;

	for (size_t k = 0; k < n; k++)
		ck_assert_msg(parse(p, k, a, &port) == 0, "prefix %zu of %zu", k, n);
	ck_assert_int_eq(parse(p, n, a, &port), (int)n);
}

START_TEST(v1_addresses)
{
	static const char t4[] = "PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET /";
	static const char t6[] = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 80\r\n";
	static const char unk[] = "PROXY UNKNOWN whatever follows\r\n";
	char a[INET6_ADDRSTRLEN];
	unsigned port;

	ck_assert_int_eq(parse(t4, sizeof(t4) - 1, a, &port), (int)sizeof(t4) - 1 - 5);
	ck_assert_str_eq(a, "203.0.113.7");
	ck_assert_uint_eq(port, 51234);
	ck_assert_int_eq(parse(t6, sizeof(t6) - 1, a, &port), (int)sizeof(t6) - 1);
	ck_assert_str_eq(a, "2001:db8::1");
	ck_assert_uint_eq(port, 65535);
	ck_assert_int_eq(parse(unk, sizeof(unk) - 1, a, &port), (int)sizeof(unk) - 1);
	ck_assert_str_eq(a, "");
	splits(t6, sizeof(t6) - 1);
	splits(unk, sizeof(unk) - 1);
}
END_TEST

START_TEST(v1_refused)
{
	static const char *const bad[] = {
	    "GET / HTTP/1.1\r\n",
	    "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
	    "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
	    "PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
	    "PROXY TCP6 1.2.3.4 2001:db8::1 1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
	    "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
	    "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
	    "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
	};
	char line[200], a[INET6_ADDRSTRLEN];
	unsigned port;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(parse(bad[i], strlen(bad[i]), a, &port) == -EPROTO, "%s", bad[i]);
	/* No line end within 107 bytes. */
	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	ck_assert_int_eq(parse(line, 106, a, &port), 0);
	ck_assert_int_eq(parse(line, 107, a, &port), -EPROTO);
	/* 107 bytes with the CRLF is the longest allowed. */
	line[105] = '\r';
	line[106] = '\n';
	ck_assert_int_eq(parse(line, 107, a, &port), 107);
}
END_TEST

/* A v2 header: cmd, fam, then len bytes of body. */
static size_t v2(uint8_t *out, uint8_t cmd, uint8_t fam, const void *body, size_t len)
{
	memcpy(out, sig, 12);
	out[12] = cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len > 0)
		memmove(out + 16, body, len); /* body may be out + 16 itself */
	return 16 + len;
}

START_TEST(v2_addresses)
{
	uint8_t b[HM__PROXY_MAX + 64],
	    body4[12 + 7] = {198, 51,  100,  9, 10, 0,	 0,   1,   0xc3, 0x50,
			     1,	  187, 0x04, 0, 4,  'a', 'b', 'c', 'd'};
	uint8_t body6[36] = {0x20, 0x01, 0x0d, 0xb8};
	char a[INET6_ADDRSTRLEN];
	unsigned port;
	size_t n;

	n = v2(b, 0x21, 0x11, body4, sizeof(body4)); /* with a TLV after the addresses */
	ck_assert_int_eq(parse(b, n, a, &port), (int)n);
	ck_assert_str_eq(a, "198.51.100.9");
	ck_assert_uint_eq(port, 50000);
	splits(b, n);
	body6[15] = 5;
	body6[32] = 0x01;
	body6[33] = 0x02;
	n = v2(b, 0x21, 0x21, body6, sizeof(body6));
	ck_assert_int_eq(parse(b, n, a, &port), (int)n);
	ck_assert_str_eq(a, "2001:db8::5");
	ck_assert_uint_eq(port, 258);
	/* LOCAL (a health check), UNSPEC, UNIX: a header without a client address. */
	n = v2(b, 0x20, 0x00, NULL, 0);
	ck_assert_int_eq(parse(b, n, a, &port), 16);
	ck_assert_str_eq(a, "");
	n = v2(b, 0x21, 0x00, NULL, 0);
	ck_assert_int_eq(parse(b, n, a, &port), 16);
	memset(b + 16, 0, 216);
	n = v2(b, 0x21, 0x31, b + 16, 216);
	ck_assert_int_eq(parse(b, n, a, &port), (int)n);
	ck_assert_str_eq(a, "");
	/* The longest accepted. */
	memset(b + 16, 0, HM__PROXY_MAX - 16);
	n = v2(b, 0x21, 0x11, b + 16, HM__PROXY_MAX - 16);
	ck_assert_int_eq(parse(b, n, a, &port), HM__PROXY_MAX);
}
END_TEST

START_TEST(v2_refused)
{
	uint8_t b[HM__PROXY_MAX + 64], z[64] = {0};
	char a[INET6_ADDRSTRLEN];
	unsigned port;
	size_t n;

	n = v2(b, 0x11, 0x11, z, 12); /* version 1 in a v2 signature */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	n = v2(b, 0x22, 0x11, z, 12); /* unknown command */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	n = v2(b, 0x21, 0x11, z, 11); /* IPv4 addresses need 12 bytes */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	n = v2(b, 0x21, 0x21, z, 35); /* IPv6 36 */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	n = v2(b, 0x21, 0x41, z, 12); /* unknown family */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	n = v2(b, 0x21, 0x13, z, 12); /* unknown transport */
	ck_assert_int_eq(parse(b, n, a, &port), -EPROTO);
	memset(b + 16, 0, HM__PROXY_MAX - 15);
	n = v2(b, 0x21, 0x11, b + 16, HM__PROXY_MAX - 15); /* too long */
	ck_assert_int_eq(parse(b, 16, a, &port), -EPROTO);
	b[3] = 0x0b; /* a broken signature */
	ck_assert_int_eq(parse(b, 12, a, &port), -EPROTO);
	ck_assert_int_eq(parse(b, 3, a, &port), 0); /* could still be one */
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/proxyproto");
	TCase *tc = tcase_create("proxyproto");

	tcase_add_test(tc, v1_addresses);
	tcase_add_test(tc, v1_refused);
	tcase_add_test(tc, v2_addresses);
	tcase_add_test(tc, v2_refused);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
