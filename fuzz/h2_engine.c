/*
 * libFuzzer target for the HTTP/2 engine (router/h2.c, h2_out.c, h2_msg.c): the input is what a
 * client sends after the connection preface, fed in pieces (sizes from the input's first byte),
 * to an exchange that answers every valid request with a body span, reads request bodies, and
 * releases streams when they close; output is taken as written (sometimes in small pieces).
 * Beyond memory safety it aborts when the engine breaks its contract:
 *   - a span released twice, or not released once the connection is freed;
 *   - memory of the engine or nghttp2 still held once the connection and its streams are gone;
 *   - a stream closed twice, or a callback for a stream after its release;
 *   - conn_recv returning anything but 0, -EPROTO or -ECONNRESET.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/h2.h"

#define MAX_X 512

struct x {
	struct hm__router_h2_stream *s;
	bool closed;
};

static struct x xs[MAX_X];
static int nx, sent, released;
static struct hm__router_h2_ctx *ctx;
static struct hm__router_msg resp;
static struct hm__router_resp resp_rs;
static struct hm__router_limits resp_lim;
static char resp_buf[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\n\r\n";

static void on_release(void *arg, const void *p, size_t n)
{
	(void)arg;
	(void)p;
	(void)n;
	released++;
	if (released > sent)
		abort();
}

static void read_body(struct hm__router_h2_stream *s)
{
	struct iovec iov[4];
	int k;

	while ((k = hm__router_h2_stream_body_peek(s, iov, 4)) > 0) {
		size_t n = 0;

		for (int i = 0; i < k; i++)
			n += iov[i].iov_len;
		hm__router_h2_stream_body_consume(s, n);
	}
}

static void on_request(struct hm__router_h2_stream *s)
{
	struct x *x;

	if (nx == MAX_X) {
		hm__router_h2_stream_release(s);
		return;
	}
	x = &xs[nx++];
	x->s = s;
	x->closed = false;
	hm__router_h2_stream_set_data(s, x);
	if (hm__router_h2_stream_status(s) != 0) {
		hm__router_h2_stream_error(s, hm__router_h2_stream_status(s));
		return;
	}
	read_body(s);
	if (hm__router_h2_stream_respond(s, &resp, &resp_rs, NULL) == 0) {
		if (hm__router_h2_stream_send(s, "hello", 5, on_release, NULL) == 0)
			sent++;
		hm__router_h2_stream_end(s, NULL, 0);
	}
}

static void on_body(struct hm__router_h2_stream *s)
{
	struct x *x = hm__router_h2_stream_data(s);

	if (x == NULL || x->closed || x->s != s)
		abort();
	read_body(s);
}

static void on_closed(struct hm__router_h2_stream *s, int why)
{
	struct x *x = hm__router_h2_stream_data(s);

	(void)why;
	if (x == NULL || x->closed || x->s != s)
		abort();
	x->closed = true;
	x->s = NULL;
	hm__router_h2_stream_release(s);
}

static const struct hm__router_h2_ops ops = {
    .request = on_request, .body = on_body, .closed = on_closed};

static void drain(struct hm__router_h2_conn *c, uint64_t now, size_t piece)
{
	struct iovec iov[64];
	int k;

	while ((k = hm__router_h2_conn_output(c, iov, 64, now)) > 0) {
		size_t n = 0;

		for (int i = 0; i < k; i++)
			n += iov[i].iov_len;
		hm__router_h2_conn_sent(c, piece != 0 && piece < n ? piece : n, now);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t start[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
				       "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
				       "\x00\x00\x00\x04\x01\x00\x00\x00\x00";
	struct hm__router_h2_conn *c;
	size_t off = 0, step, piece;
	uint64_t now = 0;
	int r;

	if (ctx == NULL) {
		struct hm__router_h2_config cfg;
		uint32_t used;
		const char *why;

		hm__router_limits_response(&resp_lim, 1 << 20);
		hm__router_msg_init(&resp, HTTP_RESPONSE, &resp_lim);
		hm__router_msg_reset(&resp, resp_buf, 0);
		if (hm__router_msg_execute(&resp, resp_buf, 0, (uint32_t)strlen(resp_buf), &used) !=
			HM__EV_HEAD ||
		    hm__router_resp_check(&resp, &resp_rs, &why) != 0)
			abort();
		hm__router_h2_config_default(&cfg);
		cfg.glitch_burst = 50; /* reach the end of the budget within fuzz inputs */
		if (hm__router_h2_ctx_new(&ctx, &cfg, &ops) != 0)
			abort();
	}
	if (size < 1)
		return 0;
	step = 1 + data[0] % 64 * 16;
	piece = data[0] & 0x80 ? 7 : 0;
	data++;
	size--;
	nx = sent = released = 0;
	if (hm__router_h2_conn_new(ctx, NULL, now, &c) != 0)
		abort();
	hm__router_h2_conn_recv(c, start, sizeof(start) - 1, now);
	drain(c, now, 0);
	while (off < size && !hm__router_h2_conn_dead(c)) {
		size_t k = size - off < step ? size - off : step;

		r = hm__router_h2_conn_recv(c, data + off, k, now);
		if (r != 0 && r != -EPROTO && r != -ECONNRESET)
			abort();
		off += k;
		now += 250;
		drain(c, now, piece);
		hm__router_h2_conn_tick(c, now);
	}
	hm__router_h2_conn_tick(c, now + 3600000);
	drain(c, now + 3600000, 0);
	hm__router_h2_conn_free(c);
	for (int i = 0; i < nx; i++)
		if (xs[i].s != NULL) /* not closed: a connection free closes every stream */
			abort();
	if (released != sent || hm__router_h2_ctx_stats(ctx)->bytes != 0)
		abort();
	return 0;
}
