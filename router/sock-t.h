/*
 * The client transport: what a client connection's protocol (HTTP/1 now, HTTP/2 next) reads
 * from and writes to, behind a small ops table, as h2o's h2o_socket_t hides libuv and TLS and
 * nng's transports hide theirs. Two implementations: plain TCP (sock.c) and TLS over
 * router/tls.c's memory engine (sock_tls.c: ciphertext into its own buffer, hm_tls_conn_recv()
 * into the protocol's; hm_tls_conn_send() then the ciphertext out; close_notify on shutdown; the
 * protocol chosen by ALPN). With --proxy-protocol both read and strip a PROXY v1/v2 header before
 * the protocol sees a byte (the peer address below is its). docs/router.md, "Layers".
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
#include "router/list.h"
#include "router/tls.h"

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
	/* Writes what the transport takes at once of b[0..n) (any n), queuing nothing: returns the
	 * bytes taken (0 when it takes none now, or has writes queued) or a negative error. */
	ssize_t (*try_writev)(struct hm__router_sock *s, const uv_buf_t *b, unsigned n);
	/* No more writes: the peer sees the end of the stream after what is queued. */
	int (*shutdown)(struct hm__router_sock *s);
	void (*close)(struct hm__router_sock *s);
};

/* Opens the protocol an ALPN result asks for on an established TLS transport (h1.h's
 * hm__router_h1_open has this shape). */
typedef int (*hm__router_proto_open_fn)(struct hm__router_ctx *ctx, struct hm__router_sock *s);

/* A queued write of the TLS transport: plaintext not yet encrypted, then ciphertext not yet
 * written (sock_tls.c). */
struct hm__router_tls_wrec {
	uv_buf_t b[4];	 /* the protocol's bytes, advanced as they are encrypted */
	uint8_t n, i;	 /* buffers, the first not fully encrypted */
	bool enc;	 /* all of it is encrypted */
	uint64_t ct_end; /* then: the engine's output position its last byte reached */
};

#define HM__TLS_WQ 8 /* writes the TLS transport queues (a protocol has at most a few) */

/*
 * What a worker's TLS transports share (sock_tls.c; ctx->tls, NULL without --tls-listen). The
 * worker fills open[] and the engine; the transport keeps the rest.
 */
struct hm__router_tlsw {
	struct hm_tls_ctx *engine;	   /* owned by the worker */
	struct hm_certstore_reader *store; /* owned by the worker */
	hm__router_proto_open_fn open[3];  /* by enum hm_tls_alpn: the protocols spoken */
	uint64_t timeout_ms;		   /* handshake timeout */
	uint32_t max_handshakes;	   /* in progress, per worker */
	uint32_t handshakes;		   /* in progress now */
	/* The engine's certificate-cache counts as last added to the worker's counters. */
	uint64_t cache_hits, cache_misses, cache_evictions;
	uint32_t cached;
	struct hm__router_list hs;	/* handshaking transports, oldest first */
	uv_timer_t hs_timer;		/* the oldest one's deadline */
	struct hm__router_list pending; /* transports with input to deliver (read_start) */
	uv_idle_t idle;			/* delivers it on the next loop iteration */
	char gather[16384]; /* a write's buffers copied together: one TLS record, not one each */
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
	bool proxy_wait; /* --proxy-protocol: the PROXY header is still to come */
	bool https;	 /* TLS: X-Forwarded-Proto https, protocol=https, Secure cookies */
	uint16_t port;	 /* the listener's port (X-Forwarded-Port) */
	uint8_t peer_len;
	char peer[47];		    /* the client's IP, text (the PROXY header's, if any) */
	struct hm__router_buf *pre; /* plain TCP, proxy_wait: the bytes read so far */
	uint32_t pre_len;
};

/* A TLS client transport (from ctx->free_tls_socks): the transport the protocol sees, and the
 * engine's connection with what it reads and writes. */
struct hm__router_tls_sock {
	struct hm__router_sock s;   /* first member: the protocol's view, and the free-list link */
	struct hm_tls_conn *tls;    /* owned */
	struct hm__router_buf *cin; /* ciphertext read and not yet taken by the engine */
	uint32_t cin_off, cin_len;  /* its first byte not taken; its length */
	uint16_t tflags;	    /* enum in sock_tls.c */
	uint8_t wq_head, wq_len;    /* the write queue */
	uint32_t w_inflight;	    /* ciphertext bytes in the uv_write below */
	uint64_t ct_sent;	    /* ciphertext bytes written to the socket */
	uint32_t presealed;	    /* plaintext try_writev sealed but did not count as taken */
	uint64_t hs_start;	    /* loop ms the handshake started */
	struct hm__router_list hs_link;	  /* tlsw->hs while handshaking */
	struct hm__router_list pend_link; /* tlsw->pending */
	struct hm__router_conn hs_conn;	  /* ctx->conns while handshaking (no protocol yet) */
	uv_write_t wreq;
	struct hm__router_tls_wrec wq[HM__TLS_WQ];
};

#endif
