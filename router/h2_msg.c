/*
 * The HTTP meaning of an HTTP/2 stream (see h2.h, docs/h2.md). A request's header block is
 * written, field by field as HPACK decodes it, into a per-stream buffer as an HTTP/1.1 head, and
 * at its end router/http.c parses and checks that head exactly as it does an HTTP/1 request, so
 * the limits, statuses and rewriting are the HTTP/1 ones by construction. Its body is held in a
 * ring and handed to the exchange as HTTP/1.1 body bytes, with chunked framing generated around
 * the payload when the request has no content-length. Responses go the other way: a parsed
 * HTTP/1.1 head from a dyno becomes HTTP/2 fields.
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "router/h2-t.h"

static const char crlf[] = "\r\n";
static const char last_chunk[] = "0\r\n\r\n";

static struct hm__router_slab *slab_of(struct hm__router_h2_stream *s)
{
	return &s->c->ctx->slab;
}

static void fail(struct hm__router_h2_stream *s, int status, const char *why)
{
	if (s->status == 0) {
		s->status = (uint16_t)status;
		s->why = why;
	}
}

/* HTTP/2 field names are lowercase (nghttp2 refuses others): an exact comparison will do. */
#define IS(name, n, lit) ((n) == sizeof(lit) - 1 && memcmp((name), (lit), sizeof(lit) - 1) == 0)

static bool eq_nocase(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++) {
		char x = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] + 32) : a[i];
		char y = b[i] >= 'A' && b[i] <= 'Z' ? (char)(b[i] + 32) : b[i];

		if (x != y)
			return false;
	}
	return true;
}

void hm__h2_msg_init(struct hm__router_h2_stream *s)
{
	hm__router_msg_init(&s->msg, HTTP_REQUEST, &s->c->ctx->lim);
	memset(&s->rq, 0, offsetof(struct hm__router_req, key));
	s->rq.host = -1;
	s->rq.request_id = -1;
	s->rq.key[0] = '\0';
}

void hm__h2_msg_fini(struct hm__router_h2_stream *s)
{
	struct hm__router_slab *sl = slab_of(s);

	hm__router_msg_fini(&s->msg);
	hm__router_slab_free(sl, s->head);
	hm__router_slab_free(sl, s->ck);
	hm__router_slab_free(sl, s->tr);
	hm__router_slab_free(sl, s->ring);
	hm__router_slab_free(sl, s->rtr);
	s->head = s->ck = s->tr = NULL;
	s->ring = NULL;
	s->rtr = NULL;
}

/* ---- the request head, as HTTP/1.1 ----------------------------------------------------------- */

/* Room for n more bytes in buf (cap doubling from start). False if memory ran out. */
static bool room(struct hm__router_slab *sl, char **buf, uint32_t len, uint32_t *cap, size_t n,
		 uint32_t start)
{
	size_t want = (size_t)len + n, c = *cap != 0 ? *cap : start;
	char *b;

	if (want <= *cap)
		return true;
	while (c < want)
		c *= 2;
	b = hm__router_slab_realloc(sl, *buf, c);
	if (b == NULL)
		return false;
	*buf = b;
	*cap = (uint32_t)hm__router_slab_usable(b);
	return true;
}

static bool head_room(struct hm__router_h2_stream *s, size_t n)
{
	if (room(slab_of(s), &s->head, s->head_len, &s->head_cap, n, 1024))
		return true;
	fail(s, 400, "out of memory for the head");
	return false;
}

static void put(struct hm__router_h2_stream *s, const void *p, size_t n)
{
	memcpy(s->head + s->head_len, p, n);
	s->head_len += (uint32_t)n;
}

#define PUT_LIT(s, lit) put((s), (lit), sizeof(lit) - 1)

static void put_field(struct hm__router_h2_stream *s, const void *name, size_t nlen,
		      const void *value, size_t vlen)
{
	put(s, name, nlen);
	PUT_LIT(s, ": ");
	put(s, value, vlen);
	PUT_LIT(s, "\r\n");
}

/*
 * Writes "<method> <path> HTTP/1.1" and "Host: <authority>" from the pseudo-header values kept
 * at the start of the buffer, then moves them over those values. The authority's new place is
 * kept in ps_off/ps_len for the comparison with a host field.
 */
static bool request_line(struct hm__router_h2_stream *s)
{
	uint32_t *off = s->ps_off, *len = s->ps_len, raw = s->head_len, n;
	const char *m;

	if (len[HM__H2_PS_METHOD] == 0) {
		/* nghttp2 resets such a stream before it ends; nothing to write (and no buffer when
		 * no pseudo-header came at all). */
		fail(s, 400, "missing pseudo-header");
		return false;
	}
	m = s->head + off[HM__H2_PS_METHOD];
	s->head_method = len[HM__H2_PS_METHOD] == 4 && memcmp(m, "HEAD", 4) == 0;
	if (len[HM__H2_PS_METHOD] == 7 && memcmp(m, "CONNECT", 7) == 0) {
		fail(s, 400, "CONNECT");
		return false;
	}
	if (len[HM__H2_PS_PATH] == 0) {
		fail(s, 400, "missing pseudo-header");
		return false;
	}
	if (!hm__router_eq_lit(s->head + off[HM__H2_PS_SCHEME], len[HM__H2_PS_SCHEME], "http") &&
	    !hm__router_eq_lit(s->head + off[HM__H2_PS_SCHEME], len[HM__H2_PS_SCHEME], "https")) {
		fail(s, 400, "unsupported :scheme");
		return false;
	}
	n = len[HM__H2_PS_METHOD] + 1 + len[HM__H2_PS_PATH] + 11;
	if (len[HM__H2_PS_AUTHORITY] > 0)
		n += 6 + len[HM__H2_PS_AUTHORITY] + 2;
	if (!head_room(s, n))
		return false;
	put(s, s->head + off[HM__H2_PS_METHOD], len[HM__H2_PS_METHOD]);
	PUT_LIT(s, " ");
	put(s, s->head + off[HM__H2_PS_PATH], len[HM__H2_PS_PATH]);
	PUT_LIT(s, " HTTP/1.1\r\n");
	if (len[HM__H2_PS_AUTHORITY] > 0) {
		PUT_LIT(s, "Host: ");
		put(s, s->head + off[HM__H2_PS_AUTHORITY], len[HM__H2_PS_AUTHORITY]);
		PUT_LIT(s, "\r\n");
		off[HM__H2_PS_AUTHORITY] = n - 2 - len[HM__H2_PS_AUTHORITY];
	}
	memmove(s->head, s->head + raw, n);
	s->head_len = n;
	s->line_done = true;
	return true;
}

static void pseudo(struct hm__router_h2_stream *s, const uint8_t *name, size_t nlen,
		   const uint8_t *value, size_t vlen)
{
	int i;

	if (IS(name, nlen, ":method"))
		i = HM__H2_PS_METHOD;
	else if (IS(name, nlen, ":path"))
		i = HM__H2_PS_PATH;
	else if (IS(name, nlen, ":scheme"))
		i = HM__H2_PS_SCHEME;
	else if (IS(name, nlen, ":authority"))
		i = HM__H2_PS_AUTHORITY;
	else
		return; /* nghttp2 refuses any other */
	if (!head_room(s, vlen))
		return;
	s->ps_off[i] = s->head_len;
	s->ps_len[i] = (uint32_t)vlen;
	put(s, value, vlen);
}

static void cookie(struct hm__router_h2_stream *s, const uint8_t *value, size_t vlen)
{
	if (!room(slab_of(s), &s->ck, s->ck_len, &s->ck_cap, vlen + 2, 256)) {
		fail(s, 400, "out of memory for the head");
		return;
	}
	if (s->ck_len > 0) {
		memcpy(s->ck + s->ck_len, "; ", 2);
		s->ck_len += 2;
	}
	memcpy(s->ck + s->ck_len, value, vlen);
	s->ck_len += (uint32_t)vlen;
}

void hm__h2_req_field(struct hm__router_h2_stream *s, const uint8_t *name, size_t nlen,
		      const uint8_t *value, size_t vlen)
{
	s->list_bytes += nlen + vlen + 32;
	if (s->list_bytes > s->c->ctx->cfg.max_head) {
		s->oversize = true;
		fail(s, 400, "head too large");
		return;
	}
	if (s->status != 0)
		return;
	if (nlen > 0 && name[0] == ':') {
		pseudo(s, name, nlen, value, vlen);
		return;
	}
	if (!s->line_done && !request_line(s))
		return;
	if (IS(name, nlen, "cookie")) {
		cookie(s, value, vlen);
		return;
	}
	if (IS(name, nlen, "host") && s->ps_len[HM__H2_PS_AUTHORITY] > 0) {
		/* RFC 9113 8.3.1: one authority, written once. */
		if (!eq_nocase((const char *)value, vlen, s->head + s->ps_off[HM__H2_PS_AUTHORITY],
			       s->ps_len[HM__H2_PS_AUTHORITY]))
			fail(s, 400, "host differs from :authority");
		return;
	}
	if (IS(name, nlen, "content-length"))
		s->has_cl = true;
	if (head_room(s, nlen + vlen + 4))
		put_field(s, name, nlen, value, vlen);
}

void hm__h2_req_invalid(struct hm__router_h2_stream *s)
{
	fail(s, 400, "invalid header field");
}

void hm__h2_req_finish(struct hm__router_h2_stream *s, bool end_stream)
{
	uint32_t used;
	int ev;

	if (s->status == 0 && !s->line_done)
		request_line(s);
	if (!s->line_done) {
		/* No request line to parse: only the status goes to the exchange. */
		s->discard = true;
		return;
	}
	if (s->status == 0 && s->ck_len > 0 && head_room(s, 10 + (size_t)s->ck_len))
		put_field(s, "cookie", 6, s->ck, s->ck_len);
	if (!end_stream) {
		s->body_mode = s->has_cl ? HM__H2_BODY_RAW : HM__H2_BODY_CHUNKED;
		if (s->body_mode == HM__H2_BODY_CHUNKED && s->status == 0 && head_room(s, 28))
			PUT_LIT(s, "transfer-encoding: chunked\r\n");
	}
	/* Even a request already found malformed is parsed, for its method, path and Host. */
	if (!head_room(s, 2))
		return;
	PUT_LIT(s, "\r\n");
	hm__router_msg_reset(&s->msg, s->head, 0);
	ev = hm__router_msg_execute(&s->msg, s->head, 0, s->head_len, &used);
	if (ev == HM__EV_ERROR) {
		fail(s, s->msg.status, s->msg.why);
	} else if (ev != HM__EV_HEAD) {
		fail(s, 400, "incomplete head");
	} else if (s->status == 0) {
		const char *why = NULL;
		int r = hm__router_req_check(&s->msg, &s->rq, &why);

		if (r != 0)
			fail(s, r, why);
	}
	if (s->status != 0)
		s->discard = true;
}

/* ---- the request body ------------------------------------------------------------------------ */

/* Fields that never cross into HTTP/2: hop-by-hop ones and HTTP/1.1 framing (hdr-t.h). */
static bool hop_by_hop(uint8_t id)
{
	return (hm__router_hdr_flags[id] & (HM__HF_HOP | HM__HF_H2_CONN)) != 0;
}

/* Fields a trailer section may not carry across (framing, routing, hop-by-hop). */
static bool trailer_dropped(const char *name, size_t n)
{
	return (hm__router_hdr_flags[hm__router_hdr_classify(name, n)] & HM__HF_NOT_TRAILER) != 0;
}

void hm__h2_req_trailer(struct hm__router_h2_stream *s, const uint8_t *name, size_t nlen,
			const uint8_t *value, size_t vlen)
{
	const struct hm__router_limits *lim = &s->c->ctx->lim;

	if (s->body_mode != HM__H2_BODY_CHUNKED || s->discard || !s->attached ||
	    trailer_dropped((const char *)name, nlen))
		return;
	if (nlen > lim->name || vlen > lim->value ||
	    (size_t)s->tr_len + nlen + vlen + 6 > HM__H2_TRAILERS ||
	    !room(slab_of(s), &s->tr, s->tr_len, &s->tr_cap, nlen + vlen + 4 + 3, 1024)) {
		hm__ctr_add(&s->c->ctx->st->stream_errors, 1);
		hm__h2_glitch(s->c);
		hm__router_h2_stream_reset(s, HM__H2_PROTOCOL_ERROR);
		return;
	}
	if (s->tr_len == 0) {
		memcpy(s->tr, "0\r\n", 3);
		s->tr_len = 3;
	}
	memcpy(s->tr + s->tr_len, name, nlen);
	memcpy(s->tr + s->tr_len + nlen, ": ", 2);
	memcpy(s->tr + s->tr_len + nlen + 2, value, vlen);
	memcpy(s->tr + s->tr_len + nlen + 2 + vlen, "\r\n", 2);
	s->tr_len += (uint32_t)(nlen + vlen + 4);
}

static void notify_body(struct hm__router_h2_stream *s)
{
	if (!s->delivered || s->released || s->notified || s->discard ||
	    s->c->ctx->ops.body == NULL)
		return;
	s->hold++;
	s->c->ctx->ops.body(s);
	s->hold--;
}

void hm__h2_req_end(struct hm__router_h2_stream *s)
{
	s->req_ended = true;
	if (s->tr != NULL) {
		if (room(slab_of(s), &s->tr, s->tr_len, &s->tr_cap, 2, 1024)) {
			memcpy(s->tr + s->tr_len, "\r\n", 2);
			s->tr_len += 2;
		} else {
			hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR);
			return;
		}
	}
	notify_body(s);
}

size_t hm__h2_req_data(struct hm__router_h2_stream *s, const uint8_t *p, size_t n)
{
	uint32_t cap, at, first;

	if (s->discard || s->released || s->body_mode == HM__H2_BODY_NONE)
		return n;
	if (s->ring == NULL) {
		cap = s->c->ctx->cfg.stream_window;
		if (s->body_mode == HM__H2_BODY_RAW && s->rq.content_length < cap)
			cap = s->rq.content_length > 0 ? (uint32_t)s->rq.content_length : 1;
		s->ring = hm__router_slab_alloc(slab_of(s), cap);
		if (s->ring == NULL) {
			hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR);
			return n;
		}
		s->ring_cap = cap;
		s->r_pos = s->r_len = 0;
	}
	if (s->r_len + n > s->ring_cap) {
		/* nghttp2 enforces the window and the content-length: cannot happen. */
		hm__router_h2_stream_reset(s, HM__H2_FLOW_CONTROL_ERROR);
		return n;
	}
	at = (s->r_pos + s->r_len) % s->ring_cap;
	first = s->ring_cap - at < n ? s->ring_cap - at : (uint32_t)n;
	memcpy(s->ring + at, p, first);
	memcpy(s->ring, p + first, n - first);
	s->r_len += (uint32_t)n;
	notify_body(s);
	return 0;
}

size_t hm__h2_req_drop(struct hm__router_h2_stream *s)
{
	size_t held = s->r_len;

	hm__router_slab_free(slab_of(s), s->ring);
	s->ring = NULL;
	s->ring_cap = s->r_pos = s->r_len = 0;
	return held;
}

/* The ring's first n bytes, as up to two iovecs. */
static int ring_iov(const struct hm__router_h2_stream *s, uint32_t n, struct iovec *iov, int cap)
{
	uint32_t first = s->ring_cap - s->r_pos < n ? s->ring_cap - s->r_pos : n;
	int k = 0;

	if (n == 0 || cap == 0)
		return 0;
	iov[k].iov_base = s->ring + s->r_pos;
	iov[k++].iov_len = first;
	if (n > first && k < cap) {
		iov[k].iov_base = s->ring;
		iov[k++].iov_len = n - first;
	}
	return k;
}

static void ring_advance(struct hm__router_h2_stream *s, uint32_t n)
{
	s->r_pos = (s->r_pos + n) % s->ring_cap;
	s->r_len -= n;
	if (s->r_len == 0)
		s->r_pos = 0;
}

static const char *last_of(const struct hm__router_h2_stream *s, uint32_t *len)
{
	if (s->tr != NULL) {
		*len = s->tr_len;
		return s->tr;
	}
	*len = sizeof(last_chunk) - 1;
	return last_chunk;
}

static int add(struct iovec *iov, int k, int cap, const void *p, size_t n)
{
	if (n == 0 || k >= cap)
		return k;
	iov[k].iov_base = (void *)(uintptr_t)p;
	iov[k].iov_len = n;
	return k + 1;
}

int hm__router_h2_stream_body_peek(struct hm__router_h2_stream *s, struct iovec *iov, int cap)
{
	static const char hex[] = "0123456789abcdef";
	uint32_t last_len;
	const char *last;
	int k = 0;

	s->peek_last = true;
	if (s->discard || s->body_mode == HM__H2_BODY_NONE)
		return 0;
	s->peek_last = false;
	if (s->body_mode == HM__H2_BODY_RAW) {
		k = ring_iov(s, s->r_len, iov, cap);
		/* Two iovecs always cover the ring. */
		s->peek_last = s->req_ended &&
			       (k == 2 || s->r_len == 0 || (k == 1 && iov[0].iov_len == s->r_len));
		return k;
	}
	if (s->cf == HM__H2_CF_IDLE) {
		if (s->r_len > 0) {
			char t[8];
			uint32_t v = s->r_len, n = 0;

			do {
				t[n++] = hex[v & 15];
				v >>= 4;
			} while (v != 0);
			for (uint32_t i = 0; i < n; i++)
				s->cf_hdr[i] = t[n - 1 - i];
			memcpy(s->cf_hdr + n, "\r\n", 2);
			s->cf_hlen = (uint8_t)(n + 2);
			s->cf_hpos = 0;
			s->cf_left = s->r_len;
			s->cf = HM__H2_CF_HDR;
		} else if (s->req_ended) {
			s->cf = HM__H2_CF_LAST;
			s->tr_pos = 0;
		} else {
			return 0;
		}
	}
	last = last_of(s, &last_len);
	switch (s->cf) {
	case HM__H2_CF_HDR:
		k = add(iov, k, cap, s->cf_hdr + s->cf_hpos, (size_t)(s->cf_hlen - s->cf_hpos));
		/* fall through */
	case HM__H2_CF_DATA:
		k += ring_iov(s, s->cf_left, iov + k, cap - k);
		k = add(iov, k, cap, crlf, 2);
		break;
	case HM__H2_CF_CRLF:
		k = add(iov, k, cap, crlf + s->cf_crlf, (size_t)(2 - s->cf_crlf));
		break;
	case HM__H2_CF_LAST:
		s->peek_last = true;
		return add(iov, 0, cap, last + s->tr_pos, (size_t)(last_len - s->tr_pos));
	default:
		s->peek_last = s->cf == HM__H2_CF_DONE;
		return 0;
	}
	/* This chunk takes all the payload there is and the request has ended: the last chunk
	 * can go in the same write. */
	if (s->req_ended && s->r_len == s->cf_left && k < cap) {
		k = add(iov, k, cap, last, last_len);
		s->peek_last = true;
	}
	return k;
}

void hm__router_h2_stream_body_consume(struct hm__router_h2_stream *s, size_t n)
{
	uint32_t last_len;
	size_t acked = 0, k;

	if (s->discard || n == 0)
		return;
	if (s->body_mode == HM__H2_BODY_RAW) {
		hm_require(n <= s->r_len);
		ring_advance(s, (uint32_t)n);
		hm__h2_consume(s, n);
		return;
	}
	last_of(s, &last_len);
	while (n > 0) {
		switch (s->cf) {
		case HM__H2_CF_HDR:
			k = HM_MIN(n, (size_t)(s->cf_hlen - s->cf_hpos));
			s->cf_hpos = (uint8_t)(s->cf_hpos + k);
			if (s->cf_hpos == s->cf_hlen)
				s->cf = HM__H2_CF_DATA;
			break;
		case HM__H2_CF_DATA:
			k = HM_MIN(n, (size_t)s->cf_left);
			ring_advance(s, (uint32_t)k);
			s->cf_left -= (uint32_t)k;
			acked += k;
			if (s->cf_left == 0) {
				s->cf = HM__H2_CF_CRLF;
				s->cf_crlf = 0;
			}
			break;
		case HM__H2_CF_CRLF:
			k = HM_MIN(n, (size_t)(2 - s->cf_crlf));
			s->cf_crlf = (uint8_t)(s->cf_crlf + k);
			if (s->cf_crlf == 2) {
				s->cf = HM__H2_CF_IDLE;
				if (s->r_len == 0 && s->req_ended) {
					s->cf = HM__H2_CF_LAST;
					s->tr_pos = 0;
				}
			}
			break;
		case HM__H2_CF_LAST:
			k = HM_MIN(n, (size_t)(last_len - s->tr_pos));
			s->tr_pos += (uint32_t)k;
			if (s->tr_pos == last_len)
				s->cf = HM__H2_CF_DONE;
			break;
		default:
			hm_require(!"consumed more request body than was peeked");
			return;
		}
		n -= k;
	}
	hm__h2_consume(s, acked);
}

bool hm__router_h2_stream_body_done(const struct hm__router_h2_stream *s)
{
	switch (s->body_mode) {
	case HM__H2_BODY_NONE:
		return true;
	case HM__H2_BODY_RAW:
		return s->discard || (s->req_ended && s->r_len == 0);
	default:
		return s->discard || s->cf == HM__H2_CF_DONE;
	}
}

bool hm__router_h2_stream_body_last(const struct hm__router_h2_stream *s)
{
	return s->peek_last;
}

bool hm__router_h2_stream_body_full(const struct hm__router_h2_stream *s)
{
	return !s->discard && !s->req_ended && s->ring != NULL && s->r_len == s->ring_cap;
}

int hm__router_h2_stream_status(const struct hm__router_h2_stream *s)
{
	return s->status;
}

const char *hm__router_h2_stream_why(const struct hm__router_h2_stream *s)
{
	return s->why;
}

const struct hm__router_msg *hm__router_h2_stream_msg(const struct hm__router_h2_stream *s)
{
	return &s->msg;
}

const struct hm__router_req *hm__router_h2_stream_req(const struct hm__router_h2_stream *s)
{
	return &s->rq;
}

/* ---- responses ------------------------------------------------------------------------------- */

static nghttp2_nv nv_of(const void *name, size_t nlen, const void *value, size_t vlen)
{
	return (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, nlen, vlen,
			    NGHTTP2_NV_FLAG_NONE};
}

#define NV_LIT(n, v) nv_of((n), sizeof(n) - 1, (v), sizeof(v) - 1)

static void lowercase(char *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			p[i] = (char)(p[i] + 32);
}

static int submitted(struct hm__router_h2_stream *s, int rv, uint8_t rs)
{
	if (rv != 0)
		return rv == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EPIPE;
	s->rs = rs;
	hm__h2_wake(s->c);
	return 0;
}

static int can_respond(const struct hm__router_h2_stream *s)
{
	if (!s->attached)
		return -EPIPE;
	if (s->rs != HM__H2_RS_NONE || s->released)
		return -EINVAL;
	return 0;
}

static void status_text(struct hm__router_h2_stream *s, int status)
{
	s->status_txt[0] = (char)('0' + status / 100 % 10);
	s->status_txt[1] = (char)('0' + status / 10 % 10);
	s->status_txt[2] = (char)('0' + status % 10);
	s->status_txt[3] = '\0';
}

int hm__router_h2_stream_continue(struct hm__router_h2_stream *s)
{
	nghttp2_nv nv = NV_LIT(":status", "100");
	int r = can_respond(s);

	if (r != 0)
		return r;
	return submitted(
	    s, nghttp2_submit_headers(s->c->ng, NGHTTP2_FLAG_NONE, s->id, NULL, &nv, 1, NULL),
	    HM__H2_RS_NONE);
}

int hm__router_h2_stream_respond(struct hm__router_h2_stream *s, struct hm__router_msg *m,
				 const struct hm__router_resp *rs,
				 const struct hm__router_h2_resp_opts *o)
{
	struct hm__router_resp_ctx rctx = {
	    .client_minor = 1, .keep_alive = true, .head_request = s->head_method};
	struct hm__router_resp_plan plan;
	nghttp2_nv *nv;
	bool body, cl_done = false;
	size_t k = 0;
	int r = can_respond(s);

	if (r != 0)
		return r;
	if (rs->status < 200 || rs->status > 999)
		return -EINVAL;
	hm__router_resp_plan(m, rs, &rctx, &plan);
	body = plan.body != HM__BODY_NONE;
	nv = hm__router_slab_alloc(slab_of(s), ((size_t)m->nhdr + 3) * sizeof(*nv));
	if (nv == NULL)
		return -ENOMEM;
	status_text(s, rs->status);
	nv[k++] = nv_of(":status", 7, s->status_txt, 3);
	for (uint16_t i = 0; i < m->nhdr; i++) {
		struct hm__router_hdr *h = &m->hdr[i];
		char *name = m->base + h->name_off;

		if (h->drop || hop_by_hop(h->id))
			continue;
		if (h->id == HM__HDR_CONTENT_LENGTH) {
			/* Chunked wins over a Content-Length; a 204 has none (RFC 9110 8.6). */
			if (rs->chunked || cl_done || rs->status == 204)
				continue;
			cl_done = true;
		}
		lowercase(name, h->name_len);
		nv[k++] = nv_of(name, h->name_len, m->base + h->value_off,
				hm__router_trim(m->base + h->value_off, h->value_len));
	}
	nv[k++] = NV_LIT("via", "1.1 hermod");
	if (o != NULL && o->set_cookie != NULL)
		nv[k++] = nv_of("set-cookie", 10, o->set_cookie, o->set_cookie_len);
	r = nghttp2_submit_response(s->c->ng, s->id, nv, k, body ? &hm__h2_provider : NULL);
	hm__router_slab_free(slab_of(s), nv);
	r = submitted(s, r, body ? HM__H2_RS_BODY : HM__H2_RS_ENDED);
	return r != 0 ? r : body ? 0 : 1;
}

int hm__router_h2_stream_error(struct hm__router_h2_stream *s, int status)
{
	const char *full, *head;
	size_t flen, hlen, blen;
	char cl[24];
	nghttp2_nv nv[5];
	int r = can_respond(s), n = 0;

	if (r != 0)
		return r;
	hm__router_error_response(status, false, &full, &flen);
	hm__router_error_response(status, true, &head, &hlen);
	/* The canned response's status ("HTTP/1.1 503 ..."): the table maps unknown ones. */
	memcpy(s->status_txt, full + 9, 3);
	s->status_txt[3] = '\0';
	blen = flen - hlen;
	do {
		cl[sizeof(cl) - 1 - (size_t)n++] = (char)('0' + blen % 10);
		blen /= 10;
	} while (blen != 0);
	blen = flen - hlen;
	nv[0] = nv_of(":status", 7, s->status_txt, 3);
	nv[1] = NV_LIT("content-type", "text/plain; charset=utf-8");
	nv[2] = nv_of("content-length", 14, cl + sizeof(cl) - n, (size_t)n);
	nv[3] = NV_LIT("cache-control", "no-cache, no-store");
	nv[4] = NV_LIT("via", "1.1 hermod");
	r = nghttp2_submit_response(s->c->ng, s->id, nv, 5,
				    s->head_method ? NULL : &hm__h2_provider);
	if (r == 0 && !s->head_method) {
		/* Static bytes: nothing to release. */
		s->sp[(s->sp_head + s->sp_n) % HM__H2_SPANS] =
		    (struct hm__h2_span){.p = (const uint8_t *)full + hlen, .n = blen};
		s->sp_n++;
	}
	return submitted(s, r, HM__H2_RS_ENDED);
}

int hm__router_h2_stream_end(struct hm__router_h2_stream *s, const struct hm__router_h2_field *tr,
			     size_t n)
{
	size_t keep = 0, bytes = 0, k = 0;
	char *o;

	if (!s->attached)
		return -EPIPE;
	if (s->rs != HM__H2_RS_BODY)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (trailer_dropped(tr[i].name, tr[i].name_len))
			continue;
		keep++;
		bytes += tr[i].name_len + tr[i].value_len;
	}
	if (keep > 0) {
		s->rtr = hm__router_slab_alloc(slab_of(s), keep * sizeof(nghttp2_nv) + bytes);
		if (s->rtr == NULL)
			return -ENOMEM;
		o = (char *)(s->rtr + keep);
		for (size_t i = 0; i < n; i++) {
			if (trailer_dropped(tr[i].name, tr[i].name_len))
				continue;
			memcpy(o, tr[i].name, tr[i].name_len);
			lowercase(o, tr[i].name_len);
			memcpy(o + tr[i].name_len, tr[i].value, tr[i].value_len);
			s->rtr[k++] = nv_of(o, tr[i].name_len, o + tr[i].name_len, tr[i].value_len);
			o += tr[i].name_len + tr[i].value_len;
		}
		s->nrtr = keep;
	}
	s->rs = HM__H2_RS_ENDED;
	if (s->deferred) {
		s->deferred = false;
		nghttp2_session_resume_data(s->c->ng, s->id);
	}
	hm__h2_wake(s->c);
	return 0;
}
