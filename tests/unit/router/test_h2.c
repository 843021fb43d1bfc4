/*
 * Tests router/h2.c and h2_msg.c: the HTTP/2 engine behind a fake exchange that answers canned
 * dyno responses. Valid traffic comes from nghttp2's own client session; attacks and protocol
 * errors are hand-made frames (HPACK from nghttp2's deflater, or bytes written here). The
 * "transport" is a buffer: what the engine outputs is parsed into frames (and fed to the client
 * session when there is one), and a test decides how much of it counts as written. Time is
 * whatever the test passes as now. docs/h2.md lists what each group covers.
 */
#include <errno.h>
#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/h2.h"
#include "router/http.h"
#include "tests/unit/hm_check.h"

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n);
	if (p == NULL)
		abort();
	return p;
}

/* ---- the fake exchange ----------------------------------------------------------------------- */

struct fx {
	struct hm__router_h2_stream *s; /* NULL once released */
	int32_t id;
	int status;
	const char *why;
	char *head; /* the HTTP/1.1 head the engine wrote (msg->base up to head_end) */
	size_t head_len;
	char *body; /* request body bytes as peeked and consumed */
	size_t body_len;
	bool body_done;
	bool closed;
	int why_closed;
	uint32_t code;
};

#define FX_MAX 4096
static struct fx fxs[FX_MAX];
static int nfx;

static struct {
	bool respond;	  /* answer valid requests with the canned response at once */
	bool read_body;	  /* consume request bodies as they come */
	bool release;	  /* release streams when they close */
	bool error_bad;	  /* answer malformed requests with stream_error */
	bool continue100; /* send 100 Continue when the request expects it */
} mode;

/* The canned dyno response. */
static struct {
	char buf[8192];
	struct hm__router_msg m;
	struct hm__router_resp rs;
	struct hm__router_limits lim;
	const char *body;
	size_t body_len;
	int spans; /* the body goes as this many spans */
	const char *set_cookie;
	bool end; /* end the body at once */
} R;

static int released_spans, sent_spans;
static size_t released_bytes;

static void on_release(void *arg, const void *p, size_t n)
{
	(void)arg;
	(void)p;
	released_spans++;
	released_bytes += n;
}

static void set_response(const char *text, const char *body)
{
	uint32_t used;
	const char *why = NULL;

	hm__router_limits_response(&R.lim, 1 << 20);
	hm__router_msg_fini(&R.m);
	hm__router_msg_init(&R.m, HTTP_RESPONSE, &R.lim);
	snprintf(R.buf, sizeof(R.buf), "%s", text);
	hm__router_msg_reset(&R.m, R.buf, 0);
	ck_assert_int_eq(hm__router_msg_execute(&R.m, R.buf, 0, (uint32_t)strlen(R.buf), &used),
			 HM__EV_HEAD);
	ck_assert_int_eq(hm__router_resp_check(&R.m, &R.rs, &why), 0);
	R.body = body;
	R.body_len = body != NULL ? strlen(body) : 0;
	R.spans = 1;
	R.end = true;
}

static struct fx *fx_of(struct hm__router_h2_stream *s)
{
	return hm__router_h2_stream_data(s);
}

/* Responds on f with the canned response: 1 if complete, else 0 (body spans queued). */
static int respond_now(struct fx *f)
{
	struct hm__router_h2_resp_opts o = {
	    .set_cookie = R.set_cookie, .set_cookie_len = R.set_cookie ? strlen(R.set_cookie) : 0};
	int r = hm__router_h2_stream_respond(f->s, &R.m, &R.rs, &o);

	ck_assert_int_ge(r, 0);
	if (r == 1)
		return 1;
	for (int i = 0; i < R.spans && R.body_len > 0; i++) {
		size_t a = R.body_len * (size_t)i / (size_t)R.spans;
		size_t b = R.body_len * (size_t)(i + 1) / (size_t)R.spans;

		ck_assert_int_eq(hm__router_h2_stream_send(f->s, R.body + a, b - a, on_release, f),
				 0);
		sent_spans++;
	}
	if (R.end)
		ck_assert_int_eq(hm__router_h2_stream_end(f->s, NULL, 0), 0);
	return 0;
}

static void read_body(struct fx *f)
{
	for (;;) {
		struct iovec iov[8];
		int k = hm__router_h2_stream_body_peek(f->s, iov, 8);
		size_t total = 0;

		if (k == 0)
			break;
		for (int i = 0; i < k; i++) {
			f->body = xrealloc(f->body, f->body_len + iov[i].iov_len + 1);
			memcpy(f->body + f->body_len, iov[i].iov_base, iov[i].iov_len);
			f->body_len += iov[i].iov_len;
			total += iov[i].iov_len;
		}
		f->body[f->body_len] = '\0';
		hm__router_h2_stream_body_consume(f->s, total);
	}
	f->body_done = hm__router_h2_stream_body_done(f->s);
}

static void on_request(struct hm__router_h2_stream *s)
{
	const struct hm__router_msg *m = hm__router_h2_stream_msg(s);
	struct fx *f;

	ck_assert_int_lt(nfx, FX_MAX);
	f = &fxs[nfx++];
	*f = (struct fx){.s = s, .id = hm__router_h2_stream_id(s)};
	f->status = hm__router_h2_stream_status(s);
	f->why = hm__router_h2_stream_why(s);
	if (m->head_end > 0) {
		f->head_len = m->head_end;
		f->head = xmalloc(f->head_len + 1);
		memcpy(f->head, m->base, f->head_len);
		f->head[f->head_len] = '\0';
	}
	hm__router_h2_stream_set_data(s, f);
	if (f->status != 0) {
		if (mode.error_bad)
			ck_assert_int_eq(hm__router_h2_stream_error(s, f->status), 0);
		return;
	}
	if (mode.continue100 && hm__router_h2_stream_req(s)->expect_continue)
		ck_assert_int_eq(hm__router_h2_stream_continue(s), 0);
	if (mode.read_body)
		read_body(f);
	if (mode.respond)
		respond_now(f);
}

static void on_body(struct hm__router_h2_stream *s)
{
	if (mode.read_body)
		read_body(fx_of(s));
}

static void on_closed(struct hm__router_h2_stream *s, int why)
{
	struct fx *f = fx_of(s);

	ck_assert(!f->closed);
	f->closed = true;
	f->why_closed = why;
	f->code = hm__router_h2_stream_code(s);
	if (mode.release) {
		hm__router_h2_stream_release(s);
		f->s = NULL;
	}
}

static int wakeups;

static void on_wakeup(struct hm__router_h2_conn *c)
{
	(void)c;
	wakeups++;
}

static const struct hm__router_h2_ops ops = {
    .request = on_request,
    .body = on_body,
    .closed = on_closed,
    .wakeup = on_wakeup,
};

static struct hm__router_h2_ctx *ctx;
static struct hm__router_h2_config cfg;

static void setup(void)
{
	hm__router_h2_config_default(&cfg);
	mode.respond = mode.read_body = mode.release = mode.error_bad = true;
	mode.continue100 = false;
	set_response("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Dyno: yes\r\n\r\n", "hello");
	nfx = 0;
	released_spans = sent_spans = 0;
	released_bytes = 0;
	wakeups = 0;
}

/* Forgets the fake exchange's records (the streams are the engine's). */
static void fx_reset(void)
{
	for (int i = 0; i < nfx; i++) {
		free(fxs[i].head);
		free(fxs[i].body);
	}
	nfx = 0;
}

static void teardown(void)
{
	fx_reset();
	hm__router_msg_fini(&R.m);
	if (ctx != NULL)
		hm__router_h2_ctx_free(ctx);
	ctx = NULL;
}

static void make_ctx(void)
{
	ck_assert_int_eq(hm__router_h2_ctx_new(&ctx, &cfg, &ops), 0);
}

/* ---- the client side ------------------------------------------------------------------------- */

struct oframe {
	uint8_t type, flags;
	int32_t sid;
	uint32_t len;
	uint32_t code;	  /* RST_STREAM, GOAWAY */
	int32_t last_sid; /* GOAWAY */
	uint32_t incr;	  /* WINDOW_UPDATE */
	char *hdrs;	  /* HEADERS: "name: value\n" each, decoded */
	char status[4];	  /* HEADERS: :status */
	char debug[32];	  /* GOAWAY debug data */
};

/* What the client session received on a stream. */
struct cresp {
	char hdrs[8192];
	size_t hlen;
	char *body;
	size_t blen;
	bool closed;
	uint32_t code;
};

#define CRESP_MAX 4096

struct peer {
	struct hm__router_h2_conn *c;
	uint64_t now;
	int recv_rc;	    /* last hm__router_h2_conn_recv() result */
	bool hold;	    /* the transport takes nothing: the client does not read */
	size_t write_limit; /* at most this many bytes written per output call (0: all) */
	uint8_t *out;	    /* engine output not yet parsed into frames */
	size_t out_len;
	uint8_t *blk; /* header block being reassembled */
	size_t blk_len;
	struct oframe *fr;
	int nfr;
	nghttp2_hd_inflater *infl;
	nghttp2_hd_deflater *defl;
	nghttp2_session *cl;  /* the client session, or NULL for raw frames */
	struct cresp *cr;     /* client session only: [CRESP_MAX], by (stream id - 1) / 2 */
	uint32_t goaway_recv; /* client session: GOAWAY error code seen + 1 */
};

static void parse_out(struct peer *p);

/* Bytes recorded instead of fed (to build the mutation test's traffic). */
static uint8_t *rec;
static size_t rec_len;
static bool recording;

static void feed(struct peer *p, const void *d, size_t n)
{
	if (recording) {
		rec = xrealloc(rec, rec_len + n);
		memcpy(rec + rec_len, d, n);
		rec_len += n;
		return;
	}
	p->recv_rc = hm__router_h2_conn_recv(p->c, d, n, p->now);
}

/* Takes the engine's output the way a transport would; returns the bytes "written". */
static size_t pump(struct peer *p)
{
	size_t total = 0;

	for (;;) {
		struct iovec iov[64];
		int k = hm__router_h2_conn_output(p->c, iov, 64, p->now);
		size_t n = 0;

		if (k == 0 || p->hold)
			break;
		for (int i = 0; i < k; i++) {
			size_t take = iov[i].iov_len;

			if (p->write_limit != 0 && n + take > p->write_limit)
				take = p->write_limit - n;
			p->out = xrealloc(p->out, p->out_len + take + 1);
			memcpy(p->out + p->out_len, iov[i].iov_base, take);
			p->out_len += take;
			n += take;
			if (take < iov[i].iov_len)
				break;
		}
		hm__router_h2_conn_sent(p->c, n, p->now);
		total += n;
	}
	parse_out(p);
	return total;
}

static uint32_t u32(const uint8_t *b)
{
	return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static char *inflate_block(struct peer *p, const uint8_t *b, size_t n, char status[4])
{
	char *txt = xmalloc(1);
	size_t tl = 0;

	txt[0] = '\0';
	for (;;) {
		nghttp2_nv nv;
		int fl = 0;
		ssize_t r = nghttp2_hd_inflate_hd2(p->infl, &nv, &fl, b, n, 1);

		ck_assert_int_ge(r, 0);
		b += r;
		n -= (size_t)r;
		if (fl & NGHTTP2_HD_INFLATE_EMIT) {
			if (nv.namelen == 7 && memcmp(nv.name, ":status", 7) == 0)
				snprintf(status, 4, "%.*s", (int)nv.valuelen, nv.value);
			txt = xrealloc(txt, tl + nv.namelen + nv.valuelen + 4);
			tl += (size_t)sprintf(txt + tl, "%.*s: %.*s\n", (int)nv.namelen, nv.name,
					      (int)nv.valuelen, nv.value);
		}
		if (fl & NGHTTP2_HD_INFLATE_FINAL) {
			nghttp2_hd_inflate_end_headers(p->infl);
			break;
		}
		if (n == 0 && !(fl & NGHTTP2_HD_INFLATE_EMIT))
			break;
	}
	return txt;
}

static void parse_out(struct peer *p)
{
	size_t off = 0;

	while (p->out_len - off >= 9) {
		const uint8_t *h = p->out + off;
		uint32_t len = (uint32_t)h[0] << 16 | (uint32_t)h[1] << 8 | h[2];
		struct oframe f = {.type = h[3], .flags = h[4], .len = len};

		if (p->out_len - off < 9 + len)
			break;
		f.sid = (int32_t)(u32(h + 5) & 0x7fffffff);
		switch (f.type) {
		case NGHTTP2_HEADERS:
		case NGHTTP2_CONTINUATION:
			p->blk = xrealloc(p->blk, p->blk_len + len);
			memcpy(p->blk + p->blk_len, h + 9, len);
			p->blk_len += len;
			if (f.flags & NGHTTP2_FLAG_END_HEADERS) {
				f.hdrs = inflate_block(p, p->blk, p->blk_len, f.status);
				p->blk_len = 0;
			}
			break;
		case NGHTTP2_RST_STREAM:
			f.code = u32(h + 9);
			break;
		case NGHTTP2_GOAWAY:
			f.last_sid = (int32_t)(u32(h + 9) & 0x7fffffff);
			f.code = u32(h + 13);
			snprintf(f.debug, sizeof(f.debug), "%.*s", (int)(len - 8), h + 17);
			break;
		case NGHTTP2_WINDOW_UPDATE:
			f.incr = u32(h + 9) & 0x7fffffff;
			break;
		default:
			break;
		}
		p->fr = xrealloc(p->fr, sizeof(*p->fr) * (size_t)(p->nfr + 1));
		p->fr[p->nfr++] = f;
		off += 9 + len;
	}
	if (p->cl != NULL && off > 0)
		ck_assert_int_eq(nghttp2_session_mem_recv(p->cl, p->out, off), (ssize_t)off);
	if (off > 0) {
		memmove(p->out, p->out + off, p->out_len - off);
		p->out_len -= off;
	}
}

/* The error code of the last GOAWAY the engine sent, or -1. */
static int64_t goaway(const struct peer *p)
{
	for (int i = p->nfr - 1; i >= 0; i--)
		if (p->fr[i].type == NGHTTP2_GOAWAY)
			return p->fr[i].code;
	return -1;
}

static const struct oframe *last_goaway(const struct peer *p)
{
	for (int i = p->nfr - 1; i >= 0; i--)
		if (p->fr[i].type == NGHTTP2_GOAWAY)
			return &p->fr[i];
	return NULL;
}

static int count_goaways(const struct peer *p)
{
	int n = 0;

	for (int i = 0; i < p->nfr; i++)
		n += p->fr[i].type == NGHTTP2_GOAWAY;
	return n;
}

/* The code of the engine's RST_STREAM for sid, or -1. */
static int64_t rst(const struct peer *p, int32_t sid)
{
	for (int i = p->nfr - 1; i >= 0; i--)
		if (p->fr[i].type == NGHTTP2_RST_STREAM && p->fr[i].sid == sid)
			return p->fr[i].code;
	return -1;
}

static const struct oframe *headers_of(const struct peer *p, int32_t sid, int nth)
{
	for (int i = 0; i < p->nfr; i++)
		if (p->fr[i].type == NGHTTP2_HEADERS && p->fr[i].sid == sid &&
		    p->fr[i].hdrs != NULL && nth-- == 0)
			return &p->fr[i];
	return NULL;
}

static size_t data_bytes(const struct peer *p, int32_t sid)
{
	size_t n = 0;

	for (int i = 0; i < p->nfr; i++)
		if (p->fr[i].type == NGHTTP2_DATA && p->fr[i].sid == sid)
			n += p->fr[i].len;
	return n;
}

static uint32_t window_updates(const struct peer *p, int32_t sid)
{
	uint32_t n = 0;

	for (int i = 0; i < p->nfr; i++)
		if (p->fr[i].type == NGHTTP2_WINDOW_UPDATE && p->fr[i].sid == sid)
			n += p->fr[i].incr;
	return n;
}

/* ---- client session -------------------------------------------------------------------------- */

static struct cresp *cresp_of(struct peer *p, int32_t sid)
{
	ck_assert_int_gt(sid, 0);
	ck_assert_int_lt((sid - 1) / 2, CRESP_MAX);
	return &p->cr[(sid - 1) / 2];
}

static int cl_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
			size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	struct cresp *r = cresp_of(ud, f->hd.stream_id);

	(void)s;
	(void)flags;
	if (r->hlen + nlen + vlen + 4 < sizeof(r->hdrs))
		r->hlen += (size_t)sprintf(r->hdrs + r->hlen, "%.*s: %.*s\n", (int)nlen, name,
					   (int)vlen, value);
	return 0;
}

static int cl_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
	struct peer *p = ud;

	(void)s;
	if (f->hd.type == NGHTTP2_GOAWAY)
		p->goaway_recv = f->goaway.error_code + 1;
	return 0;
}

static int cl_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t n,
		      void *ud)
{
	struct cresp *r = cresp_of(ud, sid);

	(void)s;
	(void)flags;
	r->body = xrealloc(r->body, r->blen + n + 1);
	memcpy(r->body + r->blen, d, n);
	r->blen += n;
	r->body[r->blen] = '\0';
	return 0;
}

static int cl_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
	struct cresp *r = cresp_of(ud, sid);

	(void)s;
	r->closed = true;
	r->code = code;
	return 0;
}

static struct peer *peer_new(bool client)
{
	struct peer *p = xmalloc(sizeof(*p));

	memset(p, 0, sizeof(*p));
	if (ctx == NULL)
		make_ctx();
	ck_assert_int_eq(hm__router_h2_conn_new(ctx, p, 0, &p->c), 0);
	ck_assert_int_eq(nghttp2_hd_inflate_new(&p->infl), 0);
	ck_assert_int_eq(nghttp2_hd_deflate_new(&p->defl, 4096), 0);
	if (client) {
		nghttp2_session_callbacks *cb;

		p->cr = calloc(CRESP_MAX, sizeof(*p->cr));
		ck_assert_ptr_nonnull(p->cr);
		nghttp2_session_callbacks_new(&cb);
		nghttp2_session_callbacks_set_on_header_callback(cb, cl_on_header);
		nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cl_on_frame);
		nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cl_on_data);
		nghttp2_session_callbacks_set_on_stream_close_callback(cb, cl_on_close);
		ck_assert_int_eq(nghttp2_session_client_new(&p->cl, cb, p), 0);
		nghttp2_session_callbacks_del(cb);
		ck_assert_int_eq(nghttp2_submit_settings(p->cl, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	}
	return p;
}

/* Frees the peer and its connection (unless the test freed that already: p->c NULL). */
static void peer_free(struct peer *p)
{
	if (p->c != NULL)
		hm__router_h2_conn_free(p->c);
	for (int i = 0; i < p->nfr; i++)
		free(p->fr[i].hdrs);
	free(p->fr);
	free(p->out);
	free(p->blk);
	for (int i = 0; p->cr != NULL && i < CRESP_MAX; i++)
		free(p->cr[i].body);
	free(p->cr);
	nghttp2_hd_inflate_del(p->infl);
	nghttp2_hd_deflate_del(p->defl);
	if (p->cl != NULL)
		nghttp2_session_del(p->cl);
	free(p);
}

/* Client session and engine exchange bytes until neither has anything to say. */
static void run(struct peer *p)
{
	for (int round = 0; round < 100000; round++) {
		bool moved = false;
		const uint8_t *d;
		ssize_t n;

		while (p->recv_rc == 0 && (n = nghttp2_session_mem_send(p->cl, &d)) > 0) {
			feed(p, d, (size_t)n);
			moved = true;
		}
		if (pump(p) > 0)
			moved = true;
		if (!moved)
			break;
	}
}

struct src {
	const char *p;
	size_t n, off;
};

static ssize_t src_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
			nghttp2_data_source *source, void *ud)
{
	struct src *b = source->ptr;
	size_t k = b->n - b->off < len ? b->n - b->off : len;

	(void)s;
	(void)sid;
	(void)ud;
	memcpy(buf, b->p + b->off, k);
	b->off += k;
	if (b->off == b->n)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)k;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE     \
	}

/* A request from the client session; extra is NULL or name/value pairs ending with NULL. */
static int32_t request(struct peer *p, const char *method, const char *path, const char **extra,
		       struct src *body)
{
	nghttp2_nv nv[64] = {
	    NV(":method", method),
	    NV(":scheme", "https"),
	    NV(":authority", "a.example.com"),
	    NV(":path", path),
	};
	size_t n = 4;
	nghttp2_data_provider prd = {.source = {.ptr = body}, .read_callback = src_read};
	int32_t sid;

	for (int i = 0; extra != NULL && extra[i] != NULL; i += 2)
		nv[n++] =
		    (nghttp2_nv){(uint8_t *)(uintptr_t)extra[i], (uint8_t *)(uintptr_t)extra[i + 1],
				 strlen(extra[i]), strlen(extra[i + 1]), NGHTTP2_NV_FLAG_NONE};
	sid = nghttp2_submit_request(p->cl, NULL, nv, n, body != NULL ? &prd : NULL, NULL);
	ck_assert_int_gt(sid, 0);
	return sid;
}

/* ---- raw frames ------------------------------------------------------------------------------ */

static void raw_frame(struct peer *p, uint8_t type, uint8_t flags, int32_t sid, const void *pl,
		      size_t len)
{
	uint8_t *b = xmalloc(9 + len);

	b[0] = (uint8_t)(len >> 16);
	b[1] = (uint8_t)(len >> 8);
	b[2] = (uint8_t)len;
	b[3] = type;
	b[4] = flags;
	b[5] = (uint8_t)((uint32_t)sid >> 24);
	b[6] = (uint8_t)(sid >> 16);
	b[7] = (uint8_t)(sid >> 8);
	b[8] = (uint8_t)sid;
	if (len > 0)
		memcpy(b + 9, pl, len);
	feed(p, b, 9 + len);
	free(b);
}

/* Preface and an empty SETTINGS; with ack, also the acknowledgement of the engine's. */
static void raw_start(struct peer *p, bool ack)
{
	feed(p, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
	raw_frame(p, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
	if (ack)
		raw_frame(p, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
	pump(p);
}

/* HPACK-encodes name/value pairs (NULL-terminated) with the peer's deflater. */
static size_t hpack(struct peer *p, const char **nvs, uint8_t *out, size_t cap)
{
	nghttp2_nv nv[2048];
	size_t n = 0;
	ssize_t r;

	for (int i = 0; nvs[i] != NULL; i += 2)
		nv[n++] =
		    (nghttp2_nv){(uint8_t *)(uintptr_t)nvs[i], (uint8_t *)(uintptr_t)nvs[i + 1],
				 strlen(nvs[i]), strlen(nvs[i + 1]), NGHTTP2_NV_FLAG_NONE};
	r = nghttp2_hd_deflate_hd(p->defl, out, cap, nv, n);
	ck_assert_int_ge(r, 0);
	return (size_t)r;
}

static const char *post_nv[] = {":method", "POST",	 ":scheme",	  "http", ":path",
				"/",	   ":authority", "a.example.com", NULL};
static const char *get_nv[] = {":method", "GET",	":scheme",	 "https", ":path",
			       "/",	  ":authority", "a.example.com", NULL};

/* A request HEADERS frame from name/value pairs; flags add to END_HEADERS. */
static void raw_req(struct peer *p, int32_t sid, uint8_t flags, const char **nvs)
{
	static uint8_t blk[1 << 16];
	size_t n = hpack(p, nvs, blk, sizeof(blk));

	raw_frame(p, NGHTTP2_HEADERS, (uint8_t)(NGHTTP2_FLAG_END_HEADERS | flags), sid, blk, n);
}

/* The same with literals only, leaving the dynamic tables alone (for tests that wrote HPACK of
 * their own, which the peer's deflater does not know about). */
static void raw_req_plain(struct peer *p, int32_t sid, uint8_t flags, const char **nvs)
{
	uint8_t blk[4096];
	size_t k = 0;

	for (int i = 0; nvs[i] != NULL; i += 2) {
		size_t nl = strlen(nvs[i]), vl = strlen(nvs[i + 1]);

		ck_assert_uint_lt(k + nl + vl + 3, sizeof(blk));
		blk[k++] = 0x00;
		blk[k++] = (uint8_t)nl;
		memcpy(blk + k, nvs[i], nl);
		k += nl;
		blk[k++] = (uint8_t)vl;
		memcpy(blk + k, nvs[i + 1], vl);
		k += vl;
	}
	raw_frame(p, NGHTTP2_HEADERS, (uint8_t)(NGHTTP2_FLAG_END_HEADERS | flags), sid, blk, k);
}

static void raw_rst(struct peer *p, int32_t sid, uint32_t code)
{
	uint8_t b[4] = {(uint8_t)(code >> 24), (uint8_t)(code >> 16), (uint8_t)(code >> 8),
			(uint8_t)code};

	raw_frame(p, NGHTTP2_RST_STREAM, 0, sid, b, 4);
}

static void raw_window_update(struct peer *p, int32_t sid, uint32_t incr)
{
	uint8_t b[4] = {(uint8_t)(incr >> 24), (uint8_t)(incr >> 16), (uint8_t)(incr >> 8),
			(uint8_t)incr};

	raw_frame(p, NGHTTP2_WINDOW_UPDATE, 0, sid, b, 4);
}

static bool has(const char *hay, const char *needle)
{
	return hay != NULL && strstr(hay, needle) != NULL;
}

/* ==== requests: HTTP/2 in, HTTP/1.1 out
 * =========================================================== */

START_TEST(test_get_as_http1)
{
	struct peer *p = peer_new(true);
	const char *extra[] = {"user-agent", "t/1", "accept", "*/*", NULL};
	int32_t sid;
	struct cresp *r;

	sid = request(p, "GET", "/x?y=1", extra, NULL);
	run(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_int_eq(fxs[0].status, 0);
	ck_assert_str_eq(fxs[0].head, "GET /x?y=1 HTTP/1.1\r\nHost: a.example.com\r\n"
				      "user-agent: t/1\r\naccept: */*\r\n\r\n");
	r = cresp_of(p, sid);
	ck_assert(r->closed);
	ck_assert_uint_eq(r->code, 0);
	ck_assert_str_eq(r->body, "hello");
	ck_assert(has(r->hdrs, ":status: 200\n"));
	ck_assert(has(r->hdrs, "content-length: 5\n"));
	ck_assert(has(r->hdrs, "x-dyno: yes\n"));
	ck_assert(has(r->hdrs, "via: 1.1 hermod\n"));
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_DONE);
	ck_assert_int_eq(released_spans, 1);
	ck_assert_uint_eq(released_bytes, 5);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->streams, 1);
	peer_free(p);
}
END_TEST

/* The exchange sees what router/http.c made of the head: the routing key and the request. */
static struct hm__router_req last_rq;
static char last_key[300];

static void on_request_keep_rq(struct hm__router_h2_stream *s)
{
	last_rq = *hm__router_h2_stream_req(s);
	snprintf(last_key, sizeof(last_key), "%s", last_rq.key);
	on_request(s);
}

START_TEST(test_cookies_joined_and_checked)
{
	struct hm__router_h2_ops o = ops;
	struct peer *p;
	const char *extra[] = {"cookie",
			       "a=1",
			       "x-a",
			       "1",
			       "cookie",
			       "b=2",
			       "cookie",
			       "c=3",
			       "x-request-id",
			       "abcdefghijklmnopqrstuvwxyz",
			       NULL};

	o.request = on_request_keep_rq;
	ck_assert_int_eq(hm__router_h2_ctx_new(&ctx, &cfg, &o), 0);
	p = peer_new(true);
	request(p, "GET", "/", extra, NULL);
	run(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_str_eq(fxs[0].head, "GET / HTTP/1.1\r\nHost: a.example.com\r\nx-a: 1\r\n"
				      "x-request-id: abcdefghijklmnopqrstuvwxyz\r\n"
				      "cookie: a=1; b=2; c=3\r\n\r\n");
	ck_assert_str_eq(last_key, "a.example.com");
	ck_assert_int_ge(last_rq.request_id, 0);
	ck_assert(!last_rq.has_body);
	peer_free(p);
}
END_TEST

START_TEST(test_post_with_length)
{
	struct peer *p = peer_new(true);
	const char *extra[] = {"content-length", "11", NULL};
	struct src body = {"hello world", 11, 0};

	request(p, "POST", "/up", extra, &body);
	run(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_str_eq(fxs[0].head, "POST /up HTTP/1.1\r\nHost: a.example.com\r\n"
				      "content-length: 11\r\n\r\n");
	ck_assert_str_eq(fxs[0].body, "hello world");
	ck_assert(fxs[0].body_done);
	peer_free(p);
}
END_TEST

START_TEST(test_post_chunked_with_trailers)
{
	struct peer *p = peer_new(false);
	const char *post[] = {":method",    "POST",	     ":scheme", "http",	    ":path", "/up",
			      ":authority", "a.example.com", "te",	"trailers", NULL};
	const char *trl[] = {"x-sum", "42", "trailer", "x-sum", "x-more", "yes", NULL};
	uint8_t blk[256];
	size_t n;

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, 0, post);
	ck_assert_int_eq(nfx, 1);
	ck_assert_str_eq(fxs[0].head, "POST /up HTTP/1.1\r\nHost: a.example.com\r\nte: trailers\r\n"
				      "transfer-encoding: chunked\r\n\r\n");
	raw_frame(p, NGHTTP2_DATA, 0, 1, "abc", 3);
	raw_frame(p, NGHTTP2_DATA, 0, 1, "defghijklmnopqrst", 17);
	n = hpack(p, trl, blk, sizeof(blk));
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, blk,
		  n);
	ck_assert_str_eq(fxs[0].body, "3\r\nabc\r\n11\r\ndefghijklmnopqrst\r\n"
				      "0\r\nx-sum: 42\r\nx-more: yes\r\n\r\n");
	ck_assert(fxs[0].body_done);
	peer_free(p);
}
END_TEST

/* With the exchange reading late, the body comes as one chunk and the last chunk with it. */
START_TEST(test_chunked_peek_consume_in_pieces)
{
	struct peer *p = peer_new(false);
	struct hm__router_h2_stream *s;
	struct iovec iov[8];
	char got[256];
	size_t gl = 0;
	int k;

	mode.respond = mode.read_body = false;
	raw_start(p, true);
	raw_req(p, 1, 0, post_nv);
	raw_frame(p, NGHTTP2_DATA, 0, 1, "0123456789", 10);
	raw_frame(p, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "abcdef", 6);
	s = fxs[0].s;
	/* One byte at a time: the framing survives any split. */
	for (;;) {
		k = hm__router_h2_stream_body_peek(s, iov, 8);
		if (k == 0)
			break;
		ck_assert_int_le(k, 4);
		got[gl++] = ((char *)iov[0].iov_base)[0];
		hm__router_h2_stream_body_consume(s, 1);
	}
	got[gl] = '\0';
	ck_assert_str_eq(got, "10\r\n0123456789abcdef\r\n0\r\n\r\n");
	ck_assert(hm__router_h2_stream_body_done(s));
	peer_free(p);
}
END_TEST

START_TEST(test_http2_only_400s)
{
	struct peer *p = peer_new(false);
	const char *connect[] = {":method", "CONNECT", ":authority", "a.example.com:443", NULL};
	const char *scheme[] = {":method", "GET",	 ":scheme",	  "ftp", ":path",
				"/",	   ":authority", "a.example.com", NULL};
	const char *host[] = {":method", "GET",	       ":scheme",	"http", ":path",
			      "/",	 ":authority", "a.example.com", "host", "b.example.com",
			      NULL};
	const char *same_host[] = {
	    ":method",	  "GET",	   ":scheme", "http",	       ":path", "/",
	    ":authority", "a.example.com", "host",    "A.example.com", NULL};
	const char *cr[] = {":method",	  "GET",	   ":scheme", "http", ":path", "/",
			    ":authority", "a.example.com", "x-bad",   "a\rb", NULL};
	const char *space[] = {":method",    "GET",	      ":scheme", "http", ":path", "/",
			       ":authority", "a.example.com", "x bad",	 "v",	 NULL};
	const struct oframe *h;

	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, connect);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, scheme);
	raw_req(p, 5, NGHTTP2_FLAG_END_STREAM, host);
	raw_req(p, 7, NGHTTP2_FLAG_END_STREAM, same_host);
	raw_req(p, 9, NGHTTP2_FLAG_END_STREAM, cr);
	raw_req(p, 11, NGHTTP2_FLAG_END_STREAM, space);
	pump(p);
	ck_assert_int_eq(nfx, 6);
	ck_assert_int_eq(fxs[0].status, 400);
	ck_assert_str_eq(fxs[0].why, "CONNECT");
	ck_assert_int_eq(fxs[1].status, 400);
	ck_assert_str_eq(fxs[1].why, "unsupported :scheme");
	ck_assert_int_eq(fxs[2].status, 400);
	ck_assert_str_eq(fxs[2].why, "host differs from :authority");
	ck_assert_int_eq(fxs[3].status, 0);
	ck_assert_str_eq(fxs[3].head, "GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n");
	ck_assert_int_eq(fxs[4].status, 400);
	ck_assert_int_eq(fxs[5].status, 400);
	ck_assert_str_eq(fxs[5].why, "invalid header field");
	/* Each is answered on its stream; the connection lives on. */
	h = headers_of(p, 1, 0);
	ck_assert_ptr_nonnull(h);
	ck_assert_str_eq(h->status, "400");
	ck_assert(has(h->hdrs, "content-type: text/plain; charset=utf-8\n"));
	ck_assert(has(h->hdrs, "content-length: 12\n"));
	ck_assert(has(h->hdrs, "via: 1.1 hermod\n"));
	ck_assert_uint_eq(data_bytes(p, 1), 12);
	ck_assert_str_eq(headers_of(p, 9, 0)->status, "400");
	ck_assert_str_eq(headers_of(p, 7, 0)->status, "200");
	ck_assert_int_eq(goaway(p), -1);
	ck_assert_int_eq(hm__router_h2_conn_done(p->c), false);
	peer_free(p);
}
END_TEST

START_TEST(test_http1_limits_apply)
{
	struct peer *p = peer_new(false);
	static char longpath[9000], longname[1002], longval[8194];
	const char *path[] = {":method", "GET",	       ":scheme",	"http", ":path",
			      longpath,	 ":authority", "a.example.com", NULL};
	const char *name[] = {":method",    "GET",	     ":scheme", "http", ":path", "/",
			      ":authority", "a.example.com", longname,	"v",	NULL};
	const char *value[] = {":method",    "GET",	      ":scheme", "http",  ":path", "/",
			       ":authority", "a.example.com", "x-v",	 longval, NULL};
	const char *expect[] = {":method",    "POST",	       ":scheme", "http",  ":path", "/",
				":authority", "a.example.com", "expect",  "later", NULL};
	const char *method[] = {":method", "BREW",	 ":scheme",	  "http", ":path",
				"/",	   ":authority", "a.example.com", NULL};
	const char *badhost[] = {":method", "GET",	  ":scheme",	     "http", ":path",
				 "/",	    ":authority", "a!b.example.com", NULL};
	static const char *many[2 * 1010 + 9];
	int k = 0;

	longpath[0] = '/';
	memset(longpath + 1, 'a', 8200 - 1);
	memset(longname, 'n', 1001);
	memset(longval, 'v', 8193);
	for (int i = 0; i < 8; i++)
		many[k++] = get_nv[i];
	for (int i = 0; i < 1001; i++) {
		many[k++] = "x-f";
		many[k++] = "1";
	}
	many[k] = NULL;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, path);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, name);
	raw_req(p, 5, NGHTTP2_FLAG_END_STREAM, value);
	raw_req(p, 7, NGHTTP2_FLAG_END_STREAM, many);
	raw_req(p, 9, 0, expect);
	raw_req(p, 11, NGHTTP2_FLAG_END_STREAM, method);
	raw_req(p, 13, NGHTTP2_FLAG_END_STREAM, badhost);
	pump(p);
	ck_assert_int_eq(nfx, 7);
	ck_assert_int_eq(fxs[0].status, 414);
	ck_assert_int_eq(fxs[1].status, 400);
	ck_assert_str_eq(fxs[1].why, "header name too long");
	ck_assert_int_eq(fxs[2].status, 400);
	ck_assert_str_eq(fxs[2].why, "header value too long");
	ck_assert_int_eq(fxs[3].status, 400);
	ck_assert_str_eq(fxs[3].why, "too many header lines");
	ck_assert_int_eq(fxs[4].status, 417);
	ck_assert_int_eq(fxs[5].status, 400);
	ck_assert_int_eq(fxs[6].status, 400);
	ck_assert_str_eq(fxs[6].why, "invalid Host");
	ck_assert_str_eq(headers_of(p, 1, 0)->status, "414");
	ck_assert_str_eq(headers_of(p, 9, 0)->status, "417");
	/* The body of the refused POST is not waited for: RST_STREAM(NO_ERROR) after the answer. */
	ck_assert_int_eq(rst(p, 9), NGHTTP2_NO_ERROR);
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

START_TEST(test_protocol_errors_reset)
{
	struct peer *p = peer_new(false);
	const char *conn[] = {":method",    "GET",	     ":scheme",	   "http",  ":path", "/",
			      ":authority", "a.example.com", "connection", "close", NULL};
	const char *upper[] = {":method",    "GET",	      ":scheme", "http", ":path", "/",
			       ":authority", "a.example.com", "X-Up",	 "1",	 NULL};
	const char *nopath[] = {":method",    "GET",	       ":scheme", "http",
				":authority", "a.example.com", NULL};
	const char *te[] = {":method",	  "GET",	   ":scheme", "http", ":path", "/",
			    ":authority", "a.example.com", "te",      "gzip", NULL};
	const char *late[] = {":method", "GET", ":scheme",    "http",	       "x-a", "1",
			      ":path",	 "/",	":authority", "a.example.com", NULL};
	/* A regular field first: nothing to build a request line from (found by fuzzing). */
	const char *first[] = {"x-a",	"1", ":method",	   "GET",	    ":scheme", "http",
			       ":path", "/", ":authority", "a.example.com", NULL};

	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, conn);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, upper);
	raw_req(p, 5, NGHTTP2_FLAG_END_STREAM, nopath);
	raw_req(p, 7, NGHTTP2_FLAG_END_STREAM, te);
	raw_req(p, 9, NGHTTP2_FLAG_END_STREAM, late);
	raw_req(p, 11, NGHTTP2_FLAG_END_STREAM, first);
	pump(p);
	ck_assert_int_eq(nfx, 0);
	for (int32_t sid = 1; sid <= 11; sid += 2)
		ck_assert_int_eq(rst(p, sid), NGHTTP2_PROTOCOL_ERROR);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->stream_errors, 6);
	ck_assert_uint_ge(hm__router_h2_ctx_stats(ctx)->glitches, 6);
	/* The connection still serves. */
	raw_req(p, 13, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_str_eq(headers_of(p, 13, 0)->status, "200");
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

/* ==== responses =============================================================================== */

START_TEST(test_response_fields)
{
	struct peer *p = peer_new(true);
	struct cresp *r;
	int32_t sid;

	set_response(
	    "HTTP/1.1 201 Made\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
	    "Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nProxy-Connection: x\r\n"
	    "Transfer-Encoding: chunked\r\nVia: 1.0 front\r\n"
	    "Set-Cookie: a=1\r\nSet-Cookie: b=2, c=3\r\nX-Trim: v  \r\nX-MiXed: Ab\r\n\r\n",
	    "chunky");
	R.set_cookie = "hermod-session-affinity=x";
	sid = request(p, "GET", "/", NULL, NULL);
	run(p);
	r = cresp_of(p, sid);
	/* In the dyno's order, hop-by-hop and framing fields gone, names lowercased. */
	ck_assert_str_eq(r->hdrs, ":status: 201\nvia: 1.0 front\nset-cookie: a=1\n"
				  "set-cookie: b=2, c=3\nx-trim: v\nx-mixed: Ab\nvia: 1.1 hermod\n"
				  "set-cookie: hermod-session-affinity=x\n");
	ck_assert(!has(r->hdrs, "connection"));
	ck_assert(!has(r->hdrs, "x-hop"));
	ck_assert(!has(r->hdrs, "keep-alive"));
	ck_assert(!has(r->hdrs, "upgrade"));
	ck_assert(!has(r->hdrs, "transfer-encoding"));
	ck_assert(!has(r->hdrs, "content-length"));
	ck_assert(has(r->hdrs, ":status: 201\n"));
	ck_assert(has(r->hdrs, "set-cookie: a=1\nset-cookie: b=2, c=3\n"));
	ck_assert(has(r->hdrs, "via: 1.0 front\n"));
	ck_assert(has(r->hdrs, "via: 1.1 hermod\n"));
	ck_assert(has(r->hdrs, "x-trim: v\n"));
	ck_assert(has(r->hdrs, "x-mixed: Ab\n"));
	ck_assert(has(r->hdrs, "set-cookie: hermod-session-affinity=x\n"));
	ck_assert_str_eq(r->body, "chunky");
	ck_assert(r->closed);
	ck_assert_uint_eq(r->code, 0);
	peer_free(p);
}
END_TEST

START_TEST(test_head_204_304_no_body)
{
	struct peer *p = peer_new(true);
	int32_t a, b;

	a = request(p, "HEAD", "/", NULL, NULL);
	run(p);
	ck_assert(has(cresp_of(p, a)->hdrs, "content-length: 5\n"));
	ck_assert_uint_eq(cresp_of(p, a)->blen, 0);
	ck_assert(cresp_of(p, a)->closed);
	ck_assert_uint_eq(data_bytes(p, a), 0);
	ck_assert(headers_of(p, a, 0)->flags & NGHTTP2_FLAG_END_STREAM);
	set_response("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", NULL);
	b = request(p, "GET", "/", NULL, NULL);
	run(p);
	ck_assert(has(cresp_of(p, b)->hdrs, ":status: 204\n"));
	ck_assert(!has(cresp_of(p, b)->hdrs, "content-length"));
	ck_assert(cresp_of(p, b)->closed);
	ck_assert(headers_of(p, b, 0)->flags & NGHTTP2_FLAG_END_STREAM);
	set_response("HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\n\r\n", NULL);
	b = request(p, "GET", "/", NULL, NULL);
	run(p);
	ck_assert(has(cresp_of(p, b)->hdrs, ":status: 304\n"));
	ck_assert(cresp_of(p, b)->closed);
	ck_assert_uint_eq(cresp_of(p, b)->code, 0);
	ck_assert(headers_of(p, b, 0)->flags & NGHTTP2_FLAG_END_STREAM);
	peer_free(p);
}
END_TEST

static void on_request_error(struct hm__router_h2_stream *s)
{
	on_request(s);
	ck_assert_int_eq(hm__router_h2_stream_error(s, 503), 0);
	ck_assert_int_eq(hm__router_h2_stream_error(s, 503), -EINVAL);
}

START_TEST(test_router_errors)
{
	struct hm__router_h2_ops o = ops;
	struct peer *p;
	int32_t a, b, c;

	mode.respond = false;
	o.request = on_request_error;
	ck_assert_int_eq(hm__router_h2_ctx_new(&ctx, &cfg, &o), 0);
	p = peer_new(true);
	a = request(p, "GET", "/", NULL, NULL);
	b = request(p, "HEAD", "/", NULL, NULL);
	run(p);
	ck_assert(has(cresp_of(p, a)->hdrs,
		      ":status: 503\ncontent-type: text/plain; charset=utf-8\n"
		      "content-length: 18\ncache-control: no-cache, no-store\n"
		      "via: 1.1 hermod\n"));
	ck_assert_str_eq(cresp_of(p, a)->body, "Application Error\n");
	ck_assert(has(cresp_of(p, b)->hdrs, "content-length: 18\n"));
	ck_assert_uint_eq(cresp_of(p, b)->blen, 0);
	/* The connection lives on. */
	c = request(p, "GET", "/", NULL, NULL);
	run(p);
	ck_assert(cresp_of(p, c)->closed);
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

START_TEST(test_response_trailers)
{
	struct peer *p = peer_new(true);
	struct hm__router_h2_field tr[] = {
	    {"X-Checksum", 10, "abc", 3},
	    {"Connection", 10, "close", 5},
	    {"Content-Length", 14, "3", 1},
	    {"Grpc-Status", 11, "0", 1},
	};
	const struct oframe *t;
	int32_t sid;

	set_response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n",
		     "data");
	R.end = false;
	sid = request(p, "GET", "/", NULL, NULL);
	run(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_int_eq(hm__router_h2_stream_end(fxs[0].s, tr, 4), 0);
	ck_assert_int_eq(hm__router_h2_stream_end(fxs[0].s, tr, 4), -EINVAL);
	run(p);
	t = headers_of(p, sid, 1);
	ck_assert_ptr_nonnull(t);
	ck_assert_str_eq(t->hdrs, "x-checksum: abc\ngrpc-status: 0\n");
	ck_assert(t->flags & NGHTTP2_FLAG_END_STREAM);
	ck_assert_str_eq(cresp_of(p, sid)->body, "data");
	ck_assert(cresp_of(p, sid)->closed);
	ck_assert_uint_eq(cresp_of(p, sid)->code, 0);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_DONE);
	peer_free(p);
}
END_TEST

START_TEST(test_continue_then_response)
{
	struct peer *p = peer_new(true);
	const char *extra[] = {"expect", "100-continue", "content-length", "3", NULL};
	struct src body = {"abc", 3, 0};
	int32_t sid;

	mode.continue100 = true;
	sid = request(p, "PUT", "/", extra, &body);
	run(p);
	ck_assert_str_eq(headers_of(p, sid, 0)->status, "100");
	ck_assert_str_eq(headers_of(p, sid, 1)->status, "200");
	ck_assert_str_eq(fxs[0].body, "abc");
	ck_assert(cresp_of(p, sid)->closed);
	peer_free(p);
}
END_TEST

/* A response complete before the upload: RST_STREAM(NO_ERROR), the rest discarded, the
 * connection window intact. */
START_TEST(test_early_response)
{
	struct peer *p = peer_new(false);
	const char *post[] = {":method",	"POST",	  ":scheme",	"http",
			      ":path",		"/",	  ":authority", "a.example.com",
			      "content-length", "100000", NULL};
	static char chunk[16384];

	mode.read_body = false;
	raw_start(p, true);
	raw_req(p, 1, 0, post);
	pump(p);
	ck_assert_str_eq(headers_of(p, 1, 0)->status, "200");
	ck_assert_int_eq(rst(p, 1), NGHTTP2_NO_ERROR);
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_DONE);
	/* DATA still in flight from the client is dropped, and its window given back. */
	raw_frame(p, NGHTTP2_DATA, 0, 1, chunk, sizeof(chunk));
	pump(p);
	ck_assert_uint_ge(window_updates(p, 0), (1u << 20) - 65535 + 0);
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

/* ==== flow control and bounded memory ========================================================= */

START_TEST(test_window_follows_the_dyno)
{
	struct peer *p = peer_new(true);
	static char big[200000];
	const char *extra[] = {"content-length", "200000", NULL};
	struct src body = {big, sizeof(big), 0};
	struct hm__router_h2_stream *s;
	struct iovec iov[4];
	size_t held, got = 0;
	int32_t sid;
	int k;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	mode.read_body = false;
	mode.respond = false;
	sid = request(p, "POST", "/", extra, &body);
	run(p);
	ck_assert(!fxs[0].closed);
	s = fxs[0].s;
	k = hm__router_h2_stream_body_peek(s, iov, 4);
	held = 0;
	for (int i = 0; i < k; i++)
		held += iov[i].iov_len;
	/* The client sent its window and stopped: the engine holds one window, no more. */
	ck_assert_uint_eq(held, 65535);
	ck_assert_uint_eq(window_updates(p, sid), 0);
	ck_assert_uint_lt(body.off, sizeof(big));
	/* As the dyno takes bytes, the client may send as many more. */
	while (got < sizeof(big)) {
		size_t n = 0;

		k = hm__router_h2_stream_body_peek(s, iov, 4);
		ck_assert_int_gt(k, 0);
		for (int i = 0; i < k; i++) {
			ck_assert(memcmp(iov[i].iov_base, big + got + n, iov[i].iov_len) == 0);
			n += iov[i].iov_len;
		}
		ck_assert_uint_le(n, 65535);
		n = n > 10000 ? 10000 : n;
		hm__router_h2_stream_body_consume(s, n);
		got += n;
		run(p);
		ck_assert(!fxs[0].closed); /* the client kept to the windows it was given */
	}
	ck_assert(hm__router_h2_stream_body_done(s));
	ck_assert_uint_eq(body.off, sizeof(big));
	ck_assert_uint_ge(window_updates(p, sid), sizeof(big) - 65535);
	peer_free(p);
}
END_TEST

/* Streams reset while holding unconsumed DATA give the connection window back. */
START_TEST(test_dropped_bodies_return_window)
{
	struct peer *p = peer_new(false);
	static char chunk[16384];
	int32_t sid;

	mode.read_body = false;
	mode.respond = false;
	raw_start(p, true);
	/* 24 streams x 48 KiB = 1.1 MiB, more than the 1 MiB connection window. */
	for (sid = 1; sid < 49; sid += 2) {
		raw_req(p, sid, 0, post_nv);
		for (int i = 0; i < 3; i++)
			raw_frame(p, NGHTTP2_DATA, 0, sid, chunk, sizeof(chunk));
		ck_assert_int_eq(p->recv_rc, 0);
		raw_rst(p, sid, NGHTTP2_CANCEL);
		pump(p);
	}
	ck_assert_int_eq(goaway(p), -1);
	ck_assert_uint_ge(window_updates(p, 0), 24u * 3 * 16384);
	peer_free(p);
}
END_TEST

START_TEST(test_spans_released_after_write)
{
	struct peer *p = peer_new(true);
	static char body[100000];
	struct hm__router_h2_stream *s;
	int32_t sid;

	memset(body, 'x', sizeof(body));
	mode.respond = false;
	sid = request(p, "GET", "/", NULL, NULL);
	run(p);
	s = fxs[0].s;
	set_response("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", NULL);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), 0);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(
		    hm__router_h2_stream_send(s, body + i * 12500, 12500, on_release, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, 1, on_release, NULL), -ENOBUFS);
	ck_assert_int_eq(hm__router_h2_stream_end(s, NULL, 0), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, 1, on_release, NULL), -EINVAL);
	/* Written 100 bytes at a time: no span goes before its last byte does. */
	p->write_limit = 100;
	for (int round = 0; round < 100000 && !cresp_of(p, sid)->closed; round++) {
		size_t before = released_bytes;
		int64_t w = (int64_t)data_bytes(p, sid);

		run(p);
		ck_assert_int_le((int64_t)released_bytes,
				 w + 100 + (int64_t)(released_bytes - before));
		ck_assert_uint_le(released_bytes, data_bytes(p, sid));
	}
	ck_assert_int_eq(released_spans, 8);
	ck_assert_uint_eq(released_bytes, 100000);
	ck_assert_uint_eq(cresp_of(p, sid)->blen, 100000);
	ck_assert_uint_eq(hm__router_h2_stream_body_bytes(s), 100000);
	peer_free(p);
}
END_TEST

START_TEST(test_spans_released_on_reset_and_free)
{
	struct peer *p = peer_new(false);
	static char body[65536];
	struct hm__router_h2_stream *s;
	struct iovec iov[64];
	int k;

	mode.respond = false;
	mode.release = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	set_response("HTTP/1.1 200 OK\r\nContent-Length: 131072\r\n\r\n", NULL);
	/* Stream 1: spans beyond the client's window stay queued; stream 3 gets framed. */
	s = fxs[0].s;
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, sizeof(body), on_release, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, sizeof(body), on_release, NULL), 0);
	pump(p); /* 65535 bytes framed and written: the window is spent */
	ck_assert_uint_eq(data_bytes(p, 1), 65535);
	ck_assert_int_eq(released_spans, 0);
	raw_rst(p, 1, NGHTTP2_CANCEL);
	/* Span 1 had its bytes written but one; span 2 was never framed: both released now. */
	ck_assert_int_eq(released_spans, 2);
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_RESET);
	ck_assert_uint_eq(fxs[0].code, NGHTTP2_CANCEL);
	/* Stream 3: framed into a batch the transport has not written: released at free. */
	raw_window_update(p, 0, 1 << 20);
	s = fxs[1].s;
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, 1000, on_release, NULL), 0);
	k = hm__router_h2_conn_output(p->c, iov, 64, p->now);
	ck_assert_int_gt(k, 0);
	hm__router_h2_conn_shutdown(p->c, HM__H2_CLOSE_CONN);
	ck_assert(fxs[1].closed);
	ck_assert_int_eq(fxs[1].why_closed, HM__H2_CLOSE_CONN);
	ck_assert_int_eq(released_spans, 2);
	hm__router_h2_stream_release(fxs[0].s);
	hm__router_h2_stream_release(fxs[1].s);
	hm__router_h2_conn_free(p->c);
	ck_assert_int_eq(released_spans, 3);
	p->c = NULL;
	peer_free(p);
}
END_TEST

/* ==== defences ================================================================================ */

START_TEST(test_max_concurrent_streams)
{
	struct peer *p = peer_new(false);

	mode.respond = false;
	/* Before the client acknowledged our SETTINGS: the 129th stream is refused. */
	raw_start(p, false);
	for (int32_t sid = 1; sid <= 257; sid += 2)
		raw_req(p, sid, 0, post_nv);
	pump(p);
	ck_assert_int_eq(nfx, 128);
	ck_assert_int_eq(rst(p, 257), NGHTTP2_REFUSED_STREAM);
	ck_assert_int_eq(goaway(p), -1);
	/* After it: a protocol error on the connection. */
	raw_frame(p, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
	raw_req(p, 259, 0, post_nv);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_PROTOCOL_ERROR);
	ck_assert(hm__router_h2_conn_done(p->c));
	for (int i = 0; i < 128; i++) {
		ck_assert(fxs[i].closed);
		ck_assert_int_eq(fxs[i].why_closed, HM__H2_CLOSE_CONN);
	}
	peer_free(p);
}
END_TEST

/* Streams the client reset keep their slot until the exchange lets go. */
START_TEST(test_unreleased_streams_hold_slots)
{
	struct peer *p = peer_new(false);
	int32_t sid;

	mode.respond = false;
	mode.release = false;
	raw_start(p, true);
	for (sid = 1; sid <= 255; sid += 2) {
		raw_req(p, sid, 0, post_nv);
		raw_rst(p, sid, NGHTTP2_CANCEL);
	}
	ck_assert_int_eq(nfx, 128);
	ck_assert(fxs[127].closed);
	ck_assert_int_eq(fxs[127].why_closed, HM__H2_CLOSE_RESET);
	raw_req(p, 257, 0, post_nv);
	pump(p);
	ck_assert_int_eq(nfx, 128);
	ck_assert_int_eq(rst(p, 257), NGHTTP2_REFUSED_STREAM);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->refused, 1);
	/* One exchange finishes cancelling: one new stream fits. */
	hm__router_h2_stream_release(fxs[0].s);
	raw_req(p, 259, 0, post_nv);
	raw_req(p, 261, 0, post_nv);
	pump(p);
	ck_assert_int_eq(nfx, 129);
	ck_assert_int_eq(fxs[128].id, 259);
	ck_assert_int_eq(rst(p, 261), NGHTTP2_REFUSED_STREAM);
	ck_assert_int_eq(goaway(p), -1);
	/* 128 resets and 2 refused streams: a glitch each. */
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->glitches, 130);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->resets, 128);
	for (int i = 1; i < nfx; i++)
		hm__router_h2_stream_release(fxs[i].s);
	peer_free(p);
}
END_TEST

START_TEST(test_rapid_reset)
{
	struct peer *p = peer_new(false);
	int32_t sid = 1;
	int opened = 0;

	mode.respond = false;
	raw_start(p, true);
	while (p->recv_rc == 0 && sid < 4000) {
		raw_req(p, sid, NGHTTP2_FLAG_END_STREAM, get_nv);
		raw_rst(p, sid, NGHTTP2_CANCEL);
		sid += 2;
		opened++;
	}
	pump(p);
	ck_assert_int_eq(p->recv_rc, -EPROTO);
	ck_assert_int_eq(goaway(p), NGHTTP2_ENHANCE_YOUR_CALM);
	/* Cut at the glitch budget (500 resets), long before nghttp2's own limiter (1000). */
	ck_assert_int_eq(opened, 501);
	ck_assert_int_le(nfx, 501);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->goaway_sent[NGHTTP2_ENHANCE_YOUR_CALM], 1);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->goaway_sent[NGHTTP2_NO_ERROR], 0);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
}
END_TEST

/* Counting into the caller's counters (a worker's shared slot): added to, never reset; what
 * nghttp2 refuses (the limit not yet acknowledged), client resets and GOAWAYs count. */
START_TEST(test_counts_into_caller)
{
	struct hm__router_h2_stats st = {.conns = 5};
	struct peer *p;
	uint8_t ga[8] = {0, 0, 0, 0, 0, 0, 0, 0x42};

	make_ctx();
	hm__router_h2_ctx_count_into(ctx, &st);
	p = peer_new(false);
	mode.respond = false;
	mode.release = false;
	raw_start(p, false);
	for (int32_t sid = 1; sid <= 257; sid += 2)
		raw_req(p, sid, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	ck_assert_int_eq(nfx, 128);
	ck_assert_int_eq(rst(p, 257), NGHTTP2_REFUSED_STREAM);
	raw_rst(p, 1, NGHTTP2_CANCEL);
	raw_frame(p, NGHTTP2_GOAWAY, 0, 0, ga, sizeof(ga));
	pump(p);
	ck_assert_ptr_eq(hm__router_h2_ctx_stats(ctx), &st);
	ck_assert_uint_eq(st.conns, 6);
	ck_assert_uint_eq(st.streams, 128);
	ck_assert_uint_eq(st.refused, 1);
	ck_assert_uint_eq(st.glitches, 2);
	ck_assert_uint_eq(st.resets, 1);
	ck_assert_uint_eq(st.goaway_recv[HM__H2_ERROR_CODES], 1);
	ck_assert_uint_eq(st.goaway_recv[NGHTTP2_NO_ERROR], 0);
	ck_assert_str_eq(hm__router_h2_code_name(NGHTTP2_ENHANCE_YOUR_CALM), "ENHANCE_YOUR_CALM");
	ck_assert_str_eq(hm__router_h2_code_name(0x42), "unknown");
	for (int i = 0; i < nfx; i++)
		hm__router_h2_stream_release(fxs[i].s);
	peer_free(p);
}
END_TEST

START_TEST(test_glitches_refill_with_time)
{
	struct peer *p = peer_new(false);
	int32_t sid = 1;

	mode.respond = false;
	raw_start(p, true);
	for (int round = 0; round < 5; round++) {
		for (int i = 0; i < 400; i++) {
			raw_req(p, sid, NGHTTP2_FLAG_END_STREAM, get_nv);
			raw_rst(p, sid, NGHTTP2_CANCEL);
			sid += 2;
		}
		ck_assert_int_eq(p->recv_rc, 0);
		p->now += 8000; /* 50 a second: 400 tokens back */
	}
	pump(p);
	ck_assert_int_eq(goaway(p), -1);
	ck_assert_int_eq(nfx, 2000);
	peer_free(p);
}
END_TEST

/* Frames of one kind: the first 100 are fine, the connection ends at the (budget + free)th. */
static void flood(uint8_t type, uint8_t flags, int32_t sid, const void *pl, size_t len,
		  int free_frames)
{
	struct peer *p;
	int sent = 0;

	make_ctx();
	p = peer_new(false);
	raw_start(p, true);
	if (sid != 0)
		raw_req(p, sid, 0, get_nv);
	/* A few are fine. */
	for (int i = 0; i < 100; i++, sent++)
		raw_frame(p, type, flags, sid, pl, len);
	pump(p);
	ck_assert_int_eq(goaway(p), -1);
	while (p->recv_rc == 0 && sent < 5000) {
		raw_frame(p, type, flags, sid, pl, len);
		sent++;
		if (sent % 64 == 0)
			pump(p);
	}
	pump(p);
	ck_assert_int_eq(p->recv_rc, -EPROTO);
	ck_assert_int_eq(goaway(p), NGHTTP2_ENHANCE_YOUR_CALM);
	ck_assert_int_eq(sent, 500 + free_frames + 1);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
	hm__router_h2_ctx_free(ctx);
	ctx = NULL;
}

START_TEST(test_flood_settings)
{
	flood(NGHTTP2_SETTINGS, 0, 0, NULL, 0, 0);
}
END_TEST

START_TEST(test_flood_ping)
{
	flood(NGHTTP2_PING, 0, 0, "12345678", 8, 0);
}
END_TEST

START_TEST(test_flood_priority)
{
	uint8_t pri[5] = {0, 0, 0, 0, 16};

	flood(NGHTTP2_PRIORITY, 0, 3, pri, 5, 0);
}
END_TEST

START_TEST(test_flood_empty_data)
{
	mode.respond = false;
	flood(NGHTTP2_DATA, 0, 1, NULL, 0, 0);
}
END_TEST

START_TEST(test_flood_window_update)
{
	uint8_t one[4] = {0, 0, 0, 1};

	/* 16 to start with, and one for the stream flood() opens... there is none here. */
	flood(NGHTTP2_WINDOW_UPDATE, 0, 0, one, 4, 16);
}
END_TEST

START_TEST(test_flood_unknown_frames)
{
	flood(0xfa, 0, 0, "x", 1, 0);
}
END_TEST

/* A client that downloads may send two WINDOW_UPDATEs for every frame it reads (stream and
 * connection): that is free, however long the download (here 1024 frames). */
START_TEST(test_window_updates_paid_by_data)
{
	struct peer *p = peer_new(false);
	static char body[16 << 20];
	struct hm__router_h2_stream *s;

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	s = fxs[0].s;
	set_response("HTTP/1.1 200 OK\r\nContent-Length: 16777216\r\n\r\n", NULL);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(s, body, sizeof(body), on_release, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_end(s, NULL, 0), 0);
	for (int round = 0; round < 100000 && !fxs[0].closed; round++) {
		int before = p->nfr;

		pump(p);
		/* One WINDOW_UPDATE per DATA frame read, for the stream and for the connection. */
		for (int i = before; i < p->nfr; i++) {
			if (p->fr[i].type != NGHTTP2_DATA || p->fr[i].len == 0)
				continue;
			raw_window_update(p, 1, p->fr[i].len);
			raw_window_update(p, 0, p->fr[i].len);
		}
		ck_assert_int_eq(p->recv_rc, 0);
	}
	ck_assert(fxs[0].closed);
	ck_assert_uint_eq(data_bytes(p, 1), sizeof(body));
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

START_TEST(test_continuation_flood)
{
	struct peer *p = peer_new(false);
	const char *nv[] = {
	    ":method", "GET",	     ":scheme",	      "https", ":path",
	    "/",       ":authority", "a.example.com", "x-pad", "0123456789012345678901234567890",
	    NULL};
	uint8_t blk[128];
	size_t n;

	raw_start(p, true);
	n = hpack(p, nv, blk, sizeof(blk));
	ck_assert_uint_gt(n, 18);
	/* A header block split in 17 pieces is fine (max_head / 16 KiB + 1 CONTINUATIONs)... */
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 1, blk, 1);
	for (size_t i = 1; i < 17; i++)
		raw_frame(p, NGHTTP2_CONTINUATION, 0, 1, blk + i, 1);
	raw_frame(p, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, blk + 17, n - 17);
	pump(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_str_eq(headers_of(p, 1, 0)->status, "200");
	/* ... endless empty CONTINUATIONs are not. */
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 3, blk, 1);
	for (int i = 0; i < 1000 && p->recv_rc == 0; i++)
		raw_frame(p, NGHTTP2_CONTINUATION, 0, 3, NULL, 0);
	ck_assert_int_eq(p->recv_rc, -EPROTO);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_ENHANCE_YOUR_CALM);
	ck_assert_int_eq(nfx, 1);
	peer_free(p);
}
END_TEST

/* HPACK integer with an n-bit prefix. */
static size_t hp_int(uint8_t *o, uint8_t first, int nbits, uint32_t v)
{
	uint32_t max = (1u << nbits) - 1;
	size_t k = 0;

	if (v < max) {
		o[k++] = (uint8_t)(first | v);
		return k;
	}
	o[k++] = (uint8_t)(first | max);
	v -= max;
	while (v >= 128) {
		o[k++] = (uint8_t)(v % 128 + 128);
		v /= 128;
	}
	o[k++] = (uint8_t)v;
	return k;
}

/* A literal field without indexing, new name (0x00, name, value), raw strings, the value
 * vlen bytes of 'v'. */
static size_t hp_literal(uint8_t *o, const char *name, size_t vlen)
{
	size_t k = 0, nl = strlen(name);

	o[k++] = 0x00;
	k += hp_int(o + k, 0, 7, (uint32_t)nl);
	memcpy(o + k, name, nl);
	k += nl;
	k += hp_int(o + k, 0, 7, (uint32_t)vlen);
	memset(o + k, 'v', vlen);
	return k + vlen;
}

START_TEST(test_hpack_table_size_update_too_big)
{
	struct peer *p = peer_new(false);
	uint8_t b[64];
	size_t k;

	raw_start(p, true);
	k = hp_int(b, 0x20, 5, 1u << 20); /* dynamic table size update to 1 MiB */
	b[k++] = 0x82;			  /* :method GET */
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, b, k);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_COMPRESSION_ERROR);
	ck_assert_int_eq(nfx, 0);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
}
END_TEST

/* Sends an HPACK block as HEADERS + CONTINUATIONs of at most 16 KiB. */
static void raw_block(struct peer *p, int32_t sid, uint8_t flags, const uint8_t *b, size_t n)
{
	size_t first = n < 16384 ? n : 16384;

	raw_frame(p, NGHTTP2_HEADERS,
		  (uint8_t)(flags | (first == n ? NGHTTP2_FLAG_END_HEADERS : 0)), sid, b, first);
	for (size_t off = first; off < n; off += 16384) {
		size_t k = n - off < 16384 ? n - off : 16384;

		raw_frame(p, NGHTTP2_CONTINUATION, off + k == n ? NGHTTP2_FLAG_END_HEADERS : 0, sid,
			  b + off, k);
	}
}

START_TEST(test_hpack_literals)
{
	struct peer *p = peer_new(false);
	static uint8_t b[80000];
	size_t k;

	raw_start(p, true);
	/* 10 KiB: over the value limit, a 400 on the stream. */
	k = hpack(p, get_nv, b, sizeof(b));
	k += hp_literal(b + k, "x-big", 10240);
	raw_block(p, 1, NGHTTP2_FLAG_END_STREAM, b, k);
	ck_assert_int_eq(p->recv_rc, 0);
	pump(p);
	ck_assert_int_eq(nfx, 1);
	ck_assert_int_eq(fxs[0].status, 400);
	ck_assert_str_eq(headers_of(p, 1, 0)->status, "400");
	ck_assert_int_eq(goaway(p), -1);
	/* Over 64 KiB: HPACK refuses it, the connection ends. */
	k = hpack(p, get_nv, b, sizeof(b));
	k += hp_literal(b + k, "x-huge", 70000);
	raw_block(p, 3, NGHTTP2_FLAG_END_STREAM, b, k);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_COMPRESSION_ERROR);
	ck_assert_int_eq(nfx, 1);
	peer_free(p);
}
END_TEST

/* An HPACK "bomb": one 4 KiB entry in the dynamic table, referenced a hundred times. */
START_TEST(test_header_list_too_large)
{
	struct peer *p = peer_new(false);
	static uint8_t b[4096];
	size_t k;

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, 0, get_nv); /* in flight: it may finish */
	k = hpack(p, get_nv, b, sizeof(b));
	/* Literal with incremental indexing, new name: enters the dynamic table as index 62. */
	b[k++] = 0x40;
	k += hp_int(b + k, 0, 7, 5);
	memcpy(b + k, "x-bom", 5);
	k += 5;
	k += hp_int(b + k, 0, 7, 4000);
	memset(b + k, 'b', 4000);
	k += 4000;
	for (int i = 0; i < 66; i++)
		b[k++] = 0x80 | 62; /* 66 x 4 KiB = 264 KiB decoded, 66 bytes sent */
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, b, k);
	pump(p);
	ck_assert_int_eq(nfx, 2);
	ck_assert_int_eq(fxs[1].status, 400);
	ck_assert_str_eq(fxs[1].why, "head too large");
	ck_assert_str_eq(headers_of(p, 3, 0)->status, "400");
	/* No new streams; the one in flight goes on. */
	ck_assert_int_eq(goaway(p), NGHTTP2_ENHANCE_YOUR_CALM);
	ck_assert_int_eq(last_goaway(p)->last_sid, 3);
	raw_req_plain(p, 5, NGHTTP2_FLAG_END_STREAM, get_nv);
	ck_assert_int_eq(p->recv_rc, 0);
	ck_assert_int_eq(nfx, 2);
	ck_assert(!fxs[0].closed);
	ck_assert(!hm__router_h2_conn_done(p->c));
	ck_assert_int_eq(respond_now(&fxs[0]), 0);
	raw_frame(p, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, NULL, 0);
	pump(p);
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_DONE);
	ck_assert_uint_eq(data_bytes(p, 1), 5);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
}
END_TEST

/* ==== a client that does not read, timeouts, drain ============================================ */

START_TEST(test_client_never_reads)
{
	struct peer *p = peer_new(false);
	static char body[1 << 20];
	struct iovec iov[64];
	int32_t sid;

	set_response("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n", NULL);
	mode.respond = false;
	raw_start(p, true);
	raw_window_update(p, 0, 1 << 30);
	for (sid = 1; sid <= 39; sid += 2) {
		raw_req(p, sid, NGHTTP2_FLAG_END_STREAM, get_nv);
		ck_assert_int_eq(hm__router_h2_stream_respond(fxs[nfx - 1].s, &R.m, &R.rs, NULL),
				 0);
		ck_assert_int_eq(
		    hm__router_h2_stream_send(fxs[nfx - 1].s, body, sizeof(body), on_release, NULL),
		    0);
	}
	/* The transport takes nothing: one batch is out, reading stops, nothing grows. */
	p->hold = true;
	p->now = 1000;
	pump(p);
	ck_assert(hm__router_h2_conn_want_write(p->c));
	ck_assert(!hm__router_h2_conn_want_read(p->c));
	for (int i = 0; i < 10; i++) {
		int k = hm__router_h2_conn_output(p->c, iov, 64, p->now);
		size_t n = 0;

		for (int j = 0; j < k; j++)
			n += iov[j].iov_len;
		ck_assert_int_le(k, 64);
		ck_assert_uint_le(n,
				  (256 << 10) + 16384 + 9); /* the frame that crossed the bound */
	}
	ck_assert_int_eq(released_spans, 0);
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), 1000 + 55000);
	hm__router_h2_conn_tick(p->c, 1000 + 54999);
	ck_assert(!hm__router_h2_conn_dead(p->c));
	hm__router_h2_conn_tick(p->c, 1000 + 55000);
	ck_assert(hm__router_h2_conn_dead(p->c));
	ck_assert(hm__router_h2_conn_done(p->c));
	for (int i = 0; i < nfx; i++) {
		ck_assert(fxs[i].closed);
		ck_assert_int_eq(fxs[i].why_closed, HM__H2_CLOSE_TIMEOUT);
	}
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->timeouts, 1);
	/* The transport gives the batch back: every span is released. */
	hm__router_h2_conn_free(p->c);
	ck_assert_int_eq(released_spans, 20);
	p->c = NULL;
	peer_free(p);
}
END_TEST

/* Writing slowly is not "not reading": each bit of progress restarts the send timeout. */
START_TEST(test_slow_reader_progress)
{
	struct peer *p = peer_new(false);
	static char body[200000];

	set_response("HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n", NULL);
	mode.respond = false;
	raw_start(p, true);
	raw_window_update(p, 0, 1 << 30);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	raw_window_update(p, 1, 1 << 30);
	ck_assert_int_eq(hm__router_h2_stream_respond(fxs[0].s, &R.m, &R.rs, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_send(fxs[0].s, body, sizeof(body), on_release, NULL),
			 0);
	ck_assert_int_eq(hm__router_h2_stream_end(fxs[0].s, NULL, 0), 0);
	p->write_limit = 1000;
	while (!fxs[0].closed) {
		p->now += 50000;
		hm__router_h2_conn_tick(p->c, p->now);
		ck_assert(!hm__router_h2_conn_dead(p->c));
		pump(p);
	}
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_DONE);
	peer_free(p);
}
END_TEST

START_TEST(test_idle_timeout)
{
	struct peer *p = peer_new(false);

	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	ck_assert(fxs[0].closed);
	p->now = 30000;
	raw_frame(p, NGHTTP2_PING, 0, 0, "12345678", 8); /* input counts as activity */
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), 30000 + 60000);
	hm__router_h2_conn_tick(p->c, 89999);
	pump(p);
	ck_assert_int_eq(goaway(p), -1);
	hm__router_h2_conn_tick(p->c, 90000);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_NO_ERROR);
	ck_assert_int_eq(last_goaway(p)->last_sid, 1);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
}
END_TEST

/* A stream waiting on its dyno is not idleness. */
START_TEST(test_busy_is_not_idle)
{
	struct peer *p = peer_new(false);

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), UINT64_MAX);
	hm__router_h2_conn_tick(p->c, 10 * 60000);
	pump(p);
	ck_assert_int_eq(goaway(p), -1);
	p->now = 10 * 60000;
	ck_assert_int_eq(respond_now(&fxs[0]), 0);
	pump(p);
	ck_assert(fxs[0].closed);
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), 10 * 60000 + 60000);
	peer_free(p);
}
END_TEST

START_TEST(test_head_timeout)
{
	struct peer *p = peer_new(false);
	uint8_t blk[64];
	size_t n;

	raw_start(p, true);
	n = hpack(p, get_nv, blk, sizeof(blk));
	p->now = 5000;
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 1, blk, n / 2);
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), 5000 + 60000);
	hm__router_h2_conn_tick(p->c, 65000);
	pump(p);
	ck_assert_int_eq(goaway(p), NGHTTP2_NO_ERROR);
	ck_assert(hm__router_h2_conn_done(p->c));
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->timeouts, 1);
	ck_assert_int_eq(nfx, 0);
	peer_free(p);
}
END_TEST

START_TEST(test_drain)
{
	struct peer *p = peer_new(false);
	const struct oframe *g;

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	p->now = 100;
	hm__router_h2_conn_drain(p->c, p->now);
	pump(p);
	g = last_goaway(p);
	ck_assert_ptr_nonnull(g);
	ck_assert_uint_eq(g->code, NGHTTP2_NO_ERROR);
	ck_assert_int_eq(g->last_sid, 0x7fffffff);
	/* Streams the client had already sent still count. */
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, get_nv);
	ck_assert_int_eq(nfx, 2);
	ck_assert_uint_eq(hm__router_h2_conn_deadline(p->c), 1100);
	hm__router_h2_conn_tick(p->c, 1100);
	pump(p);
	ck_assert_int_eq(count_goaways(p), 2);
	ck_assert_int_eq(last_goaway(p)->last_sid, 3);
	raw_req(p, 5, NGHTTP2_FLAG_END_STREAM, get_nv);
	ck_assert_int_eq(nfx, 2);
	ck_assert(!hm__router_h2_conn_done(p->c));
	ck_assert_int_eq(respond_now(&fxs[0]), 0);
	ck_assert_int_eq(respond_now(&fxs[1]), 0);
	pump(p);
	ck_assert(fxs[0].closed && fxs[1].closed);
	ck_assert_int_eq(fxs[1].why_closed, HM__H2_CLOSE_DONE);
	ck_assert(hm__router_h2_conn_done(p->c));
	peer_free(p);
}
END_TEST

START_TEST(test_bad_preface_and_sniff)
{
	struct peer *p = peer_new(false);
	const char *h1 = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

	ck_assert_int_eq(hm__router_h2_sniff("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nxyz", 27), 1);
	ck_assert_int_eq(hm__router_h2_sniff("PRI * HTTP/2", 12), -EAGAIN);
	ck_assert_int_eq(hm__router_h2_sniff(h1, strlen(h1)), 0);
	ck_assert_int_eq(hm__router_h2_sniff("P", 1), -EAGAIN);
	ck_assert_int_eq(hm__router_h2_sniff("", 0), -EAGAIN);
	feed(p, h1, strlen(h1));
	ck_assert_int_eq(p->recv_rc, -ECONNRESET);
	ck_assert(hm__router_h2_conn_dead(p->c));
	ck_assert(hm__router_h2_conn_done(p->c));
	ck_assert(!hm__router_h2_conn_want_read(p->c));
	peer_free(p);
}
END_TEST

/* After warm-up, requests cost the engine no heap call: everything comes from the slab. */
START_TEST(test_no_heap_calls_when_warm)
{
	struct peer *p = peer_new(true);
	const char *extra[] = {"user-agent", "bench", "cookie", "a=1", "cookie", "b=2", NULL};
	uint64_t warm;

	for (int round = 0; round < 2; round++) {
		for (int batch = 0; batch < 20; batch++) {
			for (int i = 0; i < 10; i++)
				request(p, "GET", "/index.html", extra, NULL);
			run(p);
			fx_reset();
		}
		if (round == 0)
			warm = hm__router_h2_ctx_stats(ctx)->heap_allocs;
	}
	ck_assert_uint_gt(warm, 0);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->heap_allocs, warm);
	ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->streams, 400);
	peer_free(p);
}
END_TEST

/* ==== the exchange's side of the contract ================================================== */

START_TEST(test_wakeup_once_outside_calls)
{
	struct peer *p = peer_new(false);

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, get_nv);
	pump(p);
	ck_assert_int_eq(wakeups, 0); /* all of that happened inside engine calls */
	ck_assert_int_eq(respond_now(&fxs[0]), 0);
	ck_assert_int_eq(wakeups, 1);
	ck_assert(hm__router_h2_conn_want_write(p->c));
	ck_assert_int_eq(respond_now(&fxs[1]), 0);
	ck_assert_int_eq(wakeups, 1); /* once until the output is taken */
	pump(p);
	ck_assert(fxs[0].closed && fxs[1].closed);
	ck_assert_int_eq(wakeups, 1);
	peer_free(p);
}
END_TEST

START_TEST(test_release_before_close)
{
	struct peer *p = peer_new(false);

	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, 0, post_nv);
	/* The exchange gives up (say the dyno could not be reached and it did not answer). */
	hm__router_h2_stream_release(fxs[0].s);
	fxs[0].s = NULL;
	pump(p);
	ck_assert_int_eq(rst(p, 1), NGHTTP2_CANCEL);
	ck_assert(!fxs[0].closed); /* no callback after release */
	/* DATA the client had in flight is consumed, and the slot is free again. */
	raw_frame(p, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "abc", 3);
	raw_req(p, 3, NGHTTP2_FLAG_END_STREAM, get_nv);
	ck_assert_int_eq(nfx, 2);
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

START_TEST(test_exchange_reset_after_head)
{
	struct peer *p = peer_new(true);
	struct hm__router_h2_stream *s;
	int32_t sid;

	mode.respond = false;
	sid = request(p, "GET", "/", NULL, NULL);
	run(p);
	s = fxs[0].s;
	set_response("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", NULL);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), 0);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), -EINVAL);
	ck_assert_int_eq(hm__router_h2_stream_error(s, 502), -EINVAL);
	ck_assert_int_eq(hm__router_h2_stream_continue(s), -EINVAL);
	ck_assert_int_eq(hm__router_h2_stream_send(s, "abc", 3, on_release, NULL), 0);
	run(p);
	/* The dyno goes silent mid-body (H15): the status cannot change, the stream fails. */
	ck_assert_int_eq(hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR), 0);
	run(p);
	ck_assert(cresp_of(p, sid)->closed);
	ck_assert_uint_eq(cresp_of(p, sid)->code, NGHTTP2_INTERNAL_ERROR);
	ck_assert_str_eq(cresp_of(p, sid)->body, "abc");
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_ERROR);
	ck_assert_uint_eq(fxs[0].code, HM__H2_INTERNAL_ERROR);
	ck_assert_int_eq(released_spans, 1);
	peer_free(p);
}
END_TEST

START_TEST(test_closed_stream_refuses_submissions)
{
	struct peer *p = peer_new(false);
	struct hm__router_h2_stream *s;
	struct hm__router_resp rs101;

	mode.respond = false;
	mode.release = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	s = fxs[0].s;
	rs101 = R.rs;
	rs101.status = 101;
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &rs101, NULL), -EINVAL);
	ck_assert_int_eq(hm__router_h2_stream_send(s, "x", 1, on_release, NULL), -EINVAL);
	ck_assert_int_eq(hm__router_h2_stream_end(s, NULL, 0), -EINVAL);
	raw_rst(p, 1, NGHTTP2_CANCEL);
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_RESET);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), -EPIPE);
	ck_assert_int_eq(hm__router_h2_stream_error(s, 503), -EPIPE);
	ck_assert_int_eq(hm__router_h2_stream_send(s, "x", 1, on_release, NULL), -EPIPE);
	ck_assert_int_eq(hm__router_h2_stream_reset(s, HM__H2_CANCEL), -EPIPE);
	ck_assert_int_eq(hm__router_h2_stream_continue(s), -EPIPE);
	ck_assert_int_eq(released_spans, 0);
	/* The head stays readable until the exchange lets go. */
	ck_assert_uint_eq(hm__router_h2_stream_msg(s)->head_end, fxs[0].head_len);
	ck_assert(memcmp(hm__router_h2_stream_msg(s)->base, fxs[0].head, fxs[0].head_len) == 0);
	hm__router_h2_stream_release(s);
	peer_free(p);
}
END_TEST

/* The connection may go before an exchange lets go of its stream: the memory waits. */
START_TEST(test_conn_freed_before_release)
{
	struct peer *p = peer_new(false);
	struct hm__router_h2_stream *s;

	mode.respond = false;
	mode.release = false;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	s = fxs[0].s;
	hm__router_h2_conn_free(p->c);
	p->c = NULL;
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_CONN);
	ck_assert_int_eq(hm__router_h2_stream_respond(s, &R.m, &R.rs, NULL), -EPIPE);
	ck_assert_uint_gt(hm__router_h2_stream_msg(s)->head_end, 0);
	hm__router_h2_stream_release(s); /* the last reference: everything goes now */
	peer_free(p);
}
END_TEST

START_TEST(test_request_trailer_limits)
{
	struct peer *p = peer_new(false);
	static char big[8200];
	const char *trl[] = {"x-big", big, NULL};
	uint8_t blk[9000];
	size_t n;

	memset(big, 'v', sizeof(big) - 1);
	mode.respond = false;
	raw_start(p, true);
	raw_req(p, 1, 0, post_nv);
	raw_frame(p, NGHTTP2_DATA, 0, 1, "abc", 3);
	n = hpack(p, trl, blk, sizeof(blk));
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, blk,
		  n);
	pump(p);
	ck_assert_int_eq(rst(p, 1), NGHTTP2_PROTOCOL_ERROR);
	ck_assert(fxs[0].closed);
	ck_assert_int_eq(fxs[0].why_closed, HM__H2_CLOSE_ERROR);
	ck_assert(!fxs[0].body_done);
	ck_assert_int_eq(goaway(p), -1);
	peer_free(p);
}
END_TEST

/* An exchange may poll the body instead of being told (ops->body NULL). */
START_TEST(test_body_callback_optional)
{
	struct hm__router_h2_ops o = ops;
	struct peer *p;
	struct iovec iov[4];

	o.body = NULL;
	mode.respond = false;
	mode.read_body = false;
	ck_assert_int_eq(hm__router_h2_ctx_new(&ctx, &cfg, &o), 0);
	p = peer_new(false);
	raw_start(p, true);
	raw_req(p, 1, 0, post_nv);
	raw_frame(p, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "abc", 3);
	ck_assert_int_eq(p->recv_rc, 0);
	/* No length: chunked, "3\r\n" "abc" "\r\n" "0\r\n\r\n". */
	ck_assert_int_eq(hm__router_h2_stream_body_peek(fxs[0].s, iov, 4), 4);
	ck_assert_uint_eq(iov[1].iov_len, 3);
	ck_assert(memcmp(iov[1].iov_base, "abc", 3) == 0);
	peer_free(p);
}
END_TEST

/* ==== mutated traffic ======================================================================== */

/* A deterministic generator (the test must give the same verdict on every run). */
static uint32_t lcg(uint32_t *x)
{
	*x = *x * 1664525u + 1013904223u;
	return *x >> 8;
}

/* Valid traffic touching most of the engine: requests with and without bodies, a chunked upload
 * with trailers, a header block split in CONTINUATIONs, resets, pings, window updates. */
static void record_traffic(void)
{
	struct peer *p = peer_new(false);
	const char *cl[] = {":method",	  "PUT",	   ":scheme",	     "https", ":path", "/p",
			    ":authority", "a.example.com", "content-length", "300",   NULL};
	const char *trl[] = {"x-sum", "1", NULL};
	const char *big[] = {":method",	   "GET",
			     ":scheme",	   "https",
			     ":path",	   "/big",
			     ":authority", "a.example.com",
			     "cookie",	   "a=1",
			     "cookie",	   "b=2",
			     "x-pad",	   "0123456789012345678901234567890123456789",
			     NULL};
	static char body[300];
	uint8_t blk[512];
	size_t n;

	memset(body, 'b', sizeof(body));
	rec_len = 0;
	recording = true;
	raw_start(p, true);
	raw_req(p, 1, NGHTTP2_FLAG_END_STREAM, get_nv);
	raw_req(p, 3, 0, cl);
	raw_frame(p, NGHTTP2_DATA, 0, 3, body, 100);
	raw_frame(p, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 3, body, 200);
	raw_req(p, 5, 0, post_nv);
	raw_frame(p, NGHTTP2_DATA, 0, 5, body, 50);
	n = hpack(p, trl, blk, sizeof(blk));
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 5, blk,
		  n);
	n = hpack(p, big, blk, sizeof(blk));
	raw_frame(p, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 7, blk, n / 2);
	raw_frame(p, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 7, blk + n / 2, n - n / 2);
	raw_req(p, 9, 0, post_nv);
	raw_rst(p, 9, NGHTTP2_CANCEL);
	raw_frame(p, NGHTTP2_PING, 0, 0, "12345678", 8);
	raw_window_update(p, 0, 100000);
	raw_req(p, 11, NGHTTP2_FLAG_END_STREAM, get_nv);
	raw_window_update(p, 11, 1000);
	recording = false;
	peer_free(p);
	fx_reset();
}

static size_t mutate(uint8_t *b, size_t n, size_t cap, uint32_t *x)
{
	int k = 1 + (int)(lcg(x) % 8);

	while (k-- > 0 && n > 0) {
		size_t at = lcg(x) % n, len = 1 + lcg(x) % 16;

		switch (lcg(x) % 6) {
		case 0: /* flip a bit */
			b[at] ^= (uint8_t)(1u << (lcg(x) % 8));
			break;
		case 1: /* a random byte */
			b[at] = (uint8_t)lcg(x);
			break;
		case 2: /* delete */
			len = len > n - at ? n - at : len;
			memmove(b + at, b + at + len, n - at - len);
			n -= len;
			break;
		case 3: /* insert random bytes */
			len = len > cap - n ? cap - n : len;
			memmove(b + at + len, b + at, n - at);
			for (size_t i = 0; i < len; i++)
				b[at + i] = (uint8_t)lcg(x);
			n += len;
			break;
		case 4: /* repeat a piece */
			len = len > n - at ? n - at : len;
			len = len > cap - n ? cap - n : len;
			memmove(b + at + len, b + at, n - at);
			n += len;
			break;
		default: /* cut the end */
			n = at;
			break;
		}
	}
	return n;
}

START_TEST(test_mutated_traffic)
{
	static uint8_t buf[8192];
	uint32_t x = 12345;

	record_traffic();
	ck_assert_uint_gt(rec_len, 200);
	ck_assert_uint_lt(rec_len, sizeof(buf) / 2);
	for (int round = 0; round < 3000; round++) {
		struct peer *p = peer_new(false);
		size_t n, off = 0;

		memcpy(buf, rec, rec_len);
		/* The preface stays intact in most rounds, so the frames get parsed. */
		n = round % 10 == 0 ? mutate(buf, rec_len, sizeof(buf), &x)
				    : 24 + mutate(buf + 24, rec_len - 24, sizeof(buf) - 24, &x);
		p->write_limit = lcg(&x) % 4 == 0 ? 1 + lcg(&x) % 200 : 0;
		while (off < n && !hm__router_h2_conn_dead(p->c)) {
			size_t k = 1 + lcg(&x) % 300;

			k = k > n - off ? n - off : k;
			feed(p, buf + off, k);
			ck_assert(p->recv_rc == 0 || p->recv_rc == -EPROTO ||
				  p->recv_rc == -ECONNRESET);
			off += k;
			p->now += lcg(&x) % 1000;
			if (hm__router_h2_conn_want_write(p->c))
				pump(p);
			if (lcg(&x) % 8 == 0)
				hm__router_h2_conn_tick(p->c, p->now);
		}
		p->now += 120000; /* every timeout there is */
		hm__router_h2_conn_tick(p->c, p->now);
		pump(p);
		peer_free(p);
		/* Every span went back exactly once, every byte to the slab. */
		ck_assert_int_eq(released_spans, sent_spans);
		ck_assert_uint_eq(hm__router_h2_ctx_stats(ctx)->bytes, 0);
		fx_reset();
	}
	free(rec);
	rec = NULL;
}
END_TEST

static Suite *h2_suite(void)
{
	Suite *s = suite_create("h2");
	TCase *tc;

	tc = tcase_create("requests");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_get_as_http1);
	tcase_add_test(tc, test_cookies_joined_and_checked);
	tcase_add_test(tc, test_post_with_length);
	tcase_add_test(tc, test_post_chunked_with_trailers);
	tcase_add_test(tc, test_chunked_peek_consume_in_pieces);
	tcase_add_test(tc, test_http2_only_400s);
	tcase_add_test(tc, test_http1_limits_apply);
	tcase_add_test(tc, test_protocol_errors_reset);
	suite_add_tcase(s, tc);

	tc = tcase_create("responses");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_response_fields);
	tcase_add_test(tc, test_head_204_304_no_body);
	tcase_add_test(tc, test_router_errors);
	tcase_add_test(tc, test_response_trailers);
	tcase_add_test(tc, test_continue_then_response);
	tcase_add_test(tc, test_early_response);
	suite_add_tcase(s, tc);

	tc = tcase_create("flow");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_window_follows_the_dyno);
	tcase_add_test(tc, test_dropped_bodies_return_window);
	tcase_add_test(tc, test_spans_released_after_write);
	tcase_add_test(tc, test_spans_released_on_reset_and_free);
	suite_add_tcase(s, tc);

	tc = tcase_create("defences");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_max_concurrent_streams);
	tcase_add_test(tc, test_unreleased_streams_hold_slots);
	tcase_add_test(tc, test_rapid_reset);
	tcase_add_test(tc, test_counts_into_caller);
	tcase_add_test(tc, test_glitches_refill_with_time);
	tcase_add_test(tc, test_flood_settings);
	tcase_add_test(tc, test_flood_ping);
	tcase_add_test(tc, test_flood_priority);
	tcase_add_test(tc, test_flood_empty_data);
	tcase_add_test(tc, test_flood_window_update);
	tcase_add_test(tc, test_flood_unknown_frames);
	tcase_add_test(tc, test_window_updates_paid_by_data);
	tcase_add_test(tc, test_continuation_flood);
	tcase_add_test(tc, test_hpack_table_size_update_too_big);
	tcase_add_test(tc, test_hpack_literals);
	tcase_add_test(tc, test_header_list_too_large);
	suite_add_tcase(s, tc);

	tc = tcase_create("connection");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_client_never_reads);
	tcase_add_test(tc, test_slow_reader_progress);
	tcase_add_test(tc, test_idle_timeout);
	tcase_add_test(tc, test_busy_is_not_idle);
	tcase_add_test(tc, test_head_timeout);
	tcase_add_test(tc, test_drain);
	tcase_add_test(tc, test_bad_preface_and_sniff);
	tcase_add_test(tc, test_no_heap_calls_when_warm);
	suite_add_tcase(s, tc);

	tc = tcase_create("exchange");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_wakeup_once_outside_calls);
	tcase_add_test(tc, test_release_before_close);
	tcase_add_test(tc, test_exchange_reset_after_head);
	tcase_add_test(tc, test_closed_stream_refuses_submissions);
	tcase_add_test(tc, test_conn_freed_before_release);
	tcase_add_test(tc, test_request_trailer_limits);
	tcase_add_test(tc, test_body_callback_optional);
	suite_add_tcase(s, tc);

	tc = tcase_create("mutations");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_mutated_traffic);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(h2_suite)
