/*
 * A worker process: one libuv loop that accepts on the listening socket inherited from the
 * master, the table reader, the access-log batching, and the signals a worker answers
 * (SIGTERM/SIGINT: drain; SIGHUP: reopen logs). The connections themselves are proxy.c's.
 *
 * A worker starts from a plain fork of the master, which runs no libuv of its own, so nothing
 * of libuv is shared between processes.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "common/log.h"
#include "common/util.h"
#include "router/rand.h"
#include "router/router.h"

#define LOG_FLUSH_BYTES 16384
#define LOG_FLUSH_MS	50
#define TABLE_RETRY_MS	100

static struct hm__router_worker worker;

static void log_flush(struct hm__router_worker *w)
{
	if (w->alog.len > 0)
		hm__router_alog_flush(&w->alog);
	__atomic_store_n(&w->slot->c.log_dropped, w->alog.dropped, __ATOMIC_RELAXED);
}

static void on_log_timer(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, log_timer);

	w->log_armed = false;
	log_flush(w);
}

void hm__router_worker_log(struct hm__router_worker *w, const struct hm__router_logrec *r)
{
	hm__router_alog_append(&w->alog, r);
	if (w->alog.len >= LOG_FLUSH_BYTES) {
		log_flush(w);
	} else if (!w->log_armed) {
		w->log_armed = true;
		uv_timer_start(&w->log_timer, on_log_timer, LOG_FLUSH_MS, 0);
	}
}

/*
 * Signs affinity cookies with the cluster's secret from the table (docs/security.md) once it is
 * there, and again if it changes; with --affinity-secret-file, never. Per request this is one
 * atomic load: the secret is read only when the table's version has changed.
 */
static void aff_refresh(struct hm__router_worker *w, struct hm_table_map *m)
{
	uint8_t key[HM_SECRET_MAX];
	uint64_t v;
	int n;

	if (w->cfg->secret_from_file || m == NULL)
		return;
	v = hm_table_map_version(m);
	if (m == w->aff_map && v == w->aff_version)
		return;
	n = hm_table_secret(m, "affinity", key);
	if (n == HM_EBUSYTABLE)
		return; /* try again on the next request */
	w->aff_map = m;
	w->aff_version = v;
	/* None (an origin older than the secret): the master's random key until it comes. */
	if (n > 0 && hm__router_affinity_rekey(&w->aff, key, (size_t)n) == 1)
		hm_log(HM_LOG_DEBUG, "router", "affinity cookies: signed with the cluster secret");
	memset(key, 0, sizeof(key));
}

struct hm_table_map *hm__router_worker_map(struct hm__router_worker *w, uint64_t *file_id)
{
	struct hm_table_map *m = hm_table_reader_map(w->reader);

	if (m == NULL) {
		/* No table yet: look at the path again, but not for every request. */
		uint64_t now = uv_now(&w->loop);

		if (now - w->table_checked < TABLE_RETRY_MS)
			return NULL;
		w->table_checked = now;
		hm_table_reader_check(w->reader);
		m = hm_table_reader_map(w->reader);
		if (m == NULL)
			return NULL;
	}
	if (m != w->cached_map) {
		struct hm_table_info info;

		/* The cached map stays referenced, so its address cannot come back as another. */
		hm_table_map_info(m, &info);
		hm_table_map_ref(m);
		if (w->cached_map != NULL)
			hm_table_map_unref(w->cached_map);
		w->cached_map = m;
		w->cached_file_id = info.file_id;
	}
	aff_refresh(w, m);
	*file_id = w->cached_file_id;
	return m;
}

static void on_tick(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, tick);
	int r = hm_table_reader_check(w->reader);

	w->table_checked = uv_now(&w->loop);
	aff_refresh(w, hm_table_reader_map(w->reader));
	if (r == HM_EUNTRUSTED) {
		/* Someone else's file at the table's path is never served (filesec.h): say so
		 * loudly, once a minute, since every request meanwhile is 503 H99. */
		static uint64_t last_ms;
		char why[160] = "";
		uint64_t now = uv_now(&w->loop);

		if (last_ms == 0 || now - last_ms >= 60000) {
			last_ms = now;
			hm_path_trusted(w->cfg->table, why, sizeof(why));
			hm_log(HM_LOG_ERR, "router",
			       "refusing the routing table %s: %s; requests get 503 H99 until the "
			       "edge writes one",
			       w->cfg->table, why);
		}
	} else if (r < 0) {
		hm_log(HM_LOG_DEBUG, "router", "table %s: %s", w->cfg->table, hm_strerror(r));
	}
}

static _Noreturn void finish(struct hm__router_worker *w)
{
	log_flush(w);
	hm__router_alog_close(&w->alog);
	exit(0);
}

void hm__router_worker_check_drained(struct hm__router_worker *w)
{
	if (w->draining && w->nclients == 0)
		finish(w);
}

static void on_drain_deadline(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, drain_timer);

	hm_log(HM_LOG_NOTICE, "router", "drain deadline: closing %u connections", w->nclients);
	hm__router_clients_abort(w);
	finish(w);
}

static void drain(struct hm__router_worker *w)
{
	if (w->draining)
		return;
	w->draining = true;
	__atomic_store_n(&w->slot->ready, 0, __ATOMIC_RELEASE);
	/* The master keeps the socket open, so connections waiting in it go to other workers. */
	uv_close((uv_handle_t *)&w->listener, NULL);
	uv_timer_start(&w->drain_timer, on_drain_deadline, (uint64_t)w->cfg->drain_timeout, 0);
	hm__router_pool_close_all(w);
	hm__router_clients_drain(w);
	hm__router_worker_check_drained(w);
}

static void reopen_log(const struct hm__router_config *cfg)
{
	int fd;

	if (cfg->log == NULL)
		return;
	fd = open(cfg->log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	dup2(fd, 2);
	close(fd);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct hm__router_worker *w = s->data;
	int r;

	if (signum == SIGHUP) {
		reopen_log(w->cfg);
		r = hm__router_alog_reopen(&w->alog);
		if (r != 0)
			hm_log(HM_LOG_ERR, "router", "reopening %s: %s", w->cfg->access_log,
			       hm_strerror(r));
		return;
	}
	drain(w);
}

_Noreturn void hm__router_worker_main(const struct hm__router_config *cfg,
				      struct hm__router_slot *slot)
{
	struct hm__router_worker *w = &worker;
	const char *alog = cfg->access_log;
	sigset_t none;
	int r;

	/* The master's mask stays until libuv's handlers are installed (below): a SIGHUP or
	 * SIGTERM sent to a worker being born waits for them instead of killing it. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGCHLD, SIG_DFL);
	if (hm__router_rand_reset() != 0) {
		hm_log(HM_LOG_ERR, "router", "no kernel randomness");
		exit(1);
	}
	memset(w, 0, sizeof(*w));
	w->cfg = cfg;
	w->slot = slot;
	hm__list_init(&w->clients);
	hm__router_limits_request(&w->req_lim, (uint32_t)cfg->max_head);
	hm__router_limits_response(&w->resp_lim, (uint32_t)cfg->max_response_head);
	if (uv_loop_init(&w->loop) != 0)
		exit(1);
	r = hm__router_alog_open(&w->alog, alog != NULL && strcmp(alog, "-") != 0 ? alog : NULL,
				 256 * 1024);
	if (r != 0) {
		hm_log(HM_LOG_ERR, "router", "access log %s: %s", alog, hm_strerror(r));
		exit(1);
	}
	if (hm__router_affinity_init(&w->aff, cfg->secret, cfg->secret_len) != 0 ||
	    hm__router_pool_init(w) != 0 || hm_table_reader_new(&w->reader, cfg->table) != 0) {
		hm_log(HM_LOG_ERR, "router", "worker set-up failed");
		exit(1);
	}
	hm_table_reader_check(w->reader);
	aff_refresh(w, hm_table_reader_map(w->reader));
	uv_timer_init(&w->loop, &w->tick);
	uv_timer_start(&w->tick, on_tick, 1000, 1000);
	uv_timer_init(&w->loop, &w->log_timer);
	uv_timer_init(&w->loop, &w->drain_timer);
	uv_signal_init(&w->loop, &w->sig_term);
	uv_signal_init(&w->loop, &w->sig_int);
	uv_signal_init(&w->loop, &w->sig_hup);
	w->sig_term.data = w->sig_int.data = w->sig_hup.data = w;
	uv_signal_start(&w->sig_term, on_signal, SIGTERM);
	uv_signal_start(&w->sig_int, on_signal, SIGINT);
	uv_signal_start(&w->sig_hup, on_signal, SIGHUP);
	signal(SIGUSR2, SIG_IGN); /* the master's business */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	uv_tcp_init(&w->loop, &w->listener);
	w->listener.data = w;
	r = uv_tcp_open(&w->listener, cfg->listen_fd);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&w->listener, (int)cfg->backlog,
			      hm__router_on_connection);
	if (r != 0) {
		hm_log(HM_LOG_ERR, "router", "listening: %s", uv_strerror(r));
		exit(1);
	}
	__atomic_store_n(&slot->ready, 1, __ATOMIC_RELEASE);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	finish(w);
}
