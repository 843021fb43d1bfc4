/*
 * The exchange: one request and its response, from a valid request head to the last response
 * byte. It routes (table, affinity, skip list), chooses and connects a dyno, retries, waits for
 * booting dynos, keeps the timers, decides the codes, counts the request in flight and writes the
 * one log line. It does not know which protocol its client speaks: it talks to the client's
 * protocol through struct hm__router_client_ops (HTTP/1 implements them per connection, HTTP/2
 * per stream) and to the dyno through its upstream (router/upstream.h). docs/router.md draws it.
 *
 * Types only: the functions are in router/xchg.h.
 */
#ifndef HM_ROUTER_XCHG_T_H
#define HM_ROUTER_XCHG_T_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/model.h"
#include "common/table.h"
#include "router/accesslog.h"
#include "router/affinity.h"
#include "router/ctx-t.h"
#include "router/http-t.h"
#include "router/upstream-t.h"

/*
 * Where an exchange stands. The request's way to the dyno and the response's way back overlap
 * (a dyno may answer before it has the whole upload): the state follows the response; the
 * upload's progress after SEND is in the flags (HM__XF_REQ_SENT, HM__XF_REQ_REFUSED).
 *
 *   ROUTE ──▶ BOOTWAIT (only starting dynos; routes again every 100 ms) ──▶ ROUTE
 *   ROUTE ──▶ CONNECT ──(connected)──▶ SEND        (a pooled connection: ROUTE ──▶ SEND)
 *   CONNECT ──(refused, timed out)──▶ ROUTE (another dyno) or an error
 *   SEND ──(the request's last byte is out)──▶ WAIT ──(response head)──▶ RECV ──▶ DONE
 *   SEND ──(response head before the request is out: an early answer)──▶ RECV
 *   SEND ──(a reused pooled connection closed before answering)──▶ CONNECT (same dyno, once)
 *   SEND, WAIT ──(101)──▶ TUNNEL
 */
enum hm__router_xchg_state {
	HM__XS_ROUTE = 0, /* choosing a dyno (synchronous) */
	HM__XS_BOOTWAIT,  /* only starting dynos: polling the table */
	HM__XS_CONNECT,	  /* connecting to the chosen dyno */
	HM__XS_SEND,	  /* the request is going out; no final response head yet */
	HM__XS_WAIT,	  /* the whole request went out: waiting for the response head (H12) */
	HM__XS_RECV,	  /* the response head went to the client; the body follows */
	HM__XS_DONE,	  /* the response is complete; waiting until the client has it all */
	HM__XS_TUNNEL,	  /* after 101: bytes both ways until either side closes */
};

/* The flags word of an exchange: what is orthogonal to its state. */
enum hm__router_xchg_flag {
	HM__XF_REQ_SENT = 1 << 0,     /* the request's last byte was handed to the dyno */
	HM__XF_REQ_REFUSED = 1 << 1,  /* a write to the dyno failed: nothing more goes to it, and
				       * what it sent before (an early answer) is still read */
	HM__XF_REPLAY = 1 << 2,	      /* the whole request is still held: it can go out again */
	HM__XF_RETRIED = 1 << 3,      /* it went out again after a stale pooled connection */
	HM__XF_RESP_STARTED = 1 << 4, /* the dyno began to answer (an interim or final head) */
	HM__XF_CONTINUE = 1 << 5,     /* the dyno sent 100 Continue (a second one is an error) */
	HM__XF_COUNTED = 1 << 6,      /* holds +1 on the dyno's in-flight counter and ledger */
	HM__XF_AFF_VALID = 1 << 7,    /* the request's affinity cookie is genuine for the dyno */
	HM__XF_SET_COOKIE = 1 << 8,   /* the response gets a new affinity cookie */
	HM__XF_LOGGED = 1 << 9,	      /* the log line is written */
	HM__XF_OUT_BUSY = 1 << 10,    /* bytes given to the client are not all written yet */
	HM__XF_DEFERRED = 1 << 11,    /* response bytes wait for the client to take them */
	HM__XF_CLIENT_EOF = 1 << 12,  /* tunnel: the client closed; ends once the dyno has it all */
	HM__XF_DYNO_EOF = 1 << 13,    /* tunnel: the dyno closed; ends once the client has it all */
	HM__XF_SKIPLIST = 1 << 14,    /* routing: dynos in the worker's skip list are avoided */
};

/* What body_peek() says beside the spans. */
enum hm__router_body_flag {
	HM__BODY_END = 1 << 0,	/* the spans end with the request's last byte */
	HM__BODY_FULL = 1 << 1, /* nothing more can come until some of it is consumed */
};

/*
 * What the exchange asks of its client's protocol. cs is the protocol's object (an HTTP/1
 * connection, an HTTP/2 stream). Calls run on the loop thread, inside an exchange function;
 * apart from the three endings (error, abort, done) none may call back into the exchange.
 */
struct hm__router_client_ops {
	/* The exchange's next deadline (loop ms). The protocol calls hm__router_xchg_timeout() at
	 * or after it; early is harmless (the exchange asks again). */
	void (*arm)(void *cs, uint64_t due);

	/*
	 * The request body received and not yet consumed, as HTTP/1.1 body bytes matching the head
	 * (raw for a Content-Length, chunked otherwise, trailers included): fills up to cap spans
	 * (cap >= 3) and returns how many, and *fl (enum hm__router_body_flag). The spans stay
	 * where they are until the next body_consume(); a span already given may come back longer
	 * with more bytes. Returns -EPROTO if the body is malformed (the exchange answers 400 H26)
	 * or -ENOMEM (503 H99). In a tunnel: every byte the client sent.
	 */
	int (*body_peek)(void *cs, uv_buf_t *b, unsigned cap, unsigned *fl);
	/* The first n bytes of what body_peek gives are no longer needed (written to the dyno and
	 * not kept for a resend); n may be 0. Called only when no write of them is in progress, so
	 * the protocol may move what is left. */
	void (*body_consume)(void *cs, size_t n);
	/* The request head's bytes are no longer needed (the dyno's head is written). May be NULL.
	 */
	void (*head_done)(void *cs);

	/* Expect: 100-continue: the router answers it as the body is about to be forwarded (the
	 * protocol ignores it if the body is already all there). Returns 0 or a negative errno (the
	 * client is gone). */
	int (*send_continue)(void *cs);
	/*
	 * The dyno's response head: m as at HM__EV_HEAD, checked into rs (m's header names may be
	 * rewritten in place; nothing of m is referenced after the call); rc says what the exchange
	 * adds (the affinity cookie) and what the request was (HEAD, upgrade). The protocol plans
	 * how it goes out (plan->body: none, raw or payload only; plan->tunnel for a 101 it takes;
	 * plan->trailers if it wants the trailer fields) and takes or holds the head. Returns 0,
	 * -ENOMEM or -ENOSPC (no memory for it: 503 H99), -EPROTO (a response this protocol cannot
	 * carry: 502 H25), or another negative errno (the client is gone: 499 H27).
	 */
	int (*respond)(void *cs, struct hm__router_msg *m, const struct hm__router_resp *rs,
		       const struct hm__router_resp_ctx *rc, struct hm__router_resp_plan *plan);
	/*
	 * Response body bytes in the form the plan asked for (a tunnel: every byte), n possibly 0
	 * (what the protocol held, such as the head, goes out). p stays valid until the protocol
	 * has written it. Returns 0 (written, or copied), 1 (queued: hm__router_xchg_sent() follows
	 * when everything queued has been written), -ENOBUFS (cannot take it now: offered again
	 * after hm__router_xchg_sent()), or another negative errno (the client is gone).
	 */
	int (*send)(void *cs, const char *p, size_t n);
	/* The response is complete (after the last send), with the trailer fields collected when
	 * the plan asked for them (n may be 0). Returns as send() does (never -ENOBUFS). */
	int (*end)(void *cs, const struct hm__router_field *trailers, size_t n);

	/*
	 * The endings: exactly one of them ends the exchange from its side; the protocol forgets
	 * the exchange in it. They may call anything of the protocol's own, but nothing of the
	 * exchange.
	 *
	 * error: the router's answer with status (before the response head went out, or while the
	 * protocol still holds it unwritten). Returns 0 if that answer is going out, or a negative
	 * errno if it cannot be (the client is gone, or response bytes went out already): the
	 * protocol ends the client side as abort() does.
	 */
	int (*error)(void *cs, int status);
	/* No answer can or should be given (the client went away, a broken response or tunnel): end
	 * the client side now (HTTP/1 closes the connection, HTTP/2 resets the stream). */
	void (*abort)(void *cs);
	/* The response went out whole (a tunnel ended after the dyno closed). The protocol goes on
	 * with the connection (keep-alive, the next pipelined request) or ends it. */
	void (*done)(void *cs);
};

/* What the exchange is told about its client (borrowed for the exchange's life). */
struct hm__router_client_info {
	const char *peer; /* the client's IP, text */
	uint8_t peer_len;
	uint16_t port;	  /* the port it connected to (X-Forwarded-Port) */
	uint64_t t_first; /* loop ms of the request's first byte (the boot wait counts from it) */
};

/* One exchange (from ctx->free_xchgs: nothing is allocated per request). */
struct hm__router_xchg {
	struct hm__router_free fl; /* first member: ctx->free_xchgs */
	struct hm__router_ctx *ctx;
	const struct hm__router_client_ops *ops;
	void *cs;
	const struct hm__router_msg *req; /* the request head (the protocol's) */
	const struct hm__router_req *rq;  /* its checked facts (the protocol's) */
	const char *peer;
	uint8_t peer_len;
	uint16_t port;
	struct hm__router_upstream up; /* toward the dyno */
	/* Everything from here to lr is per-request state, zeroed when the exchange starts. */
	uint8_t state;	    /* enum hm__router_xchg_state */
	uint8_t code;	    /* enum hm__router_code of the outcome */
	uint8_t attempts;   /* connects that failed */
	uint8_t ntried;	    /* entries of tried[] */
	uint8_t last_fail;  /* the last attempt's failure: 0, refused, timed out (xchg.c) */
	uint16_t flags;	    /* enum hm__router_xchg_flag */
	int status;	    /* the status sent, or to log */
	uint32_t body_sent; /* request body bytes written to the dyno and not consumed */
	const char *dp;	    /* HM__XF_DEFERRED: the response bytes waiting, and how many */
	uint32_t dn;
	bool dlast;
	struct hm_table_map *map; /* referenced while counted */
	uint64_t file_id;
	uint32_t slot;
	struct hm_route route;
	struct hm_addr tried[16];
	uint64_t t_first;      /* loop ms: first byte of the request */
	uint64_t t_head_ns;    /* head complete (monotonic ns) */
	uint64_t t_connect_ns; /* connect started (monotonic ns, for the histogram) */
	uint64_t t_connect;    /* connect started (loop ms, for the timer) */
	uint64_t t_send_ns;    /* dyno connection ready, request going out */
	uint64_t t_req_done;   /* loop ms: request fully sent */
	uint64_t last_io;      /* loop ms: last progress on the client's side */
	uint64_t start_ms;     /* wall ms, X-Request-Start */
	int64_t connect_ms;    /* -1: none */
	uint8_t aff_value_len;
	char aff_dyno[HM_DYNO_NAME_MAX + 1];
	char tried_dyno[HM_DYNO_NAME_MAX + 1]; /* the last dyno a connect failed to */
	/* Filled as the exchange starts, not zeroed. */
	struct hm__router_logreq lr;		/* the log line's text fields */
	char aff_value[HM__AFFINITY_VALUE_MAX]; /* the affinity cookie's value, as sent */
};

#endif
