/*
 * A worker process: one libuv loop that accepts on the listening sockets inherited from the
 * master (plain HTTP, and HTTPS with --tls-listen), the table reader, the certificate store's
 * reader and TLS engine, the access-log batching, and the signals a worker answers
 * (SIGTERM/SIGINT: drain; SIGHUP: reopen logs). The connections themselves are their
 * protocol's (h1.c or h2proto.c over sock.c); what every layer below shares is the context (ctx.h).
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
#include "common/pubfile.h"
#include "common/util.h"
#include "router/ctx.h"
#include "router/h1.h"
#include "router/h2proto.h"
#include "router/rand.h"
#include "router/sock.h"
#include "router/tls.h"
#include "router/upstream.h"
#include "router/worker.h"

/* A listening socket the worker shares with the other workers. */
struct listener {
	uv_poll_t poll;
	int fd;	      /* -1: none, or closed (draining) */
	bool tls;     /* HTTPS */
	bool polling; /* poll is started */
};

/* A worker process: its loop, the context its connections share, and what only it does. */
struct hm__router_worker {
	uv_loop_t loop;
	struct hm__router_ctx ctx;
	struct listener lis[2];	    /* plain, TLS */
	uv_timer_t accept_retry;    /* out of descriptors: accepting resumes after a pause */
	uint8_t accept;		    /* enum accept_state */
	struct hm__router_tlsw tls; /* with --tls-listen: the engine, the store, the protocols */
	uint32_t max_clients;	    /* this worker's share of --max-connections */
	uv_timer_t tick;	    /* 1 s: table check */
	uv_timer_t drain_timer;
	uv_signal_t sig_term, sig_int, sig_hup;
	const struct hm__router_config *cfg;
	struct hm__router_shm *shm;   /* every worker's slot (orphaned ledgers are drained) */
	struct hm__router_slot *slot; /* this worker's: shared counters and ledger */
	uint64_t bad_maps_seen;	      /* hm_table_bad_maps() when last looked at */
	uint64_t bad_stores_seen;     /* hm_certstore_bad_maps() when last looked at */
};

static struct hm__router_worker worker;

/* ---- the table ---------------------------------------------------------------------------- */

/*
 * A table or certificate store truncated in place (same inode) makes a read of its mapping
 * fault. The handler asks common/pubfile's registry whether the address is one of their maps;
 * if so the mapping is now zero pages, the read completes and fails its validation (the
 * request gets H99, the handshake unrecognized_name), and the tick below logs and counts it.
 * Any other SIGBUS is a real crash: the default action.
 */
static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!hm_pubfile_fault(si->si_addr)) {
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

/* Maps of a file found truncated under this worker since it last looked (bad, from the
 * file's module): counted in ctr and logged with what the worker does meanwhile. */
static void count_bad_maps(uint64_t bad, uint64_t *seen, uint64_t *ctr, const char *what,
			   const char *path, const char *meanwhile)
{
	if (bad == *seen)
		return;
	hm__ctr_add(ctr, bad - *seen);
	*seen = bad;
	hm_log(HM_LOG_ERR, "router", "%s %s shrank under its mapping (truncated in place): %s",
	       what, path, meanwhile);
}

/* What this worker sees of the table, for the master's /metrics. */
static void publish_table(struct hm__router_worker *w)
{
	struct hm__router_table_seen *t = &w->slot->table;
	uint64_t file_id;
	struct hm_table_map *m = hm__router_ctx_map(&w->ctx, &file_id);
	struct hm_table_info info;

	count_bad_maps(hm_table_bad_maps(), &w->bad_maps_seen, &w->slot->c.table_bad, "table",
		       w->cfg->table, "answering 503 H99 until a valid table is there");
	if (m != NULL)
		hm_table_map_info(m, &info);
	__atomic_store_n(&t->version, m != NULL ? info.version : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&t->commit_ms, m != NULL ? info.commit_ms : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&t->present, m != NULL && info.file_id != 0, __ATOMIC_RELAXED);
}

/* The certificate store: a file that appeared or was replaced is mapped (handshakes look at
 * the current one anyway), and what /metrics shows of it is published. */
static void check_certs(struct hm__router_worker *w)
{
	static uint64_t last_ms;
	struct hm_certstore_map *m;
	struct hm_certstore_info info = {0};
	uint64_t now = uv_now(&w->loop);
	int r = hm_certstore_reader_check(w->tls.store);

	count_bad_maps(hm_certstore_bad_maps(), &w->bad_stores_seen, &w->slot->c.cert_store_bad,
		       "certificate store", w->cfg->cert_store,
		       "TLS handshakes fail unrecognized_name until a valid store is there");
	if (r < 0 && r != -ENOENT && (last_ms == 0 || now - last_ms >= 60000)) {
		last_ms = now;
		hm_log(HM_LOG_ERR, "router",
		       "certificate store %s: %s; TLS handshakes use the last good one (none: "
		       "unrecognized_name)",
		       w->cfg->cert_store, hm_strerror(r));
	}
	m = hm_certstore_reader_map(w->tls.store);
	if (m != NULL)
		hm_certstore_map_info(m, &info);
	__atomic_store_n(&w->slot->cert_soonest,
			 m != NULL && info.certs > 0 && info.soonest_not_after != INT64_MAX
			     ? info.soonest_not_after
			     : 0,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&w->slot->certs, (uint64_t)info.certs, __ATOMIC_RELAXED);
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
	if (w->tls.store != NULL)
		check_certs(w);
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

/* At the bound on TLS handshakes in progress: the TLS listener waits (plain HTTP goes on). */
static bool tls_full(const struct hm__router_worker *w)
{
	return w->ctx.tls != NULL && w->ctx.tls->handshakes >= w->ctx.tls->max_handshakes;
}

/* Polls each listener that may accept now: in ACCEPT_POLLING, and for TLS below its bound. */
static void listeners_update(struct hm__router_worker *w)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(w->lis); i++) {
		struct listener *l = &w->lis[i];
		bool want = l->fd >= 0 && w->accept == ACCEPT_POLLING && !(l->tls && tls_full(w));

		if (want && !l->polling) {
			if (uv_poll_start(&l->poll, UV_READABLE, on_acceptable) != 0) {
				/* cannot happen on a valid fd; retried by the timer */
				w->accept = ACCEPT_BACKOFF;
				uv_timer_start(&w->accept_retry, on_accept_retry, ACCEPT_RETRY_MS,
					       0);
				continue;
			}
			l->polling = true;
		} else if (!want && l->polling) {
			uv_poll_stop(&l->poll);
			l->polling = false;
		}
	}
}

/* Moves to state: polls the listeners in ACCEPT_POLLING only. */
static void accept_set(struct hm__router_worker *w, enum accept_state state)
{
	w->accept = (uint8_t)state;
	if (state == ACCEPT_BACKOFF)
		uv_timer_start(&w->accept_retry, on_accept_retry, ACCEPT_RETRY_MS, 0);
	listeners_update(w);
}

/* Room for a client again: polling resumes (not while backing off or draining), and the TLS
 * listener once a handshake ended. */
static void accept_room(struct hm__router_worker *w)
{
	if (w->accept == ACCEPT_FULL && w->ctx.nconns < w->max_clients)
		accept_set(w, ACCEPT_POLLING);
	else
		listeners_update(w);
}

static void on_accept_retry(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, accept_retry);

	if (w->accept == ACCEPT_BACKOFF)
		accept_set(w, w->ctx.nconns < w->max_clients ? ACCEPT_POLLING : ACCEPT_FULL);
}

/* Serves an accepted client: over TLS (whose transport opens the protocol ALPN chooses once the
 * handshake is done: HTTP/1.1, or HTTP/2 through hm__router_h2p_open), or over plain TCP:
 * HTTP/1.x, or with --h2c whichever of HTTP/1.x and HTTP/2 (prior knowledge) its first bytes
 * speak. */
static void client_open(struct hm__router_worker *w, int fd, const struct sockaddr *peer, bool tls)
{
	struct hm__router_sock *s;

	if (tls) {
		hm__router_sock_open_tls(&w->ctx, fd, peer);
		return;
	}
	if (hm__router_sock_open_tcp(&w->ctx, fd, peer, &s) != 0)
		return;
	if (w->cfg->h2c)
		hm__router_h2p_sniff(&w->ctx, s);
	else
		hm__router_h1_open(&w->ctx, s);
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
	struct hm__router_worker *w = p->data;
	struct listener *l = hm__container_of(p, struct listener, poll);

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
		if (l->tls && tls_full(w)) {
			listeners_update(w);
			hm__ctr_add(&w->slot->c.tls_accept_paused, 1);
			return;
		}
		fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			client_open(w, fd, (struct sockaddr *)&ss, l->tls);
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
	for (size_t i = 0; i < HM_ARRAY_SIZE(w->lis); i++) {
		if (w->lis[i].fd < 0)
			continue;
		uv_close((uv_handle_t *)&w->lis[i].poll, NULL);
		close(w->lis[i].fd);
		w->lis[i].fd = -1;
	}
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

/*
 * The TLS listener's engine over the node's certificate store, and the protocols a TLS
 * connection can speak, by ALPN. HTTP/2 over TLS registers itself here (open[HM_TLS_ALPN_H2]):
 * the engine offers "h2" exactly when it is set.
 */
static int tls_setup(struct hm__router_worker *w)
{
	struct hm__router_tlsw *t = &w->tls;
	struct hm_tls_config tc = {.num_tickets = -1};
	int r;

	t->open[HM_TLS_ALPN_NONE] = hm__router_h1_open;
	t->open[HM_TLS_ALPN_HTTP11] = hm__router_h1_open;
	t->open[HM_TLS_ALPN_H2] = hm__router_h2p_open;
	tc.h2 = t->open[HM_TLS_ALPN_H2] != NULL;
	tc.cache_max = (unsigned)w->cfg->tls_cert_cache;
	/* The operator's way back to libssl for every handshake (docs/operations.md). */
	tc.no_fast13 = getenv("HERMOD_TLS_FAST_PATH") != NULL &&
		       strcmp(getenv("HERMOD_TLS_FAST_PATH"), "off") == 0;
	t->timeout_ms = (uint64_t)w->cfg->tls_handshake_timeout;
	t->max_handshakes = (uint32_t)w->cfg->tls_max_handshakes;
	if ((r = hm_certstore_reader_new(&t->store, w->cfg->cert_store)) != 0 ||
	    (r = hm_tls_ctx_new(&t->engine, t->store, &tc)) != 0)
		return r;
	check_certs(w);
	return hm__router_tls_start(&w->ctx, t);
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
	w->bad_stores_seen = hm_certstore_bad_maps();
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
	if (cfg->tls_listen_fd >= 0 && (r = tls_setup(w)) != 0) {
		hm_log(HM_LOG_ERR, "router", "TLS set-up failed (certificate store %s): %s",
		       cfg->cert_store, hm_strerror(r));
		exit(1);
	}
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
	w->max_clients = cfg->worker_max_clients;
	__atomic_store_n(&slot->c.max_conns, w->max_clients, __ATOMIC_RELAXED);
	uv_timer_init(&w->loop, &w->accept_retry);
	w->lis[0].fd = cfg->listen_fd;
	w->lis[1].fd = cfg->tls_listen_fd;
	w->lis[1].tls = true;
	for (size_t i = 0; i < HM_ARRAY_SIZE(w->lis); i++) {
		w->lis[i].poll.data = w;
		if (w->lis[i].fd >= 0 &&
		    (r = uv_poll_init(&w->loop, &w->lis[i].poll, w->lis[i].fd)) != 0) {
			hm_log(HM_LOG_ERR, "router", "listening: %s", uv_strerror(r));
			exit(1);
		}
	}
	accept_set(w, ACCEPT_POLLING);
	__atomic_store_n(&slot->ready, 1, __ATOMIC_RELEASE);
	uv_run(&w->loop, UV_RUN_DEFAULT);
	finish(w);
}
