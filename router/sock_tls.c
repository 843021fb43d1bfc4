/*
 * The TLS client transport (see sock-t.h): the second implementation of the transport's ops,
 * over router/tls.c's memory engine, so that a protocol reads and writes plaintext exactly as it
 * does on plain TCP. Ciphertext is read into a buffer of the transport's own (from the worker's
 * free list, given back whenever it is empty, so an idle connection holds none), decrypted into
 * the protocol's buffer when the protocol asks to read, and written from the engine's output
 * buffer: what the socket takes at once, the rest with one uv_write. A protocol's write is
 * "queued" (cbs->written follows) until its last ciphertext byte reached the kernel, which keeps
 * the protocol's back-pressure as on plain TCP.
 *
 * A connection starts in its handshake, counted against the worker's bound and its timeout (one
 * timer per worker over a list in start order: the timeout is the same for all), and is a
 * connection of ctx->conns without a protocol (drain and abort close it). Once established, the
 * protocol ALPN chose is opened on it from ctx->tls->open[]: the one place where a protocol (h2)
 * is registered for TLS.
 *
 * Input that is already here when a protocol calls read_start (ciphertext read ahead, plaintext
 * the engine holds) is delivered from the worker's idle handle, never from inside read_start:
 * the protocol sees reads only from loop callbacks, as on plain TCP.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "router/ctx.h"
#include "router/sock.h"

_Static_assert(offsetof(struct hm__router_tls_sock, s) == 0, "the transport first");

enum tls_flag {
	TF_HANDSHAKING = 1 << 0, /* in tlsw->hs, counted in tlsw->handshakes */
	TF_HS_CONN = 1 << 1,	 /* hs_conn is in ctx->conns */
	TF_ESTABLISHED = 1 << 2, /* a protocol is attached */
	TF_WANT_READ = 1 << 3,	 /* the protocol reads */
	TF_TCP_READING = 1 << 4,
	TF_EOF = 1 << 5,	    /* the socket reached its end (or broke) */
	TF_EOF_TOLD = 1 << 6,	    /* the protocol was told */
	TF_MORE = 1 << 7,	    /* the engine may hold plaintext not yet delivered */
	TF_SHUT_WANTED = 1 << 8,    /* close_notify and FIN once the queue is written */
	TF_NOTIFIED = 1 << 9,	    /* close_notify queued */
	TF_CLOSING = 1 << 10,	    /* the handle is closing */
	TF_BROKEN = 1 << 11,	    /* no more writes */
	TF_CLOSE_WRITTEN = 1 << 12, /* close once the output (an alert) is written */
	TF_NOT_TLS = 1 << 13	    /* closed before TLS began (PROXY header): not a TLS failure */
};

#define TS(s) ((struct hm__router_tls_sock *)(void *)(s))

static void tls_close(struct hm__router_sock *s);
static void deliver(struct hm__router_tls_sock *t);
static void on_tcp_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b);

static struct hm__router_tls_wrec *wq_at(struct hm__router_tls_sock *t, unsigned k)
{
	return &t->wq[(t->wq_head + k) % HM__TLS_WQ];
}

/* ---- the handshake's accounting ------------------------------------------------------------ */

static void hs_arm(struct hm__router_tlsw *w, uint64_t now);

/* What the engine's certificate cache did since the last handshake ended (its lookups happen
 * during handshakes), into the worker's counters. */
static void cache_publish(struct hm__router_tlsw *w, struct hm__router_counters *c)
{
	const struct hm_tls_stats *st = hm_tls_ctx_stats(w->engine);

	hm__ctr_add(&c->tls_cache_hits, st->cache_hits - w->cache_hits);
	hm__ctr_add(&c->tls_cache_misses, st->cache_misses - w->cache_misses);
	hm__ctr_add(&c->tls_cache_evictions, st->cache_evictions - w->cache_evictions);
	hm__gauge_add(&c->tls_cached, (int64_t)st->cached - (int64_t)w->cached);
	w->cache_hits = st->cache_hits;
	w->cache_misses = st->cache_misses;
	w->cache_evictions = st->cache_evictions;
	w->cached = st->cached;
}

/* The handshake is over (established, failed, or the connection closed): it leaves the list and
 * its outcome is counted. */
static void hs_end(struct hm__router_tls_sock *t)
{
	struct hm__router_ctx *ctx = t->s.ctx;
	struct hm__router_counters *c = &ctx->slot->c;
	unsigned reason;

	if (!(t->tflags & TF_HANDSHAKING))
		return;
	t->tflags &= (uint16_t)~TF_HANDSHAKING;
	hm__list_del(&t->hs_link);
	ctx->tls->handshakes--;
	hm__gauge_add(&c->tls_handshaking, -1);
	cache_publish(ctx->tls, c);
	if (t->tflags & TF_NOT_TLS)
		return;
	if (hm_tls_conn_established(t->tls)) {
		hm__ctr_add(hm_tls_conn_resumed(t->tls) ? &c->tls_resumed : &c->tls_full, 1);
		if (hm_tls_conn_fast(t->tls))
			hm__ctr_add(&c->tls_fast, 1);
		return;
	}
	if (hm_tls_conn_fail(t->tls) == HM_TLS_FAIL_NONE)
		hm_tls_conn_peer_closed(t->tls); /* closed before it could finish (drain) */
	reason = hm_tls_conn_fail(t->tls);
	hm__ctr_add(&c->tls_fail[reason < HM_TLS_FAIL_COUNT ? reason : HM_TLS_FAIL_INTERNAL], 1);
}

static void on_hs_timer(uv_timer_t *h)
{
	struct hm__router_tlsw *w = h->data;
	uint64_t now = uv_now(h->loop);

	while (!hm__list_empty(&w->hs)) {
		struct hm__router_tls_sock *t =
		    hm__container_of(w->hs.prev, struct hm__router_tls_sock, hs_link);

		if (t->hs_start + w->timeout_ms > now)
			break;
		if (t->s.proxy_wait) { /* no PROXY header in time: no TLS was spoken */
			t->tflags |= TF_NOT_TLS;
			hm__ctr_add(&t->s.ctx->slot->c.proxy_refused, 1);
		}
		hm_tls_conn_timeout(t->tls);
		tls_close(&t->s); /* unlinks it */
	}
	hs_arm(w, now);
}

/* The timer fires at the oldest handshake's deadline. */
static void hs_arm(struct hm__router_tlsw *w, uint64_t now)
{
	const struct hm__router_tls_sock *t;
	uint64_t due;

	if (hm__list_empty(&w->hs)) {
		uv_timer_stop(&w->hs_timer);
		return;
	}
	t = hm__container_of(w->hs.prev, struct hm__router_tls_sock, hs_link);
	due = t->hs_start + w->timeout_ms;
	uv_timer_start(&w->hs_timer, on_hs_timer, due > now ? due - now : 0, 0);
}

static void hs_conn_close(struct hm__router_conn *c)
{
	tls_close(&hm__container_of(c, struct hm__router_tls_sock, hs_conn)->s);
}

/* A connection still in its handshake has no request to finish: drain and abort close it. */
static const struct hm__router_conn_ops hs_conn_ops = {
    .drain = hs_conn_close,
    .abort = hs_conn_close,
};

/* ---- writing ----------------------------------------------------------------------------------
 */

/*
 * The next plaintext of b[0..n) to encrypt: its first buffer, or, when it is followed by more and
 * small, as much of them as one record holds copied together (a response head and its body
 * become one record: one seal, 22 bytes of overhead, not one of each per buffer). The bytes are
 * the same whenever it is asked again, as a retried write needs.
 */
static size_t gather(struct hm__router_tls_sock *t, const uv_buf_t *b, unsigned n, const char **p)
{
	char *g = t->s.ctx->tls->gather;
	size_t len = 0, cap = sizeof(t->s.ctx->tls->gather);

	if (n == 1 || b[0].len >= cap / 2) {
		*p = b[0].base;
		return b[0].len;
	}
	for (unsigned i = 0; i < n && len < cap; i++) {
		size_t k = HM_MIN(b[i].len, cap - len);

		memcpy(g + len, b[i].base, k);
		len += k;
	}
	*p = g;
	return len;
}

/* Moves b[*i..n) past its first k bytes (buffer by buffer); returns how many it moved past (less
 * than k when b holds fewer). */
static size_t advance(uv_buf_t *b, unsigned n, unsigned *i, size_t k)
{
	size_t moved = 0;

	while (moved < k && *i < n) {
		size_t d = HM_MIN(k - moved, b[*i].len);

		b[*i].base += d;
		b[*i].len -= d;
		moved += d;
		if (b[*i].len == 0)
			(*i)++;
	}
	while (*i < n && b[*i].len == 0)
		(*i)++;
	return moved;
}

/* Seals the next record of b[*i..n) into the engine's output and moves past what it took.
 * Returns the bytes taken, 0 when the output is full, or UV_EPROTO. */
static int seal(struct hm__router_tls_sock *t, uv_buf_t *b, unsigned n, unsigned *i)
{
	const char *p;
	size_t len;
	int r;

	advance(b, n, i, 0);
	if (*i == n)
		return 0;
	len = gather(t, b + *i, n - *i, &p);
	r = hm_tls_conn_send(t->tls, p, len);
	if (r < 0)
		return UV_EPROTO;
	advance(b, n, i, (size_t)r);
	return r;
}

/* Encrypts the queued plaintext as far as the engine's output has room. 0 or UV_EPROTO. */
static int encrypt(struct hm__router_tls_sock *t)
{
	for (unsigned k = 0; k < t->wq_len; k++) {
		struct hm__router_tls_wrec *w = wq_at(t, k);
		unsigned i = w->i;

		if (w->enc)
			continue;
		/* What try_writev sealed and did not count as taken comes first: in the output
		 * already. */
		t->presealed -= (uint32_t)advance(w->b, w->n, &i, t->presealed);
		while (i < w->n) {
			int r = seal(t, w->b, w->n, &i);

			w->i = (uint8_t)i;
			if (r < 0)
				return UV_EPROTO;
			if (r == 0 && i < w->n)
				return 0; /* the output is full: after the next write */
		}
		w->i = (uint8_t)i;
		w->enc = true;
		w->ct_end = hm_tls_conn_out_total(t->tls);
	}
	return 0;
}

static void on_write_done(uv_write_t *req, int status);

/* Writes the engine's output: what the socket takes now, the rest with one uv_write. Returns 0
 * (all written, or a write in flight: t->w_inflight) or a libuv error. */
static int write_out(struct hm__router_tls_sock *t)
{
	const uint8_t *p;
	size_t n = hm_tls_conn_out(t->tls, &p);
	uv_buf_t b;
	int w;

	if (n == 0)
		return 0;
	b = uv_buf_init((char *)p, (unsigned)n);
	w = uv_try_write((uv_stream_t *)&t->s.tcp, &b, 1);
	if (w == UV_EAGAIN)
		w = 0;
	if (w < 0)
		return w;
	hm_tls_conn_out_done(t->tls, (size_t)w);
	t->ct_sent += (uint64_t)w;
	if ((size_t)w == n)
		return 0;
	b = uv_buf_init((char *)p + w, (unsigned)(n - (size_t)w));
	t->wreq.data = t;
	w = uv_write(&t->wreq, (uv_stream_t *)&t->s.tcp, &b, 1, on_write_done);
	if (w < 0)
		return w;
	t->w_inflight = (uint32_t)b.len;
	return 0;
}

/* Encrypts what is queued and writes it, until all of it is with the kernel or a write is in
 * flight. Returns 0 or a libuv error. */
static int flush(struct hm__router_tls_sock *t)
{
	for (;;) {
		const uint8_t *p;
		int r;

		if (t->w_inflight > 0)
			return 0;
		if (encrypt(t) != 0)
			return UV_EPROTO;
		if (hm_tls_conn_out(t->tls, &p) == 0)
			return 0;
		if ((r = write_out(t)) != 0)
			return r;
	}
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct hm__router_sock *s = req->data;

	if (!(TS(s)->tflags & TF_CLOSING))
		s->cbs->shutdown(s, status);
}

/* close_notify, then the FIN once it is written. 0 (started, or waiting for the output to
 * drain) or a libuv error. */
static int shutdown_now(struct hm__router_tls_sock *t)
{
	int r;

	if (!(t->tflags & TF_NOTIFIED)) {
		r = hm_tls_conn_close_notify(t->tls);
		if (r == -EPROTO)
			return UV_EPROTO;
		if (r == 0)
			t->tflags |= TF_NOTIFIED;
	}
	if ((r = flush(t)) != 0)
		return r;
	if (t->w_inflight > 0 || !(t->tflags & TF_NOTIFIED))
		return 0; /* on_write_done comes back here */
	t->tflags &= (uint16_t)~TF_SHUT_WANTED;
	t->s.sreq.data = &t->s;
	return uv_shutdown(&t->s.sreq, (uv_stream_t *)&t->s.tcp, on_shutdown);
}

/* Reports the writes whose last ciphertext byte went out (all of them, with status, after an
 * error), in order. */
static void writes_done(struct hm__router_tls_sock *t, int status)
{
	struct hm__router_sock *s = &t->s;

	while (t->wq_len > 0 && !(t->tflags & TF_CLOSING)) {
		struct hm__router_tls_wrec *w = wq_at(t, 0);

		if (status == 0 && !(w->enc && w->ct_end <= t->ct_sent))
			break;
		t->wq_head = (uint8_t)((t->wq_head + 1) % HM__TLS_WQ);
		t->wq_len--;
		s->cbs->written(s, status);
	}
}

static void on_write_done(uv_write_t *req, int status)
{
	struct hm__router_tls_sock *t = req->data;
	uint32_t n = t->w_inflight;

	t->w_inflight = 0;
	if (t->tflags & TF_CLOSING)
		return; /* cancelled: the queue is reported by the close */
	if (status == 0) {
		hm_tls_conn_out_done(t->tls, n);
		t->ct_sent += n;
		status = flush(t);
	}
	if (status != 0)
		t->tflags |= TF_BROKEN;
	if (!(t->tflags & TF_ESTABLISHED)) {
		/* The handshake's own output (or the alert that ends it). */
		if (status != 0 || ((t->tflags & TF_CLOSE_WRITTEN) && t->w_inflight == 0))
			tls_close(&t->s);
		return;
	}
	writes_done(t, status);
	if (status == 0 && (t->tflags & TF_SHUT_WANTED) && t->wq_len == 0 &&
	    !(t->tflags & TF_CLOSING) && (status = shutdown_now(t)) != 0)
		t->s.cbs->shutdown(&t->s, status);
}

static int tls_writev(struct hm__router_sock *s, uv_buf_t *b, unsigned n)
{
	struct hm__router_tls_sock *t = TS(s);
	struct hm__router_tls_wrec *w;
	int r;

	if (t->tflags & (TF_CLOSING | TF_BROKEN))
		return UV_EPIPE;
	if (t->wq_len == HM__TLS_WQ || n > HM_ARRAY_SIZE(w->b))
		return UV_ENOBUFS;
	w = wq_at(t, t->wq_len++);
	memcpy(w->b, b, n * sizeof(*b));
	w->n = (uint8_t)n;
	w->i = 0;
	w->enc = false;
	if ((r = flush(t)) != 0) {
		t->wq_len--;
		t->tflags |= TF_BROKEN;
		return r;
	}
	if (t->wq_len == 1 && w->enc && w->ct_end <= t->ct_sent) {
		t->wq_len = 0; /* all of it is with the kernel: as a plain write that fit */
		return 0;
	}
	return 1;
}

/*
 * Seals what the engine's output takes whole (HM_TLS_RECORD_MAX bytes per record, small buffers
 * gathered into one) and writes it with one system call: a protocol that tries first (HTTP/2's
 * flush) puts a whole batch of frames into a few records and one write, as on plain TCP. A
 * record counts as taken once all of its ciphertext is with the kernel; the rest of the output
 * (a record the socket took part of) goes out with a uv_write, and its plaintext, not counted,
 * is skipped when the protocol offers it again with writev (t->presealed). Nothing is taken
 * while a write is queued or in flight, or sealed plaintext waits to be offered again.
 */
#define TRY_BUFS 64
#define TRY_RECS 8

static ssize_t tls_try_writev(struct hm__router_sock *s, const uv_buf_t *b, unsigned n)
{
	struct hm__router_tls_sock *t = TS(s);
	uv_buf_t v[TRY_BUFS];
	size_t sealed = 0, taken = 0, at[TRY_RECS];
	uint64_t ct_end[TRY_RECS];
	unsigned i = 0, recs = 0;
	int r;

	if (t->tflags & (TF_CLOSING | TF_BROKEN))
		return UV_EPIPE;
	if (t->wq_len > 0 || t->w_inflight > 0 || t->presealed > 0)
		return 0; /* presealed: the next bytes are sealed already, for writev to skip */
	n = HM_MIN(n, TRY_BUFS);
	memcpy(v, b, n * sizeof(*b));
	advance(v, n, &i, 0);
	while (i < n && recs < TRY_RECS) {
		size_t left = 0;

		for (unsigned j = i; j < n && left < HM_TLS_RECORD_MAX; j++)
			left += v[j].len;
		if (hm_tls_conn_out_room(t->tls) <
		    HM_MIN(left, (size_t)HM_TLS_RECORD_MAX) + HM_TLS_RECORD_SLACK)
			break;
		r = seal(t, v, n, &i);
		if (r <= 0) {
			/* The room was checked: 0 would leave a record half sealed. */
			t->tflags |= TF_BROKEN;
			return UV_EPROTO;
		}
		sealed += (size_t)r;
		at[recs] = sealed;
		ct_end[recs++] = hm_tls_conn_out_total(t->tls);
	}
	if (recs == 0)
		return 0;
	if ((r = write_out(t)) != 0) {
		t->tflags |= TF_BROKEN;
		return r;
	}
	for (unsigned k = 0; k < recs && ct_end[k] <= t->ct_sent; k++)
		taken = at[k];
	t->presealed = (uint32_t)(sealed - taken);
	return (ssize_t)taken;
}

static int tls_shutdown(struct hm__router_sock *s)
{
	struct hm__router_tls_sock *t = TS(s);

	if (t->tflags & (TF_CLOSING | TF_BROKEN))
		return UV_EPIPE;
	t->tflags |= TF_SHUT_WANTED;
	if (t->wq_len > 0 || t->w_inflight > 0)
		return 0; /* on_write_done starts it */
	return shutdown_now(t);
}

/* ---- reading ----------------------------------------------------------------------------------
 */

static bool input_waiting(const struct hm__router_tls_sock *t)
{
	return (t->cin != NULL && t->cin_off < t->cin_len) || (t->tflags & TF_MORE) ||
	       ((t->tflags & TF_EOF) && !(t->tflags & TF_EOF_TOLD));
}

static void on_tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct hm__router_tls_sock *t = h->data;

	(void)suggested;
	if (t->cin == NULL) {
		t->cin = hm__router_buf_get(&t->s.ctx->mem, 0);
		t->cin_off = t->cin_len = 0;
		if (t->cin == NULL) {
			*b = uv_buf_init(NULL, 0);
			return;
		}
	}
	*b = uv_buf_init(t->cin->data + t->cin_len, t->cin->cap - t->cin_len);
}

/* The ciphertext buffer: given back when empty, compacted when full. Then the socket is read
 * while there is room, the connection is not at its end, and someone wants the bytes (the
 * handshake, or the protocol). */
static void tcp_update(struct hm__router_tls_sock *t)
{
	bool want;

	if (t->cin != NULL && t->cin_off == t->cin_len) {
		hm__router_buf_put(&t->s.ctx->mem, t->cin);
		t->cin = NULL;
		t->cin_off = t->cin_len = 0;
	} else if (t->cin != NULL && t->cin_off > 0 && t->cin_len == t->cin->cap) {
		memmove(t->cin->data, t->cin->data + t->cin_off, t->cin_len - t->cin_off);
		t->cin_len -= t->cin_off;
		t->cin_off = 0;
	}
	want = !(t->tflags & (TF_EOF | TF_CLOSING)) &&
	       (!(t->tflags & TF_ESTABLISHED) || (t->tflags & TF_WANT_READ)) &&
	       (t->cin == NULL || t->cin_len < t->cin->cap);
	if (want && !(t->tflags & TF_TCP_READING)) {
		if (uv_read_start((uv_stream_t *)&t->s.tcp, on_tcp_alloc, on_tcp_read) == 0)
			t->tflags |= TF_TCP_READING;
	} else if (!want && (t->tflags & TF_TCP_READING)) {
		uv_read_stop((uv_stream_t *)&t->s.tcp);
		t->tflags &= (uint16_t)~TF_TCP_READING;
	}
}

/* Ends a connection whose handshake failed: the alert (if any) goes out first. */
static void hs_fail(struct hm__router_tls_sock *t)
{
	if (flush(t) != 0 || t->w_inflight == 0) {
		tls_close(&t->s);
		return;
	}
	t->tflags |= TF_CLOSE_WRITTEN;
	uv_read_stop((uv_stream_t *)&t->s.tcp);
	t->tflags = (uint16_t)((t->tflags & ~TF_TCP_READING) | TF_EOF);
}

/* The handshake completed: the protocol ALPN chose takes the transport. */
static void established(struct hm__router_tls_sock *t)
{
	struct hm__router_ctx *ctx = t->s.ctx;
	unsigned alpn = hm_tls_conn_alpn(t->tls);
	hm__router_proto_open_fn open = ctx->tls->open[alpn < 3 ? alpn : 0];

	hs_end(t);
	t->tflags |= TF_ESTABLISHED | TF_MORE;
	/* TLS 1.2 ends with the server's Finished, which the client waits for. What TLS 1.3 has
	 * left (the session ticket) goes out with the first response instead: one write less
	 * per connection, and nobody waits for a ticket. */
	if (strcmp(hm_tls_conn_version(t->tls), "TLSv1.3") != 0 && flush(t) != 0)
		t->tflags |= TF_BROKEN;
	/* The engine offers by ALPN only what open[] has (worker.c); none chosen is HTTP/1.x. */
	if (open == NULL)
		open = ctx->tls->open[HM_TLS_ALPN_NONE];
	open(ctx, &t->s); /* on failure it closed the transport */
	if (t->tflags & TF_HS_CONN) {
		/* After the protocol counted itself: the worker never sees this connection gone. */
		t->tflags &= (uint16_t)~TF_HS_CONN;
		hm__router_ctx_conn_del(ctx, &t->hs_conn);
	}
}

static void handshake(struct hm__router_tls_sock *t)
{
	size_t used = 0, got = 0;
	uint32_t avail = t->cin != NULL ? t->cin_len - t->cin_off : 0;
	int r;

	if (t->s.proxy_wait) {
		/* --proxy-protocol: the PROXY header comes before the client hello. */
		r = avail > 0
			? hm__router_sock_proxy(&t->s, (uint8_t *)t->cin->data + t->cin_off, avail)
			: 0;
		if (r < 0 || (r == 0 && (t->tflags & TF_EOF))) {
			t->tflags |= TF_NOT_TLS;
			tls_close(&t->s);
			return;
		}
		if (r == 0) {
			tcp_update(t);
			return;
		}
		t->cin_off += (uint32_t)r;
		avail -= (uint32_t)r;
	}
	r = hm_tls_conn_recv(t->tls, avail > 0 ? t->cin->data + t->cin_off : NULL, avail, &used,
			     NULL, 0, &got);
	t->cin_off += (uint32_t)used;
	if (r == 0 && hm_tls_conn_established(t->tls)) {
		established(t);
		return;
	}
	if (r == 0 && (t->tflags & TF_EOF)) {
		hm_tls_conn_peer_closed(t->tls);
		r = -EPROTO;
	}
	if (r != 0) {
		hs_fail(t);
		return;
	}
	if (flush(t) != 0) {
		tls_close(&t->s);
		return;
	}
	tcp_update(t);
}

/* Decrypts into the protocol's buffer while it reads and there is something to read. */
static void deliver(struct hm__router_tls_sock *t)
{
	struct hm__router_sock *s = &t->s;
	const uint8_t *p;

	while ((t->tflags & (TF_WANT_READ | TF_CLOSING)) == TF_WANT_READ) {
		uint32_t avail = t->cin != NULL ? t->cin_len - t->cin_off : 0;
		size_t used = 0, got = 0;
		uv_buf_t b;
		int r;

		if (avail == 0 && !(t->tflags & TF_MORE)) {
			if ((t->tflags & (TF_EOF | TF_EOF_TOLD)) == TF_EOF) {
				t->tflags |= TF_EOF_TOLD;
				s->cbs->read(s, UV_EOF);
			}
			break;
		}
		s->cbs->alloc(s, &b);
		if (b.len == 0) {
			s->cbs->read(s, 0);
			break;
		}
		r = hm_tls_conn_recv(t->tls, avail > 0 ? t->cin->data + t->cin_off : NULL, avail,
				     &used, b.base, b.len, &got);
		t->cin_off += (uint32_t)used;
		if (got == b.len)
			t->tflags |= TF_MORE;
		else
			t->tflags &= (uint16_t)~TF_MORE;
		/* What reading produced goes out with the next write, or after the loop. */
		if (got > 0) {
			s->cbs->read(s, (ssize_t)got);
			continue;
		}
		if (r != 0) {
			/* close_notify, or a broken record: the end of the stream either way. */
			t->tflags |= TF_EOF | TF_EOF_TOLD;
			t->tflags &= (uint16_t)~TF_MORE;
			s->cbs->read(s, r == HM_TLS_CLOSED ? UV_EOF : UV_EPROTO);
			break;
		}
		if (used == 0) {
			/* A partial record: more ciphertext first, unless there is none to come. */
			if ((t->tflags & (TF_EOF | TF_EOF_TOLD)) == TF_EOF) {
				t->tflags |= TF_EOF_TOLD;
				s->cbs->read(s, UV_EOF);
			}
			break;
		}
	}
	if (t->tflags & TF_CLOSING)
		return;
	/* What reading produced and no write of the protocol's is about to carry (the warning that
	 * refuses a TLS 1.2 renegotiation, an alert OpenSSL queued while reading) goes out now: a
	 * client waiting for it must not wait for the idle timeout. A TLS 1.3 ticket (or a
	 * KeyUpdate) waits for the protocol's first write, which carries it: nobody waits for it.
	 */
	if (!(t->tflags & TF_BROKEN) && hm_tls_conn_out(t->tls, &p) > 0 &&
	    !hm_tls_conn_out_lazy(t->tls) && flush(t) != 0)
		t->tflags |= TF_BROKEN;
	tcp_update(t);
}

static void on_tcp_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct hm__router_tls_sock *t = st->data;

	(void)b;
	if (n == 0 || n == UV_ENOBUFS) {
		tcp_update(t);
		return;
	}
	if (n > 0) {
		t->cin_len += (uint32_t)n;
	} else {
		uv_read_stop(st);
		t->tflags = (uint16_t)((t->tflags & ~TF_TCP_READING) | TF_EOF);
	}
	if (t->tflags & TF_ESTABLISHED)
		deliver(t);
	else
		handshake(t);
}

static void on_idle(uv_idle_t *h)
{
	struct hm__router_tlsw *w = h->data;
	struct hm__router_list l;

	/* What was scheduled until now; deliveries that schedule again wait for the next turn. */
	if (hm__list_empty(&w->pending)) {
		uv_idle_stop(h);
		return;
	}
	l.next = w->pending.next;
	l.prev = w->pending.prev;
	l.next->prev = &l;
	l.prev->next = &l;
	hm__list_init(&w->pending);
	while (!hm__list_empty(&l)) {
		struct hm__router_tls_sock *t =
		    hm__container_of(l.next, struct hm__router_tls_sock, pend_link);

		hm__list_del(&t->pend_link);
		deliver(t);
	}
	if (hm__list_empty(&w->pending))
		uv_idle_stop(h);
}

static int tls_read_start(struct hm__router_sock *s)
{
	struct hm__router_tls_sock *t = TS(s);
	struct hm__router_tlsw *w = s->ctx->tls;

	if (t->tflags & TF_CLOSING)
		return UV_EPIPE;
	t->tflags |= TF_WANT_READ;
	s->reading = true;
	if (input_waiting(t) && hm__list_empty(&t->pend_link)) {
		hm__list_push(&w->pending, &t->pend_link);
		uv_idle_start(&w->idle, on_idle);
	}
	tcp_update(t);
	return 0;
}

static void tls_read_stop(struct hm__router_sock *s)
{
	struct hm__router_tls_sock *t = TS(s);

	t->tflags &= (uint16_t)~TF_WANT_READ;
	s->reading = false;
	hm__list_del(&t->pend_link);
	if (!(t->tflags & TF_CLOSING))
		tcp_update(t);
}

/* ---- closing ----------------------------------------------------------------------------------
 */

static void on_closed(uv_handle_t *h)
{
	struct hm__router_tls_sock *t = h->data;
	struct hm__router_sock *s = &t->s;
	struct hm__router_ctx *ctx = s->ctx;
	bool hs_conn = (t->tflags & TF_HS_CONN) != 0;

	while (t->wq_len > 0) {
		t->wq_head = (uint8_t)((t->wq_head + 1) % HM__TLS_WQ);
		t->wq_len--;
		if (s->cbs != NULL)
			s->cbs->written(s, UV_ECANCELED);
	}
	hm_tls_conn_free(t->tls);
	t->tls = NULL;
	hm__router_buf_put(&ctx->mem, t->cin);
	t->cin = NULL;
	if (s->cbs != NULL)
		s->cbs->closed(s);
	if (hs_conn) /* it may end a draining worker: the object is done with */
		hm__router_ctx_conn_del(ctx, &t->hs_conn);
	hm__free_put(&ctx->free_tls_socks, t);
}

/*
 * A connection closed in good order says so first (RFC 8446, 6.1: close_notify before closing the
 * write side). HTTP/1's fast close (the answer is with the kernel and nothing more is expected:
 * h1.c op_done) comes straight here, without a shutdown; without the alert, a client that reads
 * to the end of the stream sees a truncation (ab counted every request failed; OpenSSL 3's
 * default is to report it). Never waits: if the socket does not take the 24 bytes at once, they
 * go with the connection, as before. Not after a broken record or an error alert, nor before the
 * handshake ended (its failure sent an alert of its own), nor with output still unwritten
 * unless it is lazy (a TLS 1.3 ticket still waiting for a response: it goes with the alert).
 */
static void notify_on_close(struct hm__router_tls_sock *t)
{
	const uint8_t *p;

	if ((t->tflags & (TF_NOTIFIED | TF_BROKEN)) || !(t->tflags & TF_ESTABLISHED) ||
	    t->w_inflight > 0 || t->wq_len > 0 ||
	    (hm_tls_conn_out(t->tls, &p) > 0 && !hm_tls_conn_out_lazy(t->tls)) ||
	    hm_tls_conn_close_notify(t->tls) != 0)
		return;
	t->tflags |= TF_NOTIFIED;
	(void)write_out(t); /* what it leaves to a uv_write, the close cancels */
}

static void tls_close(struct hm__router_sock *s)
{
	struct hm__router_tls_sock *t = TS(s);

	if (t->tflags & TF_CLOSING)
		return;
	notify_on_close(t);
	hs_end(t);
	t->tflags |= TF_CLOSING;
	hm__list_del(&t->pend_link);
	uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static const struct hm__router_sock_ops tls_ops = {
    .read_start = tls_read_start,
    .read_stop = tls_read_stop,
    .writev = tls_writev,
    .try_writev = tls_try_writev,
    .shutdown = tls_shutdown,
    .close = tls_close,
};

/* ---- opening ----------------------------------------------------------------------------------
 */

int hm__router_sock_open_tls(struct hm__router_ctx *ctx, int fd, const struct sockaddr *peer)
{
	struct hm__router_tlsw *w = ctx->tls;
	struct hm__router_tls_sock *t = hm__free_get(&ctx->free_tls_socks);
	struct hm__router_sock *s;
	int r;

	if (t == NULL && (t = malloc(sizeof(*t))) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	memset(t, 0, offsetof(struct hm__router_tls_sock, wq));
	s = &t->s;
	s->ctx = ctx;
	s->ops = &tls_ops;
	s->https = true;
	s->port = ctx->cfg->tls_port;
	s->proxy_wait = ctx->cfg->proxy_protocol;
	hm__list_init(&t->hs_link);
	hm__list_init(&t->pend_link);
	r = hm_tls_conn_new(&t->tls, w->engine);
	if (r != 0) {
		close(fd);
		hm__free_put(&ctx->free_tls_socks, t);
		return r;
	}
	uv_tcp_init(ctx->loop, &s->tcp);
	s->tcp.data = t;
	r = uv_tcp_open(&s->tcp, fd);
	if (r != 0) {
		close(fd);
		t->tflags |= TF_CLOSING;
		uv_close((uv_handle_t *)&s->tcp, on_closed);
		return r;
	}
	hm__ctr_add(&ctx->slot->c.conns_total, 1);
	hm__router_sock_peer_text(s, peer);
	t->hs_start = uv_now(ctx->loop);
	t->tflags |= TF_HANDSHAKING | TF_HS_CONN;
	hm__list_push(&w->hs, &t->hs_link);
	if (w->hs.prev == &t->hs_link)
		hs_arm(w, t->hs_start); /* the only one: else the timer is set for an older one */
	w->handshakes++;
	hm__gauge_add(&ctx->slot->c.tls_handshaking, 1);
	hm__router_ctx_conn_add(ctx, &t->hs_conn, &hs_conn_ops);
	tcp_update(t);
	return 0;
}

int hm__router_tls_start(struct hm__router_ctx *ctx, struct hm__router_tlsw *t)
{
	int r;

	hm__list_init(&t->hs);
	hm__list_init(&t->pending);
	if ((r = uv_timer_init(ctx->loop, &t->hs_timer)) != 0 ||
	    (r = uv_idle_init(ctx->loop, &t->idle)) != 0)
		return r;
	t->hs_timer.data = t->idle.data = t;
	ctx->tls = t;
	return 0;
}
