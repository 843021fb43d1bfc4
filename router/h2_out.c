/*
 * The output of an HTTP/2 connection (see h2.h, docs/h2.md "Output"): batches of frames for the
 * transport, and response bodies that go out without a copy. nghttp2 serialises one frame at a
 * time; control frames are copied into the batch's buffer (small, and several go in one iovec),
 * DATA is announced with NGHTTP2_DATA_FLAG_NO_COPY and its payload pointed at in the exchange's
 * spans. A batch stays as it is until the transport has written all of it, so nothing it
 * references moves meanwhile; a span is released when its last byte has been written (or when it
 * is dropped, after the batch holding its first bytes, if any).
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "router/h2-t.h"

bool hm__h2_batch_pending(const struct hm__router_h2_conn *c)
{
	return c->seg_pos < c->nseg;
}

/* A span leaves the stream: release it now, or when the batch holding its framed bytes has
 * been written (a zero-length segment at the batch's end). */
void hm__h2_span_drop(struct hm__router_h2_conn *c, struct hm__h2_span *sp)
{
	if (sp->release == NULL)
		return;
	if (sp->off > 0 && hm__h2_batch_pending(c)) {
		/* The array has room: a batch's span segments stop at HM__H2_BATCH_IOV, and there
		 * is at most one partly framed span per stream, all of them in it. */
		hm_require(c->nseg < HM__H2_SEGS);
		c->seg[c->nseg++] = (struct hm__h2_seg){
		    .release = sp->release, .arg = sp->arg, .rp = sp->p, .rn = sp->n};
		return;
	}
	sp->release(sp->arg, sp->p, sp->n);
}

/* ---- response body: data provider and zero-copy DATA ----------------------------------------- */

static size_t unframed(const struct hm__router_h2_stream *s)
{
	size_t n = 0;

	for (uint8_t i = 0; i < s->sp_n; i++) {
		const struct hm__h2_span *sp = &s->sp[(s->sp_head + i) % HM__H2_SPANS];

		n += sp->n - sp->off;
	}
	return n;
}

static ssize_t read_body(nghttp2_session *ng, int32_t id, uint8_t *buf, size_t length,
			 uint32_t *flags, nghttp2_data_source *src, void *ud)
{
	struct hm__router_h2_stream *s = hm__h2_stream_of(ud, id);
	size_t avail, n;

	(void)buf;
	(void)src;
	if (s == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	avail = unframed(s);
	n = avail < length ? avail : length;
	if (n == avail && s->rs == HM__H2_RS_ENDED) {
		*flags |= NGHTTP2_DATA_FLAG_EOF;
		if (s->rtr != NULL) {
			*flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
			if (nghttp2_submit_trailer(ng, id, s->rtr, s->nrtr) != 0)
				return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
			hm__router_slab_free(&s->c->ctx->slab, s->rtr);
			s->rtr = NULL;
		}
	} else if (n == 0) {
		s->deferred = true;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (n > 0)
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
	return (ssize_t)n;
}

const nghttp2_data_provider hm__h2_provider = {.source = {.ptr = NULL}, .read_callback = read_body};

/* Appends to the batch; control bytes next to each other become one segment. */
static void seg_add(struct hm__router_h2_conn *c, const uint8_t *p, size_t n,
		    const struct hm__h2_span *sp)
{
	struct hm__h2_seg *last = c->nseg > 0 ? &c->seg[c->nseg - 1] : NULL;

	if (sp == NULL && last != NULL && last->release == NULL && last->p + last->n == p &&
	    p >= c->ctl && p < c->ctl + HM__H2_CTL) {
		last->n += n;
		return;
	}
	c->seg[c->nseg++] = (struct hm__h2_seg){
	    .p = p,
	    .n = n,
	    .release = sp != NULL ? sp->release : NULL,
	    .arg = sp != NULL ? sp->arg : NULL,
	    .rp = sp != NULL ? sp->p : NULL,
	    .rn = sp != NULL ? sp->n : 0,
	};
	c->niov++;
}

static void ctl_put(struct hm__router_h2_conn *c, const uint8_t *p, size_t n)
{
	uint8_t *d = c->ctl + c->ctl_len;

	memcpy(d, p, n);
	c->ctl_len += (uint32_t)n;
	seg_add(c, d, n, NULL);
}

int hm__h2_send_data(nghttp2_session *ng, nghttp2_frame *f, const uint8_t *framehd, size_t length,
		     nghttp2_data_source *src, void *ud)
{
	struct hm__router_h2_conn *c = ud;
	struct hm__router_h2_stream *s = hm__h2_stream_of(c, f->hd.stream_id);
	size_t left = length, need = 1;

	(void)ng;
	(void)src;
	if (s == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	for (uint8_t i = 0; i < s->sp_n && left > 0; i++) {
		const struct hm__h2_span *sp = &s->sp[(s->sp_head + i) % HM__H2_SPANS];
		size_t k = sp->n - sp->off;

		need++;
		left -= k < left ? k : left;
	}
	if (left > 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* cannot happen: read_body counted */
	if (c->niov + need > HM__H2_BATCH_IOV || HM__H2_CTL - c->ctl_len < 9 ||
	    c->batch_bytes >= HM__H2_BATCH_BYTES)
		return NGHTTP2_ERR_WOULDBLOCK;
	ctl_put(c, framehd, 9);
	for (left = length; left > 0;) {
		struct hm__h2_span *sp = &s->sp[s->sp_head];
		size_t k = sp->n - sp->off < left ? sp->n - sp->off : left;

		sp->off += k;
		left -= k;
		seg_add(c, sp->p + sp->off - k, k, sp->off == sp->n ? sp : NULL);
		if (sp->off == sp->n) {
			s->sp_head = (uint8_t)((s->sp_head + 1) % HM__H2_SPANS);
			s->sp_n--;
		}
	}
	s->body_bytes += length;
	c->batch_bytes += 9 + length;
	/* The client may give the window back for the stream and for the connection. */
	hm__h2_credit(c, 2);
	return 0;
}

/* ---- batches --------------------------------------------------------------------------------- */

/* Fills the next batch (docs/h2.md, "Output"). */
static void produce(struct hm__router_h2_conn *c)
{
	c->nseg = c->niov = c->seg_pos = 0;
	c->seg_off = 0;
	c->batch_bytes = 0;
	c->ctl_len = 0;
	c->batch_ng = false;
	if (c->state == HM__H2_DEAD || c->shut || c->ng == NULL ||
	    !nghttp2_session_want_write(c->ng))
		return;
	if (c->ctl == NULL) {
		c->ctl = hm__router_slab_alloc(
		    &c->ctx->slab, HM__H2_CTL + HM__H2_SEGS * sizeof(struct hm__h2_seg));
		if (c->ctl == NULL) {
			c->state = HM__H2_DEAD;
			return;
		}
		c->seg = (struct hm__h2_seg *)(void *)(c->ctl + HM__H2_CTL);
	}
	while (c->niov < HM__H2_BATCH_IOV - 1 && c->batch_bytes < HM__H2_BATCH_BYTES) {
		const uint8_t *d;
		ssize_t k = nghttp2_session_mem_send(c->ng, &d);

		if (k < 0) {
			c->state = HM__H2_DEAD;
			break;
		}
		if (k == 0)
			break;
		c->batch_bytes += (size_t)k;
		if ((size_t)k <= HM__H2_CTL - c->ctl_len) {
			ctl_put(c, d, (size_t)k);
			continue;
		}
		/* nghttp2 keeps these bytes until its next mem_send, which waits for the batch to
		 * be written. */
		seg_add(c, d, (size_t)k, NULL);
		c->batch_ng = true;
		break;
	}
}

/* Runs the releases of the written segments; ends the batch when all are written. */
void hm__h2_advance(struct hm__router_h2_conn *c, size_t n)
{
	while (c->seg_pos < c->nseg) {
		struct hm__h2_seg *g = &c->seg[c->seg_pos];
		size_t k = g->n - c->seg_off < n ? g->n - c->seg_off : n;

		c->seg_off += k;
		n -= k;
		if (c->seg_off < g->n)
			break;
		c->seg_pos++;
		c->seg_off = 0;
		if (g->release != NULL)
			g->release(g->arg, g->rp, g->rn);
	}
	if (c->seg_pos == c->nseg && c->ctl != NULL) {
		/* An idle connection holds no batch memory. */
		c->nseg = c->niov = c->seg_pos = 0;
		c->ctl_len = 0;
		hm__router_slab_free(&c->ctx->slab, c->ctl);
		c->ctl = NULL;
		c->seg = NULL;
	}
}

int hm__router_h2_conn_output(struct hm__router_h2_conn *c, struct iovec *iov, int cap,
			      uint64_t now)
{
	int k = 0;

	c->woken = false;
	if (c->state == HM__H2_DEAD || c->shut)
		return 0;
	hm__h2_enter(c);
	c->now = now;
	if (!hm__h2_batch_pending(c)) {
		produce(c);
		c->last_out = now; /* the send timeout counts from here */
		if (c->nseg == 0)
			hm__h2_advance(c, 0); /* nothing to write: no batch memory either */
	}
	for (uint32_t i = c->seg_pos; i < c->nseg && k < cap; i++) {
		size_t off = i == c->seg_pos ? c->seg_off : 0;

		if (c->seg[i].n == off)
			continue;
		iov[k].iov_base = (void *)(uintptr_t)(c->seg[i].p + off);
		iov[k].iov_len = c->seg[i].n - off;
		k++;
	}
	hm__h2_leave(c);
	return c->state == HM__H2_DEAD ? 0 : k;
}

void hm__router_h2_conn_sent(struct hm__router_h2_conn *c, size_t n, uint64_t now)
{
	c->now = now;
	if (n > 0)
		c->last_out = now;
	hm__h2_enter(c);
	hm__h2_advance(c, n);
	hm__h2_leave(c);
}

/* ---- response body spans --------------------------------------------------------------------- */

int hm__router_h2_stream_send(struct hm__router_h2_stream *s, const void *p, size_t n,
			      hm__router_h2_release_cb release, void *arg)
{
	struct hm__router_h2_conn *c = s->c;

	if (!s->attached)
		return -EPIPE;
	if (s->rs != HM__H2_RS_BODY)
		return -EINVAL;
	if (s->sp_n == HM__H2_SPANS)
		return -ENOBUFS;
	if (n == 0) {
		if (release != NULL)
			release(arg, p, n);
		return 0;
	}
	s->sp[(s->sp_head + s->sp_n) % HM__H2_SPANS] =
	    (struct hm__h2_span){.p = p, .n = n, .release = release, .arg = arg};
	s->sp_n++;
	if (s->deferred) {
		s->deferred = false;
		nghttp2_session_resume_data(c->ng, s->id);
	}
	hm__h2_wake(c);
	return 0;
}
