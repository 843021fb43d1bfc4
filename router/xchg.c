/*
 * The exchange (see xchg.h and xchg-t.h): one request, from a valid head to its last response
 * byte, whatever protocol the client speaks.
 *
 * Its life is the state in xchg-t.h. Routing is synchronous (one atomic load for the table
 * map, a lookup, a choice); connecting, sending, waiting and receiving are driven by the
 * upstream's callbacks (up_ops below) and by what the client's protocol reports (more, sent,
 * client_eof, timeout). Request bytes go from the protocol's buffer to the dyno and response
 * bytes from the upstream's buffer to the protocol without a copy; the exchange only decides
 * when each side may move or reuse its bytes: the request's are consumed once written and no
 * longer needed for a resend, the response's are held until the protocol has written them.
 *
 * Every way an exchange ends goes through end(): the in-flight count and the dyno connection
 * are given back, the log line has been written exactly once, and the object returns to the
 * free list before the protocol hears of the end, so that the protocol may start the next
 * exchange (a pipelined request) from inside that call.
 */
#include "router/xchg.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "router/ctx.h"
#include "router/http.h"
#include "router/rand.h"
#include "router/upstream.h"

_Static_assert(offsetof(struct hm__router_xchg, fl) == 0, "free-list link first");

enum { FAIL_REFUSED = 1, FAIL_TIMEOUT = 2 };

#define BOOT_POLL_MS 100
#define TRAILERS_MAX 64

static const struct hm__router_upstream_ops up_ops;

static void route(struct hm__router_xchg *x);
static bool pump_request(struct hm__router_xchg *x);

static uint64_t now_ms(const struct hm__router_xchg *x)
{
	return uv_now(x->ctx->loop);
}

static void arm(struct hm__router_xchg *x, uint64_t due)
{
	x->ops->arm(x->cs, due);
}

/*
 * A request that may go to the dyno twice: repeating it is harmless (RFC 9110, 9.2.2). A dyno
 * that closes without answering may have read and acted on the request, so only these are sent
 * again (RFC 9112, 9.3.1: a proxy must not retry non-idempotent requests).
 */
static bool idempotent(uint8_t method)
{
	switch (method) {
	case HTTP_GET:
	case HTTP_HEAD:
	case HTTP_OPTIONS:
	case HTTP_TRACE:
	case HTTP_PUT:
	case HTTP_DELETE:
		return true;
	default:
		return false;
	}
}

/* ---- in-flight accounting --------------------------------------------------------------- */

static void inflight_hold(struct hm__router_xchg *x, struct hm_table_map *map, uint64_t file_id)
{
	hm_table_map_ref(map);
	x->map = map;
	x->file_id = file_id;
	x->slot = x->route.slot;
	/* Ledger first, table second (and the reverse when releasing): a worker killed between the
	 * two leaves the ledger covering at least what the table holds, so nothing leaks. */
	hm__router_ledger_add(x->ctx->slot, file_id, x->slot, 1);
	hm_table_inflight_add(map, x->slot, 1);
	x->flags |= HM__XF_COUNTED;
}

static void inflight_release(struct hm__router_xchg *x)
{
	if (!(x->flags & HM__XF_COUNTED))
		return;
	hm_table_inflight_add(x->map, x->slot, -1);
	hm__router_ledger_add(x->ctx->slot, x->file_id, x->slot, -1);
	hm_table_map_unref(x->map);
	x->map = NULL;
	x->flags &= (uint16_t)~HM__XF_COUNTED;
}

/* ---- the access log --------------------------------------------------------------------- */

static void log_write(struct hm__router_ctx *ctx, struct hm__router_logrec *r,
		      enum hm__router_code code, const char *desc)
{
	const struct hm__router_code_info *ci = &hm__router_codes[code];
	int cls = r->status >= 100 && r->status < 600 ? r->status / 100 : 0;

	r->sock = ci->sock;
	r->error = code != HM__CODE_NONE && ci->error;
	r->code = ci->name;
	r->desc = desc != NULL ? desc : ci->desc;
	hm__router_ctx_log(ctx, r);
	hm__ctr_add(&ctx->slot->c.requests[cls], 1);
	if (code != HM__CODE_NONE)
		hm__ctr_add(&ctx->slot->c.codes[code], 1);
}

/* The exchange's one line. head_out: a response head reached the client (bytes= is logged). */
static void log_xchg(struct hm__router_xchg *x, const char *desc, bool head_out)
{
	struct hm__router_logrec r = {0};

	if (x->flags & HM__XF_LOGGED)
		return;
	x->flags |= HM__XF_LOGGED;
	r.method = x->lr.method;
	if (x->lr.path_len > 0 || x->lr.method != NULL) {
		r.path = x->lr.path;
		r.path_len = x->lr.path_len;
	}
	if (x->rq->key_len > 0) {
		r.host = x->rq->key;
		r.host_len = x->rq->key_len;
	}
	r.request_id = x->lr.request_id;
	r.request_id_len = x->lr.request_id_len;
	r.fwd = x->lr.fwd;
	r.fwd_len = x->lr.fwd_len;
	if (x->route.has_dyno)
		r.dyno = x->route.dyno;
	else if (x->tried_dyno[0] != '\0')
		r.dyno = x->tried_dyno; /* H19, H21: the last dyno that failed */
	r.connect_ms = x->connect_ms;
	r.service_ms = x->t_send_ns != 0 ? (int64_t)((uv_hrtime() - x->t_send_ns) / 1000000) : -1;
	r.status = x->status;
	r.bytes = head_out ? (int64_t)x->up.resp.body_bytes : -1;
	log_write(x->ctx, &r, (enum hm__router_code)x->code, desc);
}

void hm__router_xchg_reject(struct hm__router_ctx *ctx, const struct hm__router_msg *m,
			    const char *peer, size_t peer_len, enum hm__router_code code,
			    int status)
{
	struct hm__router_logreq lr;
	struct hm__router_logrec r = {0};

	hm__router_log_capture(&lr, m, NULL, peer, peer_len);
	r.method = lr.method;
	if (lr.path_len > 0 || lr.method != NULL) {
		r.path = lr.path;
		r.path_len = lr.path_len;
	}
	r.request_id = lr.request_id;
	r.request_id_len = lr.request_id_len;
	r.fwd = lr.fwd;
	r.fwd_len = lr.fwd_len;
	r.connect_ms = -1;
	r.service_ms = -1;
	r.status = status;
	r.bytes = -1;
	log_write(ctx, &r, code, NULL);
}

/* ---- life --------------------------------------------------------------------------------- */

struct hm__router_xchg *hm__router_xchg_new(struct hm__router_ctx *ctx)
{
	struct hm__router_xchg *x = hm__free_get(&ctx->free_xchgs);

	if (x != NULL)
		return x;
	x = malloc(sizeof(*x));
	if (x == NULL)
		return NULL;
	x->ctx = ctx;
	hm__router_upstream_init(&x->up, ctx, &up_ops, x);
	return x;
}

/* The exchange is over: its count and its dyno connection go back (to the pool if reuse and the
 * response allows), and the object to the free list. Its log line is written. */
static void end(struct hm__router_xchg *x, bool reuse)
{
	struct hm__router_ctx *ctx = x->ctx;

	inflight_release(x);
	hm__router_upstream_end(&x->up, reuse);
	hm__gauge_add(&ctx->slot->c.inflight, -1);
	x->ops = NULL;
	x->cs = NULL;
	hm__free_put(&ctx->free_xchgs, x);
}

/* The affinity cookie of the first Cookie header that has one: its value is kept for
 * cookie_verify (the head may move before routing), and the dyno it names, unverified, steers
 * the table's choice. */
static void cookie_dyno(struct hm__router_xchg *x)
{
	const struct hm__router_msg *m = x->req;

	x->aff_dyno[0] = '\0';
	x->aff_value_len = 0;
	for (uint16_t i = 0; i < m->nhdr; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];
		const char *v, *d1, *d2;
		size_t vl;

		if (h->id != HM__HDR_COOKIE ||
		    !hm__router_cookie_find(m->base + h->value_off, h->value_len,
					    HM__AFFINITY_COOKIE, sizeof(HM__AFFINITY_COOKIE) - 1,
					    &v, &vl))
			continue;
		if (vl > sizeof(x->aff_value))
			return; /* longer than any valid value */
		d1 = memchr(v, '.', vl);
		d2 = memrchr(v, '.', vl);
		if (d1 != NULL && d2 > d1 + 1 && (size_t)(d2 - d1 - 1) <= HM_DYNO_NAME_MAX) {
			memcpy(x->aff_dyno, d1 + 1, (size_t)(d2 - d1 - 1));
			x->aff_dyno[d2 - d1 - 1] = '\0';
			memcpy(x->aff_value, v, vl);
			x->aff_value_len = (uint8_t)vl;
		}
		return;
	}
}

void hm__router_xchg_start(struct hm__router_xchg *x, const struct hm__router_client_ops *ops,
			   void *cs, const struct hm__router_msg *req,
			   const struct hm__router_req *rq, const struct hm__router_client_info *ci)
{
	memset(&x->state, 0,
	       offsetof(struct hm__router_xchg, lr) - offsetof(struct hm__router_xchg, state));
	x->ops = ops;
	x->cs = cs;
	x->req = req;
	x->rq = rq;
	x->peer = ci->peer;
	x->peer_len = ci->peer_len;
	x->port = ci->port;
	x->t_first = ci->t_first;
	x->last_io = now_ms(x);
	x->connect_ms = -1;
	hm__gauge_add(&x->ctx->slot->c.inflight, 1);
	hm__router_log_capture(&x->lr, req, rq, ci->peer, ci->peer_len);
	x->t_head_ns = uv_hrtime();
	x->start_ms = hm_wall_ms();
	cookie_dyno(x);
	route(x);
}

/* ---- failures made by the router --------------------------------------------------------- */

/*
 * Ends the exchange with a router error. Before a response head went out (or while the protocol
 * still holds it unwritten), the client gets the status unless it is gone; after, the client
 * side is broken off and the line says 503 (or 499, the client's doing).
 */
static void fail_desc(struct hm__router_xchg *x, enum hm__router_code code, int status,
		      const char *desc)
{
	const struct hm__router_client_ops *ops = x->ops;
	void *cs = x->cs;
	bool head_out = x->state >= HM__XS_RECV;

	hm__router_upstream_drop(&x->up);
	inflight_release(x);
	x->code = (uint8_t)code;
	if (status == 0)
		status = code != HM__CODE_NONE ? hm__router_codes[code].status : 503;
	if (status == 499) {
		x->status = 499;
		log_xchg(x, desc, head_out);
		end(x, false);
		ops->abort(cs);
		return;
	}
	if (ops->error(cs, status) == 0) {
		x->status = status;
		log_xchg(x, desc, false);
	} else {
		x->status = head_out ? 503 : status;
		log_xchg(x, desc, head_out);
	}
	end(x, false);
}

static void fail(struct hm__router_xchg *x, enum hm__router_code code, int status)
{
	fail_desc(x, code, status, NULL);
}

/* ---- routing ---------------------------------------------------------------------------- */

static bool skip_cb(void *arg, const struct hm_addr *addr, uint32_t slot)
{
	struct hm__router_xchg *x = arg;

	(void)slot;
	for (uint8_t i = 0; i < x->ntried; i++)
		if (hm__router_addr_eq(&x->tried[i], addr))
			return true;
	return (x->flags & HM__XF_SKIPLIST) && hm__router_ctx_skipped(x->ctx, addr);
}

static bool cookie_verify(struct hm__router_xchg *x)
{
	char dyno[HM_DYNO_NAME_MAX + 1];
	int r;

	if (x->aff_value_len == 0)
		return false;
	r = hm__router_affinity_verify_value(&x->ctx->aff, x->route.app, x->aff_value,
					     x->aff_value_len, hm_wall_ms() / 1000, dyno);
	return r > 0 && strcmp(dyno, x->aff_dyno) == 0;
}

static void bootwait(struct hm__router_xchg *x)
{
	uint64_t now = now_ms(x), deadline = x->t_first + (uint64_t)x->ctx->cfg->boot_timeout;

	if (now >= deadline) {
		fail(x, HM__CODE_H20, 0);
		return;
	}
	x->state = HM__XS_BOOTWAIT;
	arm(x, HM_MIN(now + BOOT_POLL_MS, deadline));
}

static void attempt(struct hm__router_xchg *x, bool fresh);

static void route(struct hm__router_xchg *x)
{
	struct hm_pick pick = {.skip = skip_cb, .ctx = x};
	struct hm_table_map *map;
	uint64_t file_id = 0;
	int r = 0;

	x->state = HM__XS_ROUTE;
	map = hm__router_ctx_map(x->ctx, &file_id);
	if (map == NULL) {
		fail(x, HM__CODE_H99, 0);
		return;
	}
	pick.rnd = hm__router_rand_u64();
	if (x->aff_dyno[0] != '\0') {
		pick.affinity = x->aff_dyno;
		pick.affinity_len = strlen(x->aff_dyno);
	}
	x->flags |= HM__XF_SKIPLIST;
	for (int pass = 0; pass < 8; pass++) {
		r = hm_table_route(map, x->rq->key, x->rq->key_len, &pick, &x->route);
		if (r == HM_EBUSYTABLE)
			continue;
		if (r != 0)
			break;
		if (pick.affinity != NULL && !(x->flags & HM__XF_AFF_VALID)) {
			/* The cookie steered the choice: it must be genuine and wanted. */
			if (x->route.affinity && cookie_verify(x)) {
				x->flags |= HM__XF_AFF_VALID;
			} else {
				pick.affinity = NULL;
				x->aff_dyno[0] = '\0';
				if (x->route.affinity_hit)
					continue;
			}
		}
		if (!x->route.has_dyno && x->route.n_up > 0 && (x->flags & HM__XF_SKIPLIST) &&
		    x->ntried < x->route.n_up) {
			/* All up dynos are in the skip list: try them rather than fail. */
			x->flags &= (uint16_t)~HM__XF_SKIPLIST;
			continue;
		}
		break;
	}
	if (r == HM_ENOHOST) {
		fail_desc(x, HM__CODE_NONE, 404, "No such app");
		return;
	}
	if (r != 0) {
		hm_log(HM_LOG_WARNING, "router", "routing %s: %s", x->rq->key, hm_strerror(r));
		fail(x, HM__CODE_H99, 0);
		return;
	}
	if (x->route.maintenance) {
		fail(x, HM__CODE_H80, 0);
		return;
	}
	if (x->route.n_dynos == 0) {
		fail(x, HM__CODE_H14, 0);
		return;
	}
	if (x->route.n_up == 0) {
		if (x->attempts > 0)
			fail(x, x->last_fail == FAIL_TIMEOUT ? HM__CODE_H19 : HM__CODE_H21, 0);
		else if (x->route.n_starting > 0)
			bootwait(x);
		else
			fail(x, x->route.n_crashed > 0 ? HM__CODE_H10 : HM__CODE_H14, 0);
		return;
	}
	if (!x->route.has_dyno) {
		/* Every up dyno was tried for this request. */
		fail(x, x->last_fail == FAIL_TIMEOUT ? HM__CODE_H19 : HM__CODE_H21, 0);
		return;
	}
	if (x->route.affinity && !((x->flags & HM__XF_AFF_VALID) && x->route.affinity_hit))
		x->flags |= HM__XF_SET_COOKIE;
	else
		x->flags &= (uint16_t)~HM__XF_SET_COOKIE;
	inflight_hold(x, map, file_id);
	attempt(x, false);
}

/* ---- connecting --------------------------------------------------------------------------- */

/* An attempt to connect failed: skip the dyno for a while, and route again or give up. */
static void attempt_failed(struct hm__router_xchg *x, int kind)
{
	hm__router_upstream_drop(&x->up);
	hm__router_ctx_skip(x->ctx, &x->route.addr);
	memcpy(x->tried_dyno, x->route.dyno, sizeof(x->tried_dyno));
	if (x->ntried < HM_ARRAY_SIZE(x->tried))
		x->tried[x->ntried++] = x->route.addr;
	x->attempts++;
	x->last_fail = (uint8_t)kind;
	inflight_release(x);
	/* After a retry the request goes out again, from what the client's protocol holds: only if
	 * it is all there. */
	if (x->attempts >= x->ctx->cfg->attempts ||
	    (x->up.qhead != NULL && !(x->flags & HM__XF_REPLAY)))
		fail(x, kind == FAIL_TIMEOUT ? HM__CODE_H19 : HM__CODE_H21, 0);
	else
		route(x);
}

static void ready(struct hm__router_xchg *x);

/* Connects to the routed dyno, or takes an idle connection to it from the pool (not when
 * fresh: the retry after a stale pooled connection). */
static void attempt(struct hm__router_xchg *x, bool fresh)
{
	int r;

	if (!fresh && hm__router_upstream_take(&x->up, &x->route.addr)) {
		x->connect_ms = 0;
		ready(x);
		return;
	}
	x->state = HM__XS_CONNECT;
	x->t_connect_ns = uv_hrtime();
	x->t_connect = now_ms(x);
	r = hm__router_upstream_connect(&x->up, &x->route.addr);
	if (r == -EMFILE || r == -ENOMEM) {
		fail(x, HM__CODE_H99, 0);
		return;
	}
	if (r != 0) {
		attempt_failed(x, FAIL_REFUSED);
		return;
	}
	arm(x, x->t_connect + (uint64_t)x->ctx->cfg->connect_timeout);
}

static void up_connected(void *owner, int status)
{
	struct hm__router_xchg *x = owner;
	uint64_t dt;

	if (status != 0) {
		/* Refused, unreachable, reset: all "refused"; only the timer is a timeout. */
		attempt_failed(x, status == UV_ETIMEDOUT ? FAIL_TIMEOUT : FAIL_REFUSED);
		return;
	}
	dt = uv_hrtime() - x->t_connect_ns;
	x->connect_ms = (int64_t)(dt / 1000000);
	hm__router_hist_observe(&x->ctx->slot->c.connect, dt / 1000);
	ready(x);
}

/* ---- the request, toward the dyno -------------------------------------------------------- */

static bool dyno_gone(struct hm__router_xchg *x);

/* The dyno connection is usable: its head is written (once per exchange) and goes out with the
 * first body bytes, or the whole request again after a stale pooled connection. */
static void ready(struct hm__router_xchg *x)
{
	const struct hm__router_req *rq = x->rq;

	x->state = HM__XS_SEND;
	x->t_send_ns = uv_hrtime();
	x->last_io = now_ms(x);
	x->body_sent = 0;
	arm(x, x->last_io + (uint64_t)x->ctx->cfg->idle_timeout);
	if (x->up.qhead == NULL) {
		struct hm__router_fwd f = {
		    .peer = x->peer,
		    .peer_len = x->peer_len,
		    .port = x->port,
		    .start_ms = x->start_ms,
		    .request_id = x->lr.request_id,
		    .request_id_len = x->lr.request_id_len,
		    .connect_ms = x->connect_ms > 0 ? (uint64_t)x->connect_ms : 0,
		    .route_ms = (x->t_send_ns - x->t_head_ns) / 1000000,
		};

		if (hm__router_upstream_head(&x->up, x->req, rq, &f) != 0) {
			fail(x, HM__CODE_H99, 0);
			return;
		}
		x->flags |= HM__XF_REPLAY;
		if (x->ops->head_done != NULL)
			x->ops->head_done(x->cs);
		if (rq->expect_continue && x->ops->send_continue(x->cs) != 0) {
			fail(x, HM__CODE_H27, 499);
			return;
		}
	}
	if (hm__router_upstream_begin(&x->up, rq->method == HTTP_HEAD) != 0) {
		dyno_gone(x);
		return;
	}
	pump_request(x);
}

static void req_sent(struct hm__router_xchg *x)
{
	x->flags |= HM__XF_REQ_SENT;
	x->t_req_done = now_ms(x);
	if (x->state == HM__XS_SEND)
		x->state = HM__XS_WAIT;
	if (!(x->flags & HM__XF_RESP_STARTED))
		arm(x, x->t_req_done + (uint64_t)x->ctx->cfg->first_byte_timeout);
}

/*
 * A write to the dyno failed: it closed or reset the connection, perhaps right after answering
 * early (a 413 for an upload it will not read). Its answer may already be in the receive queue,
 * so this is not the end of the exchange: nothing more goes to the dyno, the client's bytes
 * wait (its buffer fills, so it is read no further), and the dyno's read side decides, as it
 * always does: the answer is relayed, or its EOF or reset without one is H13 (dyno_gone).
 * Returns false if the caller must stop (see dyno_gone).
 */
static bool upload_refused(struct hm__router_xchg *x, int err)
{
	(void)err;
	if (x->state == HM__XS_TUNNEL || x->up.conn == NULL || hm__router_upstream_eof(&x->up))
		return dyno_gone(x);
	x->flags |= HM__XF_REQ_REFUSED;
	return true;
}

/* Body bytes are kept for a resend while one may still happen: a reused pooled connection may
 * turn out stale, and an idempotent request is then sent again on a fresh one. */
static bool retaining(const struct hm__router_xchg *x)
{
	return (x->flags & HM__XF_REPLAY) && !(x->flags & HM__XF_RESP_STARTED) &&
	       (x->up.flags & HM__UPF_REUSED) && idempotent(x->rq->method);
}

/* No write to the dyno is in progress: what is not kept for a resend goes back to the client's
 * protocol. Returns true if some did. */
static bool consume(struct hm__router_xchg *x)
{
	size_t n = retaining(x) ? 0 : x->body_sent;

	if (n > 0)
		x->flags &= (uint16_t)~HM__XF_REPLAY;
	x->body_sent -= (uint32_t)n;
	x->ops->body_consume(x->cs, n);
	return n > 0;
}

/*
 * Forwards request bytes as the client's protocol has them: the held head first, then whatever
 * body_peek() gives beyond what was already written (bytes kept for a resend come back first),
 * and consumes what is done with whenever no write is in progress. Returns false if the
 * exchange ended.
 */
static bool pump_request(struct hm__router_xchg *x)
{
	for (;;) {
		bool open = x->up.conn != NULL && !(x->flags & HM__XF_REQ_REFUSED) &&
			    (x->state == HM__XS_TUNNEL || !(x->flags & HM__XF_REQ_SENT));
		unsigned fl = 0, k = 0;
		size_t skip = x->body_sent, total = 0;
		uv_buf_t b[4];
		int n, r;

		if (open) {
			n = x->ops->body_peek(x->cs, b, x->up.hold > 0 ? 3 : 4, &fl);
			if (n < 0) {
				if (n == -EPROTO)
					fail_desc(x, HM__CODE_H26, 400, NULL);
				else
					fail(x, HM__CODE_H99, 0); /* no buffer for it */
				return false;
			}
			if (fl & HM__BODY_FULL)
				x->flags &= (uint16_t)~HM__XF_REPLAY; /* it outgrew the buffers */
			for (int i = 0; i < n; i++) {
				if (skip >= b[i].len) {
					skip -= b[i].len;
					continue;
				}
				b[k].base = b[i].base + skip;
				b[k].len = b[i].len - skip;
				skip = 0;
				total += b[k++].len;
			}
			if (total > 0 || x->up.hold > 0) {
				r = hm__router_upstream_send(&x->up, b, k);
				if (r < 0)
					return upload_refused(x, r);
				x->body_sent += (uint32_t)total;
			}
			if ((fl & HM__BODY_END) && x->state != HM__XS_TUNNEL)
				req_sent(x);
		}
		if (hm__router_upstream_writing(&x->up))
			return true; /* up_written() goes on */
		if (!consume(x) || !open || (fl & HM__BODY_END))
			return true;
	}
}

static void tunnel_end(struct hm__router_xchg *x, bool dyno_closed);

static void up_written(void *owner, int status)
{
	struct hm__router_xchg *x = owner;

	if (status != 0) {
		upload_refused(x, status);
		return;
	}
	if (x->state == HM__XS_TUNNEL && (x->flags & HM__XF_CLIENT_EOF)) {
		tunnel_end(x, false); /* the dyno has everything the client sent */
		return;
	}
	pump_request(x);
}

void hm__router_xchg_more(struct hm__router_xchg *x)
{
	x->last_io = now_ms(x);
	if (x->state >= HM__XS_SEND)
		pump_request(x);
}

/* ---- the response, toward the client ----------------------------------------------------- */

static void finish(struct hm__router_xchg *x);

/* A response head is complete and checked (x->up.resp, x->up.rs). */
static int up_head(void *owner)
{
	struct hm__router_xchg *x = owner;
	struct hm__router_resp *rs = &x->up.rs;
	struct hm__router_resp_ctx rc = {0};
	struct hm__router_resp_plan plan = {0};
	char cookie[HM__AFFINITY_SET_COOKIE_MAX];
	int status = rs->status, r;

	x->flags |= HM__XF_RESP_STARTED;
	if (status >= 100 && status < 200 && status != 101) {
		/* Informational: the router answered Expect itself, so these are dropped. A second
		 * 100 is an error (Vegur). */
		if (status == 100 && (x->flags & HM__XF_CONTINUE)) {
			fail(x, HM__CODE_H25, 0);
			return HM__UP_STOP;
		}
		if (status == 100)
			x->flags |= HM__XF_CONTINUE;
		return HM__UP_INTERIM;
	}
	if (status == 101 && !x->rq->upgrade) {
		fail(x, HM__CODE_H25, 0);
		return HM__UP_STOP;
	}
	rc.head_request = x->rq->method == HTTP_HEAD;
	rc.upgrade_requested = x->rq->upgrade;
	if (x->flags & HM__XF_SET_COOKIE) {
		rc.set_cookie_len =
		    hm__router_affinity_set_cookie(&x->ctx->aff, x->route.app, x->route.dyno,
						   hm_wall_ms() / 1000 + HM__AFFINITY_TTL, cookie);
		rc.set_cookie = rc.set_cookie_len > 0 ? cookie : NULL;
	}
	/* A response that announces a body it must not have (HEAD, 204, 304): a dyno that sends the
	 * body anyway, a moment later, would have it taken for the answer to the next request on
	 * this connection (another client's, from the pool). So the connection is not reused. */
	if (x->up.resp.state == HM__MSG_DONE && (rs->chunked || rs->content_length > 0))
		rs->dyno_close = true;
	r = x->ops->respond(x->cs, &x->up.resp, rs, &rc, &plan);
	if (r < 0) {
		if (r == -ENOMEM || r == -ENOSPC)
			fail(x, HM__CODE_H99, 0);
		else if (r == -EPROTO)
			fail(x, HM__CODE_H25, 0);
		else
			fail(x, HM__CODE_H27, 499);
		return HM__UP_STOP;
	}
	x->up.resp.dechunk = plan.body == HM__BODY_DECHUNK;
	if (plan.trailers && x->up.resp.dechunk)
		hm__router_upstream_collect_trailers(&x->up); /* none without memory */
	x->status = status;
	x->last_io = now_ms(x);
	arm(x, x->last_io + (uint64_t)x->ctx->cfg->idle_timeout);
	if (plan.tunnel) {
		x->state = HM__XS_TUNNEL;
		r = x->ops->send(x->cs, NULL, 0); /* the head */
		if (r < 0) {
			fail(x, HM__CODE_H27, 499);
			return HM__UP_STOP;
		}
		if (r == 1)
			x->flags |= HM__XF_OUT_BUSY;
		log_xchg(x, NULL, true);
		return pump_request(x) ? HM__UP_TUNNEL : HM__UP_STOP;
	}
	x->state = HM__XS_RECV;
	return HM__UP_BODY;
}

/* The whole request went out, or it never will (an early answer): the exchange is over once the
 * client has the response. The connection goes back to the pool only in the first case. */
static void finish(struct hm__router_xchg *x)
{
	const struct hm__router_client_ops *ops = x->ops;
	void *cs = x->cs;

	log_xchg(x, NULL, true);
	end(x, (x->flags & HM__XF_REQ_SENT) != 0);
	ops->done(cs);
}

/* The response's last bytes were handed to the client. */
static int resp_done(struct hm__router_xchg *x)
{
	struct hm__router_field tr[TRAILERS_MAX];
	size_t ntr = hm__router_upstream_trailers(&x->up, tr, TRAILERS_MAX);
	int r = x->ops->end(x->cs, tr, ntr);

	if (r < 0) {
		fail(x, HM__CODE_H27, 499);
		return HM__UP_STOP;
	}
	if (r == 1)
		x->flags |= HM__XF_OUT_BUSY;
	x->state = HM__XS_DONE;
	if (x->t_send_ns != 0)
		hm__router_hist_observe(&x->ctx->slot->c.service,
					(uv_hrtime() - x->t_send_ns) / 1000);
	if (!(x->flags & HM__XF_OUT_BUSY))
		finish(x);
	return HM__UP_STOP;
}

/* Gives bytes to the client's protocol; with last, the response ends with them. */
static int deliver(struct hm__router_xchg *x, const char *p, uint32_t n, bool last)
{
	int r = x->ops->send(x->cs, p, n);

	if (r == -ENOBUFS) {
		x->dp = p;
		x->dn = n;
		x->dlast = last;
		x->flags |= HM__XF_DEFERRED | HM__XF_OUT_BUSY;
		hm__router_upstream_hold(&x->up);
		return HM__UP_PAUSE;
	}
	if (r < 0) {
		if (x->state == HM__XS_TUNNEL)
			tunnel_end(x, false);
		else
			fail(x, HM__CODE_H27, 499);
		return HM__UP_STOP;
	}
	if (r == 1) {
		x->flags |= HM__XF_OUT_BUSY;
		hm__router_upstream_hold(&x->up);
	}
	return last ? resp_done(x) : HM__UP_BODY;
}

static int up_body(void *owner, const char *p, uint32_t n, bool last)
{
	struct hm__router_xchg *x = owner;

	/*
	 * The dyno has sent all of its answer: for least-connections it is no longer busy with this
	 * request, however long the client takes to read it. The count is released before the last
	 * bytes go to the client: a client that has read its response may already be asking another
	 * worker for the next one, and must not find this dyno still counted.
	 */
	if (last)
		inflight_release(x);
	return deliver(x, p, n, last);
}

void hm__router_xchg_sent(struct hm__router_xchg *x)
{
	x->flags &= (uint16_t)~HM__XF_OUT_BUSY;
	x->last_io = now_ms(x);
	if (x->flags & HM__XF_DEFERRED) {
		x->flags &= (uint16_t)~HM__XF_DEFERRED;
		if (deliver(x, x->dp, x->dn, x->dlast) != HM__UP_BODY)
			return; /* ended, finishing, or deferred again */
	}
	if (x->state == HM__XS_TUNNEL && (x->flags & HM__XF_DYNO_EOF)) {
		if (!(x->flags & HM__XF_OUT_BUSY))
			tunnel_end(x, true);
		return;
	}
	if (x->state == HM__XS_DONE) {
		if (!(x->flags & HM__XF_OUT_BUSY))
			finish(x);
		return;
	}
	if (!(x->flags & HM__XF_OUT_BUSY) && x->state >= HM__XS_SEND)
		hm__router_upstream_released(&x->up);
}

/* ---- the dyno's side ending --------------------------------------------------------------- */

/* A tunnel ends: after the dyno closed and the client has everything (the client side is then
 * ended as after any response), or at once (the client closed, or silence). */
static void tunnel_end(struct hm__router_xchg *x, bool dyno_closed)
{
	const struct hm__router_client_ops *ops = x->ops;
	void *cs = x->cs;

	end(x, false);
	if (dyno_closed)
		ops->done(cs);
	else
		ops->abort(cs);
}

/* The dyno closed (EOF), reset, or the connection could not be used. Returns false if the
 * caller must stop: the exchange ended, or started over on another connection. */
static bool dyno_gone(struct hm__router_xchg *x)
{
	if (x->state == HM__XS_TUNNEL) {
		/* Whatever the dyno sent goes out first (the client may still be writing from the
		 * connection's buffer, so it stays open until then); then both close. */
		x->flags |= HM__XF_DYNO_EOF;
		if (x->flags & HM__XF_OUT_BUSY)
			return true;
		tunnel_end(x, true);
		return false;
	}
	if (x->state == HM__XS_DONE) {
		/* Closed after a complete response: not reusable. finish() closes it once the
		 * client has what refers to its buffer. */
		x->up.rs.dyno_close = true;
		return true;
	}
	if (!(x->flags & HM__XF_RESP_STARTED) && !(x->up.flags & HM__UPF_GOT_BYTES)) {
		if ((x->up.flags & HM__UPF_REUSED) && !(x->flags & HM__XF_RETRIED) &&
		    (x->flags & HM__XF_REPLAY) && idempotent(x->rq->method)) {
			/* The pooled connection was closed by the dyno before we used it: once more
			 * on a fresh connection (same dyno, same request). */
			x->flags = (uint16_t)((x->flags | HM__XF_RETRIED) &
					      ~(HM__XF_REQ_SENT | HM__XF_REQ_REFUSED));
			hm__router_upstream_drop(&x->up);
			attempt(x, true);
			return false; /* it goes on, but not with this connection's caller */
		}
		fail(x, HM__CODE_H13, 0);
		return false;
	}
	fail(x, x->state < HM__XS_RECV ? HM__CODE_H13 : HM__CODE_H18, 0);
	return false;
}

static void up_gone(void *owner, int err)
{
	(void)err;
	dyno_gone(owner);
}

static void up_bad(void *owner, const char *why)
{
	struct hm__router_xchg *x = owner;

	if (why != NULL)
		hm_log(HM_LOG_INFO, "router", "bad response from %s: %s", x->route.dyno, why);
	fail(x, HM__CODE_H25, 0);
}

static const struct hm__router_upstream_ops up_ops = {
    .connected = up_connected,
    .head = up_head,
    .body = up_body,
    .written = up_written,
    .gone = up_gone,
    .bad = up_bad,
};

/* ---- the client's side -------------------------------------------------------------------- */

void hm__router_xchg_client_eof(struct hm__router_xchg *x)
{
	if (x->state == HM__XS_TUNNEL) {
		if (hm__router_upstream_writing(&x->up)) {
			x->flags |=
			    HM__XF_CLIENT_EOF; /* ends when the dyno has what the client sent */
			return;
		}
		tunnel_end(x, false);
		return;
	}
	if (x->state == HM__XS_DONE)
		return; /* finishing: the response is being written */
	fail(x, HM__CODE_H27, 499);
}

void hm__router_xchg_cancel(struct hm__router_xchg *x, enum hm__router_code code)
{
	if (code != HM__CODE_NONE && !(x->flags & HM__XF_LOGGED)) {
		x->code = (uint8_t)code;
		x->status = hm__router_codes[code].status;
		log_xchg(x, NULL, x->state >= HM__XS_RECV);
	}
	end(x, false);
}

void hm__router_xchg_timeout(struct hm__router_xchg *x)
{
	const struct hm__router_config *cfg = x->ctx->cfg;
	uint64_t now = now_ms(x), due, io = HM_MAX(x->last_io, x->up.last_io);

	switch (x->state) {
	case HM__XS_ROUTE:
		return;
	case HM__XS_BOOTWAIT:
		route(x);
		return;
	case HM__XS_CONNECT:
		due = x->t_connect + (uint64_t)cfg->connect_timeout;
		if (now >= due) {
			attempt_failed(x, FAIL_TIMEOUT);
			return;
		}
		break;
	case HM__XS_TUNNEL:
		due = io + (uint64_t)cfg->idle_timeout;
		if (now >= due) {
			tunnel_end(x, false);
			return;
		}
		break;
	default:
		if (x->state == HM__XS_WAIT && !(x->flags & HM__XF_RESP_STARTED)) {
			due = x->t_req_done + (uint64_t)cfg->first_byte_timeout;
			if (now >= due) {
				fail(x, HM__CODE_H12, 0);
				return;
			}
			break;
		}
		due = io + (uint64_t)cfg->idle_timeout;
		if (now >= due) {
			/* Whose silence? A client not reading or not sending is H28; a dyno not
			 * answering or not reading is H15. */
			bool client_stalled =
			    (x->flags & HM__XF_OUT_BUSY) ||
			    (!(x->flags & (HM__XF_REQ_SENT | HM__XF_REQ_REFUSED)) &&
			     !hm__router_upstream_writing(&x->up));

			fail(x, client_stalled ? HM__CODE_H28 : HM__CODE_H15,
			     client_stalled ? 499 : 0);
			return;
		}
		break;
	}
	arm(x, due);
}
