/*
 * The "h2" client protocol driver (see xchg_env.h): the router's HTTP/2 protocol (router/h2proto.c
 * over the engine, router/h2.c) on one end of a socketpair, opened as a transport that knows the
 * protocol opens it (ALPN), and nghttp2's own client session on the other end. The case's raw
 * HTTP/1.1 request becomes an HTTP/2 request as a browser would send it: the request line and Host
 * as pseudo-headers, connection-specific fields left out, a chunked body de-chunked into DATA with
 * its trailers as a trailing HEADERS. What comes back is what an HTTP/2 client sees: interim
 * statuses counted, the final status, DATA, trailers, and a reset stream (or a connection that
 * ends) before the end of the body is a cut. The client going away resets its stream; a second
 * request is a second stream on the same connection once the first has ended.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "router/h2proto.h"
#include "router/sock.h"
#include "tests/unit/hm_check.h"
#include "tests/unit/router/xchg_env.h"

#define MAX_NV 40

struct field {
	char *name, *value;
};

struct h2d {
	struct env *e;
	uv_pipe_t pipe;
	bool open, reading;
	nghttp2_session *ng;
	/* The request, as HTTP/2. */
	struct field f[MAX_NV];
	size_t nf;
	struct field tr[8]; /* request trailers (from a chunked body) */
	size_t ntr;
	char *body; /* payload (owned) */
	size_t body_len, held, body_off;
	bool has_body;
	/* The stream of the current request. */
	int32_t sid;
	bool final_seen, in_trailers, started;
	char rbuf[65536];
};

struct cwrite {
	uv_write_t w;
	char data[];
};

static struct h2d *h2_of(struct env *e)
{
	return e->drv_state;
}

static struct outcome *cur(struct h2d *d)
{
	return &d->e->out[d->e->cur < d->e->nreq ? d->e->cur : d->e->nreq - 1];
}

static void written(uv_write_t *w, int status)
{
	(void)status;
	free(hm__container_of(w, struct cwrite, w));
}

/* Writes what the client session has to send. */
static void pump(struct h2d *d)
{
	const uint8_t *p;
	ssize_t n;

	while (d->open && (n = nghttp2_session_mem_send(d->ng, &p)) > 0) {
		struct cwrite *cw = malloc(sizeof(*cw) + (size_t)n);
		uv_buf_t b;

		ck_assert_ptr_nonnull(cw);
		memcpy(cw->data, p, (size_t)n);
		b = uv_buf_init(cw->data, (unsigned)n);
		if (uv_write(&cw->w, (uv_stream_t *)&d->pipe, &b, 1, written) != 0)
			free(cw);
	}
}

static char *dup_n(const char *p, size_t n, bool lower)
{
	char *s = malloc(n + 1);

	ck_assert_ptr_nonnull(s);
	for (size_t i = 0; i < n; i++)
		s[i] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
	s[n] = '\0';
	return s;
}

static void add_field(struct field *f, size_t *n, size_t cap, const char *name, size_t nl,
		      const char *value, size_t vl)
{
	ck_assert_uint_lt(*n, cap);
	f[*n].name = dup_n(name, nl, true);
	f[*n].value = dup_n(value, vl, false);
	(*n)++;
}

/* Fields HTTP/2 has no place for (RFC 9113, 8.2.2), or that become pseudo-headers. */
static bool dropped(const char *name, size_t nl)
{
	static const char *const names[] = {"connection", "upgrade", "transfer-encoding",
					    "keep-alive", "te",	     "proxy-connection",
					    "host",	  NULL};

	for (int i = 0; names[i] != NULL; i++)
		if (strlen(names[i]) == nl && strncasecmp(names[i], name, nl) == 0)
			return true;
	return false;
}

/* Decodes a chunked body (extensions ignored) into d->body and its trailers into d->tr. */
static void dechunk(struct h2d *d, const char *p, const char *end)
{
	d->body = malloc((size_t)(end - p) + 1);
	ck_assert_ptr_nonnull(d->body);
	for (;;) {
		size_t size = strtoul(p, NULL, 16);
		const char *eol = strstr(p, "\r\n");

		ck_assert_ptr_nonnull(eol);
		p = eol + 2;
		if (size == 0)
			break;
		memcpy(d->body + d->body_len, p, size);
		d->body_len += size;
		p += size + 2;
	}
	while (p < end && memcmp(p, "\r\n", 2) != 0) {
		const char *eol = strstr(p, "\r\n"), *colon = memchr(p, ':', (size_t)(eol - p));
		const char *v = colon + 1;

		while (*v == ' ')
			v++;
		add_field(d->tr, &d->ntr, 8, p, (size_t)(colon - p), v, (size_t)(eol - v));
		p = eol + 2;
	}
}

/* The raw HTTP/1.1 request as HTTP/2 fields and a payload. */
static void translate(struct h2d *d, const char *raw, size_t len, size_t held)
{
	const char *end = raw + len, *sp1, *sp2, *eol, *p, *head_end;
	const char *authority = NULL;
	size_t alen = 0;
	bool chunked = false;

	head_end = strstr(raw, "\r\n\r\n");
	ck_assert_ptr_nonnull(head_end);
	eol = strstr(raw, "\r\n");
	sp1 = memchr(raw, ' ', (size_t)(eol - raw));
	sp2 = memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1));
	add_field(d->f, &d->nf, MAX_NV, ":method", 7, raw, (size_t)(sp1 - raw));
	add_field(d->f, &d->nf, MAX_NV, ":scheme", 7, "http", 4);
	add_field(d->f, &d->nf, MAX_NV, ":path", 5, sp1 + 1, (size_t)(sp2 - sp1 - 1));
	d->nf++; /* :authority's place, after the other pseudo-headers */
	for (p = eol + 2; p < head_end + 2; p = eol + 2) {
		const char *colon, *v;

		eol = strstr(p, "\r\n");
		colon = memchr(p, ':', (size_t)(eol - p));
		v = colon + 1;
		while (*v == ' ')
			v++;
		if ((size_t)(colon - p) == 4 && strncasecmp(p, "host", 4) == 0) {
			authority = v;
			alen = (size_t)(eol - v);
		}
		if ((size_t)(colon - p) == 17 && strncasecmp(p, "transfer-encoding", 17) == 0)
			chunked = true;
		if (!dropped(p, (size_t)(colon - p)))
			add_field(d->f, &d->nf, MAX_NV, p, (size_t)(colon - p), v,
				  (size_t)(eol - v));
	}
	if (authority != NULL) {
		d->f[3].name = dup_n(":authority", 10, false);
		d->f[3].value = dup_n(authority, alen, false);
	} else {
		/* No Host: none (the router answers 400, as to HTTP/1 without Host). */
		memmove(&d->f[3], &d->f[4], (d->nf - 4) * sizeof(d->f[0]));
		d->nf--;
	}
	p = head_end + 4;
	d->has_body = p < end || chunked;
	if (chunked) {
		dechunk(d, p, end);
	} else {
		d->body_len = (size_t)(end - p);
		d->body = dup_n(p, d->body_len, false);
	}
	d->held = held;
}

static ssize_t body_read(nghttp2_session *ng, int32_t sid, uint8_t *buf, size_t len,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct h2d *d = ud;
	size_t avail = d->body_len - d->held - d->body_off, n = len < avail ? len : avail;

	(void)src;
	if (n == 0 && d->held > 0)
		return NGHTTP2_ERR_DEFERRED;
	memcpy(buf, d->body + d->body_off, n);
	d->body_off += n;
	if (d->body_off == d->body_len) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (d->ntr > 0) {
			nghttp2_nv nv[8];

			for (size_t i = 0; i < d->ntr; i++)
				nv[i] =
				    (nghttp2_nv){(uint8_t *)d->tr[i].name,
						 (uint8_t *)d->tr[i].value, strlen(d->tr[i].name),
						 strlen(d->tr[i].value), NGHTTP2_NV_FLAG_NONE};
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			ck_assert_int_eq(nghttp2_submit_trailer(ng, sid, nv, d->ntr), 0);
		}
	}
	return (ssize_t)n;
}

static void submit(struct h2d *d)
{
	nghttp2_nv nv[MAX_NV];
	nghttp2_data_provider prov = {.read_callback = body_read};

	for (size_t i = 0; i < d->nf; i++)
		nv[i] =
		    (nghttp2_nv){(uint8_t *)d->f[i].name, (uint8_t *)d->f[i].value,
				 strlen(d->f[i].name), strlen(d->f[i].value), NGHTTP2_NV_FLAG_NONE};
	d->body_off = 0;
	d->final_seen = d->in_trailers = d->started = false;
	d->sid = nghttp2_submit_request(d->ng, NULL, nv, d->nf, d->has_body ? &prov : NULL, d);
	ck_assert_int_gt(d->sid, 0);
	pump(d);
}

static void finish(struct h2d *d, bool cut)
{
	struct outcome *o = cur(d);

	if (o->finished)
		return;
	o->finished = true;
	o->cut = cut;
	o->body_stuck = d->held > 0 || d->body_off < d->body_len;
	d->sid = 0;
	if (d->e->cur + 1 < d->e->nreq) {
		d->e->cur++;
		d->held = 0;
		submit(d); /* the next request: another stream on the same connection */
	}
}

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2d *d = ud;

	(void)ng;
	if (f->hd.stream_id == d->sid && d->final_seen)
		d->in_trailers = true;
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nl,
		     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
	struct h2d *d = ud;
	struct outcome *o = cur(d);

	(void)ng;
	(void)flags;
	if (f->hd.stream_id != d->sid)
		return 0;
	if (d->in_trailers) {
		outcome_trailer(o, (const char *)name, nl, (const char *)value, vl);
		return 0;
	}
	if (nl == 7 && memcmp(name, ":status", 7) == 0) {
		int st = atoi((const char *)value);

		if (st >= 100 && st < 200) {
			o->continues++;
		} else {
			o->status = st;
			d->final_seen = true;
		}
		return 0;
	}
	if (nl == 10 && memcmp(name, "set-cookie", 10) == 0 && vl >= sizeof(HM__AFFINITY_COOKIE) &&
	    memcmp(value, HM__AFFINITY_COOKIE, sizeof(HM__AFFINITY_COOKIE) - 1) == 0)
		o->set_cookie = true;
	return 0;
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct h2d *d = ud;

	(void)ng;
	if (f->hd.type == NGHTTP2_HEADERS && f->hd.stream_id == d->sid && d->final_seen &&
	    !d->started) {
		d->started = true;
		env_response_started(d->e);
	}
	return 0;
}

static int on_data(nghttp2_session *ng, uint8_t flags, int32_t sid, const uint8_t *p, size_t n,
		   void *ud)
{
	struct h2d *d = ud;

	(void)ng;
	(void)flags;
	if (sid == d->sid)
		outcome_body(cur(d), (const char *)p, n);
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t sid, uint32_t code, void *ud)
{
	struct h2d *d = ud;

	(void)ng;
	if (sid == d->sid)
		finish(d, code != NGHTTP2_NO_ERROR || !d->final_seen);
	return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct h2d *d = h->data;

	(void)suggested;
	*b = uv_buf_init(d->rbuf, sizeof(d->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct h2d *d = s->data;

	if (n > 0) {
		ck_assert_int_eq(
		    nghttp2_session_mem_recv(d->ng, (const uint8_t *)b->base, (size_t)n), n);
		pump(d);
		return;
	}
	if (n == 0)
		return;
	/* The router closed the connection: a stream not ended is cut. */
	uv_read_stop(s);
	d->reading = false;
	if (d->sid != 0)
		finish(d, true);
}

static void start(struct env *e, const char *request, size_t len, size_t held)
{
	struct h2d *d = calloc(1, sizeof(*d));
	struct sockaddr_in peer = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	nghttp2_session_callbacks *cbs;
	struct hm__router_sock *s;
	int sv[2];

	ck_assert_ptr_nonnull(d);
	d->e = e;
	e->drv_state = d;
	translate(d, request, len, held);
	ck_assert_int_eq(nghttp2_session_callbacks_new(&cbs), 0);
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	ck_assert_int_eq(nghttp2_session_client_new(&d->ng, cbs, d), 0);
	nghttp2_session_callbacks_del(cbs);
	ck_assert_int_eq(nghttp2_submit_settings(d->ng, NGHTTP2_FLAG_NONE, NULL, 0), 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(hm__router_sock_open_tcp(&e->ctx, sv[0], (struct sockaddr *)&peer, &s), 0);
	ck_assert_int_eq(hm__router_h2p_open(&e->ctx, s), 0);
	uv_pipe_init(&e->loop, &d->pipe, 0);
	d->pipe.data = d;
	ck_assert_int_eq(uv_pipe_open(&d->pipe, sv[1]), 0);
	d->open = d->reading = true;
	ck_assert_int_eq(uv_read_start((uv_stream_t *)&d->pipe, on_alloc, on_read), 0);
	submit(d);
}

static void release_body(struct env *e)
{
	struct h2d *d = h2_of(e);

	d->held = 0;
	if (d->sid != 0)
		nghttp2_session_resume_data(d->ng, d->sid);
	pump(d);
}

static void quit(struct env *e)
{
	struct h2d *d = h2_of(e);
	int32_t sid = d->sid;

	if (sid == 0)
		return;
	/* An HTTP/2 client that goes away from one request resets its stream. */
	finish(d, true);
	ck_assert_int_eq(nghttp2_submit_rst_stream(d->ng, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL),
			 0);
	pump(d);
}

static void stop_reading(struct env *e)
{
	struct h2d *d = h2_of(e);

	/* A client that reads no more learns nothing more: its response is over for it. */
	if (d->reading)
		uv_read_stop((uv_stream_t *)&d->pipe);
	d->reading = false;
	finish(d, true);
}

static void free_fields(struct field *f, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(f[i].name);
		free(f[i].value);
	}
}

static void closed(uv_handle_t *h)
{
	struct h2d *d = h->data;

	nghttp2_session_del(d->ng);
	free_fields(d->f, d->nf);
	free_fields(d->tr, d->ntr);
	free(d->body);
	free(d);
}

static void teardown(struct env *e)
{
	struct h2d *d = h2_of(e);

	if (d == NULL)
		return;
	e->drv_state = NULL;
	d->open = false;
	uv_close((uv_handle_t *)&d->pipe, closed);
}

const struct driver h2_driver = {
    .name = "h2",
    .start = start,
    .release_body = release_body,
    .quit = quit,
    .stop_reading = stop_reading,
    .teardown = teardown,
};
