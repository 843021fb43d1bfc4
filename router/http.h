/*
 * HTTP/1.x for the router, without I/O: llhttp driven over a caller's buffer, the head collected
 * as offsets into that buffer with every limit checked as bytes arrive (http.c), then the
 * semantic checks of the contract and the rewriting of heads in both directions
 * (http_rewrite.c). Everything here is pure (no sockets, no clocks, no logging) so
 * tests/unit/router/test_http.c can drive it byte by byte. The types are in http-t.h, the
 * header policy the rewriting applies in hdr-t.h.
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

#include "router/hdr.h"
#include "router/http-t.h"

/* The contract's request limits (414 for the line, 400 otherwise) with the given head bound. */
void hm__router_limits_request(struct hm__router_limits *l, uint32_t max_head);
/* Response limits (REFERENCE.md: status line 8192, header line 512 KiB, Set-Cookie 8192; 502). */
void hm__router_limits_response(struct hm__router_limits *l, uint32_t max_head);

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
 * Collects the trailer fields of the body being parsed into buf (cap bytes, borrowed until the
 * message is done with), for a caller that hands trailers on apart from the body: call it once the
 * head is parsed (after hm__router_msg_reset, which forgets it). A field that does not fit what is
 * left of buf is dropped whole; the body is parsed as without it.
 */
void hm__router_msg_collect_trailers(struct hm__router_msg *m, char *buf, uint32_t cap);

/* The trailer fields collected so far, in order, at most cap of them into out (spans into the
 * collection buffer; values trimmed). Returns how many. */
size_t hm__router_msg_trailers(const struct hm__router_msg *m, struct hm__router_field *out,
			       size_t cap);

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

/* Checks a complete response head (version 1.x, status 100-999, Content-Length, lines). Returns
 * 0 or 502 with *why set. */
int hm__router_resp_check(struct hm__router_msg *m, struct hm__router_resp *rs, const char **why);

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

/* True if s[0..n) is a non-empty RFC 9110 token (a field name, a coding, a protocol name). */
bool hm__router_is_token(const char *s, size_t n);

#endif
