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
#include <sys/socket.h>
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

/* ---- the table ---------------------------------------------------------------------------- */

/*
 * A table file truncated in place (same inode) makes a read of its mapping fault. The handler
 * asks the table module whether the address is a table's; if so the mapping is now zero pages,
 * the read completes and fails its validation (the request gets H99), and the tick below logs
 * and counts it. Any other SIGBUS is a real crash: the default action.
 */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!hm_table_fault(si->si_addr)) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
}

struct ledger_ctx {
	struct hm_table_map *map;
	uint64_t file_id;
};

static void ledger_entry(void *arg, uint64_t file_id, uint32_t slot, int32_t count)
{
	struct ledger_ctx *l = arg;

	/* Counts in another file died with it (replaced, or no longer mapped). */
	if (l->map != NULL && file_id == l->file_id)
		hm_table_inflight_add(l->map, slot, -count);
}

/* Subtracts a dead worker's ledger (a claimed orphan, or the one this worker's slot came with)
 * from the current table, and clears it. */
static void drain_ledger(struct hm__router_worker *w, struct hm__router_slot *s)
{
	struct ledger_ctx l = {0};

	l.map = hm__router_worker_map(w, &l.file_id);
	hm__router_ledger_drain(s, ledger_entry, &l);
}

static void drain_orphans(struct hm__router_worker *w)
{
	for (uint32_t i = 0; i < w->shm->nslots; i++) {
		struct hm__router_slot *s = &w->shm->slot[i];

		if (s == w->slot ||
		    __atomic_load_n(&s->ledger_state, __ATOMIC_RELAXED) != HM__LEDGER_ORPHAN ||
		    !hm__router_ledger_claim(s))
			continue;
		drain_ledger(w, s);
		hm__router_ledger_release(s);
	}
}

/* What this worker sees of the table, for the master's /metrics. */
static void publish_table(struct hm__router_worker *w)
{
	struct hm__router_table_seen *t = &w->slot->table;
	uint64_t file_id, bad = hm_table_bad_maps();
	struct hm_table_map *m = hm__router_worker_map(w, &file_id);
	struct hm_table_info info;

	if (bad != w->bad_maps_seen) {
		hm__ctr_add(&w->slot->c.table_bad, bad - w->bad_maps_seen);
		w->bad_maps_seen = bad;
		hm_log(HM_LOG_ERR, "router",
		       "table %s shrank under its mapping (truncated in place): answering 503 H99 "
		       "until a valid table is there",
		       w->cfg->table);
	}
	if (m != NULL)
		hm_table_map_info(m, &info);
	__atomic_store_n(&t->version, m != NULL ? info.version : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&t->commit_ms, m != NULL ? info.commit_ms : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&t->present, m != NULL && info.file_id != 0, __ATOMIC_RELAXED);
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
	publish_table(w);
	drain_orphans(w);
}

static _Noreturn void finish(struct hm__router_worker *w)
{
	log_flush(w);
	hm__router_alog_close(&w->alog);
	exit(0);
}

static void check_drained(struct hm__router_worker *w)
{
	if (w->draining && w->nclients == 0)
		finish(w);
}

/* ---- accepting -------------------------------------------------------------------------- */

/*
 * The worker accepts from the listening socket it shares with the other workers, with its own
 * accept4() instead of libuv's listener, for two reasons. At its share of --max-connections it
 * stops polling the socket, so further clients wait in the kernel's backlog (another worker
 * may take them) instead of being accepted and refused; it resumes when one of its connections
 * closes. And when the process is out of descriptors, libuv would accept with a reserved one
 * and close at once (a reset for every client); here accepting pauses for ACCEPT_RETRY_MS and
 * the clients wait. accept4 also gives the peer's address and the flags the socket needs, and
 * TCP_NODELAY comes from the listener: no getpeername or setsockopt per connection.
 */
#define ACCEPT_BATCH	64
#define ACCEPT_RETRY_MS 100
#define FD_LOG_EVERY_MS 1000

enum accept_state {
	ACCEPT_POLLING = 0, /* the listener is polled */
	ACCEPT_FULL,	    /* at max_clients: resumes when a connection closes */
	ACCEPT_BACKOFF,	    /* out of descriptors: resumes when accept_retry fires */
	ACCEPT_CLOSED,	    /* draining: never again */
};

static void on_acceptable(uv_poll_t *p, int status, int events);
static void on_accept_retry(uv_timer_t *t);

/* Moves to state: polls the listener in ACCEPT_POLLING only. */
static void accept_set(struct hm__router_worker *w, enum accept_state state)
{
	if (w->accept == ACCEPT_POLLING && state != ACCEPT_POLLING)
		uv_poll_stop(&w->acceptor);
	else if (w->accept != ACCEPT_POLLING && state == ACCEPT_POLLING &&
		 uv_poll_start(&w->acceptor, UV_READABLE, on_acceptable) != 0)
		state = ACCEPT_BACKOFF; /* cannot happen on a valid fd; retried by the timer */
	w->accept = (uint8_t)state;
	if (state == ACCEPT_BACKOFF)
		uv_timer_start(&w->accept_retry, on_accept_retry, ACCEPT_RETRY_MS, 0);
}

/* Room for a client again: polling resumes (not while backing off or draining). */
static void accept_room(struct hm__router_worker *w)
{
	if (w->accept == ACCEPT_FULL && w->nclients < w->max_clients)
		accept_set(w, ACCEPT_POLLING);
}

static void on_accept_retry(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, accept_retry);

	if (w->accept == ACCEPT_BACKOFF)
		accept_set(w, w->nclients < w->max_clients ? ACCEPT_POLLING : ACCEPT_FULL);
}

void hm__router_worker_fd_exhausted(struct hm__router_worker *w, const char *what, int err)
{
	static uint64_t last_log;
	uint64_t now = uv_now(&w->loop);

	hm__ctr_add(&w->slot->c.fd_exhausted, 1);
	if (last_log == 0 || now - last_log >= FD_LOG_EVERY_MS) {
		last_log = now;
		hm_log(HM_LOG_ERR, "router", "%s: %s (%u client connections open)", what,
		       hm_strerror(err), w->nclients);
	}
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
	struct hm__router_worker *w = hm__container_of(p, struct hm__router_worker, acceptor);

	(void)status;
	(void)events;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd;

		if (w->nclients >= w->max_clients) {
			accept_set(w, ACCEPT_FULL);
			hm__ctr_add(&w->slot->c.accept_paused, 1);
			return;
		}
		fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			hm__router_client_open(w, fd, (struct sockaddr *)&ss, len);
			continue;
		}
		switch (errno) {
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			/* The client stays in the backlog; one that closes or the timer lets it in.
			 */
			hm__router_worker_fd_exhausted(w, "accept", -errno);
			accept_set(w, ACCEPT_BACKOFF);
			return;
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
		case EPERM:
			continue; /* that connection is gone, not the listener */
		default:
			return; /* EAGAIN: another worker took it, or none left */
		}
	}
}

void hm__router_worker_client_closed(struct hm__router_worker *w)
{
	accept_room(w);
	check_drained(w);
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
	accept_set(w, ACCEPT_CLOSED);
	uv_timer_stop(&w->accept_retry);
	uv_close((uv_handle_t *)&w->acceptor, NULL);
	close(w->listen_fd);
	w->listen_fd = -1;
	uv_timer_start(&w->drain_timer, on_drain_deadline, (uint64_t)w->cfg->drain_timeout, 0);
	hm__router_pool_close_all(w);
	hm__router_clients_drain(w);
	check_drained(w);
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
				      struct hm__router_shm *shm, uint32_t index)
{
	struct hm__router_worker *w = &worker;
	struct hm__router_slot *slot = &shm->slot[index];
	const char *alog = cfg->access_log;
	struct sigaction sa = {0};
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
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGBUS, &sa, NULL);
	memset(w, 0, sizeof(*w));
	w->cfg = cfg;
	w->shm = shm;
	w->slot = slot;
	w->bad_maps_seen = hm_table_bad_maps();
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
	/* A slot handed over with a dead worker's ledger: returned before any request counts. */
	if (__atomic_load_n(&slot->ledger_state, __ATOMIC_ACQUIRE) == HM__LEDGER_OWNED &&
	    hm__router_ledger_pending(slot))
		drain_ledger(w, slot);
	publish_table(w);
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
	w->listen_fd = cfg->listen_fd;
	w->max_clients = cfg->worker_max_clients;
	__atomic_store_n(&slot->c.max_conns, w->max_clients, __ATOMIC_RELAXED);
	uv_timer_init(&w->loop, &w->accept_retry);
	r = uv_poll_init(&w->loop, &w->acceptor, w->listen_fd);
	if (r == 0)
		r = uv_poll_start(&w->acceptor, UV_READABLE, on_acceptable);
	if (r != 0) {
		hm_log(HM_LOG_ERR, "router", "listening: %s", uv_strerror(r));
		exit(1);
	}
	w->accept = ACCEPT_POLLING;
	__atomic_store_n(&slot->ready, 1, __ATOMIC_RELEASE);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	finish(w);
}
