/*
 * The router's way to dynos: connections to dynos (struct hm__router_dconn: a TCP connection,
 * owned by one request, idle in the pool, or closing) and the HTTP/1.1 client side of one
 * request (struct hm__router_upstream, embedded in its exchange: the dyno's head of the request,
 * the response parser, what it reports to its owner). As h2o's http1client sits on a socket
 * pool: the request object is per exchange, the connection is per dyno and outlives it.
 *
 * Types only: the functions are in router/upstream.h.
 */
#ifndef HM_ROUTER_UPSTREAM_T_H
#define HM_ROUTER_UPSTREAM_T_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "router/ctx-t.h"
#include "router/http-t.h"
#include "router/iobuf.h"
#include "router/pool.h"

/* struct hm__router_dconn.flags */
enum hm__router_dconn_flag {
	HM__DC_CONNECTED = 1 << 0,
	HM__DC_READING = 1 << 1,
	HM__DC_CLOSING = 1 << 2, /* uv_close called: freed in its close callback */
	HM__DC_EOF = 1 << 3,	 /* read EOF or an error: reading is over */
};

/* A TCP connection to a dyno. */
struct hm__router_dconn {
	struct hm__router_free fl; /* first member: ctx->free_dconns */
	uv_tcp_t tcp;
	uv_connect_t creq;
	struct hm__router_ctx *ctx;
	struct hm__router_upstream *up;	 /* the request using it, or NULL (pooled, closing) */
	struct hm__router_pool_entry pe; /* its address, and its place in the pool while idle */
	struct hm__router_buf *in;	 /* response bytes; NULL while idle and empty */
	uint32_t in_len, in_off;	 /* bytes in it; bytes parsed */
	uint32_t wpending;		 /* writes queued to the dyno */
	uint8_t flags;			 /* enum hm__router_dconn_flag */
};

/* What ops->head and ops->body return: how the response goes on. */
enum hm__router_up_next {
	HM__UP_STOP = -1,   /* the owner ended the request (or dropped the connection): stop */
	HM__UP_BODY = 0,    /* a final head: parse the body */
	HM__UP_INTERIM = 1, /* an interim (1xx) head was dropped: parse the next head */
	HM__UP_TUNNEL = 2,  /* 101: from now on every byte is relayed as it comes */
	HM__UP_PAUSE = 3,   /* body(): the owner cannot take more now */
};

/*
 * What an upstream tells its owner (the exchange), from the upstream's I/O callbacks on the
 * loop thread. owner is the pointer given to hm__router_upstream_init(). A callback that ends
 * the request returns HM__UP_STOP (or, for written/gone/bad/connected, simply returns): the
 * upstream then touches nothing more.
 */
struct hm__router_upstream_ops {
	/* The connect hm__router_upstream_connect() started finished: 0 or a libuv error. */
	void (*connected)(void *owner, int status);
	/* A response head is parsed and checked (up->resp, up->rs). Returns enum
	 * hm__router_up_next. The owner sets up->resp.dechunk before returning HM__UP_BODY if it
	 * wants the payload only. */
	int (*head)(void *owner);
	/*
	 * Response bytes: body bytes as the owner asked (raw, or payload only), or in a tunnel
	 * every byte. n may be 0 (the head is out and nothing followed yet; or chunk framing only).
	 * last: the response is complete with these; the upstream then touches nothing more and
	 * ignores what this returns. p points into the connection's buffer, which is not compacted
	 * while the owner holds it (hm__router_upstream_hold). Returns 0 (go on), HM__UP_PAUSE
	 * (parse nothing more until hm__router_upstream_released) or HM__UP_STOP.
	 */
	int (*body)(void *owner, const char *p, uint32_t n, bool last);
	/* Every queued write to the dyno completed (status 0), or one failed (a libuv error). */
	void (*written)(void *owner, int status);
	/* The dyno closed or reset the connection (err: UV_EOF or a libuv error) before the
	 * response was complete (a close-delimited body completes through body() instead). */
	void (*gone)(void *owner, int err);
	/* The response is malformed or its head too large (why: a static reason, or NULL). */
	void (*bad)(void *owner, const char *why);
};

/* struct hm__router_upstream.flags */
enum hm__router_upstream_flag {
	HM__UPF_REUSED = 1 << 0,    /* the connection came from the pool for this request */
	HM__UPF_GOT_BYTES = 1 << 1, /* a byte came on the connection for this request */
	HM__UPF_TUNNEL = 1 << 2,    /* after 101: bytes relayed raw */
	HM__UPF_HELD = 1 << 3,	    /* bytes of the buffer are still referenced by the owner */
	HM__UPF_HEAD_REQ = 1 << 4,  /* the request is HEAD: no response body */
	HM__UPF_PAUSED = 1 << 5,    /* the owner asked for no more bytes until it releases */
};

/* The HTTP/1.1 client side of one exchange. */
struct hm__router_upstream {
	struct hm__router_ctx *ctx;
	const struct hm__router_upstream_ops *ops;
	void *owner;
	struct hm__router_dconn *conn; /* or NULL */
	struct hm__router_buf *qhead;  /* the request head for the dyno (kept for a resend) */
	uint32_t qhead_len;
	uint32_t hold;	  /* bytes of qhead held back to go out with the first body bytes */
	uint64_t last_io; /* loop ms: the last byte read from or written to the dyno */
	uint8_t flags;	  /* enum hm__router_upstream_flag */
	struct hm__router_resp rs;   /* the response head, checked */
	struct hm__router_buf *tbuf; /* response trailers collected, when asked */
	struct hm__router_msg resp;  /* the response parser; its spans point into conn->in */
};

#endif
