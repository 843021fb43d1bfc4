/*
 * The TLS 1.3 resumption fast path (tls13.h is the API, docs/tls13-fast-path.md the design).
 *
 * Everything here is RFC 8446 with one suite (TLS_AES_128_GCM_SHA256, so every hash is SHA-256
 * and every secret 32 bytes) and one group (X25519). The primitives are libcrypto's, fetched once
 * per worker (context): SHA-256 for the transcript, HMAC-SHA256 re-keyed per use for the key
 * schedule (HKDF-Extract is one HMAC, HKDF-Expand-Label of <= 32 bytes is one HMAC), AES-128-GCM
 * for records, AES-256-GCM and AES-256-CBC + HMAC for tickets, X25519 through EVP.
 *
 * A connection keeps its transcript hash until the client's Finished (it needs it for the
 * resumption secret), then only its two record directions. Handshake messages after the server's
 * flight are tiny (Finished, KeyUpdate): they are reassembled in a 64-byte buffer, and anything
 * longer or of another type is an unexpected message.
 */
#include "router/tls13.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/util.h"

#define H 32 /* SHA-256: hash, secret, binder and Finished sizes */

#define SUITE		  0x1301 /* TLS_AES_128_GCM_SHA256 */
#define GROUP		  0x001d /* x25519 */
#define TLS13		  0x0304
#define KEY_LEN		  16
#define IV_LEN		  12
#define TAG_LEN		  16
#define NAME_LEN	  16
#define SKEW_S		  60 /* a ticket issued this far in the future (another node) is fine */
#define KU_AFTER	  (1ull << 24) /* our KeyUpdate after this many records under a key */
#define SEQ_MAX		  23726566ull  /* 2^24.5 records: AES-GCM's limit per key (RFC 8446 5.5) */
#define LIFETIME_MAX	  (7u * 86400) /* RFC 8446 4.6.1 */
#define LIBSSL_TICKET_MAX 4096	       /* a libssl ticket bigger than this goes to libssl */
#define FAST_VERSION	  1

/* Handshake message types. */
enum {
	HS_CLIENT_HELLO = 1,
	HS_SERVER_HELLO = 2,
	HS_NEW_SESSION_TICKET = 4,
	HS_EE = 8,
	HS_FINISHED = 20,
	HS_KEY_UPDATE = 24
};

/* Extensions. */
enum {
	EXT_SNI = 0,
	EXT_GROUPS = 10,
	EXT_ALPN = 16,
	EXT_PSK = 41,
	EXT_EARLY_DATA = 42,
	EXT_VERSIONS = 43,
	EXT_COOKIE = 44,
	EXT_PSK_MODES = 45,
	EXT_KEY_SHARE = 51
};

struct fast_key {
	uint8_t name[NAME_LEN];
	uint8_t key[32];
};

struct hm_tls13_ctx {
	EVP_MD *sha256;
	EVP_MAC_CTX *mac; /* HMAC-SHA256 */
	EVP_MD_CTX *md;	  /* one-shot hashes and transcript snapshots */
	EVP_CIPHER *gcm128, *gcm256, *cbc256;
	EVP_CIPHER_CTX *tctx; /* tickets */
	EVP_PKEY_CTX *kgen;   /* X25519 key generation */
	uint8_t empty_hash[H];
	unsigned lifetime_s;
	bool tickets; /* issue them (the engine's num_tickets is not 0) */
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	struct fast_key fkeys[HM_TICKET_KEYS_MAX];
	int n_keys;
};

/* One direction of the record layer. */
struct dir {
	EVP_CIPHER_CTX *aead;
	uint8_t secret[H];
	uint8_t iv[IV_LEN];
	uint64_t seq;
};

struct hm_tls13 {
	struct hm_tls13_ctx *x;
	struct dir rd, wr;
	EVP_MD_CTX *transcript; /* until the client's Finished */
	uint8_t master[H];	/* until the client's Finished */
	uint8_t c_ap[H];	/* the client's first application secret */
	uint8_t cf[H];		/* the client's Finished we expect */
	uint8_t hs[64];		/* a handshake message arriving in pieces */
	uint8_t hs_len;
	bool established, ccs_seen, ticket_owed, ku_owed;
};

/* ---- Primitives -------------------------------------------------------------------------- */

static bool hmac(struct hm_tls13_ctx *x, const uint8_t *key, size_t klen, const uint8_t *a,
		 size_t an, const uint8_t *b, size_t bn, uint8_t out[H])
{
	size_t n = 0;

	return EVP_MAC_init(x->mac, key, klen, NULL) == 1 &&
	       (an == 0 || EVP_MAC_update(x->mac, a, an) == 1) &&
	       (bn == 0 || EVP_MAC_update(x->mac, b, bn) == 1) &&
	       EVP_MAC_final(x->mac, out, &n, H) == 1 && n == H;
}

static bool sha256(struct hm_tls13_ctx *x, const uint8_t *p, size_t n, uint8_t out[H])
{
	return EVP_DigestInit_ex2(x->md, x->sha256, NULL) == 1 &&
	       EVP_DigestUpdate(x->md, p, n) == 1 && EVP_DigestFinal_ex(x->md, out, NULL) == 1;
}

/* HKDF-Expand-Label(secret, label, context, n) for n <= 32: one HMAC (RFC 8446 7.1). */
static bool expand_label(struct hm_tls13_ctx *x, const uint8_t secret[H], const char *label,
			 const uint8_t *context, size_t clen, uint8_t *out, size_t n)
{
	uint8_t info[2 + 1 + 6 + 32 + 1 + H + 1], t[H];
	size_t ll = strlen(label), i = 0;
	bool ok;

	if (ll > 32 || clen > H || n > H)
		return false;
	info[i++] = 0;
	info[i++] = (uint8_t)n;
	info[i++] = (uint8_t)(6 + ll);
	memcpy(info + i, "tls13 ", 6);
	memcpy(info + i + 6, label, ll);
	i += 6 + ll;
	info[i++] = (uint8_t)clen;
	if (clen > 0)
		memcpy(info + i, context, clen);
	i += clen;
	info[i++] = 1;
	ok = hmac(x, secret, H, info, i, NULL, 0, t);
	memcpy(out, t, n);
	OPENSSL_cleanse(t, sizeof(t));
	return ok;
}

/* The hash of the transcript so far, without ending it. */
static bool snapshot(struct hm_tls13_ctx *x, EVP_MD_CTX *transcript, uint8_t out[H])
{
	return EVP_MD_CTX_copy_ex(x->md, transcript) == 1 &&
	       EVP_DigestFinal_ex(x->md, out, NULL) == 1;
}

/* Keys a direction from its traffic secret. */
static bool dir_set(struct hm_tls13_ctx *x, struct dir *d, const uint8_t secret[H], int enc)
{
	uint8_t key[KEY_LEN];
	bool ok;

	if (secret != d->secret)
		memcpy(d->secret, secret, H);
	ok = expand_label(x, d->secret, "key", NULL, 0, key, KEY_LEN) &&
	     expand_label(x, d->secret, "iv", NULL, 0, d->iv, IV_LEN) &&
	     EVP_CipherInit_ex2(d->aead, x->gcm128, key, NULL, enc, NULL) == 1;
	OPENSSL_cleanse(key, sizeof(key));
	d->seq = ok ? 0 : SEQ_MAX; /* a direction that failed to rekey seals and opens nothing */
	return ok;
}

/* The next secret of a direction (KeyUpdate, RFC 8446 7.2). */
static bool dir_update(struct hm_tls13_ctx *x, struct dir *d, int enc)
{
	uint8_t next[H];
	bool ok =
	    expand_label(x, d->secret, "traffic upd", NULL, 0, next, H) && dir_set(x, d, next, enc);

	OPENSSL_cleanse(next, sizeof(next));
	return ok;
}

static void nonce(const struct dir *d, uint8_t out[IV_LEN])
{
	memcpy(out, d->iv, IV_LEN);
	for (int i = 0; i < 8; i++)
		out[IV_LEN - 1 - i] ^= (uint8_t)(d->seq >> (8 * i));
}

static void put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void put24(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}

/* ---- Context ----------------------------------------------------------------------------- */

int hm_tls13_ctx_new(struct hm_tls13_ctx **out, unsigned lifetime_s, bool tickets)
{
	struct hm_tls13_ctx *x = calloc(1, sizeof(*x));
	EVP_MAC *mac = NULL;
	OSSL_PARAM params[2] = {
	    OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
	    OSSL_PARAM_construct_end(),
	};

	if (x == NULL)
		return -ENOMEM;
	x->lifetime_s = lifetime_s == 0 || lifetime_s > LIFETIME_MAX ? LIFETIME_MAX : lifetime_s;
	x->tickets = tickets;
	x->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	x->mac = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
	EVP_MAC_free(mac); /* the context holds its own reference */
	x->md = EVP_MD_CTX_new();
	x->gcm128 = EVP_CIPHER_fetch(NULL, "AES-128-GCM", NULL);
	x->gcm256 = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	x->cbc256 = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
	x->tctx = EVP_CIPHER_CTX_new();
	x->kgen = EVP_PKEY_CTX_new_from_name(NULL, "X25519", NULL);
	if (x->sha256 == NULL || x->mac == NULL || x->md == NULL || x->gcm128 == NULL ||
	    x->gcm256 == NULL || x->cbc256 == NULL || x->tctx == NULL || x->kgen == NULL ||
	    EVP_MAC_CTX_set_params(x->mac, params) != 1 || EVP_PKEY_keygen_init(x->kgen) != 1 ||
	    !sha256(x, NULL, 0, x->empty_hash)) {
		hm_tls13_ctx_free(x);
		return -ENOMEM;
	}
	*out = x;
	return 0;
}

void hm_tls13_ctx_free(struct hm_tls13_ctx *x)
{
	if (x == NULL)
		return;
	EVP_MD_free(x->sha256);
	EVP_MAC_CTX_free(x->mac);
	EVP_MD_CTX_free(x->md);
	EVP_CIPHER_free(x->gcm128);
	EVP_CIPHER_free(x->gcm256);
	EVP_CIPHER_free(x->cbc256);
	EVP_CIPHER_CTX_free(x->tctx);
	EVP_PKEY_CTX_free(x->kgen);
	OPENSSL_cleanse(x->keys, sizeof(x->keys));
	OPENSSL_cleanse(x->fkeys, sizeof(x->fkeys));
	free(x);
}

void hm_tls13_ctx_set_keys(struct hm_tls13_ctx *x, const struct hm_ticket_key *keys, int n)
{
	uint8_t t[H];
	int k = 0;

	if (n > HM_TICKET_KEYS_MAX)
		n = HM_TICKET_KEYS_MAX;
	for (int i = 0; i < n; i++) {
		/* A name and a key of our own, so that libssl's CBC key never meets GCM and libssl
		 * never mistakes our tickets for its own. */
		static const char nl[] = "hermod tls13 ticket name",
				  kl[] = "hermod tls13 ticket key";

		if (!hmac(x, keys[i].hmac_key, sizeof(keys[i].hmac_key), (const uint8_t *)nl,
			  sizeof(nl) - 1, NULL, 0, t))
			continue;
		memcpy(x->fkeys[k].name, t, NAME_LEN);
		if (!hmac(x, keys[i].aes_key, sizeof(keys[i].aes_key), (const uint8_t *)kl,
			  sizeof(kl) - 1, NULL, 0, x->fkeys[k].key))
			continue;
		x->keys[k++] = keys[i];
	}
	OPENSSL_cleanse(t, sizeof(t));
	OPENSSL_cleanse(x->keys + k, sizeof(x->keys[0]) * (size_t)(HM_TICKET_KEYS_MAX - k));
	OPENSSL_cleanse(x->fkeys + k, sizeof(x->fkeys[0]) * (size_t)(HM_TICKET_KEYS_MAX - k));
	x->n_keys = k;
}

/* ---- The ClientHello ---------------------------------------------------------------------- */

struct rd {
	const uint8_t *p;
	size_t n;
	bool bad;
};

static unsigned rd_u8(struct rd *r)
{
	if (r->n < 1) {
		r->bad = true;
		return 0;
	}
	r->n--;
	return *r->p++;
}

static unsigned rd_u16(struct rd *r)
{
	unsigned v;

	if (r->n < 2) {
		r->bad = true;
		return 0;
	}
	v = (unsigned)r->p[0] << 8 | r->p[1];
	r->p += 2;
	r->n -= 2;
	return v;
}

static const uint8_t *rd_bytes(struct rd *r, size_t n)
{
	const uint8_t *p = r->p;

	if (r->n < n) {
		r->bad = true;
		return NULL;
	}
	r->p += n;
	r->n -= n;
	return p;
}

/* A vector with a 1- or 2-byte length, as a reader of its contents. */
static struct rd rd_vec(struct rd *r, int lb)
{
	size_t n = lb == 1 ? rd_u8(r) : rd_u16(r);
	struct rd v = {r->p, n, r->bad};

	if (rd_bytes(r, n) == NULL)
		v.bad = true;
	return v;
}

static bool has_u16(struct rd v, unsigned want)
{
	while (v.n >= 2)
		if (rd_u16(&v) == want)
			return true;
	return false;
}

static bool parse_sni(struct rd v, struct hm_tls13_hello *h)
{
	struct rd list = rd_vec(&v, 2);

	if (v.bad || v.n != 0 || list.bad || list.n == 0)
		return false;
	while (list.n > 0 && !list.bad) {
		unsigned type = rd_u8(&list);
		struct rd name = rd_vec(&list, 2);

		if (list.bad || name.bad)
			return false;
		if (type == 0 && h->sni == NULL) {
			if (name.n == 0 || name.n > 255)
				return false;
			h->sni = name.p;
			h->sni_len = name.n;
		}
	}
	return !list.bad;
}

static bool parse_alpn(struct rd v, struct hm_tls13_hello *h)
{
	struct rd list = rd_vec(&v, 2), walk;

	if (v.bad || v.n != 0 || list.bad || list.n == 0)
		return false;
	for (walk = list; walk.n > 0;) {
		struct rd name = rd_vec(&walk, 1);

		if (walk.bad || name.bad || name.n == 0)
			return false;
	}
	h->alpn = list.p;
	h->alpn_len = list.n;
	return true;
}

static bool parse_key_share(struct rd v, struct hm_tls13_hello *h)
{
	struct rd list = rd_vec(&v, 2);

	if (v.bad || v.n != 0 || list.bad)
		return false;
	while (list.n > 0) {
		unsigned group = rd_u16(&list);
		struct rd key = rd_vec(&list, 2);

		if (list.bad || key.bad || key.n == 0)
			return false;
		if (group == GROUP && h->share == NULL) {
			if (key.n != 32)
				return false;
			h->share = key.p;
		}
	}
	return true;
}

/* pre_shared_key: the first identity and binder; counts must agree. */
static bool parse_psk(struct rd v, const uint8_t *msg, struct hm_tls13_hello *h)
{
	struct rd ids = rd_vec(&v, 2), binders;
	size_t n_ids = 0, n_binders = 0;

	if (ids.bad || ids.n == 0)
		return false;
	h->truncated = (size_t)(v.p - msg);
	binders = rd_vec(&v, 2);
	if (v.bad || v.n != 0 || binders.bad || binders.n == 0)
		return false;
	while (ids.n > 0) {
		struct rd id = rd_vec(&ids, 2);

		rd_bytes(&ids, 4); /* obfuscated_ticket_age: the age matters only to early data */
		if (ids.bad || id.bad || id.n == 0)
			return false;
		if (n_ids++ == 0) {
			h->ident = id.p;
			h->ident_len = id.n;
		}
	}
	while (binders.n > 0) {
		struct rd b = rd_vec(&binders, 1);

		if (binders.bad || b.bad || b.n < 32)
			return false;
		if (n_binders++ == 0) {
			h->binder = b.p;
			h->binder_len = b.n;
		}
	}
	return n_ids == n_binders;
}

bool hm_tls13_parse_hello(const uint8_t *msg, size_t len, struct hm_tls13_hello *h)
{
	struct rd r = {msg, len, false}, suites, comp, exts;
	unsigned seen[64];
	size_t n_seen = 0;
	bool versions = false, modes = false, groups = false, psk = false;

	memset(h, 0, sizeof(*h));
	h->msg = msg;
	h->len = len;
	if (rd_u8(&r) != HS_CLIENT_HELLO)
		return false;
	{
		const uint8_t *l = rd_bytes(&r, 3);

		if (l == NULL || ((size_t)l[0] << 16 | (size_t)l[1] << 8 | l[2]) != len - 4)
			return false;
	}
	if (rd_u16(&r) != 0x0303 || rd_bytes(&r, 32) == NULL)
		return false;
	{
		struct rd sid = rd_vec(&r, 1);

		if (sid.bad || sid.n > 32)
			return false;
		h->sid = sid.p;
		h->sid_len = (uint8_t)sid.n;
	}
	suites = rd_vec(&r, 2);
	comp = rd_vec(&r, 1);
	exts = rd_vec(&r, 2);
	if (r.bad || r.n != 0 || suites.bad || suites.n == 0 || suites.n % 2 != 0 ||
	    !has_u16(suites, SUITE) || comp.bad || comp.n != 1 || comp.p[0] != 0 || exts.bad)
		return false;
	while (exts.n > 0) {
		unsigned type = rd_u16(&exts);
		struct rd v = rd_vec(&exts, 2);
		bool ok = true;

		if (exts.bad || v.bad || psk || n_seen == sizeof(seen) / sizeof(seen[0]))
			return false; /* pre_shared_key must be the last extension */
		for (size_t i = 0; i < n_seen; i++)
			if (seen[i] == type)
				return false;
		seen[n_seen++] = type;
		switch (type) {
		case EXT_SNI:
			ok = parse_sni(v, h);
			break;
		case EXT_ALPN:
			ok = parse_alpn(v, h);
			break;
		case EXT_GROUPS: {
			struct rd list = rd_vec(&v, 2);

			ok = !list.bad && v.n == 0 && list.n % 2 == 0;
			groups = ok && has_u16(list, GROUP);
			break;
		}
		case EXT_VERSIONS: {
			struct rd list = rd_vec(&v, 1);

			ok = !list.bad && v.n == 0 && list.n % 2 == 0;
			versions = ok && has_u16(list, TLS13);
			break;
		}
		case EXT_PSK_MODES: {
			struct rd list = rd_vec(&v, 1);

			ok = !list.bad && v.n == 0 && list.n > 0;
			modes = ok && memchr(list.p, 1, list.n) != NULL; /* psk_dhe_ke */
			break;
		}
		case EXT_KEY_SHARE:
			ok = parse_key_share(v, h);
			break;
		case EXT_PSK:
			ok = psk = parse_psk(v, msg, h);
			break;
		case EXT_EARLY_DATA:
		case EXT_COOKIE:
			return false; /* libssl's: 0-RTT (refused there), a retried hello */
		default:
			break; /* others are ignored (RFC 8446 4.2), as libssl ignores them */
		}
		if (!ok)
			return false;
	}
	return versions && modes && groups && psk && h->share != NULL;
}

/* ---- Tickets ----------------------------------------------------------------------------- */

struct sess {
	uint8_t psk[H];
	uint64_t time;
	uint32_t lifetime;
};

static bool sess_fresh(const struct hm_tls13_ctx *x, const struct sess *s)
{
	uint64_t now = (uint64_t)time(NULL);
	uint64_t life = s->lifetime < x->lifetime_s ? s->lifetime : x->lifetime_s;

	return s->time <= now + SKEW_S && now < s->time + life;
}

/* One of libssl's tickets (OpenSSL 3.0's format under our callback: name, IV, AES-256-CBC of
 * the DER session, HMAC-SHA256 of all that). */
static bool libssl_ticket(struct hm_tls13_ctx *x, const struct hm_ticket_key *k, const uint8_t *t,
			  size_t n, struct sess *s)
{
	uint8_t mac[H], der[LIBSSL_TICKET_MAX];
	const uint8_t *p = der;
	int a = 0, b = 0;
	SSL_SESSION *ss = NULL;
	bool ok = false;

	if (n < NAME_LEN + 16 + 16 + H || n > LIBSSL_TICKET_MAX ||
	    !hmac(x, k->hmac_key, sizeof(k->hmac_key), t, n - H, NULL, 0, mac) ||
	    CRYPTO_memcmp(mac, t + n - H, H) != 0)
		return false;
	if (EVP_DecryptInit_ex2(x->tctx, x->cbc256, k->aes_key, t + NAME_LEN, NULL) != 1 ||
	    EVP_DecryptUpdate(x->tctx, der, &a, t + NAME_LEN + 16, (int)(n - NAME_LEN - 16 - H)) !=
		1 ||
	    EVP_DecryptFinal_ex(x->tctx, der + a, &b) != 1)
		goto out;
	ss = d2i_SSL_SESSION(NULL, &p, a + b);
	if (ss == NULL || SSL_SESSION_get_protocol_version(ss) != TLS1_3_VERSION ||
	    SSL_SESSION_get0_cipher(ss) == NULL ||
	    (SSL_CIPHER_get_id(SSL_SESSION_get0_cipher(ss)) & 0xffff) != SUITE)
		goto out;
	{
		unsigned int sl = 0;
		const unsigned char *sid_ctx = SSL_SESSION_get0_id_context(ss, &sl);

		if (sl != 6 || memcmp(sid_ctx, "hermod", 6) != 0 ||
		    SSL_SESSION_get_master_key(ss, s->psk, H) != H)
			goto out;
		s->time = (uint64_t)SSL_SESSION_get_time(ss);
		s->lifetime = (uint32_t)SSL_SESSION_get_timeout(ss);
	}
	ok = true;
out:
	SSL_SESSION_free(ss);
	OPENSSL_cleanse(der, sizeof(der));
	return ok;
}

/* Our tickets: name, a random salt, AES-256-GCM of {version, time, lifetime, psk}, tag. Each is
 * sealed under its own key, HMAC(the cluster key's ticket key, salt), so the GCM nonce (zero) is
 * never used twice with a key however many tickets a fleet issues. */
#define SALT_LEN    16
#define FAST_PLAIN  (1 + 8 + 4 + H)
#define FAST_TICKET (NAME_LEN + SALT_LEN + FAST_PLAIN + TAG_LEN)

static const uint8_t zero_iv[IV_LEN];

/* Seals (enc) plain into ticket t, or opens t into plain: AES-256-GCM under the ticket's own
 * key, HMAC(k, salt), its name and salt (already in t) authenticated, FAST_PLAIN bytes. */
static bool ticket_gcm(struct hm_tls13_ctx *x, const struct fast_key *k, uint8_t *t, uint8_t *plain,
		       int enc)
{
	uint8_t key[H], *ct = t + NAME_LEN + SALT_LEN, *tag = ct + FAST_PLAIN;
	int a = 0, b = 0;
	bool ok =
	    hmac(x, k->key, sizeof(k->key), t + NAME_LEN, SALT_LEN, NULL, 0, key) &&
	    EVP_CipherInit_ex2(x->tctx, x->gcm256, key, zero_iv, enc, NULL) == 1 &&
	    EVP_CipherUpdate(x->tctx, NULL, &a, t, NAME_LEN + SALT_LEN) == 1 &&
	    (enc || EVP_CIPHER_CTX_ctrl(x->tctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) == 1) &&
	    EVP_CipherUpdate(x->tctx, enc ? ct : plain, &a, enc ? plain : ct, FAST_PLAIN) == 1 &&
	    EVP_CipherFinal_ex(x->tctx, (enc ? ct : plain) + a, &b) == 1 &&
	    (!enc || EVP_CIPHER_CTX_ctrl(x->tctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) == 1);

	OPENSSL_cleanse(key, sizeof(key));
	return ok;
}

static bool fast_ticket(struct hm_tls13_ctx *x, const struct fast_key *k, const uint8_t *t,
			size_t n, struct sess *s)
{
	uint8_t plain[FAST_PLAIN];
	bool ok;

	if (n != FAST_TICKET)
		return false;
	ok = ticket_gcm(x, k, (uint8_t *)t, plain, 0) && plain[0] == FAST_VERSION;
	if (ok) {
		s->time = 0;
		for (int i = 0; i < 8; i++)
			s->time = s->time << 8 | plain[1 + i];
		s->lifetime = (uint32_t)plain[9] << 24 | (uint32_t)plain[10] << 16 |
			      (uint32_t)plain[11] << 8 | plain[12];
		memcpy(s->psk, plain + 13, H);
	}
	OPENSSL_cleanse(plain, sizeof(plain));
	return ok;
}

/* Opens a ticket; *key gets the index of the key that did (0: the current one). */
static bool ticket_open(struct hm_tls13_ctx *x, const uint8_t *t, size_t n, struct sess *s,
			int *key)
{
	if (n < NAME_LEN)
		return false;
	for (int i = 0; i < x->n_keys; i++) {
		*key = i;
		if (memcmp(t, x->fkeys[i].name, NAME_LEN) == 0)
			return fast_ticket(x, &x->fkeys[i], t, n, s);
		if (memcmp(t, x->keys[i].name, NAME_LEN) == 0)
			return libssl_ticket(x, &x->keys[i], t, n, s);
	}
	return false; /* a key rotated out, another cluster's, or not a ticket of ours */
}

/* The NewSessionTicket message for psk (RFC 8446 4.6.1), its nonce the one byte 0. */
static int ticket_message(struct hm_tls13 *c, const uint8_t psk[H], uint8_t *out)
{
	struct hm_tls13_ctx *x = c->x;
	const struct fast_key *k = &x->fkeys[0];
	uint8_t plain[FAST_PLAIN], rnd[4 + SALT_LEN];
	uint64_t now = (uint64_t)time(NULL);
	size_t tn = FAST_TICKET, i = 0;
	uint8_t *t;
	bool ok;

	if (x->n_keys == 0 || RAND_bytes(rnd, sizeof(rnd)) != 1)
		return -EPROTO;
	plain[0] = FAST_VERSION;
	for (int j = 0; j < 8; j++)
		plain[1 + j] = (uint8_t)(now >> (56 - 8 * j));
	plain[9] = (uint8_t)(x->lifetime_s >> 24);
	plain[10] = (uint8_t)(x->lifetime_s >> 16);
	plain[11] = (uint8_t)(x->lifetime_s >> 8);
	plain[12] = (uint8_t)x->lifetime_s;
	memcpy(plain + 13, psk, H);

	out[i++] = HS_NEW_SESSION_TICKET;
	put24(out + i, 4 + 4 + 2 + 2 + tn + 2);
	i += 3;
	memcpy(out + i, plain + 9, 4); /* ticket_lifetime */
	memcpy(out + i + 4, rnd, 4);   /* ticket_age_add */
	i += 8;
	out[i++] = 1; /* ticket_nonce: one byte, 0 */
	out[i++] = 0;
	put16(out + i, tn);
	i += 2;
	t = out + i;
	memcpy(t, k->name, NAME_LEN);
	memcpy(t + NAME_LEN, rnd + 4, SALT_LEN);
	ok = ticket_gcm(x, k, t, plain, 1);
	OPENSSL_cleanse(plain, sizeof(plain));
	i += tn;
	put16(out + i, 0); /* no extensions */
	i += 2;
	return ok ? (int)i : -EPROTO;
}

/* ---- The handshake ----------------------------------------------------------------------- */

/* ALPN: our first protocol the client offered (the server's preference), chosen by libssl's own
 * SSL_select_next_proto() as the libssl path's callback does. Returns the protocol's length with
 * its length byte (a->alpn points at it in a->alpn_pref), 0 without ALPN, -1 when none match. */
static int choose_alpn(const struct hm_tls13_hello *h, struct hm_tls13_accept *a)
{
	unsigned char *p = NULL, n = 0;

	a->alpn = NULL;
	a->alpn_len = 0;
	if (h->alpn == NULL)
		return 0;
	if (SSL_select_next_proto(&p, &n, a->alpn_pref, (unsigned)a->alpn_pref_len, h->alpn,
				  (unsigned)h->alpn_len) != OPENSSL_NPN_NEGOTIATED)
		return -1;
	a->alpn = p;
	a->alpn_len = n;
	return n + 1;
}

static bool x25519(struct hm_tls13_ctx *x, const uint8_t peer[32], uint8_t pub[32],
		   uint8_t shared[32])
{
	EVP_PKEY *mine = NULL, *theirs = NULL;
	EVP_PKEY_CTX *d = NULL;
	size_t pl = 32, sl = 32;
	bool ok =
	    EVP_PKEY_keygen(x->kgen, &mine) == 1 &&
	    EVP_PKEY_get_raw_public_key(mine, pub, &pl) == 1 && pl == 32 &&
	    (theirs = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer, 32)) != NULL &&
	    (d = EVP_PKEY_CTX_new_from_pkey(NULL, mine, NULL)) != NULL &&
	    EVP_PKEY_derive_init(d) == 1 && EVP_PKEY_derive_set_peer(d, theirs) == 1 &&
	    EVP_PKEY_derive(d, shared, &sl) == 1 && sl == 32;

	EVP_PKEY_CTX_free(d);
	EVP_PKEY_free(theirs);
	EVP_PKEY_free(mine);
	return ok;
}

int hm_tls13_accept(struct hm_tls13_ctx *x, const struct hm_tls13_hello *h,
		    struct hm_tls13_accept *a, struct hm_tls13 **cp, uint8_t *out, size_t *out_len)
{
	struct sess s;
	uint8_t early[H], bkey[H], bfin[H], hash[H], binder[H], derived[H], shared[H], hs[H];
	uint8_t c_hs[H], s_hs[H], fin[H], zeros[H] = {0}, rnd[32], pub[32], flight[96];
	struct hm_tls13 *c = NULL;
	int alpn, rc = 0, key = 0;
	size_t i = 0, sh, sh_len, ee;

	/* No check of the server name: in TLS 1.3 it is not the session's (libssl takes any, and
	 * the SNI picks the certificate context anew); the client checks it (RFC 8446 4.6.1). */
	if (x->n_keys == 0 || h->binder_len != H ||
	    !ticket_open(x, h->ident, h->ident_len, &s, &key) || !sess_fresh(x, &s) ||
	    (alpn = choose_alpn(h, a)) < 0)
		goto out;
	/* The binder proves the client holds the ticket's key (RFC 8446 4.2.11.2). */
	if (!hmac(x, zeros, H, s.psk, H, NULL, 0, early) ||
	    !expand_label(x, early, "res binder", x->empty_hash, H, bkey, H) ||
	    !expand_label(x, bkey, "finished", NULL, 0, bfin, H) ||
	    !sha256(x, h->msg, h->truncated, hash) || !hmac(x, bfin, H, hash, H, NULL, 0, binder) ||
	    CRYPTO_memcmp(binder, h->binder, H) != 0)
		goto out;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1 || !x25519(x, h->share, pub, shared))
		goto out;
	rc = -ENOMEM;
	if ((c = calloc(1, sizeof(*c))) == NULL || (c->rd.aead = EVP_CIPHER_CTX_new()) == NULL ||
	    (c->wr.aead = EVP_CIPHER_CTX_new()) == NULL ||
	    (c->transcript = EVP_MD_CTX_new()) == NULL)
		goto out;
	rc = 0;
	c->x = x;

	/* ServerHello, in the clear. */
	out[i++] = HM_TLS13_HANDSHAKE;
	out[i++] = 3;
	out[i++] = 3;
	i += 2; /* record length */
	sh = i;
	out[i++] = HS_SERVER_HELLO;
	i += 3;
	out[i++] = 3;
	out[i++] = 3;
	memcpy(out + i, rnd, 32);
	i += 32;
	out[i++] = h->sid_len;
	memcpy(out + i, h->sid, h->sid_len);
	i += h->sid_len;
	put16(out + i, SUITE);
	i += 2;
	out[i++] = 0;
	put16(out + i, 6 + 40 + 6);
	i += 2;
	static const uint8_t ext_sv[] = {0, 43, 0, 2, 3, 4},
			     ext_ks[] = {0, 51, 0, 36, 0, 29, 0, 32},
			     ext_psk[] = {0, 41, 0, 2, 0, 0};
	memcpy(out + i, ext_sv, sizeof(ext_sv));
	i += sizeof(ext_sv);
	memcpy(out + i, ext_ks, sizeof(ext_ks));
	memcpy(out + i + sizeof(ext_ks), pub, 32);
	i += sizeof(ext_ks) + 32;
	memcpy(out + i, ext_psk, sizeof(ext_psk));
	i += sizeof(ext_psk);
	sh_len = i - sh;
	put24(out + sh + 1, sh_len - 4);
	put16(out + 3, sh_len);
	if (h->sid_len > 0) {
		/* Middlebox compatibility (RFC 8446 D.4): the client sent a session id. */
		static const uint8_t ccs[] = {HM_TLS13_CCS, 3, 3, 0, 1, 1};

		memcpy(out + i, ccs, sizeof(ccs));
		i += sizeof(ccs);
	}

	/* The key schedule to the handshake secrets (RFC 8446 7.1). */
	if (EVP_DigestInit_ex2(c->transcript, x->sha256, NULL) != 1 ||
	    EVP_DigestUpdate(c->transcript, h->msg, h->len) != 1 ||
	    EVP_DigestUpdate(c->transcript, out + sh, sh_len) != 1)
		goto fail;
	if (!snapshot(x, c->transcript, hash) ||
	    !expand_label(x, early, "derived", x->empty_hash, H, derived, H) ||
	    !hmac(x, derived, H, shared, H, NULL, 0, hs) ||
	    !expand_label(x, hs, "c hs traffic", hash, H, c_hs, H) ||
	    !expand_label(x, hs, "s hs traffic", hash, H, s_hs, H) ||
	    !expand_label(x, hs, "derived", x->empty_hash, H, derived, H) ||
	    !hmac(x, derived, H, zeros, H, NULL, 0, c->master))
		goto fail;

	/* EncryptedExtensions (ALPN) and Finished, under the server's handshake keys. */
	ee = 0;
	flight[ee++] = HS_EE;
	flight[ee++] = 0;
	flight[ee++] = 0;
	flight[ee++] = (uint8_t)(alpn > 0 ? 2 + 4 + 2 + alpn : 2);
	put16(flight + ee, alpn > 0 ? (size_t)(4 + 2 + alpn) : 0);
	ee += 2;
	if (alpn > 0) {
		put16(flight + ee, EXT_ALPN);
		put16(flight + ee + 2, (size_t)(2 + alpn));
		put16(flight + ee + 4, (size_t)alpn);
		ee += 6;
		memcpy(flight + ee, a->alpn - 1, (size_t)alpn); /* length byte and name */
		ee += (size_t)alpn;
	}
	if (EVP_DigestUpdate(c->transcript, flight, ee) != 1 || !snapshot(x, c->transcript, hash) ||
	    !expand_label(x, s_hs, "finished", NULL, 0, fin, H))
		goto fail;
	flight[ee] = HS_FINISHED;
	put24(flight + ee + 1, H);
	if (!hmac(x, fin, H, hash, H, NULL, 0, flight + ee + 4) ||
	    EVP_DigestUpdate(c->transcript, flight + ee, 4 + H) != 1 ||
	    !snapshot(x, c->transcript, hash))
		goto fail;
	ee += 4 + H;
	if (!dir_set(x, &c->wr, s_hs, 1) ||
	    hm_tls13_seal(c, HM_TLS13_HANDSHAKE, flight, ee, out + i) < 0)
		goto fail;
	i += ee + HM_TLS13_SEAL_OVER;

	/* What the client's Finished must be, and the application secrets. */
	if (!expand_label(x, c_hs, "finished", NULL, 0, fin, H) ||
	    !hmac(x, fin, H, hash, H, NULL, 0, c->cf) ||
	    !expand_label(x, c->master, "c ap traffic", hash, H, c->c_ap, H) ||
	    !expand_label(x, c->master, "s ap traffic", hash, H, fin, H) ||
	    !dir_set(x, &c->wr, fin, 1) || !dir_set(x, &c->rd, c_hs, 0))
		goto fail;
	a->old_key = key > 0;
	*cp = c;
	*out_len = i;
	c = NULL;
	rc = 1;
	goto out;
fail:
	rc = 0;
out:
	hm_tls13_free(c);
	OPENSSL_cleanse(&s, sizeof(s));
	OPENSSL_cleanse(early, sizeof(early));
	OPENSSL_cleanse(bkey, sizeof(bkey));
	OPENSSL_cleanse(bfin, sizeof(bfin));
	OPENSSL_cleanse(shared, sizeof(shared));
	OPENSSL_cleanse(hs, sizeof(hs));
	OPENSSL_cleanse(derived, sizeof(derived));
	OPENSSL_cleanse(c_hs, sizeof(c_hs));
	OPENSSL_cleanse(s_hs, sizeof(s_hs));
	OPENSSL_cleanse(fin, sizeof(fin));
	return rc;
}

void hm_tls13_free(struct hm_tls13 *c)
{
	if (c == NULL)
		return;
	EVP_CIPHER_CTX_free(c->rd.aead);
	EVP_CIPHER_CTX_free(c->wr.aead);
	EVP_MD_CTX_free(c->transcript);
	OPENSSL_cleanse(c, sizeof(*c));
	free(c);
}

bool hm_tls13_established(const struct hm_tls13 *c)
{
	return c->established;
}

const char *hm_tls13_cipher_name(void)
{
	return "TLS_AES_128_GCM_SHA256";
}

/* ---- Records ----------------------------------------------------------------------------- */

int hm_tls13_seal(struct hm_tls13 *c, uint8_t type, const void *plain, size_t n, uint8_t *out)
{
	struct dir *d = &c->wr;
	uint8_t iv[IV_LEN];
	int a = 0, b = 0;

	if (n > HM_TLS13_PLAIN_MAX || d->seq >= SEQ_MAX)
		return -EPROTO;
	out[0] = HM_TLS13_DATA;
	out[1] = 3;
	out[2] = 3;
	put16(out + 3, n + 1 + TAG_LEN);
	if (plain != out + HM_TLS13_REC_HDR)
		memmove(out + HM_TLS13_REC_HDR, plain, n);
	out[HM_TLS13_REC_HDR + n] = type;
	nonce(d, iv);
	if (EVP_CipherInit_ex2(d->aead, NULL, NULL, iv, 1, NULL) != 1 ||
	    EVP_CipherUpdate(d->aead, NULL, &a, out, HM_TLS13_REC_HDR) != 1 ||
	    EVP_CipherUpdate(d->aead, out + HM_TLS13_REC_HDR, &a, out + HM_TLS13_REC_HDR,
			     (int)n + 1) != 1 ||
	    EVP_CipherFinal_ex(d->aead, out + HM_TLS13_REC_HDR + a, &b) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_GET_TAG, TAG_LEN,
				out + HM_TLS13_REC_HDR + n + 1) != 1)
		return -EPROTO;
	d->seq++;
	return (int)(n + HM_TLS13_SEAL_OVER);
}

int hm_tls13_alert(struct hm_tls13 *c, uint8_t desc, uint8_t *out)
{
	uint8_t al[2] = {desc == HM_TLS13_A_CLOSE_NOTIFY ? 1 : 2, desc};

	return hm_tls13_seal(c, HM_TLS13_ALERT, al, sizeof(al), out);
}

/* The client's Finished: the handshake is done; its application keys from now on. */
static int client_finished(struct hm_tls13 *c, const uint8_t *msg)
{
	struct hm_tls13_ctx *x = c->x;
	uint8_t hash[H];

	if (CRYPTO_memcmp(msg + 4, c->cf, H) != 0)
		return -HM_TLS13_A_DECRYPT_ERROR;
	if (EVP_DigestUpdate(c->transcript, msg, 4 + H) != 1 ||
	    EVP_DigestFinal_ex(c->transcript, hash, NULL) != 1 ||
	    !expand_label(x, c->master, "res master", hash, H, c->master, H) ||
	    !dir_set(x, &c->rd, c->c_ap, 0))
		return -HM_TLS13_A_INTERNAL_ERROR;
	EVP_MD_CTX_free(c->transcript);
	c->transcript = NULL;
	OPENSSL_cleanse(c->c_ap, sizeof(c->c_ap));
	c->established = true;
	c->ticket_owed = x->tickets && x->n_keys > 0;
	return HM_TLS13_NOTHING;
}

/* Handshake messages in a record's plaintext: the client's Finished, then only KeyUpdates. */
static int handshake_data(struct hm_tls13 *c, const uint8_t *p, size_t n)
{
	while (n > 0) {
		size_t take, need;

		if (c->hs_len < 4) {
			take = HM_MIN(n, (size_t)(4 - c->hs_len));
			memcpy(c->hs + c->hs_len, p, take);
			c->hs_len = (uint8_t)(c->hs_len + take);
			p += take;
			n -= take;
			if (c->hs_len < 4)
				break;
			if (c->hs[0] != (c->established ? HS_KEY_UPDATE : HS_FINISHED))
				return -HM_TLS13_A_UNEXPECTED_MESSAGE;
			if ((c->hs[1] | c->hs[2]) != 0 || c->hs[3] != (c->established ? 1 : H))
				return -HM_TLS13_A_DECODE_ERROR;
		}
		need = 4u + c->hs[3] - c->hs_len;
		take = HM_MIN(n, need);
		memcpy(c->hs + c->hs_len, p, take);
		c->hs_len = (uint8_t)(c->hs_len + take);
		p += take;
		n -= take;
		if (take < need)
			break;
		/* A message that changes keys must end its record (RFC 8446 5.1). */
		if (n > 0)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE;
		c->hs_len = 0;
		if (!c->established)
			return client_finished(c, c->hs);
		if (c->hs[4] > 1)
			return -HM_TLS13_A_ILLEGAL_PARAMETER; /* RFC 8446 4.6.3 */
		if (!dir_update(c->x, &c->rd, 0))
			return -HM_TLS13_A_INTERNAL_ERROR;
		if (c->hs[4] == 1)
			c->ku_owed = true; /* one answer for any number of requests */
		return HM_TLS13_NOTHING;
	}
	return HM_TLS13_NOTHING;
}

int hm_tls13_open(struct hm_tls13 *c, const uint8_t *rec, size_t len, uint8_t *dst,
		  size_t *plain_len)
{
	struct dir *d = &c->rd;
	size_t body = len - HM_TLS13_REC_HDR, n;
	const uint8_t *p = rec + HM_TLS13_REC_HDR;
	uint8_t iv[IV_LEN], tag[TAG_LEN];
	int a = 0, b = 0;

	*plain_len = 0;
	if (len < HM_TLS13_REC_HDR || body > HM_TLS13_REC_MAX)
		return -HM_TLS13_A_RECORD_OVERFLOW;
	switch (rec[0]) {
	case HM_TLS13_CCS:
		/* Middlebox compatibility: one, before the client's Finished (RFC 8446 5). */
		if (c->established || c->ccs_seen || c->hs_len != 0 || body != 1 || p[0] != 1)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE;
		c->ccs_seen = true;
		return HM_TLS13_NOTHING;
	case HM_TLS13_ALERT:
		/* In the clear only from a client that could not read our flight. */
		if (c->established || c->hs_len != 0 || body != 2)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE;
		memmove(dst, p, 2);
		*plain_len = 2;
		return HM_TLS13_ALERT;
	case HM_TLS13_DATA:
		break;
	default:
		return -HM_TLS13_A_UNEXPECTED_MESSAGE;
	}
	if (body < 1 + TAG_LEN || d->seq == UINT64_MAX)
		return -HM_TLS13_A_BAD_RECORD_MAC; /* the peer's limits are its own to keep (5.5) */
	n = body - TAG_LEN;
	if (n > HM_TLS13_PLAIN_MAX + 1)
		return -HM_TLS13_A_RECORD_OVERFLOW; /* inner plaintext, padding included (5.4) */
	nonce(d, iv);
	memcpy(tag, p + n, TAG_LEN); /* dst may be p itself */
	if (EVP_CipherInit_ex2(d->aead, NULL, NULL, iv, 0, NULL) != 1 ||
	    EVP_CipherUpdate(d->aead, NULL, &a, rec, HM_TLS13_REC_HDR) != 1 ||
	    EVP_CipherUpdate(d->aead, dst, &a, p, (int)n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(d->aead, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) != 1 ||
	    EVP_CipherFinal_ex(d->aead, dst + a, &b) != 1)
		return -HM_TLS13_A_BAD_RECORD_MAC;
	d->seq++;
	while (n > 0 && dst[n - 1] == 0)
		n--; /* padding */
	if (n == 0)
		return -HM_TLS13_A_UNEXPECTED_MESSAGE; /* no content type */
	switch (dst[--n]) {
	case HM_TLS13_DATA:
		if (!c->established || c->hs_len != 0)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE;
		*plain_len = n;
		return HM_TLS13_DATA;
	case HM_TLS13_ALERT:
		if (n != 2)
			return -HM_TLS13_A_DECODE_ERROR;
		if (c->hs_len != 0)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE; /* inside a handshake message (5.1)
								*/
		*plain_len = 2;
		return HM_TLS13_ALERT;
	case HM_TLS13_HANDSHAKE:
		if (n == 0)
			return -HM_TLS13_A_UNEXPECTED_MESSAGE;
		return handshake_data(c, dst, n);
	default:
		return -HM_TLS13_A_UNEXPECTED_MESSAGE;
	}
}

bool hm_tls13_update_owed(const struct hm_tls13 *c)
{
	return c->ku_owed || c->wr.seq >= KU_AFTER;
}

#define KU_RECORD     (4 + 1 + HM_TLS13_SEAL_OVER)
#define TICKET_RECORD (4 + 4 + 4 + 2 + 2 + FAST_TICKET + 2 + HM_TLS13_SEAL_OVER)

int hm_tls13_pending(struct hm_tls13 *c, uint8_t *out, size_t cap)
{
	uint8_t msg[TICKET_RECORD];
	size_t i = 0;
	int n;

	/* Our KeyUpdate first: it must precede our next application data (RFC 8446 4.6.3). */
	if (hm_tls13_update_owed(c) && cap >= KU_RECORD) {
		static const uint8_t ku[] = {HS_KEY_UPDATE, 0, 0, 1, 0}; /* update_not_requested */

		c->ku_owed = false;
		if ((n = hm_tls13_seal(c, HM_TLS13_HANDSHAKE, ku, sizeof(ku), out)) < 0 ||
		    !dir_update(c->x, &c->wr, 1))
			return -EPROTO;
		i += (size_t)n;
	}
	if (c->ticket_owed && cap - i >= TICKET_RECORD && !hm_tls13_update_owed(c)) {
		uint8_t psk[H];
		static const uint8_t zero = 0;

		c->ticket_owed = false;
		n = -EPROTO;
		if (c->x->n_keys > 0 &&
		    expand_label(c->x, c->master, "resumption", &zero, 1, psk, H) &&
		    (n = ticket_message(c, psk, msg)) >= 0)
			n = hm_tls13_seal(c, HM_TLS13_HANDSHAKE, msg, (size_t)n, out + i);
		OPENSSL_cleanse(psk, sizeof(psk));
		OPENSSL_cleanse(c->master, sizeof(c->master));
		if (n < 0)
			return c->x->n_keys > 0 ? -EPROTO : (int)i; /* keys gone: no ticket */
		i += (size_t)n;
	}
	return (int)i;
}
