/*
 * HTTP/2 connections toward clients (see h2.h, docs/h2.md): nghttp2 does the protocol; this file
 * keeps its session fed and drained, bounds what a client can make it do, and keeps each stream
 * alive exactly as long as nghttp2 or the exchange needs it.
 *
 * Input is scanned frame by frame before nghttp2 parses it, so every frame the client sends is
 * seen (nghttp2 skips some without a callback) and the glitch that empties a connection's bucket
 * stops the input at that frame's first byte. Output is produced in batches: control frames are
 * copied into a small buffer, DATA payloads are the exchange's spans (NGHTTP2_DATA_FLAG_NO_COPY),
 * and a batch is handed out until the transport has written all of it, so nothing it references
 * moves meanwhile. A stream is freed when nghttp2 has closed it and the exchange has released it;
 * until then it holds one of the connection's max_streams slots, which is what keeps a client
 * that resets streams from running more exchanges than that. The HTTP meaning of a stream is
 * h2_msg.c's.
 */
#include <errno.h>
#include <string.h>

#include "common/util.h"
#include "router/h2-t.h"

static const uint8_t preface[HM__H2_PREFACE_LEN] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

void hm__router_h2_config_default(struct hm__router_h2_config *cfg)
{
	*cfg = (struct hm__router_h2_config){
	    .max_streams = 128,
	    .max_head = 256 << 10,
	    .max_response_head = 1 << 20,
	    .stream_window = 65535,
	    .conn_window = 1 << 20,
	    .glitch_burst = 500,
	    .glitch_rate = 50,
	    .idle_timeout_ms = 60000,
	    .head_timeout_ms = 60000,
	    .send_timeout_ms = 55000,
	    .drain_grace_ms = 1000,
	    .slab_keep = 2 << 20,
	};
}

int hm__router_h2_sniff(const void *buf, size_t n)
{
	size_t k = n < sizeof(preface) ? n : sizeof(preface);

	if (n == 0)
		return -EAGAIN;
	if (memcmp(buf, preface, k) != 0)
		return 0;
	return k == sizeof(preface) ? 1 : -EAGAIN;
}

/* ---- small helpers --------------------------------------------------------------------------- */

static void settle(struct hm__router_h2_conn *c);

void hm__h2_enter(struct hm__router_h2_conn *c)
{
	c->busy++;
}

void hm__h2_leave(struct hm__router_h2_conn *c)
{
	if (c->busy == 1)
		settle(c);
	c->busy--;
}

void hm__h2_wake(struct hm__router_h2_conn *c)
{
	/* Only for output there is: a wake-up without any (a consume below nghttp2's threshold for
	 * a WINDOW_UPDATE) would leave the flag set with nothing for the caller to take, and the
	 * next real output would wake nobody. */
	if (c->busy > 0 || c->woken || c->state == HM__H2_DEAD || c->ctx->ops.wakeup == NULL ||
	    !hm__router_h2_conn_want_write(c))
		return;
	c->woken = true;
	c->ctx->ops.wakeup(c);
}

/* ---- glitches -------------------------------------------------------------------------------- */

static void refill(struct hm__router_h2_conn *c, uint64_t now)
{
	uint64_t max = (uint64_t)c->ctx->cfg.glitch_burst * 1000;

	if (now > c->tokens_ms) {
		uint64_t add = (now - c->tokens_ms) * c->ctx->cfg.glitch_rate;

		c->tokens = max - c->tokens < add ? max : c->tokens + add;
	}
	c->tokens_ms = now;
}

/* Ends the connection at once: GOAWAY(code) with the last stream processed, no more input,
 * every stream ends with why (when the engine call returns: see settle()). */
static void terminate(struct hm__router_h2_conn *c, uint32_t code, int why)
{
	if (c->term || c->state == HM__H2_DEAD)
		return;
	c->term = true;
	c->why = (uint8_t)why;
	c->state = HM__H2_CLOSING;
	if (c->ng != NULL && nghttp2_session_terminate_session2(
				 c->ng, nghttp2_session_get_last_proc_stream_id(c->ng), code) != 0)
		c->state = HM__H2_DEAD;
}

/* Takes a token; true if there was none left. */
static bool spend(struct hm__router_h2_conn *c)
{
	hm__ctr_add(&c->ctx->st->glitches, 1);
	if (c->tokens >= 1000) {
		c->tokens -= 1000;
		return false;
	}
	return true;
}

bool hm__h2_glitch(struct hm__router_h2_conn *c)
{
	if (c->term)
		return true;
	if (!spend(c))
		return false;
	terminate(c, NGHTTP2_ENHANCE_YOUR_CALM, HM__H2_CLOSE_CONN);
	return true;
}

void hm__h2_credit(struct hm__router_h2_conn *c, uint32_t n)
{
	c->wu_credit += n;
	if (c->wu_credit > 4 * c->ctx->cfg.max_streams)
		c->wu_credit = 4 * c->ctx->cfg.max_streams;
}

/*
 * What a frame header costs (docs/h2.md, "Glitches"). Returns true if the bucket is empty
 * (the caller ends the connection once the bytes before this frame are parsed). Also follows
 * header blocks, for the head timeout.
 */
static bool frame_seen(struct hm__router_h2_conn *c, const uint8_t *fh)
{
	uint32_t len = (uint32_t)fh[0] << 16 | (uint32_t)fh[1] << 8 | fh[2];
	uint8_t type = fh[3], flags = fh[4];

	c->block_open = false;
	switch (type) {
	case NGHTTP2_DATA:
		return len == 0 && !(flags & NGHTTP2_FLAG_END_STREAM) && spend(c);
	case NGHTTP2_HEADERS:
	case NGHTTP2_PUSH_PROMISE:
	case NGHTTP2_CONTINUATION:
		c->block_open = !(flags & NGHTTP2_FLAG_END_HEADERS);
		return false;
	case NGHTTP2_SETTINGS:
		/* Acknowledgements of our one SETTINGS are nghttp2's business (it bounds them). */
		return !(flags & NGHTTP2_FLAG_ACK) && c->settings++ > 0 && spend(c);
	case NGHTTP2_WINDOW_UPDATE:
		if (c->wu_credit > 0) {
			c->wu_credit--;
			return false;
		}
		return spend(c);
	case NGHTTP2_GOAWAY:
		return false;
	default: /* PING, PRIORITY, RST_STREAM, PRIORITY_UPDATE, unknown types */
		return spend(c);
	}
}

/*
 * Follows the frame boundaries of n input bytes. Returns how many of them nghttp2 may parse:
 * all, or up to the first byte of the frame whose header emptied the glitch bucket.
 */
static size_t scan(struct hm__router_h2_conn *c, const uint8_t *p, size_t n)
{
	size_t i = 0;

	if (c->pre_left > 0) {
		i = n < c->pre_left ? n : c->pre_left;
		c->pre_left = (uint8_t)(c->pre_left - i);
	}
	while (i < n) {
		size_t k, start;

		if (c->pay_left > 0) {
			k = n - i < c->pay_left ? n - i : c->pay_left;
			c->pay_left -= (uint32_t)k;
			i += k;
			continue;
		}
		start = c->fh_len == 0 ? i : 0;
		k = n - i < 9u - c->fh_len ? n - i : 9u - c->fh_len;
		memcpy(c->fh + c->fh_len, p + i, k);
		c->fh_len = (uint8_t)(c->fh_len + k);
		i += k;
		if (c->fh_len < 9)
			break;
		c->fh_len = 0;
		c->pay_left = (uint32_t)c->fh[0] << 16 | (uint32_t)c->fh[1] << 8 | c->fh[2];
		if (frame_seen(c, c->fh))
			return start;
	}
	return n;
}

/* ---- stream lifetime ------------------------------------------------------------------------- */

static void conn_release_memory(struct hm__router_h2_conn *c);

static void stream_free(struct hm__router_h2_stream *s)
{
	struct hm__router_h2_conn *c = s->c;

	hm__h2_msg_fini(s);
	hm__router_slab_free(&c->ctx->slab, s);
	c->nslots--;
	c->last_idle = c->now;
	if (c->freeing && c->nslots == 0)
		conn_release_memory(c);
}

static void maybe_free(struct hm__router_h2_stream *s)
{
	if (s->hold == 0 && !s->attached && (s->released || !s->delivered))
		stream_free(s);
}

/*
 * nghttp2 is done with s (or the session is going): drop what the engine holds for it, tell the
 * exchange, free it if nobody else holds it.
 */
static void stream_detach(struct hm__router_h2_stream *s, int why)
{
	struct hm__router_h2_conn *c = s->c;
	size_t held;

	if (!s->attached)
		return;
	s->attached = false;
	if (c->ng != NULL)
		nghttp2_session_set_stream_user_data(c->ng, s->id, NULL);
	if (s->prev != NULL)
		s->prev->next = s->next;
	else
		c->streams = s->next;
	if (s->next != NULL)
		s->next->prev = s->prev;
	s->prev = s->next = NULL;
	held = hm__h2_req_drop(s);
	if (held > 0 && c->ng != NULL)
		nghttp2_session_consume_connection(c->ng, held);
	while (s->sp_n > 0) {
		struct hm__h2_span sp = s->sp[s->sp_head];

		s->sp_head = (uint8_t)((s->sp_head + 1) % HM__H2_SPANS);
		s->sp_n--;
		hm__h2_span_drop(c, &sp);
	}
	if (s->rtr != NULL) {
		hm__router_slab_free(&c->ctx->slab, s->rtr);
		s->rtr = NULL;
	}
	if (s->delivered && !s->released && !s->notified) {
		s->notified = true;
		s->hold++;
		c->ctx->ops.closed(s, why);
		s->hold--;
	}
	maybe_free(s);
}

/* The reason a stream nghttp2 closed ended for. */
static int close_why(const struct hm__router_h2_stream *s)
{
	if (s->rs == HM__H2_RS_DONE)
		return HM__H2_CLOSE_DONE;
	if (s->client_rst)
		return HM__H2_CLOSE_RESET;
	if (s->c->term)
		return s->c->why;
	return HM__H2_CLOSE_ERROR;
}

/* At the end of an engine call: a terminated session's remaining streams end. */
static void settle(struct hm__router_h2_conn *c)
{
	if (!c->term || c->term_done)
		return;
	c->term_done = true;
	while (c->streams != NULL)
		stream_detach(c->streams, c->why);
}

/* ---- nghttp2 callbacks ----------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hm__router_h2_conn *c = ud;
	struct hm__router_h2_stream *s;

	if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	hm__h2_credit(c, 1);
	if (c->term)
		return 0;
	if (c->nslots >= c->ctx->cfg.max_streams) {
		/* Streams the client reset may still hold their exchange: no new one yet. */
		hm__ctr_add(&c->ctx->st->refused, 1);
		if (!hm__h2_glitch(c))
			nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id,
						  NGHTTP2_REFUSED_STREAM);
		return 0;
	}
	s = hm__router_slab_alloc(&c->ctx->slab, sizeof(*s));
	if (s == NULL)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	memset(s, 0, offsetof(struct hm__router_h2_stream, msg));
	s->c = c;
	s->id = f->hd.stream_id;
	s->attached = true;
	s->next = c->streams;
	if (c->streams != NULL)
		c->streams->prev = s;
	c->streams = s;
	c->nslots++;
	hm__h2_msg_init(s);
	nghttp2_session_set_stream_user_data(ng, s->id, s);
	return 0;
}

static int on_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
	struct hm__router_h2_stream *s = hm__h2_stream_of(ud, f->hd.stream_id);

	(void)ng;
	(void)flags;
	if (s == NULL || f->hd.type != NGHTTP2_HEADERS)
		return 0;
	if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
		hm__h2_req_field(s, name, nlen, value, vlen);
	else
		hm__h2_req_trailer(s, name, nlen, value, vlen);
	return 0;
}

static int on_invalid_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
			     size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags,
			     void *ud)
{
	struct hm__router_h2_stream *s = hm__h2_stream_of(ud, f->hd.stream_id);

	(void)ng;
	(void)name;
	(void)nlen;
	(void)value;
	(void)vlen;
	(void)flags;
	if (s != NULL && f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST)
		hm__h2_req_invalid(s);
	return 0;
}

/* A GOAWAY that lets streams up to last finish (on_frame_send tells it from nghttp2's own). */
static void goaway(struct hm__router_h2_conn *c, int32_t last, uint32_t code)
{
	c->state = HM__H2_CLOSING;
	if (nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE, last, code, NULL, 0) == 0)
		c->goaways++;
}

static void deliver(struct hm__router_h2_conn *c, struct hm__router_h2_stream *s)
{
	if (s->status != 0 && hm__h2_glitch(c))
		return;
	hm__ctr_add(&c->ctx->st->streams, 1);
	s->delivered = true;
	s->hold++;
	c->ctx->ops.request(s);
	s->hold--;
	if (s->oversize && !c->term && c->state < HM__H2_CLOSING)
		/* The client ignored SETTINGS_MAX_HEADER_LIST_SIZE: no new streams. */
		goaway(c, s->id, NGHTTP2_ENHANCE_YOUR_CALM);
	maybe_free(s);
}

static int on_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hm__router_h2_conn *c = ud;
	struct hm__router_h2_stream *s = hm__h2_stream_of(c, f->hd.stream_id);
	bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;

	(void)ng;
	/* Counted before anything is skipped: the client sent them, whatever became of them. */
	if (f->hd.type == NGHTTP2_GOAWAY)
		hm__ctr_add(
		    &c->ctx->st->goaway_recv[HM_MIN(f->goaway.error_code, HM__H2_ERROR_CODES)], 1);
	else if (f->hd.type == NGHTTP2_RST_STREAM)
		hm__ctr_add(&c->ctx->st->resets, 1);
	if (s == NULL || c->term)
		return 0;
	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
		if (f->headers.cat == NGHTTP2_HCAT_REQUEST) {
			s->req_ended = end;
			hm__h2_req_finish(s, end);
			deliver(c, s);
		} else if (end) {
			hm__h2_req_end(s);
		}
		break;
	case NGHTTP2_DATA:
		if (end)
			hm__h2_req_end(s);
		break;
	case NGHTTP2_RST_STREAM:
		s->client_rst = true;
		s->code = f->rst_stream.error_code;
		break;
	default:
		break;
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t id, const uint8_t *data,
			 size_t len, void *ud)
{
	struct hm__router_h2_stream *s = hm__h2_stream_of(ud, id);
	size_t drop = len;

	(void)flags;
	if (s != NULL)
		drop = hm__h2_req_data(s, data, len);
	if (drop > 0)
		nghttp2_session_consume(ng, id, drop);
	return 0;
}

static int on_stream_close(nghttp2_session *ng, int32_t id, uint32_t code, void *ud)
{
	struct hm__router_h2_stream *s = hm__h2_stream_of(ud, id);

	(void)ng;
	if (s == NULL)
		return 0;
	/* A code already set is the exchange's or the engine's own reset, counted where made. */
	if (s->code == 0) {
		s->code = code;
		if (code != NGHTTP2_NO_ERROR && !s->client_rst && s->rs != HM__H2_RS_DONE)
			hm__ctr_add(&s->c->ctx->st->stream_errors, 1);
	}
	stream_detach(s, close_why(s));
	return 0;
}

static int on_frame_send(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
	struct hm__router_h2_conn *c = ud;
	struct hm__router_h2_stream *s;

	switch (f->hd.type) {
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		s = hm__h2_stream_of(c, f->hd.stream_id);
		if (s == NULL || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
			break;
		s->rs = HM__H2_RS_DONE;
		if (!s->req_ended) {
			/* Answered before the request ended (RFC 9113 8.1): stop the upload. */
			s->discard = true;
			nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
		}
		break;
	case NGHTTP2_GOAWAY:
		if (f->goaway.error_code < HM__H2_ERROR_CODES)
			hm__ctr_add(&c->ctx->st->goaway_sent[f->goaway.error_code], 1);
		if (c->goaways > 0 && f->goaway.last_stream_id != (1u << 31) - 1) {
			c->goaways--;
			break;
		}
		/* nghttp2 ends the session on a connection error: so do we. */
		if (f->goaway.error_code != NGHTTP2_NO_ERROR && !c->term) {
			c->term = true;
			c->why = HM__H2_CLOSE_CONN;
			c->state = HM__H2_CLOSING;
		}
		break;
	default:
		break;
	}
	return 0;
}

static int on_frame_not_send(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
	(void)err;
	(void)ud;
	/* A response head nghttp2 could not send (too large): the stream fails. */
	if (f->hd.type == NGHTTP2_HEADERS)
		nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, f->hd.stream_id,
					  NGHTTP2_INTERNAL_ERROR);
	return 0;
}

static int on_invalid_frame(nghttp2_session *ng, const nghttp2_frame *f, int err, void *ud)
{
	struct hm__router_h2_conn *c = ud;

	(void)ng;
	(void)f;
	/* nghttp2 refuses a stream past the SETTINGS_MAX_CONCURRENT_STREAMS the client has not
	 * acknowledged yet (after that, it is a connection error): a refusal like ours. */
	if (err == NGHTTP2_ERR_REFUSED_STREAM)
		hm__ctr_add(&c->ctx->st->refused, 1);
	hm__h2_glitch(c);
	return 0;
}

/* ---- context --------------------------------------------------------------------------------- */

static void *mem_malloc(size_t n, void *ud)
{
	return hm__router_slab_alloc(ud, n);
}

static void mem_free(void *p, void *ud)
{
	hm__router_slab_free(ud, p);
}

static void *mem_calloc(size_t nmemb, size_t size, void *ud)
{
	return hm__router_slab_calloc(ud, nmemb, size);
}

static void *mem_realloc(void *p, size_t n, void *ud)
{
	return hm__router_slab_realloc(ud, p, n);
}

int hm__router_h2_ctx_new(struct hm__router_h2_ctx **out, const struct hm__router_h2_config *cfg,
			  const struct hm__router_h2_ops *ops)
{
	struct hm__router_h2_ctx *ctx;
	nghttp2_session_callbacks *cb;

	if (cfg->stream_window < 65535 || cfg->stream_window > INT32_MAX ||
	    cfg->conn_window < cfg->stream_window || cfg->conn_window > INT32_MAX ||
	    cfg->max_streams == 0 || cfg->max_head < 1024 || ops->request == NULL ||
	    ops->closed == NULL)
		return -EINVAL;
	ctx = calloc(1, sizeof(*ctx));
	if (ctx == NULL)
		return -ENOMEM;
	ctx->cfg = *cfg;
	ctx->ops = *ops;
	ctx->st = &ctx->own;
	hm__router_limits_request(&ctx->lim, cfg->max_head);
	hm__router_http_init();
	hm__router_slab_init(&ctx->slab, cfg->slab_keep);
	ctx->mem = (nghttp2_mem){
	    .mem_user_data = &ctx->slab,
	    .malloc = mem_malloc,
	    .free = mem_free,
	    .calloc = mem_calloc,
	    .realloc = mem_realloc,
	};
	if (nghttp2_session_callbacks_new(&ctx->cbs) != 0 || nghttp2_option_new(&ctx->opt) != 0) {
		hm__router_h2_ctx_free(ctx);
		return -ENOMEM;
	}
	cb = ctx->cbs;
	nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
	nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
	nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
	nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send);
	nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame);
	nghttp2_session_callbacks_set_send_data_callback(cb, hm__h2_send_data);
	/* Window updates follow the dyno's progress (hm__router_h2_stream_body_consume). */
	nghttp2_option_set_no_auto_window_update(ctx->opt, 1);
	nghttp2_option_set_no_closed_streams(ctx->opt, 1);
	nghttp2_option_set_max_send_header_block_length(ctx->opt, cfg->max_response_head + 4096);
	/* Optional whitespace around values is tolerated as HTTP/1 tolerates it; CR, LF and NUL
	 * stay invalid. */
	nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(ctx->opt, 1);
	/* A header block as large as SETTINGS_MAX_HEADER_LIST_SIZE fits in 16 KiB frames. */
	nghttp2_option_set_max_continuations(ctx->opt, cfg->max_head / 16384 + 1);
	/* nghttp2's own reset limiter runs on its own clock: far behind the glitches, as a
	 * backstop only (tests that compress time must never meet it). */
	nghttp2_option_set_stream_reset_rate_limit(ctx->opt, 10 * (uint64_t)cfg->glitch_burst,
						   10 * (uint64_t)cfg->glitch_rate);
	*out = ctx;
	return 0;
}

void hm__router_h2_ctx_free(struct hm__router_h2_ctx *ctx)
{
	if (ctx == NULL)
		return;
	hm_require(ctx->nconns == 0);
	if (ctx->cbs != NULL)
		nghttp2_session_callbacks_del(ctx->cbs);
	if (ctx->opt != NULL)
		nghttp2_option_del(ctx->opt);
	hm__router_slab_fini(&ctx->slab);
	free(ctx);
}

void hm__router_h2_ctx_count_into(struct hm__router_h2_ctx *ctx, struct hm__router_h2_stats *st)
{
	hm_require(ctx->nconns == 0);
	ctx->st = st;
}

const char *hm__router_h2_code_name(uint32_t code)
{
	/* nghttp2 knows RFC 9113's names; codes after HTTP_1_1_REQUIRED are "unknown" to it. */
	return code < HM__H2_ERROR_CODES ? nghttp2_http2_strerror(code) : "unknown";
}

const struct hm__router_h2_stats *hm__router_h2_ctx_stats(struct hm__router_h2_ctx *ctx)
{
	__atomic_store_n(&ctx->st->heap_allocs, ctx->slab.heap_allocs, __ATOMIC_RELAXED);
	__atomic_store_n(&ctx->st->bytes, ctx->slab.live_bytes, __ATOMIC_RELAXED);
	return ctx->st;
}

/* ---- connection ------------------------------------------------------------------------------ */

int hm__router_h2_conn_new(struct hm__router_h2_ctx *ctx, void *data, uint64_t now,
			   struct hm__router_h2_conn **out)
{
	const struct hm__router_h2_config *cfg = &ctx->cfg;
	struct hm__router_h2_conn *c;
	nghttp2_settings_entry iv[4];
	size_t niv = 0;

	c = hm__router_slab_alloc(&ctx->slab, sizeof(*c));
	if (c == NULL)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	c->ctx = ctx;
	c->data = data;
	c->pre_left = HM__H2_PREFACE_LEN;
	c->tokens = (uint64_t)cfg->glitch_burst * 1000;
	c->tokens_ms = c->last_in = c->last_idle = c->last_out = c->now = now;
	c->wu_credit = 16;
	if (nghttp2_session_server_new3(&c->ng, ctx->cbs, c, ctx->opt, &ctx->mem) != 0) {
		hm__router_slab_free(&ctx->slab, c);
		return -ENOMEM;
	}
	iv[niv++] =
	    (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->max_streams};
	iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg->max_head};
	iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1};
	if (cfg->stream_window != 65535)
		iv[niv++] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE,
						     cfg->stream_window};
	if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv, niv) != 0 ||
	    (cfg->conn_window > 65535 &&
	     nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
						   (int32_t)cfg->conn_window) != 0)) {
		nghttp2_session_del(c->ng);
		hm__router_slab_free(&ctx->slab, c);
		return -ENOMEM;
	}
	ctx->nconns++;
	hm__ctr_add(&ctx->st->conns, 1);
	*out = c;
	return 0;
}

void *hm__router_h2_conn_data(const struct hm__router_h2_conn *c)
{
	return c->data;
}

static void go_dead(struct hm__router_h2_conn *c)
{
	c->state = HM__H2_DEAD;
}

int hm__router_h2_conn_recv(struct hm__router_h2_conn *c, const void *buf, size_t n, uint64_t now)
{
	const uint8_t *p = buf;
	int err = 0;

	if (c->state == HM__H2_DEAD || c->term || c->shut)
		return 0;
	c->now = now;
	c->last_in = now;
	c->last_idle = now;
	refill(c, now);
	hm__h2_enter(c);
	while (n > 0 && !c->term && c->state != HM__H2_DEAD) {
		size_t k = scan(c, p, n);
		ssize_t r = k > 0 ? nghttp2_session_mem_recv(c->ng, p, k) : 0;

		if (r >= 0 && k < n) {
			/* The frame at p + k emptied the glitch bucket. */
			terminate(c, NGHTTP2_ENHANCE_YOUR_CALM, HM__H2_CLOSE_CONN);
			break;
		}
		if (r < 0) {
			if (r == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS) {
				terminate(c, NGHTTP2_ENHANCE_YOUR_CALM, HM__H2_CLOSE_CONN);
				err = -EPROTO;
			} else {
				go_dead(c);
				err = r == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ECONNRESET;
			}
			break;
		}
		p += k;
		n -= k;
	}
	if (c->term && err == 0)
		err = -EPROTO;
	if (c->state == HM__H2_DEAD) {
		c->term = true;
		c->why = HM__H2_CLOSE_CONN;
	}
	hm__h2_leave(c);
	return err;
}

bool hm__router_h2_conn_want_read(const struct hm__router_h2_conn *c)
{
	return c->state != HM__H2_DEAD && !c->term && !c->shut && !hm__h2_batch_pending(c) &&
	       nghttp2_session_want_read(c->ng);
}

bool hm__router_h2_conn_want_write(const struct hm__router_h2_conn *c)
{
	return c->state != HM__H2_DEAD && !c->shut &&
	       (hm__h2_batch_pending(c) || nghttp2_session_want_write(c->ng));
}

bool hm__router_h2_conn_dead(const struct hm__router_h2_conn *c)
{
	return c->state == HM__H2_DEAD || c->shut;
}

bool hm__router_h2_conn_done(const struct hm__router_h2_conn *c)
{
	if (hm__router_h2_conn_dead(c))
		return true;
	return !hm__h2_batch_pending(c) && !nghttp2_session_want_write(c->ng) &&
	       (!nghttp2_session_want_read(c->ng) || c->term);
}

static uint64_t after(uint64_t t, uint32_t ms)
{
	return t > UINT64_MAX - ms ? UINT64_MAX : t + ms;
}

uint64_t hm__router_h2_conn_deadline(const struct hm__router_h2_conn *c)
{
	const struct hm__router_h2_config *cfg = &c->ctx->cfg;
	uint64_t d = UINT64_MAX;

	if (hm__router_h2_conn_dead(c))
		return d;
	if (hm__h2_batch_pending(c))
		d = HM_MIN(d, after(c->last_out, cfg->send_timeout_ms));
	if (c->term)
		return d;
	if (c->block_open)
		d = HM_MIN(d, after(c->last_in, cfg->head_timeout_ms));
	if (c->state == HM__H2_OPEN && c->nslots == 0 && !hm__h2_batch_pending(c))
		d = HM_MIN(d, after(c->last_idle, cfg->idle_timeout_ms));
	if (c->state == HM__H2_DRAINING)
		d = HM_MIN(d, c->drain_at);
	return d;
}

void hm__router_h2_conn_tick(struct hm__router_h2_conn *c, uint64_t now)
{
	const struct hm__router_h2_config *cfg = &c->ctx->cfg;

	if (hm__router_h2_conn_dead(c))
		return;
	c->now = now;
	hm__h2_enter(c);
	if (hm__h2_batch_pending(c) && now >= after(c->last_out, cfg->send_timeout_ms)) {
		/* The client does not read: nothing more can reach it. */
		hm__ctr_add(&c->ctx->st->timeouts, 1);
		go_dead(c);
		c->term = true;
		c->why = HM__H2_CLOSE_TIMEOUT;
	} else if (!c->term && c->block_open && now >= after(c->last_in, cfg->head_timeout_ms)) {
		hm__ctr_add(&c->ctx->st->timeouts, 1);
		terminate(c, NGHTTP2_NO_ERROR, HM__H2_CLOSE_TIMEOUT);
	} else if ((c->state == HM__H2_OPEN && c->nslots == 0 && !hm__h2_batch_pending(c) &&
		    now >= after(c->last_idle, cfg->idle_timeout_ms)) ||
		   (c->state == HM__H2_DRAINING && now >= c->drain_at)) {
		goaway(c, nghttp2_session_get_last_proc_stream_id(c->ng), NGHTTP2_NO_ERROR);
	}
	hm__h2_leave(c);
}

void hm__router_h2_conn_drain(struct hm__router_h2_conn *c, uint64_t now)
{
	if (c->state != HM__H2_OPEN || c->term || c->shut)
		return;
	c->now = now;
	c->state = HM__H2_DRAINING;
	c->drain_at = after(now, c->ctx->cfg.drain_grace_ms);
	nghttp2_submit_shutdown_notice(c->ng);
	hm__h2_wake(c);
}

void hm__router_h2_conn_shutdown(struct hm__router_h2_conn *c, int why)
{
	if (c->shut)
		return;
	c->shut = true;
	c->state = HM__H2_DEAD;
	hm__h2_enter(c);
	while (c->streams != NULL)
		stream_detach(c->streams, why);
	c->term = c->term_done = true;
	hm__h2_leave(c);
}

static void conn_release_memory(struct hm__router_h2_conn *c)
{
	struct hm__router_h2_ctx *ctx = c->ctx;

	hm__router_slab_free(&ctx->slab, c);
	ctx->nconns--;
}

void hm__router_h2_conn_free(struct hm__router_h2_conn *c)
{
	hm_require(c->busy == 0);
	hm__router_h2_conn_shutdown(c, c->why != 0 ? c->why : HM__H2_CLOSE_CONN);
	/* The transport has let go of the last batch: its spans are free. */
	hm__h2_advance(c, SIZE_MAX);
	nghttp2_session_del(c->ng);
	c->ng = NULL;
	c->freeing = true;
	if (c->nslots == 0)
		conn_release_memory(c);
}

/* ---- streams: lifetime and submissions that are about the connection ------------------------- */

void hm__h2_consume(struct hm__router_h2_stream *s, size_t n)
{
	struct hm__router_h2_conn *c = s->c;

	if (n == 0 || c->ng == NULL)
		return;
	if (s->attached)
		nghttp2_session_consume(c->ng, s->id, n);
	else
		nghttp2_session_consume_connection(c->ng, n);
	hm__h2_wake(c);
}

struct hm__router_h2_conn *hm__router_h2_stream_conn(const struct hm__router_h2_stream *s)
{
	return s->c;
}

int32_t hm__router_h2_stream_id(const struct hm__router_h2_stream *s)
{
	return s->id;
}

void hm__router_h2_stream_set_data(struct hm__router_h2_stream *s, void *data)
{
	s->data = data;
}

void *hm__router_h2_stream_data(const struct hm__router_h2_stream *s)
{
	return s->data;
}

uint32_t hm__router_h2_stream_code(const struct hm__router_h2_stream *s)
{
	return s->code;
}

uint64_t hm__router_h2_stream_body_bytes(const struct hm__router_h2_stream *s)
{
	return s->body_bytes;
}

int hm__router_h2_stream_reset(struct hm__router_h2_stream *s, uint32_t code)
{
	if (!s->attached)
		return -EPIPE;
	if (s->code == 0)
		s->code = code;
	s->discard = true;
	nghttp2_submit_rst_stream(s->c->ng, NGHTTP2_FLAG_NONE, s->id, code);
	hm__h2_wake(s->c);
	return 0;
}

void hm__router_h2_stream_release(struct hm__router_h2_stream *s)
{
	if (s->released)
		return;
	s->released = true;
	if (s->attached) {
		/* A response not yet complete will never be: cancel it. A complete one goes on;
		 * its stream is freed when nghttp2 closes it. */
		s->discard = true;
		if (s->rs < HM__H2_RS_ENDED) {
			if (s->code == 0)
				s->code = NGHTTP2_CANCEL;
			nghttp2_submit_rst_stream(s->c->ng, NGHTTP2_FLAG_NONE, s->id,
						  NGHTTP2_CANCEL);
		}
		hm__h2_wake(s->c);
	}
	maybe_free(s);
}
