/*
 * The proxy: client connections, exchanges (one request and its response), dyno connections,
 * routing and retries. docs/router.md draws the state machine this file implements.
 *
 * Everything runs on the worker's loop thread. Bytes are parsed in the buffer they were read
 * into and written to the other side from there (uv_try_write first, then uv_write for what is
 * left), so a buffer is only compacted or given back when no queued write refers to it. Reading
 * from a side stops only when its buffer is full: that is the back-pressure, and it bounds the
 * memory of a connection by its two buffers.
 *
 * Objects come from free lists (worker.c never frees them while running): nothing here calls
 * malloc on the path of an ordinary request.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "router/rand.h"
#include "router/router.h"

enum client_state {
	C_OPEN = 0,
	C_LINGER,  /* the last response is going out; input is discarded until EOF or 2 s */
	C_CLOSING, /* handles closing */
};

enum phase {
	X_HEAD = 0, /* collecting the request head */
	X_ROUTE,    /* choosing a dyno (synchronous) */
	X_BOOTWAIT, /* only starting dynos: polling the table */
	X_CONNECT,  /* connecting to a dyno */
	X_PROXY,    /* request and response flowing */
	X_TUNNEL,   /* after 101: bytes both ways */
};

/*
 * The request's way to the dyno, alongside the response's (the two directions overlap: a dyno
 * may answer before it has the whole upload).
 */
enum upload {
	UP_SENDING = 0, /* request bytes go to the dyno as the client sends them */
	UP_SENT,	/* the request's last byte was handed to the dyno */
	UP_REFUSED,	/* a write to the dyno failed: nothing more goes to it, and what it sent
			 * before (an early answer, say) is still read; its read side decides */
};

enum { FAIL_REFUSED = 1, FAIL_TIMEOUT = 2 };

#define LINGER_MS     2000
#define BOOT_POLL_MS  100
#define DRAIN_IDLE_MS 1000

struct hm__router_wreq {
	uv_write_t req;
	struct hm__router_wreq *next;
	void *owner;
	bool to_client;
};

static void client_input(struct hm__router_client *c);
static void client_flow(struct hm__router_client *c);
static void client_close(struct hm__router_client *c);
static void client_end(struct hm__router_client *c);
static void upstream_flow(struct hm__router_upstream *u);
static void route(struct hm__router_xchg *x);
static void attempt(struct hm__router_xchg *x, bool fresh);
static void req_pump(struct hm__router_xchg *x);
static void resp_pump(struct hm__router_xchg *x);
static void maybe_finish(struct hm__router_xchg *x);
static void fail(struct hm__router_xchg *x, enum hm__router_code code, int status);
static void tunnel_pump(struct hm__router_xchg *x);

static uint64_t now_ms(struct hm__router_worker *w)
{
	return uv_now(&w->loop);
}

/* ---- free lists ------------------------------------------------------------------------- */

#define FREE_BUFS_MAX 512

/*
 * Standard buffers are bounded by the connections (at most a few per connection, and
 * --max-connections); larger ones, for heads that outgrow 16 KiB, come out of the worker's
 * --head-budget, so that many slow large heads cannot take the worker's memory.
 */
struct hm__router_buf *hm__router_buf_get(struct hm__router_worker *w, uint32_t min)
{
	struct hm__router_buf *b;
	uint32_t cap = min <= HM__BUF_SIZE ? HM__BUF_SIZE : min;

	if (cap == HM__BUF_SIZE && w->free_bufs != NULL) {
		b = w->free_bufs;
		w->free_bufs = b->next;
		w->nfree_bufs--;
		return b;
	}
	if (cap > HM__BUF_SIZE && w->big_bytes + cap > (uint64_t)w->cfg->head_budget)
		return NULL;
	b = malloc(sizeof(*b) + cap);
	if (b == NULL)
		return NULL;
	b->cap = cap;
	if (cap > HM__BUF_SIZE)
		w->big_bytes += cap;
	return b;
}

void hm__router_buf_put(struct hm__router_worker *w, struct hm__router_buf *b)
{
	if (b == NULL)
		return;
	if (b->cap == HM__BUF_SIZE && w->nfree_bufs < FREE_BUFS_MAX) {
		b->next = w->free_bufs;
		w->free_bufs = b;
		w->nfree_bufs++;
		return;
	}
	if (b->cap > HM__BUF_SIZE)
		w->big_bytes -= b->cap;
	free(b);
}

static struct hm__router_wreq *wreq_get(struct hm__router_worker *w)
{
	struct hm__router_wreq *r = w->free_wreqs;

	if (r != NULL) {
		w->free_wreqs = r->next;
		return r;
	}
	return malloc(sizeof(*r));
}

static void wreq_put(struct hm__router_worker *w, struct hm__router_wreq *r)
{
	r->next = w->free_wreqs;
	w->free_wreqs = r;
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_client_timer(uv_timer_t *t);

/* Makes sure the client's timer fires no later than due. A later deadline needs no timer work:
 * the callback re-arms when it fires early. */
static void arm(struct hm__router_client *c, uint64_t due)
{
	uint64_t now = now_ms(c->w);

	if (c->state == C_CLOSING || (c->timer_due != 0 && c->timer_due <= due))
		return;
	c->timer_due = due;
	uv_timer_start(&c->timer, on_client_timer, due > now ? due - now : 0, 0);
}

/* ---- writing ---------------------------------------------------------------------------- */

static void on_write(uv_write_t *req, int status);

/* Writes bufs (n <= 4; the bytes must stay valid until the write completes) to a stream: as
 * much as the socket takes now, the rest queued. Returns 0 or a negative libuv error. */
static int stream_writev(struct hm__router_worker *w, uv_stream_t *s, uv_buf_t *bufs, unsigned n,
			 void *owner, bool to_client)
{
	struct hm__router_wreq *wr;
	size_t total = 0;
	int r;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	if (total == 0)
		return 0;
	r = uv_try_write(s, bufs, n);
	if (r >= 0 && (size_t)r == total)
		return 0;
	if (r < 0 && r != UV_EAGAIN)
		return r;
	if (r > 0) {
		size_t done = (size_t)r;

		while (done >= bufs->len) {
			done -= bufs->len;
			bufs++;
			n--;
		}
		bufs->base += done;
		bufs->len -= done;
	}
	wr = wreq_get(w);
	if (wr == NULL)
		return UV_ENOMEM;
	wr->owner = owner;
	wr->to_client = to_client;
	/* libuv copies up to 4 buffer descriptors without allocating. */
	r = uv_write(&wr->req, s, bufs, n, on_write);
	if (r != 0) {
		wreq_put(w, wr);
		return r;
	}
	if (to_client)
		((struct hm__router_client *)owner)->wpending++;
	else
		((struct hm__router_upstream *)owner)->wpending++;
	return 0;
}

static int stream_write(struct hm__router_worker *w, uv_stream_t *s, const char *data, size_t n,
			void *owner, bool to_client)
{
	uv_buf_t b = uv_buf_init((char *)data, (unsigned)n);

	return stream_writev(w, s, &b, 1, owner, to_client);
}

/* ---- in-flight accounting --------------------------------------------------------------- */

static void inflight_hold(struct hm__router_xchg *x, struct hm_table_map *map, uint64_t file_id)
{
	struct hm__router_worker *w = x->c->w;

	hm_table_map_ref(map);
	x->map = map;
	x->file_id = file_id;
	x->slot = x->route.slot;
	/* Ledger first, table second (and the reverse when releasing): a worker killed between the
	 * two leaves the ledger covering at least what the table holds, so nothing leaks. */
	hm__router_ledger_add(w->slot, file_id, x->slot, 1);
	hm_table_inflight_add(map, x->slot, 1);
	x->counted = true;
}

static void inflight_release(struct hm__router_xchg *x)
{
	struct hm__router_worker *w = x->c->w;

	if (!x->counted)
		return;
	hm_table_inflight_add(x->map, x->slot, -1);
	hm__router_ledger_add(w->slot, x->file_id, x->slot, -1);
	hm_table_map_unref(x->map);
	x->map = NULL;
	x->counted = false;
}

/* ---- the access log --------------------------------------------------------------------- */

static void log_xchg(struct hm__router_xchg *x, const char *desc_override)
{
	struct hm__router_worker *w = x->c->w;
	const struct hm__router_code_info *ci = &hm__router_codes[x->code];
	struct hm__router_logrec r = {0};
	int cls;

	if (x->logged)
		return;
	x->logged = true;
	r.sock = ci->sock;
	r.error = x->code != HM__CODE_NONE && ci->error;
	r.code = ci->name;
	r.desc = desc_override != NULL ? desc_override : ci->desc;
	r.method = x->method;
	if (x->path_len > 0 || x->method != NULL) {
		r.path = x->path;
		r.path_len = x->path_len;
	}
	if (x->rq.key_len > 0) {
		r.host = x->rq.key;
		r.host_len = x->rq.key_len;
	}
	r.request_id = x->request_id;
	r.request_id_len = x->request_id_len;
	r.fwd = x->fwd;
	r.fwd_len = x->fwd_len;
	if (x->route.has_dyno)
		r.dyno = x->route.dyno;
	else if (x->tried_dyno[0] != '\0')
		r.dyno = x->tried_dyno; /* H19, H21: the last dyno that failed */
	r.connect_ms = x->connect_ms;
	r.service_ms = x->t_send_ns != 0 ? (int64_t)((uv_hrtime() - x->t_send_ns) / 1000000) : -1;
	r.status = x->status;
	r.bytes = x->head_sent ? (int64_t)x->resp.body_bytes : -1;
	hm__router_worker_log(w, &r);

	cls = x->status >= 100 && x->status < 600 ? x->status / 100 : 0;
	hm__ctr_add(&w->slot->c.requests[cls], 1);
	if (x->code != HM__CODE_NONE)
		hm__ctr_add(&w->slot->c.codes[x->code], 1);
}

/* Log fields known once the head is parsed (or as much of them as a bad head allows). */
static void capture_log_fields(struct hm__router_xchg *x, bool checked)
{
	struct hm__router_msg *m = &x->req;
	struct hm__router_client *c = x->c;
	const char *path = m->base + (checked ? x->rq.target_off : m->url_off);
	size_t n = checked ? x->rq.target_len : m->url_len, fl = 0;
	bool any = false;

	if (m->url_len > 0 || m->line_done)
		x->method = llhttp_method_name((llhttp_method_t)m->p.method);
	if (n > HM__LOG_PATH_MAX)
		n = HM__LOG_PATH_MAX;
	if (n > 0)
		memcpy(x->path, path, n);
	x->path_len = (uint16_t)n;
	if (checked && x->rq.request_id >= 0) {
		const struct hm__router_hdr *h = &m->hdr[x->rq.request_id];
		size_t l = hm__router_trim(m->base + h->value_off, h->value_len);

		memcpy(x->request_id, m->base + h->value_off, l);
		x->request_id_len = (uint8_t)l;
	} else if (hm__router_uuid4(x->request_id) == 0) {
		x->request_id_len = HM__ROUTER_UUID_LEN;
	}
	/* fwd: the X-Forwarded-For the dyno will see. */
	if (checked) {
		for (uint16_t i = 0; i < m->nhdr && fl < HM__LOG_FWD_MAX; i++) {
			const struct hm__router_hdr *h = &m->hdr[i];
			size_t l;

			if (h->id != HM__HDR_X_FORWARDED_FOR || h->drop)
				continue;
			l = hm__router_trim(m->base + h->value_off, h->value_len);
			if (l == 0)
				continue;
			if (any && fl + 2 <= HM__LOG_FWD_MAX) {
				memcpy(x->fwd + fl, ", ", 2);
				fl += 2;
			}
			l = HM_MIN(l, HM__LOG_FWD_MAX - fl);
			memcpy(x->fwd + fl, m->base + h->value_off, l);
			fl += l;
			any = true;
		}
	}
	if (any && fl + 2 <= HM__LOG_FWD_MAX) {
		memcpy(x->fwd + fl, ", ", 2);
		fl += 2;
	}
	n = HM_MIN((size_t)c->peer_len, HM__LOG_FWD_MAX - fl);
	memcpy(x->fwd + fl, c->peer, n);
	x->fwd_len = (uint16_t)(fl + n);
}

/* ---- exchanges -------------------------------------------------------------------------- */

static struct hm__router_xchg *xchg_new(struct hm__router_client *c)
{
	struct hm__router_worker *w = c->w;
	struct hm__router_xchg *x = w->free_xchgs;

	if (x != NULL) {
		w->free_xchgs = x->next_free;
	} else {
		x = malloc(sizeof(*x));
		if (x == NULL)
			return NULL;
		hm__router_msg_init(&x->req, HTTP_REQUEST, &w->req_lim);
		hm__router_msg_init(&x->resp, HTTP_RESPONSE, &w->resp_lim);
	}
	/* Everything after the two parsers is per-request state, zeroed here; the parsers are
	 * reset (not re-initialised) so that their settings and lenient flags stay. */
	memset(&x->rq, 0,
	       offsetof(struct hm__router_xchg, path) - offsetof(struct hm__router_xchg, rq));
	x->c = c;
	x->u = NULL;
	x->next_free = NULL;
	x->connect_ms = -1;
	x->route.has_dyno = false;
	return x;
}

static void xchg_free(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;

	inflight_release(x);
	if (x->u != NULL) {
		struct hm__router_upstream *u = x->u;

		x->u = NULL;
		u->x = NULL;
		hm__router_upstream_close(u);
	}
	hm__router_buf_put(w, x->qhead);
	hm__router_buf_put(w, x->rhead);
	hm__router_buf_put(w, x->cbuf);
	x->qhead = x->rhead = x->cbuf = NULL;
	hm__router_msg_fini(&x->req);
	hm__router_msg_fini(&x->resp);
	hm__gauge_add(&w->slot->c.inflight, -1);
	if (c->x == x)
		c->x = NULL;
	x->next_free = w->free_xchgs;
	w->free_xchgs = x;
}

static int xchg_start(struct hm__router_client *c)
{
	struct hm__router_worker *w = c->w;
	struct hm__router_xchg *x;

	/* The head starts at the buffer's start (the previous exchange left no writes on it). */
	if (c->in_off > 0) {
		memmove(c->in->data, c->in->data + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	x = xchg_new(c);
	if (x == NULL)
		return -ENOMEM;
	c->x = x;
	hm__router_msg_reset(&x->req, c->in->data, 0);
	x->phase = X_HEAD;
	x->t_first = now_ms(w);
	x->last_io = x->t_first;
	hm__gauge_add(&w->slot->c.inflight, 1);
	arm(c, x->t_first + (uint64_t)w->cfg->head_timeout);
	return 0;
}

/* ---- failures made by the router --------------------------------------------------------- */

/*
 * Ends the exchange with a router error. Before a response head went out, the client gets the
 * status (with Connection: close) unless it is gone (499); after, the connection is closed.
 */
static void fail_desc(struct hm__router_xchg *x, enum hm__router_code code, int status,
		      const char *desc)
{
	struct hm__router_client *c = x->c;
	const char *data;
	size_t len;
	bool head;

	if (x->u != NULL) {
		struct hm__router_upstream *u = x->u;

		x->u = NULL;
		u->x = NULL;
		hm__router_upstream_close(u);
	}
	inflight_release(x);
	if (x->hold_c_len > 0) {
		/* The dyno's head was held back and never went out: the client can still get a
		 * proper error instead of a cut response. */
		x->hold_c_len = 0;
		x->head_sent = false;
	}
	x->code = (uint8_t)code;
	if (status == 0)
		status = code != HM__CODE_NONE ? hm__router_codes[code].status : 503;
	head = x->req.state != HM__MSG_HEAD && x->req.state != HM__MSG_ERROR &&
	       x->req.p.method == HTTP_HEAD;
	if (x->head_sent || status == 499 || c->eof) {
		/* Too late for a status, or nobody to read it. */
		x->status = x->head_sent && status != 499 ? 503 : status;
		log_xchg(x, desc);
		xchg_free(x);
		client_close(c);
		return;
	}
	x->status = status;
	log_xchg(x, desc);
	hm__router_error_response(status, head, &data, &len);
	xchg_free(x);
	if (stream_write(c->w, (uv_stream_t *)&c->tcp, data, len, c, true) != 0) {
		client_close(c);
		return;
	}
	client_end(c);
}

static void fail(struct hm__router_xchg *x, enum hm__router_code code, int status)
{
	fail_desc(x, code, status, NULL);
}

/* ---- routing ---------------------------------------------------------------------------- */

static bool skip_cb(void *ctx, const struct hm_addr *addr, uint32_t slot)
{
	struct hm__router_xchg *x = ctx;
	struct hm__router_worker *w = x->c->w;
	uint64_t now;

	(void)slot;
	for (uint8_t i = 0; i < x->ntried; i++)
		if (hm__router_addr_eq(&x->tried[i], addr))
			return true;
	if (!x->use_skiplist || w->nskip == 0)
		return false;
	now = now_ms(w);
	for (uint32_t i = 0; i < w->nskip; i++)
		if (w->skip[i].until > now && hm__router_addr_eq(&w->skip[i].addr, addr))
			return true;
	return false;
}

/* This worker avoids addr for --skip-time. */
static void skip_add(struct hm__router_worker *w, const struct hm_addr *addr)
{
	uint64_t now = now_ms(w), until = now + (uint64_t)w->cfg->skip_time;
	uint32_t i, oldest = 0;

	/* Drop expired entries while looking. */
	for (i = 0; i < w->nskip;) {
		if (w->skip[i].until <= now) {
			w->skip[i] = w->skip[--w->nskip];
			continue;
		}
		if (hm__router_addr_eq(&w->skip[i].addr, addr)) {
			w->skip[i].until = until;
			return;
		}
		if (w->skip[i].until < w->skip[oldest].until)
			oldest = i;
		i++;
	}
	if (w->nskip == HM__SKIP_MAX)
		i = oldest;
	else
		i = w->nskip++;
	w->skip[i].addr = *addr;
	w->skip[i].until = until;
}

/* The affinity cookie of the first Cookie header that has one: its value is kept for
 * cookie_verify (the head may move before routing), and the dyno it names, unverified, steers
 * the table's choice. */
static void cookie_dyno(struct hm__router_xchg *x)
{
	struct hm__router_msg *m = &x->req;

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

static bool cookie_verify(struct hm__router_xchg *x)
{
	struct hm__router_worker *w = x->c->w;
	char dyno[HM_DYNO_NAME_MAX + 1];
	int r;

	if (x->aff_value_len == 0)
		return false;
	r = hm__router_affinity_verify_value(&w->aff, x->route.app, x->aff_value, x->aff_value_len,
					     hm_wall_ms() / 1000, dyno);
	return r > 0 && strcmp(dyno, x->aff_dyno) == 0;
}

static void bootwait(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	uint64_t now = now_ms(c->w), deadline = x->t_first + (uint64_t)c->w->cfg->boot_timeout;

	if (now >= deadline) {
		fail(x, HM__CODE_H20, 0);
		return;
	}
	x->phase = X_BOOTWAIT;
	arm(c, HM_MIN(now + BOOT_POLL_MS, deadline));
}

static void route(struct hm__router_xchg *x)
{
	struct hm__router_worker *w = x->c->w;
	struct hm_pick pick = {.skip = skip_cb, .ctx = x};
	struct hm_table_map *map;
	uint64_t file_id = 0;
	int r = 0;

	x->phase = X_ROUTE;
	map = hm__router_worker_map(w, &file_id);
	if (map == NULL) {
		fail(x, HM__CODE_H99, 0);
		return;
	}
	pick.rnd = hm__router_rand_u64();
	if (x->aff_dyno[0] != '\0') {
		pick.affinity = x->aff_dyno;
		pick.affinity_len = strlen(x->aff_dyno);
	}
	x->use_skiplist = true;
	for (int pass = 0; pass < 8; pass++) {
		r = hm_table_route(map, x->rq.key, x->rq.key_len, &pick, &x->route);
		if (r == HM_EBUSYTABLE)
			continue;
		if (r != 0)
			break;
		if (pick.affinity != NULL && !x->aff_valid) {
			/* The cookie steered the choice: it must be genuine and wanted. */
			x->aff_valid = x->route.affinity && cookie_verify(x);
			if (!x->aff_valid) {
				pick.affinity = NULL;
				x->aff_dyno[0] = '\0';
				if (x->route.affinity_hit)
					continue;
			}
		}
		if (!x->route.has_dyno && x->route.n_up > 0 && x->use_skiplist &&
		    x->ntried < x->route.n_up) {
			/* All up dynos are in the skip list: try them rather than fail. */
			x->use_skiplist = false;
			continue;
		}
		break;
	}
	if (r == HM_ENOHOST) {
		x->code = HM__CODE_NONE;
		fail_desc(x, HM__CODE_NONE, 404, "No such app");
		return;
	}
	if (r != 0) {
		hm_log(HM_LOG_WARNING, "router", "routing %s: %s", x->rq.key, hm_strerror(r));
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
	x->set_cookie = x->route.affinity && !(x->aff_valid && x->route.affinity_hit);
	inflight_hold(x, map, file_id);
	attempt(x, false);
}

/* ---- dyno connections -------------------------------------------------------------------- */

static void on_upstream_closed(uv_handle_t *h)
{
	struct hm__router_upstream *u = h->data;
	struct hm__router_worker *w = u->w;

	hm__router_buf_put(w, u->in);
	u->in = NULL;
	u->next_free = w->free_upstreams;
	w->free_upstreams = u;
}

void hm__router_upstream_close(struct hm__router_upstream *u)
{
	if (u->closing)
		return;
	u->closing = true;
	u->x = NULL;
	/* Closing the handle closes the fd at once; queued writes are cancelled (their buffers
	 * are not read again), a pending connect reports UV_ECANCELED. */
	uv_close((uv_handle_t *)&u->tcp, on_upstream_closed);
}

static void up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct hm__router_upstream *u = h->data;

	(void)suggested;
	if (u->in == NULL) {
		u->in = hm__router_buf_get(u->w, 0);
		u->in_len = u->in_off = 0;
	}
	if (u->in == NULL) {
		*b = uv_buf_init(NULL, 0);
		return;
	}
	*b = uv_buf_init(u->in->data + u->in_len, u->in->cap - u->in_len);
}

static void upstream_gone(struct hm__router_xchg *x, int err);
static void upload_refused(struct hm__router_xchg *x, int err);

static void up_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct hm__router_upstream *u = s->data;
	struct hm__router_xchg *x = u->x;

	(void)b;
	if (n > 0) {
		u->in_len += (uint32_t)n;
		if (x == NULL) {
			/* Idle in the pool: a dyno has nothing to say unasked. */
			hm__router_pool_remove(u->w, u);
			hm__router_upstream_close(u);
			return;
		}
		u->got_bytes = true;
		x->last_io = now_ms(u->w);
		resp_pump(x);
		return;
	}
	if (n == 0 || n == UV_ENOBUFS) {
		if (u->in != NULL && u->in_len == 0 && (x == NULL || x->c->wpending == 0)) {
			hm__router_buf_put(u->w, u->in);
			u->in = NULL;
		}
		return;
	}
	uv_read_stop(s);
	u->reading = false;
	u->eof = true;
	if (x == NULL) {
		hm__router_pool_remove(u->w, u);
		hm__router_upstream_close(u);
		return;
	}
	upstream_gone(x, (int)n);
}

static void upstream_ready(struct hm__router_xchg *x);

/* An attempt to connect failed: skip the dyno for a while, and route again or give up. */
static void attempt_failed(struct hm__router_xchg *x, int kind)
{
	struct hm__router_worker *w = x->c->w;
	struct hm__router_upstream *u = x->u;

	if (u != NULL) {
		u->x = NULL;
		x->u = NULL;
		hm__router_upstream_close(u);
	}
	skip_add(w, &x->route.addr);
	memcpy(x->tried_dyno, x->route.dyno, sizeof(x->tried_dyno));
	if (x->ntried < HM_ARRAY_SIZE(x->tried))
		x->tried[x->ntried++] = x->route.addr;
	x->attempts++;
	x->last_fail = (uint8_t)kind;
	inflight_release(x);
	/* After a retry the request goes out again, from c->in: only if it is all there. */
	if (x->attempts >= w->cfg->attempts || (x->qhead != NULL && !x->replay_ok))
		fail(x, kind == FAIL_TIMEOUT ? HM__CODE_H19 : HM__CODE_H21, 0);
	else
		route(x);
}

static void on_connect(uv_connect_t *req, int status)
{
	struct hm__router_upstream *u = hm__container_of(req, struct hm__router_upstream, creq);
	struct hm__router_xchg *x = u->x;
	uint64_t dt;

	if (u->closing || x == NULL)
		return;
	if (status != 0) {
		/* Refused, unreachable, reset: all "refused"; only the timer is a timeout. */
		attempt_failed(x, status == UV_ETIMEDOUT ? FAIL_TIMEOUT : FAIL_REFUSED);
		return;
	}
	u->connected = true;
	dt = uv_hrtime() - x->t_connect_ns;
	x->connect_ms = (int64_t)(dt / 1000000);
	hm__router_hist_observe(&u->w->slot->c.connect, dt / 1000);
	upstream_ready(x);
}

static int addr_to_sockaddr(const struct hm_addr *a, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (a->family == 4) {
		struct sockaddr_in *s = (struct sockaddr_in *)ss;

		s->sin_family = AF_INET;
		s->sin_port = htons(a->port);
		memcpy(&s->sin_addr, a->ip, 4);
		return 0;
	}
	if (a->family == 6) {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;

		s->sin6_family = AF_INET6;
		s->sin6_port = htons(a->port);
		memcpy(&s->sin6_addr, a->ip, 16);
		return 0;
	}
	return -EINVAL;
}

/* A connect that failed on this side: no descriptor, no memory, no local port. */
static bool local_exhaustion(int r)
{
	return r == UV_EMFILE || r == UV_ENFILE || r == UV_ENOBUFS || r == UV_ENOMEM ||
	       r == UV_EADDRNOTAVAIL;
}

/* Connects to the routed dyno, or takes an idle connection to it from the pool (not when
 * fresh: the retry after a stale pooled connection). */
static void attempt(struct hm__router_xchg *x, bool fresh)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;
	struct hm__router_upstream *u = fresh ? NULL : hm__router_pool_take(w, &x->route.addr);
	struct sockaddr_storage ss;
	int r;

	if (u != NULL) {
		u->x = x;
		u->reused = true;
		u->got_bytes = false;
		x->u = u;
		x->connect_ms = 0;
		hm__ctr_add(&w->slot->c.pool_reused, 1);
		upstream_ready(x);
		return;
	}
	u = w->free_upstreams;
	if (u != NULL)
		w->free_upstreams = u->next_free;
	else if ((u = malloc(sizeof(*u))) == NULL) {
		fail(x, HM__CODE_H99, 0);
		return;
	}
	memset(u, 0, sizeof(*u));
	u->w = w;
	u->addr = x->route.addr;
	hm__list_init(&u->bucket);
	hm__list_init(&u->lru);
	uv_tcp_init(&w->loop, &u->tcp);
	u->tcp.data = u;
	u->x = x;
	x->u = u;
	x->phase = X_CONNECT;
	x->t_connect_ns = uv_hrtime();
	x->t_connect = now_ms(w);
	hm__ctr_add(&w->slot->c.pool_new, 1);
	uv_tcp_nodelay(&u->tcp, 1);
	r = addr_to_sockaddr(&x->route.addr, &ss);
	if (r == 0)
		r = uv_tcp_connect(&u->creq, &u->tcp, (const struct sockaddr *)&ss, on_connect);
	/* Out of descriptors: an idle pooled connection gives one back (closed at once). */
	while (local_exhaustion(r) && hm__router_pool_evict(w))
		r = uv_tcp_connect(&u->creq, &u->tcp, (const struct sockaddr *)&ss, on_connect);
	if (local_exhaustion(r)) {
		/* The router's fault, not the dyno's: no H21, no skip-list entry. */
		hm__router_worker_fd_exhausted(w, "connecting to a dyno", r);
		fail(x, HM__CODE_H99, 0);
		return;
	}
	if (r != 0) {
		attempt_failed(x, FAIL_REFUSED);
		return;
	}
	arm(c, now_ms(w) + (uint64_t)w->cfg->connect_timeout);
}

/* ---- the request, toward the dyno -------------------------------------------------------- */

/*
 * Writes to the dyno what is held (the request head) followed by data, in one system call when
 * the socket takes it. Returns 0, or an error after which the exchange has been dealt with.
 */
static int upstream_write(struct hm__router_xchg *x, const char *data, size_t n)
{
	struct hm__router_upstream *u = x->u;
	uv_buf_t b[2];
	unsigned k = 0;
	int r;

	if (x->hold_u_len > 0) {
		b[k++] = uv_buf_init(x->hold_u, x->hold_u_len);
		x->hold_u_len = 0;
	}
	if (n > 0)
		b[k++] = uv_buf_init((char *)data, (unsigned)n);
	r = stream_writev(x->c->w, (uv_stream_t *)&u->tcp, b, k, u, false);
	if (r != 0)
		upload_refused(x, r);
	return r;
}

static void req_sent(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;

	x->upload = UP_SENT;
	x->t_req_done = now_ms(c->w);
	if (!x->resp_started)
		arm(c, x->t_req_done + (uint64_t)c->w->cfg->first_byte_timeout);
}

/* The dyno connection is usable: send the head and what is buffered of the body. */
static void upstream_ready(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;
	struct hm__router_upstream *u = x->u;
	bool replay = x->qhead != NULL;

	x->phase = X_PROXY;
	x->t_send_ns = uv_hrtime();
	x->last_io = now_ms(w);
	arm(c, x->last_io + (uint64_t)w->cfg->idle_timeout);
	if (!u->reading) {
		if (uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) != 0) {
			upstream_gone(x, UV_EPIPE);
			return;
		}
		u->reading = true;
	}
	if (!replay) {
		struct hm__router_fwd f = {
		    .peer = c->peer,
		    .peer_len = c->peer_len,
		    .port = w->cfg->port,
		    .start_ms = x->start_ms,
		    .request_id = x->request_id,
		    .request_id_len = x->request_id_len,
		    .connect_ms = x->connect_ms > 0 ? (uint64_t)x->connect_ms : 0,
		    .route_ms = (x->t_send_ns - x->t_head_ns) / 1000000,
		};
		size_t bound =
		    hm__router_req_write_bound(&x->req) + c->peer_len + x->request_id_len;

		x->qhead = hm__router_buf_get(w, (uint32_t)bound);
		if (x->qhead == NULL) {
			fail(x, HM__CODE_H99, 0);
			return;
		}
		x->qhead_len = (uint32_t)hm__router_req_write(&x->req, &x->rq, &f, x->qhead->data,
							      x->qhead->cap);
		hm_require(x->qhead_len > 0);
		x->replay_ok = true;
		if (x->rq.chunked && x->req.state == HM__MSG_BODY) {
			/* Chunks are re-encoded (extensions dropped) into a buffer of their own. */
			x->cbuf = hm__router_buf_get(w, 0);
			if (x->cbuf == NULL) {
				fail(x, HM__CODE_H99, 0);
				return;
			}
			x->req.rechunk = true;
			x->req.rbuf = x->cbuf->data;
			x->req.rcap = x->cbuf->cap;
		}
		if (x->rq.expect_continue && x->req.state == HM__MSG_BODY &&
		    stream_write(w, (uv_stream_t *)&c->tcp, hm__router_continue,
				 HM__ROUTER_CONTINUE_LEN, c, true) != 0) {
			fail(x, HM__CODE_H27, 499);
			return;
		}
	}
	hm__router_msg_reset(&x->resp, u->in != NULL ? u->in->data : NULL, 0);
	hm__router_msg_skip_body(&x->resp, x->rq.method == HTTP_HEAD);
	/* The head goes out with the first body bytes, in one write. */
	x->hold_u = x->qhead->data;
	x->hold_u_len = x->qhead_len;
	if (replay && c->in_off > x->body_start) {
		if (upstream_write(x, c->in->data + x->body_start, c->in_off - x->body_start) != 0)
			return;
	}
	if (x->req.state == HM__MSG_BODY)
		req_pump(x);
	if (x->c == NULL || x->c->x != x || x->u == NULL)
		return;
	if (x->hold_u_len > 0 && upstream_write(x, NULL, 0) != 0)
		return;
	if (x->req.state == HM__MSG_DONE && x->upload == UP_SENDING)
		req_sent(x);
	if (c->x == x)
		client_flow(c);
}

/* Forwards request body bytes as llhttp delimits them. */
static void req_pump(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;

	while (x->req.state == HM__MSG_BODY && x->upload == UP_SENDING && c->in_off < c->in_len) {
		uint32_t from = c->in_off, len = c->in_len - from, used;
		int ev;

		if (x->req.rechunk) {
			/* One batch at a time through cbuf: wait for writes still using it. */
			if (x->u->wpending > 0)
				return;
			len = HM_MIN(len, x->req.rcap - HM__RECHUNK_SLACK);
		}
		ev = hm__router_msg_execute(&x->req, c->in->data, from, len, &used);
		if (ev == HM__EV_ERROR) {
			fail_desc(x, HM__CODE_H26, 400, NULL);
			return;
		}
		c->in_off += used;
		if (x->req.rechunk) {
			if (x->req.rlen > 0 && upstream_write(x, x->cbuf->data, x->req.rlen) != 0)
				return;
		} else if (used > 0 && upstream_write(x, c->in->data + from, used) != 0) {
			return;
		}
		if (ev == HM__EV_DONE) {
			req_sent(x);
			return;
		}
	}
}

/* ---- the response, toward the client ----------------------------------------------------- */

/* The same toward the client: the held response head, then data. */
static int client_write(struct hm__router_xchg *x, const char *data, size_t n)
{
	struct hm__router_client *c = x->c;
	uv_buf_t b[2];
	unsigned k = 0;
	int r;

	if (x->hold_c_len > 0) {
		b[k++] = uv_buf_init(x->hold_c, x->hold_c_len);
		x->hold_c_len = 0;
	}
	if (n > 0)
		b[k++] = uv_buf_init((char *)data, (unsigned)n);
	r = stream_writev(c->w, (uv_stream_t *)&c->tcp, b, k, c, true);
	if (r != 0) {
		fail(x, HM__CODE_H27, 499);
		return r;
	}
	return 0;
}

static void resp_done(struct hm__router_xchg *x)
{
	struct hm__router_worker *w = x->c->w;

	x->resp_done = true;
	if (x->t_send_ns != 0)
		hm__router_hist_observe(&w->slot->c.service, (uv_hrtime() - x->t_send_ns) / 1000);
	/*
	 * The dyno has sent all of its answer: for least-connections it is no longer busy with this
	 * request, however long the client takes to read it. Where the end of the response reaches
	 * the client in the same step, the count is released before those bytes are written: a
	 * client that has read its response may already be asking another worker for the next one,
	 * and must not find this dyno still counted.
	 */
	inflight_release(x);
	maybe_finish(x);
}

static void start_tunnel(struct hm__router_xchg *x)
{
	x->tunnel = true;
	x->phase = X_TUNNEL;
	log_xchg(x, NULL);
	tunnel_pump(x);
}

/* A response head is complete. Returns true if the caller should go on parsing. */
static bool on_resp_head(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;
	struct hm__router_upstream *u = x->u;
	struct hm__router_resp_ctx ctx = {0};
	char cookie[HM__AFFINITY_SET_COOKIE_MAX];
	const char *why = NULL;
	size_t len;
	int status;

	x->resp_started = true;
	if (hm__router_resp_check(&x->resp, &x->rs, &why) != 0) {
		hm_log(HM_LOG_INFO, "router", "bad response from %s: %s", x->route.dyno, why);
		fail(x, HM__CODE_H25, 0);
		return false;
	}
	status = x->rs.status;
	if (status >= 100 && status < 200 && status != 101) {
		/* Informational: the router answered Expect itself, so these are dropped. A second
		 * 100 is an error (Vegur). */
		if (status == 100 && x->got_continue) {
			fail(x, HM__CODE_H25, 0);
			return false;
		}
		x->got_continue = x->got_continue || status == 100;
		hm__router_msg_reset(&x->resp, u->in->data, x->resp.head_end);
		hm__router_msg_skip_body(&x->resp, x->rq.method == HTTP_HEAD);
		return true;
	}
	if (status == 101 && !x->rq.upgrade) {
		fail(x, HM__CODE_H25, 0);
		return false;
	}
	ctx.client_minor = x->rq.minor;
	ctx.keep_alive =
	    x->rq.keep_alive && x->req.state == HM__MSG_DONE && !w->draining && !c->eof;
	ctx.head_request = x->rq.method == HTTP_HEAD;
	ctx.upgrade_requested = x->rq.upgrade;
	if (x->set_cookie) {
		ctx.set_cookie_len =
		    hm__router_affinity_set_cookie(&w->aff, x->route.app, x->route.dyno,
						   hm_wall_ms() / 1000 + HM__AFFINITY_TTL, cookie);
		ctx.set_cookie = ctx.set_cookie_len > 0 ? cookie : NULL;
	}
	hm__router_resp_plan(&x->resp, &x->rs, &ctx, &x->plan);
	/* A response that announces a body it must not have (HEAD, 204, 304): a dyno that sends the
	 * body anyway, a moment later, would have it taken for the answer to the next request on
	 * this connection (another client's, from the pool). So the connection is not reused. */
	if (x->resp.state == HM__MSG_DONE && (x->rs.chunked || x->rs.content_length > 0))
		x->rs.dyno_close = true;
	x->rhead = hm__router_buf_get(w, (uint32_t)hm__router_resp_write_bound(&x->resp, &ctx));
	if (x->rhead == NULL) {
		fail(x, HM__CODE_H99, 0);
		return false;
	}
	len =
	    hm__router_resp_write(&x->resp, &x->rs, &ctx, &x->plan, x->rhead->data, x->rhead->cap);
	hm_require(len > 0);
	x->resp.dechunk = x->plan.body == HM__BODY_DECHUNK;
	x->status = status;
	x->head_sent = true;
	x->last_io = now_ms(w);
	arm(c, x->last_io + (uint64_t)w->cfg->idle_timeout);
	/* Held, to go out with the first body bytes in one write. */
	x->hold_c = x->rhead->data;
	x->hold_c_len = (uint32_t)len;
	if (x->plan.tunnel || x->resp.state == HM__MSG_DONE) {
		if (!x->plan.tunnel)
			inflight_release(x); /* before the client can see the end: see resp_done */
		if (client_write(x, NULL, 0) != 0)
			return false;
		if (x->plan.tunnel)
			start_tunnel(x);
		else
			resp_done(x);
		return false;
	}
	return true;
}

/* Doubles a full head buffer, up to max. Returns 0, -ENOBUFS (max reached), -ENOSPC (the
 * head budget is spent) or -ENOMEM. */
static int grow_buf(struct hm__router_worker *w, struct hm__router_buf **bp, uint32_t len,
		    uint32_t max)
{
	struct hm__router_buf *b = *bp, *nb;
	uint32_t cap = b->cap * 2;

	if (b->cap >= max)
		return -ENOBUFS;
	if (cap > max)
		cap = max;
	if (w->big_bytes + cap > (uint64_t)w->cfg->head_budget)
		return -ENOSPC;
	nb = hm__router_buf_get(w, cap);
	if (nb == NULL)
		return -ENOMEM;
	memcpy(nb->data, b->data, len);
	hm__router_buf_put(w, b);
	*bp = nb;
	return 0;
}

/* Parses and relays what the dyno sent. */
static void resp_pump(struct hm__router_xchg *x)
{
	struct hm__router_upstream *u;

	while ((u = x->u) != NULL && u->in != NULL && u->in_off < u->in_len) {
		uint32_t from = u->in_off, used;
		int st = x->resp.state, ev;

		if (x->tunnel) {
			tunnel_pump(x);
			return;
		}
		if (st == HM__MSG_DONE || st == HM__MSG_ERROR) {
			/* Bytes after a complete response: the connection cannot be reused. */
			u->in_off = u->in_len;
			x->rs.dyno_close = true;
			break;
		}
		ev = hm__router_msg_execute(&x->resp, u->in->data, from, u->in_len - from, &used);
		u->in_off += used;
		if (ev == HM__EV_ERROR) {
			hm_log(HM_LOG_INFO, "router", "bad response from %s: %s", x->route.dyno,
			       x->resp.why);
			fail(x, HM__CODE_H25, 0);
			return;
		}
		if (st == HM__MSG_HEAD) {
			if (ev == HM__EV_MORE) {
				if (u->in_len == u->in->cap &&
				    grow_buf(x->c->w, &u->in, u->in_len,
					     (uint32_t)x->c->w->cfg->max_response_head + 1024) !=
					0) {
					fail(x, HM__CODE_H25, 0);
					return;
				}
				break;
			}
			if (!on_resp_head(x))
				return;
			continue;
		}
		{
			const char *out =
			    x->resp.dechunk ? u->in->data + x->resp.out_off : u->in->data + from;
			uint32_t n = x->resp.dechunk ? x->resp.out_len : used;

			if (ev == HM__EV_DONE)
				inflight_release(
				    x); /* before the client can see the end: see resp_done */
			if ((n > 0 || x->hold_c_len > 0) && client_write(x, out, n) != 0)
				return;
		}
		if (ev == HM__EV_DONE) {
			resp_done(x);
			return;
		}
	}
	if (x->hold_c_len > 0 && client_write(x, NULL, 0) != 0)
		return;
	if (x->u != NULL)
		upstream_flow(x->u);
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

/* The dyno closed (EOF), reset, or a write to it failed. */
static void upstream_gone(struct hm__router_xchg *x, int err)
{
	struct hm__router_upstream *u = x->u;

	(void)err;
	if (x->tunnel) {
		/* Whatever the dyno sent goes out first (writes to the client may still refer to
		 * the dyno connection's buffer, so it stays open until then); then both close. */
		x->u_eof = true;
		if (x->c->wpending == 0)
			client_end(x->c);
		return;
	}
	if (x->resp_done) {
		/* Closed after a complete response: not reusable. maybe_finish() closes it once
		 * the client has what refers to its buffer. */
		x->rs.dyno_close = true;
		maybe_finish(x);
		return;
	}
	if (!x->resp_started && !u->got_bytes) {
		if (u->reused && !x->retried && x->replay_ok && idempotent(x->rq.method)) {
			/* The pooled connection was closed by the dyno before we used it: once more
			 * on a fresh connection (same dyno, same request). */
			x->retried = true;
			x->upload = UP_SENDING;
			u->x = NULL;
			x->u = NULL;
			hm__router_upstream_close(u);
			attempt(x, true);
			return;
		}
		fail(x, HM__CODE_H13, 0);
		return;
	}
	if (x->resp.state == HM__MSG_BODY && hm__router_msg_finish(&x->resp) == HM__EV_DONE) {
		/* A body delimited by the close: complete. */
		x->rs.dyno_close = true;
		resp_done(x);
		return;
	}
	if (!x->head_sent)
		fail(x, HM__CODE_H13, 0);
	else
		fail(x, HM__CODE_H18, 0);
}

/*
 * A write to the dyno failed: it closed or reset the connection, perhaps right after answering
 * early (a 413 for an upload it will not read). Its answer may already be in the receive queue,
 * so this is not the end of the exchange: nothing more goes to the dyno, the client's bytes
 * wait (its buffer fills, so it is read no further), and the dyno's read side decides, as it
 * always does: the answer is relayed, or its EOF or reset without one is H13 (upstream_gone).
 */
static void upload_refused(struct hm__router_xchg *x, int err)
{
	struct hm__router_upstream *u = x->u;

	if (x->tunnel || u == NULL || u->eof) {
		upstream_gone(x, err);
		return;
	}
	x->upload = UP_REFUSED;
	upstream_flow(u);
}

/* ---- tunnels ---------------------------------------------------------------------------- */

static void tunnel_pump(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_upstream *u = x->u;

	if (u == NULL)
		return;
	if (c->in != NULL && c->in_off < c->in_len) {
		uint32_t from = c->in_off;

		c->in_off = c->in_len;
		if (upstream_write(x, c->in->data + from, c->in_len - from) != 0)
			return;
	}
	if (u->in != NULL && u->in_off < u->in_len) {
		uint32_t from = u->in_off;

		u->in_off = u->in_len;
		if (stream_write(c->w, (uv_stream_t *)&c->tcp, u->in->data + from, u->in_len - from,
				 c, true) != 0) {
			client_close(c);
			return;
		}
	}
	x->last_io = now_ms(c->w);
	upstream_flow(u);
	client_flow(c);
}

/* ---- finishing an exchange --------------------------------------------------------------- */

static void maybe_finish(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;
	struct hm__router_upstream *u = x->u;
	bool keep, all_read;

	if (!x->resp_done || c->wpending > 0)
		return;
	keep = !x->plan.close && x->rq.keep_alive && x->req.state == HM__MSG_DONE && !w->draining &&
	       !c->eof && c->state == C_OPEN;
	all_read = x->req.state == HM__MSG_DONE && (c->in == NULL || c->in_off == c->in_len);
	if (u != NULL) {
		/* Never a connection whose request did not go out whole: the dyno would read the
		 * next request as the rest of this one. */
		bool reuse = x->resp.keep_alive && !x->rs.dyno_close && x->upload == UP_SENT &&
			     u->in_off == u->in_len && u->wpending == 0 && !u->closing;

		x->u = NULL;
		u->x = NULL;
		if (reuse) {
			hm__router_buf_put(w, u->in);
			u->in = NULL;
			u->in_len = u->in_off = 0;
			u->reused = false;
			hm__router_pool_put(w, u);
		} else {
			hm__router_upstream_close(u);
		}
	}
	log_xchg(x, NULL);
	xchg_free(x);
	if (!keep && all_read) {
		/* Everything the client sent was read and answered, and the answer is with the
		 * kernel (it still goes out, then the FIN): no lingering close, as nginx skips it
		 * when nothing more is expected. Saves a shutdown, a read and a wake-up. */
		client_close(c);
		return;
	}
	if (!keep) {
		client_end(c);
		return;
	}
	c->idle_since = now_ms(w);
	arm(c, c->idle_since + (uint64_t)w->cfg->keepalive_timeout);
	if (c->in != NULL && c->in_off < c->in_len)
		client_input(c); /* pipelined */
	else
		client_flow(c);
}

/* ---- client connections ------------------------------------------------------------------ */

static void on_client_closed(uv_handle_t *h)
{
	struct hm__router_client *c = h->data;
	struct hm__router_worker *w = c->w;

	if (--c->handles > 0)
		return;
	hm__list_del(&c->link);
	w->nclients--;
	hm__gauge_add(&w->slot->c.conns_open, -1);
	c->next_free = w->free_clients;
	w->free_clients = c;
	hm__router_worker_client_closed(w);
}

static void client_close(struct hm__router_client *c)
{
	if (c->state == C_CLOSING)
		return;
	if (c->x != NULL)
		xchg_free(c->x);
	c->state = C_CLOSING;
	hm__router_buf_put(c->w, c->in);
	c->in = NULL;
	c->in_len = c->in_off = 0;
	uv_close((uv_handle_t *)&c->tcp, on_client_closed);
	uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct hm__router_client *c = req->data;

	if (c->state != C_LINGER)
		return;
	if (status != 0 || c->eof) {
		client_close(c);
		return;
	}
	/* Wait for the client to close its side (reading and discarding), for at most 2 s, so
	 * that unread input does not turn our close into a reset that destroys the response. */
	c->timer_due = 0;
	arm(c, now_ms(c->w) + LINGER_MS);
}

static void linger_start(struct hm__router_client *c)
{
	c->sreq.data = c;
	if (c->eof || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		client_close(c);
}

/* Ends the connection after what is queued has been written. */
static void client_end(struct hm__router_client *c)
{
	if (c->state != C_OPEN)
		return;
	if (c->x != NULL)
		xchg_free(c->x);
	c->state = C_LINGER;
	if (c->wpending == 0)
		linger_start(c);
	else
		client_flow(c);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct hm__router_client *c = h->data;

	(void)suggested;
	if (c->in == NULL) {
		c->in = hm__router_buf_get(c->w, 0);
		c->in_len = c->in_off = 0;
		if (c->in == NULL) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
	}
	if (c->state == C_LINGER)
		c->in_len = c->in_off = 0; /* discarding (no write refers to c->in any more) */
	*b = uv_buf_init(c->in->data + c->in_len, c->in->cap - c->in_len);
}

/* The client closed its side or its connection broke. */
static void client_eof(struct hm__router_client *c)
{
	struct hm__router_xchg *x = c->x;

	c->eof = true;
	if (c->state != C_OPEN || x == NULL) {
		if (c->state != C_CLOSING && (c->state != C_LINGER || c->wpending == 0))
			client_close(c);
		return;
	}
	switch (x->phase) {
	case X_HEAD:
		/* An incomplete request: nothing to answer, nothing to log. */
		client_close(c);
		return;
	case X_TUNNEL:
		if (x->u != NULL && x->u->wpending > 0)
			return; /* closed when the dyno has what the client sent */
		client_close(c);
		return;
	default:
		if (x->resp_done)
			return; /* finishing: the response is being written */
		fail(x, HM__CODE_H27, 499);
		return;
	}
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct hm__router_client *c = s->data;

	(void)b;
	if (n > 0) {
		c->in_len += (uint32_t)n;
		if (c->x != NULL)
			c->x->last_io = now_ms(c->w);
		client_input(c);
		return;
	}
	if (n == 0 || n == UV_ENOBUFS) {
		client_flow(c);
		return;
	}
	uv_read_stop(s);
	c->reading = false;
	client_eof(c);
}

/* Parses the head being collected. */
static void head_pump(struct hm__router_xchg *x)
{
	struct hm__router_client *c = x->c;
	struct hm__router_worker *w = c->w;
	const char *why = NULL;
	uint32_t used;
	int ev, r;

	ev = hm__router_msg_execute(&x->req, c->in->data, c->in_off, c->in_len - c->in_off, &used);
	c->in_off += used;
	if (ev == HM__EV_MORE) {
		if (c->in_len == c->in->cap &&
		    (r = grow_buf(w, &c->in, c->in_len, (uint32_t)w->cfg->max_head + 1024)) != 0) {
			/* Over --max-head, or over the worker's budget for large heads: both 400,
			 * as HAProxy answers a head larger than its buffer. */
			if (r == -ENOSPC) {
				hm__ctr_add(&w->slot->c.head_refused, 1);
				hm_log(HM_LOG_DEBUG, "router",
				       "head from %s refused: head budget spent (%llu bytes)",
				       c->peer, (unsigned long long)w->big_bytes);
			}
			capture_log_fields(x, false);
			fail_desc(x, HM__CODE_H26, 400, NULL);
			return;
		}
		x->req.base = c->in->data;
		return;
	}
	if (ev == HM__EV_ERROR) {
		hm_log(HM_LOG_DEBUG, "router", "bad request from %s: %s", c->peer, x->req.why);
		capture_log_fields(x, false);
		fail_desc(x, HM__CODE_H26, x->req.status, NULL);
		return;
	}
	r = hm__router_req_check(&x->req, &x->rq, &why);
	capture_log_fields(x, r == 0);
	if (r != 0) {
		hm_log(HM_LOG_DEBUG, "router", "bad request from %s: %s", c->peer, why);
		x->rq.key_len = 0;
		fail_desc(x, HM__CODE_H26, r, NULL);
		return;
	}
	x->t_head_ns = uv_hrtime();
	x->start_ms = hm_wall_ms();
	x->body_start = x->req.head_end;
	cookie_dyno(x);
	route(x);
}

static void client_input(struct hm__router_client *c)
{
	struct hm__router_xchg *x;

	if (c->state == C_LINGER) {
		c->in_len = c->in_off = 0;
		client_flow(c);
		return;
	}
	if (c->state != C_OPEN)
		return;
	if (c->x == NULL) {
		if (c->in == NULL || c->in_off == c->in_len) {
			client_flow(c);
			return;
		}
		if (xchg_start(c) != 0) {
			client_close(c);
			return;
		}
	}
	x = c->x;
	switch (x->phase) {
	case X_HEAD:
		head_pump(x);
		break;
	case X_PROXY:
		req_pump(x);
		break;
	case X_TUNNEL:
		tunnel_pump(x);
		break;
	default:
		break; /* routing or connecting: the bytes wait in the buffer */
	}
	if (c->state == C_OPEN || c->state == C_LINGER)
		client_flow(c);
}

/*
 * Buffer upkeep and read control for the client side: compact what is no longer needed when
 * no write to the dyno refers to the buffer, give the buffer back when idle and empty, read
 * while there is room.
 */
static void client_flow(struct hm__router_client *c)
{
	struct hm__router_xchg *x = c->x;
	uint32_t keep;
	bool want;

	if (c->state == C_CLOSING)
		return;
	if (c->in != NULL && !(x != NULL && x->u != NULL && x->u->wpending > 0)) {
		if (x == NULL || x->phase == X_TUNNEL)
			keep = c->in_off;
		else if (x->qhead == NULL)
			keep = x->req.start; /* the head is still needed */
		else if (x->replay_ok && !x->resp_started && x->u != NULL &&
			 ((x->u->reused && idempotent(x->rq.method)) || !x->u->connected))
			keep = x->body_start; /* a stale or failed connection sends it again */
		else
			keep = c->in_off;
		if (keep == 0 && c->in_len == c->in->cap && x != NULL && x->qhead != NULL &&
		    x->replay_ok) {
			x->replay_ok = false; /* the body outgrew the buffer: no replay */
			keep = c->in_off;
		}
		if (keep == c->in_len && (x == NULL || x->qhead != NULL || x->phase == X_TUNNEL)) {
			c->in_len = c->in_off = 0;
			if (x != NULL)
				x->body_start = 0;
			if (x == NULL || c->state == C_LINGER) {
				hm__router_buf_put(c->w, c->in);
				c->in = NULL;
			}
		} else if (keep > 0 && c->in_len == c->in->cap) {
			memmove(c->in->data, c->in->data + keep, c->in_len - keep);
			c->in_len -= keep;
			c->in_off -= keep;
			if (x != NULL) {
				if (x->qhead == NULL) {
					hm__router_msg_shift(&x->req, keep);
					hm__router_req_shift(&x->rq, keep);
				}
				x->body_start = x->body_start >= keep ? x->body_start - keep : 0;
				x->req.base = c->in->data;
			}
		}
	}
	want = !c->eof && (c->in == NULL || c->in_len < c->in->cap);
	if (want && !c->reading) {
		if (uv_read_start((uv_stream_t *)&c->tcp, client_alloc, client_read) == 0)
			c->reading = true;
	} else if (!want && c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

/* The same for the dyno side: the buffer may be referred to by writes to the client. */
static void upstream_flow(struct hm__router_upstream *u)
{
	struct hm__router_xchg *x = u->x;
	uint32_t keep;
	bool want;

	if (u->closing || x == NULL)
		return;
	if (u->in != NULL && x->c->wpending == 0) {
		keep = x->resp.state == HM__MSG_HEAD && !x->tunnel ? x->resp.start : u->in_off;
		if (keep == u->in_len) {
			if (x->resp.state == HM__MSG_HEAD && !x->tunnel)
				hm__router_msg_shift(&x->resp, keep);
			u->in_len = u->in_off = 0;
		} else if (keep > 0 && u->in_len == u->in->cap) {
			memmove(u->in->data, u->in->data + keep, u->in_len - keep);
			u->in_len -= keep;
			u->in_off -= keep;
			if (x->resp.state == HM__MSG_HEAD && !x->tunnel)
				hm__router_msg_shift(&x->resp, keep);
		}
	}
	want = !u->eof && (u->in == NULL || u->in_len < u->in->cap);
	if (want && !u->reading) {
		if (uv_read_start((uv_stream_t *)&u->tcp, up_alloc, up_read) == 0)
			u->reading = true;
	} else if (!want && u->reading) {
		uv_read_stop((uv_stream_t *)&u->tcp);
		u->reading = false;
	}
}

static void on_write(uv_write_t *req, int status)
{
	struct hm__router_wreq *wr = hm__container_of(req, struct hm__router_wreq, req);
	void *owner = wr->owner;
	bool to_client = wr->to_client;

	if (to_client) {
		struct hm__router_client *c = owner;
		struct hm__router_xchg *x;

		wreq_put(c->w, wr);
		c->wpending--;
		if (c->state == C_CLOSING)
			return;
		x = c->x;
		if (status != 0) {
			if (x != NULL && !x->tunnel)
				fail(x, HM__CODE_H27, 499);
			else
				client_close(c);
			return;
		}
		if (c->state == C_LINGER) {
			if (c->wpending == 0)
				linger_start(c);
			return;
		}
		if (x == NULL)
			return;
		x->last_io = now_ms(c->w);
		if (x->tunnel && x->u_eof) {
			if (c->wpending == 0)
				client_end(c);
			return;
		}
		if (c->wpending == 0) {
			if (x->resp_done) {
				maybe_finish(x);
				return;
			}
			if (x->u != NULL) {
				upstream_flow(x->u);
				if (x->u != NULL && x->u->in != NULL && x->u->in_off < x->u->in_len)
					resp_pump(x);
			}
		}
		return;
	} else {
		struct hm__router_upstream *u = owner;
		struct hm__router_xchg *x;

		wreq_put(u->w, wr);
		u->wpending--;
		if (u->closing)
			return;
		x = u->x;
		if (x == NULL)
			return;
		if (status != 0) {
			upload_refused(x, status);
			return;
		}
		x->last_io = now_ms(u->w);
		if (x->tunnel && x->c->eof && u->wpending == 0) {
			client_close(x->c);
			return;
		}
		if (u->wpending == 0) {
			struct hm__router_client *c = x->c;

			client_flow(c);
			if (c->x == x && c->in != NULL && c->in_off < c->in_len &&
			    (x->phase == X_PROXY || x->phase == X_TUNNEL))
				client_input(c);
		}
	}
}

/* ---- timers ----------------------------------------------------------------------------- */

static void on_client_timer(uv_timer_t *t)
{
	struct hm__router_client *c = t->data;
	struct hm__router_worker *w = c->w;
	const struct hm__router_config *cfg = w->cfg;
	struct hm__router_xchg *x = c->x;
	uint64_t now = now_ms(w), due;

	c->timer_due = 0;
	if (c->state == C_LINGER) {
		client_close(c);
		return;
	}
	if (c->state != C_OPEN)
		return;
	if (x == NULL) {
		uint64_t idle = (uint64_t)cfg->keepalive_timeout;

		if (w->draining && idle > DRAIN_IDLE_MS)
			idle = DRAIN_IDLE_MS;
		due = c->idle_since + idle;
		if (now >= due)
			client_close(c);
		else
			arm(c, due);
		return;
	}
	switch (x->phase) {
	case X_HEAD:
		due = x->t_first + (uint64_t)cfg->head_timeout;
		if (now >= due) {
			capture_log_fields(x, false);
			fail(x, HM__CODE_H28, 408);
			return;
		}
		break;
	case X_BOOTWAIT:
		route(x);
		return;
	case X_CONNECT:
		due = x->t_connect + (uint64_t)cfg->connect_timeout;
		if (now >= due) {
			attempt_failed(x, FAIL_TIMEOUT);
			return;
		}
		break;
	case X_ROUTE:
		return;
	case X_TUNNEL:
		due = x->last_io + (uint64_t)cfg->idle_timeout;
		if (now >= due) {
			client_close(c);
			return;
		}
		break;
	case X_PROXY:
	default:
		if (x->upload == UP_SENT && !x->resp_started) {
			due = x->t_req_done + (uint64_t)cfg->first_byte_timeout;
			if (now >= due) {
				fail(x, HM__CODE_H12, 0);
				return;
			}
			break;
		}
		due = x->last_io + (uint64_t)cfg->idle_timeout;
		if (now >= due) {
			/* Whose silence? A client not reading or not sending is H28; a dyno not
			 * answering or not reading is H15. */
			bool client_stalled =
			    c->wpending > 0 ||
			    (x->upload == UP_SENDING && !(x->u != NULL && x->u->wpending > 0));

			fail(x, client_stalled ? HM__CODE_H28 : HM__CODE_H15,
			     client_stalled ? 499 : 0);
			return;
		}
		break;
	}
	arm(c, due);
}

/* ---- accepting -------------------------------------------------------------------------- */

static void peer_text(struct hm__router_client *c, const struct sockaddr *sa)
{
	char buf[INET6_ADDRSTRLEN] = "";

	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, sizeof(buf));
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, sizeof(buf));
		else
			inet_ntop(AF_INET6, a, buf, sizeof(buf));
	}
	c->peer_len = (uint8_t)strnlen(buf, sizeof(c->peer) - 1);
	memcpy(c->peer, buf, c->peer_len);
	c->peer[c->peer_len] = '\0';
}

int hm__router_client_open(struct hm__router_worker *w, int fd, const struct sockaddr *peer,
			   socklen_t peer_len)
{
	struct hm__router_client *c = w->free_clients;
	int r;

	(void)peer_len;
	if (c != NULL)
		w->free_clients = c->next_free;
	else if ((c = malloc(sizeof(*c))) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	memset(c, 0, sizeof(*c));
	c->w = w;
	uv_tcp_init(&w->loop, &c->tcp);
	c->tcp.data = c;
	c->handles = 1;
	hm__list_push(&w->clients, &c->link);
	w->nclients++;
	hm__gauge_add(&w->slot->c.conns_open, 1);
	r = uv_tcp_open(&c->tcp, fd);
	if (r != 0) {
		close(fd);
		c->state = C_CLOSING;
		uv_close((uv_handle_t *)&c->tcp, on_client_closed);
		return r;
	}
	uv_timer_init(&w->loop, &c->timer);
	c->timer.data = c;
	c->handles = 2;
	hm__ctr_add(&w->slot->c.conns_total, 1);
	peer_text(c, peer);
	c->idle_since = now_ms(w);
	arm(c, c->idle_since + (uint64_t)w->cfg->keepalive_timeout);
	client_flow(c);
	return 0;
}

/* ---- draining --------------------------------------------------------------------------- */

void hm__router_clients_drain(struct hm__router_worker *w)
{
	struct hm__router_list *n, *next;

	for (n = w->clients.next; n != &w->clients; n = next) {
		struct hm__router_client *c = hm__container_of(n, struct hm__router_client, link);

		next = n->next;
		if (c->state == C_OPEN && c->x == NULL)
			arm(c, HM_MAX(c->idle_since + DRAIN_IDLE_MS, now_ms(w)));
	}
}

void hm__router_clients_abort(struct hm__router_worker *w)
{
	struct hm__router_list *n, *next;

	for (n = w->clients.next; n != &w->clients; n = next) {
		struct hm__router_client *c = hm__container_of(n, struct hm__router_client, link);
		struct hm__router_xchg *x = c->x;

		next = n->next;
		if (c->state == C_CLOSING)
			continue;
		if (x != NULL && x->phase != X_HEAD && !x->logged) {
			x->code = HM__CODE_H24;
			x->status = 503;
			log_xchg(x, NULL);
		}
		client_close(c);
	}
}
