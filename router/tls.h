/*
 * The router's TLS engine (docs/tls.md, section 4): TLS 1.2 and 1.3 termination with certificates
 * chosen by SNI from the node's certificate store, a per-worker cache of parsed certificates,
 * stateless session tickets under the cluster's keys, and a connection engine that works on
 * memory: ciphertext in, plaintext out, plaintext in, ciphertext out. It knows nothing of libuv or
 * sockets, so the connection code drives it from its read and write callbacks, and the tests
 * drive it with an OpenSSL client in the same process.
 *
 *   per worker:      hm_tls_ctx_new(store) ... hm_tls_ctx_free()
 *   per connection:  hm_tls_conn_new() -> hm_tls_conn_recv() on every read, hm_tls_conn_send()
 *                    for every response byte, hm_tls_conn_out()/_out_done() to write what they
 *                    produced -> hm_tls_conn_free()
 *
 * Threads: a context and its connections belong to one thread (the worker's loop).
 * Errors: negative errno values (-EPROTO: the TLS connection failed, see hm_tls_conn_fail()).
 */
#ifndef HM_ROUTER_TLS_H
#define HM_ROUTER_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/certstore.h"

/*
 * XX(name, label): why a handshake failed, for hermod_tls_handshake_failures_total{reason}.
 * Counted once per connection.
 */
#define HM_TLS_FAIL_MAP(XX)                                                                        \
	XX(NONE, "none")                                                                           \
	XX(UNRECOGNIZED_NAME, "unrecognized_name") /* no certificate for the SNI, no default */    \
	XX(PROTOCOL_VERSION, "protocol_version")   /* the client offered only TLS <= 1.1 */        \
	XX(NO_SHARED_CIPHER, "no_shared_cipher")   /* no common cipher suite or group */           \
	XX(NO_ALPN, "no_application_protocol")	   /* ALPN offered, none we speak */               \
	XX(HTTP_REQUEST, "http_request")	   /* plaintext HTTP sent to the TLS port */       \
	XX(PEER_ALERT, "peer_alert")		   /* the client aborted (e.g. unknown_ca) */      \
	XX(EOF, "eof")				   /* the client closed mid-handshake */           \
	XX(BAD_MESSAGE, "bad_message")		   /* malformed records or handshake messages */   \
	XX(CERTIFICATE, "certificate") /* the chosen certificate could not be loaded */            \
	XX(TIMEOUT, "timeout")	       /* reported by the caller */                                \
	XX(INTERNAL, "internal")       /* out of memory, library errors */

enum hm_tls_fail {
#define HM_TLS_FAIL_ENUM(name, label) HM_TLS_FAIL_##name,
	HM_TLS_FAIL_MAP(HM_TLS_FAIL_ENUM)
#undef HM_TLS_FAIL_ENUM
	    HM_TLS_FAIL_COUNT
};

/*
 * Gives OpenSSL the worker's recycling allocator (tls_mem.c): the blocks it takes and gives back
 * for every record go to bounded free lists instead of malloc and free. Call it once per process,
 * first, before anything uses OpenSSL (main). Returns 0, -EBUSY if OpenSSL has allocated
 * already, or -ENOTSUP in a sanitizer build (OpenSSL then keeps malloc).
 */
int hm_tls_mem_init(void);

/* The label of a failure reason ("unrecognized_name"). Never NULL. */
const char *hm_tls_fail_name(unsigned reason);

/* The application protocol agreed by ALPN. */
enum hm_tls_alpn {
	HM_TLS_ALPN_NONE = 0,	/* the client offered no ALPN: HTTP/1.x */
	HM_TLS_ALPN_HTTP11 = 1, /* "http/1.1", or "http/1.0" (offered last): HTTP/1.x */
	HM_TLS_ALPN_H2 = 2,
};

struct hm_tls_config {
	unsigned cache_max; /* parsed certificates kept per worker (0: 1024) */
	unsigned
	    ticket_lifetime_s; /* session lifetime (0: 86400); at most the key rotation period */
	int num_tickets;       /* TLS 1.3 tickets after a full handshake (-1: 1; 0: none) */
	bool h2;	       /* offer "h2" by ALPN (before http/1.1) */
	bool keep_buffers;     /* keep OpenSSL's record buffers on idle connections (the
				  default frees them: SSL_MODE_RELEASE_BUFFERS) */
	bool no_fast13;	       /* every handshake through libssl, none on the TLS 1.3
				  resumption fast path (tls13.h) */
};

/* Counters of one context (one worker), monotonic. */
struct hm_tls_stats {
	uint64_t full, resumed; /* completed handshakes */
	uint64_t fast;		/* of the resumed, those done by the fast path (tls13.h) */
	uint64_t fail[HM_TLS_FAIL_COUNT];
	uint64_t cache_hits, cache_misses, cache_evictions, cache_bad;
	uint64_t tickets_issued;  /* tickets encrypted (full handshakes, TLS 1.3 resumptions) */
	uint64_t tickets_renewed; /* tickets accepted under a previous key (and replaced) */
	uint32_t cached;	  /* parsed certificates held now */
};

struct hm_tls_ctx;
struct hm_tls_conn;

/*
 * A worker's TLS context. store is borrowed (it must outlive the context) and is read on every
 * handshake; cfg is copied (NULL: defaults). Returns 0, -ENOMEM, or -EPROTO (OpenSSL refused the
 * configuration).
 */
int hm_tls_ctx_new(struct hm_tls_ctx **out, struct hm_certstore_reader *store,
		   const struct hm_tls_config *cfg);

/* Frees the context. Its connections must have been freed. */
void hm_tls_ctx_free(struct hm_tls_ctx *t);

/* The context's counters (borrowed, live). */
const struct hm_tls_stats *hm_tls_ctx_stats(const struct hm_tls_ctx *t);

/* A server connection in its handshake. Returns 0 or -ENOMEM. */
int hm_tls_conn_new(struct hm_tls_conn **out, struct hm_tls_ctx *t);

/* Frees a connection (nothing is sent: call hm_tls_conn_close_notify() first for a clean close). */
void hm_tls_conn_free(struct hm_tls_conn *c);

/* hm_tls_conn_recv() result: the peer sent close_notify; no plaintext will follow. */
#define HM_TLS_CLOSED 1

/*
 * Runs the engine on ciphertext received from the peer and returns plaintext.
 *  in, in_len     the received bytes (borrowed for the call); *in_used gets how many the engine
 *                 took. It takes all of them unless out fills up first; offer the rest again.
 *  out, out_cap   where plaintext goes; *out_len gets how much. When it is full there may be
 *                 more: call again (with in_len 0) once out has room.
 * Drives the handshake first. Returns 0 (progress, or nothing to do until more bytes arrive),
 * HM_TLS_CLOSED, or -EPROTO (the connection failed: hm_tls_conn_fail() says why; an alert may
 * be waiting in hm_tls_conn_out()). Either way, write hm_tls_conn_out() afterwards. No
 * allocation beyond OpenSSL's own and, on the fast path, a buffer from the context's pool
 * while a record arrives in pieces.
 */
int hm_tls_conn_recv(struct hm_tls_conn *c, const void *in, size_t in_len, size_t *in_used,
		     void *out, size_t out_cap, size_t *out_len);

/*
 * Encrypts up to n bytes of plaintext into the connection's output. Returns how many bytes were
 * taken: all of them, fewer, or 0 when the output is full (write hm_tls_conn_out() and call
 * again with the bytes not taken, starting with the same first byte); or -ENOTCONN (handshake
 * not finished), -EPROTO (failed; every later call fails too). No allocation beyond OpenSSL's
 * own.
 */
int hm_tls_conn_send(struct hm_tls_conn *c, const void *plain, size_t n);

/*
 * The ciphertext waiting to be written to the peer: sets *p and returns the length (0: none).
 * The bytes stay in place until hm_tls_conn_out_done(): the engine only appends after them, so a
 * write of them may be in flight while recv and send are called. Call again only after
 * hm_tls_conn_out_done().
 */
size_t hm_tls_conn_out(struct hm_tls_conn *c, const uint8_t **p);

/*
 * Whether all of hm_tls_conn_out() may wait for the protocol's next write: what a TLS 1.3
 * handshake leaves once it completed (the session ticket), and a KeyUpdate the fast path owes
 * the peer. No client waits for either (RFC 8446 4.6.1, 4.6.3: a ticket may come at any time, a
 * requested KeyUpdate before our next application data), so they go out in front of the first
 * response, in its write, instead of in a write and a packet of their own. Anything else (an
 * alert, a TLS 1.2 handshake's last flight, what libssl answers while reading) is not lazy. True
 * when there is no output.
 */
bool hm_tls_conn_out_lazy(const struct hm_tls_conn *c);

/* The most plaintext one record holds, and what sealing it adds at most (header, nonce, tag,
 * content type, a KeyUpdate answer waiting to go first). */
#define HM_TLS_RECORD_MAX   16384
#define HM_TLS_RECORD_SLACK 128

/*
 * The room left in the connection's output, in ciphertext bytes. While it is at least
 * HM_MIN(n, HM_TLS_RECORD_MAX) + HM_TLS_RECORD_SLACK, hm_tls_conn_send() of n bytes seals one
 * record whole (it never returns 0 and never leaves a record half written, which would bind the
 * caller to offer the same bytes again): a writer that may not queue (try_writev) checks it first.
 */
size_t hm_tls_conn_out_room(const struct hm_tls_conn *c);

/* How many ciphertext bytes the connection has produced in its life (written or not): a writer
 * that counts what it wrote knows when a given byte of output went out. */
uint64_t hm_tls_conn_out_total(const struct hm_tls_conn *c);

/* n bytes of hm_tls_conn_out() were written. When none remain, the buffer goes back to the
 * context's pool (an idle connection holds no output buffer). */
void hm_tls_conn_out_done(struct hm_tls_conn *c, size_t n);

/* Queues close_notify (write hm_tls_conn_out() afterwards). Call it once every hm_tls_conn_send()
 * has been taken in full (none is waiting to be called again). Returns 0 (also when there is no
 * established connection to close), -EAGAIN (the output is full: write it and call again), or
 * -EPROTO. */
int hm_tls_conn_close_notify(struct hm_tls_conn *c);

/* The socket reached end of file: a handshake in progress counts as failed (eof). */
void hm_tls_conn_peer_closed(struct hm_tls_conn *c);

/* The caller's handshake timer fired: a handshake in progress counts as failed (timeout). */
void hm_tls_conn_timeout(struct hm_tls_conn *c);

/* ---- What a connection knows ---- */

bool hm_tls_conn_established(const struct hm_tls_conn *c); /* handshake complete */
bool hm_tls_conn_resumed(const struct hm_tls_conn *c);	   /* by a session ticket */
bool hm_tls_conn_fast(const struct hm_tls_conn *c);	   /* on the fast path (tls13.h) */
unsigned hm_tls_conn_fail(const struct hm_tls_conn *c);	   /* enum hm_tls_fail */
unsigned hm_tls_conn_alpn(const struct hm_tls_conn *c);	   /* enum hm_tls_alpn */
/* The SNI as a lookup key (lowercase; "" without SNI) and how its certificate matched (enum
 * hm_cert_kind, 0 before the client hello). */
const char *hm_tls_conn_sni(const struct hm_tls_conn *c);
unsigned hm_tls_conn_match(const struct hm_tls_conn *c);
/* "TLSv1.3", "TLS_AES_128_GCM_SHA256" once established (static strings; "" before). */
const char *hm_tls_conn_version(const struct hm_tls_conn *c);
const char *hm_tls_conn_cipher(const struct hm_tls_conn *c);

#endif
