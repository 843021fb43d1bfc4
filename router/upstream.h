/*
 * Toward dynos (types in router/upstream-t.h): connect or take a pooled connection, write the
 * request (the dyno's head once, then body bytes framed as HTTP/1.1 by the client protocol),
 * parse the response (router/http.h), relay what it says to the owner through the ops it
 * registered, and hand the connection back to the pool or close it.
 *
 * Back-pressure: the connection reads while its buffer has room; bytes the owner still
 * references (body() returned 1) are never moved, so a client that reads slowly fills the
 * buffer and stops the dyno. Everything here runs on the worker's loop thread.
 */
#ifndef HM_ROUTER_UPSTREAM_H
#define HM_ROUTER_UPSTREAM_H

#include "router/upstream-t.h"

/* The worker's pool of idle dyno connections (ctx->pool), whose evictions close through this
 * module. Returns 0 or -ENOMEM. */
int hm__router_upstream_pool_init(struct hm__router_ctx *ctx);

/* Prepares up (once, when its owner is made): ops and owner are kept. */
void hm__router_upstream_init(struct hm__router_upstream *up, struct hm__router_ctx *ctx,
			      const struct hm__router_upstream_ops *ops, void *owner);

/*
 * The request is over: its connection, if any, is closed; the head and trailer buffers are given
 * back; up is ready for the next request. reuse: the request went out whole, so the connection
 * may go back to the pool if the response allows it (complete, keep-alive, nothing unread,
 * nothing being written).
 */
void hm__router_upstream_end(struct hm__router_upstream *up, bool reuse);

/* An idle connection to addr from the pool for this request: true, and it is usable at once;
 * false if the pool has none. */
bool hm__router_upstream_take(struct hm__router_upstream *up, const struct hm_addr *addr);

/*
 * Connects to addr for this request: returns 0, and ops->connected follows. Errors: -EMFILE when
 * no descriptor or local port could be had even after closing an idle pooled connection (counted
 * and logged: the router's shortage, not the dyno's fault), -ENOMEM, or the libuv error of a
 * connect that failed at once (refused); no callback follows an error.
 */
int hm__router_upstream_connect(struct hm__router_upstream *up, const struct hm_addr *addr);

/* Closes the connection of a request that will not use it (failed, retried elsewhere). */
void hm__router_upstream_drop(struct hm__router_upstream *up);

/* Writes the dyno's head of the request (m and rq as checked, f what the router adds) into a
 * buffer of its own, kept for a resend. Once per exchange. Returns 0 or -ENOMEM. */
int hm__router_upstream_head(struct hm__router_upstream *up, const struct hm__router_msg *m,
			     const struct hm__router_req *rq, const struct hm__router_fwd *f);

/*
 * The connection is usable: reading starts, the response parser is reset (head_request: no body
 * will follow the response head), and the head is held back to go out with the first body bytes.
 * Returns 0 or a libuv error (the connection cannot read: treat as gone).
 */
int hm__router_upstream_begin(struct hm__router_upstream *up, bool head_request);

/*
 * Writes the held head, if any, followed by b[0..n) (n <= 3). The bytes must stay valid until
 * the write completes. Returns 0 (the socket took everything), 1 (queued: ops->written follows)
 * or a negative libuv error (the dyno refused it: nothing more will go out).
 */
int hm__router_upstream_send(struct hm__router_upstream *up, const uv_buf_t *b, unsigned n);

/* Writes to the dyno are queued. */
bool hm__router_upstream_writing(const struct hm__router_upstream *up);
/* The dyno's side is closed (EOF or error seen). */
bool hm__router_upstream_eof(const struct hm__router_upstream *up);

/* The owner references bytes body() gave it (it queued them for writing): the buffer is not
 * compacted until it releases them. */
static inline void hm__router_upstream_hold(struct hm__router_upstream *up)
{
	up->flags |= HM__UPF_HELD;
}

/* The owner no longer references bytes body() gave it: the buffer may be compacted, reading
 * resumes and what is already buffered is parsed. */
void hm__router_upstream_released(struct hm__router_upstream *up);

/*
 * Collects the trailer fields of a chunked response being de-chunked (set before the body is
 * parsed), for a client protocol that can send them (HTTP/2). Returns 0 or -ENOMEM (no buffer:
 * the trailers are dropped, as for HTTP/1.0 clients).
 */
int hm__router_upstream_collect_trailers(struct hm__router_upstream *up);

/* The trailers collected (see hm__router_msg_trailers), valid until hm__router_upstream_end. */
size_t hm__router_upstream_trailers(const struct hm__router_upstream *up,
				    struct hm__router_field *out, size_t cap);

#endif
