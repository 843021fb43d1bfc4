/*
 * Mutual TLS for syncd's nng sockets (docs/security.md): the node's certificate chain and key
 * (--tls-cert, one PEM file), the CA its peers must chain to (--tls-ca) and, on the origin, the
 * CA of control clients (--control-ca), checked when loaded and turned into nng TLS
 * configurations. SIGHUP loads the files again into a new struct hm__tls; listeners and dialers
 * are then given new configurations while the connections they made keep their own.
 *
 * Every listener configuration also trusts a probe identity: a self-signed certificate made in
 * memory at start, whose key never leaves the process. The listener watchdog (nngx.h) connects
 * with it to prove that a TLS listener still completes handshakes; nobody else can present it.
 */
#ifndef HM_SYNCD_TLSCFG_H
#define HM_SYNCD_TLSCFG_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hm__tls; /* immutable once loaded; reference-counted, any thread may hold one */

/*
 * Reads and checks the files: cert holds one or more CERTIFICATE blocks (leaf first) and one
 * unencrypted private key (PKCS#8, EC or RSA) that matches the leaf, which must be valid now;
 * ca and control_ca (NULL: ca) hold at least one certificate each. Returns 0 (*out has one
 * reference) or HM_ETLS / -ENOMEM with a one-line reason in err naming the file.
 */
int hm__tls_load(struct hm__tls **out, const char *cert, const char *ca, const char *control_ca,
		 char *err, size_t errlen);
void hm__tls_ref(struct hm__tls *t);
void hm__tls_unref(struct hm__tls *t); /* NULL: nothing */

/* A role's certificates in use, and how its SIGHUP reloads went (for status). */
struct hm__tls_state {
	struct hm__tls *cur; /* a reference; NULL without TLS */
	uint64_t reloads, errors;
};

/*
 * SIGHUP: loads the files again and hands the result to apply(ctx, t), which gives the role's
 * listeners or dialers new configurations (returning 0 or an error). On success st->cur becomes
 * t; on any failure nothing changes. Either way it is counted and logged (log group who). Loop
 * thread; does nothing when st->cur is NULL.
 */
void hm__tls_reload(struct hm__tls_state *st, const char *cert, const char *ca,
		    const char *control_ca, int (*apply)(void *ctx, struct hm__tls *t), void *ctx,
		    const char *who);

/*
 * Drops a reference to an nng configuration that a dialer or listener no longer has, no sooner
 * than HM__TLS_RETIRE_MS from now. nng 1.5.2 reads a dialer's or listener's configuration without
 * their lock when a connection starts and takes its own reference only after allocating the
 * connection: a configuration replaced in that window (SIGHUP) and freed at once was held after
 * it was freed ("panic: pthread_mutex_lock: Invalid argument" in nng_tls_config_hold, seen once
 * in test_two_origins_over_mutual_tls under ASan). Retired configurations are freed by later
 * calls once old enough, and all of them by hm__tls_retired_free() (at exit, after the sockets
 * are closed). Any thread; NULL does nothing.
 */
#define HM__TLS_RETIRE_MS 2000
void hm__tls_config_retire(nng_tls_config *c);
void hm__tls_retired_free(void);

/* The leaf's notAfter, in unix seconds. */
int64_t hm__tls_not_after(const struct hm__tls *t);

/*
 * A new nng configuration (the caller owns it: nng_tls_config_free) for a listener: presents the
 * node's chain, requires a peer certificate chaining to the CA (control: to the control CA) or
 * the probe identity. Returns 0 or HM_ETLS / -ENOMEM.
 */
int hm__tls_listener_config(const struct hm__tls *t, bool control, nng_tls_config **out);

/*
 * The same for a dialer of url (tls+tcp://HOST:PORT): presents the node's chain, requires the
 * server's to chain to the CA with serverAuth usage, and its name to be HOST when HOST is a DNS
 * name. mbedtls 2.28 cannot match IP-address names, so for an IP literal no name is checked
 * (*named = false; docs/security.md says why that is safe with serverAuth).
 */
int hm__tls_dialer_config(const struct hm__tls *t, const char *url, nng_tls_config **out,
			  bool *named);

/* True for a tls+tcp:// URL. */
bool hm__tls_url(const char *url);

/*
 * The watchdog's TLS client: a handshake presenting the probe identity on fd (a connected,
 * non-blocking TCP socket; borrowed), then reads and writes, each until deadline (monotonic ms).
 * The server is not verified: the probe only proves that the listener answers. Each returns 0
 * or a negative error; any thread, one probe per thread at a time.
 */
struct hm__tls_probe;
int hm__tls_probe_open(struct hm__tls_probe **out, int fd, uint64_t deadline);
int hm__tls_probe_write(struct hm__tls_probe *p, const void *buf, size_t n, uint64_t deadline);
int hm__tls_probe_read(struct hm__tls_probe *p, void *buf, size_t n, uint64_t deadline);
void hm__tls_probe_close(struct hm__tls_probe *p); /* NULL: nothing */

#endif
