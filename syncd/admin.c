/*
 * The admin socket server. Each connection reads into a fixed 4 KiB line buffer (a longer line is
 * an error and closes the connection), answers each complete line in order, and while a dump or
 * a certs answer is being streamed (a slice at a time, the next once the last is written) stops
 * reading, so answers never interleave.
 *
 * What one client can cost is bounded: answers are produced only while less than UNSENT_MAX bytes
 * of earlier answers wait to be written to it (after that the connection is not read until they
 * drain, so a client that sends requests and never reads costs that much and its socket
 * buffers); a connection with no request and no answer written for the idle timeout is closed;
 * at most CLIENTS_MAX connections are open, and one more is told so and closed.
 */
#include "syncd/admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/model.h"
#include "common/util.h"
#include "syncd/certput.h"
#include "syncd/jsonw.h"
#include "syncd/tlscfg.h"

#define LINE_MAX_BYTES 4096
#define DUMP_SLICE     (256u << 10)
#define DUMPS_MAX      4
#define UNSENT_MAX     (256u << 10)
#define CLIENTS_MAX    64
#define IDLE_CHECK_MS  250

/* A record of the dump image: a put change with its strings after it. */
struct img_rec {
	uint8_t op, flags, balance, state;
	uint8_t app_len, family;
	uint16_t name_len, port;
	uint8_t ip[16];
	uint32_t meta_len; /* cert.put: not_after (8 bytes) and the metadata follow the name */
};

/*
 * An answer streamed in slices of about DUMP_SLICE bytes, each generated when the one before
 * has been written: `dump` (from an image of the state taken when it starts: one consistent
 * state), or `certs` (straight from the certificate store, constant memory: each slice lists
 * the entries after the ones already listed, from a store cursor, as long as the store holds
 * the same entries).
 */
struct dump {
	struct hm__buf img; /* dump: img_rec + app + name, back to back */
	size_t pos;
	int phase; /* 0 apps, 1 domains, 2 dynos, 3 certs, 4 done */
	struct hm__jsonw w;
	struct hm__buf out; /* the slice being generated */
	/* certs: whether there was a store when the answer started, and the position in it. */
	bool certs;
	bool had_store;
	struct hm_certstore_cursor cur;
};

struct conn {
	uv_pipe_t pipe;
	struct hm__admin *a;
	struct conn *next, *prev;
	char in[LINE_MAX_BYTES];
	size_t inlen;
	struct dump *dump;
	bool closing;
	bool reading;
	bool eof;     /* the peer finished sending during a dump: close after it */
	bool discard; /* after an overlong line: read and drop until EOF */
	size_t discarded;
	uint64_t active_ms; /* mono ms of the last byte read or answer written */
};

struct hm__admin {
	uv_pipe_t server;
	uv_loop_t *loop;
	const struct hm__admin_ops *ops;
	void *ctx;
	char *path;
	struct conn *conns;
	int handles; /* open handles: server + connections + the idle timer */
	int nconns;
	int dumps;
	uint64_t idle_ms;
	uv_timer_t idle;
	bool stopping;
};

struct wreq {
	uv_write_t req;
	struct conn *c;
	char *data; /* owned */
	bool dump;  /* a slice of the connection's dump */
};

static void maybe_free(struct hm__admin *a)
{
	if (a->stopping && a->handles == 0) {
		free(a->path);
		free(a);
	}
}

static void dump_free(struct hm__admin *a, struct dump *d)
{
	if (d == NULL)
		return;
	hm__buf_fini(&d->img);
	hm__buf_fini(&d->out);
	free(d);
	a->dumps--;
}

static void on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	struct hm__admin *a = c->a;

	dump_free(a, c->dump);
	free(c);
	a->handles--;
	a->nconns--;
	maybe_free(a);
}

static void conn_close(struct conn *c)
{
	if (c->closing)
		return;
	c->closing = true;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		c->a->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

static void process_lines(struct conn *c);
static void dump_continue(struct conn *c);
static void set_reading(struct conn *c, bool on);

/* Answers already produced but not yet taken by the socket are over the bound. */
static bool over_budget(struct conn *c)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) >= UNSENT_MAX;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct conn *c = req->handle->data;

	(void)status;
	free(req);
	/* After refusing an overlong line, the rest of it is read and dropped until the peer
	 * closes, so that closing with unread data does not reset the answer away. */
	if (!c->discard || c->eof)
		conn_close(c);
}

/* Closes the connection once the answers already queued have been written. */
static void conn_finish(struct conn *c)
{
	uv_shutdown_t *sr;

	if (c->closing)
		return;
	sr = malloc(sizeof(*sr));
	if (sr == NULL || uv_shutdown(sr, (uv_stream_t *)&c->pipe, on_shutdown) != 0) {
		free(sr);
		conn_close(c);
	}
}

static void on_written(uv_write_t *req, int status)
{
	struct wreq *w = (struct wreq *)req;
	struct conn *c = w->c;
	bool dump = w->dump;

	free(w->data);
	free(w);
	if (c->closing)
		return;
	if (status != 0) {
		conn_close(c);
		return;
	}
	c->active_ms = hm_mono_ms();
	if (dump && c->dump != NULL)
		dump_continue(c);
	else if (c->dump == NULL && !c->eof && !c->discard && !over_budget(c))
		process_lines(c); /* lines held back while answers were waiting */
}

/* Writes data (taking ownership). */
static void send_owned(struct conn *c, char *data, size_t len, bool dump)
{
	struct wreq *w = malloc(sizeof(*w));
	uv_buf_t b = uv_buf_init(data, (unsigned)len);

	if (w == NULL || c->closing) {
		free(w);
		free(data);
		if (w == NULL)
			conn_close(c);
		return;
	}
	w->c = c;
	w->data = data;
	w->dump = dump;
	if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) != 0) {
		free(data);
		free(w);
		conn_close(c);
	}
}

/* Sends the buffer's contents, handing its memory over. */
static void send_buf_as(struct conn *c, struct hm__buf *b, bool dump)
{
	if (b->oom) {
		hm__buf_fini(b);
		conn_close(c);
		return;
	}
	send_owned(c, b->data, b->len, dump);
	b->data = NULL;
	b->len = b->cap = 0;
}

static void send_buf(struct conn *c, struct hm__buf *b)
{
	send_buf_as(c, b, false);
}

static void reply_error(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void reply_error(struct conn *c, const char *fmt, ...)
{
	struct hm__buf b = {0};
	struct hm__jsonw w;
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	hm__jw_init(&w, &b);
	hm__jw_obj(&w);
	hm__jw_kcstr(&w, "error", msg);
	hm__jw_obj_end(&w);
	hm__buf_add(&b, "\n", 1);
	send_buf(c, &b);
}

static void cmd_status(struct conn *c)
{
	struct hm__buf b = {0};
	struct hm__jsonw w;

	hm__jw_init(&w, &b);
	hm__jw_obj(&w);
	c->a->ops->status(c->a->ctx, &w);
	hm__jw_obj_end(&w);
	hm__buf_add(&b, "\n", 1);
	send_buf(c, &b);
}

/* ---- certificates ------------------------------------------------------------------------- */

/* The certificate store the admin reads, or NULL (none, or no certs op). */
static const struct hm_certstore_writer *admin_certs(const struct hm__admin *a)
{
	return a->ops->certs != NULL ? a->ops->certs(a->ctx) : NULL;
}

static void san_cb(void *ctx, const char *s, size_t n)
{
	hm__jw_str(ctx, s, n);
}

/* {"name","not_after","sha256","sans"} of one certificate: never its key. */
static void cert_json(struct hm__jsonw *w, const char *name, size_t name_len, int64_t not_after,
		      const uint8_t *meta, size_t meta_len)
{
	uint8_t sha[32];
	char hex[65];

	hm__jw_obj(w);
	hm__jw_kstr(w, "name", name, name_len);
	hm__jw_key(w, "not_after");
	hm__jw_i64(w, not_after);
	if (hm__certmeta_read(meta, meta_len, sha, NULL, NULL) == 0) {
		hm_hex(sha, sizeof(sha), hex);
		hm__jw_kcstr(w, "sha256", hex);
		hm__jw_key(w, "sans");
		hm__jw_arr(w);
		hm__certmeta_read(meta, meta_len, sha, san_cb, w);
		hm__jw_arr_end(w);
	} else {
		hm__jw_key(w, "sha256");
		hm__jw_null(w);
		hm__jw_key(w, "sans");
		hm__jw_null(w);
	}
	hm__jw_obj_end(w);
}

static bool dump_start(struct conn *c, struct dump **out);
static void dump_send(struct conn *c);

/* One entry into the slice; stops when it is full (the cursor is then past the entry). */
static int certs_entry(void *ctx, const struct hm_cert_entry *e)
{
	struct dump *d = ctx;

	cert_json(&d->w, e->name, e->name_len, e->not_after, e->meta, e->meta_len);
	return d->out.len >= DUMP_SLICE ? 1 : 0;
}

/*
 * Generates the next slice of `certs`; returns true when the answer is complete. Each slice
 * goes on from the store cursor where the last one stopped, in O(slice). If the certificates
 * change meanwhile (the cursor is stale, or the store came or went), the list ends there and
 * "error" says so (a listing is never a mix of two states); the client runs it again.
 */
static bool certs_slice(struct hm__admin *a, struct dump *d)
{
	const struct hm_certstore_writer *cs = admin_certs(a);
	int r = 0;

	d->w.out = &d->out;
	if ((cs != NULL) != d->had_store)
		r = -ESTALE;
	else if (cs != NULL && (r = hm_certstore_list(cs, &d->cur, certs_entry, d)) > 0)
		return false; /* the slice is full */
	hm__jw_arr_end(&d->w);
	if (r != 0)
		hm__jw_kcstr(&d->w, "error",
			     "the certificates changed while they were listed; run certs again");
	hm__jw_obj_end(&d->w);
	hm__buf_add(&d->out, "\n", 1);
	d->phase = 4;
	return true;
}

static void cmd_certs(struct conn *c)
{
	const struct hm_certstore_writer *cs = admin_certs(c->a);
	struct dump *d;

	if (!dump_start(c, &d))
		return;
	d->certs = true;
	d->had_store = cs != NULL;
	if (cs != NULL)
		hm_certstore_cursor_init(&d->cur, cs);
	hm__jw_key(&d->w, "certs");
	hm__jw_arr(&d->w);
	dump_send(c);
}

struct lookup_ctx {
	struct hm__jsonw *w;
};

static int lookup_dyno(void *ctx, const struct hm_change *d)
{
	struct lookup_ctx *lc = ctx;
	char addr[HM_ADDR_STR_MAX];
	size_t n = hm_addr_format(&d->addr, addr);

	hm__jw_obj(lc->w);
	hm__jw_kstr(lc->w, "name", d->name, d->name_len);
	hm__jw_kstr(lc->w, "addr", addr, n);
	hm__jw_kcstr(lc->w, "state", hm_dyno_state_name(d->state));
	hm__jw_obj_end(lc->w);
	return 0;
}

static void cmd_lookup(struct conn *c, const char *host, size_t n)
{
	const struct hm_table_writer *t = c->a->ops->table(c->a->ctx);
	char key[HM_HOST_MAX + 1];
	struct hm__buf b = {0};
	struct hm__jsonw w;
	struct hm_change app;
	struct lookup_ctx lc = {.w = &w};
	int kl, e;

	if (n == 0) {
		reply_error(c, "usage: lookup HOST");
		return;
	}
	if ((kl = hm_host_key(host, n, key)) < 0) {
		reply_error(c, "invalid host \"%.*s\"", (int)HM_MIN(n, 300), host);
		return;
	}
	if (t == NULL) {
		reply_error(c, "%s", hm_strerror(HM_ENOTABLE));
		return;
	}
	hm__jw_init(&w, &b);
	hm__jw_obj(&w);
	hm__jw_kstr(&w, "host", key, (size_t)kl);
	/* resolve calls lookup_dyno after filling app; the app's fields are written first by
	 * writing them when the first dyno arrives would reorder keys, so resolve twice is avoided
	 * by buffering: dynos go into their own buffer. */
	{
		struct hm__buf db = {0};
		struct hm__jsonw dw;

		hm__jw_init(&dw, &db);
		hm__jw_arr(&dw);
		lc.w = &dw;
		e = hm_table_resolve(t, key, (size_t)kl, &app, lookup_dyno, &lc);
		hm__jw_arr_end(&dw);
		if (e != 0) {
			hm__buf_fini(&db);
			hm__buf_fini(&b);
			if (e == HM_ENOHOST)
				reply_error(c, "no app for this host");
			else
				reply_error(c, "%s", hm_strerror(e));
			return;
		}
		hm__jw_kstr(&w, "app", app.app, app.app_len);
		hm__jw_kbool(&w, "maintenance", app.maintenance);
		hm__jw_kbool(&w, "affinity", app.affinity);
		hm__jw_kcstr(&w, "balance", hm_balance_name(app.balance));
		hm__jw_key(&w, "dynos");
		hm__jw_raw(&w, db.data, db.len);
		if (db.oom)
			b.oom = true;
		hm__buf_fini(&db);
	}
	{
		/* The certificate SNI selection would pick for this host (docs/tls.md, 3). */
		const struct hm_certstore_writer *cs = admin_certs(c->a);
		struct hm_cert_entry ce;

		hm__jw_key(&w, "cert");
		if (cs != NULL && hm_certstore_resolve(cs, key, (size_t)kl, &ce) == 0)
			hm__jw_str(&w, ce.name, ce.name_len);
		else
			hm__jw_null(&w);
	}
	hm__jw_obj_end(&w);
	hm__buf_add(&b, "\n", 1);
	send_buf(c, &b);
}

/* ---- dump ---------------------------------------------------------------------------------- */

static int image_add(void *ctx, const struct hm_change *ch)
{
	struct hm__buf *img = ctx;
	struct img_rec r;

	if (ch->op == HM_OP_SECRET_PUT)
		return 0; /* never listed (docs/security.md) */

	memset(&r, 0, sizeof(r));
	r.op = ch->op;
	r.flags = (uint8_t)((ch->maintenance ? 1 : 0) | (ch->affinity ? 2 : 0));
	r.balance = ch->balance;
	r.state = ch->state;
	r.app_len = ch->app_len;
	r.name_len = ch->name_len;
	r.family = ch->addr.family;
	r.port = ch->addr.port;
	memcpy(r.ip, ch->addr.ip, 16);
	hm__buf_add(img, &r, sizeof(r));
	hm__buf_add(img, ch->app, ch->app_len);
	hm__buf_add(img, ch->name, ch->name_len);
	return img->oom ? -ENOMEM : 0;
}

static int image_cert(void *ctx, const struct hm_cert_entry *e)
{
	struct hm__buf *img = ctx;
	struct img_rec r;
	int64_t na = e->not_after;

	memset(&r, 0, sizeof(r));
	r.op = HM_OP_CERT_PUT;
	r.name_len = (uint16_t)e->name_len;
	r.meta_len = (uint32_t)e->meta_len;
	hm__buf_add(img, &r, sizeof(r));
	hm__buf_add(img, e->name, e->name_len);
	hm__buf_add(img, &na, sizeof(na));
	hm__buf_add(img, e->meta, e->meta_len);
	return img->oom ? -ENOMEM : 0;
}

static const char *const phase_key[] = {"apps", "domains", "dynos", "certs"};

/* Generates the next slice; returns true when the dump is complete. */
static bool dump_slice(struct dump *d)
{
	struct hm__jsonw *w = &d->w;

	w->out = &d->out;
	while (d->out.len < DUMP_SLICE && d->pos < d->img.len) {
		struct img_rec r;
		const char *app, *name;
		int phase;

		memcpy(&r, d->img.data + d->pos, sizeof(r));
		app = d->img.data + d->pos + sizeof(r);
		name = app + r.app_len;
		d->pos += sizeof(r) + r.app_len + r.name_len;
		phase = r.op == HM_OP_APP_PUT	   ? 0
			: r.op == HM_OP_DOMAIN_PUT ? 1
			: r.op == HM_OP_CERT_PUT   ? 3
						   : 2;
		while (d->phase < phase) {
			hm__jw_arr_end(w);
			d->phase++;
			hm__jw_key(w, phase_key[d->phase]);
			hm__jw_arr(w);
		}
		if (r.op == HM_OP_CERT_PUT) {
			int64_t na;

			memcpy(&na, d->img.data + d->pos, sizeof(na));
			cert_json(w, name, r.name_len, na,
				  (const uint8_t *)d->img.data + d->pos + sizeof(na), r.meta_len);
			d->pos += sizeof(na) + r.meta_len;
			continue;
		}
		hm__jw_obj(w);
		if (r.op == HM_OP_APP_PUT) {
			hm__jw_kstr(w, "app", app, r.app_len);
			hm__jw_kbool(w, "maintenance", r.flags & 1);
			hm__jw_kbool(w, "affinity", (r.flags & 2) != 0);
			hm__jw_kcstr(w, "balance", hm_balance_name(r.balance));
		} else if (r.op == HM_OP_DOMAIN_PUT) {
			hm__jw_kstr(w, "domain", name, r.name_len);
			hm__jw_kstr(w, "app", app, r.app_len);
		} else {
			struct hm_addr addr = {.family = r.family, .port = r.port};
			char as[HM_ADDR_STR_MAX];
			size_t al;

			memcpy(addr.ip, r.ip, 16);
			al = hm_addr_format(&addr, as);
			hm__jw_kstr(w, "app", app, r.app_len);
			hm__jw_kstr(w, "name", name, r.name_len);
			hm__jw_kstr(w, "addr", as, al);
			hm__jw_kcstr(w, "state", hm_dyno_state_name(r.state));
		}
		hm__jw_obj_end(w);
	}
	if (d->pos < d->img.len)
		return false;
	while (d->phase < 3) {
		hm__jw_arr_end(w);
		d->phase++;
		hm__jw_key(w, phase_key[d->phase]);
		hm__jw_arr(w);
	}
	hm__jw_arr_end(w);
	hm__jw_obj_end(w);
	hm__buf_add(&d->out, "\n", 1);
	d->phase = 4;
	return true;
}

static void dump_continue(struct conn *c)
{
	struct dump *d = c->dump;

	if (d->phase == 4) {
		/* The last slice has been written: the connection reads requests again. */
		dump_free(c->a, d);
		c->dump = NULL;
		if (c->eof) {
			/* Lines that came before the peer's EOF are still answered. */
			process_lines(c);
			set_reading(c, false);
			if (c->dump == NULL)
				conn_finish(c);
			return;
		}
		process_lines(c);
		return;
	}
	dump_send(c);
}

/* Generates and sends the next slice of the connection's streamed answer. */
static void dump_send(struct conn *c)
{
	struct dump *d = c->dump;

	if (d->certs)
		certs_slice(c->a, d);
	else
		dump_slice(d);
	send_buf_as(c, &d->out, true);
}

/* A streamed answer for c, its JSON object opened (false: refused, and answered so). */
static bool dump_start(struct conn *c, struct dump **out)
{
	struct hm__admin *a = c->a;
	struct dump *d;

	if (a->dumps >= DUMPS_MAX) {
		reply_error(c, "too many dumps in progress; try again");
		return false;
	}
	if ((d = calloc(1, sizeof(*d))) == NULL) {
		reply_error(c, "out of memory");
		return false;
	}
	a->dumps++;
	hm__jw_init(&d->w, &d->out);
	hm__jw_obj(&d->w);
	c->dump = d;
	*out = d;
	return true;
}

static void cmd_dump(struct conn *c)
{
	struct hm__admin *a = c->a;
	const struct hm_table_writer *t = a->ops->table(a->ctx);
	const struct hm_certstore_writer *cs = admin_certs(a);
	struct dump *d;
	int e;

	if (t == NULL) {
		reply_error(c, "%s", hm_strerror(HM_ENOTABLE));
		return;
	}
	if (!dump_start(c, &d))
		return;
	if ((e = hm_table_foreach(t, image_add, &d->img)) != 0 ||
	    (cs != NULL && (e = hm_certstore_foreach(cs, image_cert, &d->img)) != 0)) {
		c->dump = NULL;
		dump_free(a, d);
		reply_error(c, "dump failed: %s", hm_strerror(e));
		return;
	}
	a->ops->dump_head(a->ctx, &d->w);
	hm__jw_key(&d->w, "apps");
	hm__jw_arr(&d->w);
	dump_send(c);
}

static void handle_line(struct conn *c, char *line, size_t n)
{
	size_t cl, al;
	const char *arg;

	while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	while (n > 0 && (*line == ' ' || *line == '\t')) {
		line++;
		n--;
	}
	if (n == 0)
		return; /* blank lines are ignored */
	for (cl = 0; cl < n && line[cl] != ' ' && line[cl] != '\t'; cl++)
		;
	arg = line + cl;
	al = n - cl;
	while (al > 0 && (*arg == ' ' || *arg == '\t')) {
		arg++;
		al--;
	}
	if (cl == 6 && memcmp(line, "status", 6) == 0 && al == 0)
		cmd_status(c);
	else if (cl == 6 && memcmp(line, "lookup", 6) == 0)
		cmd_lookup(c, arg, al);
	else if (cl == 4 && memcmp(line, "dump", 4) == 0 && al == 0)
		cmd_dump(c);
	else if (cl == 5 && memcmp(line, "certs", 5) == 0 && al == 0)
		cmd_certs(c);
	else
		reply_error(c,
			    "unknown command \"%.*s\" (commands: status, lookup HOST, dump, certs)",
			    (int)HM_MIN(n, 100), line);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct conn *c = h->data;

	(void)suggested;
	*buf = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void set_reading(struct conn *c, bool on)
{
	if (c->closing || c->reading == on)
		return;
	c->reading = on;
	if (on)
		uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
	else
		uv_read_stop((uv_stream_t *)&c->pipe);
}

/* Answers the complete lines buffered, stopping at a dump (resumed when it is done). */
static void process_lines(struct conn *c)
{
	for (;;) {
		char *nl;
		size_t n;

		if (c->closing)
			return;
		if (c->dump != NULL || over_budget(c)) {
			/* Resumed when the dump ends or the answers drain (on_written). */
			set_reading(c, false);
			return;
		}
		nl = memchr(c->in, '\n', c->inlen);
		if (nl == NULL)
			break;
		n = (size_t)(nl - c->in);
		handle_line(c, c->in, n);
		memmove(c->in, nl + 1, c->inlen - n - 1);
		c->inlen -= n + 1;
	}
	if (c->inlen == sizeof(c->in)) {
		reply_error(c, "request line longer than %d bytes", LINE_MAX_BYTES);
		c->inlen = 0;
		c->discard = true;
		conn_finish(c);
		return;
	}
	set_reading(c, true);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct conn *c = s->data;

	(void)buf;
	c->active_ms = hm_mono_ms();
	if (c->discard) {
		c->discarded += nread > 0 ? (size_t)nread : 0;
		c->inlen = 0;
		if (nread < 0 || c->discarded > (1u << 20)) {
			c->eof = true;
			conn_close(c);
		}
		return;
	}
	if (nread < 0) {
		if (nread == UV_EOF && c->inlen > 0 && c->dump == NULL) {
			/* A last request without a newline (printf status | socat ...). */
			handle_line(c, c->in, c->inlen);
			c->inlen = 0;
		}
		set_reading(c, false);
		if (nread != UV_EOF)
			conn_close(c);
		else if (c->dump == NULL)
			conn_finish(c);
		else
			c->eof = true;
		return;
	}
	c->inlen += (size_t)nread;
	process_lines(c);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct hm__admin *a = server->data;
	struct conn *c;

	if (status != 0 || a->stopping)
		return;
	if ((c = calloc(1, sizeof(*c))) == NULL)
		return;
	c->a = a;
	c->active_ms = hm_mono_ms();
	uv_pipe_init(a->loop, &c->pipe, 0);
	c->pipe.data = c;
	a->handles++;
	a->nconns++;
	c->next = a->conns;
	if (a->conns != NULL)
		a->conns->prev = c;
	a->conns = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) != 0) {
		conn_close(c);
		return;
	}
	if (a->nconns > CLIENTS_MAX) {
		reply_error(c, "too many admin clients (%d); try again", CLIENTS_MAX);
		conn_finish(c);
		return;
	}
	set_reading(c, true);
}

/* Closes connections that neither sent a request nor took an answer for the idle timeout. */
static void on_idle_check(uv_timer_t *t)
{
	struct hm__admin *a = t->data;
	uint64_t now = hm_mono_ms();
	struct conn *c, *next;

	for (c = a->conns; c != NULL; c = next) {
		next = c->next;
		if (now - c->active_ms >= a->idle_ms)
			conn_close(c);
	}
}

/* mkdir -p of path's parent directory. */
static int make_parent(const char *path)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	size_t n = strlen(path);

	if (n >= sizeof(dir))
		return -ENAMETOOLONG;
	memcpy(dir, path, n + 1);
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	return 0;
}

/* A socket file left by a dead process is removed; one a live process listens on is kept. */
static int clear_stale(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, r;

	if (lstat(path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", path);
		return -EEXIST;
	}
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "%s: another process is serving this admin socket", path);
		return -EADDRINUSE;
	}
	unlink(path);
	return 0;
}

static void on_server_closed(uv_handle_t *h)
{
	struct hm__admin *a = h->data;

	a->handles--;
	maybe_free(a);
}

int hm__admin_start(struct hm__admin **out, uv_loop_t *loop, const char *path, uint64_t idle_ms,
		    const struct hm__admin_ops *ops, void *ctx, char *err, size_t errlen)
{
	struct hm__admin *a;
	mode_t old;
	int e;

	if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		snprintf(err, errlen, "admin socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	if ((e = make_parent(path)) != 0) {
		snprintf(err, errlen, "cannot create the directory of %s: %s", path, strerror(-e));
		return e;
	}
	err[0] = '\0';
	if ((e = clear_stale(path, err, errlen)) != 0) {
		if (err[0] == '\0')
			snprintf(err, errlen, "%s: %s", path, strerror(-e));
		return e;
	}
	if ((a = calloc(1, sizeof(*a))) == NULL || (a->path = strdup(path)) == NULL) {
		free(a);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	a->loop = loop;
	a->ops = ops;
	a->ctx = ctx;
	uv_pipe_init(loop, &a->server, 0);
	a->server.data = a;
	a->handles = 1;
	old = umask(0177);
	e = uv_pipe_bind(&a->server, path);
	umask(old);
	if (e == 0 && chmod(path, 0600) != 0)
		e = -errno;
	if (e == 0)
		e = uv_listen((uv_stream_t *)&a->server, 64, on_connection);
	if (e != 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", path, uv_strerror(e));
		/* The handle closes asynchronously; the struct is freed in its close callback. */
		a->stopping = true;
		uv_close((uv_handle_t *)&a->server, on_server_closed);
		return e;
	}
	a->idle_ms = idle_ms;
	uv_timer_init(loop, &a->idle);
	a->idle.data = a;
	a->handles++;
	uv_timer_start(&a->idle, on_idle_check, IDLE_CHECK_MS, IDLE_CHECK_MS);
	*out = a;
	return 0;
}

void hm__admin_stop(struct hm__admin *a)
{
	if (a == NULL || a->stopping)
		return;
	a->stopping = true;
	unlink(a->path);
	while (a->conns != NULL)
		conn_close(a->conns);
	uv_close((uv_handle_t *)&a->idle, on_server_closed);
	uv_close((uv_handle_t *)&a->server, on_server_closed);
}

void hm__admin_tls_status(struct hm__jsonw *w, const struct hm__tls_state *st)
{
	hm__jw_kbool(w, "tls", st->cur != NULL);
	hm__jw_ku64_or_null(w, "tls_not_after", st->cur != NULL,
			    st->cur != NULL ? (uint64_t)hm__tls_not_after(st->cur) : 0);
	hm__jw_ku64(w, "tls_reloads", st->reloads);
	hm__jw_ku64(w, "tls_reload_errors", st->errors);
}
