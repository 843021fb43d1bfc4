/*
 * The "h1" client protocol driver (see xchg_env.h): the router's HTTP/1 protocol (router/h1.c)
 * on one end of a socketpair, opened as the worker opens an accepted connection, and a client
 * on the other end that writes the request bytes and parses what comes back with the router's
 * own parser (router/http.h), as a strict HTTP/1.1 client would: interim responses counted,
 * chunked bodies de-chunked (trailers collected), a close before the end of a body a cut.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "router/h1.h"
#include "router/sock.h"
#include "tests/unit/hm_check.h"
#include "tests/unit/router/xchg_env.h"

struct h1d {
	struct env *e;
	uv_pipe_t pipe;
	bool open;
	char *raw; /* the request (owned) */
	size_t len, held;
	size_t acked; /* request bytes whose write completed */
	struct hm__router_limits lim;
	struct hm__router_msg m; /* the response being read */
	bool head_req;		 /* the request is HEAD: responses have no body */
	bool tunnel;		 /* after 101: every byte is the tunnel's */
	char tbuf[1024];
	char buf[65536];
	uint32_t blen, bpos;
};

struct cwrite {
	uv_write_t w;
	struct h1d *d;
	size_t n;
	char data[];
};

static struct h1d *h1_of(struct env *e)
{
	return e->drv_state;
}

static struct outcome *cur(struct h1d *d)
{
	return &d->e->out[d->e->cur < d->e->nreq ? d->e->cur : d->e->nreq - 1];
}

static void written(uv_write_t *w, int status)
{
	struct cwrite *cw = hm__container_of(w, struct cwrite, w);

	if (status == 0 && cw->d != NULL)
		cw->d->acked += cw->n;
	free(cw);
}

static void client_write(struct h1d *d, const char *p, size_t n)
{
	struct cwrite *cw;
	uv_buf_t b;

	if (n == 0 || !d->open)
		return;
	cw = malloc(sizeof(*cw) + n);
	ck_assert_ptr_nonnull(cw);
	cw->d = d;
	cw->n = n;
	memcpy(cw->data, p, n);
	b = uv_buf_init(cw->data, (unsigned)n);
	ck_assert_int_eq(uv_write(&cw->w, (uv_stream_t *)&d->pipe, &b, 1, written), 0);
}

static void quit(struct env *e);

static void next_response(struct h1d *d, uint32_t at)
{
	hm__router_msg_reset(&d->m, d->buf, at);
	hm__router_msg_skip_body(&d->m, d->head_req);
}

static void finish(struct h1d *d, bool cut)
{
	struct outcome *o = cur(d);

	if (o->finished)
		return;
	o->finished = true;
	o->cut = cut;
	o->body_stuck = d->acked < d->len * (size_t)d->e->nreq;
	if (d->m.tbuf != NULL) {
		struct hm__router_field f[16];
		size_t n = hm__router_msg_trailers(&d->m, f, 16);

		for (size_t i = 0; i < n; i++)
			outcome_trailer(o, f[i].name, f[i].name_len, f[i].value, f[i].value_len);
	}
	if (d->e->cur + 1 < d->e->nreq)
		d->e->cur++;
}

/* The response head is in: what the client sees of it. */
static void on_head(struct h1d *d)
{
	const struct hm__router_msg *m = &d->m;
	struct outcome *o = cur(d);

	o->status = m->p.status_code;
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];

		if (h->id == HM__HDR_SET_COOKIE && h->value_len >= sizeof(HM__AFFINITY_COOKIE) &&
		    memcmp(m->base + h->value_off, HM__AFFINITY_COOKIE,
			   sizeof(HM__AFFINITY_COOKIE) - 1) == 0)
			o->set_cookie = true;
	}
	env_response_started(d->e);
}

static void parse(struct h1d *d)
{
	while (d->bpos < d->blen) {
		uint32_t used;
		int st = d->m.state, ev;

		if (d->tunnel) {
			outcome_body(cur(d), d->buf + d->bpos, d->blen - d->bpos);
			d->bpos = d->blen;
			if (d->e->tunnel_probe != NULL &&
			    cur(d)->body_len >= strlen(d->e->tunnel_probe)) {
				d->blen = d->bpos = 0;
				quit(d->e);
				return;
			}
			break;
		}
		if (st == HM__MSG_DONE)
			next_response(d, d->bpos);
		ev = hm__router_msg_execute(&d->m, d->buf, d->bpos, d->blen - d->bpos, &used);
		ck_assert_msg(ev != HM__EV_ERROR, "the router wrote a malformed response: %s",
			      d->m.why);
		if (st == HM__MSG_HEAD || st == HM__MSG_DONE) {
			if (ev == HM__EV_MORE) {
				d->bpos += used;
				break;
			}
			d->bpos += used;
			if (d->m.p.status_code == 100) {
				cur(d)->continues++;
				next_response(d, d->bpos);
				continue;
			}
			on_head(d);
			if (d->m.p.status_code == 101) {
				d->tunnel = true;
				if (d->e->tunnel_probe != NULL)
					client_write(d, d->e->tunnel_probe,
						     strlen(d->e->tunnel_probe));
				continue;
			}
			d->m.dechunk = (d->m.p.flags & F_CHUNKED) != 0;
			if (d->m.dechunk)
				hm__router_msg_collect_trailers(&d->m, d->tbuf, sizeof(d->tbuf));
			if (d->m.state == HM__MSG_DONE)
				finish(d, false);
			continue;
		}
		if (d->m.dechunk)
			outcome_body(cur(d), d->buf + d->m.out_off, d->m.out_len);
		else
			outcome_body(cur(d), d->buf + d->bpos, used);
		d->bpos += used;
		if (ev == HM__EV_DONE)
			finish(d, false);
	}
	if (d->m.state == HM__MSG_BODY || d->m.state == HM__MSG_DONE || d->tunnel) {
		/* Body bytes are not kept (the head is done with). */
		memmove(d->buf, d->buf + d->bpos, d->blen - d->bpos);
		d->blen -= d->bpos;
		d->bpos = 0;
	}
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct h1d *d = h->data;

	(void)suggested;
	*b = uv_buf_init(d->buf + d->blen, (unsigned)(sizeof(d->buf) - d->blen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct h1d *d = s->data;

	(void)b;
	if (n > 0) {
		d->blen += (uint32_t)n;
		parse(d);
		return;
	}
	if (n == 0)
		return;
	/* The router closed the connection: a body that ends with the close is complete. */
	if (d->m.state == HM__MSG_BODY && !d->tunnel &&
	    hm__router_msg_finish(&d->m) == HM__EV_DONE) {
		finish(d, false);
		return;
	}
	finish(d, !d->tunnel && (cur(d)->status == 0 || d->m.state != HM__MSG_DONE));
}

static void start(struct env *e, const char *request, size_t len, size_t held)
{
	struct h1d *d = calloc(1, sizeof(*d));
	struct sockaddr_in peer = {.sin_family = AF_INET,
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct hm__router_sock *s;
	int sv[2];

	ck_assert_ptr_nonnull(d);
	d->e = e;
	e->drv_state = d;
	d->raw = malloc(len);
	ck_assert_ptr_nonnull(d->raw);
	memcpy(d->raw, request, len);
	d->len = len;
	d->held = held;
	d->head_req = len >= 5 && memcmp(request, "HEAD ", 5) == 0;
	hm__router_limits_response(&d->lim, 1 << 20);
	hm__router_msg_init(&d->m, HTTP_RESPONSE, &d->lim);
	next_response(d, 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	ck_assert_int_eq(hm__router_sock_open_tcp(&e->ctx, sv[0], (struct sockaddr *)&peer, &s), 0);
	ck_assert_int_eq(hm__router_h1_open(&e->ctx, s), 0);
	uv_pipe_init(&e->loop, &d->pipe, 0);
	d->pipe.data = d;
	ck_assert_int_eq(uv_pipe_open(&d->pipe, sv[1]), 0);
	d->open = true;
	ck_assert_int_eq(uv_read_start((uv_stream_t *)&d->pipe, on_alloc, on_read), 0);
	/* A second request is pipelined behind the first (held bytes only for one request). */
	client_write(d, d->raw, len - held);
	for (int i = 1; i < e->nreq; i++)
		client_write(d, d->raw, len);
}

static void release_body(struct env *e)
{
	struct h1d *d = h1_of(e);

	client_write(d, d->raw + d->len - d->held, d->held);
	d->held = 0;
}

static void closed(uv_handle_t *h)
{
	struct h1d *d = h->data;

	hm__router_msg_fini(&d->m);
	free(d->raw);
	free(d);
}

static void quit(struct env *e)
{
	struct h1d *d = h1_of(e);

	uv_os_fd_t fd;

	if (!d->open)
		return;
	d->open = false;
	uv_read_stop((uv_stream_t *)&d->pipe);
	finish(d, true);
	/* Both ways: the router reads the end of the stream at once. */
	ck_assert_int_eq(uv_fileno((uv_handle_t *)&d->pipe, &fd), 0);
	shutdown(fd, SHUT_RDWR);
}

static void stop_reading(struct env *e)
{
	struct h1d *d = h1_of(e);

	/* A client that reads no more learns nothing more: its response is over for it. */
	uv_read_stop((uv_stream_t *)&d->pipe);
	finish(d, true);
}

static void teardown(struct env *e)
{
	struct h1d *d = h1_of(e);

	if (d == NULL)
		return;
	e->drv_state = NULL;
	uv_close((uv_handle_t *)&d->pipe, closed);
}

const struct driver h1_driver = {
    .name = "h1",
    .start = start,
    .release_body = release_body,
    .quit = quit,
    .stop_reading = stop_reading,
    .teardown = teardown,
};
