/*
 * Fuzz target: the TLS engine (router/tls.c) as a worker drives it, fed a client's bytes in
 * pieces of every size: the fast path's gathering and reading of the first record, the hand-over
 * of the same bytes to libssl, the certificate choice, alerts, output handling. The first input
 * byte seeds the piece sizes (1-7 bytes, or up to 2,000); the rest is what the client sends.
 * The engine must take no more than it is given, deliver no more than it has room for, and fail
 * cleanly; the sanitizers catch the rest. The store (one ECDSA certificate as default, two
 * ticket keys) is made once, in a temporary directory removed at exit (a run that aborts, which
is how a target reports a failure, leaves /tmp/hermod-fuzz-tls.* behind).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/certstore.h"
#include "router/tls.h"
#include "tests/unit/certgen.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static char dir[] = "/tmp/hermod-fuzz-tls.XXXXXX";
static struct hm_certstore_reader *rd;
static struct hm_tls_ctx *t;

static void cleanup(void)
{
	DIR *dp = opendir(dir);
	struct dirent *e;

	hm_tls_ctx_free(t);
	hm_certstore_reader_free(rd);
	while (dp != NULL && (e = readdir(dp)) != NULL) {
		char p[sizeof(dir) + 256];

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	if (dp != NULL)
		closedir(dp);
	rmdir(dir);
}

static void init(void)
{
	struct hm_certstore_writer *w;
	EVP_PKEY *k = certgen_key("ec256");
	X509 *x = certgen_cert(&(struct certgen){.cn = "a.example.com",
						 .sans = "DNS:a.example.com",
						 .key = k,
						 .not_before = -60,
						 .not_after = 86400});
	size_t cl, kl;
	char *cert = certgen_pem_chain(&cl, x, NULL), *key = certgen_pem_key(&kl, k, NULL, false);
	struct hm_cert_put p = {.name = "default",
				.name_len = 7,
				.cert = cert,
				.cert_len = cl,
				.key = key,
				.key_len = kl,
				.not_after = time(NULL) + 86400};
	struct hm_ticket_key keys[2];
	char at[sizeof(dir) + 8];

	if (mkdtemp(dir) == NULL)
		abort();
	atexit(cleanup);
	snprintf(at, sizeof(at), "%s/store", dir);
	memset(keys, 3, sizeof(keys));
	memset(keys[1].name, 4, sizeof(keys[1].name));
	memset(p.id, 1, sizeof(p.id));
	if (hm_certstore_writer_open(&w, at, NULL, 0, 0) != 0 || hm_certstore_begin(w) != 0 ||
	    hm_certstore_put(w, &p) != 0 || hm_certstore_set_ticket_keys(w, keys, 2) != 0 ||
	    hm_certstore_commit(w, 1, 1) != 0)
		abort();
	hm_certstore_writer_close(w);
	if (hm_certstore_reader_new(&rd, at) != 0 ||
	    hm_tls_ctx_new(&t, rd, &(struct hm_tls_config){.h2 = true, .num_tickets = -1}) != 0)
		abort();
	X509_free(x);
	EVP_PKEY_free(k);
	free(cert);
	free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	static uint8_t plain[20000];
	struct hm_tls_conn *c;
	uint32_t sz = 0x9e3779b9;

	if (t == NULL)
		init();
	if (n < 1)
		return 0;
	sz ^= d[0];
	d++, n--;
	if (hm_tls_conn_new(&c, t) != 0)
		abort();
	while (n > 0) {
		size_t piece, used = 0, pl = 0, on;
		const uint8_t *o;
		int rc;

		sz = sz * 1103515245u + 12345u;
		piece = 1 + (sz >> 8) % (((sz >> 4) & 3) == 0 ? 7 : 2000);
		if (piece > n)
			piece = n;
		rc = hm_tls_conn_recv(c, d, piece, &used, plain, sizeof(plain), &pl);
		if (used > piece || pl > sizeof(plain))
			abort();
		if ((on = hm_tls_conn_out(c, &o)) > 0) {
			volatile uint8_t touch = o[0] ^ o[on - 1]; /* the output is readable */

			(void)touch;
			hm_tls_conn_out_done(c, on);
		}
		if (rc < 0 || rc == HM_TLS_CLOSED || (used == 0 && pl == 0))
			break;
		d += used, n -= used;
	}
	if (hm_tls_conn_close_notify(c) == 0) {
		const uint8_t *o;
		size_t on = hm_tls_conn_out(c, &o);

		if (on > 0)
			hm_tls_conn_out_done(c, on);
	}
	hm_tls_conn_free(c);
	return 0;
}
