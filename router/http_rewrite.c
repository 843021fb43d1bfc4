/*
 * HTTP/1.x checks and rewriting for the router (see http.h): a parsed head checked against the
 * contract (requests: version, method, target, Host, framing, Expect, Upgrade; responses:
 * version, status, framing, 101), then written again for the other side with the header policy
 * of hdr-t.h applied and the router's own fields added; and the router's canned responses.
 * Pure functions over the parsed head: no I/O, no clock.
 */
#include "router/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>

#include "common/util.h"

const char hm__router_continue[] = "HTTP/1.1 100 Continue\r\n\r\n";

/* ---- small helpers ---------------------------------------------------------------------- */

static bool eq_nocase(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (hm__router_lower(a[i]) != hm__router_lower(b[i]))
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

		if (hm__router_hdr_flags[h->id] & HM__HF_FRAMING)
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

		if (slash == NULL
			? !hm__router_is_token(tok, tn)
			: !hm__router_is_token(tok, (size_t)(slash - tok)) ||
			      !hm__router_is_token(slash + 1, tn - (size_t)(slash - tok) - 1))
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
		while (i < n && (is_digit(s[i]) ||
				 (hm__router_lower(s[i]) >= 'a' && hm__router_lower(s[i]) <= 'z') ||
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
		uint32_t a = hm__router_lower(u[4]) == 's' ? 8 : 7;

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
		const char *r = hm__router_reason(rs->status);

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
	const char *r = hm__router_reason(status);

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

	hm__router_hdr_init();
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
