/*
 * The HTTP/2 engine's insides, shared by its three files and by nothing else: h2.c is the
 * connection (nghttp2 session and its input callbacks, input scanning and glitches, timeouts,
 * stream lifetimes); h2_out.c its output (batches of frames, zero-copy response bodies, span
 * releases); h2_msg.c the HTTP meaning of a stream (the request written and checked as
 * HTTP/1.1, its body as HTTP/1.1 body bytes, the response head and trailers as HTTP/2 fields).
 * The API and its contract are in h2.h; the design is docs/h2.md.
 */
#ifndef HM_ROUTER_H2_T_H
#define HM_ROUTER_H2_T_H

#include <nghttp2/nghttp2.h>

#include "router/h2.h"
#include "router/shm.h"
#include "router/slab.h"

#define HM__H2_SPANS	   8	       /* response body spans queued per stream */
#define HM__H2_SEGS	   128	       /* output segments per batch (iovecs + late releases) */
#define HM__H2_BATCH_IOV   64	       /* iovecs per batch */
#define HM__H2_CTL	   16384       /* control buffer per batch */
#define HM__H2_BATCH_BYTES (256 << 10) /* bytes per batch */
#define HM__H2_TRAILERS	   (64 << 10)  /* request trailer section */

struct hm__router_h2_ctx {
	struct hm__router_h2_config cfg;
	struct hm__router_h2_ops ops;
	struct hm__router_limits lim; /* request limits for the HTTP/1 parser */
	struct hm__router_slab slab;
	nghttp2_mem mem; /* nghttp2's allocator: the slab */
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	struct hm__router_h2_stats own;
	/* &own, or the caller's (hm__router_h2_ctx_count_into); counted with hm__ctr_add(). */
	struct hm__router_h2_stats *st;
	uint32_t nconns; /* not yet freed */
};

/* A piece of output: bytes to write, then (when the last byte is written) a release to run. */
struct hm__h2_seg {
	const uint8_t *p;
	size_t n;
	hm__router_h2_release_cb release; /* NULL: nothing to run */
	void *arg;
	const void *rp; /* the span as submitted, for release */
	size_t rn;
};

enum hm__h2_conn_state {
	HM__H2_OPEN = 0,
	HM__H2_DRAINING, /* shutdown notice sent; final GOAWAY at drain_at */
	HM__H2_CLOSING,	 /* a GOAWAY was submitted: finish, write, close */
	HM__H2_DEAD,	 /* close now; nothing more is read or written */
};

struct hm__router_h2_conn {
	struct hm__router_h2_ctx *ctx;
	nghttp2_session *ng; /* owned; NULL once freed */
	void *data;
	struct hm__router_h2_stream *streams; /* attached streams (nghttp2 knows them) */
	uint32_t nslots;		      /* streams not freed: the concurrency that counts */
	uint32_t busy;			      /* engine calls in progress (re-entrancy depth) */
	uint8_t state;			      /* enum hm__h2_conn_state */
	uint8_t why;			      /* close reason for streams at termination */
	bool term;	    /* the session is being torn down (GOAWAY with an error, or ours) */
	bool term_done;	    /* ... and its streams were detached */
	bool shut;	    /* hm__router_h2_conn_shutdown() ran */
	bool freeing;	    /* hm__router_h2_conn_free() ran; memory goes with the last stream */
	bool woken;	    /* ops->wakeup called, output not taken yet */
	bool block_open;    /* a header block was started and not ended */
	bool batch_ng;	    /* the last segment points into nghttp2's frame buffer */
	uint8_t fh_len;	    /* frame scanner: bytes of the current frame header */
	uint8_t fh[9];	    /* ... the header */
	uint8_t pre_left;   /* ... client preface bytes not yet seen */
	uint32_t pay_left;  /* ... payload bytes of the current frame still to come */
	uint32_t settings;  /* SETTINGS frames (not ACK) received */
	uint32_t wu_credit; /* WINDOW_UPDATEs the client may send for free */
	uint32_t goaways;   /* graceful GOAWAYs we submitted and nghttp2 has not sent yet */
	uint64_t now;	    /* the latest time a call passed in */
	uint64_t tokens;    /* glitch bucket, in thousandths of a token */
	uint64_t tokens_ms; /* when it was last refilled */
	uint64_t last_in;   /* last input */
	uint64_t last_idle; /* last moment something was going on (input, a stream freed) */
	uint64_t last_out;  /* last write progress, or the start of the pending batch */
	uint64_t drain_at;  /* DRAINING: when to send the final GOAWAY */
	/* The batch (docs/h2.md, "Output"): one slab block, held only while a batch exists, with
	 * the control buffer and then the segment array. */
	uint8_t *ctl;
	struct hm__h2_seg *seg; /* [HM__H2_SEGS], inside the same block */
	uint32_t ctl_len;
	uint32_t nseg, niov, seg_pos; /* segments, iovec segments, first unwritten */
	size_t seg_off;		      /* bytes of seg[seg_pos] written */
	size_t batch_bytes;
};

enum hm__h2_body_mode {
	HM__H2_BODY_NONE = 0, /* END_STREAM on HEADERS */
	HM__H2_BODY_RAW,      /* content-length: the bytes as they are */
	HM__H2_BODY_CHUNKED,  /* no content-length: chunked framing written around the bytes */
};

/* Chunked framing of the request body, as far as the exchange has consumed it. */
enum hm__h2_chunk_state {
	HM__H2_CF_IDLE = 0, /* between chunks */
	HM__H2_CF_HDR,	    /* in the chunk-size line */
	HM__H2_CF_DATA,	    /* in the chunk's payload */
	HM__H2_CF_CRLF,	    /* in the CRLF after it */
	HM__H2_CF_LAST,	    /* in the last chunk and trailer section */
	HM__H2_CF_DONE,
};

enum hm__h2_resp_state {
	HM__H2_RS_NONE = 0, /* nothing submitted (a 100 Continue maybe) */
	HM__H2_RS_BODY,	    /* head submitted, body spans follow */
	HM__H2_RS_ENDED,    /* everything submitted */
	HM__H2_RS_DONE,	    /* END_STREAM handed to the transport */
};

struct hm__h2_span {
	const uint8_t *p;
	size_t n, off; /* off: bytes already framed */
	hm__router_h2_release_cb release;
	void *arg;
};

enum { HM__H2_PS_METHOD = 0, HM__H2_PS_PATH, HM__H2_PS_SCHEME, HM__H2_PS_AUTHORITY, HM__H2_PS_N };

struct hm__router_h2_stream {
	struct hm__router_h2_conn *c;
	struct hm__router_h2_stream *prev, *next; /* c->streams, while attached */
	void *data;
	int32_t id;
	uint32_t code;	   /* RST_STREAM code, ours or the client's */
	uint16_t status;   /* 0, or the status a malformed request gets */
	uint16_t hold;	   /* callbacks running with s: do not free */
	const char *why;   /* reason for status */
	bool attached;	   /* nghttp2 has the stream and our pointer */
	bool delivered;	   /* ops->request ran: the exchange holds it */
	bool released;	   /* the exchange let go */
	bool notified;	   /* ops->closed ran */
	bool client_rst;   /* closed by the client's RST_STREAM */
	bool oversize;	   /* header list over max_head */
	bool line_done;	   /* request line written */
	bool has_cl;	   /* content-length field seen */
	bool req_ended;	   /* END_STREAM received */
	bool discard;	   /* request body not wanted: consume it as it comes */
	bool deferred;	   /* nghttp2's data provider is waiting for spans */
	bool head_method;  /* HEAD request: responses carry no body */
	bool peek_last;	   /* the last body_peek ended with the body's last byte */
	uint8_t body_mode; /* enum hm__h2_body_mode */
	uint8_t rs;	   /* enum hm__h2_resp_state */
	uint8_t cf;	   /* enum hm__h2_chunk_state */

	/* The request as HTTP/1.1: head buffer (slab), pseudo-header values kept at its start
	 * until the request line is written, cookie crumbs joined apart. */
	char *head;
	uint32_t head_len, head_cap;
	uint32_t ps_off[HM__H2_PS_N], ps_len[HM__H2_PS_N];
	char *ck;
	uint32_t ck_len, ck_cap;
	uint64_t list_bytes; /* header list size as RFC 9113 6.5.2 counts it */

	/* Request body: a ring of payload bytes (slab), chunk framing generated around it. */
	uint8_t *ring;
	uint32_t ring_cap, r_pos, r_len;
	uint32_t cf_left;		 /* payload bytes left in the current chunk */
	uint8_t cf_hlen, cf_hpos;	 /* chunk-size line and how much of it was consumed */
	uint8_t cf_crlf;		 /* bytes of the CRLF after the chunk consumed */
	char cf_hdr[20];		 /* "<hex>\r\n" */
	char *tr;			 /* "0\r\n" + trailer lines + "\r\n" (slab), or NULL */
	uint32_t tr_len, tr_cap, tr_pos; /* tr_pos: consumed of the last chunk */

	/* Response */
	struct hm__h2_span sp[HM__H2_SPANS];
	uint8_t sp_head, sp_n;
	char status_txt[4];
	nghttp2_nv *rtr; /* trailers to send (slab: the array, then the bytes) */
	size_t nrtr;
	uint64_t body_bytes;

	struct hm__router_msg msg;
	struct hm__router_req rq;
};

/* The stream nghttp2 has for id, or NULL (not ours, refused, or detached). */
static inline struct hm__router_h2_stream *hm__h2_stream_of(struct hm__router_h2_conn *c,
							    int32_t id)
{
	return c->ng != NULL ? nghttp2_session_get_stream_user_data(c->ng, id) : NULL;
}

/* ---- h2.c, for the other two ----------------------------------------------------------------- */

/* An engine call starts / ends (callbacks may nest them); the outermost end settles a
 * terminated session's streams. */
void hm__h2_enter(struct hm__router_h2_conn *c);
void hm__h2_leave(struct hm__router_h2_conn *c);
/* Counts a glitch; returns true if that emptied the bucket (the connection is terminating). */
bool hm__h2_glitch(struct hm__router_h2_conn *c);
/* n WINDOW_UPDATEs the client may send for nothing (capped: credit cannot be banked). */
void hm__h2_credit(struct hm__router_h2_conn *c, uint32_t n);
/* Output may be available outside an engine call: wake the caller once. */
void hm__h2_wake(struct hm__router_h2_conn *c);
/* Gives the client n more bytes of window on s (request body bytes consumed or dropped). */
void hm__h2_consume(struct hm__router_h2_stream *s, size_t n);

/* ---- h2_out.c, for the other two ------------------------------------------------------------- */

/* The data provider of response bodies, and nghttp2's send_data callback. */
extern const nghttp2_data_provider hm__h2_provider;
int hm__h2_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd, size_t length,
		     nghttp2_data_source *src, void *ud);
/* A batch is out and not yet all written. */
bool hm__h2_batch_pending(const struct hm__router_h2_conn *c);
/* n more bytes of the batch were written: runs the releases they complete; frees the batch's
 * memory when it is all written. */
void hm__h2_advance(struct hm__router_h2_conn *c, size_t n);
/* A span leaves its stream unsent: released now, or after the batch holding its first bytes. */
void hm__h2_span_drop(struct hm__router_h2_conn *c, struct hm__h2_span *sp);

/* ---- h2_msg.c, for h2.c ---------------------------------------------------------------------- */

/* A new stream's HTTP state (the stream is zeroed but for its links). */
void hm__h2_msg_init(struct hm__router_h2_stream *s);
/* Frees what the HTTP state holds (head, cookie and trailer buffers, ring, parser). */
void hm__h2_msg_fini(struct hm__router_h2_stream *s);
/* A field of the request header block, or of its trailers. */
void hm__h2_req_field(struct hm__router_h2_stream *s, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen);
void hm__h2_req_trailer(struct hm__router_h2_stream *s, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen);
/* A field nghttp2 found invalid and would ignore: the request is answered 400. */
void hm__h2_req_invalid(struct hm__router_h2_stream *s);
/* The header block ended: write the rest of the head, parse and check it. */
void hm__h2_req_finish(struct hm__router_h2_stream *s, bool end_stream);
/* DATA payload for s. Returns the bytes to consume at once (not kept). */
size_t hm__h2_req_data(struct hm__router_h2_stream *s, const uint8_t *p, size_t n);
/* END_STREAM from the client. */
void hm__h2_req_end(struct hm__router_h2_stream *s);
/* Drops the ring; returns the payload bytes it held (to give back to the connection window). */
size_t hm__h2_req_drop(struct hm__router_h2_stream *s);

#endif
