/*
 * Tests router/tls.c by driving it with an OpenSSL client in the same process, bytes moved
 * between the two by hand: which certificate each SNI gets (and that the client verifies its
 * chain), unrecognized_name, TLS 1.0/1.1 refused, TLS 1.2 and 1.3 with ECDSA and RSA, data both
 * ways through small buffers, resumption with a ticket issued by another context reading another
 * store with the same keys (another node), ticket key rotation, a certificate rotated while a
 * connection is open, ALPN, garbage and plaintext HTTP, a broken store entry, the bounded cache,
 * a store that appears late, and close_notify.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/certstore.h"
#include "common/util.h"
#include "router/tls.h"
#include "tests/unit/certgen.h"
#include "tests/unit/hm_check.h"

#define DAY 86400L

static char dir[64], path[128], path2[128];
static EVP_PKEY *ca_key;
static X509 *ca;
static uint64_t seq;
static bool client_trusts_ca;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-test-tls-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/node1.certs", dir);
	snprintf(path2, sizeof(path2), "%s/node2.certs", dir);
	ca_key = certgen_key("ec256");
	ca = certgen_cert(&(struct certgen){.cn = "Test CA",
					    .key = ca_key,
					    .ca = true,
					    .not_before = -DAY,
					    .not_after = 3650 * DAY});
	seq = 0;
	client_trusts_ca = true;
}

static void teardown(void)
{
	char cmd[160];

	X509_free(ca);
	EVP_PKEY_free(ca_key);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- the store ---- */

/* Puts a certificate for name with the given key type and SANs; CN tells the certificates
 * apart on the client side. */
static void put_cert(struct hm_certstore_writer *w, const char *name, const char *cn,
		     const char *sans, const char *keytype)
{
	EVP_PKEY *k = certgen_key(keytype);
	X509 *leaf = certgen_cert(&(struct certgen){.cn = cn,
						    .sans = sans,
						    .key = k,
						    .issuer = ca,
						    .issuer_key = ca_key,
						    .not_before = -DAY,
						    .not_after = 90 * DAY});
	size_t cl, kl;
	char *cert = certgen_pem_chain(&cl, leaf, ca, NULL),
	     *key = certgen_pem_key(&kl, k, NULL, false);
	struct hm_cert_put p = {.name = name,
				.name_len = strlen(name),
				.cert = cert,
				.cert_len = cl,
				.key = key,
				.key_len = kl,
				.not_after = time(NULL) + 90 * DAY};
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	/* any digest of the content will do as its id here */
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, cert, cl);
	EVP_DigestUpdate(md, key, kl);
	EVP_DigestFinal_ex(md, p.id, NULL);
	EVP_MD_CTX_free(md);
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_put(w, &p), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, ++seq), 0);
	X509_free(leaf);
	EVP_PKEY_free(k);
	free(cert);
	free(key);
}

static void set_keys(struct hm_certstore_writer *w, const char *names)
{
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	unsigned n = 0;

	/* one key per letter, its bytes derived from the letter: the same on every "node" */
	for (const char *p = names; *p != '\0'; p++, n++)
		memset(&keys[n], *p, sizeof(keys[n]));
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_set_ticket_keys(w, keys, n), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, ++seq), 0);
}

static struct hm_certstore_writer *store(const char *at)
{
	struct hm_certstore_writer *w;

	ck_assert_int_eq(hm_certstore_writer_open(&w, at, NULL, 0, 0), 0);
	return w;
}

struct engine {
	struct hm_certstore_reader *r;
	struct hm_tls_ctx *t;
};

static void engine_init(struct engine *e, const char *at, const struct hm_tls_config *cfg)
{
	ck_assert_int_eq(hm_certstore_reader_new(&e->r, at), 0);
	ck_assert_int_eq(hm_tls_ctx_new(&e->t, e->r, cfg), 0);
}

static void engine_fini(struct engine *e)
{
	hm_tls_ctx_free(e->t);
	hm_certstore_reader_free(e->r);
}

/* ---- the client ---- */

static SSL_SESSION *last_session;

static int on_new_session(SSL *s, SSL_SESSION *sess)
{
	(void)s;
	SSL_SESSION_free(last_session);
	last_session = sess;
	return 1; /* we keep the reference */
}

struct client {
	SSL_CTX *ctx;
	SSL *ssl;
	BIO *rb, *wb; /* what the client reads (from the server) and writes */
};

/* A client for TLS versions [min, max] that verifies the server against the test CA. */
static void client_init(struct client *cl, int min, int max, const char *sni,
			const unsigned char *alpn, unsigned alpn_len)
{
	cl->ctx = SSL_CTX_new(TLS_client_method());
	ck_assert_ptr_nonnull(cl->ctx);
	if (min < TLS1_2_VERSION) {
		/* old protocols need the lowest security level on the client side */
		SSL_CTX_set_security_level(cl->ctx, 0);
		ck_assert_int_eq(SSL_CTX_set_cipher_list(cl->ctx, "DEFAULT:@SECLEVEL=0"), 1);
	}
	SSL_CTX_set_min_proto_version(cl->ctx, min);
	SSL_CTX_set_max_proto_version(cl->ctx, max);
	if (client_trusts_ca)
		X509_STORE_add_cert(SSL_CTX_get_cert_store(cl->ctx), ca);
	SSL_CTX_set_verify(cl->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_session_cache_mode(cl->ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(cl->ctx, on_new_session);
	if (alpn != NULL)
		ck_assert_int_eq(SSL_CTX_set_alpn_protos(cl->ctx, alpn, alpn_len), 0);
	cl->ssl = SSL_new(cl->ctx);
	cl->rb = BIO_new(BIO_s_mem());
	cl->wb = BIO_new(BIO_s_mem());
	SSL_set_bio(cl->ssl, cl->rb, cl->wb);
	SSL_set_connect_state(cl->ssl);
	if (sni != NULL)
		ck_assert_int_eq(SSL_set_tlsext_host_name(cl->ssl, sni), 1);
}

static void client_fini(struct client *cl)
{
	/* As a clean close would: OpenSSL marks the session of a connection freed without one as
	 * not resumable. */
	SSL_set_shutdown(cl->ssl, SSL_SENT_SHUTDOWN);
	SSL_free(cl->ssl);
	SSL_CTX_free(cl->ctx);
}

/* Moves the client's bytes to the engine in slices of at most `slice` bytes, with a small
 * plaintext buffer, so that both partial input and a full output are exercised. Returns the
 * engine's result; plaintext received is appended to got (if not NULL). */
static int to_server(struct client *cl, struct hm_tls_conn *c, size_t slice, char *got,
		     size_t *got_len, size_t got_cap)
{
	char buf[65536], plain[1500];
	int n;

	while ((n = BIO_read(cl->wb, buf, (int)HM_MIN(sizeof(buf), slice))) > 0) {
		size_t off = 0;

		for (;;) {
			size_t used = 0, plen = 0;
			int rc = hm_tls_conn_recv(c, buf + off, (size_t)n - off, &used, plain,
						  sizeof(plain), &plen);

			off += used;
			if (plen > 0 && got != NULL) {
				ck_assert_uint_le(*got_len + plen, got_cap);
				memcpy(got + *got_len, plain, plen);
				*got_len += plen;
			}
			if (rc != 0)
				return rc;
			if (off == (size_t)n && plen < sizeof(plain))
				break;
			ck_assert_msg(used > 0 || plen > 0, "the engine made no progress");
		}
	}
	return 0;
}

static void to_client(struct client *cl, struct hm_tls_conn *c)
{
	const uint8_t *p;
	size_t n;

	while ((n = hm_tls_conn_out(c, &p)) > 0) {
		ck_assert_int_eq(BIO_write(cl->rb, p, (int)n), (int)n);
		hm_tls_conn_out_done(c, n);
	}
}

/* Runs the handshake to its end. Returns 0 (both sides established), or the engine's error
 * (the client's alert is left in its BIO). */
static int handshake(struct client *cl, struct hm_tls_conn *c)
{
	for (int round = 0; round < 20; round++) {
		int r = SSL_do_handshake(cl->ssl), rc;
		char byte;

		if (r != 1 && SSL_get_error(cl->ssl, r) != SSL_ERROR_WANT_READ) {
			to_server(cl, c, 65536, NULL, NULL, 0);
			return -ECONNABORTED; /* the client gave up */
		}
		rc = to_server(cl, c, 65536, NULL, NULL, 0);
		to_client(cl, c);
		if (rc < 0)
			return rc;
		if (r == 1 && hm_tls_conn_established(c)) {
			/* let the client take the tickets that follow a TLS 1.3 handshake (a
			 * read with nothing to read: it stops at "want read") */
			ck_assert_int_le(SSL_peek(cl->ssl, &byte, 1), 0);
			ERR_clear_error();
			return 0;
		}
	}
	return -ETIMEDOUT;
}

/* The client's view of the certificate it got: its CN. */
static const char *peer_cn(struct client *cl, char *buf, size_t n)
{
	X509 *x = SSL_get1_peer_certificate(cl->ssl);

	buf[0] = '\0';
	if (x != NULL) {
		X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)n);
		X509_free(x);
	}
	return buf;
}

/* One handshake with SNI sni: returns the CN the client got ("" if it failed), and checks that
 * the client verified the chain. */
static const char *cn_for(struct engine *e, const char *sni, char *buf, size_t n)
{
	struct client cl;
	struct hm_tls_conn *c;

	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, sni, NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e->t), 0);
	if (handshake(&cl, c) == 0) {
		ck_assert_int_eq(SSL_get_verify_result(cl.ssl), X509_V_OK);
		peer_cn(&cl, buf, n);
	} else {
		buf[0] = '\0';
	}
	hm_tls_conn_free(c);
	client_fini(&cl);
	return buf;
}

START_TEST(sni_selects_the_certificate)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	char cn[64];
	struct client cl;
	struct hm_tls_conn *c;

	put_cert(w, "a.example.com", "exact", "DNS:a.example.com", "ec256");
	put_cert(w, "*.example.com", "wild", "DNS:*.example.com", "rsa2048");
	put_cert(w, "*.b.example.com", "wild-b", "DNS:*.b.example.com", "ec384");
	put_cert(w, "default", "default", "DNS:default.example.net", "ec256");
	engine_init(&e, path, NULL);
	ck_assert_str_eq(cn_for(&e, "a.example.com", cn, sizeof(cn)), "exact");
	ck_assert_str_eq(cn_for(&e, "A.EXAMPLE.com.", cn, sizeof(cn)), "exact");
	ck_assert_str_eq(cn_for(&e, "x.example.com", cn, sizeof(cn)), "wild");
	ck_assert_str_eq(cn_for(&e, "c.b.example.com", cn, sizeof(cn)), "wild-b");
	ck_assert_str_eq(cn_for(&e, "x.y.example.com", cn, sizeof(cn)), "default");
	ck_assert_str_eq(cn_for(&e, "example.com", cn, sizeof(cn)), "default");
	ck_assert_str_eq(cn_for(&e, NULL, cn, sizeof(cn)), "default");
	/* what the connection reports */
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "x.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert_str_eq(hm_tls_conn_sni(c), "x.example.com");
	ck_assert_uint_eq(hm_tls_conn_match(c), HM_CERT_WILDCARD);
	ck_assert_str_eq(hm_tls_conn_version(c), "TLSv1.3");
	ck_assert_str_eq(hm_tls_conn_cipher(c), "TLS_AES_128_GCM_SHA256");
	ck_assert(!hm_tls_conn_resumed(c));
	hm_tls_conn_free(c);
	client_fini(&cl);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->full, 8);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_misses, 4);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_hits, 4);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(no_certificate_is_unrecognized_name)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	unsigned long err;

	put_cert(w, "a.example.com", "exact", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "other.org", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), -EPROTO);
	ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_UNRECOGNIZED_NAME);
	/* the client got the unrecognized_name alert */
	ck_assert_int_le(SSL_do_handshake(cl.ssl), 0);
	err = ERR_peek_last_error();
	ck_assert_int_eq(ERR_GET_REASON(err), SSL_R_TLSV1_UNRECOGNIZED_NAME);
	ERR_clear_error();
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_UNRECOGNIZED_NAME], 1);
	ck_assert_str_eq(hm_tls_fail_name(HM_TLS_FAIL_UNRECOGNIZED_NAME), "unrecognized_name");
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(old_protocols_are_refused)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	int versions[] = {TLS1_VERSION, TLS1_1_VERSION};

	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	for (int i = 0; i < 2; i++) {
		struct client cl;
		struct hm_tls_conn *c;

		client_init(&cl, versions[i], versions[i], "a.example.com", NULL, 0);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(handshake(&cl, c), -EPROTO);
		ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_PROTOCOL_VERSION);
		ck_assert_int_le(SSL_do_handshake(cl.ssl), 0);
		ck_assert_int_eq(ERR_GET_REASON(ERR_peek_last_error()),
				 SSL_R_TLSV1_ALERT_PROTOCOL_VERSION);
		ERR_clear_error();
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_PROTOCOL_VERSION], 2);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(tls12_and_tls13_with_ecdsa_and_rsa)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	const struct {
		const char *sni, *cn;
		int version;
		const char *vname, *cipher;
	} cases[] = {
	    {"ec.example.com", "ec", TLS1_2_VERSION, "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"},
	    {"rsa.example.com", "rsa", TLS1_2_VERSION, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"},
	    {"ec.example.com", "ec", TLS1_3_VERSION, "TLSv1.3", "TLS_AES_128_GCM_SHA256"},
	    {"rsa.example.com", "rsa", TLS1_3_VERSION, "TLSv1.3", "TLS_AES_128_GCM_SHA256"},
	};

	put_cert(w, "ec.example.com", "ec", "DNS:ec.example.com", "ec256");
	put_cert(w, "rsa.example.com", "rsa", "DNS:rsa.example.com", "rsa2048");
	engine_init(&e, path, NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct client cl;
		struct hm_tls_conn *c;
		char cn[64];

		client_init(&cl, cases[i].version, cases[i].version, cases[i].sni, NULL, 0);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(handshake(&cl, c), 0);
		ck_assert_int_eq(SSL_get_verify_result(cl.ssl), X509_V_OK);
		ck_assert_str_eq(peer_cn(&cl, cn, sizeof(cn)), cases[i].cn);
		ck_assert_str_eq(hm_tls_conn_version(c), cases[i].vname);
		ck_assert_str_eq(hm_tls_conn_cipher(c), cases[i].cipher);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* n bytes from the engine to the client through its bounded output (a send stops when it is
 * full); the client must read them back whole into back. */
static void send_down(struct client *cl, struct hm_tls_conn *c, const char *down, char *back,
		      size_t n)
{
	size_t sent = 0, back_len = 0;

	while (sent < n || back_len < n) {
		int k = sent < n ? hm_tls_conn_send(c, down + sent, n - sent) : 0, r;
		const uint8_t *p;
		size_t len = hm_tls_conn_out(c, &p);

		ck_assert_int_ge(k, 0);
		sent += (size_t)k;
		ck_assert_uint_le(len, 32 * 1024);
		if (len > 0) {
			ck_assert_int_eq(BIO_write(cl->rb, p, (int)len), (int)len);
			hm_tls_conn_out_done(c, len);
		}
		while ((r = SSL_read(cl->ssl, back + back_len, (int)(n - back_len))) > 0)
			back_len += (size_t)r;
		ck_assert(k > 0 || len > 0 || back_len == n);
	}
	ck_assert_mem_eq(back, down, n);
}

/* 100 KiB up in slices of 777 bytes; 300 KiB down through the engine's bounded output. */
START_TEST(data_both_ways)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	enum { UP = 100 * 1024, DOWN = 300 * 1024 };
	static char up[UP], got[UP], down[DOWN], back[DOWN];
	size_t got_len = 0;

	for (size_t i = 0; i < UP; i++)
		up[i] = (char)('a' + i % 26);
	for (size_t i = 0; i < DOWN; i++)
		down[i] = (char)('A' + (i * 7) % 26);
	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(hm_tls_conn_send(c, "x", 1), -ENOTCONN);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert_int_eq(SSL_write(cl.ssl, up, UP), UP);
	ck_assert_int_eq(to_server(&cl, c, 777, got, &got_len, sizeof(got)), 0);
	ck_assert_uint_eq(got_len, UP);
	ck_assert_mem_eq(got, up, UP);
	send_down(&cl, c, down, back, DOWN);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* A full handshake on `first`, then a resumption attempt with its session on `second`. Returns
 * whether the second was resumed (both must succeed). */
static bool resumes(struct engine *first, struct engine *second, int version)
{
	struct client cl;
	struct hm_tls_conn *c;
	bool resumed;

	SSL_SESSION_free(last_session);
	last_session = NULL;
	client_init(&cl, version, version, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, first->t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	hm_tls_conn_free(c);
	client_fini(&cl);
	if (last_session == NULL)
		return false; /* no ticket was issued */
	client_init(&cl, version, version, "a.example.com", NULL, 0);
	ck_assert_int_eq(SSL_set_session(cl.ssl, last_session), 1);
	ck_assert_int_eq(hm_tls_conn_new(&c, second->t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	resumed = SSL_session_reused(cl.ssl) == 1;
	ck_assert_int_eq(resumed, hm_tls_conn_resumed(c));
	hm_tls_conn_free(c);
	client_fini(&cl);
	return resumed;
}

/* Resumes with the session the last connection left (0: full handshake), on e. */
static bool resume_last(struct engine *e, int version)
{
	struct client cl;
	struct hm_tls_conn *c;
	SSL_SESSION *s = last_session;
	bool resumed;

	ck_assert_ptr_nonnull(s);
	last_session = NULL;
	client_init(&cl, version, version, "a.example.com", NULL, 0);
	ck_assert_int_eq(SSL_set_session(cl.ssl, s), 1);
	ck_assert_int_eq(hm_tls_conn_new(&c, e->t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	resumed = hm_tls_conn_resumed(c);
	hm_tls_conn_free(c);
	client_fini(&cl);
	/* TLS 1.2 keeps its ticket when the server does not send a new one */
	if (last_session == NULL)
		last_session = s;
	else
		SSL_SESSION_free(s);
	return resumed;
}

/* Two nodes: each has its own store file and its own engine context; the stores hold the same
 * certificate name (different certificates, as two edges could briefly have) and the same
 * ticket keys. A ticket from one resumes on the other, in TLS 1.3 and 1.2. */
START_TEST(resumption_on_another_node)
{
	struct hm_certstore_writer *w1 = store(path), *w2 = store(path2);
	struct engine n1, n2;
	int versions[] = {TLS1_3_VERSION, TLS1_2_VERSION};

	put_cert(w1, "a.example.com", "n1", "DNS:a.example.com", "ec256");
	put_cert(w2, "a.example.com", "n2", "DNS:a.example.com", "ec256");
	set_keys(w1, "AB");
	set_keys(w2, "AB");
	engine_init(&n1, path, NULL);
	engine_init(&n2, path2, NULL);
	for (int i = 0; i < 2; i++) {
		ck_assert_msg(resumes(&n1, &n2, versions[i]), "version %x", versions[i]);
		ck_assert_msg(resumes(&n2, &n1, versions[i]), "version %x", versions[i]);
		ck_assert_msg(resumes(&n1, &n1, versions[i]), "version %x", versions[i]);
	}
	ck_assert_uint_eq(hm_tls_ctx_stats(n1.t)->resumed, 4);
	ck_assert_uint_eq(hm_tls_ctx_stats(n2.t)->resumed, 2);
	/* A client that goes on resuming, node after node: TLS 1.3 tickets are used once, so each
	 * resumption must hand out the next one. */
	for (int i = 0; i < 2; i++) {
		ck_assert(resumes(&n1, &n2, versions[i]));
		for (int k = 0; k < 4; k++)
			ck_assert_msg(resume_last(k % 2 ? &n2 : &n1, versions[i]),
				      "resumption %d in a row, version %x", k + 2, versions[i]);
	}
	/* another cluster's keys: a full handshake, never an error */
	set_keys(w2, "CD");
	ck_assert(!resumes(&n1, &n2, TLS1_3_VERSION));
	ck_assert(!resumes(&n1, &n2, TLS1_2_VERSION));
	engine_fini(&n1);
	engine_fini(&n2);
	hm_certstore_writer_close(w1);
	hm_certstore_writer_close(w2);
}
END_TEST

START_TEST(ticket_key_rotation)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	SSL_SESSION *old;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	/* no keys: no tickets, handshakes still work */
	ck_assert(!resumes(&e, &e, TLS1_3_VERSION));
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->tickets_issued, 0);
	set_keys(w, "K");
	ck_assert(resumes(&e, &e, TLS1_3_VERSION));
	/* a session under K, kept */
	old = last_session;
	SSL_SESSION_up_ref(old);
	/* rotation: L encrypts, K still decrypts and its tickets are renewed */
	set_keys(w, "LK");
	client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(SSL_set_session(cl.ssl, old), 1);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert(hm_tls_conn_resumed(c));
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->tickets_renewed, 1);
	hm_tls_conn_free(c);
	client_fini(&cl);
	/* K rotated out: the old session gets a full handshake */
	set_keys(w, "ML");
	client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(SSL_set_session(cl.ssl, old), 1);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert(!hm_tls_conn_resumed(c));
	hm_tls_conn_free(c);
	client_fini(&cl);
	SSL_SESSION_free(old);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* A certificate replaced while a connection that uses it is open: the next handshake gets the
 * new one, the open connection carries on with the old one. */
START_TEST(rotation_while_a_connection_is_open)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	char cn[64], got[64];
	size_t got_len = 0;
	const uint8_t *p;
	size_t n;

	put_cert(w, "a.example.com", "v1", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert_str_eq(peer_cn(&cl, cn, sizeof(cn)), "v1");
	put_cert(w, "a.example.com", "v2", "DNS:a.example.com", "ec256");
	ck_assert_str_eq(cn_for(&e, "a.example.com", cn, sizeof(cn)), "v2");
	/* the first connection still works both ways */
	ck_assert_int_eq(SSL_write(cl.ssl, "ping", 4), 4);
	ck_assert_int_eq(to_server(&cl, c, 65536, got, &got_len, sizeof(got)), 0);
	ck_assert_uint_eq(got_len, 4);
	ck_assert_int_eq(hm_tls_conn_send(c, "pong", 4), 4);
	n = hm_tls_conn_out(c, &p);
	BIO_write(cl.rb, p, (int)n);
	hm_tls_conn_out_done(c, n);
	ck_assert_int_eq(SSL_read(cl.ssl, got, sizeof(got)), 4);
	ck_assert_mem_eq(got, "pong", 4);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(alpn)
{
	static const unsigned char both[] = "\x02h2\x08http/1.1", h2only[] = "\x02h2",
				   h1only[] = "\x08http/1.1", h10only[] = "\x08http/1.0",
				   h10first[] = "\x08http/1.0\x08http/1.1", other[] = "\x06spdy/3";
	struct hm_certstore_writer *w = store(path);
	struct hm_tls_config h2 = {.h2 = true, .num_tickets = -1};
	struct engine e, e2;
	struct {
		struct engine *e;
		const unsigned char *offer;
		unsigned len;
		int rc;
		unsigned want;
	} cases[] = {
	    {&e, both, sizeof(both) - 1, 0, HM_TLS_ALPN_HTTP11},
	    {&e, h1only, sizeof(h1only) - 1, 0, HM_TLS_ALPN_HTTP11},
	    {&e, NULL, 0, 0, HM_TLS_ALPN_NONE},
	    {&e, h2only, sizeof(h2only) - 1, -EPROTO, HM_TLS_ALPN_NONE},
	    {&e2, both, sizeof(both) - 1, 0, HM_TLS_ALPN_H2},
	    {&e2, h1only, sizeof(h1only) - 1, 0, HM_TLS_ALPN_HTTP11},
	    /* HTTP/1.0 by name (curl --http1.0): served as HTTP/1.x, http/1.1 preferred */
	    {&e, h10only, sizeof(h10only) - 1, 0, HM_TLS_ALPN_HTTP11},
	    {&e2, h10only, sizeof(h10only) - 1, 0, HM_TLS_ALPN_HTTP11},
	    {&e2, h10first, sizeof(h10first) - 1, 0, HM_TLS_ALPN_HTTP11},
	    /* nothing we speak: no_application_protocol (RFC 7301, 3.2) */
	    {&e2, other, sizeof(other) - 1, -EPROTO, HM_TLS_ALPN_NONE},
	};

	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	engine_init(&e2, path, &h2);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct client cl;
		struct hm_tls_conn *c;

		client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", cases[i].offer,
			    cases[i].len);
		ck_assert_int_eq(hm_tls_conn_new(&c, cases[i].e->t), 0);
		ck_assert_int_eq(handshake(&cl, c), cases[i].rc);
		if (cases[i].rc == 0) {
			const unsigned char *p;
			unsigned n;

			ck_assert_uint_eq(hm_tls_conn_alpn(c), cases[i].want);
			SSL_get0_alpn_selected(cl.ssl, &p, &n); /* as the client saw it */
			if (cases[i].offer == h10only)
				ck_assert(n == 8 && memcmp(p, "http/1.0", 8) == 0);
			if (cases[i].offer == h10first)
				ck_assert(n == 8 && memcmp(p, "http/1.1", 8) == 0);
		} else
			ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_NO_ALPN);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	engine_fini(&e);
	engine_fini(&e2);
	hm_certstore_writer_close(w);
}
END_TEST

/* Plain HTTP, random bytes, a client that leaves, a client too slow: each failure is counted
 * once, under its reason. */
START_TEST(failures_by_reason)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct hm_tls_conn *c;
	const char *http = "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n";
	unsigned char junk[512];
	char plain[64];
	size_t used, plen;
	struct client cl;

	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(
	    hm_tls_conn_recv(c, http, strlen(http), &used, plain, sizeof(plain), &plen), -EPROTO);
	ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_HTTP_REQUEST);
	/* failed is failed: later calls change nothing */
	ck_assert_int_eq(
	    hm_tls_conn_recv(c, http, strlen(http), &used, plain, sizeof(plain), &plen), -EPROTO);
	hm_tls_conn_peer_closed(c);
	hm_tls_conn_free(c);

	srand(99);
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (unsigned char)rand();
	/* a 256-byte handshake record holding a client hello of garbage */
	memcpy(junk, "\x16\x03\x01\x01\x00\x01", 6);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(
	    hm_tls_conn_recv(c, junk, sizeof(junk), &used, plain, sizeof(plain), &plen), -EPROTO);
	ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_BAD_MESSAGE);
	hm_tls_conn_free(c);

	/* a client hello, then the client leaves; another that never finishes */
	for (int i = 0; i < 2; i++) {
		client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		SSL_do_handshake(cl.ssl);
		ck_assert_int_eq(to_server(&cl, c, 65536, NULL, NULL, 0), 0);
		if (i == 0)
			hm_tls_conn_peer_closed(c);
		else
			hm_tls_conn_timeout(c);
		hm_tls_conn_timeout(c); /* counted once */
		ck_assert_uint_eq(hm_tls_conn_fail(c),
				  i == 0 ? HM_TLS_FAIL_EOF : HM_TLS_FAIL_TIMEOUT);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	/* a client that rejects our certificate (it does not trust the CA) */
	client_trusts_ca = false;
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_ne(handshake(&cl, c), 0);
	ERR_clear_error();
	ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_PEER_ALERT);
	hm_tls_conn_free(c);
	client_fini(&cl);

	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_HTTP_REQUEST], 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_BAD_MESSAGE], 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_EOF], 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_TIMEOUT], 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_PEER_ALERT], 1);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* A store entry whose key does not match its certificate (the origin refuses such a put; this
 * one is written behind its back): the handshake fails with internal_error, counted as
 * "certificate", and the entry is parsed once, not once per handshake. */
START_TEST(a_broken_entry_is_parsed_once)
{
	struct hm_certstore_writer *w = store(path);
	EVP_PKEY *k1 = certgen_key("ec256"), *k2 = certgen_key("ec256");
	X509 *leaf = certgen_cert(&(struct certgen){.cn = "a",
						    .sans = "DNS:a.example.com",
						    .key = k1,
						    .not_before = -DAY,
						    .not_after = 90 * DAY});
	size_t cl_len, kl;
	char *cert = certgen_pem_chain(&cl_len, leaf, NULL),
	     *key = certgen_pem_key(&kl, k2, NULL, false);
	struct hm_cert_put p = {.name = "a.example.com",
				.name_len = 13,
				.cert = cert,
				.cert_len = cl_len,
				.key = key,
				.key_len = kl};
	struct engine e;
	char cn[64];

	memset(p.id, 0x42, sizeof(p.id));
	ck_assert_int_eq(hm_certstore_begin(w), 0);
	ck_assert_int_eq(hm_certstore_put(w, &p), 0);
	ck_assert_int_eq(hm_certstore_commit(w, 1, 1), 0);
	engine_init(&e, path, NULL);
	for (int i = 0; i < 3; i++)
		ck_assert_str_eq(cn_for(&e, "a.example.com", cn, sizeof(cn)), "");
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_CERTIFICATE], 3);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_bad, 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_misses, 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_hits, 2);
	engine_fini(&e);
	X509_free(leaf);
	EVP_PKEY_free(k1);
	EVP_PKEY_free(k2);
	free(cert);
	free(key);
	hm_certstore_writer_close(w);
}
END_TEST

/* The cache holds at most cache_max contexts; a connection keeps an evicted one alive. */
START_TEST(the_cache_is_bounded)
{
	struct hm_certstore_writer *w = store(path);
	struct hm_tls_config cfg = {.cache_max = 4, .num_tickets = -1};
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	char name[32], sans[48], cn[64], got[8];
	size_t got_len = 0;

	for (int i = 0; i < 10; i++) {
		snprintf(name, sizeof(name), "h%d.example.com", i);
		snprintf(sans, sizeof(sans), "DNS:%s", name);
		put_cert(w, name, name, sans, "ec256");
	}
	engine_init(&e, path, &cfg);
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "h0.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	for (int round = 0; round < 2; round++)
		for (int i = 0; i < 10; i++) {
			snprintf(name, sizeof(name), "h%d.example.com", i);
			ck_assert_str_eq(cn_for(&e, name, cn, sizeof(cn)), name);
		}
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cached, 4);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_misses, 20);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->cache_evictions, 16);
	/* h0's context was evicted long ago; its connection does not care */
	ck_assert_int_eq(SSL_write(cl.ssl, "still", 5), 5);
	ck_assert_int_eq(to_server(&cl, c, 65536, got, &got_len, sizeof(got)), 0);
	ck_assert_uint_eq(got_len, 5);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* No store yet: unrecognized_name; once the edge has written one, the next check maps it. */
START_TEST(a_store_that_appears_later)
{
	struct hm_certstore_writer *w;
	struct engine e;
	char cn[64];

	engine_init(&e, path, NULL);
	ck_assert_str_eq(cn_for(&e, "a.example.com", cn, sizeof(cn)), "");
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_UNRECOGNIZED_NAME], 1);
	w = store(path);
	put_cert(w, "default", "late", "DNS:a.example.com", "ec256");
	ck_assert_int_eq(hm_certstore_reader_check(e.r), 1);
	ck_assert_str_eq(cn_for(&e, "a.example.com", cn, sizeof(cn)), "late");
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

START_TEST(close_notify_both_ways)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	char buf[16];
	const uint8_t *p;
	size_t n, used, plen;
	int r;

	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	/* the server closes */
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert_int_eq(hm_tls_conn_close_notify(c), 0);
	n = hm_tls_conn_out(c, &p);
	ck_assert_uint_gt(n, 0);
	BIO_write(cl.rb, p, (int)n);
	hm_tls_conn_out_done(c, n);
	r = SSL_read(cl.ssl, buf, sizeof(buf));
	ck_assert_int_eq(SSL_get_error(cl.ssl, r), SSL_ERROR_ZERO_RETURN);
	hm_tls_conn_free(c);
	client_fini(&cl);
	/* The server closes with its output full: -EAGAIN until it has been written. Two TLS 1.3
	 * records (AES-128-GCM: 22 bytes of overhead each) leave 10 bytes of the 32 KiB output,
	 * fewer than the 24 of a close_notify record. */
	client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	{
		static char big[16384 + 16330], got[sizeof(big)];
		size_t back = 0;

		memset(big, 'z', sizeof(big));
		ck_assert_int_eq(hm_tls_conn_send(c, big, 16384), 16384);
		ck_assert_int_eq(hm_tls_conn_send(c, big + 16384, 16330), 16330);
		ck_assert_uint_eq(hm_tls_conn_out(c, &p), 32768 - 10);
		ck_assert_int_eq(hm_tls_conn_close_notify(c), -EAGAIN);
		n = hm_tls_conn_out(c, &p);
		BIO_write(cl.rb, p, (int)n);
		hm_tls_conn_out_done(c, n);
		ck_assert_int_eq(hm_tls_conn_close_notify(c), 0);
		n = hm_tls_conn_out(c, &p);
		ck_assert_uint_gt(n, 0);
		BIO_write(cl.rb, p, (int)n);
		hm_tls_conn_out_done(c, n);
		while ((r = SSL_read(cl.ssl, got + back, (int)(sizeof(got) - back))) > 0)
			back += (size_t)r;
		ck_assert_uint_eq(back, sizeof(big));
		ck_assert_int_eq(SSL_get_error(cl.ssl, r), SSL_ERROR_ZERO_RETURN);
	}
	hm_tls_conn_free(c);
	client_fini(&cl);
	/* the client closes */
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	SSL_shutdown(cl.ssl);
	ck_assert_int_eq(to_server(&cl, c, 65536, NULL, NULL, 0), HM_TLS_CLOSED);
	(void)used;
	(void)plen;
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* hm_tls_conn_out_room(): while it is at least min(n, HM_TLS_RECORD_MAX) + HM_TLS_RECORD_SLACK,
 * a send of n bytes seals a whole record (never 0, never a record left half written), in TLS 1.2
 * and 1.3, with sizes from one byte to more than a record; the room is what the output has left,
 * and the client reads every byte back. */
START_TEST(out_room_says_when_a_record_fits_whole)
{
	static const size_t sizes[] = {1, 100, 8191, 16384, 20000, 3};
	static char big[20000], got[32 * 1024 * 8];
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	const uint8_t *p;
	int vers[] = {TLS1_2_VERSION, TLS1_3_VERSION};

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	for (int v = 0; v < 2; v++) {
		size_t sent = 0, back = 0, k = 0, n;
		uint64_t written;
		int r;

		client_init(&cl, vers[v], vers[v], "a.example.com", NULL, 0);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(handshake(&cl, c), 0);
		written = hm_tls_conn_out_total(c);
		for (int round = 0; round < 4; round++) {
			for (;;) {
				size_t want = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
				size_t room = hm_tls_conn_out_room(c);
				uint64_t before = hm_tls_conn_out_total(c);

				ck_assert_uint_eq(room, 32 * 1024 - (before - written));
				if (room <
				    HM_MIN(want, (size_t)HM_TLS_RECORD_MAX) + HM_TLS_RECORD_SLACK)
					break;
				r = hm_tls_conn_send(c, big, want);
				ck_assert_int_eq(r, (int)HM_MIN(want, (size_t)HM_TLS_RECORD_MAX));
				ck_assert_uint_gt(hm_tls_conn_out_total(c), before + (uint64_t)r);
				ck_assert(sent + (size_t)r <= sizeof(got));
				sent += (size_t)r;
				k++;
			}
			/* Full as far as the contract goes: write it, and the room is all back. */
			n = hm_tls_conn_out(c, &p);
			BIO_write(cl.rb, p, (int)n);
			hm_tls_conn_out_done(c, n);
			written += n;
			ck_assert_uint_eq(written, hm_tls_conn_out_total(c));
			ck_assert_uint_eq(hm_tls_conn_out_room(c), 32 * 1024);
		}
		while ((r = SSL_read(cl.ssl, got + back, (int)(sizeof(got) - back))) > 0)
			back += (size_t)r;
		ck_assert_uint_eq(back, sent);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* A record that fails its authentication after the handshake: the connection is dead, and
 * stays dead for every later call. */
START_TEST(a_broken_connection_stays_broken)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	char buf[4096], plain[64];
	size_t used, plen;
	int n;

	put_cert(w, "default", "default", "DNS:a.example.com", "ec256");
	engine_init(&e, path, NULL);
	client_init(&cl, TLS1_2_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake(&cl, c), 0);
	ck_assert_int_eq(SSL_write(cl.ssl, "hello", 5), 5);
	n = BIO_read(cl.wb, buf, sizeof(buf));
	ck_assert_int_gt(n, 10);
	buf[n - 1] ^= 0x01; /* the authentication tag */
	ck_assert_int_eq(hm_tls_conn_recv(c, buf, (size_t)n, &used, plain, sizeof(plain), &plen),
			 -EPROTO);
	ck_assert_uint_eq(plen, 0);
	ck_assert_int_eq(hm_tls_conn_recv(c, NULL, 0, &used, plain, sizeof(plain), &plen), -EPROTO);
	ck_assert_int_eq(hm_tls_conn_send(c, "x", 1), -EPROTO);
	ck_assert_int_eq(hm_tls_conn_close_notify(c), 0);
	/* not a handshake failure: nothing counted as one */
	ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_NONE);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fail[HM_TLS_FAIL_BAD_MESSAGE], 0);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* ---- the TLS 1.3 resumption fast path (tls13.h) ---- */

/* A connection resumed on e with a ticket from a full handshake there; the client as given. */
static struct hm_tls_conn *resumed_conn(struct engine *e, struct client *cl, const char *suites,
					const char *groups, const unsigned char *alpn,
					unsigned alpn_len)
{
	struct hm_tls_conn *c;

	SSL_SESSION_free(last_session);
	last_session = NULL;
	client_init(cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", alpn, alpn_len);
	ck_assert_int_eq(hm_tls_conn_new(&c, e->t), 0);
	ck_assert_int_eq(handshake(cl, c), 0);
	hm_tls_conn_free(c);
	client_fini(cl);
	ck_assert_ptr_nonnull(last_session);
	client_init(cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", alpn, alpn_len);
	if (suites != NULL)
		ck_assert_int_eq(SSL_set_ciphersuites(cl->ssl, suites), 1);
	if (groups != NULL)
		ck_assert_int_eq(SSL_set1_groups_list(cl->ssl, groups), 1);
	ck_assert_int_eq(SSL_set_session(cl->ssl, last_session), 1);
	ck_assert_int_eq(hm_tls_conn_new(&c, e->t), 0);
	ck_assert_int_eq(handshake(cl, c), 0);
	ck_assert(hm_tls_conn_resumed(c));
	ck_assert_int_eq(SSL_session_reused(cl->ssl), 1);
	return c;
}

/* Resumed on the fast path, bytes in slices down to one (records in pieces), the engine's
 * plaintext buffer smaller than a record (plaintext held back), data both ways, its ticket
 * resumed again on the fast path. */
START_TEST(fast_path_data_both_ways)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	enum { UP = 40 * 1024, DOWN = 100 * 1024 };
	static char up[UP], got[UP], down[DOWN], back[DOWN];
	static const size_t slices[] = {1, 5, 777, 65536};

	for (size_t i = 0; i < UP; i++)
		up[i] = (char)('a' + i % 26);
	for (size_t i = 0; i < DOWN; i++)
		down[i] = (char)('A' + (i * 7) % 26);
	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, NULL);
	for (unsigned k = 0; k < sizeof(slices) / sizeof(slices[0]); k++) {
		size_t got_len = 0;
		uint64_t fast = hm_tls_ctx_stats(e.t)->fast;

		c = resumed_conn(&e, &cl, NULL, NULL, NULL, 0);
		ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fast, fast + 1);
		ck_assert_str_eq(hm_tls_conn_version(c), "TLSv1.3");
		ck_assert_str_eq(hm_tls_conn_cipher(c), "TLS_AES_128_GCM_SHA256");
		ck_assert_int_eq(SSL_write(cl.ssl, up, UP), UP);
		ck_assert_int_eq(to_server(&cl, c, slices[k], got, &got_len, sizeof(got)), 0);
		ck_assert_uint_eq(got_len, UP);
		ck_assert_mem_eq(got, up, UP);
		send_down(&cl, c, down, back, DOWN);
		/* the client got the fast path's ticket: it resumes there too */
		hm_tls_conn_free(c);
		client_fini(&cl);
		ck_assert(resume_last(&e, TLS1_3_VERSION));
		ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fast, fast + 2);
	}
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* KeyUpdate from the client, with and without update_requested, and close_notify both ways. */
START_TEST(fast_path_key_update_and_close)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	char got[64];
	size_t got_len;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, NULL);
	c = resumed_conn(&e, &cl, NULL, NULL, NULL, 0);
	for (int i = 0; i < 4; i++) {
		int r;

		ck_assert_int_eq(SSL_key_update(cl.ssl, i % 2 ? SSL_KEY_UPDATE_NOT_REQUESTED
							      : SSL_KEY_UPDATE_REQUESTED),
				 1);
		ck_assert_int_eq(SSL_write(cl.ssl, "ping", 4), 4);
		got_len = 0;
		ck_assert_int_eq(to_server(&cl, c, 3, got, &got_len, sizeof(got)), 0);
		ck_assert_uint_eq(got_len, 4);
		ck_assert_int_eq(hm_tls_conn_send(c, "pong", 4), 4);
		to_client(&cl, c);
		r = SSL_read(cl.ssl, got, sizeof(got));
		ck_assert_int_eq(r, 4);
		ck_assert_mem_eq(got, "pong", 4);
	}
	ck_assert_int_eq(SSL_shutdown(cl.ssl), 0);
	ck_assert_int_eq(to_server(&cl, c, 65536, NULL, NULL, 0), HM_TLS_CLOSED);
	ck_assert_int_eq(hm_tls_conn_close_notify(c), 0);
	to_client(&cl, c);
	ck_assert_int_eq(SSL_shutdown(cl.ssl), 1);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* What the fast path does not take still resumes, through libssl: another suite, a key share
 * of another group; ALPN h2 is agreed on the fast path; a tampered record breaks the
 * connection with an alert; an engine without the fast path cannot read its tickets (a full
 * handshake). */
START_TEST(fast_path_scope)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e, plain;
	struct client cl;
	struct hm_tls_conn *c;
	struct hm_tls_config no_fast = {.num_tickets = -1, .no_fast13 = true};
	static const unsigned char h2[] = "\x02h2\x08http/1.1";
	uint64_t fast;
	const uint8_t *p;
	size_t n;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, &(struct hm_tls_config){.num_tickets = -1, .h2 = true});
	engine_init(&plain, path, &no_fast);
	fast = hm_tls_ctx_stats(e.t)->fast;
	c = resumed_conn(&e, &cl, "TLS_CHACHA20_POLY1305_SHA256", NULL, NULL, 0);
	ck_assert_str_eq(hm_tls_conn_cipher(c), "TLS_CHACHA20_POLY1305_SHA256");
	hm_tls_conn_free(c);
	client_fini(&cl);
	c = resumed_conn(&e, &cl, NULL, "P-256", NULL, 0);
	hm_tls_conn_free(c);
	client_fini(&cl);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fast, fast);
	c = resumed_conn(&e, &cl, NULL, NULL, h2, sizeof(h2) - 1);
	ck_assert_uint_eq(hm_tls_ctx_stats(e.t)->fast, fast + 1);
	ck_assert_uint_eq(hm_tls_conn_alpn(c), HM_TLS_ALPN_H2);
	/* a record with a bit flipped */
	ck_assert_int_eq(SSL_write(cl.ssl, "data", 4), 4);
	{
		char buf[256];
		int len = BIO_read(cl.wb, buf, sizeof(buf));
		size_t used = 0, got = 0;
		char plainbuf[64];

		ck_assert_int_gt(len, 10);
		buf[len - 3] ^= 0x20;
		ck_assert_int_eq(
		    hm_tls_conn_recv(c, buf, (size_t)len, &used, plainbuf, sizeof(plainbuf), &got),
		    -EPROTO);
		ck_assert_uint_eq(got, 0);
	}
	n = hm_tls_conn_out(c, &p); /* the alert, then nothing more */
	ck_assert_uint_gt(n, 0);
	hm_tls_conn_out_done(c, n);
	ck_assert_int_eq(hm_tls_conn_send(c, "x", 1), -EPROTO);
	hm_tls_conn_free(c);
	client_fini(&cl);
	/* the fast path's ticket on an engine without it: a full handshake */
	c = resumed_conn(&e, &cl, NULL, NULL, NULL, 0);
	hm_tls_conn_free(c);
	client_fini(&cl);
	ck_assert(!resume_last(&plain, TLS1_3_VERSION));
	engine_fini(&e);
	engine_fini(&plain);
	hm_certstore_writer_close(w);
}
END_TEST

/* A hello the fast path reads but declines (its ticket is under a key the cluster dropped)
 * goes to libssl, which uses the certificate the fast path chose: one cache look-up counted
 * per handshake, not two. */
START_TEST(fast_path_declined_counts_once)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	const struct hm_tls_stats *st;
	uint64_t hits, misses, full, fast;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, &(struct hm_tls_config){.num_tickets = -1});
	st = hm_tls_ctx_stats(e.t);
	ck_assert(resumes(&e, &e, TLS1_3_VERSION)); /* full, then on the fast path */
	ck_assert_uint_eq(st->fast, 1);
	ck_assert_uint_eq(st->cache_misses, 1);
	ck_assert_uint_eq(st->cache_hits, 1);
	set_keys(w, "L"); /* K gone: the ticket no longer opens */
	hits = st->cache_hits, misses = st->cache_misses, full = st->full, fast = st->fast;
	ck_assert(!resume_last(&e, TLS1_3_VERSION));
	ck_assert_uint_eq(st->full, full + 1);
	ck_assert_uint_eq(st->fast, fast);
	ck_assert_uint_eq(st->cache_hits, hits + 1);
	ck_assert_uint_eq(st->cache_misses, misses);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* Hostile bytes on the fast path: a record header announcing 64 KiB (more than a record may
 * hold) refused with record_overflow and nothing read past the buffer; an alert in the clear
 * in pieces before the client's Finished is a failure (peer_alert); after close_notify every
 * later call says closed and delivers nothing. */
START_TEST(fast_path_hostile_bytes)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	static uint8_t big[40000];
	uint8_t plainbuf[2048];
	size_t used, got;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, NULL);
	memset(big, 0x41, sizeof(big));
	big[0] = 0x17;
	big[1] = big[2] = 3;
	big[3] = big[4] = 0xff;
	for (size_t first = 1; first <= 5; first += 4) {
		c = resumed_conn(&e, &cl, NULL, NULL, NULL, 0);
		ck_assert(hm_tls_conn_fast(c));
		/* one byte first (gathered), then the rest in one call; or the header whole:
		 * refused as soon as the header is read */
		if (first < 5) {
			ck_assert_int_eq(hm_tls_conn_recv(c, big, first, &used, plainbuf,
							  sizeof(plainbuf), &got),
					 0);
			ck_assert_uint_eq(used, first);
		}
		ck_assert_int_eq(hm_tls_conn_recv(c, big + (first < 5 ? first : 0),
						  sizeof(big) - (first < 5 ? first : 0), &used,
						  plainbuf, sizeof(plainbuf), &got),
				 -EPROTO);
		ck_assert_uint_eq(got, 0);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	/* an alert before the client's Finished, split 3 + 4 */
	{
		static const uint8_t alert[] = {0x15, 3, 3, 0, 2, 2, 40};
		char buf[4096];
		int n;

		SSL_SESSION_free(last_session);
		last_session = NULL;
		ck_assert(resumes(&e, &e, TLS1_3_VERSION)); /* leaves a session to resume */
		ck_assert_ptr_nonnull(last_session);
		client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
		ck_assert_int_eq(SSL_set_session(cl.ssl, last_session), 1);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(SSL_do_handshake(cl.ssl), -1);
		n = BIO_read(cl.wb, buf, sizeof(buf));
		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(hm_tls_conn_recv(c, buf, (size_t)n, &used, NULL, 0, &got), 0);
		ck_assert(hm_tls_conn_fast(c));
		ck_assert(!hm_tls_conn_established(c));
		ck_assert_int_eq(hm_tls_conn_recv(c, alert, 3, &used, NULL, 0, &got), 0);
		ck_assert_int_eq(hm_tls_conn_recv(c, alert + 3, 4, &used, NULL, 0, &got), -EPROTO);
		ck_assert_uint_eq(hm_tls_conn_fail(c), HM_TLS_FAIL_PEER_ALERT);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	/* close_notify, then more records: closed, nothing delivered */
	c = resumed_conn(&e, &cl, NULL, NULL, NULL, 0);
	ck_assert_int_eq(SSL_shutdown(cl.ssl), 0);
	ck_assert_int_eq(to_server(&cl, c, 65536, NULL, NULL, 0), HM_TLS_CLOSED);
	ck_assert_int_eq(hm_tls_conn_recv(c, big, 10, &used, plainbuf, sizeof(plainbuf), &got),
			 HM_TLS_CLOSED);
	ck_assert_uint_eq(got, 0);
	hm_tls_conn_free(c);
	client_fini(&cl);
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* A resuming hello that arrives a byte at a time: gathered, then taken by the fast path; one the
 * fast path declines (ChaCha20 only), also a byte at a time: given to libssl whole, which
 * resumes it. */
START_TEST(fast_path_hello_in_pieces)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, NULL);
	for (int chacha = 0; chacha < 2; chacha++) {
		char buf[4096];
		size_t used, got;
		int n;

		/* a full handshake: libssl's ticket (the fast path's own would be unknown to
		 * libssl) */
		SSL_SESSION_free(last_session);
		last_session = NULL;
		client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(handshake(&cl, c), 0);
		hm_tls_conn_free(c);
		client_fini(&cl);
		ck_assert_ptr_nonnull(last_session);
		client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
		if (chacha)
			ck_assert_int_eq(
			    SSL_set_ciphersuites(cl.ssl, "TLS_CHACHA20_POLY1305_SHA256"), 1);
		ck_assert_int_eq(SSL_set_session(cl.ssl, last_session), 1);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(SSL_do_handshake(cl.ssl), -1);
		n = BIO_read(cl.wb, buf, sizeof(buf));
		ck_assert_int_gt(n, 100);
		for (int i = 0; i < n; i++) {
			ck_assert_int_eq(hm_tls_conn_recv(c, buf + i, 1, &used, NULL, 0, &got), 0);
			ck_assert_uint_eq(used, 1);
		}
		ck_assert_int_eq(hm_tls_conn_fast(c), !chacha);
		ck_assert_int_eq(handshake(&cl, c), 0);
		ck_assert(hm_tls_conn_resumed(c));
		ck_assert_int_eq(SSL_session_reused(cl.ssl), 1);
		ck_assert_int_eq(SSL_write(cl.ssl, "ping", 4), 4);
		got = 0;
		ck_assert_int_eq(to_server(&cl, c, 1, buf, &got, sizeof(buf)), 0);
		ck_assert_uint_eq(got, 4);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

/* The handshake until the engine's side is established, leaving what that last step wrote in
 * the engine's output. */
static int handshake_to_established(struct client *cl, struct hm_tls_conn *c)
{
	for (int round = 0; round < 20; round++) {
		int r = SSL_do_handshake(cl->ssl), rc;

		ck_assert(r == 1 || SSL_get_error(cl->ssl, r) == SSL_ERROR_WANT_READ);
		if ((rc = to_server(cl, c, 65536, NULL, NULL, 0)) < 0)
			return rc;
		if (hm_tls_conn_established(c))
			return 0;
		to_client(cl, c);
	}
	return -ETIMEDOUT;
}

/* The client reads what the engine wrote: expects `want` (NULL: close_notify). */
static void client_reads(struct client *cl, struct hm_tls_conn *c, const char *want)
{
	char got[64];
	int r;

	to_client(cl, c);
	ck_assert_int_eq(SSL_do_handshake(cl->ssl), 1); /* TLS 1.2: the server's Finished */
	r = SSL_read(cl->ssl, got, sizeof(got));
	if (want == NULL) {
		ck_assert_int_eq(r, 0);
		ck_assert_int_eq(SSL_get_error(cl->ssl, r), SSL_ERROR_ZERO_RETURN);
		return;
	}
	ck_assert_int_eq(r, (int)strlen(want));
	ck_assert_mem_eq(got, want, strlen(want));
}

/* What a TLS 1.3 handshake leaves once it completed, on libssl's path (a full handshake) and on
 * the fast path (a resumption), is the session ticket, and it may wait for the next write
 * (hm_tls_conn_out_lazy): that write, or the close_notify, carries it and the client gets its
 * ticket from it. A TLS 1.2 server's last flight, which the client waits for, is not lazy;
 * neither is the output once anything else joined the ticket. */
START_TEST(what_a_handshake_leaves_may_wait)
{
	struct hm_certstore_writer *w = store(path);
	struct engine e;
	struct client cl;
	struct hm_tls_conn *c;
	const uint8_t *p;
	SSL_SESSION *s;

	put_cert(w, "a.example.com", "a", "DNS:a.example.com", "ec256");
	set_keys(w, "K");
	engine_init(&e, path, NULL);
	ck_assert(hm_tls_conn_new(&c, e.t) == 0 && hm_tls_conn_out_lazy(c)); /* no output */

	/* TLS 1.2: the server's tickets, ChangeCipherSpec and Finished go now. */
	client_init(&cl, TLS1_2_VERSION, TLS1_2_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(handshake_to_established(&cl, c), 0);
	ck_assert_uint_gt(hm_tls_conn_out(c, &p), 0);
	ck_assert(!hm_tls_conn_out_lazy(c));
	ck_assert_int_eq(hm_tls_conn_send(c, "one", 3), 3);
	client_reads(&cl, c, "one");
	hm_tls_conn_free(c);
	client_fini(&cl);

	/* TLS 1.3, a full handshake: the ticket waits; the first write carries it. */
	SSL_SESSION_free(last_session);
	last_session = NULL;
	client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
	ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
	ck_assert_int_eq(handshake_to_established(&cl, c), 0);
	ck_assert(!hm_tls_conn_fast(c));
	ck_assert_uint_gt(hm_tls_conn_out(c, &p), 0);
	ck_assert(hm_tls_conn_out_lazy(c));
	ck_assert_int_eq(hm_tls_conn_send(c, "two", 3), 3);
	ck_assert(!hm_tls_conn_out_lazy(c));
	ck_assert_ptr_null(last_session);
	client_reads(&cl, c, "two");
	ck_assert_ptr_nonnull(last_session); /* the ticket came with the answer */
	ck_assert(hm_tls_conn_out_lazy(c));  /* all written */
	hm_tls_conn_free(c);
	client_fini(&cl);

	/* TLS 1.3 resumed on the fast path: the same; a close_notify carries it as well. */
	for (int close = 0; close < 2; close++) {
		s = last_session;
		last_session = NULL;
		client_init(&cl, TLS1_3_VERSION, TLS1_3_VERSION, "a.example.com", NULL, 0);
		ck_assert_int_eq(SSL_set_session(cl.ssl, s), 1);
		ck_assert_int_eq(hm_tls_conn_new(&c, e.t), 0);
		ck_assert_int_eq(handshake_to_established(&cl, c), 0);
		ck_assert(hm_tls_conn_fast(c));
		ck_assert_uint_gt(hm_tls_conn_out(c, &p), 0);
		ck_assert(hm_tls_conn_out_lazy(c));
		if (close)
			ck_assert_int_eq(hm_tls_conn_close_notify(c), 0);
		else
			ck_assert_int_eq(hm_tls_conn_send(c, "three", 5), 5);
		ck_assert(!hm_tls_conn_out_lazy(c));
		client_reads(&cl, c, close ? NULL : "three");
		ck_assert_int_eq(SSL_session_reused(cl.ssl), 1);
		ck_assert_ptr_nonnull(last_session);
		ck_assert_ptr_ne(last_session, s);
		SSL_SESSION_free(s);
		hm_tls_conn_free(c);
		client_fini(&cl);
	}
	engine_fini(&e);
	hm_certstore_writer_close(w);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("tls");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, sni_selects_the_certificate);
	tcase_add_test(tc, no_certificate_is_unrecognized_name);
	tcase_add_test(tc, old_protocols_are_refused);
	tcase_add_test(tc, tls12_and_tls13_with_ecdsa_and_rsa);
	tcase_add_test(tc, data_both_ways);
	tcase_add_test(tc, resumption_on_another_node);
	tcase_add_test(tc, ticket_key_rotation);
	tcase_add_test(tc, rotation_while_a_connection_is_open);
	tcase_add_test(tc, alpn);
	tcase_add_test(tc, failures_by_reason);
	tcase_add_test(tc, a_broken_entry_is_parsed_once);
	tcase_add_test(tc, the_cache_is_bounded);
	tcase_add_test(tc, a_store_that_appears_later);
	tcase_add_test(tc, close_notify_both_ways);
	tcase_add_test(tc, a_broken_connection_stays_broken);
	tcase_add_test(tc, out_room_says_when_a_record_fits_whole);
	tcase_add_test(tc, fast_path_data_both_ways);
	tcase_add_test(tc, fast_path_key_update_and_close);
	tcase_add_test(tc, fast_path_scope);
	tcase_add_test(tc, fast_path_declined_counts_once);
	tcase_add_test(tc, fast_path_hostile_bytes);
	tcase_add_test(tc, fast_path_hello_in_pieces);
	tcase_add_test(tc, what_a_handshake_leaves_may_wait);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
