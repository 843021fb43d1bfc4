/*
 * What the origin checks before it acknowledges `hermodctl cert put NAME CERT.pem KEY.pem`
 * (docs/tls.md, section 1), and what it derives for the journal, the edges' stores and the admin
 * `certs` command: the canonical PEM (chain leaf first, key as unencrypted PKCS#8), the entry id,
 * the leaf's SHA-256 fingerprint, its validity and its DNS names.
 *
 * The checks, in order (the first failure is the reason): NAME is a host, "*.domain" or
 * "default"; CERT.pem is PEM, holds 1..10 certificates and no private key; each certificate is
 * issued and signed by the next one; KEY.pem holds one unencrypted RSA (>= 2048 bits) or ECDSA
 * P-256/P-384 key; no signature in the chain is weaker than 112 bits (SHA-1, MD5), except a
 * self-signed root's; the key matches the leaf; the leaf has not expired; its DNS SANs cover NAME
 * (a host: an equal SAN or a wildcard SAN one label above; "*.domain": the same wildcard SAN;
 * "default": anything). Not yet valid, and expiring within 7 days, are warnings.
 *
 * Every text is one line of printable ASCII: names and subjects taken from a certificate are
 * escaped, and no text ever holds key material.
 *
 * Uses OpenSSL 3 (libcrypto); thread-safe (no shared state).
 */
#ifndef HM_SYNCD_CERTCHECK_H
#define HM_SYNCD_CERTCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "common/certstore.h"

#define HM_CERTCHECK_CHAIN_MAX 10
#define HM_CERTCHECK_INPUT_MAX (256u * 1024) /* bytes of either input file */
#define HM_CERTCHECK_WARN_DAYS 7
#define HM_CERTCHECK_TEXT_MAX  512

/* XX(name, summary): why a certificate was refused (the full reason, with details, is in
 * hm_certcheck.text). */
#define HM_CERTCHECK_REJECT_MAP(XX)                                                                \
	XX(NONE, "accepted")                                                                       \
	XX(NAME, "invalid certificate name")                                                       \
	XX(TOO_LARGE, "input too large")                                                           \
	XX(NOT_PEM, "certificate file is not PEM")                                                 \
	XX(NO_CERT, "no certificate")                                                              \
	XX(BAD_CERT, "certificate does not parse")                                                 \
	XX(KEY_IN_CERT, "private key in the certificate file")                                     \
	XX(CHAIN_LENGTH, "chain too long")                                                         \
	XX(CHAIN_ORDER, "chain out of order")                                                      \
	XX(NO_KEY, "no private key")                                                               \
	XX(BAD_KEY, "private key does not parse")                                                  \
	XX(KEY_ENCRYPTED, "private key is encrypted")                                              \
	XX(KEY_TYPE, "unsupported key type")                                                       \
	XX(WEAK, "key or signature too weak")                                                      \
	XX(KEY_MISMATCH, "key does not match the certificate")                                     \
	XX(EXPIRED, "certificate expired")                                                         \
	XX(NOT_COVERED, "certificate does not cover the name")

enum hm_certcheck_reject {
#define HM_CERTCHECK_ENUM(name, summary) HM_CERTCHECK_##name,
	HM_CERTCHECK_REJECT_MAP(HM_CERTCHECK_ENUM)
#undef HM_CERTCHECK_ENUM
};

/* Warning bits. */
#define HM_CERTCHECK_W_NOT_YET_VALID 1u
#define HM_CERTCHECK_W_EXPIRES_SOON  2u

struct hm_certcheck {
	unsigned reject;		  /* enum hm_certcheck_reject */
	unsigned warnings;		  /* HM_CERTCHECK_W_* */
	char text[HM_CERTCHECK_TEXT_MAX]; /* the reason (rejected) or the warnings, or "" */
	/* What an accepted certificate becomes (owned; hm_certcheck_fini frees them). */
	char *cert; /* canonical chain PEM, leaf first */
	size_t cert_len;
	char *key; /* canonical key PEM (PKCS#8, unencrypted) */
	size_t key_len;
	uint8_t id[HM_CERT_ID_LEN];    /* hm_certcheck_entry_id(cert, key) */
	uint8_t leaf_sha256[32];       /* SHA-256 of the leaf's DER: its fingerprint */
	int64_t not_before, not_after; /* Unix seconds */
	char key_type[24];	       /* "ECDSA P-256", "RSA 2048" */
	unsigned chain_len;
	char **sans; /* the leaf's DNS names, lowercase, printable */
	size_t n_sans;
};

/*
 * Checks a certificate put. name/cert/key are borrowed for the call; now is the current time in
 * Unix seconds (a parameter so that tests can move it). Returns 0 (accepted: the derived fields
 * are filled; out->warnings and out->text may say more), -EINVAL (refused: out->reject and
 * out->text say why), or -ENOMEM. In every case call hm_certcheck_fini(out) afterwards.
 */
int hm_certcheck_run(struct hm_certcheck *out, const char *name, size_t name_len, const void *cert,
		     size_t cert_len, const void *key, size_t key_len, int64_t now);

/* Frees what hm_certcheck_run() allocated. */
void hm_certcheck_fini(struct hm_certcheck *c);

/* The short summary of a reject code ("chain out of order"). Never NULL. */
const char *hm_certcheck_reject_name(unsigned reject);

/*
 * The id of a store entry: SHA-256 of le32(cert_len) | cert | key (docs/tls.md). The edge
 * recomputes it for every cert.put it applies. Returns 0 or -ENOMEM.
 */
int hm_certcheck_entry_id(const void *cert, size_t cert_len, const void *key, size_t key_len,
			  uint8_t out[HM_CERT_ID_LEN]);

#endif
