/*
 * A worker process: one libuv loop that accepts on the listening socket inherited from the
 * master, the table reader, the access-log batching, and the signals a worker answers
 * (SIGTERM/SIGINT: drain; SIGHUP: reopen logs). The connections themselves are their
 * protocol's (h1.c over sock.c); what every layer below shares is the context (ctx.h).
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
#include "router/ctx.h"
#include "router/h1.h"
#include "router/rand.h"
#include "router/sock.h"
#include "router/upstream.h"
#include "router/worker.h"

/* A worker process: its loop, the context its connections share, and what only it does. */
struct hm__router_worker {
	uv_loop_t loop;
	struct hm__router_ctx ctx;
	uv_poll_t acceptor;	 /* the shared listening socket */
	uv_timer_t accept_retry; /* out of descriptors: accepting resumes after a pause */
	int listen_fd;		 /* -1 once closed (draining) */
	uint8_t accept;		 /* enum accept_state */
	uint32_t max_clients;	 /* this worker's share of --max-connections */
	uv_timer_t tick;	 /* 1 s: table check */
	uv_timer_t drain_timer;
	uv_signal_t sig_term, sig_int, sig_hup;
	const struct hm__router_config *cfg;
	struct hm__router_shm *shm;   /* every worker's slot (orphaned ledgers are drained) */
	struct hm__router_slot *slot; /* this worker's: shared counters and ledger */
	uint64_t bad_maps_seen;	      /* hm_table_bad_maps() when last looked at */
};

static struct hm__router_worker worker;

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

	l.map = hm__router_ctx_map(&w->ctx, &l.file_id);
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
	struct hm_table_map *m = hm__router_ctx_map(&w->ctx, &file_id);
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
	int r = hm_table_reader_check(w->ctx.reader);

	w->ctx.table_checked = uv_now(&w->loop);
	hm__router_ctx_aff_refresh(&w->ctx, hm_table_reader_map(w->ctx.reader));
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
	hm__router_ctx_log_flush(&w->ctx);
	hm__router_alog_close(&w->ctx.alog);
	exit(0);
}

static void check_drained(struct hm__router_worker *w)
{
	if (w->ctx.draining && w->ctx.nconns == 0)
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
	if (w->accept == ACCEPT_FULL && w->ctx.nconns < w->max_clients)
		accept_set(w, ACCEPT_POLLING);
}

static void on_accept_retry(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, accept_retry);

	if (w->accept == ACCEPT_BACKOFF)
		accept_set(w, w->ctx.nconns < w->max_clients ? ACCEPT_POLLING : ACCEPT_FULL);
}

/* Serves an accepted client: plain TCP and HTTP/1.x (the protocol and transport a listener
 * would choose: TLS and ALPN, or an HTTP/2 preface, come with their own openers). */
static void client_open(struct hm__router_worker *w, int fd, const struct sockaddr *peer)
{
	struct hm__router_sock *s;

	if (hm__router_sock_open_tcp(&w->ctx, fd, peer, &s) == 0)
		hm__router_h1_open(&w->ctx, s);
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

		if (w->ctx.nconns >= w->max_clients) {
			accept_set(w, ACCEPT_FULL);
			hm__ctr_add(&w->slot->c.accept_paused, 1);
			return;
		}
		fd = accept4(w->listen_fd, (struct sockaddr *)&ss, &len,
			     SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			client_open(w, fd, (struct sockaddr *)&ss);
			continue;
		}
		switch (errno) {
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			/* The client stays in the backlog; one that closes or the timer lets it in.
			 */
			hm__router_ctx_fd_exhausted(&w->ctx, "accept", -errno);
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

/* A client connection closed (its handles are closed): accepting resumes if it paused at the
 * limit; while draining, the worker exits when the last one is gone. */
static void conn_closed(struct hm__router_ctx *ctx)
{
	struct hm__router_worker *w = hm__container_of(ctx, struct hm__router_worker, ctx);

	accept_room(w);
	check_drained(w);
}

/* Every client connection, through its protocol: draining started, or its deadline passed. */
static void conns_each(struct hm__router_worker *w, bool abort)
{
	struct hm__router_list *n, *next;

	for (n = w->ctx.conns.next; n != &w->ctx.conns; n = next) {
		struct hm__router_conn *c = hm__container_of(n, struct hm__router_conn, link);

		next = n->next;
		if (abort)
			c->ops->abort(c);
		else
			c->ops->drain(c);
	}
}

static void on_drain_deadline(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, drain_timer);

	hm_log(HM_LOG_NOTICE, "router", "drain deadline: closing %u connections", w->ctx.nconns);
	conns_each(w, true);
	finish(w);
}

static void drain(struct hm__router_worker *w)
{
	if (w->ctx.draining)
		return;
	w->ctx.draining = true;
	__atomic_store_n(&w->slot->ready, 0, __ATOMIC_RELEASE);
	/* The master keeps the socket open, so connections waiting in it go to other workers. */
	accept_set(w, ACCEPT_CLOSED);
	uv_timer_stop(&w->accept_retry);
	uv_close((uv_handle_t *)&w->acceptor, NULL);
	close(w->listen_fd);
	w->listen_fd = -1;
	uv_timer_start(&w->drain_timer, on_drain_deadline, (uint64_t)w->cfg->drain_timeout, 0);
	hm__router_pool_close_all(&w->ctx.pool);
	conns_each(w, false);
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
		r = hm__router_alog_reopen(&w->ctx.alog);
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
	if (uv_loop_init(&w->loop) != 0)
		exit(1);
	r = hm__router_ctx_init(&w->ctx, &w->loop, cfg, slot);
	if (r == 0 && (r = hm__router_upstream_pool_init(&w->ctx)) != 0)
		hm__router_ctx_fini(&w->ctx);
	if (r != 0) {
		hm_log(HM_LOG_ERR, "router", "worker set-up failed (access log %s): %s",
		       cfg->access_log, hm_strerror(r));
		exit(1);
	}
	w->ctx.conn_closed = conn_closed;
	/* A slot handed over with a dead worker's ledger: returned before any request counts. */
	if (__atomic_load_n(&slot->ledger_state, __ATOMIC_ACQUIRE) == HM__LEDGER_OWNED &&
	    hm__router_ledger_pending(slot))
		drain_ledger(w, slot);
	publish_table(w);
	hm__router_ctx_aff_refresh(&w->ctx, hm_table_reader_map(w->ctx.reader));
	uv_timer_init(&w->loop, &w->tick);
	uv_timer_start(&w->tick, on_tick, 1000, 1000);
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
