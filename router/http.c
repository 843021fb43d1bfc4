/*
 * HTTP/1.x parsing for the router (see http.h): llhttp driven over the caller's buffer, limits
 * checked as the bytes arrive, chunked bodies checked strictly and re-encoded or de-chunked.
 *
 * llhttp does the tokenising; the callbacks below only record offsets and enforce limits as the
 * bytes arrive, so an oversized line is refused at the byte that makes it oversized, not after
 * buffering it. Where llhttp is laxer than the contract (obs-fold, bare LF after the request
 * line, whitespace before a colon, HTTP/0.9 and /2.0 lines) or stricter (identical duplicate
 * Content-Length), hm__router_req_check() (http_rewrite.c) and the callbacks make up the
 * difference.
 */
#include "router/http.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

/* ---- small helpers ---------------------------------------------------------------------- */

bool hm__router_eq_lit(const char *s, size_t n, const char *lit)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (lit[i] == '\0' || hm__router_lower(s[i]) != lit[i])
			return false;
	return lit[i] == '\0';
}

size_t hm__router_trim(const char *s, size_t n)
{
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n;
}

bool hm__router_list_next(const char *s, size_t n, size_t *pos, const char **tok, size_t *tok_len)
{
	size_t i = *pos;

	while (i < n) {
		size_t b, e;

		while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
			i++;
		b = i;
		while (i < n && s[i] != ',')
			i++;
		e = b + hm__router_trim(s + b, i - b);
		if (e > b) {
			*tok = s + b;
			*tok_len = e - b;
			*pos = i;
			return true;
		}
	}
	*pos = n;
	return false;
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
	static const char extra[] = "!#$%&'*+-.^_`|~";

	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && memchr(extra, c, sizeof(extra) - 1) != NULL;
}

bool hm__router_is_token(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

/* ---- limits ------------------------------------------------------------------------------ */

void hm__router_limits_request(struct hm__router_limits *l, uint32_t max_head)
{
	*l = (struct hm__router_limits){
	    .line = 8192,
	    .name = 1000,
	    .value = 8192,
	    .count = 1000,
	    .header_line = 0,
	    .set_cookie = 0,
	    .head = max_head,
	    .status = 400,
	    .line_status = 414,
	};
}

void hm__router_limits_response(struct hm__router_limits *l, uint32_t max_head)
{
	*l = (struct hm__router_limits){
	    .line = 8192,
	    .name = 65535,
	    .value = 512 * 1024,
	    .count = 10000,
	    .header_line = 512 * 1024,
	    .set_cookie = 8192,
	    .head = max_head,
	    .status = 502,
	    .line_status = 502,
	};
}

/* ---- llhttp callbacks -------------------------------------------------------------------- */

static struct hm__router_msg *msg_of(llhttp_t *p)
{
	return p->data;
}

static int fail(struct hm__router_msg *m, uint16_t status, const char *why)
{
	m->status = status;
	m->why = why;
	return HPE_USER;
}

static uint32_t off_of(struct hm__router_msg *m, const char *at)
{
	return (uint32_t)(at - m->base);
}

/*
 * The request/status line as far as it has arrived in [start, end): up to its CR or LF, or all
 * of it. Empty lines before a status line (llhttp skips them) count towards it. Only
 * lim->line + 1 bytes are looked at, which is enough to tell whether it is too long.
 */
static uint32_t line_so_far(const struct hm__router_msg *m, uint32_t end)
{
	const char *s = m->base + m->start;
	uint32_t n = end - m->start, i;
	bool text = false;

	if (n > m->lim->line + 1u)
		n = m->lim->line + 1u;
	for (i = 0; i < n; i++) {
		if (s[i] != '\r' && s[i] != '\n')
			text = true;
		else if (text)
			break;
	}
	return i;
}

/*
 * The request/status line ends where the first header name starts (or the head ends), at its
 * CR or LF: llhttp takes a bare LF after a request line, so the line is not next - start - 2.
 */
static int line_end(struct hm__router_msg *m, uint32_t next)
{
	m->line_done = true;
	m->line_len = line_so_far(m, next);
	if (m->line_len > m->lim->line)
		return fail(m, m->lim->line_status, "request or status line too long");
	return 0;
}

/* rechunk output; the size bound is the caller's (see hm__router_msg_execute). */
static void rput(struct hm__router_msg *m, const char *s, size_t n)
{
	if (m->rlen + n > m->rcap)
		n = m->rcap - m->rlen; /* cannot happen within the documented bound */
	memcpy(m->rbuf + m->rlen, s, n);
	m->rlen += (uint32_t)n;
}

/*
 * Request trailers lose the fields that frame, route or belong to one connection
 * (hm__router_hdr_flags, HM__HF_NOT_TRAILER): re-encoded without them, and never taken to
 * reframe the body whatever the mode. A trailer name may arrive in several spans, so its start
 * is held until it is known: every name to drop fits in tr_name, a longer one is written out
 * as it comes.
 */
enum { TR_NAME = 0, TR_KEEP, TR_DROP };

static void trailer_name(struct hm__router_msg *m, const char *at, size_t n)
{
	if (m->tr == TR_NAME && m->tr_len + n <= sizeof(m->tr_name)) {
		memcpy(m->tr_name + m->tr_len, at, n);
		m->tr_len = (uint8_t)(m->tr_len + n);
		return;
	}
	if (m->tr == TR_NAME) {
		if (m->rechunk)
			rput(m, m->tr_name, m->tr_len);
		m->tr = TR_KEEP;
	}
	if (m->rechunk)
		rput(m, at, n);
}

static void trailer_name_done(struct hm__router_msg *m)
{
	if (m->tr == TR_NAME) {
		uint8_t id = hm__router_hdr_classify(m->tr_name, m->tr_len);

		if (m->p.type == HTTP_REQUEST && (hm__router_hdr_flags[id] & HM__HF_NOT_TRAILER)) {
			m->tr = TR_DROP;
			/* llhttp refuses a second "chunked" coding and clears its flag for another:
			 * the flag is restored when the value is complete. */
			if (id == HM__HDR_TRANSFER_ENCODING)
				m->p.flags &= (uint16_t)~F_CHUNKED;
			return;
		}
		if (m->rechunk)
			rput(m, m->tr_name, m->tr_len);
		m->tr = TR_KEEP;
	}
	if (m->rechunk)
		rput(m, ":", 1);
}

static void trailer_done(struct hm__router_msg *m)
{
	if (m->rechunk && m->tr != TR_DROP)
		rput(m, "\r\n", 2);
	if (m->tr == TR_DROP && m->chunked)
		m->p.flags |= F_CHUNKED;
	m->tr = TR_NAME;
	m->tr_len = 0;
}

/*
 * Trailer collection (m->tbuf, set by the caller once the head is parsed): each field as a
 * "name:value\n" line, so that a protocol that carries trailers apart from the body (HTTP/2)
 * can be given them. A field that does not fit what is left of tbuf is dropped whole.
 */
static void tput(struct hm__router_msg *m, const char *s, size_t n)
{
	if (m->tdrop)
		return;
	if (m->tcap - m->tlen < n) {
		m->tdrop = true;
		m->tlen = m->tfield;
		return;
	}
	memcpy(m->tbuf + m->tlen, s, n);
	m->tlen += (uint32_t)n;
}

static void tname(struct hm__router_msg *m, const char *at, size_t n)
{
	if (m->tnew) {
		m->tnew = false;
		m->tfield = m->tlen;
		m->tdrop = false;
	}
	tput(m, at, n);
}

static void tfield_end(struct hm__router_msg *m)
{
	tput(m, "\n", 1);
	m->tnew = true;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
	struct hm__router_msg *m = msg_of(p);

	if (m->url_len == 0)
		m->url_off = off_of(m, at);
	m->url_len += (uint32_t)n;
	if (m->url_len > m->lim->line)
		return fail(m, m->lim->line_status, "request line too long");
	return 0;
}

static int on_status(llhttp_t *p, const char *at, size_t n)
{
	struct hm__router_msg *m = msg_of(p);

	if (m->reason_len == 0)
		m->reason_off = off_of(m, at);
	m->reason_len += (uint32_t)n;
	if (m->reason_len > m->lim->line)
		return fail(m, m->lim->line_status, "status line too long");
	return 0;
}

static int on_version(llhttp_t *p, const char *at, size_t n)
{
	(void)at;
	(void)n;
	msg_of(p)->version_seen = true;
	return 0;
}

static int grow_headers(struct hm__router_msg *m)
{
	uint32_t cap = m->cap * 2u;
	struct hm__router_hdr *h;

	if (cap > m->lim->count)
		cap = m->lim->count;
	if (m->hdr == m->inline_hdr) {
		h = malloc(cap * sizeof(*h));
		if (h != NULL)
			memcpy(h, m->inline_hdr, m->nhdr * sizeof(*h));
	} else {
		h = realloc(m->hdr, cap * sizeof(*h));
	}
	if (h == NULL)
		return -ENOMEM;
	m->hdr = h;
	m->cap = (uint16_t)cap;
	return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
	struct hm__router_msg *m = msg_of(p);
	struct hm__router_hdr *h;

	if (m->state != HM__MSG_HEAD) {
		/* Trailers: relayed raw, re-encoded, or dropped (de-chunking); never collected, so
		 * their names are checked here, span by span, as on_header_field_complete checks a
		 * head's (llhttp, not built strict, takes "a b" for a name). */
		for (size_t i = 0; i < n; i++)
			if (!is_tchar((unsigned char)at[i]))
				return fail(m, m->lim->status, "invalid trailer name");
		trailer_name(m, at, n);
		if (m->tbuf != NULL)
			tname(m, at, n);
		return 0;
	}
	if (m->in != 1) {
		if (!m->line_done && line_end(m, off_of(m, at)) != 0)
			return HPE_USER;
		if (m->nhdr >= m->lim->count)
			return fail(m, m->lim->status, "too many header lines");
		if (m->nhdr == m->cap && grow_headers(m) != 0)
			return fail(m, m->lim->status, "out of memory for headers");
		h = &m->hdr[m->nhdr];
		*h = (struct hm__router_hdr){.name_off = off_of(m, at)};
		m->in = 1;
	}
	h = &m->hdr[m->nhdr];
	if (h->name_len + n > m->lim->name)
		return fail(m, m->lim->status, "header name too long");
	h->name_len = (uint16_t)(h->name_len + n);
	return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);
	struct hm__router_hdr *h;

	if (m->state != HM__MSG_HEAD) {
		trailer_name_done(m);
		if (m->tbuf != NULL)
			tput(m, ":", 1);
		return 0;
	}
	h = &m->hdr[m->nhdr];
	if (!hm__router_is_token(m->base + h->name_off, h->name_len))
		return fail(m, m->lim->status, "invalid header name");
	h->id = hm__router_hdr_classify(m->base + h->name_off, h->name_len);
	if (h->id == HM__HDR_CONTENT_LENGTH && m->cl_seen) {
		/* llhttp refuses any second Content-Length; the contract merges identical ones, so
		 * let it parse this one afresh and compare the values in value_complete. */
		m->p.flags &= (uint16_t)~F_CONTENT_LENGTH;
		m->p.content_length = 0;
	}
	h->value_off = h->name_off + h->name_len + 1;
	m->in = 2;
	return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
	struct hm__router_msg *m = msg_of(p);
	struct hm__router_hdr *h;

	if (m->state != HM__MSG_HEAD) {
		if (m->rechunk && m->tr != TR_DROP)
			rput(m, at, n);
		if (m->tbuf != NULL)
			tput(m, at, n);
		return 0;
	}
	h = &m->hdr[m->nhdr];
	if (m->in != 3) {
		h->value_off = off_of(m, at);
		h->value_len = 0;
		m->in = 3;
	}
	h->value_len += (uint32_t)n;
	if (h->value_len > m->lim->value)
		return fail(m, m->lim->status, "header value too long");
	if (m->lim->header_line != 0 && h->name_len + h->value_len > m->lim->header_line)
		return fail(m, m->lim->status, "header line too long");
	if (m->lim->set_cookie != 0 && h->id == HM__HDR_SET_COOKIE &&
	    h->value_len > m->lim->set_cookie)
		return fail(m, m->lim->status, "Set-Cookie too long");
	return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);
	struct hm__router_hdr *h;

	if (m->state != HM__MSG_HEAD) {
		trailer_done(m);
		if (m->tbuf != NULL)
			tfield_end(m);
		return 0;
	}
	h = &m->hdr[m->nhdr];
	if (h->id == HM__HDR_CONTENT_LENGTH) {
		const char *v = m->base + h->value_off;
		size_t n = hm__router_trim(v, h->value_len);
		uint64_t cl = 0;

		/* llhttp has checked the digits and the overflow. */
		for (size_t i = 0; i < n; i++)
			cl = cl * 10 + (uint64_t)(v[i] - '0');
		if (n == 0)
			return fail(m, m->lim->status, "empty Content-Length");
		if (m->cl_seen && cl != m->cl_value)
			return fail(m, m->lim->status, "conflicting Content-Length");
		m->cl_seen = true;
		m->cl_value = cl;
	}
	m->nhdr++;
	m->in = 0;
	return 0;
}

static int on_headers_complete(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);

	if (p->type == HTTP_RESPONSE) {
		int s = p->status_code;

		/* No body, whatever the headers say: HEAD, 204, 304, and 1xx but 101. */
		if ((p->flags & F_SKIPBODY) || s == 204 || s == 304 ||
		    (s >= 100 && s < 200 && s != 101))
			p->flags |= F_SKIPBODY;
	}
	(void)m;
	return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
	struct hm__router_msg *m = msg_of(p);

	m->body_bytes += n;
	if (m->dechunk) {
		memmove(m->base + m->out_off + m->out_len, at, n);
		m->out_len += (uint32_t)n;
	} else if (m->rechunk) {
		rput(m, at, n);
	}
	return 0;
}

/* llhttp calls the chunk callbacks once the line that ends them is consumed. */
static int on_chunk_header(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);
	static const char hex[] = "0123456789abcdef";
	char t[20];
	size_t n = 0;
	uint64_t v = p->content_length;

	if (!m->rechunk)
		return 0;
	do {
		t[sizeof(t) - 3 - n++] = hex[v & 15];
		v >>= 4;
	} while (v != 0);
	t[sizeof(t) - 2] = '\r';
	t[sizeof(t) - 1] = '\n';
	rput(m, t + sizeof(t) - 2 - n, n + 2);
	return 0;
}

static int on_chunk_complete(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);

	/* After a data chunk, its CRLF; after the last chunk, the end of the trailer section. */
	if (m->rechunk)
		rput(m, "\r\n", 2);
	return 0;
}

static int on_message_complete(llhttp_t *p)
{
	struct hm__router_msg *m = msg_of(p);

	/* Before llhttp clears the flags after this callback. */
	m->keep_alive = llhttp_should_keep_alive(p) != 0;
	return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_version = on_version,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_chunk_header = on_chunk_header,
    .on_chunk_complete = on_chunk_complete,
};

/* ---- chunked framing ---------------------------------------------------------------------- */

/*
 * llhttp built without LLHTTP_STRICT_MODE takes any byte for the LF ending a chunk-size line or
 * a chunked body, and any two bytes for the CRLF after chunk data: "3\r\nabcXX" is one chunk
 * to it, and "0\r\n\rX" a complete body. A peer that reads those bytes strictly would frame
 * them differently, so the line ends of a chunked body are checked here, on the bytes llhttp is
 * about to parse; llhttp checks everything else (sizes, extensions, trailer fields) but the
 * characters of trailer names, which on_header_field does.
 */
enum {
	CK_SIZE0 = 0, /* first byte of a chunk-size line */
	CK_SIZE,      /* more hex digits */
	CK_EXT,	      /* extensions, up to CR */
	CK_SIZE_LF,
	CK_DATA,
	CK_DATA_CR,
	CK_DATA_LF,
	CK_TRAILER0, /* first byte of a trailer line, or the CR of the last line */
	CK_TRAILER,
	CK_TRAILER_LF,
	CK_END_LF,
	CK_DONE,
};

static bool chunk_lines_ok(struct hm__router_msg *m, const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && m->ck != CK_DONE) {
		char c = s[i];
		int d;

		switch (m->ck) {
		case CK_SIZE0:
		case CK_SIZE:
			d = hm_hexval(c);
			if (d >= 0) {
				if (m->ck_left >> 60 != 0)
					return false; /* llhttp refuses it too */
				m->ck_left = m->ck_left << 4 | (uint64_t)d;
				m->ck = CK_SIZE;
				break;
			}
			if (m->ck == CK_SIZE0)
				return false;
			m->ck = CK_EXT;
			continue; /* c again, as an extension byte */
		case CK_EXT:
			if (c == '\n')
				return false;
			if (c == '\r')
				m->ck = CK_SIZE_LF;
			break;
		case CK_SIZE_LF:
			if (c != '\n')
				return false;
			m->ck = m->ck_left == 0 ? CK_TRAILER0 : CK_DATA;
			break;
		case CK_DATA:
			if (n - i < m->ck_left) {
				m->ck_left -= n - i;
				return true;
			}
			i += m->ck_left;
			m->ck_left = 0;
			m->ck = CK_DATA_CR;
			continue;
		case CK_DATA_CR:
			if (c != '\r')
				return false;
			m->ck = CK_DATA_LF;
			break;
		case CK_DATA_LF:
			if (c != '\n')
				return false;
			m->ck = CK_SIZE0;
			break;
		case CK_TRAILER0:
			if (c == '\n' || c == ' ' || c == '\t' || c == ':')
				return false; /* bare LF, obs-fold, no name (llhttp takes ": v") */
			m->ck = c == '\r' ? CK_END_LF : CK_TRAILER;
			break;
		case CK_TRAILER:
			if (c == '\n')
				return false;
			if (c == '\r')
				m->ck = CK_TRAILER_LF;
			break;
		case CK_TRAILER_LF:
			if (c != '\n')
				return false;
			m->ck = CK_TRAILER0;
			break;
		case CK_END_LF:
			if (c != '\n')
				return false;
			m->ck = CK_DONE;
			break;
		default:
			return false;
		}
		i++;
	}
	return true;
}

/* ---- driving llhttp ---------------------------------------------------------------------- */

void hm__router_msg_init(struct hm__router_msg *m, llhttp_type_t type,
			 const struct hm__router_limits *lim)
{
	memset(m, 0, offsetof(struct hm__router_msg, inline_hdr));
	llhttp_init(&m->p, type, &settings);
	/* Transfer-Encoding wins over Content-Length (the contract); the Content-Length is not
	 * forwarded. llhttp would otherwise refuse the pair. */
	if (type == HTTP_REQUEST)
		llhttp_set_lenient_chunked_length(&m->p, 1);
	m->p.data = m;
	m->lim = lim;
	m->hdr = m->inline_hdr;
	m->cap = HM__ROUTER_HDR_INLINE;
}

void hm__router_msg_fini(struct hm__router_msg *m)
{
	if (m->hdr != m->inline_hdr)
		free(m->hdr);
	m->hdr = m->inline_hdr;
	m->cap = HM__ROUTER_HDR_INLINE;
	m->nhdr = 0;
}

void hm__router_msg_reset(struct hm__router_msg *m, char *base, uint32_t start)
{
	struct hm__router_hdr *hdr = m->hdr;
	uint16_t cap = m->cap;
	const struct hm__router_limits *lim = m->lim;

	llhttp_reset(&m->p);
	memset((char *)m + sizeof(m->p), 0,
	       offsetof(struct hm__router_msg, inline_hdr) - sizeof(m->p));
	m->lim = lim;
	m->hdr = hdr;
	m->cap = cap;
	m->base = base;
	m->start = start;
}

void hm__router_msg_shift(struct hm__router_msg *m, uint32_t delta)
{
	if (delta == 0)
		return;
	m->start -= delta;
	if (m->head_end != 0)
		m->head_end -= delta;
	if (m->url_len != 0)
		m->url_off -= delta;
	if (m->reason_len != 0)
		m->reason_off -= delta;
	for (uint16_t i = 0; i < m->nhdr; i++) {
		m->hdr[i].name_off -= delta;
		m->hdr[i].value_off -= delta;
	}
	if (m->in != 0) {
		/* A header being collected. */
		m->hdr[m->nhdr].name_off -= delta;
		m->hdr[m->nhdr].value_off -= delta;
	}
}

void hm__router_msg_skip_body(struct hm__router_msg *m, bool skip)
{
	if (skip)
		m->p.flags |= F_SKIPBODY;
	else
		m->p.flags &= (uint16_t)~F_SKIPBODY;
}

static int error_event(struct hm__router_msg *m, llhttp_errno_t err)
{
	/* A callback that failed has said why; llhttp reports it as HPE_USER from a span
	 * callback but as HPE_CB_* from the others. */
	if (m->why == NULL) {
		m->why = llhttp_get_error_reason(&m->p);
		if (m->why == NULL)
			m->why = llhttp_errno_name(err);
		/* llhttp reports a span only when it ends or the buffer does: a line already over
		 * its limit before the byte llhttp refuses is too long however the bytes came. */
		if (m->state == HM__MSG_HEAD && !m->line_done &&
		    line_so_far(m, (uint32_t)(llhttp_get_error_pos(&m->p) - m->base)) >
			m->lim->line) {
			m->why = "request or status line too long";
			m->status = m->lim->line_status;
		} else if (err == HPE_INVALID_VERSION && m->p.type == HTTP_REQUEST)
			m->status = 505;
		else
			m->status = m->lim->status;
	}
	m->state = HM__MSG_ERROR;
	return HM__EV_ERROR;
}

int hm__router_msg_execute(struct hm__router_msg *m, char *buf, uint32_t off, uint32_t len,
			   uint32_t *used)
{
	uint32_t o = off, end = off + len, pos;
	llhttp_errno_t err;

	m->base = buf;
	m->out_off = off;
	m->out_len = 0;
	m->rlen = 0;
	*used = 0;
	if (m->state == HM__MSG_ERROR)
		return HM__EV_ERROR;
	if (m->state == HM__MSG_DONE)
		return HM__EV_DONE;
	if (m->state == HM__MSG_BODY && m->chunked && !chunk_lines_ok(m, buf + o, len)) {
		m->status = m->lim->status;
		m->why = "bad line end in chunked body";
		m->state = HM__MSG_ERROR;
		return HM__EV_ERROR;
	}
	if (m->state == HM__MSG_HEAD && m->p.type == HTTP_REQUEST && o == m->start) {
		/* Up to 5 empty lines may precede a request line (Vegur); a bare LF may not. */
		while (o < end && o == m->start && (buf[o] == '\r' || buf[o] == '\n')) {
			if (buf[o] == '\n') {
				m->status = 400;
				m->why = "bare LF";
				m->state = HM__MSG_ERROR;
				return HM__EV_ERROR;
			}
			if (o + 1 >= end)
				break;
			if (buf[o + 1] != '\n' || ++m->blank > 5) {
				m->status = 400;
				m->why = buf[o + 1] != '\n' ? "bare CR" : "too many empty lines";
				m->state = HM__MSG_ERROR;
				return HM__EV_ERROR;
			}
			o += 2;
			m->start = o;
		}
		if (o == end || (o + 1 == end && buf[o] == '\r')) {
			*used = o - off;
			return HM__EV_MORE;
		}
	}
	err = llhttp_execute(&m->p, buf + o, end - o);
	if (err == HPE_OK) {
		*used = len;
		if (m->state == HM__MSG_HEAD) {
			uint32_t bytes = end - m->start;

			/* The line only: a head without headers may end in a CRLF and a CR. */
			if (!m->line_done && line_so_far(m, end) > m->lim->line) {
				m->status = m->lim->line_status;
				m->why = "request or status line too long";
				m->state = HM__MSG_ERROR;
				return HM__EV_ERROR;
			}
			if (bytes > m->lim->head) {
				m->status = m->lim->status;
				m->why = "head too large";
				m->state = HM__MSG_ERROR;
				return HM__EV_ERROR;
			}
		}
		return HM__EV_MORE;
	}
	if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE)
		return error_event(m, err);
	pos = (uint32_t)(llhttp_get_error_pos(&m->p) - buf);
	*used = pos - off;
	if (m->state == HM__MSG_BODY) {
		llhttp_resume(&m->p);
		m->state = HM__MSG_DONE;
		return HM__EV_DONE;
	}
	/* Head complete. */
	m->head_end = pos;
	if (!m->line_done && line_end(m, pos - 2) != 0)
		return error_event(m, HPE_USER);
	if (pos - m->start > m->lim->head) {
		m->status = m->lim->status;
		m->why = "head too large";
		m->state = HM__MSG_ERROR;
		return HM__EV_ERROR;
	}
	llhttp_resume(&m->p);
	m->state = HM__MSG_BODY;
	m->chunked = (m->p.flags & F_CHUNKED) != 0;
	if (m->p.upgrade && m->p.type == HTTP_REQUEST &&
	    !((m->p.flags & F_CHUNKED) || m->p.content_length > 0)) {
		/* The rest of the stream belongs to the upgraded protocol. */
		m->keep_alive = false;
		m->state = HM__MSG_DONE;
		return HM__EV_HEAD;
	}
	/* Let llhttp decide now whether a body follows: with none, this completes the message. */
	err = llhttp_execute(&m->p, buf + pos, 0);
	if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
		llhttp_resume(&m->p);
		m->state = HM__MSG_DONE;
	} else if (err != HPE_OK) {
		return error_event(m, err);
	}
	return HM__EV_HEAD;
}

bool hm__router_msg_needs_eof(const struct hm__router_msg *m)
{
	return llhttp_message_needs_eof(&m->p) != 0;
}

int hm__router_msg_finish(struct hm__router_msg *m)
{
	llhttp_errno_t err;

	if (m->state == HM__MSG_DONE)
		return HM__EV_DONE;
	if (m->state != HM__MSG_BODY || !hm__router_msg_needs_eof(m)) {
		m->status = m->lim->status;
		m->why = "connection closed mid-message";
		m->state = HM__MSG_ERROR;
		return HM__EV_ERROR;
	}
	err = llhttp_finish(&m->p);
	if (err != HPE_OK && err != HPE_PAUSED)
		return error_event(m, err);
	m->keep_alive = false;
	m->state = HM__MSG_DONE;
	return HM__EV_DONE;
}

void hm__router_msg_collect_trailers(struct hm__router_msg *m, char *buf, uint32_t cap)
{
	m->tbuf = buf;
	m->tcap = cap;
	m->tlen = 0;
	m->tnew = true;
	m->tdrop = false;
}

size_t hm__router_msg_trailers(const struct hm__router_msg *m, struct hm__router_field *out,
			       size_t cap)
{
	const char *p = m->tbuf, *end = m->tbuf + m->tlen;
	size_t n = 0;

	while (p != NULL && p < end && n < cap) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *colon = memchr(p, ':', (size_t)(nl - p));

		out[n].name = p;
		out[n].name_len = (size_t)(colon - p);
		out[n].value = colon + 1;
		out[n].value_len = hm__router_trim(colon + 1, (size_t)(nl - colon - 1));
		n++;
		p = nl + 1;
	}
	return n;
}
