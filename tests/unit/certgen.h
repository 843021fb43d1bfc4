/*
 * Test certificates made in memory with OpenSSL: keys of every kind hermod must take or refuse,
 * and certificates with any names, validity, issuer and signature digest, so that the TLS and
 * certificate tests need no files and no openssl command. For tests only: errors abort.
 */
#ifndef HM_TESTS_UNIT_CERTGEN_H
#define HM_TESTS_UNIT_CERTGEN_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

/* A new key: "ec256", "ec384", "ec521", "rsa1024", "rsa2048", "ed25519". */
EVP_PKEY *certgen_key(const char *type);

struct certgen {
	const char *cn;	      /* subject CN */
	const char *sans;     /* "DNS:a.example.com,DNS:*.b.example.com", or NULL for none */
	EVP_PKEY *key;	      /* the certificate's key */
	X509 *issuer;	      /* NULL: self-signed */
	EVP_PKEY *issuer_key; /* with issuer */
	bool ca;	      /* basicConstraints CA:TRUE, keyCertSign */
	long not_before;      /* seconds from now (may be negative) */
	long not_after;	      /* seconds from now */
	const char *md;	      /* signature digest: NULL = "SHA256" */
};

/* A certificate as described. */
X509 *certgen_cert(const struct certgen *g);

/* PEM of the certificates, in the order given (a NULL-terminated list); malloc'd, with *len. */
char *certgen_pem_chain(size_t *len, X509 *first, ...);

/* PEM of the private key (PKCS#8; encrypted with AES-256-CBC under pass when pass != NULL,
 * "traditional" PEM when traditional); malloc'd, with *len. */
char *certgen_pem_key(size_t *len, EVP_PKEY *k, const char *pass, bool traditional);

#endif
