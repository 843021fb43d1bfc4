/*
 * The client transport: what a client connection's protocol (HTTP/1 now, HTTP/2 next) reads
 * from and writes to, behind a small ops table, as h2o's h2o_socket_t hides libuv and TLS and
 * nng's transports hide theirs. Plain TCP is the one implementation here (sock.c). A TLS
 * implementation over router/tls.c's memory engine slots in as a second ops table (reads:
 * ciphertext into its own buffer, hm_tls_conn_recv() into the protocol's; writes:
 * hm_tls_conn_send() then the ciphertext out; shutdown: close_notify first), and a PROXY v1/v2
 * preamble is read and stripped by the transport before the protocol sees a byte (the peer address
 * below is its). docs/router.md, "Layers", says where each goes.
 *
 * Types only: the functions are in router/sock.h.
 */
#ifndef HM_ROUTER_SOCK_T_H
#define HM_ROUTER_SOCK_T_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "router/ctx-t.h"

struct hm__router_sock;

/* What the transport tells the protocol above it (set with hm__router_sock_attach). Called on
 * the loop thread from the transport's I/O callbacks. */
struct hm__router_sock_cbs {
	/* Where the next bytes read go: b->len 0 if the protocol has no room (reading then waits
	 * for the protocol to call read_start again). */
	void (*alloc)(struct hm__router_sock *s, uv_buf_t *b);
	/* n > 0 bytes were put where alloc said; n == 0: nothing; n < 0: end of the stream (UV_EOF)
	 * or an error: reading has stopped. */
	void (*read)(struct hm__router_sock *s, ssize_t n);
	/* A write that hm__router_sock_writev() queued completed (0 or a libuv error). */
	void (*written)(struct hm__router_sock *s, int status);
	/* The shutdown hm__router_sock_shutdown() started completed (0 or a libuv error). */
	void (*shutdown)(struct hm__router_sock *s, int status);
	/* The transport is closed: s goes back to the free list when this returns. */
	void (*closed)(struct hm__router_sock *s);
};

/* A transport implementation. Every call returns 0 or a negative libuv error unless it says. */
struct hm__router_sock_ops {
	int (*read_start)(struct hm__router_sock *s);
	void (*read_stop)(struct hm__router_sock *s);
	/* Returns 0 (all taken), 1 (queued: cbs->written follows) or a negative error. */
	int (*writev)(struct hm__router_sock *s, uv_buf_t *b, unsigned n);
	/* No more writes: the peer sees the end of the stream after what is queued. */
	int (*shutdown)(struct hm__router_sock *s);
	void (*close)(struct hm__router_sock *s);
};

/* A client connection's transport (from ctx->free_socks). */
struct hm__router_sock {
	struct hm__router_free fl; /* first member: ctx->free_socks */
	uv_tcp_t tcp;
	uv_shutdown_t sreq;
	struct hm__router_ctx *ctx;
	const struct hm__router_sock_ops *ops;
	const struct hm__router_sock_cbs *cbs; /* the protocol's */
	void *data;			       /* the protocol's object */
	bool reading;
	uint8_t peer_len;
	char peer[47]; /* the client's IP, text */
};

#endif
