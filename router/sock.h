/*
 * The client transport (types and the contract of each call in router/sock-t.h). A worker opens
 * one per accepted connection, a protocol attaches to it and from then on reads and writes only
 * through these calls. Everything runs on the worker's loop thread.
 */
#ifndef HM_ROUTER_SOCK_H
#define HM_ROUTER_SOCK_H

#include <sys/socket.h>

#include "router/sock-t.h"

/*
 * A plain TCP transport for an accepted, non-blocking socket (peer: its address from accept4).
 * Returns 0 and *out, or a negative errno after which fd is closed. Counts the connection in
 * the metrics.
 */
int hm__router_sock_open_tcp(struct hm__router_ctx *ctx, int fd, const struct sockaddr *peer,
			     struct hm__router_sock **out);

/* The client's address as text into s->peer (IPv4-mapped IPv6 addresses as IPv4). */
void hm__router_sock_peer_text(struct hm__router_sock *s, const struct sockaddr *sa);

/*
 * --proxy-protocol: looks for the PROXY header at the start of the n bytes at p that s has
 * read. Returns its length (s->peer is now the client's address it carries, s->proxy_wait is
 * cleared), 0 (more bytes needed), or -EPROTO (not one: counted and logged; close s without
 * routing anything).
 */
int hm__router_sock_proxy(struct hm__router_sock *s, const uint8_t *p, size_t n);

/*
 * The TLS transports of a worker: t (the caller's, zeroed, with engine, store, open[],
 * timeout_ms and max_handshakes filled) becomes ctx->tls for the worker's life (a worker exits
 * without undoing it). Returns 0 or a libuv error.
 */
int hm__router_tls_start(struct hm__router_ctx *ctx, struct hm__router_tlsw *t);

/*
 * A TLS transport for an accepted, non-blocking socket (ctx->tls must be set): the handshake
 * runs (counted in ctx->tls->handshakes, bounded by its timeout; the connection is in
 * ctx->conns meanwhile), then the protocol ALPN chose is opened on it (ctx->tls->open[]).
 * Returns 0, or a negative errno after which fd is closed. Counts the connection in the
 * metrics.
 */
int hm__router_sock_open_tls(struct hm__router_ctx *ctx, int fd, const struct sockaddr *peer);

/* The protocol that reads and writes s from now on: cbs are called with s, whose data is set. */
static inline void hm__router_sock_attach(struct hm__router_sock *s,
					  const struct hm__router_sock_cbs *cbs, void *data)
{
	s->cbs = cbs;
	s->data = data;
}

static inline int hm__router_sock_read_start(struct hm__router_sock *s)
{
	return s->ops->read_start(s);
}

static inline void hm__router_sock_read_stop(struct hm__router_sock *s)
{
	s->ops->read_stop(s);
}

/* Writes b[0..n) (n <= 4; the bytes stay valid until written): 0 all taken, 1 queued (written
 * follows), or a negative error. */
static inline int hm__router_sock_writev(struct hm__router_sock *s, uv_buf_t *b, unsigned n)
{
	return s->ops->writev(s, b, n);
}

/* Writes what the transport takes now of b[0..n), any n: the bytes taken, or a negative
 * error. Nothing is queued: the caller offers the rest again, or queues it with writev. */
static inline ssize_t hm__router_sock_try_writev(struct hm__router_sock *s, const uv_buf_t *b,
						 unsigned n)
{
	return s->ops->try_writev(s, b, n);
}

static inline int hm__router_sock_shutdown(struct hm__router_sock *s)
{
	return s->ops->shutdown(s);
}

/* Closes the transport (queued writes are cancelled: written reports UV_ECANCELED); closed
 * follows. */
static inline void hm__router_sock_close(struct hm__router_sock *s)
{
	s->ops->close(s);
}

#endif
