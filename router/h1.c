/*
 * HTTP/1.x toward clients (see h1.h): one object per client connection, one request at a time
 * on it (pipelined requests wait in the buffer), each valid request head handed to an exchange.
 *
 * Bytes are read into one buffer per connection and parsed there: the head as offsets (kept in
 * place until the exchange has written the dyno's head, then dropped), the body as llhttp
 * delimits it, given to the exchange in place (Content-Length) or re-encoded into a buffer of
 * its own (chunked: minimal sizes, no extensions, trailers filtered). Bytes the exchange holds
 * (it peeked and has not consumed them) never move; everything else is compacted only when the
 * buffer is full, and reading stops only while there is no room: that is the back-pressure
 * toward the client, and it bounds the memory of a connection by its buffers.
 *
 * Responses: the exchange gives the dyno's head, which is rewritten into a buffer and held back
 * until the first body bytes so that both go out in one writev; then the body raw (chunked stays
 * chunked) or, for an HTTP/1.0 client of a chunked response, its payload only, the connection
 * closing after it. Router errors are the canned responses of http_rewrite.c, with Connection:
 * close. A connection ends at once when everything the client sent was read and answered, else
 * through a lingering close (write side shut, input read and dropped for at most 2 s) so that
 * the close does not reset the answer away.
 *
 * One timer per connection serves its deadlines (head, keep-alive idle, linger) and those its
 * exchange asks for; progress only moves a timestamp, and the timer is re-armed lazily when it
 * fires early, so a busy connection costs no timer operation per read.
 */
#include "router/h1.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "router/ctx.h"
#include "router/http.h"
#include "router/sock.h"
#include "router/xchg.h"

#define LINGER_MS     2000
#define DRAIN_IDLE_MS 1000

/* One request: its parser and checked facts (spans into the connection's buffer). */
struct hm__router_h1_req {
	struct hm__router_free fl; /* first member: ctx->free_h1_reqs */
	struct hm__router_msg msg;
	struct hm__router_req rq;
};

enum h1_state {
	H1_OPEN = 0,
	H1_LINGER,  /* the last response is going out; input is discarded until EOF or 2 s */
	H1_CLOSING, /* handles closing */
};

enum h1_flag {
	F_EOF = 1 << 0,	      /* the client closed its side, or the connection broke */
	F_PEEKED = 1 << 1,    /* the exchange refers to body bytes in the buffer: none moves */
	F_HEAD_KEPT = 1 << 2, /* the request head's bytes are still needed */
	F_RECHUNK = 1 << 3,   /* the body is re-encoded into cbuf */
	F_TUNNEL = 1 << 4,    /* after 101: every byte is the tunnel's */
	F_CLOSE = 1 << 5,     /* the response closes the connection */
	F_RESP_OUT = 1 << 6,  /* response bytes were written: the status cannot change */
};

struct hm__router_h1 {
	struct hm__router_free fl; /* first member: ctx->free_h1s */
	struct hm__router_conn conn;
	struct hm__router_ctx *ctx;
	struct hm__router_sock *sock;
	uv_timer_t timer;
	struct hm__router_h1_req *req; /* the request being received or answered */
	struct hm__router_xchg *x;     /* its exchange, once the head was valid */
	struct hm__router_buf *in;     /* request bytes; NULL while idle and empty */
	uint32_t in_len, in_off;       /* bytes in it; bytes parsed */
	uint32_t body_off;	       /* raw body or tunnel: the first byte not consumed */
	struct hm__router_buf *cbuf;   /* chunked body, re-encoded */
	uint32_t c_off, c_len;	       /* its first byte not consumed; its length */
	struct hm__router_buf *rhead;  /* the response head for the client */
	uint32_t rhead_len;	       /* bytes of it held back for the first body bytes */
	uint32_t wpending;	       /* writes queued to the client */
	uint8_t state;		       /* enum h1_state */
	uint8_t handles;	       /* open handles: the transport and the timer */
	uint8_t flags;		       /* enum h1_flag */
	uint64_t idle_since;	       /* loop ms: when it last became idle */
	uint64_t timer_due;	       /* loop ms the timer fires at, 0 if not armed */
	uint64_t t_first;	       /* loop ms: the current request's first byte */
};

_Static_assert(offsetof(struct hm__router_h1, fl) == 0, "free-list link first");
_Static_assert(offsetof(struct hm__router_h1_req, fl) == 0, "free-list link first");

static const struct hm__router_client_ops client_ops;
static void input(struct hm__router_h1 *c);
static void flow(struct hm__router_h1 *c);
static void conn_close(struct hm__router_h1 *c);
static void conn_end(struct hm__router_h1 *c);

static uint64_t now_ms(const struct hm__router_h1 *c)
{
	return uv_now(c->ctx->loop);
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_timer(uv_timer_t *t);

/* Makes sure the timer fires no later than due. A later deadline needs no timer work: the
 * callback re-arms when it fires early. */
static void arm(struct hm__router_h1 *c, uint64_t due)
{
	uint64_t now = now_ms(c);

	if (c->state == H1_CLOSING || (c->timer_due != 0 && c->timer_due <= due))
		return;
	c->timer_due = due;
	uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
}

/* ---- requests ---------------------------------------------------------------------------- */

/* The request is over (answered, refused or abandoned): its memory goes back. */
static void req_free(struct hm__router_h1 *c)
{
	struct hm__router_iomem *mem = &c->ctx->mem;

	if (c->req != NULL) {
		hm__router_msg_fini(&c->req->msg);
		hm__free_put(&c->ctx->free_h1_reqs, c->req);
		c->req = NULL;
	}
	hm__router_buf_put(mem, c->rhead);
	hm__router_buf_put(mem, c->cbuf);
	c->rhead = c->cbuf = NULL;
	c->rhead_len = c->c_off = c->c_len = 0;
	c->flags &= F_EOF;
}

/* A request starts with the bytes at in_off: its head is moved to the buffer's start (the
 * previous request left no writes on it). Returns 0 or -ENOMEM. */
static int req_start(struct hm__router_h1 *c)
{
	struct hm__router_h1_req *r = hm__free_get(&c->ctx->free_h1_reqs);

	if (r == NULL) {
		r = malloc(sizeof(*r));
		if (r == NULL)
			return -ENOMEM;
		hm__router_msg_init(&r->msg, HTTP_REQUEST, &c->ctx->req_lim);
	}
	if (c->in_off > 0) {
		memmove(c->in->data, c->in->data + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	/* The parser is reset (not re-initialised) so that its settings and lenient flags stay. */
	hm__router_msg_reset(&r->msg, c->in->data, 0);
	c->req = r;
	c->flags |= F_HEAD_KEPT;
	c->t_first = now_ms(c);
	arm(c, c->t_first + (uint64_t)c->ctx->cfg->head_timeout);
	return 0;
}

/* Writes the router's canned response for status and ends the connection (the request is
 * over). Nothing is written to a client that has closed its side. */
static void answer_error(struct hm__router_h1 *c, int status)
{
	const struct hm__router_msg *m = &c->req->msg;
	bool head =
	    m->state != HM__MSG_HEAD && m->state != HM__MSG_ERROR && m->p.method == HTTP_HEAD;
	uv_buf_t b;
	const char *data;
	size_t len;
	int r;

	req_free(c);
	if (c->flags & F_EOF) {
		conn_close(c);
		return;
	}
	hm__router_error_response(status, head, &data, &len);
	b = uv_buf_init((char *)data, (unsigned)len);
	r = hm__router_sock_writev(c->sock, &b, 1);
	if (r < 0) {
		conn_close(c);
		return;
	}
	if (r == 1)
		c->wpending++;
	conn_end(c);
}

/* A request refused before it became an exchange: logged, answered, the connection ended. */
static void reject(struct hm__router_h1 *c, enum hm__router_code code, int status)
{
	hm__router_xchg_reject(c->ctx, &c->req->msg, c->sock->peer, c->sock->peer_len, code,
			       status);
	answer_error(c, status);
}

/* Parses the head being collected; a valid one becomes an exchange. */
static void head_pump(struct hm__router_h1 *c)
{
	struct hm__router_ctx *ctx = c->ctx;
	struct hm__router_h1_req *req = c->req;
	struct hm__router_client_info ci;
	struct hm__router_xchg *x;
	const char *why = NULL;
	uint32_t used;
	int ev, r;

	ev =
	    hm__router_msg_execute(&req->msg, c->in->data, c->in_off, c->in_len - c->in_off, &used);
	c->in_off += used;
	if (ev == HM__EV_MORE) {
		if (c->in_len == c->in->cap &&
		    (r = hm__router_buf_grow(&ctx->mem, &c->in, c->in_len,
					     (uint32_t)ctx->cfg->max_head + 1024)) != 0) {
			/* Over --max-head, or over the worker's budget for large heads: both 400,
			 * as HAProxy answers a head larger than its buffer. */
			if (r == -ENOSPC) {
				hm__ctr_add(&ctx->slot->c.head_refused, 1);
				hm_log(HM_LOG_DEBUG, "router",
				       "head from %s refused: head budget spent (%llu bytes)",
				       c->sock->peer, (unsigned long long)ctx->mem.big_bytes);
			}
			reject(c, HM__CODE_H26, 400);
			return;
		}
		req->msg.base = c->in->data;
		return;
	}
	if (ev == HM__EV_ERROR) {
		hm_log(HM_LOG_DEBUG, "router", "bad request from %s: %s", c->sock->peer,
		       req->msg.why);
		reject(c, HM__CODE_H26, req->msg.status);
		return;
	}
	r = hm__router_req_check(&req->msg, &req->rq, &why);
	if (r != 0) {
		hm_log(HM_LOG_DEBUG, "router", "bad request from %s: %s", c->sock->peer, why);
		reject(c, HM__CODE_H26, r);
		return;
	}
	x = hm__router_xchg_new(ctx);
	if (x == NULL) {
		conn_close(c);
		return;
	}
	c->x = x;
	c->body_off = req->msg.head_end;
	ci = (struct hm__router_client_info){
	    .peer = c->sock->peer,
	    .peer_len = c->sock->peer_len,
	    .port = ctx->cfg->port,
	    .t_first = c->t_first,
	};
	hm__router_xchg_start(x, &client_ops, c, &req->msg, &req->rq, &ci);
}

/* ---- the client ops the exchange calls ---------------------------------------------------- */

static void op_arm(void *cs, uint64_t due)
{
	arm(cs, due);
}

/* What is left of the buffer's start that cannot be dropped: the head while it is needed, else
 * the first body byte the exchange has not consumed (or, re-encoding, the first unparsed one). */
static uint32_t keep_from(const struct hm__router_h1 *c)
{
	if (c->req == NULL)
		return c->in_off;
	if (c->flags & F_TUNNEL)
		return c->body_off;
	if (c->flags & F_HEAD_KEPT)
		return c->req->msg.start;
	if (c->flags & F_RECHUNK)
		return c->in_off;
	return c->body_off;
}

static int op_body_peek(void *cs, uv_buf_t *b, unsigned cap, unsigned *fl)
{
	struct hm__router_h1 *c = cs;
	struct hm__router_msg *m = &c->req->msg;
	uint32_t used;

	(void)cap;
	*fl = 0;
	c->flags |= F_PEEKED;
	if (c->flags & F_TUNNEL) {
		c->in_off = c->in_len;
		if (c->in == NULL || c->body_off == c->in_len)
			return 0;
		b[0] = uv_buf_init(c->in->data + c->body_off, c->in_len - c->body_off);
		return 1;
	}
	if (c->req->rq.chunked && m->state == HM__MSG_BODY && !(c->flags & F_RECHUNK)) {
		/* Chunks are re-encoded (extensions dropped) into a buffer of their own. */
		c->cbuf = hm__router_buf_get(&c->ctx->mem, 0);
		if (c->cbuf == NULL)
			return -ENOMEM;
		c->flags |= F_RECHUNK;
		m->rechunk = true;
	}
	if (c->flags & F_RECHUNK) {
		uint32_t room = c->cbuf->cap - c->c_len;

		if (m->state == HM__MSG_BODY && c->in_off < c->in_len && room > HM__RECHUNK_SLACK) {
			m->rbuf = c->cbuf->data + c->c_len;
			m->rcap = room;
			if (hm__router_msg_execute(
				m, c->in->data, c->in_off,
				HM_MIN(c->in_len - c->in_off, room - HM__RECHUNK_SLACK),
				&used) == HM__EV_ERROR)
				return -EPROTO;
			c->in_off += used;
			c->c_len += m->rlen;
		}
		if (m->state == HM__MSG_DONE)
			*fl |= HM__BODY_END;
		else if (c->c_off == 0 && c->cbuf->cap - c->c_len <= HM__RECHUNK_SLACK)
			*fl |= HM__BODY_FULL;
		if (c->c_off == c->c_len)
			return 0;
		b[0] = uv_buf_init(c->cbuf->data + c->c_off, c->c_len - c->c_off);
		return 1;
	}
	if (m->state == HM__MSG_BODY && c->in_off < c->in_len) {
		if (hm__router_msg_execute(m, c->in->data, c->in_off, c->in_len - c->in_off,
					   &used) == HM__EV_ERROR)
			return -EPROTO;
		c->in_off += used;
	}
	if (m->state == HM__MSG_DONE)
		*fl |= HM__BODY_END;
	else if (c->in_len == c->in->cap && keep_from(c) == 0)
		*fl |= HM__BODY_FULL;
	if (c->body_off == c->in_off)
		return 0;
	b[0] = uv_buf_init(c->in->data + c->body_off, c->in_off - c->body_off);
	return 1;
}

static void op_body_consume(void *cs, size_t n)
{
	struct hm__router_h1 *c = cs;

	c->flags &= (uint8_t)~F_PEEKED;
	if (c->flags & F_RECHUNK) {
		c->c_off += (uint32_t)n;
		if (c->c_off == c->c_len)
			c->c_off = c->c_len = 0;
	} else {
		c->body_off += (uint32_t)n;
	}
	flow(c);
}

static void op_head_done(void *cs)
{
	struct hm__router_h1 *c = cs;

	c->flags &= (uint8_t)~F_HEAD_KEPT;
}

/* Writes the held response head, then data. Returns 0, 1 (queued) or -EPIPE. */
static int client_write(struct hm__router_h1 *c, const char *data, size_t n)
{
	uv_buf_t b[2];
	unsigned k = 0;
	int r;

	if (c->rhead_len > 0) {
		b[k++] = uv_buf_init(c->rhead->data, c->rhead_len);
		c->rhead_len = 0;
	}
	if (n > 0)
		b[k++] = uv_buf_init((char *)data, (unsigned)n);
	if (k == 0)
		return 0;
	c->flags |= F_RESP_OUT;
	r = hm__router_sock_writev(c->sock, b, k);
	if (r < 0)
		return -EPIPE;
	if (r == 1)
		c->wpending++;
	return r;
}

static int op_send_continue(void *cs)
{
	struct hm__router_h1 *c = cs;
	uv_buf_t b = uv_buf_init((char *)hm__router_continue, HM__ROUTER_CONTINUE_LEN);
	int r;

	if (c->req->msg.state != HM__MSG_BODY)
		return 0; /* the body is all here: nothing to wait for */
	r = hm__router_sock_writev(c->sock, &b, 1);
	if (r < 0)
		return -EPIPE;
	if (r == 1)
		c->wpending++;
	return 0;
}

static int op_respond(void *cs, struct hm__router_msg *m, const struct hm__router_resp *rs,
		      const struct hm__router_resp_ctx *rc, struct hm__router_resp_plan *plan)
{
	struct hm__router_h1 *c = cs;
	const struct hm__router_h1_req *req = c->req;
	struct hm__router_resp_ctx ctx = *rc;
	size_t len;

	ctx.client_minor = req->rq.minor;
	ctx.keep_alive = req->rq.keep_alive && req->msg.state == HM__MSG_DONE &&
			 !c->ctx->draining && !(c->flags & F_EOF);
	hm__router_resp_plan(m, rs, &ctx, plan);
	c->rhead = hm__router_buf_get(&c->ctx->mem, (uint32_t)hm__router_resp_write_bound(m, &ctx));
	if (c->rhead == NULL)
		return -ENOMEM;
	len = hm__router_resp_write(m, rs, &ctx, plan, c->rhead->data, c->rhead->cap);
	hm_require(len > 0);
	/* Held, to go out with the first body bytes in one write. */
	c->rhead_len = (uint32_t)len;
	if (plan->close)
		c->flags |= F_CLOSE;
	if (plan->tunnel)
		c->flags |= F_TUNNEL;
	return 0;
}

static int op_send(void *cs, const char *p, size_t n)
{
	return client_write(cs, p, n);
}

static int op_end(void *cs, const struct hm__router_field *trailers, size_t n)
{
	/* Trailers reach HTTP/1.1 clients in the raw chunked bytes; an HTTP/1.0 client (payload
	 * only) cannot have them. */
	(void)trailers;
	(void)n;
	return client_write(cs, NULL, 0);
}

static int op_error(void *cs, int status)
{
	struct hm__router_h1 *c = cs;

	c->x = NULL;
	if ((c->flags & (F_RESP_OUT | F_EOF)) || c->state != H1_OPEN) {
		req_free(c);
		conn_close(c);
		return -EPIPE;
	}
	/* A response head held back and never written: the client can still get a proper error
	 * instead of a cut response. */
	c->rhead_len = 0;
	answer_error(c, status);
	return 0;
}

static void op_abort(void *cs)
{
	struct hm__router_h1 *c = cs;

	c->x = NULL;
	req_free(c);
	conn_close(c);
}

static void op_done(void *cs)
{
	struct hm__router_h1 *c = cs;
	const struct hm__router_h1_req *req = c->req;
	bool keep, all_read, tunnel = (c->flags & F_TUNNEL) != 0;

	c->x = NULL;
	keep = !(c->flags & F_CLOSE) && req->rq.keep_alive && req->msg.state == HM__MSG_DONE &&
	       !c->ctx->draining && !(c->flags & F_EOF) && c->state == H1_OPEN;
	all_read = req->msg.state == HM__MSG_DONE && (c->in == NULL || c->in_off == c->in_len);
	req_free(c);
	if (tunnel) {
		conn_end(c);
		return;
	}
	if (!keep && all_read) {
		/* Everything the client sent was read and answered, and the answer is with the
		 * kernel (it still goes out, then the FIN): no lingering close, as nginx skips it
		 * when nothing more is expected. Saves a shutdown, a read and a wake-up. */
		conn_close(c);
		return;
	}
	if (!keep) {
		conn_end(c);
		return;
	}
	c->idle_since = now_ms(c);
	arm(c, c->idle_since + (uint64_t)c->ctx->cfg->keepalive_timeout);
	if (c->in != NULL && c->in_off < c->in_len)
		input(c); /* pipelined */
	else
		flow(c);
}

static const struct hm__router_client_ops client_ops = {
    .arm = op_arm,
    .body_peek = op_body_peek,
    .body_consume = op_body_consume,
    .head_done = op_head_done,
    .send_continue = op_send_continue,
    .respond = op_respond,
    .send = op_send,
    .end = op_end,
    .error = op_error,
    .abort = op_abort,
    .done = op_done,
};

/* ---- the connection ----------------------------------------------------------------------- */

static void on_handle_closed(struct hm__router_h1 *c)
{
	struct hm__router_ctx *ctx = c->ctx;

	if (--c->handles > 0)
		return;
	hm__free_put(&ctx->free_h1s, c);
	hm__router_ctx_conn_del(ctx, &c->conn);
}

static void on_timer_closed(uv_handle_t *h)
{
	on_handle_closed(h->data);
}

static void on_sock_closed(struct hm__router_sock *s)
{
	on_handle_closed(s->data);
}

static void conn_close(struct hm__router_h1 *c)
{
	if (c->state == H1_CLOSING)
		return;
	if (c->x != NULL) {
		struct hm__router_xchg *x = c->x;

		c->x = NULL;
		hm__router_xchg_cancel(x, HM__CODE_NONE);
	}
	req_free(c);
	c->state = H1_CLOSING;
	hm__router_buf_put(&c->ctx->mem, c->in);
	c->in = NULL;
	c->in_len = c->in_off = 0;
	hm__router_sock_close(c->sock);
	uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_shutdown(struct hm__router_sock *s, int status)
{
	struct hm__router_h1 *c = s->data;

	if (c->state != H1_LINGER)
		return;
	if (status != 0 || (c->flags & F_EOF)) {
		conn_close(c);
		return;
	}
	/* Wait for the client to close its side (reading and discarding), for at most 2 s, so
	 * that unread input does not turn our close into a reset that destroys the response. */
	c->timer_due = 0;
	arm(c, now_ms(c) + LINGER_MS);
}

static void linger_start(struct hm__router_h1 *c)
{
	if ((c->flags & F_EOF) || hm__router_sock_shutdown(c->sock) != 0)
		conn_close(c);
}

/* Ends the connection after what is queued has been written. */
static void conn_end(struct hm__router_h1 *c)
{
	if (c->state != H1_OPEN)
		return;
	req_free(c);
	c->state = H1_LINGER;
	if (c->wpending == 0)
		linger_start(c);
	else
		flow(c);
}

static void on_alloc(struct hm__router_sock *s, uv_buf_t *b)
{
	struct hm__router_h1 *c = s->data;

	if (c->in == NULL) {
		c->in = hm__router_buf_get(&c->ctx->mem, 0);
		c->in_len = c->in_off = 0;
		if (c->in == NULL) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
	}
	if (c->state == H1_LINGER)
		c->in_len = c->in_off = 0; /* discarding (no write refers to c->in any more) */
	*b = uv_buf_init(c->in->data + c->in_len, c->in->cap - c->in_len);
}

/* The client closed its side or its connection broke. */
static void on_eof(struct hm__router_h1 *c)
{
	c->flags |= F_EOF;
	if (c->state != H1_OPEN || c->req == NULL) {
		if (c->state != H1_CLOSING && (c->state != H1_LINGER || c->wpending == 0))
			conn_close(c);
		return;
	}
	if (c->x == NULL) {
		/* An incomplete request: nothing to answer, nothing to log. */
		conn_close(c);
		return;
	}
	hm__router_xchg_client_eof(c->x);
}

static void on_read(struct hm__router_sock *s, ssize_t n)
{
	struct hm__router_h1 *c = s->data;

	if (n > 0) {
		c->in_len += (uint32_t)n;
		input(c);
		return;
	}
	if (n == 0) {
		flow(c);
		return;
	}
	on_eof(c);
}

static void input(struct hm__router_h1 *c)
{
	if (c->state == H1_LINGER) {
		c->in_len = c->in_off = 0;
		flow(c);
		return;
	}
	if (c->state != H1_OPEN)
		return;
	if (c->x != NULL) {
		/* Body bytes, or any: the exchange forwards what it can (not while it routes). */
		hm__router_xchg_more(c->x);
	} else {
		if (c->req == NULL) {
			if (c->in == NULL || c->in_off == c->in_len) {
				flow(c);
				return;
			}
			if (req_start(c) != 0) {
				conn_close(c);
				return;
			}
		}
		head_pump(c);
	}
	if (c->state == H1_OPEN || c->state == H1_LINGER)
		flow(c);
}

/*
 * Buffer upkeep and read control: compact what is no longer needed (never bytes the exchange
 * holds), give the buffer back when idle and empty, read while there is room.
 */
static void flow(struct hm__router_h1 *c)
{
	uint32_t keep;
	bool want;

	if (c->state == H1_CLOSING)
		return;
	if (c->in != NULL && (!(c->flags & F_PEEKED) || (c->flags & F_RECHUNK))) {
		keep = keep_from(c);
		if (keep == c->in_len && (c->req == NULL || !(c->flags & F_HEAD_KEPT))) {
			c->in_len = c->in_off = c->body_off = 0;
			if (c->req == NULL || c->state == H1_LINGER) {
				hm__router_buf_put(&c->ctx->mem, c->in);
				c->in = NULL;
			}
		} else if (keep > 0 && c->in_len == c->in->cap) {
			memmove(c->in->data, c->in->data + keep, c->in_len - keep);
			c->in_len -= keep;
			c->in_off -= keep;
			c->body_off = c->body_off >= keep ? c->body_off - keep : 0;
			if (c->req != NULL) {
				if (c->flags & F_HEAD_KEPT) {
					hm__router_msg_shift(&c->req->msg, keep);
					hm__router_req_shift(&c->req->rq, keep);
				}
				c->req->msg.base = c->in->data;
			}
		}
	}
	want = !(c->flags & F_EOF) && (c->in == NULL || c->in_len < c->in->cap);
	if (want)
		hm__router_sock_read_start(c->sock);
	else
		hm__router_sock_read_stop(c->sock);
}

static void on_written(struct hm__router_sock *s, int status)
{
	struct hm__router_h1 *c = s->data;
	struct hm__router_xchg *x = c->x;

	c->wpending--;
	if (c->state == H1_CLOSING)
		return;
	if (status != 0) {
		if (x != NULL) {
			c->x = NULL;
			hm__router_xchg_cancel(x, HM__CODE_H27);
		}
		conn_close(c);
		return;
	}
	if (c->state == H1_LINGER) {
		if (c->wpending == 0)
			linger_start(c);
		return;
	}
	if (x != NULL && c->wpending == 0)
		hm__router_xchg_sent(x);
}

static void on_timer(uv_timer_t *t)
{
	struct hm__router_h1 *c = t->data;
	const struct hm__router_config *cfg = c->ctx->cfg;
	uint64_t now = now_ms(c), due;

	c->timer_due = 0;
	if (c->state == H1_LINGER) {
		conn_close(c);
		return;
	}
	if (c->state != H1_OPEN)
		return;
	if (c->x != NULL) {
		hm__router_xchg_timeout(c->x);
		return;
	}
	if (c->req != NULL) {
		due = c->t_first + (uint64_t)cfg->head_timeout;
		if (now >= due) {
			reject(c, HM__CODE_H28, 408);
			return;
		}
	} else {
		uint64_t idle = (uint64_t)cfg->keepalive_timeout;

		if (c->ctx->draining && idle > DRAIN_IDLE_MS)
			idle = DRAIN_IDLE_MS;
		due = c->idle_since + idle;
		if (now >= due) {
			conn_close(c);
			return;
		}
	}
	arm(c, due);
}

/* ---- what the worker does with connections ------------------------------------------------ */

static void conn_drain(struct hm__router_conn *conn)
{
	struct hm__router_h1 *c = hm__container_of(conn, struct hm__router_h1, conn);

	if (c->state == H1_OPEN && c->req == NULL)
		arm(c, HM_MAX(c->idle_since + DRAIN_IDLE_MS, now_ms(c)));
}

static void conn_abort(struct hm__router_conn *conn)
{
	struct hm__router_h1 *c = hm__container_of(conn, struct hm__router_h1, conn);
	struct hm__router_xchg *x = c->x;

	if (c->state == H1_CLOSING)
		return;
	if (x != NULL) {
		c->x = NULL;
		hm__router_xchg_cancel(x, HM__CODE_H24);
	}
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

int hm__router_h1_open(struct hm__router_ctx *ctx, struct hm__router_sock *s)
{
	struct hm__router_h1 *c = hm__free_get(&ctx->free_h1s);

	if (c == NULL && (c = malloc(sizeof(*c))) == NULL) {
		hm__router_sock_close(s);
		return -ENOMEM;
	}
	memset(c, 0, sizeof(*c));
	c->ctx = ctx;
	c->sock = s;
	hm__router_sock_attach(s, &sock_cbs, c);
	uv_timer_init(ctx->loop, &c->timer);
	c->timer.data = c;
	c->handles = 2;
	hm__router_ctx_conn_add(ctx, &c->conn, &conn_ops);
	c->idle_since = now_ms(c);
	arm(c, c->idle_since + (uint64_t)ctx->cfg->keepalive_timeout);
	flow(c);
	return 0;
}
