/*
 * Micro-benchmark of the HTTP/2 engine alone (router/h2.c; not a test: run it by hand, on a
 * quiet machine). No sockets: the bytes a client would send are fed to the engine, the engine's
 * requests go to an exchange that answers each at once with a canned dyno response (parsed
 * once, as router/http.c parses a dyno's) and a 13-byte body span, and the frames it writes are
 * taken as written. What is measured is what the engine adds per request on top of a transport
 * and an exchange: HPACK both ways, the HTTP/1.1 head written and parsed and checked, the
 * response fields, DATA framing, stream bookkeeping.
 *
 *   h2_bench [--conns C] [--streams M] [--requests N] [--warmup W]
 *   LD_PRELOAD=build/bench/malloc_count.so build/bench/h2_bench ...   (heap calls per request)
 *
 * Like h2load -c C -m M: C connections (50), each keeping M streams (10) in flight; W requests
 * (50 000) to warm up, then N (500 000) measured. The client's requests are those h2load sends
 * (:method GET, :scheme, :authority, :path, accept, accept-encoding, user-agent) HPACK-encoded
 * once per connection: after the first, every request is the same few indexed bytes with a new
 * stream id, as a real client's are. The client opens its windows wide at the start, so
 * WINDOW_UPDATEs do not count. Reported: requests/s on one core, CPU ns per request, the
 * engine's memory per idle connection and per stream in flight, and heap calls per
 * request in the measured phase (the engine's own count of allocations its slab
 * passed to malloc; with malloc_count.so preloaded, every malloc/calloc/realloc/free of the
 * process).
 */
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "router/h2.h"

struct bconn {
	struct hm__router_h2_conn *c;
	int32_t next_sid;
	uint32_t done; /* responses finished since the last refill */
	uint8_t first[512], steady[512];
	size_t first_len, steady_len;
};

static struct hm__router_msg resp;
static struct hm__router_resp resp_rs;
static struct hm__router_limits resp_lim;
static char resp_buf[] = "HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 01 Jan 2024 00:00:00 "
			 "GMT\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
			 "Connection: keep-alive\r\n\r\n";
static const char body[] = "Hello, world\n";
static uint64_t answered, stream_bytes;
static struct hm__router_h2_ctx *ctx;

static void die(const char *what)
{
	fprintf(stderr, "h2_bench: %s\n", what);
	exit(1);
}

static void on_request(struct hm__router_h2_stream *s)
{
	if (hm__router_h2_stream_status(s) != 0)
		die("the engine refused a benchmark request");
	if (hm__router_h2_stream_respond(s, &resp, &resp_rs, NULL) != 0 ||
	    hm__router_h2_stream_send(s, body, sizeof(body) - 1, NULL, NULL) != 0 ||
	    hm__router_h2_stream_end(s, NULL, 0) != 0)
		die("respond failed");
}

static void on_closed(struct hm__router_h2_stream *s, int why)
{
	struct bconn *b = hm__router_h2_conn_data(hm__router_h2_stream_conn(s));

	if (why != HM__H2_CLOSE_DONE)
		die("a stream did not complete");
	b->done++;
	answered++;
	hm__router_h2_stream_release(s);
}

static const struct hm__router_h2_ops ops = {.request = on_request, .closed = on_closed};

static size_t frame(uint8_t *o, uint8_t type, uint8_t flags, int32_t sid, const void *p, size_t n)
{
	o[0] = (uint8_t)(n >> 16);
	o[1] = (uint8_t)(n >> 8);
	o[2] = (uint8_t)n;
	o[3] = type;
	o[4] = flags;
	o[5] = (uint8_t)((uint32_t)sid >> 24);
	o[6] = (uint8_t)(sid >> 16);
	o[7] = (uint8_t)(sid >> 8);
	o[8] = (uint8_t)sid;
	memcpy(o + 9, p, n);
	return 9 + n;
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, 0                    \
	}

/* The HEADERS frames of the first request and of every later one (identical but the id). */
static void encode_requests(struct bconn *b)
{
	nghttp2_nv nv[] = {
	    NV(":method", "GET"),
	    NV(":scheme", "http"),
	    NV(":authority", "app.test"),
	    NV(":path", "/"),
	    NV("accept", "*/*"),
	    NV("accept-encoding", "gzip, deflate"),
	    NV("user-agent", "h2load nghttp2/1.52.0"),
	};
	nghttp2_hd_deflater *d;
	uint8_t blk[256];
	ssize_t n;

	if (nghttp2_hd_deflate_new(&d, 4096) != 0)
		die("deflater");
	n = nghttp2_hd_deflate_hd(d, blk, sizeof(blk), nv, sizeof(nv) / sizeof(nv[0]));
	b->first_len = frame(b->first, NGHTTP2_HEADERS,
			     NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 1, blk, (size_t)n);
	n = nghttp2_hd_deflate_hd(d, blk, sizeof(blk), nv, sizeof(nv) / sizeof(nv[0]));
	b->steady_len =
	    frame(b->steady, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3,
		  blk, (size_t)n);
	nghttp2_hd_deflate_del(d);
}

static void drain_output(struct bconn *b, uint64_t now)
{
	struct iovec iov[64];
	int k;

	while ((k = hm__router_h2_conn_output(b->c, iov, 64, now)) > 0) {
		size_t n = 0;

		for (int i = 0; i < k; i++)
			n += iov[i].iov_len;
		hm__router_h2_conn_sent(b->c, n, now);
	}
}

/* Sends as many requests as this connection has free slots, in one read's worth of bytes. */
static void refill(struct bconn *b, uint32_t want, uint64_t now)
{
	static uint8_t in[64 * 512];
	size_t n = 0;

	while (want-- > 0) {
		const uint8_t *t = b->next_sid == 1 ? b->first : b->steady;
		size_t tl = b->next_sid == 1 ? b->first_len : b->steady_len;

		memcpy(in + n, t, tl);
		in[n + 5] = (uint8_t)((uint32_t)b->next_sid >> 24);
		in[n + 6] = (uint8_t)(b->next_sid >> 16);
		in[n + 7] = (uint8_t)(b->next_sid >> 8);
		in[n + 8] = (uint8_t)b->next_sid;
		n += tl;
		b->next_sid += 2;
	}
	if (hm__router_h2_conn_recv(b->c, in, n, now) != 0)
		die("the engine refused the client's bytes");
}

static void start(struct bconn *b, uint64_t now)
{
	uint8_t in[256], settings[6] = {0, 4, 0x7f, 0xff, 0xff, 0xff}, wu[4] = {0x7f, 0xfe, 0, 0};
	size_t n = 0;

	memcpy(in, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
	n = 24;
	n += frame(in + n, NGHTTP2_SETTINGS, 0, 0, settings, 6);
	n += frame(in + n, NGHTTP2_WINDOW_UPDATE, 0, 0, wu, 4);
	if (hm__router_h2_conn_recv(b->c, in, n, now) != 0)
		die("preface");
	drain_output(b, now);
	n = frame(in, NGHTTP2_SETTINGS, NGHTTP2_FLAG_ACK, 0, NULL, 0);
	if (hm__router_h2_conn_recv(b->c, in, n, now) != 0)
		die("settings ack");
	b->next_sid = 1;
}

/* Runs until total responses have come back; every finished stream is replaced at once. */
static void run(struct bconn *bs, int nc, uint64_t total)
{
	uint64_t goal = answered + total;

	while (answered < goal) {
		for (int i = 0; i < nc; i++) {
			struct bconn *b = &bs[i];
			uint32_t want = b->done;

			b->done = 0;
			uint64_t before = hm__router_h2_ctx_stats(ctx)->bytes, d;

			if (want > 0)
				refill(b, want, 0);
			/* The memory the new streams hold until their responses are written. */
			d = hm__router_h2_ctx_stats(ctx)->bytes - before;
			if (want > 0 && d / want > stream_bytes)
				stream_bytes = d / want;
			drain_output(b, 0);
		}
	}
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

static double wall_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + t.tv_nsec / 1e9;
}

/* malloc_count.so's counters (malloc + calloc + realloc + free), if it is preloaded; else -1. */
static long long heap_calls(const char *path)
{
	unsigned long long m, c, r, a, f;
	char line[512] = "";
	FILE *fp;

	if (getenv("LD_PRELOAD") == NULL || strstr(getenv("LD_PRELOAD"), "malloc_count") == NULL)
		return -1;
	fp = fopen(path, "w");
	if (fp != NULL)
		fclose(fp);
	raise(SIGURG);
	fp = fopen(path, "r");
	if (fp == NULL)
		return -1;
	if (fgets(line, sizeof(line), fp) == NULL ||
	    sscanf(line,
		   "malloc_count pid=%*d malloc=%llu calloc=%llu realloc=%llu memalign=%llu "
		   "free=%llu",
		   &m, &c, &r, &a, &f) != 5) {
		fclose(fp);
		return -1;
	}
	fclose(fp);
	return (long long)(m + c + r + a + f);
}

int main(int argc, char **argv)
{
	struct hm__router_h2_config cfg;
	struct bconn *bs;
	int nc = 50;
	uint32_t m = 10;
	uint64_t n = 500000, warm = 50000, slab0, idle_bytes;
	char counts[64];
	long long h0, h1;
	double w0, c0, w1, c1;
	uint32_t used;
	const char *why;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--conns") == 0)
			nc = atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--streams") == 0)
			m = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--requests") == 0)
			n = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--warmup") == 0)
			warm = strtoull(argv[i + 1], NULL, 10);
		else
			die("usage: h2_bench [--conns C] [--streams M] [--requests N] [--warmup "
			    "W]");
	}
	if (nc < 1 || m < 1 || m > 64)
		die("--conns at least 1, --streams 1 to 64");
	snprintf(counts, sizeof(counts), "/tmp/h2_bench.%d.counts", (int)getpid());
	setenv("MALLOC_COUNT_OUT", counts, 1);
	hm__router_limits_response(&resp_lim, 1 << 20);
	hm__router_msg_init(&resp, HTTP_RESPONSE, &resp_lim);
	hm__router_msg_reset(&resp, resp_buf, 0);
	if (hm__router_msg_execute(&resp, resp_buf, 0, (uint32_t)strlen(resp_buf), &used) !=
		HM__EV_HEAD ||
	    hm__router_resp_check(&resp, &resp_rs, &why) != 0)
		die("canned response");
	hm__router_h2_config_default(&cfg);
	if (hm__router_h2_ctx_new(&ctx, &cfg, &ops) != 0)
		die("context");
	bs = calloc((size_t)nc, sizeof(*bs));
	if (bs == NULL)
		die("memory");
	for (int i = 0; i < nc; i++) {
		encode_requests(&bs[i]);
		if (hm__router_h2_conn_new(ctx, &bs[i], 0, &bs[i].c) != 0)
			die("connection");
		start(&bs[i], 0);
		bs[i].done = m;
	}
	idle_bytes = hm__router_h2_ctx_stats(ctx)->bytes;
	run(bs, nc, warm);
	slab0 = hm__router_h2_ctx_stats(ctx)->heap_allocs;
	h0 = heap_calls(counts);
	w0 = wall_s();
	c0 = cpu_s();
	run(bs, nc, n);
	w1 = wall_s();
	c1 = cpu_s();
	h1 = heap_calls(counts);
	printf("h2_bench: %d connections x %u streams, %llu requests after %llu of warm-up\n", nc,
	       m, (unsigned long long)n, (unsigned long long)warm);
	printf("  %.0f requests/s, %.0f ns CPU per request\n", (double)n / (w1 - w0),
	       (c1 - c0) * 1e9 / (double)n);
	printf("  slab misses (heap allocations by the engine and nghttp2) per request: %.4f\n",
	       (double)(hm__router_h2_ctx_stats(ctx)->heap_allocs - slab0) / (double)n);
	printf("  memory: %.1f KiB per idle connection (after the prefaces), %.1f KiB per stream "
	       "in flight (at most)\n",
	       (double)idle_bytes / nc / 1024, (double)stream_bytes / 1024);
	if (h0 >= 0 && h1 >= 0)
		printf("  heap calls of the whole process per request (malloc_count): %.4f\n",
		       (double)(h1 - h0) / (double)n);
	else
		printf(
		    "  heap calls of the whole process: run with LD_PRELOAD=.../malloc_count.so\n");
	unlink(counts);
	for (int i = 0; i < nc; i++)
		hm__router_h2_conn_free(bs[i].c);
	hm__router_h2_ctx_free(ctx);
	hm__router_msg_fini(&resp);
	free(bs);
	return 0;
}
