/*
 * Validation of certificate puts (certcheck.h lists the checks; docs/tls.md says why each).
 *
 * Everything is parsed with OpenSSL 3 from memory, once per put, on the origin; the router never
 * sees a certificate that did not pass here. Each refusal is one line that names the problem in
 * the operator's terms (the file, the certificate's position in the chain, the date) rather than
 * OpenSSL's, with OpenSSL's reason appended only where it adds something (a parse error).
 */
#include "syncd/certcheck.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "common/model.h"
#include "common/util.h"

#define MIN_SECURITY_BITS 112 /* what OpenSSL's security level 2 (Debian's default) demands */
#define SUBJECT_MAX	  120

static const char *const reject_names[] = {
#define HM_CERTCHECK_NAME(name, summary) summary,
    HM_CERTCHECK_REJECT_MAP(HM_CERTCHECK_NAME)
#undef HM_CERTCHECK_NAME
};

const char *hm_certcheck_reject_name(unsigned reject)
{
	return reject < HM_ARRAY_SIZE(reject_names) ? reject_names[reject] : "unknown";
}

/* Appends src to dst (NUL-terminated, cap bytes in all) as printable ASCII: anything else
 * becomes \xHH, and what does not fit ends in "...". */
static void append_escaped(char *dst, size_t cap, const char *src, size_t n)
{
	size_t k = strlen(dst);

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)src[i];
		char tmp[5];
		size_t len = 1;

		if (ch >= 0x20 && ch < 0x7f)
			tmp[0] = (char)ch;
		else
			len = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", ch);
		if (k + len + 4 > cap) {
			if (k + 3 < cap)
				memcpy(dst + k, "...", 4);
			return;
		}
		memcpy(dst + k, tmp, len);
		k += len;
		dst[k] = '\0';
	}
}

static int refuse(struct hm_certcheck *c, unsigned why, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->text, sizeof(c->text), fmt, ap);
	va_end(ap);
	c->reject = why;
	ERR_clear_error();
	return -EINVAL;
}

/* OpenSSL's reason for the last error, for parse failures. Clears the error queue. */
static const char *ossl_reason(void)
{
	const char *r = ERR_reason_error_string(ERR_peek_last_error());

	ERR_clear_error();
	return r != NULL ? r : "unknown error";
}

static bool last_error_is_no_start_line(void)
{
	unsigned long e = ERR_peek_last_error();

	return ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
}

static void utc(int64_t t, char out[32])
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		snprintf(out, 32, "%lld", (long long)t);
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

/* "CN=foo, O=bar" of a certificate's subject or issuer, escaped. */
static void name_text(const X509_NAME *name, char out[SUBJECT_MAX])
{
	char raw[256];

	out[0] = '\0';
	if (X509_NAME_oneline(name, raw, sizeof(raw)) == NULL)
		strcpy(raw, "?");
	append_escaped(out, SUBJECT_MAX, raw, strlen(raw));
}

static bool looks_like_der(const void *p, size_t n)
{
	return n > 0 && ((const unsigned char *)p)[0] == 0x30;
}

/* ---- Parsing --------------------------------------------------------------------------------- */

static int parse_chain(struct hm_certcheck *c, const void *pem, size_t n, STACK_OF(X509) * chain)
{
	BIO *bio;
	X509 *x;

	if (n > HM_CERTCHECK_INPUT_MAX)
		return refuse(c, HM_CERTCHECK_TOO_LARGE, "CERT.pem is larger than %u KiB",
			      HM_CERTCHECK_INPUT_MAX / 1024);
	if (looks_like_der(pem, n))
		return refuse(c, HM_CERTCHECK_NOT_PEM,
			      "CERT.pem is DER, not PEM (convert it: openssl x509 -inform der)");
	if (memchr(pem, '\0', n) != NULL)
		return refuse(c, HM_CERTCHECK_NOT_PEM,
			      "CERT.pem is not PEM text (it holds NUL bytes)");
	if (memmem(pem, n, "PRIVATE KEY-----", 16) != NULL)
		return refuse(c, HM_CERTCHECK_KEY_IN_CERT,
			      "CERT.pem holds a private key: give the key in KEY.pem only");
	if ((bio = BIO_new_mem_buf(pem, (int)n)) == NULL)
		return -ENOMEM;
	ERR_clear_error();
	while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
		if (sk_X509_num(chain) == HM_CERTCHECK_CHAIN_MAX) {
			X509_free(x);
			BIO_free(bio);
			return refuse(c, HM_CERTCHECK_CHAIN_LENGTH,
				      "CERT.pem holds more than %d certificates",
				      HM_CERTCHECK_CHAIN_MAX);
		}
		if (sk_X509_push(chain, x) == 0) {
			X509_free(x);
			BIO_free(bio);
			return -ENOMEM;
		}
	}
	BIO_free(bio);
	if (!last_error_is_no_start_line())
		return refuse(c, HM_CERTCHECK_BAD_CERT,
			      "CERT.pem: certificate %d does not parse (%s)",
			      sk_X509_num(chain) + 1, ossl_reason());
	ERR_clear_error();
	if (sk_X509_num(chain) == 0)
		return refuse(
		    c, HM_CERTCHECK_NO_CERT,
		    "CERT.pem holds no certificate (no -----BEGIN CERTIFICATE----- block)");
	return 0;
}

/* Each certificate must be issued (names, key identifiers) and signed by the next one. */
static int check_order(struct hm_certcheck *c, STACK_OF(X509) * chain)
{
	for (int i = 0; i + 1 < sk_X509_num(chain); i++) {
		X509 *sub = sk_X509_value(chain, i), *iss = sk_X509_value(chain, i + 1);
		EVP_PKEY *ik = X509_get0_pubkey(iss);
		char a[SUBJECT_MAX], b[SUBJECT_MAX];

		if (X509_check_issued(iss, sub) == X509_V_OK && ik != NULL &&
		    X509_verify(sub, ik) == 1)
			continue;
		name_text(X509_get_subject_name(sub), a);
		name_text(X509_get_subject_name(iss), b);
		return refuse(
		    c, HM_CERTCHECK_CHAIN_ORDER,
		    "certificate chain out of order: certificate %d (%s) is not issued by "
		    "certificate %d (%s); give the leaf first, then each issuer",
		    i + 1, a, i + 2, b);
	}
	ERR_clear_error();
	return 0;
}

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	*(bool *)u = true;
	return -1;
}

static int parse_key(struct hm_certcheck *c, const void *pem, size_t n, EVP_PKEY **out)
{
	bool asked = false;
	EVP_PKEY *k, *extra;
	BIO *bio;

	if (n > HM_CERTCHECK_INPUT_MAX)
		return refuse(c, HM_CERTCHECK_TOO_LARGE, "KEY.pem is larger than %u KiB",
			      HM_CERTCHECK_INPUT_MAX / 1024);
	if (looks_like_der(pem, n) || memchr(pem, '\0', n) != NULL)
		return refuse(c, HM_CERTCHECK_BAD_KEY, "KEY.pem is not PEM text");
	/* OpenSSL 3's decoders say "unsupported" for text without a key block: look first. */
	if (memmem(pem, n, "PRIVATE KEY-----", 16) == NULL)
		return refuse(c, HM_CERTCHECK_NO_KEY,
			      "KEY.pem holds no private key (no -----BEGIN ... PRIVATE KEY----- "
			      "block)");
	if ((bio = BIO_new_mem_buf(pem, (int)n)) == NULL)
		return -ENOMEM;
	ERR_clear_error();
	k = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
	if (k == NULL) {
		BIO_free(bio);
		if (asked)
			return refuse(c, HM_CERTCHECK_KEY_ENCRYPTED,
				      "KEY.pem holds an encrypted key: give it unencrypted (the "
				      "router has no one to ask for a passphrase)");
		return refuse(c, HM_CERTCHECK_BAD_KEY,
			      "KEY.pem: the private key does not parse (%s)", ossl_reason());
	}
	extra = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, &asked);
	BIO_free(bio);
	ERR_clear_error();
	if (extra != NULL) {
		EVP_PKEY_free(extra);
		EVP_PKEY_free(k);
		return refuse(c, HM_CERTCHECK_BAD_KEY, "KEY.pem holds more than one private key");
	}
	*out = k;
	return 0;
}

/* RSA >= 2048 bits or ECDSA P-256/P-384: what every TLS client takes and OpenSSL's security
 * level 2 allows. */
static int check_key_type(struct hm_certcheck *c, EVP_PKEY *k)
{
	int id = EVP_PKEY_get_base_id(k);

	if (id == EVP_PKEY_RSA) {
		int bits = EVP_PKEY_get_bits(k);

		if (bits < 2048)
			return refuse(c, HM_CERTCHECK_WEAK,
				      "the RSA key has %d bits; at least 2048 are needed", bits);
		snprintf(c->key_type, sizeof(c->key_type), "RSA %d", bits);
		return 0;
	}
	if (id == EVP_PKEY_EC) {
		char group[64] = "";
		size_t len = 0;

		if (EVP_PKEY_get_group_name(k, group, sizeof(group), &len) != 1)
			strcpy(group, "?");
		if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
			strcpy(c->key_type, "ECDSA P-256");
			return 0;
		}
		if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
			strcpy(c->key_type, "ECDSA P-384");
			return 0;
		}
		return refuse(c, HM_CERTCHECK_KEY_TYPE,
			      "the key is ECDSA on curve %s; only P-256 and P-384 are supported",
			      group);
	}
	return refuse(c, HM_CERTCHECK_KEY_TYPE,
		      "the key is %s; only RSA and ECDSA (P-256, P-384) are supported",
		      OBJ_nid2sn(id) != NULL ? OBJ_nid2sn(id) : "of an unknown type");
}

/* Keys and signatures in the chain: at least 112 bits of security, as the router's OpenSSL
 * (security level 2) requires; a self-signed root's own signature is not used by anyone. */
static int check_strength(struct hm_certcheck *c, STACK_OF(X509) * chain)
{
	for (int i = 0; i < sk_X509_num(chain); i++) {
		X509 *x = sk_X509_value(chain, i);
		EVP_PKEY *k = X509_get0_pubkey(x);
		int mdnid = 0, pknid = 0, secbits = 0;
		uint32_t flags = 0;

		if (k == NULL)
			return refuse(c, HM_CERTCHECK_BAD_CERT,
				      "certificate %d: its public key does not parse (%s)", i + 1,
				      ossl_reason());
		if (EVP_PKEY_get_security_bits(k) < MIN_SECURITY_BITS)
			return refuse(c, HM_CERTCHECK_WEAK,
				      "certificate %d has a %d-bit %s key, weaker than %d bits of "
				      "security",
				      i + 1, EVP_PKEY_get_bits(k),
				      OBJ_nid2sn(EVP_PKEY_get_base_id(k)), MIN_SECURITY_BITS);
		if (X509_get_extension_flags(x) & EXFLAG_SS)
			continue;
		if (X509_get_signature_info(x, &mdnid, &pknid, &secbits, &flags) == 1 &&
		    secbits < MIN_SECURITY_BITS)
			return refuse(c, HM_CERTCHECK_WEAK,
				      "certificate %d is signed with %s, weaker than %d bits of "
				      "security",
				      i + 1,
				      mdnid != NID_undef ? OBJ_nid2sn(mdnid) : "a weak digest",
				      MIN_SECURITY_BITS);
	}
	ERR_clear_error();
	return 0;
}

/* ---- Names ----------------------------------------------------------------------------------- */

static bool valid_dns_name(const char *s, size_t n)
{
	return hm_hostname_check(s, n, true) == 0;
}

/* The leaf's DNS SANs, lowercase, without a trailing dot; invalid ones dropped. */
static int collect_sans(struct hm_certcheck *c, X509 *leaf)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
	int n = gens != NULL ? sk_GENERAL_NAME_num(gens) : 0, e = 0;

	if (n > 0 && (c->sans = calloc((size_t)n, sizeof(char *))) == NULL)
		e = -ENOMEM;
	for (int i = 0; i < n && e == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
		const char *s;
		size_t len;
		char *dup;

		if (g->type != GEN_DNS)
			continue;
		s = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
		len = (size_t)ASN1_STRING_length(g->d.dNSName);
		if (!valid_dns_name(s, len))
			continue;
		if ((dup = malloc(HM_CERT_NAME_MAX + 1)) == NULL) {
			e = -ENOMEM;
			break;
		}
		hm_host_canon(s, len, dup);
		c->sans[c->n_sans++] = dup;
	}
	GENERAL_NAMES_free(gens);
	ERR_clear_error();
	return e;
}

/* Does a SAN cover the canonical name of kind kind? */
static bool san_covers(const char *san, const char *name, uint8_t kind)
{
	const char *dot;

	if (kind == HM_CERT_DEFAULT)
		return true;
	if (strcmp(san, name) == 0)
		return true;
	/* A host is also covered by "*.parent" when it is one label below parent. */
	if (kind == HM_CERT_EXACT && san[0] == '*' && san[1] == '.' &&
	    (dot = strchr(name, '.')) != NULL && dot > name && strcmp(dot + 1, san + 2) == 0)
		return true;
	return false;
}

static int check_coverage(struct hm_certcheck *c, const char *name, uint8_t kind)
{
	char list[HM_CERTCHECK_TEXT_MAX / 2] = "";
	size_t shown = 0;

	for (size_t i = 0; i < c->n_sans; i++)
		if (san_covers(c->sans[i], name, kind))
			return 0;
	if (kind == HM_CERT_DEFAULT)
		return 0;
	if (c->n_sans == 0)
		return refuse(c, HM_CERTCHECK_NOT_COVERED,
			      "the certificate does not cover %s: it has no DNS names "
			      "(subjectAltName; the subject CN is not used)",
			      name);
	for (; shown < c->n_sans && strlen(list) + strlen(c->sans[shown]) + 16 < sizeof(list);
	     shown++) {
		if (shown > 0)
			strcat(list, ", ");
		strcat(list, c->sans[shown]);
	}
	if (shown < c->n_sans)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), " and %zu more",
			 c->n_sans - shown);
	return refuse(c, HM_CERTCHECK_NOT_COVERED,
		      "the certificate does not cover %s: its names are %s", name, list);
}

/* ---- Output ---------------------------------------------------------------------------------- */

static int bio_take(BIO *bio, char **out, size_t *len)
{
	char *data;
	long n = BIO_get_mem_data(bio, &data);

	if (n <= 0 || (*out = malloc((size_t)n)) == NULL)
		return -ENOMEM;
	memcpy(*out, data, (size_t)n);
	*len = (size_t)n;
	return 0;
}

static int canonical(struct hm_certcheck *c, STACK_OF(X509) * chain, EVP_PKEY *k)
{
	BIO *bio = BIO_new(BIO_s_mem());
	int e = 0;

	if (bio == NULL)
		return -ENOMEM;
	for (int i = 0; i < sk_X509_num(chain) && e == 0; i++)
		if (PEM_write_bio_X509(bio, sk_X509_value(chain, i)) != 1)
			e = -ENOMEM;
	if (e == 0)
		e = bio_take(bio, &c->cert, &c->cert_len);
	BIO_free(bio);
	if (e != 0)
		return e;
	if (c->cert_len > HM_CERT_CHAIN_MAX)
		return refuse(c, HM_CERTCHECK_TOO_LARGE,
			      "the chain is %zu bytes of PEM; at most %u KiB", c->cert_len,
			      HM_CERT_CHAIN_MAX / 1024);
	if ((bio = BIO_new(BIO_s_mem())) == NULL)
		return -ENOMEM;
	if (PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL) != 1)
		e = -ENOMEM;
	if (e == 0)
		e = bio_take(bio, &c->key, &c->key_len);
	BIO_free(bio);
	if (e == 0 && c->key_len > HM_CERT_KEY_MAX)
		return refuse(c, HM_CERTCHECK_TOO_LARGE,
			      "the key is %zu bytes of PEM; at most %u KiB", c->key_len,
			      HM_CERT_KEY_MAX / 1024);
	return e;
}

int hm_certcheck_entry_id(const void *cert, size_t cert_len, const void *key, size_t key_len,
			  uint8_t out[HM_CERT_ID_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t le[4] = {(uint8_t)cert_len, (uint8_t)(cert_len >> 8), (uint8_t)(cert_len >> 16),
			 (uint8_t)(cert_len >> 24)};
	unsigned len = 0;
	int ok;

	if (ctx == NULL)
		return -ENOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, le, sizeof(le)) == 1 &&
	     EVP_DigestUpdate(ctx, cert, cert_len) == 1 &&
	     EVP_DigestUpdate(ctx, key, key_len) == 1 && EVP_DigestFinal_ex(ctx, out, &len) == 1 &&
	     len == HM_CERT_ID_LEN;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -ENOMEM;
}

/* ---- The check ------------------------------------------------------------------------------- */

static void warn(struct hm_certcheck *c, unsigned bit, const char *fmt, ...)
{
	size_t k = strlen(c->text);
	va_list ap;

	if (k > 0 && k + 2 < sizeof(c->text)) {
		memcpy(c->text + k, "; ", 3);
		k += 2;
	}
	va_start(ap, fmt);
	vsnprintf(c->text + k, sizeof(c->text) - k, fmt, ap);
	va_end(ap);
	c->warnings |= bit;
}

int hm_certcheck_run(struct hm_certcheck *out, const char *name, size_t name_len, const void *cert,
		     size_t cert_len, const void *key, size_t key_len, int64_t now)
{
	char canon[HM_CERT_NAME_MAX + 1], when[32];
	STACK_OF(X509) *chain = sk_X509_new_null();
	EVP_PKEY *k = NULL;
	X509 *leaf;
	uint8_t kind;
	unsigned mdlen = 0;
	int e, n;

	memset(out, 0, sizeof(*out));
	if (chain == NULL)
		return -ENOMEM;
	if ((n = hm_cert_name_canon(name, name_len, canon, &kind)) < 0) {
		char shown[80] = "";

		append_escaped(shown, sizeof(shown), name, HM_MIN(name_len, 60));
		e = refuse(out, HM_CERTCHECK_NAME,
			   "invalid certificate name \"%s\": give a host name, *.domain or default",
			   shown);
		goto done;
	}
	if ((e = parse_chain(out, cert, cert_len, chain)) != 0 ||
	    (e = check_order(out, chain)) != 0 || (e = parse_key(out, key, key_len, &k)) != 0 ||
	    (e = check_key_type(out, k)) != 0 || (e = check_strength(out, chain)) != 0)
		goto done;
	leaf = sk_X509_value(chain, 0);
	if (X509_check_private_key(leaf, k) != 1) {
		e = refuse(out, HM_CERTCHECK_KEY_MISMATCH,
			   "the private key does not match the certificate (KEY.pem belongs to "
			   "another certificate)");
		goto done;
	}
	out->not_before = asn1_unix(X509_get0_notBefore(leaf));
	out->not_after = asn1_unix(X509_get0_notAfter(leaf));
	if (out->not_after < now) {
		utc(out->not_after, when);
		e = refuse(out, HM_CERTCHECK_EXPIRED, "the certificate expired on %s", when);
		goto done;
	}
	if ((e = collect_sans(out, leaf)) != 0 || (e = check_coverage(out, canon, kind)) != 0)
		goto done;
	if ((e = canonical(out, chain, k)) != 0 ||
	    (e = hm_certcheck_entry_id(out->cert, out->cert_len, out->key, out->key_len,
				       out->id)) != 0)
		goto done;
	if (X509_digest(leaf, EVP_sha256(), out->leaf_sha256, &mdlen) != 1 || mdlen != 32) {
		e = -ENOMEM;
		goto done;
	}
	out->chain_len = (unsigned)sk_X509_num(chain);
	if (out->not_before > now) {
		utc(out->not_before, when);
		warn(out, HM_CERTCHECK_W_NOT_YET_VALID, "the certificate is not valid before %s",
		     when);
	}
	if (out->not_after - now < (int64_t)HM_CERTCHECK_WARN_DAYS * 86400) {
		utc(out->not_after, when);
		warn(out, HM_CERTCHECK_W_EXPIRES_SOON, "the certificate expires in %lld hours (%s)",
		     (long long)((out->not_after - now) / 3600), when);
	}
done:
	EVP_PKEY_free(k);
	sk_X509_pop_free(chain, X509_free);
	ERR_clear_error();
	return e;
}

void hm_certcheck_fini(struct hm_certcheck *c)
{
	if (c->key != NULL)
		OPENSSL_cleanse(c->key, c->key_len);
	free(c->key);
	free(c->cert);
	for (size_t i = 0; i < c->n_sans; i++)
		free(c->sans[i]);
	free(c->sans);
	memset(c, 0, sizeof(*c));
}
