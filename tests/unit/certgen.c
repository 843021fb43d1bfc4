/*
 * Test certificates in memory (certgen.h).
 */
#include "tests/unit/certgen.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static void fail(const char *what)
{
	fprintf(stderr, "certgen: %s failed\n", what);
	abort();
}

EVP_PKEY *certgen_key(const char *type)
{
	EVP_PKEY *k = NULL;

	if (strcmp(type, "ec256") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (strcmp(type, "ec384") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
	else if (strcmp(type, "ec521") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-521");
	else if (strcmp(type, "rsa1024") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
	else if (strcmp(type, "rsa2048") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	else if (strcmp(type, "ed25519") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (k == NULL)
		fail(type);
	return k;
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, issuer != NULL ? issuer : x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (ext == NULL || X509_add_ext(x, ext, -1) != 1)
		fail("extension");
	X509_EXTENSION_free(ext);
}

X509 *certgen_cert(const struct certgen *g)
{
	static long serial = 1000;
	X509 *x = X509_new();
	X509_NAME *name = X509_NAME_new();

	if (x == NULL || name == NULL)
		fail("X509_new");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), g->not_before);
	X509_gmtime_adj(X509_getm_notAfter(x), g->not_after);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)g->cn, -1, -1,
				   0);
	X509_set_subject_name(x, name);
	X509_set_issuer_name(x, g->issuer != NULL ? X509_get_subject_name(g->issuer) : name);
	X509_NAME_free(name);
	if (X509_set_pubkey(x, g->key) != 1)
		fail("X509_set_pubkey");
	add_ext(x, g->issuer, NID_subject_key_identifier, "hash");
	if (g->issuer != NULL)
		add_ext(x, g->issuer, NID_authority_key_identifier, "keyid:always");
	if (g->ca) {
		add_ext(x, g->issuer, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, g->issuer, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		add_ext(x, g->issuer, NID_basic_constraints, "CA:FALSE");
	}
	if (g->sans != NULL)
		add_ext(x, g->issuer, NID_subject_alt_name, g->sans);
	{
		const EVP_MD *md = EVP_get_digestbyname(g->md != NULL ? g->md : "SHA256");
		EVP_PKEY *signer = g->issuer_key != NULL ? g->issuer_key : g->key;

		/* Ed25519 signs without a separate digest. */
		if (EVP_PKEY_get_base_id(signer) == EVP_PKEY_ED25519)
			md = NULL;
		if (X509_sign(x, signer, md) == 0)
			fail("X509_sign");
	}
	return x;
}

static char *take(BIO *bio, size_t *len)
{
	char *data, *out;
	long n = BIO_get_mem_data(bio, &data);

	out = malloc((size_t)n + 1);
	if (out == NULL)
		fail("malloc");
	memcpy(out, data, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	BIO_free(bio);
	return out;
}

char *certgen_pem_chain(size_t *len, X509 *first, ...)
{
	BIO *bio = BIO_new(BIO_s_mem());
	va_list ap;

	va_start(ap, first);
	for (X509 *x = first; x != NULL; x = va_arg(ap, X509 *))
		if (PEM_write_bio_X509(bio, x) != 1)
			fail("PEM_write_bio_X509");
	va_end(ap);
	return take(bio, len);
}

char *certgen_pem_key(size_t *len, EVP_PKEY *k, const char *pass, bool traditional)
{
	BIO *bio = BIO_new(BIO_s_mem());
	const EVP_CIPHER *enc = pass != NULL ? EVP_aes_256_cbc() : NULL;
	int ok;

	if (traditional)
		ok = PEM_write_bio_PrivateKey_traditional(bio, k, enc, (unsigned char *)pass,
							  pass != NULL ? (int)strlen(pass) : 0,
							  NULL, NULL);
	else
		ok = PEM_write_bio_PrivateKey(bio, k, enc, (unsigned char *)pass,
					      pass != NULL ? (int)strlen(pass) : 0, NULL, NULL);
	if (ok != 1)
		fail("PEM_write_bio_PrivateKey");
	return take(bio, len);
}
