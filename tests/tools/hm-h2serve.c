/*
 * hm-h2serve: the HTTP/2 engine (router/h2.c) behind a plain socket with canned answers, so
 * tests can prove it against real clients (curl --http2-prior-knowledge, nghttp, h2load) before
 * it is wired into hermod-router. Test-only; it is also how the engine meets libuv the way the
 * router will use it: uv_try_write then uv_write from the engine's iovecs, reading stopped while
 * a batch is being written, one timer per connection for the engine's deadline.
 *
 *   hm-h2serve --listen HOST:PORT [--idle-timeout DURATION]
 *
 * Prints "ready" on stdout once listening and, at exit, "requests N errors M glitches G". Answers,
 * by path (the query string is ignored but for size=): /size?n=N       200, N bytes of 'x' (default
 * 13), sent in 64 KiB spans with back-pressure /echo           200 with the request body, read in
 * full first and decoded by router/http.c as a dyno would (so a chunked upload proves the engine's
 * framing to llhttp) /trailers       200, body "data", then trailers x-checksum: 42, x-count: 1
 *   /status/NNN     the router's own answer NNN (hm__router_h2_stream_error)
 *   anything else   200 "Hello, world\n"
 * A malformed request gets its 400/414/417 the same way. SIGTERM drains (GOAWAY, in-flight
 * streams finish) and exits 0 when the last connection is closed.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/opts.h"
#include "router/h2.h"

#define READ_BUF  (64 << 10)
#define SPAN	  (64 << 10)
#define MAX_CONNS 1024
#define LINGER_MS 2000 /* a lingering close, at most */

struct cfg {
	char *listen;
	int64_t idle_ms;
};

static const struct hm_opt options[] = {
    {.name = "listen",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, listen),
     .arg = "HOST:PORT",
     .help = "where to listen (IPv4)",
     .check = hm_opt_check_hostport},
    {.name = "idle-timeout",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct cfg, idle_ms),
     .def = "60s",
     .min = 1,
     .max = 3600000,
     .arg = "DURATION",
     .help = "close a connection idle this long"},
    HM_OPT_END,
};

/* One client connection. */
struct conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	struct hm__router_h2_conn *h2;
	char *rbuf;
	uv_write_t wr;
	uv_shutdown_t sd;
	size_t wr_len; /* bytes of the pending uv_write */
	bool writing, reading, closing;
	bool lingering; /* done: write side shut, input dropped until EOF or LINGER_MS */
	int handles;	/* open libuv handles */
	struct conn *prev, *next;
};

/* One request, the fake exchange. Lives until the stream is closed and its spans released. */
struct xch {
	struct hm__router_h2_stream *s;
	struct hm__router_msg m;
	struct hm__router_resp rs;
	char head[512];
	size_t left; /* /size: bytes still to queue */
	int spans;   /* spans not yet released */
	bool closed;
	bool echo, trailers;
	char *body; /* /echo: the request body */
	size_t body_len;
	struct hm__router_msg rm; /* /echo: the request as a dyno parses it */
	bool body_done;
};

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_signal_t sigterm;
static struct hm__router_h2_ctx *ctx;
static struct hm__router_limits resp_lim, req_lim;
static struct conn *conns;
static bool draining;
static unsigned long requests, errors;
static char zeros[SPAN];

static void flush(struct conn *k);

/* ---- the fake exchange -------------------------------------------------------------------- */

static void xch_maybe_free(struct xch *x)
{
	if (!x->closed || x->spans > 0)
		return;
	hm__router_msg_fini(&x->m);
	hm__router_msg_fini(&x->rm);
	free(x->body);
	free(x);
}

static void on_span(void *arg, const void *p, size_t n);

/* Queues what fits of the /size body; ends it when everything is queued. */
static void feed_body(struct xch *x)
{
	while (!x->closed && x->left > 0) {
		size_t n = x->left < SPAN ? x->left : SPAN;
		int r = hm__router_h2_stream_send(x->s, zeros, n, on_span, x);

		if (r == -ENOBUFS)
			return;
		if (r != 0)
			return;
		x->spans++;
		x->left -= n;
		if (x->left == 0)
			hm__router_h2_stream_end(x->s, NULL, 0);
	}
}

static void on_span(void *arg, const void *p, size_t n)
{
	struct xch *x = arg;

	(void)n;
	x->spans--;
	if (p != zeros) {
		free(x->body);
		x->body = NULL;
	}
	feed_body(x);
	xch_maybe_free(x);
}

/* Parses head, a canned HTTP/1.1 response head, as a dyno's and submits it. */
static int respond(struct xch *x, const char *head)
{
	uint32_t used, len = (uint32_t)strlen(head);
	const char *why;

	memcpy(x->head, head, len);
	hm__router_msg_init(&x->m, HTTP_RESPONSE, &resp_lim);
	hm__router_msg_reset(&x->m, x->head, 0);
	if (hm__router_msg_execute(&x->m, x->head, 0, len, &used) != HM__EV_HEAD ||
	    hm__router_resp_check(&x->m, &x->rs, &why) != 0)
		return -EINVAL;
	return hm__router_h2_stream_respond(x->s, &x->m, &x->rs, NULL);
}

/* A head with a Content-Length (fmt has one %zu). */
static int respond_len(struct xch *x, const char *fmt, size_t n)
{
	char head[sizeof(x->head)];

	snprintf(head, sizeof(head), fmt, n);
	return respond(x, head);
}

static void answer(struct xch *x)
{
	const struct hm__router_msg *m = hm__router_h2_stream_msg(x->s);
	const char *path = m->base + m->url_off, *q;
	size_t plen = m->url_len;
	static const char hello[] = "Hello, world\n";

	if (plen >= 8 && memcmp(path, "/status/", 8) == 0) {
		hm__router_h2_stream_error(x->s, atoi(path + 8));
		return;
	}
	if (plen >= 5 && memcmp(path, "/size", 5) == 0) {
		q = memchr(path, '?', plen);
		x->left = 13;
		if (q != NULL && strncmp(q, "?n=", 3) == 0)
			x->left = strtoull(q + 3, NULL, 10);
		if (respond_len(x,
				"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
				"Content-Length: %zu\r\n\r\n",
				x->left) == 0)
			feed_body(x);
		return;
	}
	if (plen >= 9 && memcmp(path, "/trailers", 9) == 0) {
		static const struct hm__router_h2_field tr[] = {{"X-Checksum", 10, "42", 2},
								{"X-Count", 7, "1", 1}};

		if (respond(x, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n") == 0 &&
		    hm__router_h2_stream_send(x->s, "data", 4, NULL, NULL) == 0)
			hm__router_h2_stream_end(x->s, tr, 2);
		return;
	}
	if (respond_len(
		x, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
		sizeof(hello) - 1) == 0 &&
	    hm__router_h2_stream_send(x->s, hello, sizeof(hello) - 1, NULL, NULL) == 0)
		hm__router_h2_stream_end(x->s, NULL, 0);
}

/*
 * /echo: the body bytes the engine gives (HTTP/1.1, chunked or not) go through llhttp as a
 * dyno's would, de-chunked in place; once complete the payload goes back as one span.
 */
static void echo_body(struct xch *x)
{
	while (!x->body_done) {
		struct iovec iov[4];
		int k = hm__router_h2_stream_body_peek(x->s, iov, 4);
		size_t total = 0;

		if (k == 0)
			break;
		for (int i = 0; i < k && !x->body_done; i++) {
			char *b = realloc(x->body, x->body_len + iov[i].iov_len);
			uint32_t used;
			int ev;

			if (b == NULL) {
				hm__router_h2_stream_reset(x->s, HM__H2_INTERNAL_ERROR);
				return;
			}
			x->body = b;
			memcpy(x->body + x->body_len, iov[i].iov_base, iov[i].iov_len);
			ev = hm__router_msg_execute(&x->rm, x->body, (uint32_t)x->body_len,
						    (uint32_t)iov[i].iov_len, &used);
			if (ev == HM__EV_ERROR) {
				fprintf(stderr, "hm-h2serve: request body refused: %s\n",
					x->rm.why);
				hm__router_h2_stream_reset(x->s, HM__H2_INTERNAL_ERROR);
				return;
			}
			x->body_len += x->rm.out_len;
			x->body_done = ev == HM__EV_DONE;
			total += iov[i].iov_len;
		}
		hm__router_h2_stream_body_consume(x->s, total);
	}
	if (!x->body_done)
		return;
	if (respond_len(x, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", x->body_len) != 0)
		return;
	if (x->body_len > 0 &&
	    hm__router_h2_stream_send(x->s, x->body, x->body_len, on_span, x) == 0)
		x->spans++;
	hm__router_h2_stream_end(x->s, NULL, 0);
}

/* /echo: a parser of our own over the request head, left at its body, de-chunking. */
static int echo_start(struct xch *x)
{
	const struct hm__router_msg *m = hm__router_h2_stream_msg(x->s);
	uint32_t used;

	hm__router_msg_init(&x->rm, HTTP_REQUEST, &req_lim);
	hm__router_msg_reset(&x->rm, m->base, 0);
	switch (hm__router_msg_execute(&x->rm, m->base, 0, m->head_end, &used)) {
	case HM__EV_HEAD:
		x->rm.dechunk = true;
		x->body_done = x->rm.state == HM__MSG_DONE;
		return 0;
	default:
		return -EPROTO;
	}
}

static void on_request(struct hm__router_h2_stream *s)
{
	const struct hm__router_req *rq = hm__router_h2_stream_req(s);
	const struct hm__router_msg *m = hm__router_h2_stream_msg(s);
	struct xch *x = calloc(1, sizeof(*x));

	if (x == NULL) {
		hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR);
		hm__router_h2_stream_release(s);
		return;
	}
	x->s = s;
	hm__router_h2_stream_set_data(s, x);
	requests++;
	if (hm__router_h2_stream_status(s) != 0) {
		errors++;
		hm__router_h2_stream_error(s, hm__router_h2_stream_status(s));
		return;
	}
	if (m->url_len >= 5 && memcmp(m->base + m->url_off, "/echo", 5) == 0) {
		x->echo = true;
		if (echo_start(x) != 0) {
			hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR);
			return;
		}
		if (rq->expect_continue)
			hm__router_h2_stream_continue(s);
		echo_body(x);
		return;
	}
	answer(x);
}

static void on_body(struct hm__router_h2_stream *s)
{
	struct xch *x = hm__router_h2_stream_data(s);

	if (x->echo)
		echo_body(x);
}

static void on_closed(struct hm__router_h2_stream *s, int why)
{
	struct xch *x = hm__router_h2_stream_data(s);

	(void)why;
	x->closed = true;
	hm__router_h2_stream_release(s);
	xch_maybe_free(x);
}

static void on_wakeup(struct hm__router_h2_conn *c)
{
	flush(hm__router_h2_conn_data(c));
}

static const struct hm__router_h2_ops ops = {
    .request = on_request,
    .body = on_body,
    .closed = on_closed,
    .wakeup = on_wakeup,
};

/* ---- the transport ---------------------------------------------------------------------- */

static void on_handle_closed(uv_handle_t *h)
{
	struct conn *k = h->data;

	if (--k->handles > 0)
		return;
	/* libuv has run the pending write's callback: the engine's iovecs are free. */
	if (k->h2 != NULL)
		hm__router_h2_conn_free(k->h2);
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		conns = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	free(k->rbuf);
	free(k);
}

static void conn_close(struct conn *k)
{
	if (k->closing)
		return;
	k->closing = true;
	hm__router_h2_conn_shutdown(k->h2, HM__H2_CLOSE_CONN);
	uv_close((uv_handle_t *)&k->tcp, on_handle_closed);
	uv_close((uv_handle_t *)&k->timer, on_handle_closed);
}

static void on_write(uv_write_t *req, int status)
{
	struct conn *k = req->data;

	k->writing = false;
	if (k->closing)
		return;
	if (status < 0) {
		conn_close(k);
		return;
	}
	hm__router_h2_conn_sent(k->h2, k->wr_len, uv_now(loop));
	flush(k);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
	struct conn *k = h->data;

	(void)hint;
	*b = uv_buf_init(k->rbuf, READ_BUF);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct conn *k = st->data;

	if (n < 0) {
		conn_close(k);
		return;
	}
	if (k->lingering)
		return; /* dropped */
	if (n > 0)
		hm__router_h2_conn_recv(k->h2, b->base, (size_t)n, uv_now(loop));
	flush(k);
}

static void on_timer(uv_timer_t *t)
{
	struct conn *k = t->data;

	if (k->lingering) {
		conn_close(k);
		return;
	}
	hm__router_h2_conn_tick(k->h2, uv_now(loop));
	flush(k);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *k = req->data;

	if (status != 0)
		conn_close(k);
}

/* As the router does (h2proto.c): the write side shut, what the client still sends read and
 * dropped until it closes or LINGER_MS pass, so that unread input does not turn the close into
 * a reset that destroys the end of the last response. */
static void linger(struct conn *k)
{
	if (k->lingering)
		return;
	k->lingering = true;
	k->sd.data = k;
	if (uv_shutdown(&k->sd, (uv_stream_t *)&k->tcp, on_shutdown) != 0) {
		conn_close(k);
		return;
	}
	if (!k->reading)
		k->reading = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) == 0;
	uv_timer_start(&k->timer, on_timer, LINGER_MS, 0);
}

/* Writes what the engine has, then sets reading, the timer, or closes. */
static void flush(struct conn *k)
{
	uint64_t now = uv_now(loop), d;

	if (k->closing)
		return;
	while (!k->writing && hm__router_h2_conn_want_write(k->h2)) {
		struct iovec iov[64];
		uv_buf_t b[64];
		int n = hm__router_h2_conn_output(k->h2, iov, 64, now), w;
		size_t total = 0;

		if (n == 0)
			break;
		for (int i = 0; i < n; i++) {
			b[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
			total += iov[i].iov_len;
		}
		w = uv_try_write((uv_stream_t *)&k->tcp, b, (unsigned)n);
		if (w == UV_EAGAIN)
			w = 0;
		if (w < 0) {
			conn_close(k);
			return;
		}
		hm__router_h2_conn_sent(k->h2, (size_t)w, now);
		if ((size_t)w == total)
			continue;
		/* The rest: the same memory, handed to libuv until it is written. */
		n = hm__router_h2_conn_output(k->h2, iov, 64, now);
		total = 0;
		for (int i = 0; i < n; i++) {
			b[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
			total += iov[i].iov_len;
		}
		k->wr.data = k;
		k->wr_len = total;
		if (uv_write(&k->wr, (uv_stream_t *)&k->tcp, b, (unsigned)n, on_write) != 0) {
			conn_close(k);
			return;
		}
		k->writing = true;
	}
	if (hm__router_h2_conn_dead(k->h2)) {
		conn_close(k);
		return;
	}
	if (!k->writing && hm__router_h2_conn_done(k->h2)) {
		linger(k);
		return;
	}
	if (hm__router_h2_conn_want_read(k->h2) && !k->reading) {
		k->reading = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) == 0;
	} else if (!hm__router_h2_conn_want_read(k->h2) && k->reading) {
		uv_read_stop((uv_stream_t *)&k->tcp);
		k->reading = false;
	}
	d = hm__router_h2_conn_deadline(k->h2);
	if (d == UINT64_MAX)
		uv_timer_stop(&k->timer);
	else
		uv_timer_start(&k->timer, on_timer, d > now ? d - now : 0, 0);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct conn *k;

	if (status < 0 || draining)
		return;
	k = calloc(1, sizeof(*k));
	if (k == NULL || (k->rbuf = malloc(READ_BUF)) == NULL) {
		free(k);
		return;
	}
	uv_tcp_init(loop, &k->tcp);
	uv_timer_init(loop, &k->timer);
	k->tcp.data = k->timer.data = k;
	k->handles = 2;
	k->next = conns;
	if (conns != NULL)
		conns->prev = k;
	conns = k;
	if (uv_accept(server, (uv_stream_t *)&k->tcp) != 0 ||
	    hm__router_h2_conn_new(ctx, k, uv_now(loop), &k->h2) != 0) {
		k->closing = true;
		uv_close((uv_handle_t *)&k->tcp, on_handle_closed);
		uv_close((uv_handle_t *)&k->timer, on_handle_closed);
		return;
	}
	uv_tcp_nodelay(&k->tcp, 1);
	flush(k);
}

static void on_sigterm(uv_signal_t *sig, int signum)
{
	(void)signum;
	draining = true;
	uv_close((uv_handle_t *)sig, NULL);
	uv_close((uv_handle_t *)&listener, NULL);
	for (struct conn *k = conns; k != NULL; k = k->next) {
		hm__router_h2_conn_drain(k->h2, uv_now(loop));
		flush(k);
	}
}

int main(int argc, char **argv)
{
	struct hm__router_h2_config hc;
	struct sockaddr_storage ss;
	struct cfg cfg;
	char err[256], host[256], **pos;
	uint16_t port;
	int npos, r;

	memset(&cfg, 0, sizeof(cfg));
	if ((pos = calloc((size_t)argc + 1, sizeof(*pos))) == NULL)
		return 1;
	r = hm_opts_parse(options, &cfg, argc, argv, pos, &npos, err, sizeof(err));
	if (r == HM_OPTS_HELP) {
		hm_opts_usage(stdout, "hm-h2serve --listen HOST:PORT", options);
		return 0;
	}
	if (r != 0 || npos != 0 || cfg.listen == NULL ||
	    hm_split_hostport(cfg.listen, host, sizeof(host), &port) != 0) {
		fprintf(stderr, "hm-h2serve: %s\n", r != 0 ? err : "--listen HOST:PORT needed");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	loop = uv_default_loop();
	hm__router_limits_response(&resp_lim, 1 << 20);
	hm__router_limits_request(&req_lim, 256 << 10);
	hm__router_h2_config_default(&hc);
	hc.idle_timeout_ms = (uint32_t)cfg.idle_ms;
	if (hm__router_h2_ctx_new(&ctx, &hc, &ops) != 0)
		return 1;
	uv_tcp_init(loop, &listener);
	if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 ||
	    uv_tcp_bind(&listener, (struct sockaddr *)&ss, 0) != 0 ||
	    uv_listen((uv_stream_t *)&listener, MAX_CONNS, on_connection) != 0) {
		fprintf(stderr, "hm-h2serve: cannot listen on %s\n", cfg.listen);
		return 1;
	}
	uv_signal_init(loop, &sigterm);
	uv_signal_start(&sigterm, on_sigterm, SIGTERM);
	printf("ready\n");
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	printf("requests %lu errors %lu glitches %llu\n", requests, errors,
	       (unsigned long long)hm__router_h2_ctx_stats(ctx)->glitches);
	hm__router_h2_ctx_free(ctx);
	uv_loop_close(loop);
	hm_opts_free(options, &cfg);
	free(pos);
	return 0;
}
