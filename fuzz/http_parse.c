/*
 * libFuzzer target for router/http.c: drives the router's HTTP/1.x message layer the way
 * router/h1.c and router/upstream.c do (pipelined messages, a reset after each, the body in
 * dechunk or rechunk mode, response trailers collected) and aborts on anything the contract in
 * router/http.h forbids, not only on memory errors:
 *   - split invariance: the input parsed with all its bytes given at once and in pieces (split
 *     points from the input) gives the same transcript: every head (spans, checks, verdicts),
 *     every event, the status of an error, where each message ends and its body payload;
 *   - an accepted request head rewritten by hm__router_req_write() into exactly the bound the
 *     router allocates stays within it (a canary follows), and parses again with the same
 *     method, target, Host, request id and framing; the same for responses;
 *   - an accepted chunked request body re-chunked (as proxy.c relays it) decodes, under the
 *     strict decoder below, to the payload llhttp reported, carries no trailer the contract
 *     drops, and no execute call writes more than its input plus HM__RECHUNK_SLACK;
 *   - an absolute-form request is rewritten with its authority as the Host;
 *   - the trailer fields collected from a de-chunked response (into a buffer as small as the
 *     input says) are the same whatever the split, each a token name and a value without CR, LF
 *     or NUL.
 * Input: a flags byte (direction, tight limits, the response's context), a seed byte for the
 * split points, then the bytes as they come off the wire.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/http.h"

enum {
	F_RESPONSE = 1 << 0,   /* parse responses (else requests) */
	F_HEAD_REQ = 1 << 1,   /* responses: the request was HEAD */
	F_MINOR0 = 1 << 2,     /* responses: the client speaks HTTP/1.0 */
	F_KEEP_ALIVE = 1 << 3, /* responses: the client connection may stay open */
	F_COOKIE = 1 << 4,     /* responses: an affinity Set-Cookie is added */
	F_TIGHT = 1 << 5,      /* small limits, so that every limit is hit at every split */
};

enum { WHOLE, PIECES, RECHUNK };

#define MAX_MSGS 8
#define CANARY	 64
#define RCAP	 (1u << 16)

/* As long as the router makes them: the longest IPv6 text and a UUID. */
static const char peer[] = "2001:db8:ffff:ffff:ffff:ffff:255.255.255.255";
static const char uuid[] = "0f0e0d0c-0b0a-4908-8706-050403020100";
static const char cookie[] = "hermod-affinity=AAECAwQFBgcICQoLDA0ODxAREhM; Path=/; HttpOnly";

static struct hm__router_limits req_lim, resp_lim, tight_req, tight_resp, loose_req, loose_resp;
static char rbuf[RCAP];
static char tbuf[1024];

/* Names the property that broke, then aborts (libFuzzer keeps the input). */
static void violated(int line, const char *what)
{
	fprintf(stderr, "http_parse.c:%d: violated: %s\n", line, what);
	abort();
}

#define require(cond) ((cond) ? (void)0 : violated(__LINE__, #cond))

struct buf {
	uint8_t *p;
	size_t len, cap;
};

static void add(struct buf *b, const void *s, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		require(b->p != NULL);
	}
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void add_u64(struct buf *b, uint64_t v)
{
	add(b, &v, sizeof(v));
}

static void init_limits(void)
{
	hm__router_limits_request(&req_lim, 64 * 1024);
	hm__router_limits_response(&resp_lim, 64 * 1024);
	tight_req = req_lim;
	tight_req.line = 40;
	tight_req.name = 16;
	tight_req.value = 64;
	tight_req.count = 6;
	tight_req.head = 300;
	tight_resp = resp_lim;
	tight_resp.line = 40;
	tight_resp.name = 16;
	tight_resp.value = 64;
	tight_resp.count = 6;
	tight_resp.header_line = 70;
	tight_resp.set_cookie = 32;
	tight_resp.head = 300;
	/* For re-parsing rewritten heads: what the router adds may exceed the client's limits. */
	loose_req = req_lim;
	loose_req.line = loose_req.value = 1u << 24;
	loose_req.name = 65535;
	loose_req.count = 65535;
	loose_req.head = 1u << 30;
	loose_resp = resp_lim;
	loose_resp.line = loose_resp.value = loose_resp.header_line = 1u << 24;
	loose_resp.name = 65535;
	loose_resp.count = 65535;
	loose_resp.set_cookie = 0;
	loose_resp.head = 1u << 30;
}

static uint64_t next_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* The size of the next piece: mostly tiny, sometimes large. */
static uint32_t piece(uint64_t *s)
{
	uint64_t r = next_rand(s);

	switch (r & 7) {
	case 0:
	case 1:
	case 2:
		return 1;
	case 3:
	case 4:
		return 1 + (uint32_t)(r >> 8) % 4;
	case 5:
	case 6:
		return 1 + (uint32_t)(r >> 8) % 64;
	default:
		return 1 + (uint32_t)(r >> 8) % 4096;
	}
}

static size_t trimmed(const struct hm__router_msg *m, const struct hm__router_hdr *h)
{
	return hm__router_trim(m->base + h->value_off, h->value_len);
}

static bool span_eq(const char *a, size_t an, const char *b, size_t bn)
{
	return an == bn && memcmp(a, b, an) == 0;
}

/* The one header of this kind the router writes ends with what it added. */
static bool ends_with(const struct hm__router_msg *m, uint8_t id, const char *s, size_t n)
{
	const struct hm__router_hdr *h = NULL;
	size_t len;

	for (uint16_t i = 0; i < m->nhdr; i++) {
		if (m->hdr[i].id != id)
			continue;
		if (h != NULL)
			return false;
		h = &m->hdr[i];
	}
	if (h == NULL)
		return false;
	len = trimmed(m, h);
	return len >= n && memcmp(m->base + h->value_off + len - n, s, n) == 0;
}

/* Parses a whole head (a rewritten one) into m. */
static void reparse(struct hm__router_msg *m, llhttp_type_t type, char *s, size_t n, bool head)
{
	uint32_t used;

	hm__router_msg_init(m, type, type == HTTP_REQUEST ? &loose_req : &loose_resp);
	hm__router_msg_reset(m, s, 0);
	if (type == HTTP_RESPONSE)
		hm__router_msg_skip_body(m, head);
	require(hm__router_msg_execute(m, s, 0, (uint32_t)n, &used) == HM__EV_HEAD);
	require(used == n && m->head_end == n);
}

/* Writes into exactly the bound with a canary after it; returns a copy of the output. */
static char *canary_buf(size_t bound)
{
	char *out = malloc(bound + CANARY);

	require(out != NULL);
	memset(out + bound, 0xa5, CANARY);
	return out;
}

static char *canary_check(char *out, size_t bound, size_t n)
{
	char *copy;

	require(n > 0 && n <= bound);
	for (size_t i = 0; i < CANARY; i++)
		require((unsigned char)out[bound + i] == 0xa5);
	/* The re-parse gets its own exact-size copy, so ASan sees any read past the head. */
	copy = malloc(n);
	require(copy != NULL);
	memcpy(copy, out, n);
	free(out);
	return copy;
}

static void check_req_rewrite(const struct hm__router_msg *m, const struct hm__router_req *rq)
{
	struct hm__router_fwd f = {
	    .peer = peer,
	    .peer_len = sizeof(peer) - 1,
	    .port = 65535,
	    .start_ms = UINT64_MAX,
	    .request_id = uuid,
	    .request_id_len = sizeof(uuid) - 1,
	    .connect_ms = UINT64_MAX,
	    .route_ms = UINT64_MAX,
	};
	struct hm__router_msg m2;
	struct hm__router_req rq2;
	const struct hm__router_hdr *h, *h2;
	const char *why, *t = m->base + rq->target_off;
	size_t bound, n, tn = rq->target_len;
	char *out;
	int ids = 0;

	/* proxy.c: the client's X-Request-Id if valid, else a UUID. */
	if (rq->request_id >= 0) {
		h = &m->hdr[rq->request_id];
		f.request_id = m->base + h->value_off;
		f.request_id_len = trimmed(m, h);
	}
	bound = hm__router_req_write_bound(m) + f.peer_len + f.request_id_len;
	out = canary_buf(bound);
	n = hm__router_req_write(m, rq, &f, out, bound);
	out = canary_check(out, bound, n);

	reparse(&m2, HTTP_REQUEST, out, n, false);
	require(hm__router_req_check(&m2, &rq2, &why) == 0);
	require(rq2.method == rq->method && rq2.minor == 1);
	/* The origin form of the target: absolute form and fragment gone, "/" if empty. */
	if (tn == 0 || (t[0] != '/' && !(tn == 1 && t[0] == '*'))) {
		require(rq2.target_len == tn + 1 && out[rq2.target_off] == '/');
		require(memcmp(out + rq2.target_off + 1, t, tn) == 0);
	} else {
		require(span_eq(out + rq2.target_off, rq2.target_len, t, tn));
	}
	/* The Host the dyno gets: the absolute form's authority, else the client's Host. */
	h = &m->hdr[rq->host];
	h2 = &m2.hdr[rq2.host];
	require(rq2.authority_len == 0);
	if (rq->authority_len > 0)
		require(span_eq(out + h2->value_off, trimmed(&m2, h2), m->base + rq->authority_off,
				rq->authority_len));
	else
		require(span_eq(out + h2->value_off, trimmed(&m2, h2), m->base + h->value_off,
				trimmed(m, h)));
	require(rq2.key_len == rq->key_len && strcmp(rq2.key, rq->key) == 0);
	/* The framing the dyno sees is the one the router parsed. */
	require(rq2.chunked == rq->chunked && rq2.has_body == rq->has_body);
	require(rq2.content_length == rq->content_length);
	require(rq2.upgrade == rq->upgrade);
	for (uint16_t i = 0; i < m2.nhdr; i++) {
		switch (m2.hdr[i].id) {
		case HM__HDR_X_REQUEST_ID:
			ids++;
			break;
		case HM__HDR_KEEP_ALIVE:
		case HM__HDR_PROXY_CONNECTION:
		case HM__HDR_TE:
		case HM__HDR_PROXY_AUTHORIZATION:
		case HM__HDR_EXPECT:
			abort();
		default:
			break;
		}
	}
	require(ids == 1 && rq2.request_id >= 0);
	require(ends_with(&m2, HM__HDR_X_FORWARDED_FOR, peer, sizeof(peer) - 1));
	require(ends_with(&m2, HM__HDR_VIA, "1.1 hermod", 10));
	h2 = &m2.hdr[rq2.request_id];
	require(span_eq(out + h2->value_off, trimmed(&m2, h2), f.request_id, f.request_id_len));
	hm__router_msg_fini(&m2);
	free(out);
}

static void check_resp_rewrite(const struct hm__router_msg *m, const struct hm__router_resp *rs,
			       uint8_t flags)
{
	struct hm__router_resp_ctx ctx = {
	    .client_minor = (flags & F_MINOR0) ? 0 : 1,
	    .keep_alive = (flags & F_KEEP_ALIVE) != 0,
	    .head_request = (flags & F_HEAD_REQ) != 0,
	    .upgrade_requested = rs->status == 101,
	};
	struct hm__router_resp_plan plan;
	struct hm__router_msg m2;
	struct hm__router_resp rs2;
	const char *why;
	size_t bound, n;
	char *out;
	int cookies = 0;

	if (flags & F_COOKIE) {
		ctx.set_cookie = cookie;
		ctx.set_cookie_len = sizeof(cookie) - 1;
	}
	hm__router_resp_plan(m, rs, &ctx, &plan);
	bound = hm__router_resp_write_bound(m, &ctx);
	out = canary_buf(bound);
	n = hm__router_resp_write(m, rs, &ctx, &plan, out, bound);
	out = canary_check(out, bound, n);

	reparse(&m2, HTTP_RESPONSE, out, n, ctx.head_request);
	require(hm__router_resp_check(&m2, &rs2, &why) == 0);
	require(rs2.status == rs->status && m2.p.http_minor == 1);
	if (plan.body == HM__BODY_DECHUNK) {
		require(!rs2.chunked && !rs2.has_cl && plan.close);
	} else {
		require(rs2.chunked == rs->chunked && rs2.has_cl == rs->has_cl);
		require(!rs->has_cl || rs2.content_length == rs->content_length);
	}
	require(rs2.dyno_close == (plan.close && !plan.tunnel));
	require(rs2.upgrade == plan.tunnel);
	require(ends_with(&m2, HM__HDR_VIA, "1.1 hermod", 10));
	for (uint16_t i = 0; i < m2.nhdr; i++) {
		const struct hm__router_hdr *h = &m2.hdr[i];

		if (h->id == HM__HDR_SET_COOKIE &&
		    span_eq(out + h->value_off, trimmed(&m2, h), cookie, sizeof(cookie) - 1))
			cookies++;
	}
	require((flags & F_COOKIE) ? cookies >= 1 : true);
	hm__router_msg_fini(&m2);
	free(out);
}

/*
 * A strict chunked decoder: minimal lowercase hex sizes, no extensions, CRLF everywhere,
 * trailer lines "name:value". The whole of s must be one complete body.
 */
static bool unchunk(const uint8_t *s, size_t n, struct buf *out)
{
	size_t i = 0;

	for (;;) {
		uint64_t size = 0;
		size_t digits = 0;

		while (i < n && ((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
			if (digits == 16)
				return false;
			if (digits == 1 && size == 0)
				return false; /* a leading zero */
			size = size << 4 | (uint64_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
			digits++;
			i++;
		}
		if (digits == 0 || n - i < 2 || s[i] != '\r' || s[i + 1] != '\n')
			return false;
		i += 2;
		if (size == 0)
			break;
		if (n - i < size || n - i - size < 2)
			return false;
		add(out, s + i, size);
		i += size;
		if (s[i] != '\r' || s[i + 1] != '\n')
			return false;
		i += 2;
	}
	for (;;) {
		size_t name = 0;

		if (n - i < 2)
			return false;
		if (s[i] == '\r')
			return s[i + 1] == '\n' && i + 2 == n;
		while (i < n && s[i] != ':') {
			if (strchr("!#$%&'*+-.^_`|~", s[i]) == NULL &&
			    !((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			      (s[i] >= '0' && s[i] <= '9')))
				return false;
			name++;
			i++;
		}
		if (name == 0 || i == n)
			return false;
		/* No field that frames, routes or belongs to a connection survives in a trailer. */
		if (hm__router_hdr_flags[hm__router_hdr_classify((const char *)s + i - name,
								 name)] &
		    HM__HF_NOT_TRAILER)
			return false;
		i++;
		while (i < n && s[i] != '\r' && s[i] != '\n')
			i++;
		if (n - i < 2 || s[i] != '\r' || s[i + 1] != '\n')
			return false;
		i += 2;
	}
}

/* Everything a head parse decided, in the transcript. */
static void add_head(struct buf *t, const struct hm__router_msg *m, int check)
{
	add(t, "H", 1);
	add_u64(t, m->start);
	add_u64(t, m->head_end);
	add_u64(t, m->line_len);
	add_u64(t, (uint64_t)m->url_off << 32 | m->url_len);
	add_u64(t, (uint64_t)m->reason_off << 32 | m->reason_len);
	add_u64(t, m->nhdr);
	add_u64(t, m->state);
	add_u64(t, (uint64_t)m->p.method << 32 | m->p.status_code);
	add_u64(t, (uint64_t)m->p.http_major << 8 | m->p.http_minor);
	add_u64(t, m->cl_value);
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];

		add_u64(t, (uint64_t)h->name_off << 32 | h->name_len);
		add_u64(t, (uint64_t)h->value_off << 32 | h->value_len);
		add_u64(t, (uint64_t)h->id << 8 | h->drop);
	}
	add_u64(t, (uint64_t)(int64_t)check);
}

static void add_req(struct buf *t, const struct hm__router_req *rq)
{
	add_u64(t, (uint64_t)rq->keep_alive | (uint64_t)rq->expect_continue << 1 |
		       (uint64_t)rq->upgrade << 2 | (uint64_t)rq->chunked << 3 |
		       (uint64_t)rq->has_body << 4);
	add_u64(t, rq->content_length);
	add_u64(t, (uint64_t)(uint32_t)rq->host << 32 | (uint32_t)rq->request_id);
	add_u64(t, (uint64_t)rq->target_off << 32 | rq->target_len);
	add_u64(t, (uint64_t)rq->authority_off << 32 | rq->authority_len);
	add(t, rq->key, rq->key_len);
}

static void add_resp(struct buf *t, const struct hm__router_resp *rs)
{
	add_u64(t, (uint64_t)rs->chunked | (uint64_t)rs->has_cl << 1 |
		       (uint64_t)rs->dyno_close << 2 | (uint64_t)rs->upgrade << 3);
	add_u64(t, rs->content_length);
}

struct run {
	const uint8_t *data;
	uint32_t n;
	llhttp_type_t type;
	uint8_t flags;
	int mode;
	uint64_t seed;
	uint32_t rmax; /* rechunk: bytes per execute, as proxy.c passes rcap - slack */
};

/* A complete message: its end, its connection verdict and its payload. */
static void add_done(struct buf *t, const struct hm__router_msg *m, uint32_t end,
		     struct buf *payload, struct buf *rout, bool eof)
{
	add(t, eof ? "F" : "D", 1);
	add_u64(t, end);
	add_u64(t, m->keep_alive);
	add_u64(t, m->body_bytes);
	if (m->rechunk) {
		struct buf dec = {0};

		require(payload->len == 0);
		require(unchunk(rout->p, rout->len, &dec));
		add_u64(t, dec.len);
		add(t, dec.p, dec.len);
		free(dec.p);
	} else {
		require(payload->len == m->body_bytes);
		add_u64(t, payload->len);
		add(t, payload->p, payload->len);
	}
	if (m->tbuf != NULL) {
		struct hm__router_field f[64];
		size_t nf = hm__router_msg_trailers(m, f, 64);

		add_u64(t, nf);
		for (size_t i = 0; i < nf; i++) {
			require(f[i].name_len > 0 && hm__router_is_token(f[i].name, f[i].name_len));
			for (size_t k = 0; k < f[i].value_len; k++)
				require(f[i].value[k] != '\r' && f[i].value[k] != '\n' &&
					f[i].value[k] != '\0');
			add(t, f[i].name, f[i].name_len);
			add(t, ":", 1);
			add(t, f[i].value, f[i].value_len);
		}
	}
	payload->len = 0;
	rout->len = 0;
}

/* The head is complete: check it as the router would, choose the body mode. */
static void on_head(const struct run *r, struct hm__router_msg *m, struct buf *t)
{
	const char *why;
	int c;

	if (r->type == HTTP_REQUEST) {
		struct hm__router_req rq;

		c = hm__router_req_check(m, &rq, &why);
		add_head(t, m, c);
		if (c == 0) {
			add_req(t, &rq);
			if (r->mode == WHOLE)
				check_req_rewrite(m, &rq);
		}
		if (c == 0 && rq.chunked && m->state == HM__MSG_BODY && r->mode == RECHUNK) {
			m->rechunk = true;
			m->rbuf = rbuf;
			m->rcap = RCAP;
			return;
		}
	} else {
		struct hm__router_resp rs;

		c = hm__router_resp_check(m, &rs, &why);
		add_head(t, m, c);
		if (c == 0) {
			add_resp(t, &rs);
			if (r->mode == WHOLE)
				check_resp_rewrite(m, &rs, r->flags);
		}
		/* As the exchange does for a protocol that carries trailers apart (HTTP/2). */
		hm__router_msg_collect_trailers(m, tbuf, r->rmax * 16);
	}
	/* Every other body is compacted, so that its payload can be compared. */
	m->dechunk = true;
}

/* How many bytes have arrived, after avail had. */
static uint32_t arrive(const struct run *r, uint32_t avail, uint64_t *seed)
{
	uint32_t p = piece(seed);

	return r->mode == WHOLE || p >= r->n - avail ? r->n : avail + p;
}

static void drive(const struct run *r, struct buf *t)
{
	const struct hm__router_limits *lim;
	struct hm__router_msg m;
	struct buf payload = {0}, rout = {0};
	uint64_t seed = r->seed;
	uint32_t off = 0, avail = 0, n = r->n;
	char *buf = malloc(n > 0 ? n : 1);
	int nmsg = 0, ev;

	require(buf != NULL);
	memcpy(buf, r->data, n);
	if (r->type == HTTP_REQUEST)
		lim = (r->flags & F_TIGHT) ? &tight_req : &req_lim;
	else
		lim = (r->flags & F_TIGHT) ? &tight_resp : &resp_lim;
	hm__router_msg_init(&m, r->type, lim);
	hm__router_msg_reset(&m, buf, 0);
	hm__router_msg_skip_body(&m, r->type == HTTP_RESPONSE && (r->flags & F_HEAD_REQ));
	for (;;) {
		uint32_t len, used;

		if (off == avail) {
			if (avail == n)
				break;
			avail = arrive(r, avail, &seed);
		}
		len = avail - off;
		if (m.rechunk && len > r->rmax)
			len = r->rmax;
		ev = hm__router_msg_execute(&m, buf, off, len, &used);
		require(used <= len);
		if (m.rechunk) {
			require(m.rlen <= len + HM__RECHUNK_SLACK);
			add(&rout, rbuf, m.rlen);
		} else if (m.dechunk) {
			/* At an error, used is 0 whatever llhttp reported before it. */
			require(m.out_off == off && (ev == HM__EV_ERROR || m.out_len <= used));
			add(&payload, buf + off, m.out_len);
		}
		off += used;
		if (ev == HM__EV_MORE) {
			if (used < len) {
				/* A CR before the request line: it needs its LF. */
				require(m.state == HM__MSG_HEAD);
				if (avail == n)
					break;
				avail = arrive(r, avail, &seed);
			}
			continue;
		}
		if (ev == HM__EV_ERROR) {
			require(m.state == HM__MSG_ERROR && m.why != NULL);
			require(m.status >= 400 && m.status <= 599);
			add(t, "E", 1);
			add_u64(t, m.status);
			goto out;
		}
		if (ev == HM__EV_HEAD) {
			require(off == m.head_end && m.start < m.head_end);
			require(m.state == HM__MSG_BODY || m.state == HM__MSG_DONE);
			on_head(r, &m, t);
			continue;
		}
		require(ev == HM__EV_DONE && m.state == HM__MSG_DONE);
		add_done(t, &m, off, &payload, &rout, false);
		/* Past an upgrade the bytes are another protocol's. */
		if (m.p.upgrade || ++nmsg == MAX_MSGS)
			goto out;
		hm__router_msg_reset(&m, buf, off);
		hm__router_msg_skip_body(&m, r->type == HTTP_RESPONSE && (r->flags & F_HEAD_REQ));
	}
	/* The peer closed. */
	add(t, "M", 1);
	add_u64(t, m.state);
	add_u64(t, m.body_bytes);
	add_u64(t, hm__router_msg_needs_eof(&m));
	ev = hm__router_msg_finish(&m);
	if (ev == HM__EV_DONE) {
		add_done(t, &m, off, &payload, &rout, true);
	} else {
		require(ev == HM__EV_ERROR && m.state == HM__MSG_ERROR);
		add(t, "E", 1);
		add_u64(t, m.status);
	}
out:
	hm__router_msg_fini(&m);
	free(payload.p);
	free(rout.p);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct buf whole = {0}, pieces = {0}, rechunked = {0};
	struct run r;

	if (!ready) {
		init_limits();
		ready = true;
	}
	if (size < 2 || size > (1u << 20))
		return 0;
	r = (struct run){
	    .data = data + 2,
	    .n = (uint32_t)(size - 2),
	    .type = (data[0] & F_RESPONSE) ? HTTP_RESPONSE : HTTP_REQUEST,
	    .flags = data[0],
	    .mode = WHOLE,
	    .seed = data[1],
	    .rmax = 1 + data[1] % 64,
	};
	drive(&r, &whole);
	r.mode = PIECES;
	drive(&r, &pieces);
	require(whole.len == pieces.len && memcmp(whole.p, pieces.p, whole.len) == 0);
	if (r.type == HTTP_REQUEST) {
		r.mode = RECHUNK;
		r.seed = (uint64_t)data[1] << 8 | 0x5a;
		drive(&r, &rechunked);
		require(whole.len == rechunked.len && memcmp(whole.p, rechunked.p, whole.len) == 0);
	}
	free(whole.p);
	free(pieces.p);
	free(rechunked.p);
	return 0;
}
