/*
 * Certificates for syncd (tlscfg.h). The files are split into their PEM blocks here so that each
 * problem gets its own reason (no certificate, no key, an encrypted key, a key that is not the
 * leaf's, an expired leaf) instead of nng's "Cryptographic error" at the first handshake; then
 * the blocks are handed to nng as strings, once per configuration built.
 *
 * The probe identity is made once per process (pthread_once): an EC P-256 key and a self-signed
 * certificate for it, trusted by every listener this process configures (mbedtls accepts a
 * self-signed end-entity certificate that is itself in the trusted list).
 */
#include "syncd/tlscfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"

#define PEM_FILE_MAX (1u << 20)

struct hm__tls {
	_Atomic int refs;
	char *chain;	  /* the CERTIFICATE blocks of --tls-cert, leaf first */
	char *key;	  /* its private key block */
	char *ca;	  /* --tls-ca */
	char *control_ca; /* --control-ca, or NULL: --tls-ca */
	int64_t not_after;
};

/* ---- PEM files ------------------------------------------------------------------------------ */

static char *read_file(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (f == NULL) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	buf = malloc(PEM_FILE_MAX + 1);
	if (buf == NULL) {
		fclose(f);
		snprintf(err, errlen, "out of memory reading %s", path);
		return NULL;
	}
	n = fread(buf, 1, PEM_FILE_MAX + 1, f);
	fclose(f);
	if (n > PEM_FILE_MAX) {
		free(buf);
		snprintf(err, errlen, "%s is larger than 1 MiB", path);
		return NULL;
	}
	buf[n] = '\0';
	return buf;
}

/*
 * Appends to *out (a malloc'd string, or NULL) every PEM block of text whose type satisfies want
 * (e.g. "CERTIFICATE"); returns how many. A block is "-----BEGIN T-----" ... "-----END T-----".
 */
static int pem_blocks(const char *text, bool (*want)(const char *type, size_t n), char **out,
		      const char **found_type)
{
	const char *p = text;
	int count = 0;

	while ((p = strstr(p, "-----BEGIN ")) != NULL) {
		const char *type = p + 11, *dash = strstr(type, "-----"), *end;
		char endmark[96];
		size_t tl, len, have = *out != NULL ? strlen(*out) : 0;
		char *grown;

		if (dash == NULL || (tl = (size_t)(dash - type)) == 0 || tl > 64)
			break;
		snprintf(endmark, sizeof(endmark), "-----END %.*s-----", (int)tl, type);
		if ((end = strstr(dash, endmark)) == NULL)
			break;
		end += strlen(endmark);
		if (want(type, tl)) {
			len = (size_t)(end - p);
			if ((grown = realloc(*out, have + len + 2)) == NULL)
				return -ENOMEM;
			memcpy(grown + have, p, len);
			grown[have + len] = '\n';
			grown[have + len + 1] = '\0';
			*out = grown;
			count++;
			if (found_type != NULL)
				*found_type = type;
		}
		p = end;
	}
	return count;
}

static bool is_cert(const char *t, size_t n)
{
	return n == 11 && memcmp(t, "CERTIFICATE", 11) == 0;
}

static bool is_key(const char *t, size_t n)
{
	return n >= 11 && memcmp(t + n - 11, "PRIVATE KEY", 11) == 0;
}

static void mbed_reason(int rv, char *buf, size_t len)
{
	mbedtls_strerror(rv, buf, len);
}

static int64_t x509_unix(const mbedtls_x509_time *t)
{
	struct tm tm = {.tm_year = t->year - 1900,
			.tm_mon = t->mon - 1,
			.tm_mday = t->day,
			.tm_hour = t->hour,
			.tm_min = t->min,
			.tm_sec = t->sec};

	return (int64_t)timegm(&tm);
}

/* Checks that text holds at least one certificate mbedtls parses; what holds the CA for why. */
static int check_ca(const char *text, const char *path, char *err, size_t errlen)
{
	mbedtls_x509_crt crt;
	char *certs = NULL, why[128];
	int n = pem_blocks(text, is_cert, &certs, NULL), rv;

	if (n <= 0) {
		free(certs);
		snprintf(err, errlen, "%s holds no PEM certificate", path);
		return n < 0 ? n : HM_ETLS;
	}
	mbedtls_x509_crt_init(&crt);
	rv = mbedtls_x509_crt_parse(&crt, (const unsigned char *)certs, strlen(certs) + 1);
	mbedtls_x509_crt_free(&crt);
	free(certs);
	if (rv != 0) {
		mbed_reason(rv, why, sizeof(why));
		snprintf(err, errlen, "%s: a certificate does not parse: %s", path, why);
		return HM_ETLS;
	}
	return 0;
}

/* Splits and checks --tls-cert into t->chain and t->key. */
static int load_cert(struct hm__tls *t, const char *text, const char *path, char *err,
		     size_t errlen)
{
	mbedtls_x509_crt crt;
	mbedtls_pk_context pk;
	const char *ktype = NULL;
	char why[128];
	int n, rv, e = HM_ETLS;

	if ((n = pem_blocks(text, is_cert, &t->chain, NULL)) <= 0) {
		snprintf(err, errlen, "%s holds no PEM certificate", path);
		return n < 0 ? n : HM_ETLS;
	}
	n = pem_blocks(text, is_key, &t->key, &ktype);
	if (n != 1) {
		snprintf(err, errlen, "%s must hold the certificate's private key, once (found %d)",
			 path, n < 0 ? 0 : n);
		return n < 0 ? n : HM_ETLS;
	}
	if (strncmp(ktype, "ENCRYPTED", 9) == 0) {
		snprintf(err, errlen,
			 "%s: the private key is encrypted (use an unencrypted key in a "
			 "file only the service user can read)",
			 path);
		return HM_ETLS;
	}
	mbedtls_x509_crt_init(&crt);
	mbedtls_pk_init(&pk);
	if ((rv = mbedtls_x509_crt_parse(&crt, (const unsigned char *)t->chain,
					 strlen(t->chain) + 1)) != 0) {
		mbed_reason(rv, why, sizeof(why));
		snprintf(err, errlen, "%s: a certificate does not parse: %s", path, why);
	} else if ((rv = mbedtls_pk_parse_key(&pk, (const unsigned char *)t->key,
					      strlen(t->key) + 1, NULL, 0)) != 0) {
		mbed_reason(rv, why, sizeof(why));
		snprintf(err, errlen, "%s: the private key does not parse: %s", path, why);
	} else if (mbedtls_pk_check_pair(&crt.pk, &pk) != 0) {
		snprintf(err, errlen, "%s: the private key is not the first certificate's", path);
	} else if (mbedtls_x509_time_is_past(&crt.valid_to)) {
		snprintf(err, errlen,
			 "%s: the certificate expired on %04d-%02d-%02d %02d:%02d:%02d UTC", path,
			 crt.valid_to.year, crt.valid_to.mon, crt.valid_to.day, crt.valid_to.hour,
			 crt.valid_to.min, crt.valid_to.sec);
	} else if (mbedtls_x509_time_is_future(&crt.valid_from)) {
		snprintf(err, errlen, "%s: the certificate is not valid before %04d-%02d-%02d UTC",
			 path, crt.valid_from.year, crt.valid_from.mon, crt.valid_from.day);
	} else {
		t->not_after = x509_unix(&crt.valid_to);
		e = 0;
	}
	mbedtls_pk_free(&pk);
	mbedtls_x509_crt_free(&crt);
	return e;
}

/* ---- The probe identity --------------------------------------------------------------------- */

static struct {
	pthread_once_t once;
	int err;
	char cert[2048]; /* PEM */
	char key[1024];	 /* PEM */
} probe_id = {.once = PTHREAD_ONCE_INIT};

/* Seeds drbg from ent (both initialised by the caller). */
static int seed_drbg(mbedtls_ctr_drbg_context *drbg, mbedtls_entropy_context *ent)
{
	static const unsigned char pers[] = "hermod-syncd";

	return mbedtls_ctr_drbg_seed(drbg, mbedtls_entropy_func, ent, pers, sizeof(pers) - 1);
}

static void make_probe_identity(void)
{
	mbedtls_entropy_context ent;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_pk_context key;
	mbedtls_x509write_cert w;
	mbedtls_mpi serial;
	unsigned char sn[16];
	int rv;

	mbedtls_pk_init(&key);
	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&serial);
	mbedtls_entropy_init(&ent);
	mbedtls_ctr_drbg_init(&drbg);
	rv = seed_drbg(&drbg, &ent);
	if (rv == 0)
		rv = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (rv == 0)
		rv = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
					 mbedtls_ctr_drbg_random, &drbg);
	if (rv == 0)
		rv = mbedtls_ctr_drbg_random(&drbg, sn, sizeof(sn));
	sn[0] &= 0x7f;
	if (rv == 0)
		rv = mbedtls_mpi_read_binary(&serial, sn, sizeof(sn));
	if (rv == 0) {
		mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
		mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
		mbedtls_x509write_crt_set_subject_key(&w, &key);
		mbedtls_x509write_crt_set_issuer_key(&w, &key);
		rv = mbedtls_x509write_crt_set_serial(&w, &serial);
	}
	if (rv == 0)
		rv = mbedtls_x509write_crt_set_subject_name(&w, "CN=hermod listener probe");
	if (rv == 0)
		rv = mbedtls_x509write_crt_set_issuer_name(&w, "CN=hermod listener probe");
	if (rv == 0)
		rv = mbedtls_x509write_crt_set_validity(&w, "20000101000000", "20991231235959");
	if (rv == 0)
		rv = mbedtls_x509write_crt_pem(&w, (unsigned char *)probe_id.cert,
					       sizeof(probe_id.cert), mbedtls_ctr_drbg_random,
					       &drbg);
	if (rv == 0)
		rv = mbedtls_pk_write_key_pem(&key, (unsigned char *)probe_id.key,
					      sizeof(probe_id.key));
	probe_id.err = rv == 0 ? 0 : HM_ETLS;
	mbedtls_mpi_free(&serial);
	mbedtls_x509write_crt_free(&w);
	mbedtls_pk_free(&key);
	mbedtls_ctr_drbg_free(&drbg);
	mbedtls_entropy_free(&ent);
}

static int probe_identity(void)
{
	pthread_once(&probe_id.once, make_probe_identity);
	return probe_id.err;
}

/* ---- Loading -------------------------------------------------------------------------------- */

/* read_file()'s 1 MiB buffer, cut to its string. */
static char *shrink(char *text)
{
	char *c = realloc(text, strlen(text) + 1);

	return c != NULL ? c : text;
}

int hm__tls_load(struct hm__tls **out, const char *cert, const char *ca, const char *control_ca,
		 char *err, size_t errlen)
{
	struct hm__tls *t = calloc(1, sizeof(*t));
	char *cert_text = NULL, *ca_text = NULL, *cca_text = NULL;
	int e = -ENOMEM;

	if (t == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&t->refs, 1);
	e = HM_ETLS;
	if ((cert_text = read_file(cert, err, errlen)) == NULL ||
	    (ca_text = read_file(ca, err, errlen)) == NULL ||
	    (control_ca != NULL && (cca_text = read_file(control_ca, err, errlen)) == NULL))
		goto fail;
	if ((e = load_cert(t, cert_text, cert, err, errlen)) != 0 ||
	    (e = check_ca(ca_text, ca, err, errlen)) != 0 ||
	    (cca_text != NULL && (e = check_ca(cca_text, control_ca, err, errlen)) != 0))
		goto fail;
	t->ca = shrink(ca_text);
	t->control_ca = cca_text != NULL ? shrink(cca_text) : NULL;
	memset(cert_text, 0, strlen(cert_text)); /* it held the private key */
	free(cert_text);
	*out = t;
	return 0;
fail:
	if (cert_text != NULL)
		memset(cert_text, 0, strlen(cert_text));
	free(cert_text);
	free(ca_text);
	free(cca_text);
	hm__tls_unref(t);
	return e;
}

void hm__tls_ref(struct hm__tls *t)
{
	atomic_fetch_add(&t->refs, 1);
}

void hm__tls_unref(struct hm__tls *t)
{
	if (t == NULL || atomic_fetch_sub(&t->refs, 1) != 1)
		return;
	if (t->key != NULL)
		memset(t->key, 0, strlen(t->key));
	free(t->key);
	free(t->chain);
	free(t->ca);
	free(t->control_ca);
	free(t);
}

void hm__tls_reload(struct hm__tls_state *st, const char *cert, const char *ca,
		    const char *control_ca, int (*apply)(void *ctx, struct hm__tls *t), void *ctx,
		    const char *who)
{
	struct hm__tls *t;
	char err[512];
	int e;

	if (st->cur == NULL)
		return;
	if (hm__tls_load(&t, cert, ca, control_ca, err, sizeof(err)) != 0) {
		st->errors++;
		hm_log(HM_LOG_ERR, who, "SIGHUP: keeping the certificates in use: %s", err);
		return;
	}
	if ((e = apply(ctx, t)) != 0) {
		st->errors++;
		hm_log(HM_LOG_ERR, who, "SIGHUP: cannot apply the new certificates: %s",
		       hm_strerror(e));
		hm__tls_unref(t);
		return;
	}
	hm__tls_unref(st->cur);
	st->cur = t;
	st->reloads++;
	hm_log(HM_LOG_NOTICE, who,
	       "SIGHUP: certificates reloaded (valid until %" PRId64 ", unix time); connections "
	       "kept",
	       t->not_after);
}

int64_t hm__tls_not_after(const struct hm__tls *t)
{
	return t->not_after;
}

bool hm__tls_url(const char *url)
{
	return strncmp(url, "tls+tcp://", 10) == 0 || strncmp(url, "tls+tcp4://", 11) == 0 ||
	       strncmp(url, "tls+tcp6://", 11) == 0;
}

/* ---- nng configurations --------------------------------------------------------------------- */

static int config(const struct hm__tls *t, nng_tls_mode mode, const char *ca, const char *name,
		  nng_tls_config **out)
{
	nng_tls_config *c;
	int rv;

	if ((rv = nng_tls_config_alloc(&c, mode)) != 0)
		return rv == NNG_ENOMEM ? -ENOMEM : HM_ETLS;
	if ((rv = nng_tls_config_version(c, NNG_TLS_1_2, NNG_TLS_1_2)) == 0 &&
	    (rv = nng_tls_config_own_cert(c, t->chain, t->key, NULL)) == 0 &&
	    (rv = nng_tls_config_ca_chain(c, ca, NULL)) == 0 &&
	    (rv = nng_tls_config_auth_mode(c, NNG_TLS_AUTH_MODE_REQUIRED)) == 0 && name != NULL)
		rv = nng_tls_config_server_name(c, name);
	if (rv != 0) {
		nng_tls_config_free(c);
		return rv == NNG_ENOMEM ? -ENOMEM : HM_ETLS;
	}
	*out = c;
	return 0;
}

int hm__tls_listener_config(const struct hm__tls *t, bool control, nng_tls_config **out)
{
	const char *ca = control && t->control_ca != NULL ? t->control_ca : t->ca;
	size_t a = strlen(ca), b;
	char *trusted;
	int e;

	/* Made on first use: clients (hermodctl, edges) never need it. */
	if ((e = probe_identity()) != 0)
		return e;
	b = strlen(probe_id.cert);
	if ((trusted = malloc(a + b + 2)) == NULL)
		return -ENOMEM;
	memcpy(trusted, ca, a);
	trusted[a] = '\n';
	memcpy(trusted + a + 1, probe_id.cert, b + 1);
	e = config(t, NNG_TLS_MODE_SERVER, trusted, NULL, out);
	free(trusted);
	return e;
}

int hm__tls_dialer_config(const struct hm__tls *t, const char *url, nng_tls_config **out,
			  bool *named)
{
	unsigned char ip[16];
	nng_url *u;
	int e;

	if (nng_url_parse(&u, url) != 0)
		return HM_ETLS;
	*named = u->u_hostname[0] != '\0' && inet_pton(AF_INET, u->u_hostname, ip) != 1 &&
		 inet_pton(AF_INET6, u->u_hostname, ip) != 1;
	e = config(t, NNG_TLS_MODE_CLIENT, t->ca, *named ? u->u_hostname : NULL, out);
	nng_url_free(u);
	return e;
}

/* ---- The watchdog's probe client ------------------------------------------------------------ */

struct hm__tls_probe {
	int fd;
	mbedtls_entropy_context ent;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_config conf;
	mbedtls_ssl_context ssl;
	mbedtls_x509_crt crt;
	mbedtls_pk_context key;
	uint64_t deadline;
};

static int probe_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct hm__tls_probe *p = ctx;
	ssize_t n = send(p->fd, buf, len, MSG_NOSIGNAL);

	if (n >= 0)
		return (int)n;
	return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_WRITE
						 : MBEDTLS_ERR_NET_SEND_FAILED;
}

static int probe_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct hm__tls_probe *p = ctx;
	ssize_t n = recv(p->fd, buf, len, 0);

	if (n > 0)
		return (int)n;
	if (n == 0)
		return MBEDTLS_ERR_NET_CONN_RESET;
	return errno == EAGAIN || errno == EINTR ? MBEDTLS_ERR_SSL_WANT_READ
						 : MBEDTLS_ERR_NET_RECV_FAILED;
}

/* Waits until fd is ready for what mbedtls asked (rv), or the deadline. */
static int probe_wait(struct hm__tls_probe *p, int rv)
{
	struct pollfd pfd = {.fd = p->fd,
			     .events = rv == MBEDTLS_ERR_SSL_WANT_WRITE ? POLLOUT : POLLIN};
	uint64_t now = hm_mono_ms();

	if (rv != MBEDTLS_ERR_SSL_WANT_READ && rv != MBEDTLS_ERR_SSL_WANT_WRITE)
		return HM_ETLS;
	if (now >= p->deadline)
		return -ETIMEDOUT;
	if (poll(&pfd, 1, (int)(p->deadline - now)) < 0 && errno != EINTR)
		return -errno;
	return 0;
}

static int probe_setup(struct hm__tls_probe *p)
{
	int rv, e;

	if (seed_drbg(&p->drbg, &p->ent) != 0 ||
	    mbedtls_x509_crt_parse(&p->crt, (const unsigned char *)probe_id.cert,
				   strlen(probe_id.cert) + 1) != 0 ||
	    mbedtls_pk_parse_key(&p->key, (const unsigned char *)probe_id.key,
				 strlen(probe_id.key) + 1, NULL, 0) != 0 ||
	    mbedtls_ssl_config_defaults(&p->conf, MBEDTLS_SSL_IS_CLIENT,
					MBEDTLS_SSL_TRANSPORT_STREAM,
					MBEDTLS_SSL_PRESET_DEFAULT) != 0)
		return HM_ETLS;
	mbedtls_ssl_conf_authmode(&p->conf, MBEDTLS_SSL_VERIFY_NONE);
	mbedtls_ssl_conf_rng(&p->conf, mbedtls_ctr_drbg_random, &p->drbg);
	if (mbedtls_ssl_conf_own_cert(&p->conf, &p->crt, &p->key) != 0 ||
	    mbedtls_ssl_setup(&p->ssl, &p->conf) != 0)
		return HM_ETLS;
	mbedtls_ssl_set_bio(&p->ssl, p, probe_send, probe_recv, NULL);
	while ((rv = mbedtls_ssl_handshake(&p->ssl)) != 0)
		if ((e = probe_wait(p, rv)) != 0)
			return e;
	return 0;
}

int hm__tls_probe_open(struct hm__tls_probe **out, int fd, uint64_t deadline)
{
	struct hm__tls_probe *p;
	int e;

	*out = NULL;
	if ((e = probe_identity()) != 0)
		return e;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return -ENOMEM;
	p->fd = fd;
	p->deadline = deadline;
	mbedtls_entropy_init(&p->ent);
	mbedtls_ctr_drbg_init(&p->drbg);
	mbedtls_ssl_config_init(&p->conf);
	mbedtls_ssl_init(&p->ssl);
	mbedtls_x509_crt_init(&p->crt);
	mbedtls_pk_init(&p->key);
	if ((e = probe_setup(p)) != 0) {
		hm__tls_probe_close(p);
		return e;
	}
	*out = p;
	return 0;
}

int hm__tls_probe_write(struct hm__tls_probe *p, const void *buf, size_t n, uint64_t deadline)
{
	size_t done = 0;
	int e;

	p->deadline = deadline;
	while (done < n) {
		int rv = mbedtls_ssl_write(&p->ssl, (const unsigned char *)buf + done, n - done);

		if (rv > 0)
			done += (size_t)rv;
		else if ((e = probe_wait(p, rv)) != 0)
			return e;
	}
	return 0;
}

int hm__tls_probe_read(struct hm__tls_probe *p, void *buf, size_t n, uint64_t deadline)
{
	size_t done = 0;
	int e;

	p->deadline = deadline;
	while (done < n) {
		int rv = mbedtls_ssl_read(&p->ssl, (unsigned char *)buf + done, n - done);

		if (rv > 0)
			done += (size_t)rv;
		else if (rv == 0)
			return -ECONNRESET;
		else if ((e = probe_wait(p, rv)) != 0)
			return e;
	}
	return 0;
}

void hm__tls_probe_close(struct hm__tls_probe *p)
{
	if (p == NULL)
		return;
	mbedtls_ssl_free(&p->ssl);
	mbedtls_ssl_config_free(&p->conf);
	mbedtls_x509_crt_free(&p->crt);
	mbedtls_pk_free(&p->key);
	mbedtls_ctr_drbg_free(&p->drbg);
	mbedtls_entropy_free(&p->ent);
	free(p);
}

/* ---- Retired nng configurations (hm__tls_config_retire) ---------------------------------- */

struct retired {
	struct retired *next;
	nng_tls_config *c;
	uint64_t at; /* hm_mono_ms() when retired */
};

static pthread_mutex_t retired_mu = PTHREAD_MUTEX_INITIALIZER;
static struct retired *retired_list; /* newest first */

static void retired_drop(struct retired *r)
{
	while (r != NULL) {
		struct retired *next = r->next;

		nng_tls_config_free(r->c);
		free(r);
		r = next;
	}
}

void hm__tls_config_retire(nng_tls_config *c)
{
	struct retired *r, **pp, *old = NULL;
	uint64_t now = hm_mono_ms();

	if (c == NULL)
		return;
	if ((r = malloc(sizeof(*r))) == NULL) {
		/* No room to wait: keeping the reference for good is safe, freeing it is not. */
		return;
	}
	pthread_mutex_lock(&retired_mu);
	r->c = c;
	r->at = now;
	r->next = retired_list;
	retired_list = r;
	/* The list is newest first: once an entry is old enough, so is every one after it. */
	for (pp = &r->next; *pp != NULL; pp = &(*pp)->next)
		if (now - (*pp)->at >= HM__TLS_RETIRE_MS) {
			old = *pp;
			*pp = NULL;
			break;
		}
	pthread_mutex_unlock(&retired_mu);
	retired_drop(old);
}

void hm__tls_retired_free(void)
{
	struct retired *r;

	pthread_mutex_lock(&retired_mu);
	r = retired_list;
	retired_list = NULL;
	pthread_mutex_unlock(&retired_mu);
	retired_drop(r);
}
