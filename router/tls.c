/*
 * The router's TLS engine (tls.h is the API, docs/tls.md section 4 the design).
 *
 * Every SSL is created from one listener SSL_CTX that has no certificate. Its client-hello
 * callback reads the SNI, picks the certificate in the node's store (one atomic load and at most
 * two hash probes), and switches the SSL to that certificate's own SSL_CTX with
 * SSL_set_SSL_CTX(). Those contexts are built from the store's PEM on first use and kept in a
 * bounded per-worker cache keyed by the entry's content id, so a certificate is parsed once per
 * worker, a rotated one (a new id) is used by the very next handshake, and a connection keeps the
 * context it started with for as long as it lives (OpenSSL holds a reference).
 *
 * Bytes move through a BIO of our own: reads come straight from the caller's receive buffer
 * (the BIO points at it for the duration of hm_tls_conn_recv), writes go into a 32 KiB output
 * buffer that the connection holds only while it has something to send.
 */
#include "router/tls.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/model.h"
#include "common/util.h"
#include "router/tls13.h"

/* Mozilla's "intermediate" suites: AEAD only, forward secret, ECDSA and RSA. */
#define CIPHERS_TLS12                                                                              \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                               \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                               \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
#define CIPHERS_TLS13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#define GROUPS	      "X25519:P-256:P-384"
/* Our protocols by ALPN, in preference order, wire format. http/1.0 last: an HTTP/1.0 client
 * that names its protocol (curl --http1.0 offers only "http/1.0") is served as on the plain
 * listener, not refused. */
#define ALPN	"\x02h2\x08http/1.1\x08http/1.0"
#define SID_CTX "hermod"

#define OUT_BUF	       (32u * 1024)
#define OUT_POOL_MAX   256 /* free output buffers a context keeps */
#define CACHE_DEFAULT  1024
#define LIFETIME_DEF_S 86400
#define FETCH_TRIES    3

static const char *const fail_names[] = {
#define HM_TLS_FAIL_LABEL(name, label) label,
    HM_TLS_FAIL_MAP(HM_TLS_FAIL_LABEL)
#undef HM_TLS_FAIL_LABEL
};

const char *hm_tls_fail_name(unsigned reason)
{
	return reason < HM_TLS_FAIL_COUNT ? fail_names[reason] : "unknown";
}

/* A parsed certificate: its SSL_CTX, or none when it could not be loaded (cached too, so that a
 * broken entry costs one parse, not one per handshake). */
struct cert {
	uint8_t id[HM_CERT_ID_LEN];
	SSL_CTX *ctx;	     /* owned; NULL: bad */
	uint32_t prev, next; /* LRU list, index + 1; head = most recent */
};

struct hm_tls_ctx {
	SSL_CTX *listener;
	struct hm_certstore_reader *store; /* borrowed */
	struct hm_tls_config cfg;
	BIO_METHOD *bio_method;
	EVP_CIPHER *ticket_cipher; /* fetched once: OpenSSL 3 would fetch it per ticket */
	unsigned char alpn[sizeof(ALPN) - 1]; /* ALPN, or its tail without h2 */
	unsigned alpn_len;
	/* Ticket keys: a private copy, refreshed when the store's version moves. */
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	int n_keys;
	const struct hm_certstore_map *keys_map;
	uint64_t keys_version;
	bool keys_read;
	/* The certificate cache: open addressing on the id, LRU eviction. */
	struct cert *certs;
	uint32_t *slots; /* cert index + 1; 0 = empty */
	uint32_t cap, n, mask, lru_head, lru_tail;
	uint8_t *scratch; /* a fetched entry's bytes on a miss */
	size_t scratch_cap;
	struct hm_tls13_ctx *fast; /* the TLS 1.3 resumption fast path (tls13.h), or NULL */
	/* Output buffers not in use. */
	uint8_t *pool[OUT_POOL_MAX];
	unsigned pooled;
	struct hm_tls_stats stats;
};

struct hm_tls_conn {
	struct hm_tls_ctx *t;
	SSL *ssl;
	const uint8_t *in; /* the caller's ciphertext, during hm_tls_conn_recv() */
	size_t in_len;
	uint8_t *out; /* OUT_BUF bytes from the pool, or NULL */
	uint32_t out_start, out_end;
	uint64_t out_total; /* bytes ever appended to the output */
	uint64_t lazy_to;   /* out_total when all of the output was lazy (hm_tls_conn_out_lazy) */
	uint8_t fail;	    /* enum hm_tls_fail, once */
	uint8_t match;	    /* enum hm_cert_kind */
	bool established, resumed;
	bool broken;	  /* a fatal error: the connection is good for nothing but closing */
	bool decided;	  /* the fast path has seen the client hello (and taken it or not) */
	bool peer_closed; /* the fast path's peer sent close_notify */
	/* The fast path's connection (NULL: libssl's), and a buffer from the pool while it holds
	 * a record arriving in pieces (fb_len bytes) or plaintext not yet delivered. */
	struct hm_tls13 *fast;
	uint8_t *fbuf;
	uint32_t fb_len, pend_off, pend_len;
	uint8_t alpn; /* enum hm_tls_alpn, on the fast path */
	/* The certificate decide() chose for a hello the fast path then declined (a reference), or
	 * why there is none (pick_reason): libssl's callback takes that choice instead of making,
	 * and counting, it a second time. Neither set: no choice made. */
	uint8_t pick_reason;
	SSL_CTX *pick;
	char sni[HM_HOST_MAX + 1];
};

/* ---- Output buffers -------------------------------------------------------------------------- */

static uint8_t *buf_get(struct hm_tls_ctx *t)
{
	return t->pooled > 0 ? t->pool[--t->pooled] : malloc(OUT_BUF);
}

static void buf_put(struct hm_tls_ctx *t, uint8_t *b)
{
	if (t->pooled < OUT_POOL_MAX)
		t->pool[t->pooled++] = b;
	else
		free(b);
}

static void set_fail(struct hm_tls_conn *c, unsigned reason);

/* ---- The BIO --------------------------------------------------------------------------------- */

static int bio_write(BIO *b, const char *data, int n)
{
	struct hm_tls_conn *c = BIO_get_data(b);
	uint32_t room;

	BIO_clear_retry_flags(b);
	if (c->out == NULL && (c->out = buf_get(c->t)) == NULL) {
		set_fail(c, HM_TLS_FAIL_INTERNAL);
		return -1;
	}
	room = OUT_BUF - c->out_end;
	if (room == 0) {
		/* Full: OpenSSL keeps the rest of its record and writes it when called again. */
		BIO_set_retry_write(b);
		return -1;
	}
	if ((uint32_t)n > room)
		n = (int)room;
	memcpy(c->out + c->out_end, data, (size_t)n);
	c->out_end += (uint32_t)n;
	c->out_total += (uint64_t)n;
	return n;
}

static int bio_read(BIO *b, char *buf, int n)
{
	struct hm_tls_conn *c = BIO_get_data(b);

	BIO_clear_retry_flags(b);
	if (c->in_len == 0) {
		BIO_set_retry_read(b);
		return -1;
	}
	if ((size_t)n > c->in_len)
		n = (int)c->in_len;
	memcpy(buf, c->in, (size_t)n);
	c->in += n;
	c->in_len -= (size_t)n;
	return n;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	(void)b;
	(void)num;
	(void)ptr;
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

/* ---- Failures -------------------------------------------------------------------------------- */

static void set_fail(struct hm_tls_conn *c, unsigned reason)
{
	if (c->fail != HM_TLS_FAIL_NONE || c->established)
		return;
	c->fail = (uint8_t)reason;
	c->t->stats.fail[reason]++;
}

/* Names the failure OpenSSL reported (a callback may have named it first). */
static unsigned classify(struct hm_tls_conn *c, int ssl_error)
{
	unsigned long e = ERR_peek_last_error();
	int reason = ERR_GET_REASON(e);
	unsigned r = HM_TLS_FAIL_BAD_MESSAGE;

	if (c->fail != HM_TLS_FAIL_NONE)
		r = c->fail;
	else if (ssl_error == SSL_ERROR_SYSCALL || e == 0)
		r = HM_TLS_FAIL_EOF;
	else if (ERR_GET_LIB(e) != ERR_LIB_SSL || (reason & ERR_RFLAG_FATAL))
		r = HM_TLS_FAIL_INTERNAL; /* malloc failures, internal errors, other libraries */
	else if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256)
		r = HM_TLS_FAIL_PEER_ALERT; /* SSL_R_SSLV3_ALERT_* and SSL_R_TLSV1_ALERT_* */
	else
		switch (reason) {
		case SSL_R_UNSUPPORTED_PROTOCOL:
		case SSL_R_VERSION_TOO_LOW:
			r = HM_TLS_FAIL_PROTOCOL_VERSION;
			break;
		case SSL_R_NO_SHARED_CIPHER:
		case SSL_R_NO_SHARED_GROUPS:
		case SSL_R_NO_SUITABLE_KEY_SHARE:
			r = HM_TLS_FAIL_NO_SHARED_CIPHER;
			break;
		case SSL_R_HTTP_REQUEST:
		case SSL_R_HTTPS_PROXY_REQUEST:
			r = HM_TLS_FAIL_HTTP_REQUEST;
			break;
		case SSL_R_NO_APPLICATION_PROTOCOL:
			r = HM_TLS_FAIL_NO_ALPN;
			break;
		case SSL_R_UNEXPECTED_EOF_WHILE_READING:
			r = HM_TLS_FAIL_EOF;
			break;
		default:
			break;
		}
	ERR_clear_error();
	set_fail(c, r);
	return r;
}

/* ---- The certificate cache ------------------------------------------------------------------- */

static uint32_t id_hash(const uint8_t *id)
{
	uint32_t h;

	memcpy(&h, id, sizeof(h)); /* a SHA-256: already uniform */
	return h;
}

static int64_t cache_find(const struct hm_tls_ctx *t, const uint8_t *id)
{
	for (uint32_t i = id_hash(id) & t->mask;; i = (i + 1) & t->mask) {
		uint32_t s = t->slots[i];

		if (s == 0)
			return -1;
		if (memcmp(t->certs[s - 1].id, id, HM_CERT_ID_LEN) == 0)
			return i;
	}
}

static void lru_unlink(struct hm_tls_ctx *t, uint32_t i)
{
	struct cert *e = &t->certs[i];

	if (e->prev != 0)
		t->certs[e->prev - 1].next = e->next;
	else
		t->lru_head = e->next;
	if (e->next != 0)
		t->certs[e->next - 1].prev = e->prev;
	else
		t->lru_tail = e->prev;
	e->prev = e->next = 0;
}

static void lru_push(struct hm_tls_ctx *t, uint32_t i)
{
	struct cert *e = &t->certs[i];

	e->prev = 0;
	e->next = t->lru_head;
	if (t->lru_head != 0)
		t->certs[t->lru_head - 1].prev = i + 1;
	t->lru_head = i + 1;
	if (t->lru_tail == 0)
		t->lru_tail = i + 1;
}

/* Deletes slot pos by backward shift (no tombstones: probes never lengthen). */
static void slot_delete(struct hm_tls_ctx *t, uint32_t pos)
{
	uint32_t i = pos, j = pos;

	for (;;) {
		j = (j + 1) & t->mask;
		if (t->slots[j] == 0)
			break;
		uint32_t home = id_hash(t->certs[t->slots[j] - 1].id) & t->mask;

		if (((j - home) & t->mask) >= ((j - i) & t->mask)) {
			t->slots[i] = t->slots[j];
			i = j;
		}
	}
	t->slots[i] = 0;
}

/* Evicts the least recently used certificate; returns its index, now free. */
static uint32_t cache_evict(struct hm_tls_ctx *t)
{
	uint32_t i = t->lru_tail - 1;
	struct cert *e = &t->certs[i];

	slot_delete(t, (uint32_t)cache_find(t, e->id));
	lru_unlink(t, i);
	SSL_CTX_free(e->ctx); /* connections using it keep their own reference */
	e->ctx = NULL;
	t->stats.cache_evictions++;
	return i;
}

static void cache_insert(struct hm_tls_ctx *t, const uint8_t *id, SSL_CTX *ctx)
{
	uint32_t i, pos;

	if (t->n < t->cap)
		i = t->n++;
	else
		i = cache_evict(t);
	memcpy(t->certs[i].id, id, HM_CERT_ID_LEN);
	t->certs[i].ctx = ctx;
	for (pos = id_hash(id) & t->mask; t->slots[pos] != 0; pos = (pos + 1) & t->mask)
		;
	t->slots[pos] = i + 1;
	lru_push(t, i);
	t->stats.cached = t->n;
}

/* ---- Contexts -------------------------------------------------------------------------------- */

static int on_alpn(SSL *s, const unsigned char **out, unsigned char *outlen,
		   const unsigned char *in, unsigned inlen, void *arg)
{
	struct hm_tls_ctx *t = arg;
	struct hm_tls_conn *c = BIO_get_data(SSL_get_rbio(s));

	if (SSL_select_next_proto((unsigned char **)out, outlen, t->alpn, t->alpn_len, in, inlen) ==
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_OK;
	set_fail(c, HM_TLS_FAIL_NO_ALPN);
	return SSL_TLSEXT_ERR_ALERT_FATAL; /* no_application_protocol (RFC 7301, 3.2) */
}

static int on_ticket(SSL *s, unsigned char key_name[16], unsigned char *iv, EVP_CIPHER_CTX *cctx,
		     EVP_MAC_CTX *hctx, int enc)
{
	struct hm_tls_conn *c = BIO_get_data(SSL_get_rbio(s));
	struct hm_tls_ctx *t = c->t;
	OSSL_PARAM params[2] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};
	const struct hm_ticket_key *k = NULL;
	int i;

	if (enc) {
		if (t->n_keys == 0)
			return 0; /* no keys: no ticket */
		k = &t->keys[0];
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(t->ticket_cipher)) != 1)
			return -1;
		memcpy(key_name, k->name, sizeof(k->name));
		if (EVP_EncryptInit_ex(cctx, t->ticket_cipher, NULL, k->aes_key, iv) != 1 ||
		    EVP_MAC_init(hctx, k->hmac_key, sizeof(k->hmac_key), params) != 1)
			return -1;
		t->stats.tickets_issued++;
		return 1;
	}
	for (i = 0; i < t->n_keys && k == NULL; i++)
		if (memcmp(t->keys[i].name, key_name, sizeof(t->keys[i].name)) == 0)
			k = &t->keys[i];
	if (k == NULL)
		return 0; /* a key rotated out, or another cluster's: a full handshake */
	if (EVP_MAC_init(hctx, k->hmac_key, sizeof(k->hmac_key), params) != 1 ||
	    EVP_DecryptInit_ex(cctx, t->ticket_cipher, NULL, k->aes_key, iv) != 1)
		return -1;
	if (k != &t->keys[0]) {
		t->stats.tickets_renewed++;
		return 2; /* accept, and issue a ticket under the current key */
	}
	/* TLS 1.3 clients use a ticket once (RFC 8446, C.4; OpenSSL's client marks a used session
	 * not resumable): without a new one their next connection would be a full handshake. */
	return SSL_version(s) == TLS1_3_VERSION ? 2 : 1;
}

/* What every context (the listener's and each certificate's) shares. */
static int configure(struct hm_tls_ctx *t, SSL_CTX *ctx)
{
	long mode = SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
		    SSL_MODE_NO_AUTO_CHAIN;

	if (!t->cfg.keep_buffers)
		mode |= SSL_MODE_RELEASE_BUFFERS;
	SSL_CTX_set_mode(ctx, mode);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_PRIORITIZE_CHACHA);
	/* Tickets only: resumption is stateless, so any worker of any node can resume. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_timeout(ctx, (long)t->cfg.ticket_lifetime_s);
	SSL_CTX_set_num_tickets(ctx, (size_t)t->cfg.num_tickets);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx, on_alpn, t);
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, CIPHERS_TLS13) != 1 ||
	    SSL_CTX_set1_groups_list(ctx, GROUPS) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX,
					   sizeof(SID_CTX) - 1) != 1 ||
	    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, on_ticket) != 1)
		return -EPROTO;
	return 0;
}

/* A certificate's context from its PEM chain and key, or NULL. */
static SSL_CTX *cert_ctx_new(struct hm_tls_ctx *t, const struct hm_cert_bytes *b)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	BIO *cb = NULL, *kb = NULL;
	EVP_PKEY *key = NULL;
	X509 *x = NULL;
	bool ok = false;

	if (ctx == NULL || configure(t, ctx) != 0)
		goto out;
	cb = BIO_new_mem_buf(b->cert, (int)b->cert_len);
	kb = BIO_new_mem_buf(b->key, (int)b->key_len);
	if (cb == NULL || kb == NULL || (x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_certificate(ctx, x) != 1)
		goto out;
	X509_free(x);
	while ((x = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
		if (SSL_CTX_add0_chain_cert(ctx, x) != 1)
			goto out;
		x = NULL; /* owned by ctx now */
	}
	if ((key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL)) == NULL ||
	    SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1)
		goto out;
	ok = true;
out:
	X509_free(x);
	EVP_PKEY_free(key);
	BIO_free(cb);
	BIO_free(kb);
	ERR_clear_error();
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/* The ticket keys of the store's current version, read only when that version changed. */
static void refresh_keys(struct hm_tls_ctx *t, struct hm_certstore_map *m)
{
	uint64_t v = hm_certstore_map_version(m), gen;
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	int n;

	if (t->keys_read && m == t->keys_map && v == t->keys_version)
		return;
	if ((n = hm_certstore_ticket_keys(m, keys, &gen)) < 0)
		return; /* the writer is busy: keep the keys we have */
	memcpy(t->keys, keys, sizeof(keys));
	t->n_keys = n;
	if (t->fast != NULL)
		hm_tls13_ctx_set_keys(t->fast, keys, n);
	OPENSSL_cleanse(keys, sizeof(keys));
	t->keys_map = m;
	t->keys_version = v;
	t->keys_read = true;
}

/*
 * The context for a server name: the store's choice, from the cache or built now. Returns the
 * context, or NULL with *reason set (unrecognized_name, certificate).
 */
static SSL_CTX *select_ctx(struct hm_tls_ctx *t, struct hm_certstore_map *m, const char *key,
			   size_t kn, uint8_t *match, unsigned *reason)
{
	struct hm_cert_ref ref;
	struct hm_cert_bytes b;
	int64_t pos;
	SSL_CTX *ctx;
	int e = -ESTALE;

	for (int tries = 0; tries < FETCH_TRIES && e == -ESTALE; tries++) {
		if (hm_certstore_lookup(m, key, kn, &ref) != 0) {
			*reason = HM_TLS_FAIL_UNRECOGNIZED_NAME;
			return NULL;
		}
		*match = ref.match;
		if ((pos = cache_find(t, ref.id)) >= 0) {
			uint32_t i = t->slots[pos] - 1;

			lru_unlink(t, i);
			lru_push(t, i);
			t->stats.cache_hits++;
			*reason = HM_TLS_FAIL_CERTIFICATE;
			return t->certs[i].ctx;
		}
		if (t->scratch_cap < (size_t)ref.cert_len + ref.key_len) {
			size_t cap = (size_t)ref.cert_len + ref.key_len;
			uint8_t *p = realloc(t->scratch, cap);

			if (p == NULL) {
				*reason = HM_TLS_FAIL_INTERNAL;
				return NULL;
			}
			t->scratch = p;
			t->scratch_cap = cap;
		}
		/* -ESTALE: replaced between lookup and fetch; look it up again. */
		e = hm_certstore_fetch(m, &ref, t->scratch, t->scratch_cap, &b);
	}
	t->stats.cache_misses++;
	*reason = HM_TLS_FAIL_CERTIFICATE;
	if (e == -EUCLEAN) {
		cache_insert(t, ref.id, NULL); /* damaged in the file: the same id stays damaged */
		t->stats.cache_bad++;
		return NULL;
	}
	if (e != 0)
		return NULL;
	ctx = cert_ctx_new(t, &b);
	OPENSSL_cleanse(t->scratch + b.cert_len, b.key_len);
	if (ctx == NULL)
		t->stats.cache_bad++;
	cache_insert(t, ref.id, ctx);
	return ctx;
}

/* Reads the first host_name of a server_name extension (RFC 6066, 3) as a lookup key. Returns
 * its length (0: none usable), or -1 if the extension is malformed. */
static int parse_sni(const unsigned char *p, size_t len, char *key)
{
	size_t list, i = 2;

	if (len < 2 || (list = ((size_t)p[0] << 8) | p[1]) != len - 2)
		return -1;
	while (i + 3 <= len) {
		unsigned type = p[i];
		size_t n = ((size_t)p[i + 1] << 8) | p[i + 2];

		if (i + 3 + n > len)
			return -1;
		if (type == TLSEXT_NAMETYPE_host_name) {
			int k = hm_host_key((const char *)p + i + 3, n, key);

			/* Bytes no host name has: as if there were no SNI (default). */
			return k > 0 ? k : 0;
		}
		i += 3 + n;
	}
	return i == len ? 0 : -1;
}

static int on_client_hello(SSL *s, int *al, void *arg)
{
	struct hm_tls_ctx *t = arg;
	struct hm_tls_conn *c = BIO_get_data(SSL_get_rbio(s));
	struct hm_certstore_map *m = hm_certstore_reader_map(t->store);
	const unsigned char *ext;
	size_t len;
	unsigned reason = HM_TLS_FAIL_UNRECOGNIZED_NAME;
	SSL_CTX *ctx = NULL;
	int kn = 0;

	if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &ext, &len) == 1 &&
	    (kn = parse_sni(ext, len, c->sni)) < 0) {
		c->sni[0] = '\0';
		set_fail(c, HM_TLS_FAIL_BAD_MESSAGE);
		*al = SSL_AD_DECODE_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	c->sni[kn] = '\0';
	if (c->pick != NULL || c->pick_reason != 0) {
		/* decide()'s choice for these same bytes (a second hello, after a retry
		 * request, chooses again) */
		ctx = c->pick;
		reason = c->pick_reason;
		c->pick_reason = 0;
	} else if (m != NULL) {
		refresh_keys(t, m);
		ctx = select_ctx(t, m, c->sni, (size_t)kn, &c->match, &reason);
	}
	if (ctx == NULL) {
		set_fail(c, reason);
		*al = reason == HM_TLS_FAIL_UNRECOGNIZED_NAME ? SSL_AD_UNRECOGNIZED_NAME
							      : SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	ctx = SSL_set_SSL_CTX(s, ctx); /* its own reference */
	SSL_CTX_free(c->pick);
	c->pick = NULL;
	if (ctx == NULL) {
		set_fail(c, HM_TLS_FAIL_INTERNAL);
		*al = SSL_AD_INTERNAL_ERROR;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

int hm_tls_ctx_new(struct hm_tls_ctx **out, struct hm_certstore_reader *store,
		   const struct hm_tls_config *cfg)
{
	struct hm_tls_ctx *t = calloc(1, sizeof(*t));
	uint32_t slots = 16;
	int e = -ENOMEM;

	if (t == NULL)
		return -ENOMEM;
	t->store = store;
	if (cfg != NULL)
		t->cfg = *cfg;
	if (t->cfg.cache_max == 0)
		t->cfg.cache_max = CACHE_DEFAULT;
	if (t->cfg.ticket_lifetime_s == 0)
		t->cfg.ticket_lifetime_s = LIFETIME_DEF_S;
	if (cfg == NULL || t->cfg.num_tickets < 0)
		t->cfg.num_tickets = 1;
	/* Without h2, the list less its first entry. */
	t->alpn_len = (unsigned)sizeof(ALPN) - 1 - (t->cfg.h2 ? 0 : 3);
	memcpy(t->alpn, &ALPN[t->cfg.h2 ? 0 : 3], t->alpn_len);
	t->cap = t->cfg.cache_max;
	while (slots < 2 * (uint64_t)t->cap)
		slots *= 2;
	t->mask = slots - 1;
	t->certs = calloc(t->cap, sizeof(*t->certs));
	t->slots = calloc(slots, sizeof(*t->slots));
	t->ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	t->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "hermod-tls");
	t->listener = SSL_CTX_new(TLS_server_method());
	if (t->certs == NULL || t->slots == NULL || t->ticket_cipher == NULL ||
	    t->bio_method == NULL || t->listener == NULL)
		goto fail;
	if (BIO_meth_set_write(t->bio_method, bio_write) != 1 ||
	    BIO_meth_set_read(t->bio_method, bio_read) != 1 ||
	    BIO_meth_set_ctrl(t->bio_method, bio_ctrl) != 1 ||
	    BIO_meth_set_create(t->bio_method, bio_create) != 1)
		goto fail;
	if ((e = configure(t, t->listener)) != 0)
		goto fail;
	if (!t->cfg.no_fast13 && (e = hm_tls13_ctx_new(&t->fast, t->cfg.ticket_lifetime_s,
						       t->cfg.num_tickets != 0)) != 0)
		goto fail;
	SSL_CTX_set_client_hello_cb(t->listener, on_client_hello, t);
	ERR_clear_error();
	*out = t;
	return 0;
fail:
	ERR_clear_error();
	hm_tls_ctx_free(t);
	return e;
}

void hm_tls_ctx_free(struct hm_tls_ctx *t)
{
	if (t == NULL)
		return;
	for (uint32_t i = 0; i < t->n; i++)
		SSL_CTX_free(t->certs[i].ctx);
	for (unsigned i = 0; i < t->pooled; i++)
		free(t->pool[i]);
	SSL_CTX_free(t->listener);
	hm_tls13_ctx_free(t->fast);
	BIO_meth_free(t->bio_method);
	EVP_CIPHER_free(t->ticket_cipher);
	if (t->scratch != NULL)
		OPENSSL_cleanse(t->scratch, t->scratch_cap);
	OPENSSL_cleanse(t->keys, sizeof(t->keys));
	free(t->scratch);
	free(t->certs);
	free(t->slots);
	free(t);
}

const struct hm_tls_stats *hm_tls_ctx_stats(const struct hm_tls_ctx *t)
{
	return &t->stats;
}

/* ---- Connections ----------------------------------------------------------------------------- */

int hm_tls_conn_new(struct hm_tls_conn **out, struct hm_tls_ctx *t)
{
	struct hm_tls_conn *c = calloc(1, sizeof(*c));
	BIO *bio;

	if (c == NULL)
		return -ENOMEM;
	c->t = t;
	c->ssl = SSL_new(t->listener);
	bio = BIO_new(t->bio_method);
	if (c->ssl == NULL || bio == NULL) {
		BIO_free(bio);
		SSL_free(c->ssl);
		free(c);
		ERR_clear_error();
		return -ENOMEM;
	}
	BIO_set_data(bio, c);
	SSL_set_bio(c->ssl, bio, bio); /* one reference, for both directions */
	SSL_set_accept_state(c->ssl);
	*out = c;
	return 0;
}

void hm_tls_conn_free(struct hm_tls_conn *c)
{
	if (c == NULL)
		return;
	SSL_free(c->ssl);
	SSL_CTX_free(c->pick);
	hm_tls13_free(c->fast);
	if (c->out != NULL)
		buf_put(c->t, c->out);
	if (c->fbuf != NULL)
		buf_put(c->t, c->fbuf);
	free(c);
}

/* Completes the handshake if it can. 0 (done or waiting for bytes) or -EPROTO. */
static int handshake(struct hm_tls_conn *c)
{
	bool lazy = hm_tls_conn_out_lazy(c);
	int r = SSL_do_handshake(c->ssl), err;

	if (r == 1) {
		/* A TLS 1.3 server's handshake ends on the client's Finished: what that step wrote
		 * is the session tickets, which can go with the first response. */
		if (lazy && SSL_version(c->ssl) == TLS1_3_VERSION)
			c->lazy_to = c->out_total;
		c->established = true;
		c->resumed = SSL_session_reused(c->ssl) == 1;
		if (c->resumed)
			c->t->stats.resumed++;
		else
			c->t->stats.full++;
		return 0;
	}
	err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
		return 0;
	classify(c, err);
	c->broken = true;
	return -EPROTO;
}

/* The protocol an agreed ALPN name (n bytes at p; n 0: none) means, on either path. */
static unsigned alpn_kind(const unsigned char *p, unsigned n)
{
	if (n == 2 && memcmp(p, "h2", 2) == 0)
		return HM_TLS_ALPN_H2;
	if (n == 8 && (memcmp(p, "http/1.1", 8) == 0 || memcmp(p, "http/1.0", 8) == 0))
		return HM_TLS_ALPN_HTTP11; /* HTTP/1.x: the request line says which */
	return HM_TLS_ALPN_NONE;
}

/* ---- The TLS 1.3 resumption fast path (tls13.h) --------------------------------------------- */

static size_t rec_len(const uint8_t *p)
{
	return HM_TLS13_REC_HDR + ((size_t)p[3] << 8 | p[4]);
}

_Static_assert(HM_TLS13_REC_HDR + HM_TLS13_REC_MAX <= OUT_BUF, "a record fits a pool buffer");

/* Whether a record header announces more than a record may carry (RFC 8446 5.2). */
static bool rec_too_long(const uint8_t *p)
{
	return rec_len(p) > HM_TLS13_REC_HDR + HM_TLS13_REC_MAX;
}

/* Gathers a record arriving in pieces in c->fbuf. Returns how many bytes of in it took; the
 * record is complete when c->fb_len == rec_len(c->fbuf). A header that announces too long a
 * record stops it after the header (the caller refuses it). -1: out of memory. */
static ssize_t gather(struct hm_tls_conn *c, const uint8_t *in, size_t n)
{
	size_t take = 0, want;

	if (c->fbuf == NULL && (c->fbuf = buf_get(c->t)) == NULL)
		return -1;
	while (take < n) {
		want = c->fb_len < HM_TLS13_REC_HDR ? HM_TLS13_REC_HDR : rec_len(c->fbuf);
		if (c->fb_len >= HM_TLS13_REC_HDR && rec_too_long(c->fbuf))
			break;
		if (c->fb_len == want)
			break;
		want = HM_MIN(want - c->fb_len, n - take);
		memcpy(c->fbuf + c->fb_len, in + take, want);
		c->fb_len += (uint32_t)want;
		take += want;
	}
	return (ssize_t)take;
}

static void fbuf_release(struct hm_tls_conn *c)
{
	if (c->fbuf != NULL && c->fb_len == 0 && c->pend_len == 0) {
		buf_put(c->t, c->fbuf);
		c->fbuf = NULL;
	}
}

/* Appends what the fast path owes the peer (a KeyUpdate, its ticket) to the output, leaving
 * `keep` bytes of room; what does not fit waits for the next call. It is lazy output
 * (hm_tls_conn_out_lazy) if all before it was. */
static int fast_owed(struct hm_tls_conn *c, size_t keep)
{
	bool lazy = hm_tls_conn_out_lazy(c);
	size_t room;
	int n;

	if (c->out == NULL && (c->out = buf_get(c->t)) == NULL)
		return -ENOMEM;
	room = OUT_BUF - c->out_end;
	n = hm_tls13_pending(c->fast, c->out + c->out_end, room > keep ? room - keep : 0);
	if (n < 0)
		return -EPROTO;
	c->out_end += (uint32_t)n;
	c->out_total += (uint64_t)n;
	if (lazy)
		c->lazy_to = c->out_total;
	return 0;
}

/* A fatal error on the fast path: the alert if it fits, and the connection is broken. */
static int fast_fail(struct hm_tls_conn *c, int alert, unsigned reason)
{
	if (c->out != NULL || (c->out = buf_get(c->t)) != NULL) {
		if (OUT_BUF - c->out_end >= HM_TLS13_SEAL_OVER + 2) {
			int n = hm_tls13_alert(c->fast, (uint8_t)alert, c->out + c->out_end);

			if (n > 0) {
				c->out_end += (uint32_t)n;
				c->out_total += (uint64_t)n;
			}
		}
	}
	set_fail(c, reason);
	c->broken = true;
	return -EPROTO;
}

/*
 * The first record of a connection: if it holds a client hello the fast path takes, the server's
 * flight goes out and the connection is the fast path's; otherwise it is libssl's, with the
 * same bytes. Returns how many bytes of in it took (0 when the hello is read from in by libssl
 * itself), or -1 on a failure of memory. c->decided says whether the decision is made.
 */
static ssize_t decide(struct hm_tls_conn *c, const uint8_t *in, size_t n)
{
	struct hm_tls_ctx *t = c->t;
	struct hm_tls13_hello h;
	struct hm_tls13_accept acc = {.alpn_pref = t->alpn, .alpn_pref_len = t->alpn_len};
	struct hm_certstore_map *m;
	const uint8_t *rec = in;
	uint8_t flight[HM_TLS13_FLIGHT_MAX];
	size_t len, fn = 0;
	ssize_t took = 0;
	unsigned reason;
	int kn = 0;

	if (n == 0)
		return 0;
	if (t->fast == NULL ||
	    (c->fb_len == 0 &&
	     (in[0] != HM_TLS13_HANDSHAKE ||
	      (n >= HM_TLS13_REC_HDR && rec_len(in) > HM_TLS13_REC_HDR + HM_TLS13_PLAIN_MAX)))) {
		c->decided = true; /* not a hello we take, or not TLS: libssl's */
		return 0;
	}
	if (c->fb_len > 0 || n < HM_TLS13_REC_HDR || n < rec_len(in)) {
		if ((took = gather(c, in, n)) < 0)
			return -1;
		if (c->fb_len >= HM_TLS13_REC_HDR &&
		    rec_len(c->fbuf) > HM_TLS13_REC_HDR + HM_TLS13_PLAIN_MAX) {
			c->decided = true; /* libssl refuses it (the header is all it was given) */
			return took;
		}
		if (c->fb_len < HM_TLS13_REC_HDR || c->fb_len < rec_len(c->fbuf))
			return took; /* the rest of the hello later */
		rec = c->fbuf;
	}
	c->decided = true;
	len = rec_len(rec);
	if (!hm_tls13_parse_hello(rec + HM_TLS13_REC_HDR, len - HM_TLS13_REC_HDR, &h) ||
	    (m = hm_certstore_reader_map(t->store)) == NULL)
		return took;
	if (h.sni != NULL && (kn = hm_host_key((const char *)h.sni, h.sni_len, c->sni)) < 0)
		kn = 0; /* bytes no host name has: as if there were no SNI (default) */
	c->sni[kn] = '\0';
	refresh_keys(t, m);
	if ((c->pick = select_ctx(t, m, c->sni, (size_t)kn, &c->match, &reason)) == NULL) {
		c->pick_reason = (uint8_t)reason;
		return took; /* libssl fails it, with the reason */
	}
	if (hm_tls13_accept(t->fast, &h, &acc, &c->fast, flight, &fn) != 1) {
		SSL_CTX_up_ref(c->pick); /* the cache may evict it before libssl's callback */
		return took;
	}
	c->pick = NULL;
	if (c->out == NULL && (c->out = buf_get(t)) == NULL)
		return -1;
	memcpy(c->out + c->out_end, flight, fn);
	c->out_end += (uint32_t)fn;
	c->out_total += fn;
	c->alpn = (uint8_t)alpn_kind(acc.alpn, acc.alpn_len);
	if (acc.old_key)
		t->stats.tickets_renewed++;
	if (rec == in)
		took = (ssize_t)len; /* read from in: taken */
	c->fb_len = 0;
	fbuf_release(c);
	return took;
}

/* hm_tls_conn_recv() on the fast path. */
static int fast_recv(struct hm_tls_conn *c, const uint8_t *in, size_t in_len, size_t *in_used,
		     uint8_t *out, size_t out_cap, size_t *out_len)
{
	size_t pos = 0;

	for (;;) {
		const uint8_t *rec;
		uint8_t *dst;
		size_t rlen, pl = 0, room = out_cap - *out_len;
		bool held;
		int r;

		if (c->pend_len > 0) {
			size_t k = HM_MIN((size_t)c->pend_len, room);

			if (k == 0)
				break;
			memcpy(out + *out_len, c->fbuf + c->pend_off, k);
			*out_len += k;
			c->pend_off += (uint32_t)k;
			c->pend_len -= (uint32_t)k;
			fbuf_release(c);
			continue;
		}
		if (c->established && room == 0)
			break; /* the handshake's call, or no room: the records stay */
		held = c->fb_len > 0 || in_len - pos < HM_TLS13_REC_HDR ||
		       in_len - pos < rec_len(in + pos);
		if (held) {
			ssize_t took;

			if (pos == in_len)
				break;
			if ((took = gather(c, in + pos, in_len - pos)) < 0) {
				*in_used = pos;
				return fast_fail(c, HM_TLS13_A_INTERNAL_ERROR,
						 HM_TLS_FAIL_INTERNAL);
			}
			pos += (size_t)took;
			if (c->fb_len >= HM_TLS13_REC_HDR && rec_too_long(c->fbuf)) {
				*in_used = pos;
				return fast_fail(c, HM_TLS13_A_RECORD_OVERFLOW,
						 HM_TLS_FAIL_BAD_MESSAGE);
			}
			if (c->fb_len < HM_TLS13_REC_HDR || c->fb_len < rec_len(c->fbuf))
				break;
			rec = c->fbuf;
		} else {
			rec = in + pos;
		}
		rlen = rec_len(rec);
		if (rec_too_long(rec)) {
			*in_used = pos;
			return fast_fail(c, HM_TLS13_A_RECORD_OVERFLOW, HM_TLS_FAIL_BAD_MESSAGE);
		}
		/* Application data straight into the caller's buffer when it has room for the
		 * whole record; otherwise into the held buffer, delivered as room allows. */
		if (c->established && room >= rlen - HM_TLS13_REC_HDR) {
			dst = out + *out_len;
		} else {
			if (!held) {
				if (c->fbuf == NULL && (c->fbuf = buf_get(c->t)) == NULL) {
					*in_used = pos;
					return fast_fail(c, HM_TLS13_A_INTERNAL_ERROR,
							 HM_TLS_FAIL_INTERNAL);
				}
				memcpy(c->fbuf, rec, rlen);
				rec = c->fbuf;
			}
			dst = c->fbuf + HM_TLS13_REC_HDR;
		}
		r = hm_tls13_open(c->fast, rec, rlen, dst, &pl);
		if (rec == c->fbuf)
			c->fb_len = 0;
		if (!held)
			pos += rlen;
		if (r < 0) {
			*in_used = pos;
			return fast_fail(c, -r, HM_TLS_FAIL_BAD_MESSAGE);
		}
		if (r == HM_TLS13_ALERT) {
			uint8_t desc = dst[1]; /* dst may be in the buffer released below */

			if (desc == HM_TLS13_A_USER_CANCELED && c->established) {
				fbuf_release(c);
				continue; /* a close_notify follows (RFC 8446 6.1) */
			}
			*in_used = pos;
			c->pend_len = 0;
			fbuf_release(c);
			if (desc == HM_TLS13_A_CLOSE_NOTIFY && c->established) {
				c->peer_closed = true; /* what follows is ignored (6.1) */
				return HM_TLS_CLOSED;
			}
			set_fail(c, HM_TLS_FAIL_PEER_ALERT);
			c->broken = true;
			return -EPROTO;
		}
		if (r == HM_TLS13_DATA && dst != out + *out_len) {
			c->pend_off = HM_TLS13_REC_HDR;
			c->pend_len = (uint32_t)pl;
		} else if (r == HM_TLS13_DATA) {
			*out_len += pl;
		} else if (!c->established && hm_tls13_established(c->fast)) {
			c->established = true;
			c->resumed = true;
			c->t->stats.resumed++;
			c->t->stats.fast++;
			if (c->t->n_keys > 0 && c->t->cfg.num_tickets != 0)
				c->t->stats.tickets_issued++;
		}
		fbuf_release(c);
		if (fast_owed(c, 0) != 0) {
			*in_used = pos;
			return fast_fail(c, HM_TLS13_A_INTERNAL_ERROR, HM_TLS_FAIL_INTERNAL);
		}
	}
	*in_used = pos;
	return 0;
}

int hm_tls_conn_recv(struct hm_tls_conn *c, const void *in, size_t in_len, size_t *in_used,
		     void *out, size_t out_cap, size_t *out_len)
{
	int rc = 0;

	*out_len = 0;
	*in_used = 0;
	if (c->broken || c->fail != HM_TLS_FAIL_NONE)
		return -EPROTO;
	if (!c->decided) {
		ssize_t took = decide(c, in, in_len);

		if (took < 0) {
			set_fail(c, HM_TLS_FAIL_INTERNAL);
			c->broken = true;
			return -EPROTO;
		}
		in = (const uint8_t *)in + took;
		in_len -= (size_t)took;
		*in_used = (size_t)took;
		if (!c->decided)
			return 0;
		if (c->fast == NULL && c->fb_len > 0) {
			/* libssl's after all: the hello gathered first, then the rest. */
			c->in = c->fbuf;
			c->in_len = c->fb_len;
			rc = handshake(c);
			c->fb_len = 0;
			fbuf_release(c);
			c->in = NULL;
			c->in_len = 0;
			if (rc != 0)
				return rc;
		}
	}
	if (c->fast != NULL) {
		size_t used = 0;

		if (c->peer_closed)
			return HM_TLS_CLOSED;
		rc = fast_recv(c, in, in_len, &used, out, out_cap, out_len);
		*in_used += used;
		return rc;
	}
	c->in = in;
	c->in_len = in_len;
	if (!c->established && (rc = handshake(c)) != 0)
		goto done;
	while (c->established && *out_len < out_cap) {
		size_t n = 0;
		int r = SSL_read_ex(c->ssl, (uint8_t *)out + *out_len, out_cap - *out_len, &n), err;

		if (r == 1) {
			*out_len += n;
			continue;
		}
		err = SSL_get_error(c->ssl, r);
		if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
			break;
		if (err == SSL_ERROR_ZERO_RETURN) {
			rc = HM_TLS_CLOSED;
			break;
		}
		ERR_clear_error();
		c->broken = true;
		rc = -EPROTO;
		break;
	}
done:
	*in_used += in_len - c->in_len;
	c->in = NULL;
	c->in_len = 0;
	return rc;
}

int hm_tls_conn_send(struct hm_tls_conn *c, const void *plain, size_t n)
{
	size_t w = 0;
	int r, err;

	if (c->broken || c->fail != HM_TLS_FAIL_NONE)
		return -EPROTO;
	if (!c->established)
		return -ENOTCONN;
	if (c->fast != NULL) {
		size_t room;

		/* What is owed goes first, in the room a whole record of n leaves (the slack of
		 * HM_TLS_RECORD_SLACK holds a KeyUpdate; a ticket waits if it does not fit). */
		if (fast_owed(c, HM_MIN(n, (size_t)HM_TLS13_PLAIN_MAX) + HM_TLS13_SEAL_OVER) != 0) {
			c->broken = true;
			return -EPROTO;
		}
		if (hm_tls13_update_owed(c->fast))
			return 0; /* our KeyUpdate goes before our next data (RFC 8446 4.6.3) */
		room = OUT_BUF - c->out_end;
		if (room <= HM_TLS13_SEAL_OVER)
			return 0;
		n = HM_MIN(n, HM_MIN((size_t)HM_TLS13_PLAIN_MAX, room - HM_TLS13_SEAL_OVER));
		if ((r = hm_tls13_seal(c->fast, HM_TLS13_DATA, plain, n, c->out + c->out_end)) <
		    0) {
			c->broken = true;
			return -EPROTO;
		}
		c->out_end += (uint32_t)r;
		c->out_total += (uint64_t)r;
		return (int)n;
	}
	if (n > INT32_MAX)
		n = INT32_MAX;
	if ((r = SSL_write_ex(c->ssl, plain, n, &w)) == 1)
		return (int)w;
	err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
		return 0;
	ERR_clear_error();
	c->broken = true;
	return -EPROTO;
}

size_t hm_tls_conn_out(struct hm_tls_conn *c, const uint8_t **p)
{
	if (c->out == NULL) {
		*p = NULL;
		return 0;
	}
	*p = c->out + c->out_start;
	return c->out_end - c->out_start;
}

size_t hm_tls_conn_out_room(const struct hm_tls_conn *c)
{
	return OUT_BUF - (c->out != NULL ? c->out_end : 0);
}

bool hm_tls_conn_out_lazy(const struct hm_tls_conn *c)
{
	/* lazy_to only moves when everything before it was lazy: output appended since (or
	 * before, and not written yet) makes out_total pass it. */
	return c->out == NULL || c->out_start == c->out_end || c->lazy_to == c->out_total;
}

uint64_t hm_tls_conn_out_total(const struct hm_tls_conn *c)
{
	return c->out_total;
}

void hm_tls_conn_out_done(struct hm_tls_conn *c, size_t n)
{
	if (c->out == NULL)
		return;
	c->out_start += (uint32_t)HM_MIN(n, (size_t)(c->out_end - c->out_start));
	if (c->out_start == c->out_end) {
		buf_put(c->t, c->out);
		c->out = NULL;
		c->out_start = c->out_end = 0;
	}
}

int hm_tls_conn_close_notify(struct hm_tls_conn *c)
{
	int r;

	if (!c->established || c->broken || c->fail != HM_TLS_FAIL_NONE)
		return 0;
	if (c->fast != NULL) {
		if (c->out == NULL && (c->out = buf_get(c->t)) == NULL)
			return -EAGAIN;
		if (OUT_BUF - c->out_end < HM_TLS13_SEAL_OVER + 2)
			return -EAGAIN;
		if ((r = hm_tls13_alert(c->fast, HM_TLS13_A_CLOSE_NOTIFY, c->out + c->out_end)) <
		    0) {
			c->broken = true;
			return -EPROTO;
		}
		c->out_end += (uint32_t)r;
		c->out_total += (uint64_t)r;
		return 0;
	}
	if ((r = SSL_shutdown(c->ssl)) >= 0)
		return 0;
	if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE)
		return -EAGAIN; /* the output is full: write it, then call again */
	ERR_clear_error();
	c->broken = true;
	return -EPROTO;
}

void hm_tls_conn_peer_closed(struct hm_tls_conn *c)
{
	set_fail(c, HM_TLS_FAIL_EOF);
}

void hm_tls_conn_timeout(struct hm_tls_conn *c)
{
	set_fail(c, HM_TLS_FAIL_TIMEOUT);
}

bool hm_tls_conn_established(const struct hm_tls_conn *c)
{
	return c->established;
}

bool hm_tls_conn_resumed(const struct hm_tls_conn *c)
{
	return c->resumed;
}

bool hm_tls_conn_fast(const struct hm_tls_conn *c)
{
	return c->fast != NULL;
}

unsigned hm_tls_conn_fail(const struct hm_tls_conn *c)
{
	return c->fail;
}

unsigned hm_tls_conn_alpn(const struct hm_tls_conn *c)
{
	const unsigned char *p;
	unsigned n = 0;

	if (c->fast != NULL)
		return c->alpn;
	SSL_get0_alpn_selected(c->ssl, &p, &n);
	return alpn_kind(p, n);
}

const char *hm_tls_conn_sni(const struct hm_tls_conn *c)
{
	return c->sni;
}

unsigned hm_tls_conn_match(const struct hm_tls_conn *c)
{
	return c->match;
}

const char *hm_tls_conn_version(const struct hm_tls_conn *c)
{
	if (!c->established)
		return "";
	return c->fast != NULL ? "TLSv1.3" : SSL_get_version(c->ssl);
}

const char *hm_tls_conn_cipher(const struct hm_tls_conn *c)
{
	if (!c->established)
		return "";
	return c->fast != NULL ? hm_tls13_cipher_name()
			       : SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
}
