/*
 * HTTP/1.x for the router, without I/O: llhttp driven over a caller's buffer, the head collected
 * as offsets into that buffer with every limit checked as bytes arrive, then the semantic checks
 * of the contract and the rewriting of heads in both directions. Everything here is pure (no
 * sockets, no clocks, no logging) so tests/unit/router/test_http.c can drive it byte by byte.
 *
 * Parsing model. A struct hm__router_msg parses one message at a time out of a buffer the caller
 * owns and appends to. The head must stay contiguous in that buffer until the caller is done with
 * it (header spans are offsets, so the caller may move the buffer and update m->base). Bodies are
 * parsed only to find where the message ends and, for HTTP/1.0 clients of chunked responses, to
 * strip the chunk framing in place; the bytes themselves are relayed by the caller.
 */
#ifndef HM_ROUTER_HTTP_H
#define HM_ROUTER_HTTP_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

/* Headers the router looks at. Everything else is HM__HDR_OTHER and passes through. */
enum hm__router_hdr_id {
	HM__HDR_OTHER = 0,
	HM__HDR_HOST,
	HM__HDR_CONTENT_LENGTH,
	HM__HDR_TRANSFER_ENCODING,
	HM__HDR_CONNECTION,
	HM__HDR_KEEP_ALIVE,
	HM__HDR_PROXY_CONNECTION,
	HM__HDR_TE,
	HM__HDR_PROXY_AUTHORIZATION,
	HM__HDR_UPGRADE,
	HM__HDR_EXPECT,
	HM__HDR_X_FORWARDED_FOR,
	HM__HDR_X_FORWARDED_PROTO,
	HM__HDR_X_FORWARDED_PORT,
	HM__HDR_X_REQUEST_ID,
	HM__HDR_X_REQUEST_START,
	HM__HDR_VIA,
	HM__HDR_CONNECT_TIME,
	HM__HDR_TOTAL_ROUTE_TIME,
	HM__HDR_COOKIE,
	HM__HDR_SET_COOKIE,
	HM__HDR_TRAILER,
	HM__HDR_COUNT
};

/* Classifies a header name (any case). */
uint8_t hm__router_hdr_classify(const char *name, size_t n);

/* What the router does with a header, by id: the policy is data (hm__router_hdr_flags), not
 * switches spread over the rewriting code (h2o's token table keeps such flags per token). */
enum hm__router_hdr_flag {
	HM__HF_HOP = 1 << 0,	     /* hop-by-hop: never forwarded, either way */
	HM__HF_REQ_OWN = 1 << 1,     /* toward the dyno: answered or written by the router */
	HM__HF_RESP_OWN = 1 << 2,    /* toward the client: written by the router */
	HM__HF_NOT_TRAILER = 1 << 3, /* dropped from request trailers (RFC 9110, 6.5.1) */
};

/* Flags of each enum hm__router_hdr_id. */
extern const uint8_t hm__router_hdr_flags[HM__HDR_COUNT];

/* One header line: offsets into the message's buffer. */
struct hm__router_hdr {
	uint32_t name_off;
	uint32_t value_off; /* leading whitespace already skipped by llhttp */
	uint32_t value_len; /* trailing whitespace included; see hm__router_trim() */
	uint16_t name_len;
	uint8_t id;   /* enum hm__router_hdr_id */
	uint8_t drop; /* named by a Connection header: not forwarded */
};

/* Limits, in bytes or lines. Zero means "no limit" for set_cookie and header_line. */
struct hm__router_limits {
	uint32_t line;	      /* request line or status line, without CRLF */
	uint32_t name;	      /* one header name */
	uint32_t value;	      /* one header value */
	uint32_t count;	      /* header lines */
	uint32_t header_line; /* name + value of one header */
	uint32_t set_cookie;  /* one Set-Cookie value */
	uint32_t head;	      /* the whole head, blank lines before it included */
	uint16_t status;      /* status to answer when a limit other than line is hit */
	uint16_t line_status; /* status to answer when the line is too long */
};

/* The contract's request limits (414 for the line, 400 otherwise) with the given head bound. */
void hm__router_limits_request(struct hm__router_limits *l, uint32_t max_head);
/* Response limits (REFERENCE.md: status line 8192, header line 512 KiB, Set-Cookie 8192; 502). */
void hm__router_limits_response(struct hm__router_limits *l, uint32_t max_head);

#define HM__ROUTER_HDR_INLINE 48
#define HM__RECHUNK_SLACK     32

enum hm__router_msg_state {
	HM__MSG_HEAD = 0, /* collecting the head */
	HM__MSG_BODY,	  /* head done, body being parsed */
	HM__MSG_DONE,	  /* message complete */
	HM__MSG_ERROR,
};

/* What hm__router_msg_execute() stopped at. */
enum hm__router_msg_event {
	HM__EV_MORE = 0, /* everything given was consumed; give more */
	HM__EV_HEAD,	 /* the head is complete (*used ends after its blank line) */
	HM__EV_DONE,	 /* the message is complete (*used ends after its last byte) */
	HM__EV_ERROR,	 /* malformed or over a limit: see status and why */
};

struct hm__router_msg {
	llhttp_t p;
	const struct hm__router_limits *lim; /* borrowed */
	char *base;			     /* the buffer the offsets refer to (borrowed) */
	uint32_t start;	   /* offset of the message's first byte (after skipped blank lines) */
	uint32_t head_end; /* offset after the blank line ending the head */
	uint32_t line_len; /* request/status line length, once known (else 0) */
	uint32_t url_off, url_len;
	uint32_t reason_off, reason_len;
	uint16_t nhdr, cap;
	struct hm__router_hdr *hdr; /* inline_hdr or heap (owned; see hm__router_msg_fini) */
	uint8_t state;		    /* enum hm__router_msg_state */
	uint8_t in;		    /* 0 between headers, 1 in a name, 2 in a value */
	uint8_t blank;		    /* blank lines skipped before the request line */
	bool line_done;
	bool version_seen;
	bool cl_seen;
	bool dechunk;	  /* body: compact chunk payloads in place (set by the caller) */
	bool rechunk;	  /* body: re-encode chunks into rbuf without extensions */
	bool keep_alive;  /* at DONE: llhttp's verdict on the connection */
	bool chunked;	  /* body: chunked, as the head said (a trailer can change llhttp's flag) */
	uint8_t ck;	  /* chunked body: where the line-end check is (http.c) */
	uint64_t ck_left; /* chunked body: data bytes left in the chunk, or its size so far */
	uint64_t cl_value;
	uint8_t tr;		   /* rechunk: where a trailer line is (http.c) */
	uint8_t tr_len;		   /* rechunk: bytes of the trailer name held in tr_name */
	char tr_name[20];	   /* rechunk: a trailer name's start, until it is known */
	uint64_t body_bytes;	   /* payload bytes parsed so far (after de-chunking) */
	uint32_t out_off, out_len; /* dechunk: payload compacted by the last execute */
	char *rbuf;		   /* rechunk: output buffer (borrowed) */
	uint32_t rcap, rlen;	   /* its size; bytes the last execute wrote there */
	uint16_t status;	   /* at ERROR: the HTTP status to answer (400, 414, 502, ...) */
	const char *why;	   /* at ERROR: a short static reason */
	struct hm__router_hdr inline_hdr[HM__ROUTER_HDR_INLINE];
};

/* Prepares m to parse requests (HTTP_REQUEST) or responses (HTTP_RESPONSE) under lim. */
void hm__router_msg_init(struct hm__router_msg *m, llhttp_type_t type,
			 const struct hm__router_limits *lim);
/* Frees a spilled header array. m may be re-initialised or reset afterwards. */
void hm__router_msg_fini(struct hm__router_msg *m);

/* Starts the next message at offset start of base. Keeps lenient flags and settings. */
void hm__router_msg_reset(struct hm__router_msg *m, char *base, uint32_t start);

/*
 * Parses buf[off, off + len) (buf must be m->base, with every earlier byte of this message's
 * head still in place before off). Sets *used to the bytes consumed and returns the event:
 *  HM__EV_MORE  all consumed. In the head, check hm__router_msg_head_bytes() against the buffer.
 *  HM__EV_HEAD  the head ends at off + *used; state is now BODY or DONE (no body). The caller
 *               inspects the head, sets dechunk if wanted, then continues with the rest.
 *  HM__EV_DONE  the message ends at off + *used.
 *  HM__EV_ERROR m->status and m->why say why.
 * With dechunk set, payload bytes of the consumed range are moved to buf + off and counted in
 * m->out_len (m->out_off = off). With rechunk set, the consumed range is re-encoded into m->rbuf
 * (m->rlen bytes): chunk sizes in minimal hex, extensions dropped, payload and trailers kept. The
 * output of one call is at most len + HM__RECHUNK_SLACK bytes, so callers pass at most
 * m->rcap - HM__RECHUNK_SLACK bytes at a time.
 * For a response to HEAD, or 204/304, call hm__router_msg_skip_body() before the head is
 * complete: the response then has no body whatever its headers say.
 */
int hm__router_msg_execute(struct hm__router_msg *m, char *buf, uint32_t off, uint32_t len,
			   uint32_t *used);

/* Responses: the body ends at EOF (no Content-Length, no chunked). */
bool hm__router_msg_needs_eof(const struct hm__router_msg *m);
/* EOF from the peer. Returns HM__EV_DONE if that completes the message, else HM__EV_ERROR. */
int hm__router_msg_finish(struct hm__router_msg *m);
/* Response to a HEAD request: no body. */
void hm__router_msg_skip_body(struct hm__router_msg *m, bool skip);

/*
 * The bytes from offset delta on moved to the start of the buffer (compaction): every offset of
 * m is lowered by delta. Offsets below delta must not be needed any more.
 */
void hm__router_msg_shift(struct hm__router_msg *m, uint32_t delta);

/* Bytes of the head so far (from m->start). */
static inline uint32_t hm__router_msg_head_bytes(const struct hm__router_msg *m, uint32_t end)
{
	return end - m->start;
}

/* ---- requests ---------------------------------------------------------------------------- */

struct hm__router_req {
	uint8_t method;	 /* enum llhttp_method */
	uint8_t minor;	 /* HTTP/1.minor */
	bool keep_alive; /* the client wants the connection kept */
	bool expect_continue;
	bool upgrade; /* Connection: upgrade with a valid Upgrade, and no body */
	bool chunked; /* Transfer-Encoding: chunked (Content-Length not forwarded) */
	bool has_body;
	uint64_t content_length;
	int32_t host;			 /* index of the Host header */
	int32_t request_id;		 /* index of a valid X-Request-Id, or -1 */
	uint32_t target_off, target_len; /* what to send as request target (origin form) */
	uint32_t authority_off;		 /* absolute form: its authority, the Host to send */
	uint32_t authority_len;		 /* 0: origin form (the Host header is sent) */
	uint16_t key_len;
	char key[HM_HOST_MAX + 1]; /* lookup key from Host (hm_host_key) */
};

/*
 * Checks a complete request head against the contract (version, method, target, Host,
 * Content-Length, Transfer-Encoding, Expect, Upgrade, line endings, header names) and fills rq.
 * An absolute-form target's authority routes the request (rq->key) and replaces the Host sent
 * to the dyno. Marks headers named by Connection as dropped. Returns 0, or the HTTP status to
 * answer (400, 417, 505) with *why set to a short static reason.
 */
int hm__router_req_check(struct hm__router_msg *m, struct hm__router_req *rq, const char **why);

/* The bytes rq's offsets refer to moved delta bytes down (see hm__router_msg_shift). */
static inline void hm__router_req_shift(struct hm__router_req *rq, uint32_t delta)
{
	if (rq->target_len > 0)
		rq->target_off -= delta;
	if (rq->authority_len > 0)
		rq->authority_off -= delta;
}

/*
 * True if s[0..n) is a valid Host value or authority, "host[:port]" (RFC 9110, 7.2; RFC 3986,
 * 3.2.2): a reg-name of letters, digits, '-', '.', '_' (which covers IPv4), or a bracketed IPv6
 * literal; a port of at most 5 digits, at most 65535, possibly empty. No userinfo, no path.
 */
bool hm__router_host_valid(const char *s, size_t n);

/* What the router adds to a request on its way to a dyno. Strings borrowed. */
struct hm__router_fwd {
	const char *peer; /* client IP, text */
	size_t peer_len;
	uint16_t port;		/* the port the client connected to */
	uint64_t start_ms;	/* X-Request-Start */
	const char *request_id; /* X-Request-Id to send */
	size_t request_id_len;
	uint64_t connect_ms; /* Connect-Time */
	uint64_t route_ms;   /* Total-Route-Time */
};

/* Upper bound of hm__router_req_write()'s output for this head. */
size_t hm__router_req_write_bound(const struct hm__router_msg *m);

/*
 * Writes the head to send to the dyno into out: HTTP/1.1 request line with an origin-form
 * target, the client's headers minus hop-by-hop ones (and minus those the router sets), then
 * X-Forwarded-For/-Proto/-Port, X-Request-Start, X-Request-Id, Via, Connect-Time,
 * Total-Route-Time, and Connection/Upgrade for an upgrade. Returns the length, or 0 if cap is
 * smaller than needed (never when cap >= hm__router_req_write_bound()).
 */
size_t hm__router_req_write(const struct hm__router_msg *m, const struct hm__router_req *rq,
			    const struct hm__router_fwd *f, char *out, size_t cap);

/* True if s is a client X-Request-Id the router keeps: 20-200 chars of [A-Za-z0-9+/=-]. */
bool hm__router_request_id_valid(const char *s, size_t n);

/* ---- responses --------------------------------------------------------------------------- */

struct hm__router_resp {
	uint16_t status;
	bool chunked;
	bool has_cl;
	bool dyno_close; /* the dyno will close after this response */
	bool upgrade;	 /* 101 with Upgrade */
	uint64_t content_length;
};

/* Checks a complete response head (version 1.x, status 100-999, Content-Length, lines). Returns
 * 0 or 502 with *why set. */
int hm__router_resp_check(struct hm__router_msg *m, struct hm__router_resp *rs, const char **why);

enum hm__router_body {
	HM__BODY_NONE = 0, /* no body follows the head */
	HM__BODY_RAW,	   /* relay the bytes as they come (Content-Length, chunked, until close) */
	HM__BODY_DECHUNK,  /* HTTP/1.0 client: relay chunk payloads only, close at the end */
};

struct hm__router_resp_ctx {
	uint8_t client_minor; /* the client's HTTP/1.minor */
	bool keep_alive;      /* the client connection may stay open after this response */
	bool head_request;
	bool upgrade_requested;
	const char *set_cookie; /* value of a Set-Cookie to add, or NULL (borrowed) */
	size_t set_cookie_len;
};

struct hm__router_resp_plan {
	uint8_t body; /* enum hm__router_body */
	bool close;   /* close the client connection after this response */
	bool tunnel;  /* 101: the connections become a byte pipe */
};

/* Decides how the response goes to the client. */
void hm__router_resp_plan(const struct hm__router_msg *m, const struct hm__router_resp *rs,
			  const struct hm__router_resp_ctx *ctx, struct hm__router_resp_plan *out);

/* Upper bound of hm__router_resp_write()'s output. */
size_t hm__router_resp_write_bound(const struct hm__router_msg *m,
				   const struct hm__router_resp_ctx *ctx);

/*
 * Writes the head to send to the client: "HTTP/1.1 <status> <reason>", the dyno's headers minus
 * hop-by-hop ones (Transfer-Encoding too when de-chunking), Via appended, the affinity
 * Set-Cookie, and an explicit Connection. Returns the length, or 0 if cap is too small.
 */
size_t hm__router_resp_write(const struct hm__router_msg *m, const struct hm__router_resp *rs,
			     const struct hm__router_resp_ctx *ctx,
			     const struct hm__router_resp_plan *plan, char *out, size_t cap);

/* ---- responses made by the router -------------------------------------------------------- */

/* Builds the static error responses. Call once before hm__router_error_response(). */
void hm__router_http_init(void);

/*
 * A complete response for a router-generated status (400, 404, 408, 414, 417, 502, 503, 505,
 * and any other status as a bare response), with Connection: close; without body for HEAD.
 * Static storage.
 */
void hm__router_error_response(int status, bool head, const char **data, size_t *len);

extern const char hm__router_continue[]; /* "HTTP/1.1 100 Continue\r\n\r\n" */
#define HM__ROUTER_CONTINUE_LEN 25

/* ---- small helpers (exposed for tests) ----------------------------------------------------- */

/* Strips trailing spaces and tabs: returns the new length. */
size_t hm__router_trim(const char *s, size_t n);

/*
 * Iterates a comma-separated list: on each call returns the next element (trimmed, non-empty)
 * in *tok and *tok_len and true, or false at the end. *pos starts at 0.
 */
bool hm__router_list_next(const char *s, size_t n, size_t *pos, const char **tok, size_t *tok_len);

/* ASCII case-insensitive equality of s[0..n) with the NUL-terminated lowercase lit. */
bool hm__router_eq_lit(const char *s, size_t n, const char *lit);

#endif
