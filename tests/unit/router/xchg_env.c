/*
 * The exchange harness (see xchg_env.h): the worker context, the table, the scripted dynos, the
 * access log, and the loop runner.
 *
 * A dyno parses each request with the router's own parser (router/http.h), as a strict HTTP/1.1
 * server would, so that it knows where a request and its body end; what it answers is the case's
 * raw bytes, written as they are (malformed ones included).
 */
#include "tests/unit/router/xchg_env.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "router/upstream.h"
#include "tests/unit/hm_check.h"

#define DCONNS_MAX 16
#define FILLERS	   8

struct dconn_t {
	uv_tcp_t tcp;
	uv_timer_t later;
	struct dyno *d;
	struct hm__router_msg m;
	char buf[65536];
	uint32_t len, pos; /* bytes in buf; bytes parsed */
	bool head_seen;
	bool answered;
	bool closed;
	bool echo;
};

struct dyno {
	struct env *e;
	int index;
	struct dyno_spec spec;
	uv_tcp_t listener;
	bool listening;
	int hole_fd, fillers[FILLERS], nfillers;
	uint16_t port;
	int conns;
	size_t body_read;
	size_t meant, written; /* bytes its connections were given to write; of them, written */
	char *big;	       /* D_BIG's body bytes */
	char big_head[96];     /* D_BIG without resp: the head announcing them */
	struct dconn_t *c[DCONNS_MAX];
	int nc;
	struct hm__router_limits lim;
};

/* ---- the dynos ------------------------------------------------------------------------------ */

static void dconn_closed(uv_handle_t *h)
{
	struct dconn_t *c = h->data;

	if (h == (uv_handle_t *)&c->tcp)
		uv_close((uv_handle_t *)&c->later, NULL);
}

static void dconn_close(struct dconn_t *c)
{
	if (c->closed)
		return;
	c->closed = true;
	uv_close((uv_handle_t *)&c->tcp, dconn_closed);
}

/* A write of a copy of the bytes (freed when written). */
struct dwrite {
	uv_write_t w;
	struct dyno *d;
	size_t n;
	char data[];
};

static void dwrite_done(uv_write_t *w, int status)
{
	struct dwrite *dw = hm__container_of(w, struct dwrite, w);

	if (status == 0)
		dw->d->written += dw->n;
	free(dw);
}

static void dyno_write(struct dconn_t *c, const char *p, size_t n)
{
	struct dwrite *w;
	uv_buf_t b;

	if (n == 0 || c->closed)
		return;
	w = malloc(sizeof(*w) + n);
	ck_assert_ptr_nonnull(w);
	memcpy(w->data, p, n);
	w->d = c->d;
	w->n = n;
	b = uv_buf_init(w->data, (unsigned)n);
	if (uv_write(&w->w, (uv_stream_t *)&c->tcp, &b, 1, dwrite_done) != 0) {
		free(w);
		return;
	}
	c->d->meant += n;
}

static void on_later(uv_timer_t *t)
{
	dconn_close(t->data);
}

/* The request head is in (and, unless early, its body): the dyno's part. */
static void dyno_answer(struct dconn_t *c, bool whole)
{
	const struct dyno_spec *s = &c->d->spec;
	const char *resp = s->resp != NULL ? s->resp : "";

	switch (s->beh) {
	case D_ANSWER:
	case D_CLOSE_LATER:
		if (!whole)
			return;
		dyno_write(c, resp, strlen(resp));
		if (s->beh == D_CLOSE_LATER) {
			c->answered = true;
			uv_timer_start(&c->later, on_later, 0, 0);
		}
		return;
	case D_EARLY:
		if (c->answered)
			return;
		c->answered = true;
		dyno_write(c, resp, strlen(resp));
		uv_timer_start(&c->later, on_later, 0, 0);
		return;
	case D_CLOSE:
		dconn_close(c);
		return;
	case D_STALL:
	case D_CLOSE_MID:
		if (!whole || c->answered)
			return;
		c->answered = true;
		dyno_write(c, resp, strlen(resp));
		if (s->beh == D_CLOSE_MID)
			uv_timer_start(&c->later, on_later, 0, 0);
		return;
	case D_BIG:
		if (!whole || c->answered)
			return;
		c->answered = true;
		if (s->resp == NULL)
			resp = c->d->big_head;
		dyno_write(c, resp, strlen(resp));
		dyno_write(c, c->d->big, s->big);
		return;
	case D_ECHO:
		if (!whole || c->answered)
			return;
		c->answered = c->echo = true;
		dyno_write(c, resp, strlen(resp));
		return;
	default:
		return;
	}
}

static void dconn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct dconn_t *c = h->data;

	(void)suggested;
	*b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

/* A tunnel: every byte goes back. */
static void echo_back(struct dconn_t *c)
{
	dyno_write(c, c->buf + c->pos, c->len - c->pos);
	c->len = c->pos = 0;
}

static void dconn_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
	struct dconn_t *c = st->data;

	(void)b;
	if (n < 0) {
		dconn_close(c);
		return;
	}
	if (c->closed)
		return;
	c->len += (uint32_t)n;
	while (c->pos < c->len) {
		uint32_t used;
		int ev;

		if (c->echo) {
			echo_back(c);
			return;
		}
		ev = hm__router_msg_execute(&c->m, c->buf, c->pos, c->len - c->pos, &used);
		ck_assert_int_ne(ev, HM__EV_ERROR);
		if (c->head_seen)
			c->d->body_read += used;
		c->pos += used;
		if (ev == HM__EV_HEAD) {
			c->head_seen = true;
			env_dyno_saw_request(c->d->e);
			dyno_answer(c, c->m.state == HM__MSG_DONE);
		} else if (ev == HM__EV_DONE) {
			dyno_answer(c, true);
		}
		if (c->closed)
			return;
		if (c->m.state == HM__MSG_DONE && !c->echo) {
			/* The next request on this connection starts after this one. */
			memmove(c->buf, c->buf + c->pos, c->len - c->pos);
			c->len -= c->pos;
			c->pos = 0;
			c->head_seen = false;
			hm__router_msg_reset(&c->m, c->buf, 0);
			continue;
		}
		if (ev == HM__EV_MORE)
			break;
	}
	if (c->head_seen && c->pos > 0) {
		/* Body bytes parsed are not kept (the parser needs no earlier byte in a body). */
		memmove(c->buf, c->buf + c->pos, c->len - c->pos);
		c->len -= c->pos;
		c->pos = 0;
	}
}

static void on_dyno_conn(uv_stream_t *l, int status)
{
	struct dyno *d = l->data;
	struct dconn_t *c;

	ck_assert_int_eq(status, 0);
	ck_assert_int_lt(d->nc, DCONNS_MAX);
	c = calloc(1, sizeof(*c));
	ck_assert_ptr_nonnull(c);
	c->d = d;
	d->c[d->nc++] = c;
	d->conns++;
	uv_tcp_init(&d->e->loop, &c->tcp);
	uv_timer_init(&d->e->loop, &c->later);
	c->tcp.data = c->later.data = c;
	ck_assert_int_eq(uv_accept(l, (uv_stream_t *)&c->tcp), 0);
	hm__router_msg_init(&c->m, HTTP_REQUEST, &d->lim);
	hm__router_msg_reset(&c->m, c->buf, 0);
	if (d->spec.beh != D_NO_READ)
		uv_read_start((uv_stream_t *)&c->tcp, dconn_alloc, dconn_read);
}

/* A loopback port nothing listens on (bound and closed at once: the kernel refuses connects). */
static uint16_t free_port(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	close(fd);
	return ntohs(sa.sin_port);
}

/* A listener with a full accept queue: its SYNs are dropped, so connects time out. */
static void blackhole(struct dyno *d)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);

	d->hole_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(d->hole_fd, 0);
	ck_assert_int_eq(bind(d->hole_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(d->hole_fd, 0), 0);
	ck_assert_int_eq(getsockname(d->hole_fd, (struct sockaddr *)&sa, &len), 0);
	d->port = ntohs(sa.sin_port);
	for (d->nfillers = 0; d->nfillers < FILLERS; d->nfillers++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		struct pollfd p = {.fd = fd, .events = POLLOUT};

		ck_assert_int_ge(fd, 0);
		d->fillers[d->nfillers] = fd;
		connect(fd, (struct sockaddr *)&sa, sizeof(sa));
		if (poll(&p, 1, 100) == 0) {
			d->nfillers++;
			return; /* this one is stuck in SYN_SENT: the queue is full */
		}
	}
	ck_abort_msg("could not fill the accept queue of a blackhole listener");
}

static struct dyno *dyno_new(struct env *e, int index, const struct dyno_spec *spec)
{
	struct dyno *d = calloc(1, sizeof(*d));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int len = sizeof(sa);

	ck_assert_ptr_nonnull(d);
	d->e = e;
	d->index = index;
	d->spec = *spec;
	d->hole_fd = -1;
	hm__router_limits_request(&d->lim, 1 << 20);
	if (spec->beh == D_BIG) {
		if (d->spec.big == 0)
			d->spec.big = env_beyond_buffers();
		d->big = malloc(d->spec.big);
		ck_assert_ptr_nonnull(d->big);
		memset(d->big, 'x', d->spec.big);
		snprintf(d->big_head, sizeof(d->big_head),
			 "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", d->spec.big);
	}
	if (spec->beh == D_REFUSE) {
		d->port = free_port();
		return d;
	}
	if (spec->beh == D_BLACKHOLE) {
		blackhole(d);
		return d;
	}
	uv_tcp_init(&e->loop, &d->listener);
	d->listener.data = d;
	ck_assert_int_eq(uv_tcp_bind(&d->listener, (struct sockaddr *)&sa, 0), 0);
	ck_assert_int_eq(uv_listen((uv_stream_t *)&d->listener, 64, on_dyno_conn), 0);
	ck_assert_int_eq(uv_tcp_getsockname(&d->listener, (struct sockaddr *)&sa, &len), 0);
	d->port = ntohs(sa.sin_port);
	d->listening = true;
	return d;
}

static void dyno_free(struct dyno *d)
{
	for (int i = 0; i < d->nc; i++)
		dconn_close(d->c[i]);
	if (d->listening)
		uv_close((uv_handle_t *)&d->listener, NULL);
	if (d->hole_fd >= 0)
		close(d->hole_fd);
	for (int i = 0; i < d->nfillers; i++)
		close(d->fillers[i]);
}

static void dyno_release(struct dyno *d)
{
	for (int i = 0; i < d->nc; i++) {
		hm__router_msg_fini(&d->c[i]->m);
		free(d->c[i]);
	}
	free(d->big);
	free(d);
}

/* The largest value of a sysctl list's last field (tcp_rmem's "min default max"), or 0. */
static size_t sysctl_max(const char *path)
{
	char buf[128];
	FILE *f = fopen(path, "r");
	size_t n, v = 0;
	char *last;

	if (f == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
	last = strrchr(buf, '\t');
	if (last == NULL)
		last = strrchr(buf, ' ');
	v = strtoull(last != NULL ? last + 1 : buf, NULL, 10);
	return v;
}

size_t env_beyond_buffers(void)
{
	size_t r = sysctl_max("/proc/sys/net/ipv4/tcp_rmem"),
	       w = sysctl_max("/proc/sys/net/ipv4/tcp_wmem");
	size_t cr = sysctl_max("/proc/sys/net/core/rmem_max"),
	       cw = sysctl_max("/proc/sys/net/core/wmem_max");
	size_t n = 2 * (HM_MAX(r, cr) + HM_MAX(w, cw)) + (8u << 20);

	return HM_MAX(n, (size_t)32 << 20);
}

size_t env_dyno_unsent(struct env *e, int i)
{
	struct dyno *d = e->dynos[i];

	/* Counted from completed writes, so a connection the router closed under a held-back
	 * response (its queued bytes then fail) still counts what never went. */
	return d->meant - d->written;
}

size_t env_dyno_body_read(struct env *e, int i)
{
	return e->dynos[i]->body_read;
}

int env_dyno_conns(struct env *e, int i)
{
	return e->dynos[i]->conns;
}

/* ---- the table --------------------------------------------------------------------------------
 */

static uint64_t seq;

static void apply(struct env *e, const struct hm_change *c)
{
	ck_assert_int_eq(hm_table_apply(e->tw, c), 0);
}

static void commit(struct env *e)
{
	ck_assert_int_eq(hm_table_commit(e->tw, 1, ++seq), 0);
}

static void put_app(struct env *e, bool maintenance, bool affinity)
{
	struct hm_change c = {.op = HM_OP_APP_PUT,
			      .app = "app",
			      .app_len = 3,
			      .maintenance = maintenance,
			      .affinity = affinity};

	apply(e, &c);
}

void env_init(struct env *e, bool no_table)
{
	static const char secret[] = "0123456789abcdef0123456789abcdef";
	struct hm_change dom = {
	    .op = HM_OP_DOMAIN_PUT, .app = "app", .app_len = 3, .name = "app.test", .name_len = 8};

	memset(e, 0, sizeof(*e));
	signal(SIGPIPE,
	       SIG_IGN); /* as a worker: a write to a closed socket is an error, not death */
	hm__router_http_init();
	snprintf(e->dir, sizeof(e->dir), "/tmp/hm-xchg.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(e->dir));
	snprintf(e->table_path, sizeof(e->table_path), "%s/table", e->dir);
	snprintf(e->log_path, sizeof(e->log_path), "%s/access.log", e->dir);
	ck_assert_int_eq(uv_loop_init(&e->loop), 0);
	e->cfg = (struct hm__router_config){
	    .table = e->table_path,
	    .access_log = e->log_path,
	    .connect_timeout = 10000,
	    .first_byte_timeout = 10000,
	    .idle_timeout = 10000,
	    .head_timeout = 10000,
	    .keepalive_timeout = 10000,
	    .boot_timeout = 10000,
	    .pool_idle_timeout = 10000,
	    .skip_time = 5000,
	    .drain_timeout = 10000,
	    .attempts = 10,
	    .pool_max = 16,
	    .max_head = 256 * 1024,
	    .max_response_head = 1 << 20,
	    .head_budget = 32 << 20,
	    .port = 8080,
	    .secret = (uint8_t *)secret,
	    .secret_len = sizeof(secret) - 1,
	};
	if (!no_table) {
		ck_assert_int_eq(hm_table_writer_open(&e->tw, e->table_path, NULL, 0, 0), 0);
		ck_assert_int_eq(hm_table_begin(e->tw), 0);
		put_app(e, false, false);
		apply(e, &dom);
		commit(e);
	}
	ck_assert_int_eq(hm__router_shm_new(&e->shm, 1), 0);
	uv_timer_init(&e->loop, &e->watchdog);
	e->watchdog.data = e;
}

/* The context is made once the case has set its configuration. */
static void env_ctx(struct env *e)
{
	if (e->ctx.loop != NULL)
		return;
	ck_assert_int_eq(hm__router_ctx_init(&e->ctx, &e->loop, &e->cfg, &e->shm->slot[0]), 0);
	ck_assert_int_eq(hm__router_upstream_pool_init(&e->ctx), 0);
}

void env_dynos(struct env *e, const struct dyno_spec *d, int n, bool maintenance, bool affinity)
{
	ck_assert_int_le(n, MAX_DYNOS);
	env_ctx(e);
	if (e->tw == NULL)
		return;
	ck_assert_int_eq(hm_table_begin(e->tw), 0);
	put_app(e, maintenance, affinity);
	for (int i = 0; i < n; i++) {
		struct hm_change c = {.op = HM_OP_DYNO_PUT,
				      .app = "app",
				      .app_len = 3,
				      .name = d[i].name,
				      .name_len = (uint16_t)strlen(d[i].name),
				      .state = d[i].state != 0 ? d[i].state : HM_DYNO_UP};

		e->dynos[i] = dyno_new(e, i, &d[i]);
		c.addr.family = 4;
		c.addr.ip[0] = 127;
		c.addr.ip[3] = 1;
		c.addr.port = e->dynos[i]->port;
		apply(e, &c);
	}
	e->ndynos = n;
	commit(e);
}

void env_dyno_state(struct env *e, int i, uint8_t state)
{
	const struct dyno_spec *s = &e->dynos[i]->spec;
	struct hm_change c = {.op = HM_OP_DYNO_PUT,
			      .app = "app",
			      .app_len = 3,
			      .name = s->name,
			      .name_len = (uint16_t)strlen(s->name),
			      .state = state};

	c.addr.family = 4;
	c.addr.ip[0] = 127;
	c.addr.ip[3] = 1;
	c.addr.port = e->dynos[i]->port;
	ck_assert_int_eq(hm_table_begin(e->tw), 0);
	apply(e, &c);
	commit(e);
}

static void walk_close(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

void env_fini(struct env *e)
{
	char cmd[160];

	if (e->drv != NULL)
		e->drv->teardown(e);
	for (int i = 0; i < e->ndynos; i++)
		dyno_free(e->dynos[i]);
	uv_close((uv_handle_t *)&e->watchdog, NULL);
	if (e->ctx.loop != NULL) {
		/* Every connection of the router closes (their exchanges end without a word). */
		struct hm__router_list *n, *next;

		for (n = e->ctx.conns.next; n != &e->ctx.conns; n = next) {
			struct hm__router_conn *c =
			    hm__container_of(n, struct hm__router_conn, link);

			next = n->next;
			c->ops->abort(c);
		}
		hm__router_pool_close_all(&e->ctx.pool);
	}
	uv_run(&e->loop, UV_RUN_DEFAULT);
	if (e->ctx.loop != NULL) {
		hm__router_ctx_fini(&e->ctx);
		uv_run(&e->loop, UV_RUN_DEFAULT);
	}
	uv_walk(&e->loop, walk_close, NULL);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	ck_assert_int_eq(uv_loop_close(&e->loop), 0);
	for (int i = 0; i < e->ndynos; i++)
		dyno_release(e->dynos[i]);
	if (e->tw != NULL)
		hm_table_writer_close(e->tw);
	hm__router_shm_free(e->shm);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* ---- running ----------------------------------------------------------------------------------
 */

static void on_watchdog(uv_timer_t *t)
{
	struct env *e = t->data;

	e->timed_out = true;
	uv_stop(&e->loop);
}

void env_run(struct env *e, bool (*done)(struct env *e))
{
	env_ctx(e);
	uv_timer_start(&e->watchdog, on_watchdog, 20000, 0);
	while (!done(e) && !e->timed_out)
		uv_run(&e->loop, UV_RUN_ONCE);
	uv_timer_stop(&e->watchdog);
	ck_assert_msg(!e->timed_out, "the case did not finish within 20 s");
}

void env_dyno_saw_request(struct env *e)
{
	if (e->quit_when_seen) {
		e->quit_when_seen = false;
		e->drv->quit(e);
	}
}

void env_response_started(struct env *e)
{
	if (e->release_on_response) {
		e->release_on_response = false;
		e->drv->release_body(e);
	}
}

int env_log_lines(struct env *e, char *buf, size_t cap)
{
	FILE *f;
	size_t n;
	int lines = 0;

	hm__router_ctx_log_flush(&e->ctx);
	f = fopen(e->log_path, "r");
	if (f == NULL) {
		buf[0] = '\0';
		return 0;
	}
	n = fread(buf, 1, cap - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (size_t i = 0; i < n; i++)
		lines += buf[i] == '\n';
	return lines;
}

bool env_log_field(const char *line, const char *field, char *out, size_t cap)
{
	size_t fl = strlen(field);
	const char *p = line, *end = strchr(line, '\n');

	if (end == NULL)
		end = line + strlen(line);
	while (p < end) {
		const char *v;
		size_t n = 0;

		if ((p == line || p[-1] == ' ') && (size_t)(end - p) > fl &&
		    memcmp(p, field, fl) == 0 && p[fl] == '=') {
			v = p + fl + 1;
			if (*v == '"') {
				v++;
				while (v + n < end && v[n] != '"')
					n++;
			} else {
				while (v + n < end && v[n] != ' ')
					n++;
			}
			n = HM_MIN(n, cap - 1);
			memcpy(out, v, n);
			out[n] = '\0';
			return true;
		}
		p++;
	}
	return false;
}

void outcome_trailer(struct outcome *o, const char *name, size_t nl, const char *value, size_t vl)
{
	size_t l = strlen(o->trailers);

	snprintf(o->trailers + l, sizeof(o->trailers) - l, "%.*s: %.*s\n", (int)nl, name, (int)vl,
		 value);
}

void outcome_body(struct outcome *o, const char *p, size_t n)
{
	if (o->body_len < sizeof(o->body) - 1) {
		size_t k = HM_MIN(n, sizeof(o->body) - 1 - o->body_len);

		if (k > 0)
			memcpy(o->body + o->body_len, p, k);
		o->body[o->body_len + k] = '\0';
	}
	o->body_len += n;
}
