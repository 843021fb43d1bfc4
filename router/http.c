/*
 * HTTP/1.x parsing, validation and rewriting for the router (see http.h).
 *
 * llhttp does the tokenising; the callbacks below only record offsets and enforce limits as the
 * bytes arrive, so an oversized line is refused at the byte that makes it oversized, not after
 * buffering it. Where llhttp is laxer than the contract (obs-fold, bare LF after the request
 * line, whitespace before a colon, HTTP/0.9 and /2.0 lines) or stricter (identical duplicate
 * Content-Length), hm__router_req_check() and the callbacks make up the difference.
 */
#include "router/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

const char hm__router_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- small helpers ---------------------------------------------------------------------- */

static inline char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

bool hm__router_eq_lit(const char *s, size_t n, const char *lit)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (lit[i] == '\0' || lower(s[i]) != lit[i])
			return false;
	return lit[i] == '\0';
}

static bool eq_nocase(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (lower(a[i]) != lower(b[i]))
			return false;
	return true;
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

static bool is_token(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s[i]))
			return false;
	return true;
}

static char *put(char *o, const char *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_u64(char *o, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		*o++ = tmp[--n];
	return o;
}

/* ---- header names ------------------------------------------------------------------------ */

struct known {
	const char *name; /* lowercase */
	uint8_t len;
	uint8_t id;
};

/* clang-format off */
#define K(s, id) {s, sizeof(s) - 1, id}
static const struct known known[] = {
	K("host", HM__HDR_HOST),
	K("content-length", HM__HDR_CONTENT_LENGTH),
	K("transfer-encoding", HM__HDR_TRANSFER_ENCODING),
	K("connection", HM__HDR_CONNECTION),
	K("keep-alive", HM__HDR_KEEP_ALIVE),
	K("proxy-connection", HM__HDR_PROXY_CONNECTION),
	K("te", HM__HDR_TE),
	K("proxy-authorization", HM__HDR_PROXY_AUTHORIZATION),
	K("upgrade", HM__HDR_UPGRADE),
	K("expect", HM__HDR_EXPECT),
	K("x-forwarded-for", HM__HDR_X_FORWARDED_FOR),
	K("x-forwarded-proto", HM__HDR_X_FORWARDED_PROTO),
	K("x-forwarded-port", HM__HDR_X_FORWARDED_PORT),
	K("x-request-id", HM__HDR_X_REQUEST_ID),
	K("x-request-start", HM__HDR_X_REQUEST_START),
	K("via", HM__HDR_VIA),
	K("connect-time", HM__HDR_CONNECT_TIME),
	K("total-route-time", HM__HDR_TOTAL_ROUTE_TIME),
	K("cookie", HM__HDR_COOKIE),
	K("set-cookie", HM__HDR_SET_COOKIE),
	K("trailer", HM__HDR_TRAILER),
};
/* clang-format on */
#undef K

#define HOP  (HM__HF_HOP | HM__HF_NOT_TRAILER)
#define REQ  HM__HF_REQ_OWN
#define RESP HM__HF_RESP_OWN
#define NT   HM__HF_NOT_TRAILER

const uint8_t hm__router_hdr_flags[HM__HDR_COUNT] = {
    [HM__HDR_HOST] = NT,
    [HM__HDR_CONTENT_LENGTH] = NT,
    [HM__HDR_TRANSFER_ENCODING] = NT,
    [HM__HDR_CONNECTION] = HOP,
    [HM__HDR_KEEP_ALIVE] = HOP,
    [HM__HDR_PROXY_CONNECTION] = HOP,
    [HM__HDR_TE] = HOP,
    [HM__HDR_PROXY_AUTHORIZATION] = HOP,
    [HM__HDR_UPGRADE] = NT, /* kept only for a tunnel, in both directions */
    [HM__HDR_EXPECT] = REQ, /* the router answers 100-continue itself */
    [HM__HDR_X_FORWARDED_FOR] = REQ,
    [HM__HDR_X_FORWARDED_PROTO] = REQ,
    [HM__HDR_X_FORWARDED_PORT] = REQ,
    [HM__HDR_X_REQUEST_ID] = REQ,
    [HM__HDR_X_REQUEST_START] = REQ,
    [HM__HDR_VIA] = REQ | RESP,
    [HM__HDR_CONNECT_TIME] = REQ,
    [HM__HDR_TOTAL_ROUTE_TIME] = REQ,
    [HM__HDR_TRAILER] = NT,
};

#undef HOP
#undef REQ
#undef RESP
#undef NT

uint8_t hm__router_hdr_classify(const char *name, size_t n)
{
	/* The names differ in length or first letter often enough that this stays short. */
	for (size_t i = 0; i < HM_ARRAY_SIZE(known); i++)
		if (known[i].len == n && lower(name[0]) == known[i].name[0] &&
		    hm__router_eq_lit(name, n, known[i].name))
			return known[i].id;
	return HM__HDR_OTHER;
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
		return 0;
	}
	h = &m->hdr[m->nhdr];
	if (!is_token(m->base + h->name_off, h->name_len))
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

/* ---- checks shared by both directions ---------------------------------------------------- */

/*
 * Every LF ends a CRLF, every CR starts one, and no line starts with whitespace (obs-fold).
 * llhttp built without LLHTTP_STRICT_MODE takes a CR followed by any byte for a line end after
 * a status line and at the end of a head ("\r\n\rX"), so a bare CR is looked for here.
 */
static bool line_endings_ok(const struct hm__router_msg *m)
{
	const char *b = m->base, *p = b + m->start, *end = b + m->head_end;

	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		if (p == b + m->start || p[-1] != '\r')
			return false;
		p++;
		if (p < end && (*p == ' ' || *p == '\t'))
			return false;
	}
	for (p = b + m->start; (p = memchr(p, '\r', (size_t)(end - p))) != NULL; p += 2)
		if (p + 1 == end || p[1] != '\n')
			return false;
	return true;
}

/* Headers named by Connection are dropped, except those that frame the message. */
static void drop_named(struct hm__router_msg *m, const char *name, size_t n)
{
	for (uint16_t i = 0; i < m->nhdr; i++) {
		struct hm__router_hdr *h = &m->hdr[i];

		if (h->id == HM__HDR_HOST || h->id == HM__HDR_CONTENT_LENGTH ||
		    h->id == HM__HDR_TRANSFER_ENCODING)
			continue;
		if (eq_nocase(m->base + h->name_off, h->name_len, name, n))
			h->drop = 1;
	}
}

struct conn_tokens {
	bool close, keep_alive, upgrade;
};

static void connection_tokens(struct hm__router_msg *m, struct conn_tokens *t)
{
	*t = (struct conn_tokens){0};
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const char *v = m->base + m->hdr[i].value_off, *tok;
		size_t pos = 0, n;

		if (m->hdr[i].id != HM__HDR_CONNECTION)
			continue;
		while (hm__router_list_next(v, m->hdr[i].value_len, &pos, &tok, &n)) {
			if (hm__router_eq_lit(tok, n, "close"))
				t->close = true;
			else if (hm__router_eq_lit(tok, n, "keep-alive"))
				t->keep_alive = true;
			else if (hm__router_eq_lit(tok, n, "upgrade"))
				t->upgrade = true;
			else
				drop_named(m, tok, n);
		}
	}
}

/* "websocket", "h2c", "foo/1.1": tokens with an optional /version, comma-separated. */
static bool upgrade_valid(const char *v, size_t n)
{
	const char *tok;
	size_t pos = 0, tn;
	bool any = false;

	while (hm__router_list_next(v, n, &pos, &tok, &tn)) {
		const char *slash = memchr(tok, '/', tn);

		if (slash == NULL ? !is_token(tok, tn)
				  : !is_token(tok, (size_t)(slash - tok)) ||
					!is_token(slash + 1, tn - (size_t)(slash - tok) - 1))
			return false;
		any = true;
	}
	/* A list with empty elements ("a,,b") is tolerated; an empty or blank one is not. */
	return any;
}

bool hm__router_request_id_valid(const char *s, size_t n)
{
	if (n < 20 || n > 200)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '+' || c == '/' || c == '=' || c == '-'))
			return false;
	}
	return true;
}

/* ---- requests ---------------------------------------------------------------------------- */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

bool hm__router_host_valid(const char *s, size_t n)
{
	size_t i = 0, port;
	uint32_t v = 0;

	if (n > 0 && s[0] == '[') {
		/* IP-literal: IPv6 only (an IPvFuture has no address the router could use). */
		char lit[INET6_ADDRSTRLEN];
		struct in6_addr a;
		const char *close = memchr(s, ']', n);
		size_t ln = close != NULL ? (size_t)(close - s) - 1 : 0;

		if (ln == 0 || ln >= sizeof(lit))
			return false;
		memcpy(lit, s + 1, ln);
		lit[ln] = '\0';
		if (inet_pton(AF_INET6, lit, &a) != 1)
			return false;
		i = ln + 2;
	} else {
		while (i < n && (is_digit(s[i]) || (lower(s[i]) >= 'a' && lower(s[i]) <= 'z') ||
				 s[i] == '-' || s[i] == '.' || s[i] == '_'))
			i++;
		if (i == 0)
			return false;
	}
	if (i == n)
		return true;
	if (s[i] != ':')
		return false;
	port = n - i - 1;
	if (port > 5)
		return false;
	for (i++; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (uint32_t)(s[i] - '0');
	}
	return v <= 65535;
}

/*
 * The request target: visible ASCII only (RFC 9112, 3.2: a raw TAB, DEL or byte above 0x7e is
 * no part of any form), then origin form, "*", or absolute form, whose authority is noted.
 */
static int target(struct hm__router_msg *m, struct hm__router_req *rq, const char **why)
{
	const char *u = m->base + m->url_off, *hash;
	uint32_t n = m->url_len, skip = 0;

	for (uint32_t i = 0; i < n; i++) {
		if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f) {
			*why = "request target not visible ASCII";
			return 400;
		}
	}
	hash = memchr(u, '#', n);
	if (hash != NULL)
		n = (uint32_t)(hash - u);
	if (n >= 7 && (hm__router_eq_lit(u, 7, "http://") ||
		       (n >= 8 && hm__router_eq_lit(u, 8, "https://")))) {
		/* Absolute form: the authority routes and is the Host the dyno gets (RFC 9112,
		 * 3.2.2); the dyno gets the origin form. */
		uint32_t a = lower(u[4]) == 's' ? 8 : 7;

		skip = a;
		while (skip < n && u[skip] != '/' && u[skip] != '?')
			skip++;
		if (!hm__router_host_valid(u + a, skip - a)) {
			*why = "invalid authority in the request target";
			return 400;
		}
		rq->authority_off = m->url_off + a;
		rq->authority_len = skip - a;
		rq->target_off = m->url_off + skip;
		rq->target_len = n - skip;
		return 0;
	}
	if (n == 0 || (u[0] != '/' && !(n == 1 && u[0] == '*'))) {
		*why = "invalid request target";
		return 400;
	}
	rq->target_off = m->url_off;
	rq->target_len = n;
	return 0;
}

int hm__router_req_check(struct hm__router_msg *m, struct hm__router_req *rq, const char **why)
{
	struct conn_tokens ct;
	int hosts = 0, r;
	bool te_seen = false, upgrade_hdr = false, upgrade_ok = true;

	memset(rq, 0, offsetof(struct hm__router_req, key));
	rq->key[0] = '\0';
	rq->host = -1;
	rq->request_id = -1;
	rq->method = m->p.method;
	rq->minor = m->p.http_minor;
	if (!m->version_seen) {
		*why = "no HTTP version";
		return 400;
	}
	if (m->p.http_major != 1 || m->p.http_minor > 1) {
		*why = "HTTP version not supported";
		return 505;
	}
	if (m->p.method == HTTP_CONNECT) {
		*why = "CONNECT";
		return 400;
	}
	if (!line_endings_ok(m)) {
		*why = "bare CR or LF, or obs-fold";
		return 400;
	}
	if ((r = target(m, rq, why)) != 0)
		return r;
	connection_tokens(m, &ct);
	for (uint16_t i = 0; i < m->nhdr; i++) {
		struct hm__router_hdr *h = &m->hdr[i];
		const char *v = m->base + h->value_off;
		size_t n = hm__router_trim(v, h->value_len);

		switch (h->id) {
		case HM__HDR_HOST:
			hosts++;
			rq->host = i;
			break;
		case HM__HDR_TRANSFER_ENCODING:
			/* Exactly "chunked", once: any other coding is one the dyno would have to
			 * undo, and a list is where parsers disagree. */
			if (te_seen || !hm__router_eq_lit(v, n, "chunked")) {
				*why = "Transfer-Encoding other than chunked";
				return 400;
			}
			te_seen = true;
			break;
		case HM__HDR_EXPECT:
			if (n == 0)
				break;
			if (!hm__router_eq_lit(v, n, "100-continue")) {
				*why = "unsupported Expect";
				return 417;
			}
			rq->expect_continue = true;
			break;
		case HM__HDR_UPGRADE:
			upgrade_hdr = true;
			if (!upgrade_valid(v, n))
				upgrade_ok = false;
			break;
		case HM__HDR_X_REQUEST_ID:
			if (rq->request_id < 0 && hm__router_request_id_valid(v, n))
				rq->request_id = i;
			break;
		default:
			break;
		}
	}
	if (hosts != 1) {
		*why = hosts == 0 ? "no Host" : "more than one Host";
		return 400;
	} else {
		const struct hm__router_hdr *h = &m->hdr[rq->host];
		const char *v = m->base + h->value_off;
		size_t n = hm__router_trim(v, h->value_len);
		int k;

		if (!hm__router_host_valid(v, n)) {
			*why = "invalid Host";
			return 400;
		}
		if (rq->authority_len > 0) {
			v = m->base + rq->authority_off;
			n = rq->authority_len;
		}
		k = hm_host_key(v, n, rq->key);
		if (k < 0) {
			*why = "invalid Host";
			return 400;
		}
		rq->key_len = (uint16_t)k;
	}
	if (ct.upgrade && (!upgrade_hdr || !upgrade_ok)) {
		*why = "Connection: upgrade without a valid Upgrade";
		return 400;
	}
	rq->chunked = (m->p.flags & F_CHUNKED) != 0;
	if (te_seen != rq->chunked) {
		*why =
		    "Transfer-Encoding read two ways"; /* llhttp takes "chunked<TAB>" otherwise */
		return 400;
	}
	rq->content_length = rq->chunked ? 0 : m->cl_value;
	rq->has_body = rq->chunked || rq->content_length > 0;
	rq->keep_alive = m->p.http_minor == 1 ? !ct.close : ct.keep_alive && !ct.close;
	/* Transfer-Encoding with Content-Length, or in HTTP/1.0: the framing is suspect (someone
	 * before us may have read it the other way), so the connection ends with this request
	 * (RFC 9112, 6.1). */
	if (te_seen && (m->cl_seen || m->p.http_minor == 0))
		rq->keep_alive = false;
	rq->upgrade = ct.upgrade && upgrade_hdr && m->p.http_minor == 1 && !rq->has_body;
	if (rq->upgrade)
		rq->keep_alive = false;
	/* An HTTP/1.0 client knows no 1xx: its expectation is ignored (RFC 9110, 10.1.1). */
	if (!rq->has_body || m->p.http_minor == 0)
		rq->expect_continue = false;
	return 0;
}

size_t hm__router_req_write_bound(const struct hm__router_msg *m)
{
	/* The request line only shrinks; joined X-Forwarded-For and Via values lose at least the
	 * header names they had; a header line grows by one byte at most ("a:b" is written
	 * "a: b"); added headers with the largest id and numbers fit in 1 KiB. */
	return (size_t)(m->head_end - m->start) + m->nhdr + 1024;
}

static char *join_values(char *o, const struct hm__router_msg *m, uint8_t id, bool *any)
{
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];
		size_t n;

		if (h->id != id || h->drop)
			continue;
		n = hm__router_trim(m->base + h->value_off, h->value_len);
		if (n == 0)
			continue;
		if (*any)
			o = PUT_LIT(o, ", ");
		o = put(o, m->base + h->value_off, n);
		*any = true;
	}
	return o;
}

static char *put_header(char *o, const struct hm__router_msg *m, const struct hm__router_hdr *h)
{
	o = put(o, m->base + h->name_off, h->name_len);
	o = PUT_LIT(o, ": ");
	o = put(o, m->base + h->value_off, hm__router_trim(m->base + h->value_off, h->value_len));
	return PUT_LIT(o, "\r\n");
}

size_t hm__router_req_write(const struct hm__router_msg *m, const struct hm__router_req *rq,
			    const struct hm__router_fwd *f, char *out, size_t cap)
{
	const char *method = llhttp_method_name((llhttp_method_t)rq->method);
	char *o = out;
	bool cl_done = false, any;

	if (cap < hm__router_req_write_bound(m) + f->peer_len + f->request_id_len)
		return 0;
	o = put(o, method, strlen(method));
	*o++ = ' ';
	if (rq->target_len == 0 || m->base[rq->target_off] != '/') {
		if (!(rq->target_len == 1 && m->base[rq->target_off] == '*'))
			*o++ = '/';
	}
	o = put(o, m->base + rq->target_off, rq->target_len);
	o = PUT_LIT(o, " HTTP/1.1\r\n");
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];

		if (h->drop || (hm__router_hdr_flags[h->id] & (HM__HF_HOP | HM__HF_REQ_OWN)))
			continue;
		switch (h->id) {
		case HM__HDR_HOST:
			if (rq->authority_len == 0)
				break;
			o = PUT_LIT(o, "Host: ");
			o = put(o, m->base + rq->authority_off, rq->authority_len);
			o = PUT_LIT(o, "\r\n");
			continue;
		case HM__HDR_UPGRADE:
			if (!rq->upgrade)
				continue;
			break;
		case HM__HDR_CONTENT_LENGTH:
			if (rq->chunked || cl_done)
				continue;
			cl_done = true;
			break;
		default:
			break;
		}
		o = put_header(o, m, h);
	}
	o = PUT_LIT(o, "X-Forwarded-For: ");
	any = false;
	o = join_values(o, m, HM__HDR_X_FORWARDED_FOR, &any);
	if (any)
		o = PUT_LIT(o, ", ");
	o = put(o, f->peer, f->peer_len);
	o = PUT_LIT(o, "\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Port: ");
	o = put_u64(o, f->port);
	o = PUT_LIT(o, "\r\nX-Request-Start: ");
	o = put_u64(o, f->start_ms);
	o = PUT_LIT(o, "\r\nX-Request-Id: ");
	o = put(o, f->request_id, f->request_id_len);
	o = PUT_LIT(o, "\r\nVia: ");
	any = false;
	o = join_values(o, m, HM__HDR_VIA, &any);
	if (any)
		o = PUT_LIT(o, ", ");
	o = PUT_LIT(o, "1.1 hermod\r\nConnect-Time: ");
	o = put_u64(o, f->connect_ms);
	o = PUT_LIT(o, "\r\nTotal-Route-Time: ");
	o = put_u64(o, f->route_ms);
	o = PUT_LIT(o, "\r\n");
	if (rq->upgrade)
		o = PUT_LIT(o, "Connection: Upgrade\r\n");
	o = PUT_LIT(o, "\r\n");
	return (size_t)(o - out);
}

/* ---- responses --------------------------------------------------------------------------- */

int hm__router_resp_check(struct hm__router_msg *m, struct hm__router_resp *rs, const char **why)
{
	struct conn_tokens ct;
	bool upgrade_hdr = false, te_chunked = false;

	memset(rs, 0, sizeof(*rs));
	rs->status = m->p.status_code;
	if (m->p.http_major != 1) {
		*why = "response version is not HTTP/1.x";
		return 502;
	}
	if (rs->status < 100 || rs->status > 999) {
		*why = "invalid status code";
		return 502;
	}
	if (!line_endings_ok(m)) {
		*why = "bare CR or LF, or obs-fold in response";
		return 502;
	}
	connection_tokens(m, &ct);
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];
		const char *tok;
		size_t pos = 0, tn;

		if (h->id == HM__HDR_UPGRADE)
			upgrade_hdr = true;
		if (h->id != HM__HDR_TRANSFER_ENCODING)
			continue;
		while (hm__router_list_next(m->base + h->value_off, h->value_len, &pos, &tok, &tn))
			te_chunked = hm__router_eq_lit(tok, tn, "chunked");
	}
	rs->chunked = (m->p.flags & F_CHUNKED) != 0;
	/* llhttp takes "chunked<TAB>" for a coding other than chunked (a body up to the close);
	 * the client gets the value trimmed, and would read chunks. */
	if (rs->chunked != te_chunked) {
		*why = "Transfer-Encoding read two ways";
		return 502;
	}
	rs->has_cl = m->cl_seen && !rs->chunked;
	rs->content_length = m->cl_value;
	rs->dyno_close = ct.close || (m->p.http_minor == 0 && !ct.keep_alive);
	if (rs->status == 101) {
		if (!upgrade_hdr || !ct.upgrade) {
			*why = "101 without Upgrade";
			return 502;
		}
		rs->upgrade = true;
	}
	return 0;
}

void hm__router_resp_plan(const struct hm__router_msg *m, const struct hm__router_resp *rs,
			  const struct hm__router_resp_ctx *ctx, struct hm__router_resp_plan *out)
{
	*out = (struct hm__router_resp_plan){.body = HM__BODY_RAW, .close = !ctx->keep_alive};
	if (rs->status == 101) {
		out->body = HM__BODY_NONE;
		out->tunnel = true;
		out->close = false;
		return;
	}
	if (ctx->head_request || rs->status == 204 || rs->status == 304 ||
	    (rs->status >= 100 && rs->status < 200) || m->state == HM__MSG_DONE) {
		out->body = HM__BODY_NONE;
		return;
	}
	if (rs->chunked) {
		if (ctx->client_minor == 0) {
			out->body = HM__BODY_DECHUNK;
			out->close = true;
		}
		return;
	}
	if (!rs->has_cl)
		out->close = true; /* delimited by the dyno closing: so is the client's */
}

size_t hm__router_resp_write_bound(const struct hm__router_msg *m,
				   const struct hm__router_resp_ctx *ctx)
{
	/* As for requests: one byte more per header line at most, then the reason phrase, Via,
	 * Connection and the cookie's header. */
	return (size_t)(m->head_end - m->start) + m->nhdr + 256 + ctx->set_cookie_len;
}

static const char *reason_for(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 101:
		return "Switching Protocols";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 303:
		return "See Other";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 410:
		return "Gone";
	case 411:
		return "Length Required";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 417:
		return "Expectation Failed";
	case 422:
		return "Unprocessable Content";
	case 426:
		return "Upgrade Required";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 499:
		return "Client Closed Request";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "";
	}
}

size_t hm__router_resp_write(const struct hm__router_msg *m, const struct hm__router_resp *rs,
			     const struct hm__router_resp_ctx *ctx,
			     const struct hm__router_resp_plan *plan, char *out, size_t cap)
{
	char *o = out;
	bool cl_done = false, any = false;
	size_t rn;

	if (cap < hm__router_resp_write_bound(m, ctx))
		return 0;
	o = PUT_LIT(o, "HTTP/1.1 ");
	*o++ = (char)('0' + rs->status / 100);
	*o++ = (char)('0' + rs->status / 10 % 10);
	*o++ = (char)('0' + rs->status % 10);
	*o++ = ' ';
	rn = hm__router_trim(m->base + m->reason_off, m->reason_len);
	if (rn > 0) {
		o = put(o, m->base + m->reason_off, rn);
	} else {
		const char *r = reason_for(rs->status);

		o = put(o, r, strlen(r));
	}
	o = PUT_LIT(o, "\r\n");
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];

		if (h->drop || (hm__router_hdr_flags[h->id] & (HM__HF_HOP | HM__HF_RESP_OWN)))
			continue;
		switch (h->id) {
		case HM__HDR_UPGRADE:
			if (!plan->tunnel)
				continue;
			break;
		case HM__HDR_TRANSFER_ENCODING:
			if (plan->body == HM__BODY_DECHUNK)
				continue;
			break;
		case HM__HDR_CONTENT_LENGTH:
			if (cl_done || rs->chunked)
				continue;
			cl_done = true;
			break;
		default:
			break;
		}
		o = put_header(o, m, h);
	}
	o = PUT_LIT(o, "Via: ");
	o = join_values(o, m, HM__HDR_VIA, &any);
	if (any)
		o = PUT_LIT(o, ", ");
	o = PUT_LIT(o, "1.1 hermod\r\n");
	if (ctx->set_cookie != NULL) {
		o = PUT_LIT(o, "Set-Cookie: ");
		o = put(o, ctx->set_cookie, ctx->set_cookie_len);
		o = PUT_LIT(o, "\r\n");
	}
	if (plan->tunnel)
		o = PUT_LIT(o, "Connection: Upgrade\r\n\r\n");
	else if (plan->close)
		o = PUT_LIT(o, "Connection: close\r\n\r\n");
	else
		o = PUT_LIT(o, "Connection: keep-alive\r\n\r\n");
	return (size_t)(o - out);
}

/* ---- router-made responses --------------------------------------------------------------- */

struct canned {
	int status;
	const char *body;
	char *full; /* head + body */
	size_t full_len;
	size_t head_len; /* the head alone (HEAD requests) */
};

static struct canned canned[] = {
    {400, "Bad Request\n", NULL, 0, 0},
    {404, "No such app\n", NULL, 0, 0},
    {408, "Request Timeout\n", NULL, 0, 0},
    {414, "URI Too Long\n", NULL, 0, 0},
    {417, "Expectation Failed\n", NULL, 0, 0},
    {502, "Bad Gateway\n", NULL, 0, 0},
    {503, "Application Error\n", NULL, 0, 0},
    {505, "HTTP Version Not Supported\n", NULL, 0, 0},
    {0, NULL, NULL, 0, 0}, /* end */
};

static char canned_store[4096];

static size_t canned_build(char *o, int status, const char *body)
{
	char *p = o;
	size_t bl = strlen(body);
	const char *r = reason_for(status);

	p = PUT_LIT(p, "HTTP/1.1 ");
	p = put_u64(p, (uint64_t)status);
	*p++ = ' ';
	p = put(p, r, strlen(r));
	p = PUT_LIT(p, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ");
	p = put_u64(p, bl);
	p = PUT_LIT(p, "\r\nCache-Control: no-cache, no-store\r\nVia: 1.1 hermod\r\n"
		       "Connection: close\r\n\r\n");
	return (size_t)(p - o);
}

void hm__router_http_init(void)
{
	char *o = canned_store;

	for (size_t i = 0; i < HM_ARRAY_SIZE(canned); i++) {
		struct canned *c = &canned[i];
		size_t bl;

		if (c->status == 0)
			continue;
		bl = strlen(c->body);
		c->full = o;
		c->head_len = canned_build(o, c->status, c->body);
		memcpy(o + c->head_len, c->body, bl);
		c->full_len = c->head_len + bl;
		o += c->full_len;
		hm_require(o < canned_store + sizeof(canned_store) - 512);
	}
}

void hm__router_error_response(int status, bool head, const char **data, size_t *len)
{
	size_t i;

	/* Only precomputed statuses are ever sent, so the bytes outlive any queued write. */
	for (i = 0; i + 1 < HM_ARRAY_SIZE(canned); i++)
		if (canned[i].status == status)
			break;
	if (i + 1 == HM_ARRAY_SIZE(canned) || canned[i].full == NULL)
		i = 6; /* 503 */
	*data = canned[i].full;
	*len = head ? canned[i].head_len : canned[i].full_len;
}
