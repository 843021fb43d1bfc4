/*
 * The TLS 1.3 resumption fast path (router/tls13.c) against OpenSSL's own client: a full
 * handshake with a libssl server set up as the router's engine sets it up (the cluster's ticket
 * keys, one ticket) gives the client a libssl ticket; the fast path then resumes it, carries
 * application data both ways, issues its own ticket, resumes that, answers KeyUpdates, and
 * refuses what it must (a wrong binder, an unknown key, an expired ticket, a tampered record).
 */
#include <check.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "router/tls13.h"
#include "tests/unit/certgen.h"
#include "tests/unit/hm_check.h"

static struct hm_ticket_key keys[2];
static SSL_CTX *sctx, *cctx;
static SSL_SESSION *last;
static struct hm_tls13_ctx *fx;
static const uint8_t alpn_pref[] = "\x02h2\x08http/1.1";

static int on_ticket(SSL *s, unsigned char name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx_,
		     EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[2] = {
	    OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};

	(void)s;
	if (enc) {
		RAND_bytes(iv, 16);
		memcpy(name, keys[0].name, 16);
		EVP_EncryptInit_ex(cctx_, EVP_aes_256_cbc(), NULL, keys[0].aes_key, iv);
		EVP_MAC_init(hctx, keys[0].hmac_key, 32, params);
		return 1;
	}
	if (memcmp(name, keys[0].name, 16) != 0)
		return 0;
	EVP_MAC_init(hctx, keys[0].hmac_key, 32, params);
	EVP_DecryptInit_ex(cctx_, EVP_aes_256_cbc(), NULL, keys[0].aes_key, iv);
	return 1;
}

static int on_session(SSL *s, SSL_SESSION *sess)
{
	(void)s;
	SSL_SESSION_free(last);
	last = sess;
	return 1; /* kept */
}

static void setup(void)
{
	EVP_PKEY *k = certgen_key("ec256");
	struct certgen g = {.cn = "a.example.com",
			    .sans = "DNS:a.example.com",
			    .key = k,
			    .not_before = -60,
			    .not_after = 86400};
	X509 *x = certgen_cert(&g);

	RAND_bytes((unsigned char *)keys, sizeof(keys));
	sctx = SSL_CTX_new(TLS_server_method());
	ck_assert(SSL_CTX_use_certificate(sctx, x) == 1 && SSL_CTX_use_PrivateKey(sctx, k) == 1);
	SSL_CTX_set_session_cache_mode(sctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(sctx, 1);
	SSL_CTX_set_ciphersuites(sctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384");
	SSL_CTX_set_options(sctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_id_context(sctx, (const unsigned char *)"hermod", 6);
	SSL_CTX_set_tlsext_ticket_key_evp_cb(sctx, on_ticket);
	cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
	SSL_CTX_sess_set_new_cb(cctx, on_session);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
	X509_free(x);
	EVP_PKEY_free(k);
	ck_assert_int_eq(hm_tls13_ctx_new(&fx, 0, true), 0);
	hm_tls13_ctx_set_keys(fx, keys, 2);
}

static void teardown(void)
{
	SSL_SESSION_free(last);
	last = NULL;
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	hm_tls13_ctx_free(fx);
}

/* A client with memory BIOs. */
static SSL *client(const char *sni, const char *alpn, size_t alpn_len)
{
	SSL *c = SSL_new(cctx);

	SSL_set_bio(c, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
	if (sni != NULL)
		SSL_set_tlsext_host_name(c, sni);
	if (alpn != NULL)
		SSL_set_alpn_protos(c, (const unsigned char *)alpn, (unsigned)alpn_len);
	if (last != NULL)
		ck_assert_int_eq(SSL_set_session(c, last), 1);
	SSL_set_connect_state(c);
	return c;
}

/* As a clean close would: OpenSSL marks the session of a connection freed without one as not
 * resumable. */
static void client_free(SSL *c)
{
	SSL_set_shutdown(c, SSL_SENT_SHUTDOWN);
	SSL_free(c);
}

static size_t drain(SSL *s, uint8_t *buf, size_t cap)
{
	int n = BIO_read(SSL_get_wbio(s), buf, (int)cap);

	return n > 0 ? (size_t)n : 0;
}

static void feed(SSL *s, const uint8_t *p, size_t n)
{
	ck_assert_int_eq(BIO_write(SSL_get_rbio(s), p, (int)n), (int)n);
}

/* A full handshake with the libssl server; the client keeps the ticket it is sent. */
static void full_handshake(const char *sni)
{
	SSL *c = client(sni, NULL, 0), *s = SSL_new(sctx);
	uint8_t buf[16384];
	char got[8];
	size_t n;

	SSL_set_bio(s, BIO_new(BIO_s_mem()), BIO_new(BIO_s_mem()));
	SSL_set_accept_state(s);
	for (int i = 0; i < 10 && (!SSL_is_init_finished(c) || !SSL_is_init_finished(s)); i++) {
		SSL_do_handshake(c);
		if ((n = drain(c, buf, sizeof(buf))) > 0)
			feed(s, buf, n);
		SSL_do_handshake(s);
		if ((n = drain(s, buf, sizeof(buf))) > 0)
			feed(c, buf, n);
	}
	ck_assert(SSL_is_init_finished(c) && SSL_is_init_finished(s));
	ck_assert_int_eq(SSL_write(s, "hi", 2), 2);
	n = drain(s, buf, sizeof(buf));
	feed(c, buf, n);
	ck_assert_int_eq(SSL_read(c, got, sizeof(got)), 2);
	ck_assert_ptr_nonnull(last);
	client_free(c);
	SSL_free(s);
}

/* The client's first flight as a handshake message. */
static size_t client_hello(SSL *c, uint8_t *rec, size_t cap)
{
	size_t n;

	ck_assert_int_eq(SSL_do_handshake(c), -1);
	n = drain(c, rec, cap);
	ck_assert_uint_ge(n, 9);
	ck_assert_int_eq(rec[0], 22);
	ck_assert_uint_eq(((size_t)rec[3] << 8 | rec[4]) + 5, n); /* one record */
	return n;
}

/* Opens every record in buf; returns the application data gathered. */
static int open_all(struct hm_tls13 *t, uint8_t *buf, size_t n, char *data, size_t *dn)
{
	size_t i = 0;

	*dn = 0;
	while (i < n) {
		size_t len = 5 + ((size_t)buf[i + 3] << 8 | buf[i + 4]), pl;
		uint8_t *p = buf + i + 5;
		int r;

		ck_assert_uint_le(i + len, n);
		r = hm_tls13_open(t, buf + i, len, p, &pl);
		if (r < 0 || r == HM_TLS13_ALERT)
			return r;
		if (r == HM_TLS13_DATA) {
			memcpy(data + *dn, p, pl);
			*dn += pl;
		}
		i += len;
	}
	return 0;
}

/* Resumes on the fast path; returns the connection, established, after one exchange. */
static struct hm_tls13 *resume(SSL **cp, const char *sni)
{
	SSL *c = client(sni, "\x08http/1.1", 9);
	uint8_t ch[4096], out[4096], buf[4096];
	struct hm_tls13_hello h;
	struct hm_tls13_accept a = {.alpn_pref = alpn_pref, .alpn_pref_len = sizeof(alpn_pref) - 1};
	struct hm_tls13 *t = NULL;
	size_t n = client_hello(c, ch, sizeof(ch)), on = 0, dn;
	char data[256];
	int r;

	ck_assert(hm_tls13_parse_hello(ch + 5, n - 5, &h));
	ck_assert_int_eq(hm_tls13_accept(fx, &h, &a, &t, out, &on), 1);
	ck_assert_uint_eq(a.alpn_len, 8);
	ck_assert_mem_eq(a.alpn, "http/1.1", 8);
	feed(c, out, on);
	ck_assert_int_eq(SSL_do_handshake(c), 1);
	ck_assert_int_eq(SSL_session_reused(c), 1);
	ck_assert_int_eq(SSL_write(c, "GET / HTTP/1.1\r\n\r\n", 18), 18);
	n = drain(c, buf, sizeof(buf));
	ck_assert_int_eq(open_all(t, buf, n, data, &dn), 0);
	ck_assert(hm_tls13_established(t));
	ck_assert_uint_eq(dn, 18);
	ck_assert(memcmp(data, "GET / HTTP/1.1\r\n\r\n", 18) == 0);
	/* The ticket goes out with the response. */
	r = hm_tls13_pending(t, out, sizeof(out));
	ck_assert_int_gt(r, 0);
	on = (size_t)r;
	r = hm_tls13_seal(t, HM_TLS13_DATA, "HTTP/1.1 200 OK\r\n\r\n", 19, out + on);
	ck_assert_int_gt(r, 0);
	on += (size_t)r;
	SSL_SESSION_free(last);
	last = NULL;
	feed(c, out, on);
	ck_assert_int_eq(SSL_read(c, data, sizeof(data)), 19);
	ck_assert_ptr_nonnull(last); /* our ticket */
	*cp = c;
	return t;
}

START_TEST(resumes_libssl_then_own_tickets)
{
	SSL *c;
	struct hm_tls13 *t;

	full_handshake("a.example.com");
	t = resume(&c, "a.example.com"); /* libssl's ticket */
	hm_tls13_free(t);
	client_free(c);
	t = resume(&c, "b.example.com"); /* ours; as in libssl, the name is not the session's */
	hm_tls13_free(t);
	client_free(c);
	t = resume(&c, "a.example.com");
	hm_tls13_free(t);
	client_free(c);
}
END_TEST

START_TEST(key_update_and_close_notify)
{
	SSL *c;
	struct hm_tls13 *t;
	uint8_t buf[4096], out[4096];
	char data[64];
	size_t n, dn;
	int r;

	full_handshake("a.example.com");
	t = resume(&c, "a.example.com");
	for (int round = 0; round < 3; round++) {
		ck_assert_int_eq(SSL_key_update(c, SSL_KEY_UPDATE_REQUESTED), 1);
		ck_assert_int_eq(SSL_write(c, "ping", 4), 4);
		n = drain(c, buf, sizeof(buf));
		ck_assert_int_eq(open_all(t, buf, n, data, &dn), 0);
		ck_assert_uint_eq(dn, 4);
		r = hm_tls13_pending(t, out, sizeof(out)); /* our KeyUpdate first */
		ck_assert_int_gt(r, 0);
		n = (size_t)r;
		r = hm_tls13_seal(t, HM_TLS13_DATA, "pong", 4, out + n);
		ck_assert_int_gt(r, 0);
		feed(c, out, n + (size_t)r);
		ck_assert_int_eq(SSL_read(c, data, sizeof(data)), 4);
		ck_assert(memcmp(data, "pong", 4) == 0);
	}
	ck_assert_int_eq(SSL_shutdown(c), 0);
	n = drain(c, buf, sizeof(buf));
	ck_assert_int_eq(open_all(t, buf, n, data, &dn), HM_TLS13_ALERT);
	r = hm_tls13_alert(t, HM_TLS13_A_CLOSE_NOTIFY, out);
	ck_assert_int_gt(r, 0);
	feed(c, out, (size_t)r);
	ck_assert_int_eq(SSL_shutdown(c), 1);
	hm_tls13_free(t);
	client_free(c);
}
END_TEST

/* A hello the fast path must leave to libssl: nothing written. parses: whether it is in the
 * parser's scope (then accept() is what declines it). */
static void declined(const char *sni, void (*spoil)(uint8_t *ch, size_t n), bool parses)
{
	SSL *c = client(sni, NULL, 0);
	uint8_t ch[4096], out[HM_TLS13_FLIGHT_MAX];
	struct hm_tls13_hello h;
	struct hm_tls13_accept a = {.alpn_pref = alpn_pref, .alpn_pref_len = sizeof(alpn_pref) - 1};
	struct hm_tls13 *t = NULL;
	size_t n = client_hello(c, ch, sizeof(ch)), on = 0;

	if (spoil != NULL)
		spoil(ch, n);
	ck_assert_int_eq(hm_tls13_parse_hello(ch + 5, n - 5, &h), parses);
	if (parses)
		ck_assert_int_eq(hm_tls13_accept(fx, &h, &a, &t, out, &on), 0);
	ck_assert_ptr_null(t);
	ck_assert_uint_eq(on, 0);
	client_free(c);
}

static void flip_last(uint8_t *ch, size_t n)
{
	ch[n - 1] ^= 1; /* the binder's last byte */
}

START_TEST(declines)
{
	full_handshake("a.example.com");
	declined("a.example.com", flip_last, true); /* a wrong binder */
	hm_tls13_ctx_set_keys(fx, keys + 1, 1);	    /* the ticket's key rotated out */
	declined("a.example.com", NULL, true);
	hm_tls13_ctx_set_keys(fx, keys, 2);
	SSL_SESSION_free(last);
	last = NULL;
	declined("a.example.com", NULL, false); /* no ticket: a full handshake, libssl's */
}
END_TEST

START_TEST(tampered_record)
{
	SSL *c;
	struct hm_tls13 *t;
	uint8_t buf[4096];
	char data[64];
	size_t n, dn;

	full_handshake("a.example.com");
	t = resume(&c, "a.example.com");
	ck_assert_int_eq(SSL_write(c, "data", 4), 4);
	n = drain(c, buf, sizeof(buf));
	buf[n - 3] ^= 0x40;
	ck_assert_int_eq(open_all(t, buf, n, data, &dn), -HM_TLS13_A_BAD_RECORD_MAC);
	hm_tls13_free(t);
	client_free(c);
}
END_TEST

/* Seeded mutations of a real resuming hello (1 to 4 bytes changed, or the message cut short):
 * the parser and accept() never read outside the message (run under AddressSanitizer) and take
 * a changed hello only if the change is outside what the binder covers. Then records of random
 * bytes and random lengths on an established connection: each is refused with an alert. */
START_TEST(mutations)
{
	SSL *c;
	uint8_t ch[4096], m[4096], out[HM_TLS13_FLIGHT_MAX], rec[600], dst[600];
	struct hm_tls13_hello h;
	struct hm_tls13_accept a = {.alpn_pref = alpn_pref, .alpn_pref_len = sizeof(alpn_pref) - 1};
	struct hm_tls13 *t;
	uint64_t x = 0x9e3779b97f4a7c15ull;
	size_t n, on, pl;
	unsigned taken = 0, parsed = 0;

	full_handshake("a.example.com");
	c = client("a.example.com", NULL, 0);
	n = client_hello(c, ch, sizeof(ch)) - 5;
	client_free(c);
	for (int i = 0; i < 20000; i++) {
		size_t len = n;

		memcpy(m, ch + 5, n);
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		if (x % 8 == 0) {
			len = (x >> 8) % n; /* cut short */
		} else {
			for (unsigned k = 0; k <= (x >> 3) % 4; k++) {
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				m[(x >> 16) % n] ^= (uint8_t)(1u << ((x >> 40) % 8));
			}
		}
		if (!hm_tls13_parse_hello(m, len, &h))
			continue;
		parsed++;
		t = NULL;
		if (hm_tls13_accept(fx, &h, &a, &t, out, &on) == 1) {
			taken++;
			hm_tls13_free(t);
		}
	}
	ck_assert_uint_gt(parsed, 0);
	ck_assert_uint_lt(taken, parsed);
	t = resume(&c, "a.example.com");
	for (int i = 0; i < 2000; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		n = 5 + (x >> 20) % (sizeof(rec) - 5);
		for (size_t k = 0; k < n; k++)
			rec[k] = (uint8_t)(x >> (8 * (k % 8))) ^ (uint8_t)k;
		rec[0] = (uint8_t)(20 + (x >> 50) % 5);
		rec[3] = (uint8_t)((n - 5) >> 8);
		rec[4] = (uint8_t)(n - 5);
		ck_assert_int_lt(hm_tls13_open(t, rec, n, dst, &pl), 0);
	}
	hm_tls13_free(t);
	client_free(c);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("tls13");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, resumes_libssl_then_own_tickets);
	tcase_add_test(tc, key_update_and_close_notify);
	tcase_add_test(tc, declines);
	tcase_add_test(tc, tampered_record);
	tcase_add_test(tc, mutations);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
