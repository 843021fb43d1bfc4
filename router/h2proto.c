/*
 * HTTP/2 toward clients as a client protocol (see h2proto.h): the HTTP/2 engine (router/h2.h,
 * no I/O of its own) between a client transport (router/sock.h) and one exchange per request
 * stream (router/xchg.h), as docs/h2.md, "Wiring it into the router", lays out op by op.
 *
 * The connection: every byte read goes to the engine at once (it copies what it keeps: header
 * blocks into the stream's HTTP/1.1 head, DATA into the stream's ring), so all connections of a
 * worker read into one buffer. What the engine has to write is taken as iovecs and offered to
 * the transport without queueing first (a whole batch in one writev); what the socket does not
 * take is queued a few iovecs at a time, and reading stops until it is written (the engine says
 * so: want_read). One timer per connection serves the engine's deadline (idle, header block,
 * send, drain) and those the connection's exchanges ask for; as on HTTP/1 it is re-armed lazily
 * when it fires early. Output an exchange makes from its own events (a dyno's bytes) is flushed
 * once per loop turn for all the connections it woke (a uv_check), so that responses finishing
 * together go out in one write.
 *
 * A stream: the engine hands over a checked HTTP/1.1 request (or a malformed one, logged and
 * answered 400/414/417 here); the exchange routes it like any other, sends the dyno's response
 * head back through respond() and its body as spans of the dyno connection's buffer, zero-copy,
 * which the engine releases once the transport has written them; only then does the exchange
 * read the dyno again (hm__router_xchg_sent), so a client that does not read, or whose window is
 * closed, holds its dyno back. An exchange that ends while spans of its are still queued hands
 * their buffer over (client op adopt), so that no other request's bytes can take their place
 * before they are written. A client that resets a stream or closes the connection cancels its
 * exchanges (H27, or H24 when the worker's drain deadline closes it; their dyno connections are
 * closed, never pooled, since their requests did not complete).
 *
 * --h2c: until the first bytes say which protocol the client speaks (the HTTP/2 preface, or
 * not), a connection only collects them; HTTP/1 gets the transport and the bytes.
 */
#include "router/h2proto.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "common/log.h"
#include "common/util.h"
#include "router/ctx.h"
#include "router/h1.h"
#include "router/h2.h"
#include "router/sock.h"
#include "router/xchg.h"

#define READ_BUF      (64 << 10) /* the worker's read buffer, shared by its connections */
#define OUT_IOV	      64	 /* iovecs offered to the transport at once */
#define QUEUE_IOV     4		 /* ... queued at once (libuv copies four without allocating) */
#define DRAIN_IDLE_MS 1000
#define LINGER_MS     2000 /* a lingering close, at most (as h1.c) */

_Static_assert(sizeof(struct hm__router_field) == sizeof(struct hm__router_h2_field) &&
		   offsetof(struct hm__router_field, name_len) ==
		       offsetof(struct hm__router_h2_field, name_len) &&
		   offsetof(struct hm__router_field, value) ==
		       offsetof(struct hm__router_h2_field, value) &&
		   offsetof(struct hm__router_field, value_len) ==
		       offsetof(struct hm__router_h2_field, value_len),
	       "trailer fields are handed to the engine as they are");

/* A worker's HTTP/2 state (ctx->h2). */
struct h2w {
	struct hm__router_h2_ctx *eng;
	uv_check_t check;	      /* flushes the connections their exchanges woke */
	struct hm__router_list woken; /* struct hm__router_h2p, by wlink */
	char rbuf[READ_BUF];
};

/* A client connection speaking HTTP/2 (or, with --h2c, not known yet). */
struct hm__router_h2p {
	struct hm__router_free fl; /* first member: ctx->free_h2s */
	struct hm__router_conn conn;
	struct hm__router_ctx *ctx;
	struct hm__router_sock *sock;
	struct hm__router_h2_conn *h2; /* NULL while sniffing */
	uv_timer_t timer;
	struct hm__router_list streams; /* struct h2x */
	struct hm__router_list wlink;	/* in the worker's woken list */
	struct hm__router_buf *sniff;	/* --h2c: the first bytes, until the protocol is known */
	uint32_t sniff_len;
	size_t wlen;	    /* bytes of the queued write */
	uint64_t timer_due; /* loop ms the timer fires at, 0 if not armed */
	uint64_t opened;    /* loop ms */
	uint8_t handles;    /* open handles: the transport (until handed over) and the timer */
	bool writing;	    /* a write is queued on the transport */
	bool closing;
	bool lingering; /* done: write side shut, input read and dropped until EOF or LINGER_MS */
	uint64_t linger_due;
	bool aborting; /* the worker's drain deadline: exchanges end H24 */
	bool draining;
};

/* A request stream and its exchange. Lives until the exchange ended, the stream is released
 * and every span it queued is released. */
struct h2x {
	struct hm__router_free fl; /* first member: ctx->free_h2xs */
	struct hm__router_list link;
	struct hm__router_h2p *c;
	struct hm__router_h2_stream *s; /* NULL once released */
	struct hm__router_xchg *x;	/* NULL once the exchange ended */
	struct hm__router_buf *kept;	/* adopted: the dyno buffer the queued spans are in */
	uint64_t due;			/* the exchange's deadline (loop ms), 0: none */
	uint32_t spans;			/* spans queued and not released */
	uint16_t hold;			/* calls in progress with it: not freed */
	bool no_body;			/* the response is complete with its head */
};

_Static_assert(offsetof(struct hm__router_h2p, fl) == 0, "free-list link first");
_Static_assert(offsetof(struct h2x, fl) == 0, "free-list link first");

static const struct hm__router_client_ops client_ops;
static void flush(struct hm__router_h2p *c);
static void conn_close(struct hm__router_h2p *c);
static void linger_start(struct hm__router_h2p *c);
static void on_check(uv_check_t *chk);

static uint64_t now_ms(const struct hm__router_h2p *c)
{
	return uv_now(c->ctx->loop);
}

/* ---- timers ------------------------------------------------------------------------------ */

static void on_timer(uv_timer_t *t);

/* Makes sure the timer fires no later than due (UINT64_MAX: no deadline). */
static void conn_arm(struct hm__router_h2p *c, uint64_t due)
{
	uint64_t now = now_ms(c);

	if (c->closing || due == UINT64_MAX || (c->timer_due != 0 && c->timer_due <= due))
		return;
	c->timer_due = due;
	uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- streams ------------------------------------------------------------------------------- */

static void x_maybe_free(struct h2x *h)
{
	struct hm__router_ctx *ctx = h->c->ctx;

	if (h->hold > 0 || h->x != NULL || h->s != NULL || h->spans > 0)
		return;
	hm__router_buf_put(&ctx->mem, h->kept);
	h->kept = NULL;
	hm__list_del(&h->link);
	hm__free_put(&ctx->free_h2xs, h);
}

/* The exchange is done with the stream (its response complete, or reset here). */
static void x_release(struct h2x *h)
{
	struct hm__router_h2_stream *s = h->s;

	if (s == NULL)
		return;
	h->s = NULL;
	hm__router_h2_stream_set_data(s, NULL);
	hm__router_h2_stream_release(s);
}

/* The client side of the exchange is gone under it: it ends now, logged with code. */
static void x_cancel(struct h2x *h, enum hm__router_code code)
{
	struct hm__router_xchg *x = h->x;

	if (x == NULL)
		return;
	h->x = NULL;
	h->due = 0;
	hm__router_xchg_cancel(x, code);
}

static void on_span(void *arg, const void *p, size_t n)
{
	struct h2x *h = arg;

	(void)p;
	(void)n;
	if (--h->spans == 0) {
		hm__router_buf_put(&h->c->ctx->mem, h->kept);
		h->kept = NULL;
		if (h->x != NULL) {
			h->hold++;
			hm__router_xchg_sent(h->x);
			h->hold--;
		}
	}
	x_maybe_free(h);
}

/* ---- the engine's callbacks ------------------------------------------------------------------ */

static void on_request(struct hm__router_h2_stream *s)
{
	struct hm__router_h2p *c = hm__router_h2_conn_data(hm__router_h2_stream_conn(s));
	struct hm__router_ctx *ctx = c->ctx;
	const struct hm__router_msg *m = hm__router_h2_stream_msg(s);
	int status = hm__router_h2_stream_status(s);
	struct hm__router_client_info ci = {
	    .peer = c->sock->peer,
	    .peer_len = c->sock->peer_len,
	    .port = c->sock->port,
	    .https = c->sock->https,
	    .t_first = now_ms(c),
	};
	struct h2x *h;

	if (status != 0) {
		hm_log(HM_LOG_DEBUG, "router", "bad HTTP/2 request from %s: %s", c->sock->peer,
		       hm__router_h2_stream_why(s));
		hm__router_xchg_reject(ctx, m, &ci, HM__CODE_H26, status);
		hm__router_h2_stream_error(s, status);
		hm__router_h2_stream_release(s);
		return;
	}
	h = hm__free_get(&ctx->free_h2xs);
	if (h == NULL)
		h = malloc(sizeof(*h));
	if (h != NULL) {
		memset(h, 0, sizeof(*h));
		h->x = hm__router_xchg_new(ctx);
	}
	if (h == NULL || h->x == NULL) {
		if (h != NULL)
			hm__free_put(&ctx->free_h2xs, h);
		hm__router_h2_stream_reset(s, HM__H2_INTERNAL_ERROR);
		hm__router_h2_stream_release(s);
		return;
	}
	h->c = c;
	h->s = s;
	hm__list_push(&c->streams, &h->link);
	hm__router_h2_stream_set_data(s, h);
	h->hold++;
	hm__router_xchg_start(h->x, &client_ops, h, m, hm__router_h2_stream_req(s), &ci);
	h->hold--;
	x_maybe_free(h);
}

static void on_body(struct hm__router_h2_stream *s)
{
	struct h2x *h = hm__router_h2_stream_data(s);

	if (h != NULL && h->x != NULL)
		hm__router_xchg_more(h->x);
}

static void on_closed(struct hm__router_h2_stream *s, int why)
{
	struct h2x *h = hm__router_h2_stream_data(s);

	if (h == NULL)
		return;
	h->hold++;
	/* DONE: the whole response is with the transport; the exchange ends when it is written. */
	if (why == HM__H2_CLOSE_TIMEOUT)
		x_cancel(h, HM__CODE_H28);
	else if (why != HM__H2_CLOSE_DONE)
		x_cancel(h, h->c->aborting ? HM__CODE_H24 : HM__CODE_H27);
	if (h->x == NULL)
		x_release(h);
	h->hold--;
	x_maybe_free(h);
}

static void on_wakeup(struct hm__router_h2_conn *h2)
{
	struct hm__router_h2p *c = hm__router_h2_conn_data(h2);
	struct h2w *w = c->ctx->h2;

	if (c->closing || !hm__list_empty(&c->wlink))
		return;
	if (hm__list_empty(&w->woken))
		uv_check_start(&w->check, on_check);
	hm__list_push(&w->woken, &c->wlink);
}

static const struct hm__router_h2_ops eng_ops = {
    .request = on_request,
    .body = on_body,
    .closed = on_closed,
    .wakeup = on_wakeup,
};

/* ---- the client ops the exchange calls ------------------------------------------------------- */

static void op_arm(void *cs, uint64_t due)
{
	struct h2x *h = cs;

	h->due = due;
	conn_arm(h->c, due);
}

static int op_body_peek(void *cs, uv_buf_t *b, unsigned cap, unsigned *fl)
{
	struct h2x *h = cs;
	struct iovec iov[4];
	int n = hm__router_h2_stream_body_peek(h->s, iov, cap < 4 ? (int)cap : 4);

	for (int i = 0; i < n; i++)
		b[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
	*fl = 0;
	if (hm__router_h2_stream_body_last(h->s))
		*fl |= HM__BODY_END;
	else if (hm__router_h2_stream_body_full(h->s))
		*fl |= HM__BODY_FULL;
	return n;
}

static void op_body_consume(void *cs, size_t n)
{
	struct h2x *h = cs;

	hm__router_h2_stream_body_consume(h->s, n);
}

static int op_send_continue(void *cs)
{
	struct h2x *h = cs;

	return hm__router_h2_stream_continue(h->s) == -EPIPE ? -EPIPE : 0;
}

static int op_respond(void *cs, struct hm__router_msg *m, const struct hm__router_resp *rs,
		      const struct hm__router_resp_ctx *rc, struct hm__router_resp_plan *plan)
{
	struct h2x *h = cs;
	struct hm__router_resp_ctx ctx = *rc;
	struct hm__router_h2_resp_opts o = {.set_cookie = rc->set_cookie,
					    .set_cookie_len = rc->set_cookie_len};
	int r;

	/* HTTP/2 carries the payload only (DATA frames), trailers apart, never a tunnel. */
	ctx.client_minor = 1;
	ctx.keep_alive = true;
	hm__router_resp_plan(m, rs, &ctx, plan);
	if (plan->body == HM__BODY_RAW && rs->chunked)
		plan->body = HM__BODY_DECHUNK;
	plan->trailers = true;
	plan->close = false;
	plan->tunnel = false;
	r = hm__router_h2_stream_respond(h->s, m, rs, &o);
	if (r == -EINVAL)
		return -EPROTO; /* a 101: no Upgrade over HTTP/2 (502 H25) */
	if (r < 0)
		return r;
	h->no_body = r == 1;
	if (h->no_body)
		plan->body = HM__BODY_NONE;
	return 0;
}

static int op_send(void *cs, const char *p, size_t n)
{
	struct h2x *h = cs;
	int r;

	if (n == 0)
		return 0;
	r = hm__router_h2_stream_send(h->s, p, n, on_span, h);
	if (r == -ENOBUFS)
		return r;
	if (r < 0)
		return -EPIPE;
	h->spans++;
	return 1;
}

static int op_end(void *cs, const struct hm__router_field *tr, size_t n)
{
	struct h2x *h = cs;

	if (!h->no_body && hm__router_h2_stream_end(
			       h->s, (const struct hm__router_h2_field *)(const void *)tr, n) < 0)
		return -EPIPE;
	return h->spans > 0 ? 1 : 0;
}

static int op_error(void *cs, int status)
{
	struct h2x *h = cs;
	int r;

	h->x = NULL;
	h->due = 0;
	r = hm__router_h2_stream_error(h->s, status);
	if (r == -EINVAL) {
		/* The response head went out: the status cannot change, the stream is reset. */
		hm__router_h2_stream_reset(h->s, HM__H2_INTERNAL_ERROR);
		r = -EPIPE;
	}
	x_release(h);
	x_maybe_free(h);
	return r == 0 ? 0 : -EPIPE;
}

static void op_abort(void *cs)
{
	struct h2x *h = cs;

	h->x = NULL;
	h->due = 0;
	hm__router_h2_stream_reset(h->s, HM__H2_INTERNAL_ERROR);
	x_release(h);
	x_maybe_free(h);
}

static void op_done(void *cs)
{
	struct h2x *h = cs;

	h->x = NULL;
	h->due = 0;
	x_release(h);
	x_maybe_free(h);
}

static void op_adopt(void *cs, struct hm__router_buf *b)
{
	struct h2x *h = cs;

	if (h->spans == 0) {
		hm__router_buf_put(&h->c->ctx->mem, b);
		return;
	}
	hm__router_buf_put(&h->c->ctx->mem, h->kept);
	h->kept = b;
}

static const struct hm__router_client_ops client_ops = {
    .arm = op_arm,
    .body_peek = op_body_peek,
    .body_consume = op_body_consume,
    .head_done = NULL, /* the stream keeps its head until it is released */
    .send_continue = op_send_continue,
    .respond = op_respond,
    .send = op_send,
    .end = op_end,
    .error = op_error,
    .abort = op_abort,
    .done = op_done,
    .adopt = op_adopt,
};

/* ---- the worker's state ------------------------------------------------------------------- */

static void on_check(uv_check_t *chk)
{
	struct h2w *w = chk->data;

	while (!hm__list_empty(&w->woken)) {
		struct hm__router_list *n = w->woken.next;

		hm__list_del(n);
		flush(hm__container_of(n, struct hm__router_h2p, wlink));
	}
	uv_check_stop(chk);
}

static void on_check_closed(uv_handle_t *hd)
{
	free(hd->data);
}

static void w_free(struct hm__router_ctx *ctx)
{
	struct h2w *w = ctx->h2;

	ctx->h2 = NULL;
	ctx->h2_free = NULL;
	hm__router_h2_ctx_free(w->eng);
	uv_close((uv_handle_t *)&w->check, on_check_closed);
}

/* The worker's HTTP/2 state, made with its first HTTP/2 connection. NULL: no memory. */
static struct h2w *w_get(struct hm__router_ctx *ctx)
{
	const struct hm__router_config *cfg = ctx->cfg;
	struct hm__router_h2_config hc;
	struct h2w *w = ctx->h2;

	if (w != NULL)
		return w;
	w = malloc(sizeof(*w));
	if (w == NULL)
		return NULL;
	hm__router_h2_config_default(&hc);
	hc.max_head = (uint32_t)cfg->max_head;
	hc.max_response_head = (uint32_t)cfg->max_response_head;
	hc.idle_timeout_ms = (uint32_t)cfg->keepalive_timeout;
	hc.head_timeout_ms = (uint32_t)cfg->head_timeout;
	hc.send_timeout_ms = (uint32_t)cfg->idle_timeout;
	if (hm__router_h2_ctx_new(&w->eng, &hc, &eng_ops) != 0) {
		free(w);
		return NULL;
	}
	hm__router_h2_ctx_count_into(w->eng, &ctx->slot->c.h2);
	uv_check_init(ctx->loop, &w->check);
	w->check.data = w;
	hm__list_init(&w->woken);
	ctx->h2 = w;
	ctx->h2_free = w_free;
	return w;
}

/* ---- the connection ----------------------------------------------------------------------- */

static void on_handle_closed(struct hm__router_h2p *c)
{
	struct hm__router_ctx *ctx = c->ctx;

	if (--c->handles > 0)
		return;
	/* The transport's queued write was cancelled or completed: spans still out go now. */
	if (c->h2 != NULL)
		hm__router_h2_conn_free(c->h2);
	c->h2 = NULL;
	hm__free_put(&ctx->free_h2s, c);
	hm__router_ctx_conn_del(ctx, &c->conn);
}

static void on_timer_closed(uv_handle_t *hd)
{
	on_handle_closed(hd->data);
}

static void on_sock_closed(struct hm__router_sock *s)
{
	on_handle_closed(s->data);
}

static void conn_close(struct hm__router_h2p *c)
{
	struct hm__router_list *n, *next;

	if (c->closing)
		return;
	/* Every exchange still running ends now, each logged once (H27: the client is gone; H24:
	 * the drain deadline). */
	for (n = c->streams.next; n != &c->streams; n = next) {
		struct h2x *h = hm__container_of(n, struct h2x, link);

		h->hold++;
		x_cancel(h, c->aborting ? HM__CODE_H24 : HM__CODE_H27);
		x_release(h);
		next = n->next;
		h->hold--;
		x_maybe_free(h);
	}
	c->closing = true;
	hm__list_del(&c->wlink);
	if (c->h2 != NULL)
		hm__router_h2_conn_shutdown(c->h2, HM__H2_CLOSE_CONN);
	hm__router_buf_put(&c->ctx->mem, c->sniff);
	c->sniff = NULL;
	hm__router_sock_close(c->sock);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void to_bufs(const struct iovec *iov, uv_buf_t *b, int n, size_t *total)
{
	*total = 0;
	for (int i = 0; i < n; i++) {
		b[i] = uv_buf_init(iov[i].iov_base, (unsigned)iov[i].iov_len);
		*total += iov[i].iov_len;
	}
}

/* Writes what the engine has (a queued write: when it completes), then sets reading and the
 * timer, or closes. */
static void flush(struct hm__router_h2p *c)
{
	uint64_t now;

	if (c->closing || c->h2 == NULL)
		return;
	now = now_ms(c);
	while (!c->writing && hm__router_h2_conn_want_write(c->h2)) {
		struct iovec iov[OUT_IOV];
		uv_buf_t b[OUT_IOV];
		int n = hm__router_h2_conn_output(c->h2, iov, OUT_IOV, now), r;
		size_t total;
		ssize_t w;

		if (n == 0)
			break;
		to_bufs(iov, b, n, &total);
		w = hm__router_sock_try_writev(c->sock, b, (unsigned)n);
		if (w < 0) {
			conn_close(c);
			return;
		}
		hm__router_h2_conn_sent(c->h2, (size_t)w, now);
		if ((size_t)w == total)
			continue;
		/* The socket is full: the rest of the batch is queued, a few iovecs at a time. */
		n = hm__router_h2_conn_output(c->h2, iov, QUEUE_IOV, now);
		to_bufs(iov, b, n, &total);
		r = hm__router_sock_writev(c->sock, b, (unsigned)n);
		if (r < 0) {
			conn_close(c);
			return;
		}
		if (r == 0) {
			hm__router_h2_conn_sent(c->h2, total, now);
			continue;
		}
		c->writing = true;
		c->wlen = total;
	}
	if (hm__router_h2_conn_dead(c->h2)) {
		conn_close(c);
		return;
	}
	if (!c->writing && hm__router_h2_conn_done(c->h2)) {
		linger_start(c);
		return;
	}
	if (hm__router_h2_conn_want_read(c->h2))
		hm__router_sock_read_start(c->sock);
	else
		hm__router_sock_read_stop(c->sock);
	conn_arm(c, hm__router_h2_conn_deadline(c->h2));
}

/*
 * The end of a connection that is done (GOAWAY sent, every stream closed, everything written):
 * its write side is shut and what the client still sends (WINDOW_UPDATEs, a PING, its own
 * GOAWAY) is read and dropped until it closes or LINGER_MS pass. Closing with such bytes unread
 * would reset the connection, and a reset can destroy the end of the last response before the
 * client reads it (nginx closes HTTP/2 the same way).
 */
static void linger_start(struct hm__router_h2p *c)
{
	if (c->lingering)
		return;
	c->lingering = true;
	c->linger_due = now_ms(c) + LINGER_MS;
	if (hm__router_sock_shutdown(c->sock) != 0) {
		conn_close(c);
		return;
	}
	hm__router_sock_read_start(c->sock);
	conn_arm(c, c->linger_due);
}

static void on_timer(uv_timer_t *t)
{
	struct hm__router_h2p *c = t->data;
	struct hm__router_list *n, *next;
	uint64_t now = now_ms(c), due = UINT64_MAX;

	c->timer_due = 0;
	if (c->closing)
		return;
	if (c->lingering) {
		if (now >= c->linger_due)
			conn_close(c);
		else
			conn_arm(c, c->linger_due);
		return;
	}
	if (c->h2 == NULL) {
		/* --h2c, nothing decisive read yet: as an idle HTTP/1 connection. */
		due = c->opened +
		      (c->draining ? DRAIN_IDLE_MS : (uint64_t)c->ctx->cfg->keepalive_timeout);
		if (now >= due)
			conn_close(c);
		else
			conn_arm(c, due);
		return;
	}
	if (hm__router_h2_conn_deadline(c->h2) <= now)
		hm__router_h2_conn_tick(c->h2, now);
	for (n = c->streams.next; n != &c->streams && !c->closing; n = next) {
		struct h2x *h = hm__container_of(n, struct h2x, link);

		h->hold++;
		if (h->x != NULL && h->due != 0 && h->due <= now) {
			h->due = 0;
			hm__router_xchg_timeout(h->x);
		}
		if (h->x != NULL && h->due != 0 && h->due < due)
			due = h->due;
		next = n->next;
		h->hold--;
		x_maybe_free(h);
	}
	flush(c);
	conn_arm(c, due);
}

static void on_alloc(struct hm__router_sock *s, uv_buf_t *b)
{
	struct hm__router_h2p *c = s->data;

	if (c->h2 != NULL) {
		*b = uv_buf_init(((struct h2w *)c->ctx->h2)->rbuf, READ_BUF);
		return;
	}
	if (c->sniff == NULL) {
		c->sniff = hm__router_buf_get(&c->ctx->mem, 0);
		c->sniff_len = 0;
		if (c->sniff == NULL) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
	}
	*b = uv_buf_init(c->sniff->data + c->sniff_len, c->sniff->cap - c->sniff_len);
}

/* The engine takes n bytes; what it answers decides the connection's fate. */
static void feed(struct hm__router_h2p *c, const char *p, size_t n)
{
	int r = hm__router_h2_conn_recv(c->h2, p, n, now_ms(c));

	if (r == -ECONNRESET || r == -ENOMEM) {
		conn_close(c);
		return;
	}
	/* -EPROTO (abuse): the GOAWAY goes out, then the connection closes (done). */
	flush(c);
}

static int engine_start(struct hm__router_h2p *c)
{
	struct h2w *w = w_get(c->ctx);

	int r;

	if (w == NULL)
		return -ENOMEM;
	r = hm__router_h2_conn_new(w->eng, c, now_ms(c), &c->h2);
	if (r == 0 && c->draining)
		hm__router_h2_conn_drain(c->h2, now_ms(c));
	return r;
}

/* --h2c: more of the first bytes. */
static void sniff_more(struct hm__router_h2p *c, size_t n)
{
	struct hm__router_buf *b;
	uint32_t len;
	int r;

	c->sniff_len += (uint32_t)n;
	r = hm__router_h2_sniff(c->sniff->data, c->sniff_len);
	if (r == -EAGAIN)
		return; /* a prefix of the preface so far */
	b = c->sniff;
	len = c->sniff_len;
	c->sniff = NULL;
	if (r == 1) {
		if (engine_start(c) != 0) {
			hm__router_buf_put(&c->ctx->mem, b);
			conn_close(c);
			return;
		}
		feed(c, b->data, len);
		hm__router_buf_put(&c->ctx->mem, b);
		return;
	}
	/* HTTP/1.x: the transport and the bytes go to h1.c; this object only closes its timer. */
	c->closing = true;
	c->handles--;
	hm__list_del(&c->wlink);
	hm__router_sock_attach(c->sock, NULL, NULL);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	hm__router_h1_open_with(c->ctx, c->sock, b, len);
}

static void on_read(struct hm__router_sock *s, ssize_t n)
{
	struct hm__router_h2p *c = s->data;

	if (c->closing)
		return;
	if (n < 0) {
		/* The client closed or broke the connection: its streams are cancelled. */
		conn_close(c);
		return;
	}
	if (n == 0 || c->lingering)
		return; /* lingering: dropped */
	if (c->h2 == NULL) {
		sniff_more(c, (size_t)n);
		return;
	}
	feed(c, ((struct h2w *)c->ctx->h2)->rbuf, (size_t)n);
}

static void on_written(struct hm__router_sock *s, int status)
{
	struct hm__router_h2p *c = s->data;

	c->writing = false;
	if (c->closing)
		return;
	if (status != 0) {
		conn_close(c);
		return;
	}
	hm__router_h2_conn_sent(c->h2, c->wlen, now_ms(c));
	flush(c);
}

static void on_shutdown(struct hm__router_sock *s, int status)
{
	struct hm__router_h2p *c = s->data;

	/* Only a lingering close shuts the write side (after GOAWAY and the last frame). */
	if (status != 0 && !c->closing)
		conn_close(c);
}

/* ---- what the worker does with connections ------------------------------------------------ */

static void conn_drain(struct hm__router_conn *conn)
{
	struct hm__router_h2p *c = hm__container_of(conn, struct hm__router_h2p, conn);

	if (c->closing)
		return;
	c->draining = true;
	if (c->h2 == NULL) {
		conn_arm(c, HM_MAX(c->opened + DRAIN_IDLE_MS, now_ms(c)));
		return;
	}
	/* GOAWAY: a shutdown notice now, the last stream id after the grace; in-flight streams
	 * finish, then the connection closes. */
	hm__router_h2_conn_drain(c->h2, now_ms(c));
	flush(c);
}

static void conn_abort(struct hm__router_conn *conn)
{
	struct hm__router_h2p *c = hm__container_of(conn, struct hm__router_h2p, conn);

	c->aborting = true;
	conn_close(c);
}

static const struct hm__router_conn_ops conn_ops = {
    .drain = conn_drain,
    .abort = conn_abort,
};

static const struct hm__router_sock_cbs sock_cbs = {
    .alloc = on_alloc,
    .read = on_read,
    .written = on_written,
    .shutdown = on_shutdown,
    .closed = on_sock_closed,
};

static struct hm__router_h2p *conn_new(struct hm__router_ctx *ctx, struct hm__router_sock *s)
{
	struct hm__router_h2p *c = hm__free_get(&ctx->free_h2s);

	if (c == NULL && (c = malloc(sizeof(*c))) == NULL) {
		hm__router_sock_close(s);
		return NULL;
	}
	memset(c, 0, sizeof(*c));
	c->ctx = ctx;
	c->sock = s;
	hm__list_init(&c->streams);
	hm__list_init(&c->wlink);
	hm__router_sock_attach(s, &sock_cbs, c);
	uv_timer_init(ctx->loop, &c->timer);
	c->timer.data = c;
	c->handles = 2;
	c->opened = now_ms(c);
	hm__router_ctx_conn_add(ctx, &c->conn, &conn_ops);
	if (ctx->draining)
		c->draining = true;
	return c;
}

int hm__router_h2p_open(struct hm__router_ctx *ctx, struct hm__router_sock *s)
{
	struct hm__router_h2p *c = conn_new(ctx, s);

	if (c == NULL)
		return -ENOMEM;
	if (engine_start(c) != 0) {
		conn_close(c);
		return -ENOMEM;
	}
	flush(c); /* our SETTINGS go out at once; reading starts */
	return 0;
}

int hm__router_h2p_sniff(struct hm__router_ctx *ctx, struct hm__router_sock *s)
{
	struct hm__router_h2p *c = conn_new(ctx, s);

	if (c == NULL)
		return -ENOMEM;
	conn_arm(c, c->opened + (uint64_t)ctx->cfg->keepalive_timeout);
	hm__router_sock_read_start(s);
	return 0;
}
