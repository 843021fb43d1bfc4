/*
 * Toward dynos (see upstream.h): dyno connections and the HTTP/1.1 client side of a request.
 *
 * A connection reads into its own buffer for as long as the buffer has room; the response is
 * parsed in place and its bytes handed to the owner from there, so nothing is copied. The buffer
 * is compacted only while the owner references none of it (HM__UPF_HELD clear): a client that
 * reads slowly keeps the bytes referenced, the buffer fills, reading stops, and the dyno's TCP
 * window closes. Idle pooled connections keep reading without a buffer, so a dyno that closes
 * one (or, against the protocol, sends on it) is noticed and the connection dropped.
 *
 * Connection objects come from ctx->free_dconns and go back there in their close callback.
 */
#include "router/upstream.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "router/ctx.h"
#include "router/http.h"

_Static_assert(offsetof(struct hm__router_dconn, fl) == 0, "free-list link first");

static uint64_t now_ms(const struct hm__router_upstream *up)
{
	return uv_now(up->ctx->loop);
}

/* ---- connections ------------------------------------------------------------------------- */

static void on_dconn_closed(uv_handle_t *h)
{
	struct hm__router_dconn *dc = h->data;

	hm__router_buf_put(&dc->ctx->mem, dc->in);
	dc->in = NULL;
	hm__free_put(&dc->ctx->free_dconns, dc);
}

/* Closes a connection nobody uses any more; it is freed in its close callback. Closing the
 * handle closes the fd at once; queued writes are cancelled (their buffers are not read again)
 * and a pending connect reports UV_ECANCELED. */
static void dconn_close(struct hm__router_dconn *dc)
{
	if (dc->flags & HM__DC_CLOSING)
		return;
	dc->flags |= HM__DC_CLOSING;
	dc->up = NULL;
	uv_close((uv_handle_t *)&dc->tcp, on_dconn_closed);
}

static void pool_close(struct hm__router_pool_entry *e)
{
	dconn_close(hm__container_of(e, struct hm__router_dconn, pe));
}

int hm__router_upstream_pool_init(struct hm__router_ctx *ctx)
{
	return hm__router_pool_init(&ctx->pool, ctx->loop, (uint32_t)ctx->cfg->pool_max,
				    (uint64_t)ctx->cfg->pool_idle_timeout, pool_close);
}

static void dc_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct hm__router_dconn *dc = h->data;

	(void)suggested;
	if (dc->in == NULL) {
		dc->in = hm__router_buf_get(&dc->ctx->mem, 0);
		dc->in_len = dc->in_off = 0;
	}
	if (dc->in == NULL) {
		*b = uv_buf_init(NULL, 0);
		return;
	}
	*b = uv_buf_init(dc->in->data + dc->in_len, dc->in->cap - dc->in_len);
}

static void pump(struct hm__router_upstream *up);
static void gone(struct hm__router_upstream *up, int err);

static void dc_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct hm__router_dconn *dc = s->data;
	struct hm__router_upstream *up = dc->up;

	(void)b;
	if (n > 0) {
		dc->in_len += (uint32_t)n;
		if (up == NULL) {
			/* Idle in the pool: a dyno has nothing to say unasked. */
			hm__router_pool_remove(&dc->ctx->pool, &dc->pe);
			dconn_close(dc);
			return;
		}
		up->flags |= HM__UPF_GOT_BYTES;
		up->last_io = now_ms(up);
		pump(up);
		return;
	}
	if (n == 0 || n == UV_ENOBUFS) {
		if (dc->in != NULL && dc->in_len == 0 &&
		    (up == NULL || !(up->flags & HM__UPF_HELD))) {
			hm__router_buf_put(&dc->ctx->mem, dc->in);
			dc->in = NULL;
		}
		return;
	}
	uv_read_stop(s);
	dc->flags = (uint8_t)((dc->flags & ~HM__DC_READING) | HM__DC_EOF);
	if (up == NULL) {
		hm__router_pool_remove(&dc->ctx->pool, &dc->pe);
		dconn_close(dc);
		return;
	}
	gone(up, (int)n);
}

/* Buffer upkeep and read control: compact what is parsed when the owner references none of it,
 * read while there is room. */
static void flow(struct hm__router_upstream *up)
{
	struct hm__router_dconn *dc = up->conn;
	uint32_t keep;
	bool want, head;

	if (dc == NULL || (dc->flags & (HM__DC_CLOSING | HM__DC_CONNECTED)) != HM__DC_CONNECTED)
		return;
	if (dc->in != NULL && !(up->flags & HM__UPF_HELD)) {
		head = up->resp.state == HM__MSG_HEAD && !(up->flags & HM__UPF_TUNNEL);
		keep = head ? up->resp.start : dc->in_off;
		if (keep == dc->in_len) {
			if (head)
				hm__router_msg_shift(&up->resp, keep);
			dc->in_len = dc->in_off = 0;
		} else if (keep > 0 && dc->in_len == dc->in->cap) {
			memmove(dc->in->data, dc->in->data + keep, dc->in_len - keep);
			dc->in_len -= keep;
			dc->in_off -= keep;
			if (head)
				hm__router_msg_shift(&up->resp, keep);
		}
	}
	want = !(dc->flags & HM__DC_EOF) && (dc->in == NULL || dc->in_len < dc->in->cap);
	if (want && !(dc->flags & HM__DC_READING)) {
		if (uv_read_start((uv_stream_t *)&dc->tcp, dc_alloc, dc_read) == 0)
			dc->flags |= HM__DC_READING;
	} else if (!want && (dc->flags & HM__DC_READING)) {
		uv_read_stop((uv_stream_t *)&dc->tcp);
		dc->flags &= (uint8_t)~HM__DC_READING;
	}
}

static void on_connect(uv_connect_t *req, int status)
{
	struct hm__router_dconn *dc = hm__container_of(req, struct hm__router_dconn, creq);
	struct hm__router_upstream *up = dc->up;

	if ((dc->flags & HM__DC_CLOSING) || up == NULL)
		return;
	if (status == 0)
		dc->flags |= HM__DC_CONNECTED;
	up->ops->connected(up->owner, status);
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

/* ---- the request ------------------------------------------------------------------------- */

void hm__router_upstream_init(struct hm__router_upstream *up, struct hm__router_ctx *ctx,
			      const struct hm__router_upstream_ops *ops, void *owner)
{
	memset(up, 0, offsetof(struct hm__router_upstream, resp));
	up->ctx = ctx;
	up->ops = ops;
	up->owner = owner;
	hm__router_msg_init(&up->resp, HTTP_RESPONSE, &ctx->resp_lim);
}

void hm__router_upstream_drop(struct hm__router_upstream *up)
{
	struct hm__router_dconn *dc = up->conn;

	if (dc == NULL)
		return;
	up->conn = NULL;
	dc->up = NULL;
	hm__router_pool_remove(&up->ctx->pool, &dc->pe);
	dconn_close(dc);
}

void hm__router_upstream_end(struct hm__router_upstream *up, bool reuse)
{
	struct hm__router_ctx *ctx = up->ctx;
	struct hm__router_dconn *dc = up->conn;

	if (dc != NULL) {
		/* Never a connection whose request did not go out whole (reuse is false then): the
		 * dyno would read the next request as the rest of this one. */
		reuse = reuse && up->resp.state == HM__MSG_DONE && up->resp.keep_alive &&
			!up->rs.dyno_close && !(up->flags & HM__UPF_TUNNEL) &&
			dc->in_off == dc->in_len && dc->wpending == 0 &&
			!(dc->flags & (HM__DC_CLOSING | HM__DC_EOF));
		up->conn = NULL;
		dc->up = NULL;
		if (reuse) {
			hm__router_buf_put(&ctx->mem, dc->in);
			dc->in = NULL;
			dc->in_len = dc->in_off = 0;
			hm__router_pool_put(&ctx->pool, &dc->pe);
		} else {
			dconn_close(dc);
		}
	}
	hm__router_buf_put(&ctx->mem, up->qhead);
	hm__router_buf_put(&ctx->mem, up->tbuf);
	up->qhead = up->tbuf = NULL;
	up->qhead_len = up->hold = 0;
	up->flags = 0;
	hm__router_msg_fini(&up->resp);
}

bool hm__router_upstream_take(struct hm__router_upstream *up, const struct hm_addr *addr)
{
	struct hm__router_ctx *ctx = up->ctx;
	struct hm__router_pool_entry *e = hm__router_pool_take(&ctx->pool, addr);
	struct hm__router_dconn *dc;

	if (e == NULL)
		return false;
	dc = hm__container_of(e, struct hm__router_dconn, pe);
	dc->up = up;
	up->conn = dc;
	up->flags = (uint8_t)((up->flags & ~HM__UPF_GOT_BYTES) | HM__UPF_REUSED);
	hm__ctr_add(&ctx->slot->c.pool_reused, 1);
	return true;
}

int hm__router_upstream_connect(struct hm__router_upstream *up, const struct hm_addr *addr)
{
	struct hm__router_ctx *ctx = up->ctx;
	struct hm__router_dconn *dc;
	struct sockaddr_storage ss;
	int r;

	up->flags &= (uint8_t) ~(HM__UPF_REUSED | HM__UPF_GOT_BYTES);
	dc = hm__free_get(&ctx->free_dconns);
	if (dc == NULL && (dc = malloc(sizeof(*dc))) == NULL)
		return -ENOMEM;
	memset(dc, 0, sizeof(*dc));
	dc->ctx = ctx;
	dc->pe.addr = *addr;
	hm__list_init(&dc->pe.bucket);
	hm__list_init(&dc->pe.lru);
	uv_tcp_init(ctx->loop, &dc->tcp);
	dc->tcp.data = dc;
	dc->up = up;
	up->conn = dc;
	hm__ctr_add(&ctx->slot->c.pool_new, 1);
	uv_tcp_nodelay(&dc->tcp, 1);
	r = addr_to_sockaddr(addr, &ss);
	if (r == 0)
		r = uv_tcp_connect(&dc->creq, &dc->tcp, (const struct sockaddr *)&ss, on_connect);
	/* Out of descriptors: an idle pooled connection gives one back (closed at once). */
	while (local_exhaustion(r) && hm__router_pool_evict(&ctx->pool))
		r = uv_tcp_connect(&dc->creq, &dc->tcp, (const struct sockaddr *)&ss, on_connect);
	if (r == 0)
		return 0;
	hm__router_upstream_drop(up);
	if (local_exhaustion(r)) {
		/* The router's shortage, not the dyno's fault. */
		hm__router_ctx_fd_exhausted(ctx, "connecting to a dyno", r);
		return -EMFILE;
	}
	return r;
}

int hm__router_upstream_head(struct hm__router_upstream *up, const struct hm__router_msg *m,
			     const struct hm__router_req *rq, const struct hm__router_fwd *f)
{
	size_t bound = hm__router_req_write_bound(m) + f->peer_len + f->request_id_len;

	up->qhead = hm__router_buf_get(&up->ctx->mem, (uint32_t)bound);
	if (up->qhead == NULL)
		return -ENOMEM;
	up->qhead_len = (uint32_t)hm__router_req_write(m, rq, f, up->qhead->data, up->qhead->cap);
	hm_require(up->qhead_len > 0);
	return 0;
}

int hm__router_upstream_begin(struct hm__router_upstream *up, bool head_request)
{
	struct hm__router_dconn *dc = up->conn;

	if (!(dc->flags & HM__DC_READING)) {
		int r = uv_read_start((uv_stream_t *)&dc->tcp, dc_alloc, dc_read);

		if (r != 0)
			return r;
		dc->flags |= HM__DC_READING;
	}
	if (head_request)
		up->flags |= HM__UPF_HEAD_REQ;
	hm__router_msg_reset(&up->resp, dc->in != NULL ? dc->in->data : NULL, 0);
	hm__router_msg_skip_body(&up->resp, head_request);
	up->hold = up->qhead_len;
	up->last_io = now_ms(up);
	return 0;
}

static void on_written(void *owner, int status)
{
	struct hm__router_dconn *dc = owner;
	struct hm__router_upstream *up = dc->up;

	dc->wpending--;
	if ((dc->flags & HM__DC_CLOSING) || up == NULL)
		return;
	up->last_io = now_ms(up);
	if (status != 0 || dc->wpending == 0)
		up->ops->written(up->owner, status);
}

int hm__router_upstream_send(struct hm__router_upstream *up, const uv_buf_t *b, unsigned n)
{
	struct hm__router_dconn *dc = up->conn;
	uv_buf_t v[4];
	unsigned k = 0;
	int r;

	if (up->hold > 0) {
		v[k++] = uv_buf_init(up->qhead->data, up->hold);
		up->hold = 0;
	}
	hm_require(k + n <= 4);
	for (unsigned i = 0; i < n; i++)
		v[k++] = b[i];
	r = hm__router_writev(&up->ctx->mem, (uv_stream_t *)&dc->tcp, v, k, on_written, dc);
	if (r == 1)
		dc->wpending++;
	return r;
}

bool hm__router_upstream_writing(const struct hm__router_upstream *up)
{
	return up->conn != NULL && up->conn->wpending > 0;
}

bool hm__router_upstream_eof(const struct hm__router_upstream *up)
{
	return up->conn == NULL || (up->conn->flags & HM__DC_EOF) != 0;
}

/* ---- the response ------------------------------------------------------------------------ */

/* Parses and hands on what the dyno sent. */
static void pump(struct hm__router_upstream *up)
{
	struct hm__router_dconn *dc;
	int r = 0;

	while ((dc = up->conn) != NULL && dc->in != NULL && dc->in_off < dc->in_len &&
	       !(up->flags & HM__UPF_PAUSED)) {
		uint32_t from = dc->in_off, used;
		int st = up->resp.state, ev;

		if (up->flags & HM__UPF_TUNNEL) {
			dc->in_off = dc->in_len;
			r = up->ops->body(up->owner, dc->in->data + from, dc->in_len - from, false);
			break;
		}
		if (st == HM__MSG_DONE || st == HM__MSG_ERROR) {
			/* Bytes after a complete response: the connection cannot be reused. */
			dc->in_off = dc->in_len;
			up->rs.dyno_close = true;
			break;
		}
		ev =
		    hm__router_msg_execute(&up->resp, dc->in->data, from, dc->in_len - from, &used);
		dc->in_off += used;
		if (ev == HM__EV_ERROR) {
			up->ops->bad(up->owner, up->resp.why);
			return;
		}
		if (st == HM__MSG_HEAD) {
			const char *why = NULL;

			if (ev == HM__EV_MORE) {
				if (dc->in_len == dc->in->cap &&
				    hm__router_buf_grow(&up->ctx->mem, &dc->in, dc->in_len,
							(uint32_t)up->ctx->cfg->max_response_head +
							    1024) != 0) {
					up->ops->bad(up->owner, NULL);
					return;
				}
				break;
			}
			if (hm__router_resp_check(&up->resp, &up->rs, &why) != 0) {
				up->ops->bad(up->owner, why);
				return;
			}
			r = up->ops->head(up->owner);
			if (r == HM__UP_STOP)
				return;
			if (r == HM__UP_INTERIM) {
				hm__router_msg_reset(&up->resp, dc->in->data, up->resp.head_end);
				hm__router_msg_skip_body(&up->resp, up->flags & HM__UPF_HEAD_REQ);
				continue;
			}
			if (r == HM__UP_TUNNEL) {
				up->flags |= HM__UPF_TUNNEL;
				continue;
			}
			/* The head goes out now if no body byte follows it in this read. */
			if (up->resp.state == HM__MSG_DONE) {
				up->ops->body(up->owner, NULL, 0, true);
				return;
			}
			if (dc->in_off == dc->in_len)
				r = up->ops->body(up->owner, NULL, 0, false);
		} else {
			const char *out = up->resp.dechunk ? dc->in->data + up->resp.out_off
							   : dc->in->data + from;
			uint32_t n = up->resp.dechunk ? up->resp.out_len : used;

			if (ev == HM__EV_DONE) {
				up->ops->body(up->owner, out, n, true);
				return;
			}
			r = up->ops->body(up->owner, out, n, false);
		}
		if (r == HM__UP_STOP)
			return;
		if (r == HM__UP_PAUSE)
			up->flags |= HM__UPF_PAUSED;
	}
	if (r == HM__UP_STOP)
		return;
	if (r == HM__UP_PAUSE)
		up->flags |= HM__UPF_PAUSED;
	flow(up);
}

/* The dyno closed (EOF) or reset. */
static void gone(struct hm__router_upstream *up, int err)
{
	if (!(up->flags & HM__UPF_TUNNEL) && up->resp.state == HM__MSG_BODY &&
	    hm__router_msg_finish(&up->resp) == HM__EV_DONE) {
		/* A body delimited by the close: complete. */
		up->rs.dyno_close = true;
		up->ops->body(up->owner, NULL, 0, true);
		return;
	}
	up->ops->gone(up->owner, err);
}

void hm__router_upstream_released(struct hm__router_upstream *up)
{
	struct hm__router_dconn *dc = up->conn;

	up->flags &= (uint8_t) ~(HM__UPF_HELD | HM__UPF_PAUSED);
	if (dc == NULL)
		return;
	if (dc->in != NULL && dc->in_off < dc->in_len) {
		pump(up);
		return;
	}
	flow(up);
}

int hm__router_upstream_collect_trailers(struct hm__router_upstream *up)
{
	if (up->tbuf == NULL && (up->tbuf = hm__router_buf_get(&up->ctx->mem, 0)) == NULL)
		return -ENOMEM;
	hm__router_msg_collect_trailers(&up->resp, up->tbuf->data, up->tbuf->cap);
	return 0;
}

size_t hm__router_upstream_trailers(const struct hm__router_upstream *up,
				    struct hm__router_field *out, size_t cap)
{
	return up->tbuf != NULL ? hm__router_msg_trailers(&up->resp, out, cap) : 0;
}
