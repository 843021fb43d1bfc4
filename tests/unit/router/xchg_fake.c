/*
 * The "fake" client protocol driver (see xchg_env.h): written in the test against the exchange's
 * client ops only, in the shape HTTP/2 has. The request head is parsed and checked by http.c
 * (as the HTTP/2 engine does with the HTTP/1.1 head it writes), the body is handed over already
 * framed (as the engine's ring presents it), the response comes as a head and then its payload
 * (never a tunnel; chunked responses de-chunked, their trailers apart), router errors are a
 * status, and breaking a response off is a reset. Its timer is the exchange's only timer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "router/xchg.h"
#include "tests/unit/hm_check.h"
#include "tests/unit/router/xchg_env.h"

/* The request body bytes presented at a time: HTTP/2's initial stream window. */
#define WINDOW 65535

struct fake {
	struct env *e;
	uv_timer_t timer;
	uv_timer_t later; /* "written" reports for spans refused with -ENOBUFS */
	struct hm__router_xchg *x;
	struct hm__router_msg msg;
	struct hm__router_req rq;
	char *raw;	  /* the request: head then body (owned) */
	size_t len, held; /* its length; body bytes not given yet */
	uint32_t head_end;
	size_t consumed; /* body bytes the exchange consumed */
	bool responded;	 /* a response head was taken (it cannot be replaced any more) */
	bool stopped;	 /* the client reads nothing more */
	int enobufs;	 /* send() refuses this many times first */
	bool pending;	 /* a send was taken but not "written" (stopped) */
	int open_timers; /* while closing: timers whose close callback has not run */
};

static struct fake *fake_of(struct env *e)
{
	return e->drv_state;
}

static struct outcome *cur(struct fake *f)
{
	return &f->e->out[f->e->cur];
}

static void on_timer(uv_timer_t *t)
{
	struct fake *f = t->data;

	if (f->x != NULL)
		hm__router_xchg_timeout(f->x);
}

static void op_arm(void *cs, uint64_t due)
{
	struct fake *f = cs;
	uint64_t now = uv_now(&f->e->loop);

	uv_timer_start(&f->timer, on_timer, due > now ? due - now : 0, 0);
}

static int op_body_peek(void *cs, uv_buf_t *b, unsigned cap, unsigned *fl)
{
	struct fake *f = cs;
	size_t from = f->head_end + f->consumed, to = f->len - f->held;

	ck_assert_uint_ge(cap, 3);
	*fl = 0;
	if (to - from > WINDOW) {
		to = from + WINDOW;
		*fl |= HM__BODY_FULL;
	} else if (f->held == 0) {
		*fl |= HM__BODY_END;
	}
	if (from >= to)
		return 0;
	b[0] = uv_buf_init(f->raw + from, (unsigned)(to - from));
	return 1;
}

static void op_body_consume(void *cs, size_t n)
{
	struct fake *f = cs;

	f->consumed += n;
	ck_assert_uint_le(f->head_end + f->consumed, f->len - f->held);
}

static int op_send_continue(void *cs)
{
	cur(cs)->continues++;
	return 0;
}

static int op_respond(void *cs, struct hm__router_msg *m, const struct hm__router_resp *rs,
		      const struct hm__router_resp_ctx *rc, struct hm__router_resp_plan *plan)
{
	struct fake *f = cs;
	struct hm__router_resp_ctx ctx = *rc;

	ctx.client_minor = 1;
	ctx.keep_alive = true;
	hm__router_resp_plan(m, rs, &ctx, plan);
	if (plan->tunnel)
		return -EPROTO; /* as HTTP/2: no Upgrade */
	if (plan->body == HM__BODY_RAW && rs->chunked)
		plan->body = HM__BODY_DECHUNK;
	plan->trailers = true;
	plan->close = false;
	f->responded = true;
	cur(f)->status = rs->status;
	cur(f)->set_cookie = rc->set_cookie != NULL;
	env_response_started(f->e);
	return 0;
}

static void on_later(uv_timer_t *t)
{
	struct fake *f = t->data;

	if (f->x != NULL)
		hm__router_xchg_sent(f->x);
}

static int op_send(void *cs, const char *p, size_t n)
{
	struct fake *f = cs;

	if (f->enobufs > 0 && n > 0) {
		/* Full for now: room comes back on the next loop turn, as a span is released. */
		f->enobufs--;
		uv_timer_start(&f->later, on_later, 0, 0);
		return -ENOBUFS;
	}
	outcome_body(cur(f), p, n);
	if (f->stopped && n > 0) {
		f->pending = true;
		return 1;
	}
	return 0;
}

static int op_end(void *cs, const struct hm__router_field *tr, size_t n)
{
	struct fake *f = cs;

	for (size_t i = 0; i < n; i++)
		outcome_trailer(cur(f), tr[i].name, tr[i].name_len, tr[i].value, tr[i].value_len);
	return f->pending ? 1 : 0;
}

static void ended(struct fake *f, bool cut)
{
	struct outcome *o = cur(f);

	f->x = NULL;
	o->cut = cut;
	o->finished = true;
	o->body_stuck = f->held > 0 || f->head_end + f->consumed < f->len - f->held;
	uv_timer_stop(&f->timer);
	uv_timer_stop(&f->later);
}

static int op_error(void *cs, int status)
{
	struct fake *f = cs;

	if (f->responded) {
		ended(f, true); /* a reset: the status cannot change */
		return -EPIPE;
	}
	cur(f)->status = status;
	ended(f, false);
	return 0;
}

static void op_abort(void *cs)
{
	ended(cs, true);
}

static void start(struct env *e, const char *request, size_t len, size_t held);

static void op_done(void *cs)
{
	struct fake *f = cs;
	struct env *e = f->e;

	ended(f, false);
	if (e->cur + 1 < e->nreq) {
		/* The next request right away, as a client reusing its connection would. */
		e->cur++;
		start(e, f->raw, f->len, 0);
	}
}

static const struct hm__router_client_ops ops = {
    .arm = op_arm,
    .body_peek = op_body_peek,
    .body_consume = op_body_consume,
    .head_done = NULL,
    .send_continue = op_send_continue,
    .respond = op_respond,
    .send = op_send,
    .end = op_end,
    .error = op_error,
    .abort = op_abort,
    .done = op_done,
};

static void start(struct env *e, const char *request, size_t len, size_t held)
{
	struct fake *f = fake_of(e);
	struct hm__router_client_info ci = {.peer = "127.0.0.1", .peer_len = 9, .port = 8080};
	const char *why = NULL;
	uint32_t used;

	if (f == NULL) {
		f = calloc(1, sizeof(*f));
		ck_assert_ptr_nonnull(f);
		f->e = e;
		e->drv_state = f;
		uv_timer_init(&e->loop, &f->timer);
		uv_timer_init(&e->loop, &f->later);
		f->timer.data = f->later.data = f;
		hm__router_msg_init(&f->msg, HTTP_REQUEST, &e->ctx.req_lim);
	}
	if (f->raw != request) {
		f->raw = malloc(len);
		ck_assert_ptr_nonnull(f->raw);
		memcpy(f->raw, request, len);
	}
	f->len = len;
	f->held = held;
	f->consumed = 0;
	f->responded = false;
	hm__router_msg_reset(&f->msg, f->raw, 0);
	ck_assert_int_eq(hm__router_msg_execute(&f->msg, f->raw, 0, (uint32_t)len, &used),
			 HM__EV_HEAD);
	f->head_end = used;
	ck_assert_int_eq(hm__router_req_check(&f->msg, &f->rq, &why), 0);
	f->x = hm__router_xchg_new(&e->ctx);
	ck_assert_ptr_nonnull(f->x);
	ci.t_first = uv_now(&e->loop);
	hm__router_xchg_start(f->x, &ops, f, &f->msg, &f->rq, &ci);
}

static void release_body(struct env *e)
{
	struct fake *f = fake_of(e);

	f->held = 0;
	if (f->x != NULL)
		hm__router_xchg_more(f->x);
}

static void quit(struct env *e)
{
	struct fake *f = fake_of(e);

	if (f->x != NULL)
		hm__router_xchg_client_eof(f->x);
}

static void stop_reading(struct env *e)
{
	fake_of(e)->stopped = true;
}

/* Frees the driver once both of its timers have closed (libuv runs close callbacks in no
 * promised order). */
static void fake_closed(uv_handle_t *h)
{
	struct fake *f = h->data;

	if (--f->open_timers == 0)
		free(f);
}

static void teardown(struct env *e)
{
	struct fake *f = fake_of(e);

	if (f == NULL)
		return;
	if (f->x != NULL)
		hm__router_xchg_cancel(f->x, HM__CODE_NONE);
	hm__router_msg_fini(&f->msg);
	free(f->raw);
	f->raw = NULL;
	f->open_timers = 2;
	uv_close((uv_handle_t *)&f->later, fake_closed);
	uv_close((uv_handle_t *)&f->timer, fake_closed);
	e->drv_state = NULL;
}

/* Refuses the next n response spans with -ENOBUFS (a protocol whose queue is full). */
void fake_enobufs(struct env *e, int n)
{
	fake_of(e)->enobufs = n;
}

const struct driver fake_driver = {
    .name = "fake",
    .start = start,
    .release_body = release_body,
    .quit = quit,
    .stop_reading = stop_reading,
    .teardown = teardown,
};
