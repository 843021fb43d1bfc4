/*
 * Tests router/xchg.c (and, through the h1 driver, router/h1.c, upstream.c, pool.c, sock.c): the
 * exchange's routing outcomes and codes, retries, early answers, back-pressure both ways and the
 * log line, on one libuv loop with scripted dynos (xchg_env.c).
 *
 * Each case is data (cases[] below) and runs once per driver it names: "fake", a client protocol
 * written here in the shape HTTP/2 has, and "h1", the real HTTP/1 protocol over a socketpair. The
 * expectations are the client's (status, body, a cut, trailers) and the log line's (code, status,
 * dyno, bytes), the same for every driver unless a field says otherwise. An HTTP/2 driver runs
 * the same table.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/hm_check.h"
#include "tests/unit/router/xchg_env.h"

enum { DRV_FAKE = 1, DRV_H1 = 2, DRV_ALL = 3 };

static const struct driver *const drivers[] = {&fake_driver, &h1_driver};
#define NDRIVERS 2

struct want {
	int status;	  /* the client's; -1: not checked */
	bool cut;	  /* the response was broken off */
	const char *body; /* payload, or NULL: not checked */
	const char *code; /* the log line's code=, or NULL: no code */
	int log_status;	  /* the log line's status= */
	const char *dyno; /* the log line's dyno=, or NULL: not checked */
	int bytes;	  /* the log line's bytes=, or -2: not checked (-1: empty) */
	const char *trailers;
	int continues;
	bool set_cookie;
};

struct xcase {
	const char *name;
	unsigned drivers;
	bool no_table, maintenance, affinity;
	int ndynos;
	struct dyno_spec dyno[MAX_DYNOS];
	const char *req;
	size_t held; /* body bytes kept back */
	int nreq;
	bool quit_when_seen, stop_reading, release_on_response, body_stuck;
	int64_t connect_timeout, first_byte_timeout, idle_timeout, boot_timeout, head_timeout;
	int up_after_ms;  /* dyno 0 (starting) comes up this long after the request */
	int conns0;	  /* connections dyno 0 accepted (0: not checked) */
	bool dyno_unsent; /* dyno 0 could not write everything (the router stopped reading) */
	int enobufs;	  /* fake: response spans refused first */
	const char *tunnel_probe; /* sent through a tunnel and echoed */
	struct want want[2];
};

#define GET	 "GET /path?q=1 HTTP/1.1\r\nHost: app.test\r\n\r\n"
#define OK_HELLO "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
#define WEB1(b, r)                                                                                 \
	{                                                                                          \
		.name = "web.1", .beh = (b), .resp = (r)                                           \
	}

/* A request with a body of n bytes of 'b', Content-Length framed. */
static char *with_body(const char *method, size_t n, const char *extra)
{
	char head[256];
	int hl = snprintf(head, sizeof(head),
			  "%s /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: %zu\r\n%s\r\n",
			  method, n, extra);
	char *r = malloc((size_t)hl + n + 1);

	ck_assert_ptr_nonnull(r);
	memcpy(r, head, (size_t)hl);
	memset(r + hl, 'b', n);
	r[hl + n] = '\0';
	return r;
}

static const struct xcase cases[] = {
    {.name = "200 relayed, logged with its dyno and bytes",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = GET,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .dyno = "web.1", .bytes = 5}}},
    {.name = "unknown host: 404, No such app",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "GET / HTTP/1.1\r\nHost: nope.test\r\n\r\n",
     .want = {{.status = 404, .log_status = 404, .bytes = -1}}},
    {.name = "maintenance: 503 H80",
     .maintenance = true,
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = GET,
     .want = {{.status = 503, .code = "H80", .log_status = 503, .bytes = -1}}},
    {.name = "no dynos: 503 H14",
     .req = GET,
     .want = {{.status = 503, .code = "H14", .log_status = 503, .bytes = -2}}},
    {.name = "every dyno crashed: 503 H10",
     .ndynos = 1,
     .dyno = {{.name = "web.1", .state = HM_DYNO_CRASHED, .beh = D_ANSWER, .resp = OK_HELLO}},
     .req = GET,
     .want = {{.status = 503, .code = "H10", .log_status = 503, .bytes = -2}}},
    {.name = "only starting dynos past the boot wait: 503 H20",
     .ndynos = 1,
     .dyno = {{.name = "web.1", .state = HM_DYNO_STARTING, .beh = D_ANSWER, .resp = OK_HELLO}},
     .req = GET,
     .boot_timeout = 200,
     .want = {{.status = 503, .code = "H20", .log_status = 503, .bytes = -2}}},
    {.name = "a starting dyno comes up during the boot wait: served",
     .ndynos = 1,
     .dyno = {{.name = "web.1", .state = HM_DYNO_STARTING, .beh = D_ANSWER, .resp = OK_HELLO}},
     .req = GET,
     .up_after_ms = 50,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .dyno = "web.1", .bytes = 5}}},
    {.name = "connect refused: 503 H21 naming the dyno",
     .ndynos = 1,
     .dyno = {WEB1(D_REFUSE, NULL)},
     .req = GET,
     .want = {{.status = 503, .code = "H21", .log_status = 503, .dyno = "web.1", .bytes = -1}}},
    {.name = "one dyno refuses: the request goes to the other",
     .ndynos = 2,
     .dyno = {WEB1(D_REFUSE, NULL), {.name = "web.2", .beh = D_ANSWER, .resp = OK_HELLO}},
     .req = GET,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .dyno = "web.2", .bytes = 5}}},
    {.name = "connect timeout: 503 H19",
     .ndynos = 1,
     .dyno = {WEB1(D_BLACKHOLE, NULL)},
     .req = GET,
     .connect_timeout = 200,
     .want = {{.status = 503, .code = "H19", .log_status = 503, .dyno = "web.1", .bytes = -1}}},
    {.name = "no response head in time: 503 H12",
     .ndynos = 1,
     .dyno = {WEB1(D_SILENT, NULL)},
     .req = GET,
     .first_byte_timeout = 200,
     .want = {{.status = 503, .code = "H12", .log_status = 503, .dyno = "web.1", .bytes = -1}}},
    {.name = "dyno closes without a response: 503 H13",
     .ndynos = 1,
     .dyno = {WEB1(D_CLOSE, NULL)},
     .req = GET,
     .want = {{.status = 503, .code = "H13", .log_status = 503, .bytes = -1}}},
    {.name = "dyno idle mid-response: H15, the response cut",
     .ndynos = 1,
     .dyno = {WEB1(D_STALL, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nparti")},
     .req = GET,
     .idle_timeout = 200,
     .want = {{.status = 200,
	       .cut = true,
	       .body = "parti",
	       .code = "H15",
	       .log_status = 503,
	       .bytes = 5}}},
    {.name = "dyno closes mid-response: H18, the response cut",
     .ndynos = 1,
     .dyno = {WEB1(D_CLOSE_MID, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nparti")},
     .req = GET,
     .want = {{.status = 200,
	       .cut = true,
	       .body = "parti",
	       .code = "H18",
	       .log_status = 503,
	       .bytes = 5}}},
    {.name = "malformed response: 502 H25",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")},
     .req = GET,
     .want = {{.status = 502, .code = "H25", .log_status = 502, .bytes = -1}}},
    {.name = "a second 100 Continue: 502 H25",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER,
		   "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" OK_HELLO)},
     .req = GET,
     .want = {{.status = 502, .code = "H25", .log_status = 502, .bytes = -1}}},
    {.name = "the dyno's 100 Continue is dropped",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, "HTTP/1.1 100 Continue\r\n\r\n" OK_HELLO)},
     .req = GET,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5}}},
    {.name = "client goes away while the dyno thinks: 499 H27",
     .ndynos = 1,
     .dyno = {WEB1(D_SILENT, NULL)},
     .req = GET,
     .quit_when_seen = true,
     .want = {{.status = -1, .cut = true, .code = "H27", .log_status = 499, .bytes = -1}}},
    {.name = "client idle mid-upload: 499 H28",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "PUT /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\n0123456789",
     .held = 10,
     .idle_timeout = 200,
     .want = {{.status = 0, .cut = true, .code = "H28", .log_status = 499, .bytes = -1}}},
    {.name = "client not reading a large response: 499 H28, the dyno held back",
     .ndynos = 1,
     .dyno = {{.name = "web.1", .beh = D_BIG}},
     .req = GET,
     .stop_reading = true,
     .idle_timeout = 200,
     .dyno_unsent = true,
     .want = {{.status = -1, .cut = true, .code = "H28", .log_status = 499, .bytes = -2}}},
    {.name = "dyno not reading an upload: 503 H15, the client held back",
     .ndynos = 1,
     .dyno = {WEB1(D_NO_READ, NULL)},
     .req = NULL, /* with_body("PUT", env_beyond_buffers()) */
     .idle_timeout = 200,
     .body_stuck = true,
     .want = {{.status = 503, .code = "H15", .log_status = 503, .bytes = -1}}},
    {.name = "no table: 503 H99",
     .no_table = true,
     .req = GET,
     .want = {{.status = 503, .code = "H99", .log_status = 503, .bytes = -1}}},
    {.name = "a stale pooled connection: sent again on a fresh one",
     .ndynos = 1,
     .dyno = {WEB1(D_CLOSE_LATER, OK_HELLO)},
     .req = GET,
     .nreq = 2,
     .conns0 = 2,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5},
	      {.status = 200, .body = "hello", .log_status = 200, .bytes = 5}}},
    {.name = "a stale pooled connection: a POST is not sent twice (H13)",
     .ndynos = 1,
     .dyno = {WEB1(D_CLOSE_LATER, OK_HELLO)},
     .req = "POST /p HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc",
     .nreq = 2,
     .conns0 = 1,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5},
	      {.status = 503, .code = "H13", .log_status = 503, .bytes = -1}}},
    {.name = "an early answer before the upload ends is relayed",
     .ndynos = 1,
     .dyno = {WEB1(D_EARLY, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n"
			    "Connection: close\r\n\r\nbig!")},
     .req = NULL, /* with_body("PUT", 100000) */
     .held = 100000 - 10,
     .release_on_response = true,
     .want = {{.status = 413, .body = "big!", .log_status = 413, .bytes = 4}}},
    {.name = "affinity: the response gets the cookie",
     .affinity = true,
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = GET,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5, .set_cookie = true}}},
    {.name = "Expect: 100-continue answered by the router",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "POST /p HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"
	    "\r\nabc",
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5, .continues = 1}}},
    {.name = "response trailers reach the client",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
			     "5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n")},
     .req = GET,
     .want = {{.status = 200,
	       .body = "hello",
	       .log_status = 200,
	       .bytes = 5,
	       .trailers = "X-Sum: 42\n"}}},
    {.name = "HEAD: a head without body",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")},
     .req = "HEAD / HTTP/1.1\r\nHost: app.test\r\n\r\n",
     .want = {{.status = 200, .body = "", .log_status = 200, .bytes = 0}}},
    {.name = "a chunked upload is re-encoded and read whole by the dyno",
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "POST /p HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
	    "5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5}}},
    {.name = "the protocol cannot take response bytes for a while: nothing lost",
     .drivers = DRV_FAKE,
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = GET,
     .enobufs = 2,
     .want = {{.status = 200, .body = "hello", .log_status = 200, .bytes = 5}}},
    {.name = "101: a tunnel both ways, logged when it opens",
     .drivers = DRV_H1,
     .ndynos = 1,
     .dyno = {WEB1(D_ECHO, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
			   "Upgrade: websocket\r\n\r\n")},
     .req = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	    "\r\n",
     .tunnel_probe = "ping",
     .want = {{.status = 101, .cut = true, .body = "ping", .log_status = 101, .bytes = 0}}},
    {.name = "101 to a protocol without tunnels: 502 H25",
     .drivers = DRV_FAKE,
     .ndynos = 1,
     .dyno = {WEB1(D_ECHO, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
			   "Upgrade: websocket\r\n\r\n")},
     .req = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
	    "\r\n",
     .want = {{.status = 502, .code = "H25", .log_status = 502, .bytes = -1}}},
    {.name = "a malformed request head: 400 H26, logged, no exchange",
     .drivers = DRV_H1,
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "GET /x HTTP/1.1\r\n\r\n",
     .want = {{.status = 400, .code = "H26", .log_status = 400, .bytes = -1}}},
    {.name = "a request head not in time: 408 H28",
     .drivers = DRV_H1,
     .ndynos = 1,
     .dyno = {WEB1(D_ANSWER, OK_HELLO)},
     .req = "GET /slow HTTP/1.1\r\nHost: app.test\r\n",
     .head_timeout = 200,
     .want = {{.status = 408, .code = "H28", .log_status = 408, .bytes = -1}}},
};

#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

static const struct xcase *running;
static uv_timer_t up_timer;

static bool all_done(struct env *e)
{
	char log[16384];
	int lines = env_log_lines(e, log, sizeof(log));

	for (int i = 0; i < e->nreq; i++)
		if (!e->out[i].finished)
			return false;
	return lines >= e->nreq;
}

static void on_up(uv_timer_t *t)
{
	env_dyno_state(t->data, 0, HM_DYNO_UP);
}

static void check_line(const struct xcase *c, const struct want *w, const char *line, int i)
{
	char v[256];

	if (w->code != NULL) {
		ck_assert_msg(env_log_field(line, "code", v, sizeof(v)) && strcmp(v, w->code) == 0,
			      "%s [%d]: code %s in %s", c->name, i, w->code, line);
		ck_assert(env_log_field(line, "at", v, sizeof(v)));
		ck_assert_str_eq(v, strcmp(w->code, "H80") == 0 ? "info" : "error");
	} else {
		ck_assert_msg(!env_log_field(line, "code", v, sizeof(v)), "%s [%d]: no code in %s",
			      c->name, i, line);
	}
	ck_assert(env_log_field(line, "status", v, sizeof(v)));
	ck_assert_msg(atoi(v) == w->log_status, "%s [%d]: status %d in %s", c->name, i,
		      w->log_status, line);
	if (w->dyno != NULL) {
		ck_assert(env_log_field(line, "dyno", v, sizeof(v)));
		ck_assert_str_eq(v, w->dyno);
	}
	if (w->bytes != -2) {
		ck_assert(env_log_field(line, "bytes", v, sizeof(v)));
		if (w->bytes == -1)
			ck_assert_str_eq(v, "");
		else
			ck_assert_msg(atoi(v) == w->bytes, "%s [%d]: bytes %d in %s", c->name, i,
				      w->bytes, line);
	}
	ck_assert(env_log_field(line, "method", v, sizeof(v)));
	ck_assert(env_log_field(line, "host", v, sizeof(v)));
	ck_assert(env_log_field(line, "fwd", v, sizeof(v)));
	ck_assert_str_eq(v, "127.0.0.1");
}

static void check_outcome(const struct xcase *c, const struct want *w, const struct outcome *o,
			  const char *drv, int i)
{
	if (w->status >= 0)
		ck_assert_msg(o->status == w->status, "%s [%s %d]: client status %d, want %d",
			      c->name, drv, i, o->status, w->status);
	ck_assert_msg(o->cut == w->cut, "%s [%s %d]: cut %d", c->name, drv, i, o->cut);
	if (w->body != NULL) {
		ck_assert_msg(o->body_len == strlen(w->body) && strcmp(o->body, w->body) == 0,
			      "%s [%s %d]: body \"%s\" (%zu bytes)", c->name, drv, i, o->body,
			      o->body_len);
	}
	ck_assert_str_eq(o->trailers, w->trailers != NULL ? w->trailers : "");
	ck_assert_int_eq(o->continues, w->continues);
	ck_assert_int_eq(o->set_cookie, w->set_cookie);
}

START_TEST(run_case)
{
	const struct xcase *c = &cases[_i / NDRIVERS];
	const struct driver *drv = drivers[_i % NDRIVERS];
	unsigned mask = c->drivers != 0 ? c->drivers : DRV_ALL;
	char *req = NULL, log[16384], *line;
	size_t len;
	struct env e;
	int lines;

	if (!(mask & (1u << (_i % NDRIVERS))))
		return;
	running = c;
	env_init(&e, c->no_table);
	if (c->connect_timeout)
		e.cfg.connect_timeout = c->connect_timeout;
	if (c->first_byte_timeout)
		e.cfg.first_byte_timeout = c->first_byte_timeout;
	if (c->idle_timeout)
		e.cfg.idle_timeout = c->idle_timeout;
	if (c->boot_timeout)
		e.cfg.boot_timeout = c->boot_timeout;
	if (c->head_timeout)
		e.cfg.head_timeout = c->head_timeout;
	env_dynos(&e, c->dyno, c->ndynos, c->maintenance, c->affinity);
	e.drv = drv;
	e.nreq = c->nreq > 0 ? c->nreq : 1;
	e.quit_when_seen = c->quit_when_seen;
	e.release_on_response = c->release_on_response;
	e.tunnel_probe = c->tunnel_probe;
	if (c->req != NULL)
		req = strdup(c->req);
	else if (c->release_on_response)
		req = with_body("PUT", 100000, "");
	else
		req = with_body("PUT", env_beyond_buffers(), "");
	len = strlen(req);
	if (c->up_after_ms > 0) {
		uv_timer_init(&e.loop, &up_timer);
		up_timer.data = &e;
		uv_timer_start(&up_timer, on_up, (uint64_t)c->up_after_ms, 0);
	}
	drv->start(&e, req, len, c->held);
	if (c->stop_reading)
		drv->stop_reading(&e);
	if (c->enobufs > 0)
		fake_enobufs(&e, c->enobufs);
	env_run(&e, all_done);
	lines = env_log_lines(&e, log, sizeof(log));
	ck_assert_msg(lines == e.nreq, "%s [%s]: %d log lines:\n%s", c->name, drv->name, lines,
		      log);
	line = log;
	for (int i = 0; i < e.nreq; i++) {
		check_outcome(c, &c->want[i], &e.out[i], drv->name, i);
		check_line(c, &c->want[i], line, i);
		line = strchr(line, '\n') + 1;
	}
	if (c->conns0 > 0)
		ck_assert_int_eq(env_dyno_conns(&e, 0), c->conns0);
	if (c->dyno_unsent)
		ck_assert_msg(env_dyno_unsent(&e, 0) > 0, "%s [%s]: the dyno wrote everything",
			      c->name, drv->name);
	if (c->body_stuck)
		ck_assert_msg(e.out[0].body_stuck, "%s [%s]: the whole upload was taken", c->name,
			      drv->name);
	env_fini(&e);
	free(req);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("router/xchg");
	TCase *tc = tcase_create("cases");

	tcase_add_loop_test(tc, run_case, 0, NCASES * NDRIVERS);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
