/*
 * Benchmark of the router's TLS engine (not a test: run it by hand, on a quiet machine).
 *
 *   tls_bench [--seconds S] [--dir DIR] [--rsa]
 *
 * An OpenSSL client and a server run in this one thread, bytes moved between them by hand, and
 * only the server's calls are timed (CLOCK_THREAD_CPUTIME_ID) and their heap calls counted
 * (OpenSSL's allocator hooks plus ours), so the figures are the server's CPU per connection, as a
 * router worker would spend it, without the kernel or the client. One connection is: the
 * handshake, one small HTTP request and response, close_notify: what MODE=tls-close of
 * ../shared/bench/peers.sh costs a proxy in TLS. The certificate is one ECDSA P-256 key, as in
 * peers.sh (--rsa: RSA 2048).
 *
 * Servers compared:
 *   naive      one SSL_CTX holding the certificate, OpenSSL's defaults (session cache on, two
 *              TLS 1.3 tickets), two memory BIOs per connection: a straightforward server
 *   naive+     the same with the session cache off and one ticket (what the engine sets)
 *   hermod     router/tls.c: SNI lookup in a certificate store, per-certificate SSL_CTX from
 *              the cache, stateless tickets under the store's keys, its own BIO
 * and, for scale, the crypto alone (ECDSA P-256 sign, X25519 key generation and derivation, as
 * `openssl speed` measures them), and the cost of a cache miss (the first handshake of a
 * certificate on a worker).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/certstore.h"
#include "common/util.h"
#include "router/tls.h"

static const char request[] =
    "GET / HTTP/1.1\r\nHost: bench.example.com\r\nUser-Agent: wrk\r\n\r\n";
static const char response[] = "HTTP/1.1 200 OK\r\nContent-Length: 18\r\nVia: 1.1 hermod\r\n"
			       "Connection: close\r\n\r\nhello from a dyno\n";

_Noreturn static void die(const char *what)
{
	fprintf(stderr, "tls_bench: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(1);
}

/* ---- counting the server's heap calls -------------------------------------------------------- */

/* OpenSSL's heap calls made by the server (while `counting`): counted, and their live bytes
 * tracked (a 16-byte header holds each block's size and whether the server made it). */
static int counting;
static uint64_t n_allocs;
static int64_t live_bytes;

static void *count_malloc(size_t n, const char *file, int line)
{
	uint8_t *p = malloc(n + 16);
	uint64_t hdr[2] = {n, (uint64_t)counting};

	(void)file;
	(void)line;
	n_allocs += counting;
	if (p == NULL)
		return NULL;
	memcpy(p, hdr, sizeof(hdr));
	live_bytes += counting ? (int64_t)n : 0;
	return p + 16;
}

static void count_free(void *p, const char *file, int line)
{
	uint64_t hdr[2];

	(void)file;
	(void)line;
	if (p == NULL)
		return;
	memcpy(hdr, (uint8_t *)p - 16, sizeof(hdr));
	live_bytes -= hdr[1] ? (int64_t)hdr[0] : 0;
	free((uint8_t *)p - 16);
}

static void *count_realloc(void *p, size_t n, const char *file, int line)
{
	void *q;
	size_t old;

	if (p == NULL)
		return count_malloc(n, file, line);
	memcpy(&old, (uint8_t *)p - 16, sizeof(old)); /* the size: the first header word */
	n_allocs += counting;
	if ((q = count_malloc(n, file, line)) == NULL)
		return NULL;
	n_allocs -= counting;
	memcpy(q, p, HM_MIN(old, n));
	count_free(p, file, line);
	return q;
}

static uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Server time and heap calls accumulate between on() and off(). */
static uint64_t server_ns, t0;

static void on(void)
{
	counting = 1;
	t0 = cpu_ns();
}

static void off(void)
{
	server_ns += cpu_ns() - t0;
	counting = 0;
}

/* ---- certificates ---------------------------------------------------------------------------- */

static EVP_PKEY *key;
static X509 *cert;
static char *cert_pem, *key_pem;
static size_t cert_len, key_len;

static char *pem_of(int (*write)(BIO *, void *), void *obj, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *out;
	long n;

	if (b == NULL || write(b, obj) != 1)
		die("PEM");
	n = BIO_get_mem_data(b, &data);
	out = malloc((size_t)n);
	memcpy(out, data, (size_t)n);
	*len = (size_t)n;
	BIO_free(b);
	return out;
}

static int write_x509(BIO *b, void *x)
{
	return PEM_write_bio_X509(b, x);
}

static int write_key(BIO *b, void *k)
{
	return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static void make_cert(bool rsa)
{
	X509_NAME *name;
	X509V3_CTX v3;
	X509_EXTENSION *ext;

	key = rsa ? EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048)
		  : EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	cert = X509_new();
	if (key == NULL || cert == NULL)
		die("keygen");
	X509_set_version(cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(cert), -86400);
	X509_gmtime_adj(X509_getm_notAfter(cert), 30 * 86400);
	name = X509_get_subject_name(cert);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
				   (const unsigned char *)"bench.example.com", -1, -1, 0);
	X509_set_issuer_name(cert, name);
	X509_set_pubkey(cert, key);
	X509V3_set_ctx_nodb(&v3);
	X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "DNS:bench.example.com");
	X509_add_ext(cert, ext, -1);
	X509_EXTENSION_free(ext);
	if (X509_sign(cert, key, EVP_sha256()) == 0)
		die("sign");
	cert_pem = pem_of(write_x509, cert, &cert_len);
	key_pem = pem_of(write_key, key, &key_len);
}

static void put(struct hm_certstore_writer *w, const char *name, uint64_t seq)
{
	struct hm_cert_put p = {.name = name,
				.name_len = strlen(name),
				.cert = cert_pem,
				.cert_len = cert_len,
				.key = key_pem,
				.key_len = key_len,
				.not_after = time(NULL) + 30 * 86400};

	/* the id only has to differ between names here (each gets its own context) */
	memset(p.id, 0, sizeof(p.id));
	memcpy(p.id, name, HM_MIN(strlen(name), sizeof(p.id)));
	if (hm_certstore_begin(w) != 0)
		die("store begin");
	if (hm_certstore_put(w, &p) == -ENOSPC) {
		hm_certstore_abort(w);
		if (hm_certstore_grow(w, NULL) != 0 || hm_certstore_begin(w) != 0)
			die("store grow");
		if (hm_certstore_put(w, &p) != 0)
			die("store put");
	}
	if (hm_certstore_commit(w, 1, seq) != 0)
		die("store commit");
}

/* ---- the client ------------------------------------------------------------------------------ */

static SSL_CTX *client_ctx;
static SSL_SESSION *sessions[8], *session; /* per server; the current server's */
static unsigned cur;
static const char *sni = "bench.example.com";

static int keep_session(SSL *s, SSL_SESSION *sess)
{
	(void)s;
	SSL_SESSION_free(sessions[cur]);
	sessions[cur] = session = sess;
	return 1;
}

static void client_setup(int version)
{
	SSL_CTX_free(client_ctx);
	client_ctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_min_proto_version(client_ctx, version);
	SSL_CTX_set_max_proto_version(client_ctx, version);
	SSL_CTX_set_session_cache_mode(client_ctx,
				       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(client_ctx, keep_session);
	for (unsigned i = 0; i < 8; i++) {
		SSL_SESSION_free(sessions[i]);
		sessions[i] = NULL;
	}
	session = NULL;
}

/* ---- the servers, behind one interface ------------------------------------------------------- */

struct server {
	const char *name;
	void *(*conn_new)(void *ctx);
	/* feeds ciphertext; returns plaintext length (appended to plain), -1 on error */
	int (*feed)(void *conn, const char *in, size_t n, char *plain, size_t cap);
	int (*send)(void *conn, const char *p, size_t n);
	void (*close_notify)(void *conn);
	/* moves the server's ciphertext into the client's BIO */
	void (*drain)(void *conn, BIO *to);
	int (*established)(void *conn);
	int (*resumed)(void *conn);
	void (*conn_free)(void *conn);
	void *ctx;
};

/* The naive server: an SSL with two memory BIOs. */
struct naive {
	SSL *ssl;
	BIO *in, *out;
};

static void *naive_new(void *ctx)
{
	struct naive *n = malloc(sizeof(*n));

	n->ssl = SSL_new(ctx);
	n->in = BIO_new(BIO_s_mem());
	n->out = BIO_new(BIO_s_mem());
	SSL_set_bio(n->ssl, n->in, n->out);
	SSL_set_accept_state(n->ssl);
	return n;
}

static int naive_feed(void *conn, const char *in, size_t len, char *plain, size_t cap)
{
	struct naive *n = conn;
	int r, got = 0;

	if (len > 0)
		BIO_write(n->in, in, (int)len);
	if (!SSL_is_init_finished(n->ssl)) {
		r = SSL_do_handshake(n->ssl);
		if (r != 1 && SSL_get_error(n->ssl, r) != SSL_ERROR_WANT_READ)
			return -1;
		if (r != 1)
			return 0;
	}
	while ((size_t)got < cap &&
	       (r = SSL_read(n->ssl, plain + got, (int)(cap - (size_t)got))) > 0)
		got += r;
	return got;
}

static int naive_send(void *conn, const char *p, size_t len)
{
	return SSL_write(((struct naive *)conn)->ssl, p, (int)len);
}

static void naive_close(void *conn)
{
	SSL_shutdown(((struct naive *)conn)->ssl);
}

static void naive_drain(void *conn, BIO *to)
{
	struct naive *n = conn;
	char buf[16384];
	int r;

	while ((r = BIO_read(n->out, buf, sizeof(buf))) > 0) {
		counting = 0;
		BIO_write(to, buf, r);
		counting = 1;
	}
}

static int naive_established(void *conn)
{
	return SSL_is_init_finished(((struct naive *)conn)->ssl);
}

static int naive_resumed(void *conn)
{
	return SSL_session_reused(((struct naive *)conn)->ssl);
}

static void naive_free(void *conn)
{
	struct naive *n = conn;

	SSL_free(n->ssl);
	free(n);
}

static void *hermod_new(void *ctx)
{
	struct hm_tls_conn *c;

	if (hm_tls_conn_new(&c, ctx) != 0)
		die("hm_tls_conn_new");
	return c;
}

static int hermod_feed(void *conn, const char *in, size_t len, char *plain, size_t cap)
{
	size_t off = 0, got = 0;

	do {
		size_t used = 0, plen = 0;
		int r = hm_tls_conn_recv(conn, in + off, len - off, &used, plain + got, cap - got,
					 &plen);

		if (r < 0)
			return -1;
		off += used;
		got += plen;
		if (used == 0 && plen == 0)
			break;
	} while (off < len);
	return (int)got;
}

static int hermod_send(void *conn, const char *p, size_t len)
{
	return hm_tls_conn_send(conn, p, len);
}

static void hermod_close(void *conn)
{
	hm_tls_conn_close_notify(conn);
}

static void hermod_drain(void *conn, BIO *to)
{
	const uint8_t *p;
	size_t n;

	while ((n = hm_tls_conn_out(conn, &p)) > 0) {
		counting = 0;
		BIO_write(to, p, (int)n);
		counting = 1;
		hm_tls_conn_out_done(conn, n);
	}
}

static int hermod_established(void *conn)
{
	return hm_tls_conn_established(conn);
}

static int hermod_resumed(void *conn)
{
	return hm_tls_conn_resumed(conn);
}

static void hermod_free(void *conn)
{
	hm_tls_conn_free(conn);
}

/* Heap bytes the server's OpenSSL calls hold for an open, idle connection (after its first
 * exchange), measured in the last one_connection(). The engine's own struct is not included. */
static int64_t idle_bytes;

/* One connection: handshake, request, response, close. Returns whether it was resumed. */
static int one_connection(const struct server *s, bool resume)
{
	int64_t before;

	SSL *cl = SSL_new(client_ctx);
	BIO *crb = BIO_new(BIO_s_mem()), *cwb = BIO_new(BIO_s_mem());
	char buf[32768], plain[4096];
	void *conn;
	int resumed, got = 0, n;

	SSL_set_bio(cl, crb, cwb);
	SSL_set_connect_state(cl);
	SSL_set_tlsext_host_name(cl, sni);
	if (resume && session != NULL)
		SSL_set_session(cl, session);
	before = live_bytes;
	on();
	conn = s->conn_new(s->ctx);
	off();
	for (int round = 0; round < 10; round++) {
		int r = SSL_do_handshake(cl);

		while ((n = BIO_read(cwb, buf, sizeof(buf))) > 0) {
			on();
			if (s->feed(conn, buf, (size_t)n, plain, sizeof(plain)) < 0)
				die("server handshake");
			s->drain(conn, crb);
			off();
		}
		if (r == 1 && s->established(conn))
			break;
	}
	if (!s->established(conn))
		die("no handshake");
	/* the request, the response, the server's close */
	SSL_write(cl, request, sizeof(request) - 1);
	while ((n = BIO_read(cwb, buf, sizeof(buf))) > 0) {
		on();
		got += s->feed(conn, buf, (size_t)n, plain, sizeof(plain));
		s->send(conn, response, sizeof(response) - 1);
		s->drain(conn, crb);
		off();
		/* what an idle keep-alive connection would hold from here on */
		idle_bytes = live_bytes - before;
		on();
		s->close_notify(conn);
		s->drain(conn, crb);
		off();
	}
	if (got != (int)sizeof(request) - 1)
		die("request not received whole");
	got = 0;
	while ((n = SSL_read(cl, buf, sizeof(buf))) > 0)
		got += n;
	if (got != (int)sizeof(response) - 1)
		die("response not received whole");
	resumed = s->resumed(conn);
	on();
	s->conn_free(conn);
	off();
	SSL_set_shutdown(cl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
	SSL_free(cl);
	return resumed;
}

#define BATCH	   40
#define ROUNDS_MAX 400

/* Per server: the server CPU of each batch (us per connection), heap calls, resumptions. */
struct result {
	double batch_us[ROUNDS_MAX];
	unsigned rounds;
	double allocs;
	unsigned resumed_pct;
	double median;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Runs the servers in turn, one batch each per round, for `seconds`: on a shared machine the
 * noise then falls on all of them alike. Each server's figure is the median of its batches;
 * the ratio's spread is the interquartile range of the per-round ratios (hermod / naive).
 */
static void run(const struct server *servers, unsigned ns, int version, bool resume, double seconds,
		struct result *res, double *ratio_q1, double *ratio_q3)
{
	uint64_t start = hm_mono_ns(), allocs[8] = {0}, resumed[8] = {0};
	double ratios[ROUNDS_MAX];
	unsigned rounds = 0;

	client_setup(version);
	for (unsigned k = 0; k < ns; k++) {
		cur = k;
		session = NULL;
		one_connection(&servers[k], false); /* warm caches, a first session */
	}
	while (rounds < ROUNDS_MAX &&
	       ((double)(hm_mono_ns() - start) < seconds * 1e9 || rounds < 5)) {
		for (unsigned k = 0; k < ns; k++) {
			cur = k;
			session = sessions[k];
			server_ns = 0;
			n_allocs = 0;
			for (int i = 0; i < BATCH; i++) {
				if (resume && session == NULL)
					one_connection(&servers[k], false);
				resumed[k] += (uint64_t)one_connection(&servers[k], resume);
			}
			res[k].batch_us[rounds] = (double)server_ns / 1e3 / BATCH;
			allocs[k] += n_allocs;
		}
		ratios[rounds] = res[ns - 1].batch_us[rounds] / res[0].batch_us[rounds];
		rounds++;
	}
	for (unsigned k = 0; k < ns; k++) {
		res[k].rounds = rounds;
		res[k].allocs = (double)allocs[k] / (rounds * BATCH);
		res[k].resumed_pct = (unsigned)(100 * resumed[k] / (rounds * BATCH));
		res[k].median = median(res[k].batch_us, rounds);
	}
	qsort(ratios, rounds, sizeof(double), cmp_double);
	*ratio_q1 = ratios[rounds / 4];
	*ratio_q3 = ratios[(3 * rounds) / 4];
}

/* ---- the crypto alone ------------------------------------------------------------------------ */

static double crypto_floor_us(double seconds, double *sign_us, double *kx_us)
{
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	EVP_PKEY *peer = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
	unsigned char digest[32] = {1}, sig[128], secret[64];
	uint64_t n = 0, start, s0;
	EVP_PKEY_CTX *sctx = EVP_PKEY_CTX_new(ec, NULL);

	if (ec == NULL || peer == NULL || sctx == NULL || EVP_PKEY_sign_init(sctx) != 1)
		die("crypto setup");
	start = hm_mono_ns();
	s0 = cpu_ns();
	do {
		size_t len = sizeof(sig);

		EVP_PKEY_sign(sctx, sig, &len, digest, sizeof(digest));
		n++;
	} while ((double)(hm_mono_ns() - start) < seconds * 1e9 / 2);
	*sign_us = (double)(cpu_ns() - s0) / 1e3 / (double)n;
	n = 0;
	start = hm_mono_ns();
	s0 = cpu_ns();
	do {
		EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
		EVP_PKEY_CTX *d = EVP_PKEY_CTX_new(k, NULL);
		size_t len = sizeof(secret);

		if (d == NULL || EVP_PKEY_derive_init(d) != 1 ||
		    EVP_PKEY_derive_set_peer(d, peer) != 1 || EVP_PKEY_derive(d, secret, &len) != 1)
			die("derive");
		EVP_PKEY_CTX_free(d);
		EVP_PKEY_free(k);
		n++;
	} while ((double)(hm_mono_ns() - start) < seconds * 1e9 / 2);
	*kx_us = (double)(cpu_ns() - s0) / 1e3 / (double)n;
	EVP_PKEY_CTX_free(sctx);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(peer);
	return *sign_us + *kx_us;
}

int main(int argc, char **argv)
{
	double seconds = 2;
	const char *dirarg = NULL;
	bool rsa = false;
	int profile = -1;
	char dir[256], path[300];
	struct hm_certstore_writer *w;
	struct hm_certstore_reader *r;
	struct hm_tls_ctx *t, *tkeep;
	struct hm_ticket_key keys[2];
	SSL_CTX *naive_ctx, *tuned_ctx;
	double sign_us, kx_us, floor;

	/* before any other OpenSSL call */
	if (CRYPTO_set_mem_functions(count_malloc, count_realloc, count_free) != 1)
		die("CRYPTO_set_mem_functions");
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			dirarg = argv[++i];
		else if (strcmp(argv[i], "--rsa") == 0)
			rsa = true;
		else if (strcmp(argv[i], "--profile") == 0 && i + 1 < argc)
			profile = atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: tls_bench [--seconds S] [--dir DIR] [--rsa] "
					"[--profile MODE]\n");
			return 2;
		}
	}
	snprintf(dir, sizeof(dir), "%s/hermod-tls-bench-XXXXXX",
		 dirarg != NULL ? dirarg : "/dev/shm");
	if (mkdtemp(dir) == NULL)
		die("mkdtemp");
	snprintf(path, sizeof(path), "%s/certs", dir);
	make_cert(rsa);

	/* hermod: the certificate as the default entry, ticket keys as the origin would set them */
	if (hm_certstore_writer_open(&w, path, NULL, 0, 0) != 0)
		die("store");
	put(w, "default", 1);
	hm_random_bytes(keys, sizeof(keys));
	if (hm_certstore_begin(w) != 0 || hm_certstore_set_ticket_keys(w, keys, 2) != 0 ||
	    hm_certstore_commit(w, 1, 2) != 0)
		die("keys");
	if (hm_certstore_reader_new(&r, path) != 0 || hm_tls_ctx_new(&t, r, NULL) != 0 ||
	    hm_tls_ctx_new(&tkeep, r,
			   &(struct hm_tls_config){.keep_buffers = true, .num_tickets = -1}) != 0)
		die("engine");

	naive_ctx = SSL_CTX_new(TLS_server_method());
	tuned_ctx = SSL_CTX_new(TLS_server_method());
	if (SSL_CTX_use_certificate(naive_ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey(naive_ctx, key) != 1 ||
	    SSL_CTX_use_certificate(tuned_ctx, cert) != 1 ||
	    SSL_CTX_use_PrivateKey(tuned_ctx, key) != 1)
		die("naive server");
	SSL_CTX_set_session_cache_mode(tuned_ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(tuned_ctx, 1);

	struct server servers[] = {
	    {"naive", naive_new, naive_feed, naive_send, naive_close, naive_drain,
	     naive_established, naive_resumed, naive_free, naive_ctx},
	    {"naive+", naive_new, naive_feed, naive_send, naive_close, naive_drain,
	     naive_established, naive_resumed, naive_free, tuned_ctx},
	    {"hermod-keepbuf", hermod_new, hermod_feed, hermod_send, hermod_close, hermod_drain,
	     hermod_established, hermod_resumed, hermod_free, tkeep},
	    {"hermod", hermod_new, hermod_feed, hermod_send, hermod_close, hermod_drain,
	     hermod_established, hermod_resumed, hermod_free, t},
	};
	const unsigned NS = sizeof(servers) / sizeof(servers[0]);
	const struct {
		const char *name;
		int version;
		bool resume;
	} modes[] = {
	    {"TLS 1.3 full", TLS1_3_VERSION, false},
	    {"TLS 1.3 resumed", TLS1_3_VERSION, true},
	    {"TLS 1.2 full", TLS1_2_VERSION, false},
	    {"TLS 1.2 resumed", TLS1_2_VERSION, true},
	};

	if (profile >= 0 && profile < 4) {
		/* hermod alone in one mode (0..3, as in the table), for perf record */
		static struct result res[1];
		double q1, q3;

		run(&servers[NS - 1], 1, modes[profile].version, modes[profile].resume, seconds,
		    res, &q1, &q3);
		printf("hermod %s: %.1f us\n", modes[profile].name, res[0].median);
		goto out;
	}
	floor = crypto_floor_us(seconds, &sign_us, &kx_us);
	printf("OpenSSL %s, %s certificate; server CPU per connection (handshake, one request and "
	       "response, close_notify)\n",
	       OpenSSL_version(OPENSSL_VERSION_STRING), rsa ? "RSA 2048" : "ECDSA P-256");
	printf("crypto alone: ECDSA P-256 sign %.1f us, X25519 keygen+derive %.1f us: %.1f us\n",
	       sign_us, kx_us, floor);
	printf("medians of %d-connection batches, servers interleaved; ratio: median [quartiles] "
	       "of the per-round ratios\n%-16s",
	       BATCH, "");
	for (size_t s = 0; s < NS; s++)
		printf(" %22s", servers[s].name);
	printf("  hermod/naive\n");
	for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
		static struct result res[8];
		double q1, q3;

		run(servers, NS, modes[m].version, modes[m].resume, seconds, res, &q1, &q3);
		printf("%-16s", modes[m].name);
		for (size_t s = 0; s < NS; s++) {
			printf(" %7.1f us %5.0f allocs", res[s].median, res[s].allocs);
			if (modes[m].resume && res[s].resumed_pct < 100)
				printf(" (%u%% resumed)", res[s].resumed_pct);
		}
		printf("  %.2f [%.2f-%.2f] (%u rounds)\n", res[NS - 1].median / res[0].median, q1,
		       q3, res[0].rounds);
	}
	/* Memory an open, idle connection holds inside OpenSSL (TLS 1.3, after one exchange). */
	client_setup(TLS1_3_VERSION);
	printf("heap held by an idle connection after one exchange (TLS 1.3):");
	for (size_t s = 0; s < NS; s++) {
		cur = (unsigned)s;
		one_connection(&servers[s], false);
		printf(" %s %lld B%s", servers[s].name, (long long)idle_bytes,
		       s + 1 < NS ? "," : "\n");
	}
	/* The first handshake of a certificate on a worker parses it and builds its context. */
	{
		static double miss[ROUNDS_MAX], hit[ROUNDS_MAX];
		uint64_t start;
		unsigned n = 0;
		char name[64];

		client_setup(TLS1_3_VERSION);
		start = hm_mono_ns();
		/* alternately: a handshake for a new name (a miss), one for a known name (a hit) */
		while (n < ROUNDS_MAX &&
		       ((double)(hm_mono_ns() - start) < seconds * 1e9 || n < 5)) {
			snprintf(name, sizeof(name), "c%u.example.com", n);
			put(w, name, 3 + n);
			sni = name;
			server_ns = 0;
			one_connection(&servers[NS - 1], false);
			miss[n] = (double)server_ns / 1e3;
			sni = "bench.example.com";
			server_ns = 0;
			one_connection(&servers[NS - 1], false);
			hit[n++] = (double)server_ns / 1e3;
		}
		printf("TLS 1.3 full, a certificate's first handshake on a worker (cache miss): "
		       "%.1f us; cached: %.1f us\n",
		       median(miss, n), median(hit, n));
	}
out:
	hm_tls_ctx_free(t);
	hm_tls_ctx_free(tkeep);
	hm_certstore_reader_free(r);
	hm_certstore_writer_close(w);
	{
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd) != 0)
			fprintf(stderr, "tls_bench: could not remove %s\n", dir);
	}
	return 0;
}
