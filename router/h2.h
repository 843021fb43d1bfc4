/*
 * HTTP/2 toward clients, without I/O: one engine per worker, one connection object per client
 * connection, one stream object per request. Bytes come in through hm__router_h2_conn_recv()
 * (after TLS, or from a plain socket; the client preface included) and frames go out as iovecs
 * from hm__router_h2_conn_output(). Each request stream reaches "the exchange" as an HTTP/1.1
 * request, parsed and checked by router/http.c exactly as an HTTP/1 request is, with its body as
 * HTTP/1.1 body bytes; the exchange answers with the dyno's parsed response head and body spans.
 * The engine has no clock: every call that can decide on time takes "now" in milliseconds, and
 * hm__router_h2_conn_deadline() says when to call hm__router_h2_conn_tick() next.
 * docs/h2.md is the design: mapping, limits, defences, timeouts, failure cases.
 *
 * Threads: everything here runs on the worker's loop thread.
 * Callbacks (struct hm__router_h2_ops, span release callbacks) run inside the engine call that
 * caused them. They may call any hm__router_h2_stream_*() function (on any stream) but must not
 * free the connection or the context.
 */
#ifndef HM_ROUTER_H2_H
#define HM_ROUTER_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "router/http.h"

struct hm__router_h2_ctx;
struct hm__router_h2_conn;
struct hm__router_h2_stream;

/* HTTP/2 error codes (RFC 9113, 7) used in this interface. */
#define HM__H2_NO_ERROR		  0x0u
#define HM__H2_PROTOCOL_ERROR	  0x1u
#define HM__H2_INTERNAL_ERROR	  0x2u
#define HM__H2_FLOW_CONTROL_ERROR 0x3u
#define HM__H2_REFUSED_STREAM	  0x7u
#define HM__H2_CANCEL		  0x8u
#define HM__H2_COMPRESSION_ERROR  0x9u
#define HM__H2_ENHANCE_YOUR_CALM  0xbu
#define HM__H2_ERROR_CODES	  14 /* 0x0 ... 0xd */

/* Settings of one worker's engine. hm__router_h2_config_default() gives docs/h2.md's values. */
struct hm__router_h2_config {
	uint32_t max_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS, and the unreleased bound */
	uint32_t max_head;    /* request head bound (--max-head); SETTINGS_MAX_HEADER_LIST_SIZE */
	uint32_t max_response_head; /* largest response head sent (--max-response-head) */
	uint32_t stream_window;	    /* per-stream receive window, >= 65535 */
	uint32_t conn_window;	    /* connection receive window, >= stream_window */
	uint32_t glitch_burst;	    /* glitch tokens a connection starts with and may hold */
	uint32_t glitch_rate;	    /* glitch tokens regained per second */
	uint32_t idle_timeout_ms;   /* no stream, no input: GOAWAY */
	uint32_t head_timeout_ms;   /* a header block left unfinished: GOAWAY */
	uint32_t send_timeout_ms;   /* output pending without progress: dead */
	uint32_t drain_grace_ms;    /* between the shutdown notice and the final GOAWAY */
	uint32_t slab_keep;	    /* idle bytes kept per size class (router/slab.h) */
};

void hm__router_h2_config_default(struct hm__router_h2_config *cfg);

/* Why a stream ended (ops->closed). */
enum hm__router_h2_close {
	HM__H2_CLOSE_DONE = 0, /* the whole response was handed to the transport */
	HM__H2_CLOSE_RESET,    /* the client reset the stream (code: hm__router_h2_stream_code()) */
	HM__H2_CLOSE_ERROR,    /* reset by the exchange, or by the engine for a stream error */
	HM__H2_CLOSE_CONN,     /* the connection ended (client gone, GOAWAY for abuse, shutdown) */
	HM__H2_CLOSE_TIMEOUT,  /* the connection ended on a timeout (send, head) */
};

/* What the engine tells the exchange (same for every connection of a context). */
struct hm__router_h2_ops {
	/*
	 * A request head is complete. s is new; attach the exchange with
	 * hm__router_h2_stream_set_data(). If hm__router_h2_stream_status(s) is non-zero the
	 * request is malformed: log it and answer it with hm__router_h2_stream_error(). Otherwise
	 * hm__router_h2_stream_msg() and _req() are the checked HTTP/1.1 request. The exchange now
	 * holds a reference it gives back with hm__router_h2_stream_release().
	 */
	void (*request)(struct hm__router_h2_stream *s);
	/* More request body can be peeked, or the body is complete (hm__router_h2_stream_body_*).
	 * May be NULL for an exchange that polls. */
	void (*body)(struct hm__router_h2_stream *s);
	/*
	 * The stream ended (enum hm__router_h2_close). Called once, for delivered streams not yet
	 * released. Nothing more is accepted on s; its msg, req and unconsumed body stay readable
	 * until it is released.
	 */
	void (*closed)(struct hm__router_h2_stream *s, int why);
	/*
	 * Output became available while no engine call of the caller's is running (an exchange
	 * submitted something from its own event). Called once until the caller next calls
	 * hm__router_h2_conn_output(). May be NULL if the caller polls want_write itself.
	 */
	void (*wakeup)(struct hm__router_h2_conn *c);
};

/*
 * Counters of one context, for metrics. Monotonic but for bytes. They are written with relaxed
 * atomic stores, one writer (the context's loop thread), so that another process may read them
 * with relaxed loads while they change (hm__router_h2_ctx_count_into()).
 */
struct hm__router_h2_stats {
	uint64_t conns;		/* connections created */
	uint64_t streams;	/* requests delivered to the exchange */
	uint64_t refused;	/* streams refused: slots of unreleased streams all taken, or (by
				   nghttp2) over the limit the client has not acknowledged yet */
	uint64_t glitches;	/* see docs/h2.md, "Glitches" */
	uint64_t stream_errors; /* streams reset by nghttp2 or the engine for a protocol error */
	uint64_t resets;	/* RST_STREAM frames received from clients */
	uint64_t goaway_sent[HM__H2_ERROR_CODES];     /* GOAWAYs sent, by error code */
	uint64_t goaway_recv[HM__H2_ERROR_CODES + 1]; /* ... received; the last: unknown codes */
	uint64_t timeouts;    /* connections ended by the send or head timeout */
	uint64_t heap_allocs; /* allocations that reached malloc (slab misses) */
	uint64_t bytes;	      /* memory held now (engine and nghttp2), in bytes */
};

/* The name of an HTTP/2 error code ("ENHANCE_YOUR_CALM"), or "unknown". Static storage. */
const char *hm__router_h2_code_name(uint32_t code);

/*
 * Makes a context with copies of cfg and ops. Returns 0, -EINVAL (a window below 65535 or a
 * connection window below the stream window, no request/closed callback) or -ENOMEM.
 */
int hm__router_h2_ctx_new(struct hm__router_h2_ctx **out, const struct hm__router_h2_config *cfg,
			  const struct hm__router_h2_ops *ops);
/* Frees the context. Every connection must have been freed. */
void hm__router_h2_ctx_free(struct hm__router_h2_ctx *ctx);
/*
 * From now on the context counts into st (borrowed: it must outlive the context) instead of its
 * own counters; st is added to, never reset, so a context made again carries the totals on (a
 * worker points it at its shared slot, router/shm.h). Call it before the first connection.
 */
void hm__router_h2_ctx_count_into(struct hm__router_h2_ctx *ctx, struct hm__router_h2_stats *st);
/* Counters (heap_allocs and bytes are refreshed by the call). */
const struct hm__router_h2_stats *hm__router_h2_ctx_stats(struct hm__router_h2_ctx *ctx);

/* ---- connections ----------------------------------------------------------------------------- */

/*
 * A server connection whose preface (SETTINGS, connection WINDOW_UPDATE) is queued at once.
 * data is the caller's, returned by hm__router_h2_conn_data(). Returns 0 or -ENOMEM.
 */
int hm__router_h2_conn_new(struct hm__router_h2_ctx *ctx, void *data, uint64_t now,
			   struct hm__router_h2_conn **out);
void *hm__router_h2_conn_data(const struct hm__router_h2_conn *c);

/*
 * Feeds n bytes read from the client. Runs the callbacks. Returns 0, or:
 *  -EPROTO     the engine ended the connection for abuse (glitches, CONTINUATION flood): a
 *              GOAWAY is queued; write what hm__router_h2_conn_output() gives, then close
 *              (hm__router_h2_conn_done());
 *  -ECONNRESET no HTTP/2 (bad preface), a client that floods without reading, a fatal nghttp2
 *              error: close now (hm__router_h2_conn_dead());
 *  -ENOMEM.
 * A protocol error nghttp2 finds itself returns 0: its GOAWAY is in the output, and done() says
 * when to close. Bytes given after the connection stopped reading are ignored.
 */
int hm__router_h2_conn_recv(struct hm__router_h2_conn *c, const void *buf, size_t n, uint64_t now);

/*
 * Fills up to cap iovecs (cap >= 1) with the bytes to write next and returns how many, 0 when
 * there is nothing to write. Until hm__router_h2_conn_sent() has accounted for all of them,
 * every call returns the remaining ones (the memory stays valid and unchanged); then the next
 * call produces more (now starts the send timeout of that batch). Call it whenever want_write
 * is true. Producing output runs callbacks too (streams close as their last frame goes out).
 */
int hm__router_h2_conn_output(struct hm__router_h2_conn *c, struct iovec *iov, int cap,
			      uint64_t now);
/* n bytes of what hm__router_h2_conn_output() gave were written. Runs span release callbacks. */
void hm__router_h2_conn_sent(struct hm__router_h2_conn *c, size_t n, uint64_t now);

/* Read from the client now? (false while a batch is being written, and once closing) */
bool hm__router_h2_conn_want_read(const struct hm__router_h2_conn *c);
/* Is there output to take? */
bool hm__router_h2_conn_want_write(const struct hm__router_h2_conn *c);
/* Close the transport now: the connection is over and its output, if any mattered, written. */
bool hm__router_h2_conn_done(const struct hm__router_h2_conn *c);
/* Close the transport now without writing anything more (flood, send timeout, bad preface). */
bool hm__router_h2_conn_dead(const struct hm__router_h2_conn *c);

/* When hm__router_h2_conn_tick() must run next (UINT64_MAX: never). */
uint64_t hm__router_h2_conn_deadline(const struct hm__router_h2_conn *c);
/* Takes the time decisions due at now (docs/h2.md, "Timeouts"). */
void hm__router_h2_conn_tick(struct hm__router_h2_conn *c, uint64_t now);

/* Graceful drain: a shutdown notice now, the final GOAWAY after drain_grace_ms; streams in
 * flight finish. Idempotent. */
void hm__router_h2_conn_drain(struct hm__router_h2_conn *c, uint64_t now);

/*
 * The transport is gone or being closed: every stream still open gets ops->closed with why
 * (HM__H2_CLOSE_CONN or HM__H2_CLOSE_TIMEOUT); nothing more is read or produced. Idempotent.
 */
void hm__router_h2_conn_shutdown(struct hm__router_h2_conn *c, int why);

/*
 * Frees the connection once the caller's last write from hm__router_h2_conn_output() has
 * completed or been cancelled: the span release callbacks still pending run now. Shuts it down
 * first if needed. If exchanges still hold streams, the memory goes when the last is released.
 */
void hm__router_h2_conn_free(struct hm__router_h2_conn *c);

/* ---- streams: what the exchange reads -------------------------------------------------------- */

struct hm__router_h2_conn *hm__router_h2_stream_conn(const struct hm__router_h2_stream *s);
int32_t hm__router_h2_stream_id(const struct hm__router_h2_stream *s);
void hm__router_h2_stream_set_data(struct hm__router_h2_stream *s, void *data);
void *hm__router_h2_stream_data(const struct hm__router_h2_stream *s);

/* 0 for a valid request, else the status to answer (400, 414, 417, 505) and a static reason. */
int hm__router_h2_stream_status(const struct hm__router_h2_stream *s);
const char *hm__router_h2_stream_why(const struct hm__router_h2_stream *s);

/*
 * The request as HTTP/1.1 (valid while the stream is held): the parsed head and its check.
 * Only meaningful when the status is 0, except that the method, target and Host spans of msg
 * are set whenever the request line could be parsed (msg->url_len != 0), for the log line.
 */
const struct hm__router_msg *hm__router_h2_stream_msg(const struct hm__router_h2_stream *s);
const struct hm__router_req *hm__router_h2_stream_req(const struct hm__router_h2_stream *s);

/*
 * The request body received and not yet consumed, as HTTP/1.1 body bytes matching the head
 * (raw with a Content-Length; chunked, with the trailers, otherwise). Fills up to cap iovecs
 * (4 are always enough) and returns how many. The bytes stay valid and unchanged until consumed.
 */
int hm__router_h2_stream_body_peek(struct hm__router_h2_stream *s, struct iovec *iov, int cap);
/* n bytes of what body_peek gave were written to the dyno: the client may send that much more. */
void hm__router_h2_stream_body_consume(struct hm__router_h2_stream *s, size_t n);
/* The whole body (chunked end and trailers included) has been consumed, or there was none. */
bool hm__router_h2_stream_body_done(const struct hm__router_h2_stream *s);
/* The iovecs the last body_peek gave end with the body's last byte (or there is no body). */
bool hm__router_h2_stream_body_last(const struct hm__router_h2_stream *s);
/* The stream's window is spent on bytes not yet consumed: no more body can come until some is. */
bool hm__router_h2_stream_body_full(const struct hm__router_h2_stream *s);

/* The client's RST_STREAM code (HM__H2_CLOSE_RESET), or the code the stream was reset with. */
uint32_t hm__router_h2_stream_code(const struct hm__router_h2_stream *s);
/* Response body bytes handed to the transport so far (the log line's bytes=). */
uint64_t hm__router_h2_stream_body_bytes(const struct hm__router_h2_stream *s);

/* ---- streams: what the exchange does --------------------------------------------------------- */

/* Release of a body span: p and n as given to hm__router_h2_stream_send(). */
typedef void (*hm__router_h2_release_cb)(void *arg, const void *p, size_t n);

/* A field of response trailers. Borrowed for the duration of the call. */
struct hm__router_h2_field {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* What the exchange adds to a dyno's response head. */
struct hm__router_h2_resp_opts {
	const char *set_cookie; /* affinity cookie value, or NULL (borrowed for the call) */
	size_t set_cookie_len;
};

/*
 * Interim "100 Continue" (the request said Expect: 100-continue). Before the response only.
 * Returns 0, -EPIPE (stream closed) or -EINVAL (a response was already submitted).
 */
int hm__router_h2_stream_continue(struct hm__router_h2_stream *s);

/*
 * Submits the response head from the dyno's parsed head m, as it is at HM__EV_HEAD (checked into
 * rs by hm__router_resp_check()): hop-by-hop fields, Transfer-Encoding and (for chunked
 * responses) Content-Length dropped, Via appended, o->set_cookie added (o may be NULL). Header
 * names are lowercased in place in m's buffer; nothing of m is referenced after the call. Returns 1
 * when the response has no body and is complete (HEAD, 204, 304, or m already complete), 0 when the
 * body follows (hm__router_h2_stream_send, then hm__router_h2_stream_end), or -EPIPE (stream
 * closed), -EINVAL (101, or a response already submitted), -ENOMEM.
 */
int hm__router_h2_stream_respond(struct hm__router_h2_stream *s, struct hm__router_msg *m,
				 const struct hm__router_resp *rs,
				 const struct hm__router_h2_resp_opts *o);

/*
 * Queues n bytes at p (the payload, de-chunked) to go out as DATA, zero-copy: p must stay valid
 * until release(arg, p, n) runs, which happens exactly once, when the last byte has been written
 * by the transport or the span was dropped (stream reset or connection ended), possibly after
 * the stream was closed or released. release may be NULL for memory that outlives the
 * connection (static bytes). Returns 0, -ENOBUFS (8 spans queued: retry after a
 * release), -EPIPE (stream closed), -EINVAL (no response head, or the body was ended); on error
 * release is not called.
 */
int hm__router_h2_stream_send(struct hm__router_h2_stream *s, const void *p, size_t n,
			      hm__router_h2_release_cb release, void *arg);

/*
 * Ends the response body after the queued spans, with n trailer fields (fields that cannot be
 * trailers are dropped; the rest are copied). Returns 0, -EPIPE, -EINVAL (no body expected or
 * already ended), -ENOMEM.
 */
int hm__router_h2_stream_end(struct hm__router_h2_stream *s, const struct hm__router_h2_field *tr,
			     size_t n);

/*
 * The router's own answer with status (400, 404, 414, 503, ...): the body of the HTTP/1 canned
 * response (none for HEAD requests), the stream ends. Returns 0, -EPIPE or -EINVAL (a response
 * was already submitted: reset the stream instead).
 */
int hm__router_h2_stream_error(struct hm__router_h2_stream *s, int status);

/* RST_STREAM with code (HM__H2_INTERNAL_ERROR for a failure after the response head, say).
 * Returns 0 or -EPIPE. ops->closed follows with HM__H2_CLOSE_ERROR. */
int hm__router_h2_stream_reset(struct hm__router_h2_stream *s, uint32_t code);

/*
 * The exchange is done with s (its dyno request finished or cancelled). If the stream is still
 * open it is reset (CANCEL), or left to finish if its response is complete; ops->closed is not
 * called after this. The stream's slot is free again once nghttp2 has closed it too.
 */
void hm__router_h2_stream_release(struct hm__router_h2_stream *s);

/* ---- helpers --------------------------------------------------------------------------------- */

/* The HTTP/2 client connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n". */
#define HM__H2_PREFACE_LEN 24
/* For a listener that takes both (--h2c): 1 if buf starts with the preface, 0 if it cannot,
 * -EAGAIN if the n bytes so far are a prefix of it. */
int hm__router_h2_sniff(const void *buf, size_t n);

#endif
