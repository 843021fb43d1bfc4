/*
 * Tests syncd/certcheck.c with real certificates made here (tests/unit/certgen.h): what is
 * accepted (ECDSA P-256/P-384, RSA, chains, wildcards, default) and what it becomes (canonical
 * PEM, id, fingerprint, dates, names), each reason for a refusal, the warnings, and that every
 * text is one printable line with no key material in it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "syncd/certcheck.h"
#include "tests/unit/certgen.h"
#include "tests/unit/hm_check.h"

#define DAY 86400L

static int64_t now;
static EVP_PKEY *ca_key, *leaf_key, *other_key;
static X509 *ca;

static void setup(void)
{
	now = (int64_t)time(NULL);
	ca_key = certgen_key("ec256");
	leaf_key = certgen_key("ec256");
	other_key = certgen_key("ec256");
	ca = certgen_cert(&(struct certgen){.cn = "Test CA",
					    .key = ca_key,
					    .ca = true,
					    .not_before = -DAY,
					    .not_after = 3650 * DAY});
}

static void teardown(void)
{
	X509_free(ca);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(leaf_key);
	EVP_PKEY_free(other_key);
}

/* A leaf for sans, signed by the test CA, valid from -1 day to +days. */
static X509 *leaf(const char *sans, EVP_PKEY *key, long days)
{
	return certgen_cert(&(struct certgen){.cn = "leaf",
					      .sans = sans,
					      .key = key,
					      .issuer = ca,
					      .issuer_key = ca_key,
					      .not_before = -DAY,
					      .not_after = days * DAY});
}

/* Every text hermod may print: one line of printable ASCII, and no piece of the key (no 16
 * bytes of any base64 line of KEY.pem). */
static void check_text(const struct hm_certcheck *c, const char *key, size_t key_len)
{
	for (const char *p = c->text; *p != '\0'; p++)
		ck_assert_msg(*p >= 0x20 && *p < 0x7f, "unprintable byte 0x%02x in \"%s\"",
			      (unsigned char)*p, c->text);
	for (size_t i = 0; i < key_len;) {
		const char *nl = memchr(key + i, '\n', key_len - i);
		size_t len = (nl != NULL ? (size_t)(nl - key) : key_len) - i;

		if (len >= 16 && key[i] != '-')
			ck_assert_ptr_null(memmem(c->text, strlen(c->text), key + i, 16));
		i += len + 1;
	}
}

/* Runs the check on PEM strings; returns the result code, out filled. */
static int run(struct hm_certcheck *out, const char *name, const char *cert, size_t cert_len,
	       const char *key, size_t key_len)
{
	int e = hm_certcheck_run(out, name, strlen(name), cert, cert_len, key, key_len, now);

	check_text(out, key, key_len);
	return e;
}

/* The check of (chain PEM, key PEM) for name must be refused for `why`, its text holding
 * `words`. */
static void refused(const char *name, const char *cert, size_t cl, const char *key, size_t kl,
		    unsigned why, const char *words)
{
	struct hm_certcheck c;
	int e = run(&c, name, cert, cl, key, kl);

	ck_assert_msg(e == -EINVAL, "%s: accepted (%d), want %s", name, e,
		      hm_certcheck_reject_name(why));
	ck_assert_msg(c.reject == why, "%s: refused for %s (%s), want %s", name,
		      hm_certcheck_reject_name(c.reject), c.text, hm_certcheck_reject_name(why));
	ck_assert_msg(strstr(c.text, words) != NULL, "\"%s\" lacks \"%s\"", c.text, words);
	ck_assert_ptr_null(c.cert);
	hm_certcheck_fini(&c);
}

START_TEST(accepts_a_chain_and_derives_its_metadata)
{
	X509 *l = leaf("DNS:a.example.com,DNS:B.Example.com", leaf_key, 90);
	size_t cl, kl, canon_len;
	char *cert = certgen_pem_chain(&cl, l, ca, NULL);
	char *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	struct hm_certcheck c;
	uint8_t fp[32], id[HM_CERT_ID_LEN];
	unsigned fplen;

	ck_assert_int_eq(run(&c, "A.Example.COM.", cert, cl, key, kl), 0);
	ck_assert_uint_eq(c.reject, HM_CERTCHECK_NONE);
	ck_assert_uint_eq(c.warnings, 0);
	ck_assert_str_eq(c.text, "");
	ck_assert_str_eq(c.key_type, "ECDSA P-256");
	ck_assert_uint_eq(c.chain_len, 2);
	ck_assert_uint_eq(c.n_sans, 2);
	ck_assert_str_eq(c.sans[0], "a.example.com");
	ck_assert_str_eq(c.sans[1], "b.example.com");
	ck_assert_int_le(llabs(c.not_after - (now + 90 * DAY)), 5);
	ck_assert_int_le(llabs(c.not_before - (now - DAY)), 5);
	X509_digest(l, EVP_sha256(), fp, &fplen);
	ck_assert_mem_eq(c.leaf_sha256, fp, 32);
	/* canonical: the same PEM as written by OpenSSL, the key as PKCS#8 */
	canon_len = cl;
	ck_assert_uint_eq(c.cert_len, canon_len);
	ck_assert_mem_eq(c.cert, cert, cl);
	ck_assert_ptr_nonnull(memmem(c.key, c.key_len, "-----BEGIN PRIVATE KEY-----", 27));
	ck_assert_int_eq(hm_certcheck_entry_id(c.cert, c.cert_len, c.key, c.key_len, id), 0);
	ck_assert_mem_eq(c.id, id, sizeof(id));
	hm_certcheck_fini(&c);
	X509_free(l);
	free(cert);
	free(key);
}
END_TEST

/* Junk around the blocks, CRLF line ends, a traditional EC key after its parameters block: the
 * canonical bytes and the id are those of the clean input. */
START_TEST(canonical_form_ignores_presentation)
{
	X509 *l = leaf("DNS:a.example.com", leaf_key, 90);
	size_t cl, kl, tl;
	char *cert = certgen_pem_chain(&cl, l, ca, NULL);
	char *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	char *trad = certgen_pem_key(&tl, leaf_key, NULL, true);
	char *messy = malloc(2 * cl + 200), *messy_key = malloc(tl + 200);
	struct hm_certcheck a, b;
	size_t m = 0;

	m += (size_t)sprintf(messy + m, "Bag Attributes\r\n    friendlyName: leaf\r\n");
	for (size_t i = 0; i < cl; i++) {
		if (cert[i] == '\n')
			messy[m++] = '\r';
		messy[m++] = cert[i];
	}
	m += (size_t)sprintf(messy + m, "trailing words\n");
	sprintf(messy_key,
		"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n"
		"-----END EC PARAMETERS-----\n%s",
		trad);
	ck_assert_ptr_nonnull(strstr(trad, "BEGIN EC PRIVATE KEY"));
	ck_assert_int_eq(run(&a, "a.example.com", cert, cl, key, kl), 0);
	ck_assert_int_eq(run(&b, "a.example.com", messy, m, messy_key, strlen(messy_key)), 0);
	ck_assert_uint_eq(a.cert_len, b.cert_len);
	ck_assert_mem_eq(a.cert, b.cert, a.cert_len);
	ck_assert_uint_eq(a.key_len, b.key_len);
	ck_assert_mem_eq(a.key, b.key, a.key_len);
	ck_assert_mem_eq(a.id, b.id, HM_CERT_ID_LEN);
	hm_certcheck_fini(&a);
	hm_certcheck_fini(&b);
	X509_free(l);
	free(cert);
	free(key);
	free(trad);
	free(messy);
	free(messy_key);
}
END_TEST

START_TEST(key_types)
{
	const struct {
		const char *type, *want;
		unsigned reject;
	} cases[] = {
	    {"ec384", "ECDSA P-384", HM_CERTCHECK_NONE},
	    {"rsa2048", "RSA 2048", HM_CERTCHECK_NONE},
	    {"rsa1024", "2048", HM_CERTCHECK_WEAK},
	    {"ec521", "P-256 and P-384", HM_CERTCHECK_KEY_TYPE},
	    {"ed25519", "only RSA and ECDSA", HM_CERTCHECK_KEY_TYPE},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		EVP_PKEY *k = certgen_key(cases[i].type);
		X509 *l = leaf("DNS:k.example.com", k, 90);
		size_t cl, kl;
		char *cert = certgen_pem_chain(&cl, l, NULL),
		     *key = certgen_pem_key(&kl, k, NULL, false);
		struct hm_certcheck c;

		if (cases[i].reject == HM_CERTCHECK_NONE) {
			ck_assert_int_eq(run(&c, "k.example.com", cert, cl, key, kl), 0);
			ck_assert_str_eq(c.key_type, cases[i].want);
			hm_certcheck_fini(&c);
		} else {
			refused("k.example.com", cert, cl, key, kl, cases[i].reject, cases[i].want);
		}
		X509_free(l);
		EVP_PKEY_free(k);
		free(cert);
		free(key);
	}
}
END_TEST

/* Which names a certificate covers: exact SANs, wildcards one label deep, default anything. */
START_TEST(name_coverage)
{
	X509 *w = leaf("DNS:*.example.com,DNS:www.example.org", leaf_key, 90);
	X509 *none = leaf(NULL, leaf_key, 90);
	size_t wl, nl, kl;
	char *wc = certgen_pem_chain(&wl, w, NULL), *nc = certgen_pem_chain(&nl, none, NULL);
	char *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	const char *ok[] = {"a.example.com", "*.example.com", "www.example.org", "WWW.example.org.",
			    "default"};
	const char *no[] = {"example.com", "a.b.example.com", "*.b.example.com", "*.example.org",
			    "example.org"};
	struct hm_certcheck c;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		ck_assert_msg(run(&c, ok[i], wc, wl, key, kl) == 0, "%s: %s", ok[i], c.text);
		hm_certcheck_fini(&c);
	}
	for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
		refused(no[i], wc, wl, key, kl, HM_CERTCHECK_NOT_COVERED,
			"its names are *.example.com, www.example.org");
	/* No SAN at all: only default. */
	refused("leaf", nc, nl, key, kl, HM_CERTCHECK_NOT_COVERED, "no DNS names");
	ck_assert_int_eq(run(&c, "default", nc, nl, key, kl), 0);
	ck_assert_uint_eq(c.n_sans, 0);
	hm_certcheck_fini(&c);
	refused("bad name!", wc, wl, key, kl, HM_CERTCHECK_NAME, "invalid certificate name");
	refused("*.*.example.com", wc, wl, key, kl, HM_CERTCHECK_NAME, "invalid certificate name");
	X509_free(w);
	X509_free(none);
	free(wc);
	free(nc);
	free(key);
}
END_TEST

START_TEST(validity)
{
	X509 *expired = certgen_cert(&(struct certgen){.cn = "e",
						       .sans = "DNS:e.example.com",
						       .key = leaf_key,
						       .issuer = ca,
						       .issuer_key = ca_key,
						       .not_before = -30 * DAY,
						       .not_after = -DAY});
	X509 *future = certgen_cert(&(struct certgen){.cn = "f",
						      .sans = "DNS:e.example.com",
						      .key = leaf_key,
						      .issuer = ca,
						      .issuer_key = ca_key,
						      .not_before = 2 * DAY,
						      .not_after = 90 * DAY});
	X509 *soon = leaf("DNS:e.example.com", leaf_key, 3);
	size_t el, fl, sl, kl;
	char *ec = certgen_pem_chain(&el, expired, NULL),
	     *fc = certgen_pem_chain(&fl, future, NULL);
	char *sc = certgen_pem_chain(&sl, soon, NULL),
	     *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	struct hm_certcheck c;

	refused("e.example.com", ec, el, key, kl, HM_CERTCHECK_EXPIRED, "expired on 20");
	ck_assert_int_eq(run(&c, "e.example.com", fc, fl, key, kl), 0);
	ck_assert_uint_eq(c.warnings, HM_CERTCHECK_W_NOT_YET_VALID);
	ck_assert_ptr_nonnull(strstr(c.text, "not valid before"));
	hm_certcheck_fini(&c);
	ck_assert_int_eq(run(&c, "e.example.com", sc, sl, key, kl), 0);
	ck_assert_uint_eq(c.warnings, HM_CERTCHECK_W_EXPIRES_SOON);
	ck_assert_ptr_nonnull(strstr(c.text, "expires in 7")); /* 71 or 72 hours */
	ck_assert_ptr_nonnull(strstr(c.text, " hours ("));
	hm_certcheck_fini(&c);
	X509_free(expired);
	X509_free(future);
	X509_free(soon);
	free(ec);
	free(fc);
	free(sc);
	free(key);
}
END_TEST

START_TEST(key_must_match)
{
	X509 *l = leaf("DNS:a.example.com", leaf_key, 90);
	size_t cl, kl, rl;
	char *cert = certgen_pem_chain(&cl, l, ca, NULL);
	char *key = certgen_pem_key(&kl, other_key, NULL, false);
	EVP_PKEY *rsa = certgen_key("rsa2048");
	char *rkey = certgen_pem_key(&rl, rsa, NULL, false);

	refused("a.example.com", cert, cl, key, kl, HM_CERTCHECK_KEY_MISMATCH,
		"does not match the certificate");
	refused("a.example.com", cert, cl, rkey, rl, HM_CERTCHECK_KEY_MISMATCH,
		"does not match the certificate");
	X509_free(l);
	EVP_PKEY_free(rsa);
	free(cert);
	free(key);
	free(rkey);
}
END_TEST

START_TEST(chain_order)
{
	EVP_PKEY *ik = certgen_key("ec256"), *ok = certgen_key("ec256");
	X509 *inter = certgen_cert(&(struct certgen){.cn = "Intermediate",
						     .key = ik,
						     .issuer = ca,
						     .issuer_key = ca_key,
						     .ca = true,
						     .not_before = -DAY,
						     .not_after = 365 * DAY});
	X509 *other_ca = certgen_cert(&(struct certgen){
	    .cn = "Other CA", .key = ok, .ca = true, .not_before = -DAY, .not_after = 365 * DAY});
	X509 *l = certgen_cert(&(struct certgen){.cn = "leaf",
						 .sans = "DNS:a.example.com",
						 .key = leaf_key,
						 .issuer = inter,
						 .issuer_key = ik,
						 .not_before = -DAY,
						 .not_after = 90 * DAY});
	size_t n1, n2, n3, n4, kl;
	char *good = certgen_pem_chain(&n1, l, inter, ca, NULL);
	char *swapped = certgen_pem_chain(&n2, l, ca, inter, NULL);
	char *reversed = certgen_pem_chain(&n3, ca, inter, l, NULL);
	char *foreign = certgen_pem_chain(&n4, l, other_ca, NULL);
	char *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	struct hm_certcheck c;

	ck_assert_int_eq(run(&c, "a.example.com", good, n1, key, kl), 0);
	ck_assert_uint_eq(c.chain_len, 3);
	hm_certcheck_fini(&c);
	refused("a.example.com", swapped, n2, key, kl, HM_CERTCHECK_CHAIN_ORDER,
		"certificate 1 (/CN=leaf) is not issued by certificate 2 (/CN=Test CA)");
	refused("a.example.com", reversed, n3, key, kl, HM_CERTCHECK_CHAIN_ORDER,
		"certificate 1 (/CN=Test CA) is not issued by certificate 2 (/CN=Intermediate)");
	refused("a.example.com", foreign, n4, key, kl, HM_CERTCHECK_CHAIN_ORDER,
		"give the leaf first");
	X509_free(inter);
	X509_free(other_ca);
	X509_free(l);
	EVP_PKEY_free(ik);
	EVP_PKEY_free(ok);
	free(good);
	free(swapped);
	free(reversed);
	free(foreign);
	free(key);
}
END_TEST

START_TEST(garbage)
{
	X509 *l = leaf("DNS:a.example.com", leaf_key, 90);
	size_t cl, kl, el, tl;
	char *cert = certgen_pem_chain(&cl, l, NULL),
	     *key = certgen_pem_key(&kl, leaf_key, NULL, false);
	char *enc = certgen_pem_key(&el, leaf_key, "secret", false);
	char *enc_trad = certgen_pem_key(&tl, leaf_key, "secret", true);
	char *both = malloc(cl + kl + 1), *two_keys = malloc(2 * kl + 1), *big;
	const char *bad_b64 =
	    "-----BEGIN CERTIFICATE-----\nMIIB!!notbase64\n-----END CERTIFICATE-----\n";
	const char *bad_key =
	    "-----BEGIN PRIVATE KEY-----\nMIIB!!notbase64\n-----END PRIVATE KEY-----\n";
	unsigned char der[] = {0x30, 0x82, 0x01, 0x0a, 0x02};

	ck_assert_ptr_nonnull(both);
	ck_assert_ptr_nonnull(two_keys);
	sprintf(both, "%s%s", cert, key);
	sprintf(two_keys, "%s%s", key, key);
	refused("a.example.com", "hello", 5, key, kl, HM_CERTCHECK_NO_CERT, "holds no certificate");
	refused("a.example.com", "", 0, key, kl, HM_CERTCHECK_NO_CERT, "holds no certificate");
	refused("a.example.com", bad_b64, strlen(bad_b64), key, kl, HM_CERTCHECK_BAD_CERT,
		"certificate 1 does not parse");
	refused("a.example.com", (const char *)der, sizeof(der), key, kl, HM_CERTCHECK_NOT_PEM,
		"DER");
	refused("a.example.com", both, strlen(both), key, kl, HM_CERTCHECK_KEY_IN_CERT,
		"give the key in KEY.pem");
	refused("a.example.com", cert, cl, "nope", 4, HM_CERTCHECK_NO_KEY, "holds no private key");
	refused("a.example.com", cert, cl, cert, cl, HM_CERTCHECK_NO_KEY, "holds no private key");
	refused("a.example.com", cert, cl, bad_key, strlen(bad_key), HM_CERTCHECK_BAD_KEY,
		"does not parse");
	refused("a.example.com", cert, cl, enc, el, HM_CERTCHECK_KEY_ENCRYPTED, "unencrypted");
	refused("a.example.com", cert, cl, enc_trad, tl, HM_CERTCHECK_KEY_ENCRYPTED, "unencrypted");
	refused("a.example.com", cert, cl, two_keys, strlen(two_keys), HM_CERTCHECK_BAD_KEY,
		"more than one private key");
	/* 11 certificates */
	big = malloc(11 * cl + 1);
	big[0] = '\0';
	for (int i = 0; i < 11; i++)
		strcat(big, cert);
	refused("a.example.com", big, strlen(big), key, kl, HM_CERTCHECK_CHAIN_LENGTH,
		"more than 10 certificates");
	free(big);
	big = calloc(1, HM_CERTCHECK_INPUT_MAX + 2);
	memset(big, 'a', HM_CERTCHECK_INPUT_MAX + 1);
	refused("a.example.com", big, HM_CERTCHECK_INPUT_MAX + 1, key, kl, HM_CERTCHECK_TOO_LARGE,
		"larger than 256 KiB");
	refused("a.example.com", cert, cl, big, HM_CERTCHECK_INPUT_MAX + 1, HM_CERTCHECK_TOO_LARGE,
		"larger than 256 KiB");
	free(big);
	X509_free(l);
	free(cert);
	free(key);
	free(enc);
	free(enc_trad);
	free(both);
	free(two_keys);
}
END_TEST

/* A SHA-1 signature, and a name with escape sequences in the chain: refused with a clean line. */
START_TEST(weak_signatures_and_hostile_names)
{
	X509 *sha1 = certgen_cert(&(struct certgen){.cn = "sha1",
						    .sans = "DNS:a.example.com",
						    .key = leaf_key,
						    .issuer = ca,
						    .issuer_key = ca_key,
						    .not_before = -DAY,
						    .not_after = 90 * DAY,
						    .md = "SHA1"});
	X509 *evil = certgen_cert(&(struct certgen){.cn = "evil\x1b[31mred\x07\n",
						    .sans = "DNS:a.example.com",
						    .key = leaf_key,
						    .not_before = -DAY,
						    .not_after = 90 * DAY});
	size_t sl, el, kl;
	char *sc = certgen_pem_chain(&sl, sha1, ca, NULL),
	     *ec = certgen_pem_chain(&el, evil, ca, NULL);
	char *key = certgen_pem_key(&kl, leaf_key, NULL, false);

	refused("a.example.com", sc, sl, key, kl, HM_CERTCHECK_WEAK,
		"certificate 1 is signed with SHA1");
	refused("a.example.com", ec, el, key, kl, HM_CERTCHECK_CHAIN_ORDER,
		"/CN=evil\\x1B[31mred\\x07\\x0A)");
	X509_free(sha1);
	X509_free(evil);
	free(sc);
	free(ec);
	free(key);
}
END_TEST

START_TEST(reject_names)
{
	ck_assert_str_eq(hm_certcheck_reject_name(HM_CERTCHECK_NONE), "accepted");
	ck_assert_str_eq(hm_certcheck_reject_name(HM_CERTCHECK_CHAIN_ORDER), "chain out of order");
	ck_assert_str_eq(hm_certcheck_reject_name(HM_CERTCHECK_NOT_COVERED),
			 "certificate does not cover the name");
	ck_assert_str_eq(hm_certcheck_reject_name(999), "unknown");
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("certcheck");
	TCase *tc = tcase_create("certcheck");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, accepts_a_chain_and_derives_its_metadata);
	tcase_add_test(tc, canonical_form_ignores_presentation);
	tcase_add_test(tc, key_types);
	tcase_add_test(tc, name_coverage);
	tcase_add_test(tc, validity);
	tcase_add_test(tc, key_must_match);
	tcase_add_test(tc, chain_order);
	tcase_add_test(tc, garbage);
	tcase_add_test(tc, weak_signatures_and_hostile_names);
	tcase_add_test(tc, reject_names);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
