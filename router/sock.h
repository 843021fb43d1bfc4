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
