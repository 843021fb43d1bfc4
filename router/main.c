/*
 * hermod-router: options, and the master process.
 *
 * The master binds the listening socket, maps the shared slots (shm.h), forks the workers and
 * then only supervises: a poll(2) loop over a signalfd (SIGCHLD, SIGTERM, SIGINT, SIGHUP,
 * SIGUSR2) and the /metrics listener. It runs no libuv loop, so a worker forked from it at any
 * time starts clean. What it does on each signal is in docs/router.md ("Processes").
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/log.h"
#include "common/opts.h"
#include "common/sdnotify.h"
#include "common/util.h"
#include "router/rand.h"
#include "router/config-t.h"
#include "router/http.h"
#include "router/shm.h"
#include "router/tls.h"
#include "router/worker.h"

#define SYNOPSIS                                                                                   \
	"hermod-router [--table PATH] [--listen HOST:PORT] [--tls-listen HOST:PORT] [--workers "   \
	"N] "                                                                                      \
	"[--metrics HOST:PORT] [options]"

static const char *const log_levels[] = {"err", "warning", "notice", "info", "debug", NULL};

/* clang-format off */
#define OFF(f) offsetof(struct hm__router_config, f)
#define DUR(n, f, d, h)                                                                            \
	{.name = n, .type = HM_OPT_DURATION, .offset = OFF(f), .def = d, .min = 1,                 \
	 .max = 24 * 3600 * 1000, .arg = "DURATION", .help = h}

static const struct hm_opt options[] = {
	{.name = "table", .type = HM_OPT_STR, .offset = OFF(table), .def = "/run/hermod/hermod.table",
	 .arg = "PATH", .help = "the node's routing table (written by hermod-syncd edge)"},
	{.name = "listen", .type = HM_OPT_STR, .offset = OFF(listen), .arg = "HOST:PORT",
	 .help = "where clients connect over HTTP (default 0.0.0.0:8080 unless --tls-listen is "
		 "given alone)",
	 .check = hm_opt_check_hostport},
	{.name = "tls-listen", .type = HM_OPT_STR, .offset = OFF(tls_listen), .arg = "HOST:PORT",
	 .help = "where clients connect over HTTPS (certificates from --cert-store)",
	 .check = hm_opt_check_hostport},
	{.name = "cert-store", .type = HM_OPT_STR, .offset = OFF(cert_store), .arg = "PATH",
	 .help = "the node's certificate store, written by hermod-syncd edge (default: the "
		 "table's path with .certs for .table)"},
	DUR("tls-handshake-timeout", tls_handshake_timeout, "10s",
	    "completing a TLS handshake (then the connection is closed)"),
	{.name = "proxy-protocol", .type = HM_OPT_BOOL, .offset = OFF(proxy_protocol),
	 .def = "false",
	 .help = "every client connection (both listeners) starts with a PROXY protocol v1 or v2 "
		 "header, as a load balancer sends it; the client's address comes from it, and a "
		 "connection without a valid one is closed"},
	{.name = "tls-max-handshakes", .type = HM_OPT_INT, .offset = OFF(tls_max_handshakes),
	 .def = "256", .min = 1, .max = 1 << 20, .arg = "N",
	 .help = "TLS handshakes in progress per worker; at the bound a worker stops accepting "
		 "TLS connections until one completes"},
	{.name = "tls-cert-cache", .type = HM_OPT_INT, .offset = OFF(tls_cert_cache),
	 .def = "1024", .min = 1, .max = 1 << 20, .arg = "N",
	 .help = "parsed certificates kept per worker; a handshake for one not kept parses it "
		 "(~1 ms; hermod_tls_cert_cache_lookups_total{result=\"miss\"})"},
	{.name = "workers", .type = HM_OPT_INT, .offset = OFF(workers), .def = "0", .min = 0,
	 .max = 256, .arg = "N", .help = "worker processes (0: one per CPU)"},
	{.name = "metrics", .type = HM_OPT_STR, .offset = OFF(metrics), .arg = "HOST:PORT",
	 .help = "serve Prometheus metrics at http://HOST:PORT/metrics",
	 .check = hm_opt_check_hostport},
	{.name = "affinity-secret-file", .type = HM_OPT_STR, .offset = OFF(affinity_secret_file),
	 .arg = "PATH",
	 .help = "key signing session-affinity cookies, at least 32 bytes (default: the "
		 "cluster's secret, from the table)"},
	{.name = "access-log", .type = HM_OPT_STR, .offset = OFF(access_log), .def = "-",
	 .arg = "PATH", .help = "request log, one line per request (-: stdout)"},
	{.name = "log", .type = HM_OPT_STR, .offset = OFF(log), .arg = "PATH",
	 .help = "diagnostic log (default: stderr)"},
	{.name = "log-level", .type = HM_OPT_ENUM, .offset = OFF(log_level), .def = "info",
	 .choices = log_levels, .arg = "LEVEL", .help = "diagnostic log level"},
	DUR("connect-timeout", connect_timeout, "5s", "connecting to a dyno, per attempt (H19)"),
	DUR("first-byte-timeout", first_byte_timeout, "30s",
	    "from the request reaching the dyno to its response head (H12)"),
	DUR("idle-timeout", idle_timeout, "55s", "silence mid-request or mid-response (H15, H28)"),
	DUR("head-timeout", head_timeout, "60s", "receiving a request head (408)"),
	DUR("keepalive-timeout", keepalive_timeout, "60s", "idle client keep-alive connection"),
	DUR("boot-wait", boot_timeout, "75s", "holding a request for a starting dyno (H20)"),
	DUR("pool-idle-timeout", pool_idle_timeout, "90s", "idle pooled dyno connection"),
	DUR("skip-time", skip_time, "5s", "a worker avoids a dyno that failed to connect"),
	DUR("drain-timeout", drain_timeout, "30s", "in-flight requests on SIGTERM or SIGUSR2"),
	{.name = "attempts", .type = HM_OPT_INT, .offset = OFF(attempts), .def = "10", .min = 1,
	 .max = 100, .arg = "N", .help = "dynos tried per request before H19/H21"},
	{.name = "pool-size", .type = HM_OPT_INT, .offset = OFF(pool_max), .def = "1024", .min = 0,
	 .max = 1000000, .arg = "N", .help = "idle dyno connections kept per worker"},
	{.name = "max-head", .type = HM_OPT_SIZE, .offset = OFF(max_head), .def = "256KiB",
	 .min = 16384, .max = 64 << 20, .arg = "SIZE", .help = "largest request head (else 400)"},
	{.name = "max-response-head", .type = HM_OPT_SIZE, .offset = OFF(max_response_head),
	 .def = "1MiB", .min = 16384, .max = 64 << 20, .arg = "SIZE",
	 .help = "largest response head (else 502 H25)"},
	{.name = "backlog", .type = HM_OPT_INT, .offset = OFF(backlog), .def = "4096", .min = 1,
	 .max = 1 << 20, .arg = "N", .help = "listen(2) backlog"},
	{.name = "max-connections", .type = HM_OPT_INT, .offset = OFF(max_connections),
	 .def = "0", .min = 0, .max = 1 << 26, .arg = "N",
	 .help = "client connections per router, shared evenly by the workers; at the limit a "
		 "worker stops accepting (0: from the file-descriptor limit)"},
	{.name = "h2c", .type = HM_OPT_BOOL, .offset = OFF(h2c),
	 .help = "also serve HTTP/2 with prior knowledge (h2c) on the listener: a connection that "
		 "opens with the HTTP/2 preface speaks HTTP/2, any other HTTP/1.x"},
	{.name = "head-budget", .type = HM_OPT_SIZE, .offset = OFF(head_budget), .def = "32MiB",
	 .min = 1 << 20, .max = 1ll << 34, .arg = "SIZE",
	 .help = "memory per worker for heads larger than 16 KiB (beyond it: 400)"},
	HM_OPT_END,
};
/* clang-format on */

/* ---- the master's state ----------------------------------------------------------------- */

struct wrec {
	pid_t pid;
	uint64_t started; /* mono ms */
	bool retiring;	  /* sent SIGTERM: not replaced when it exits */
};

#define MCLIENTS 16

struct mclient {
	int fd;
	uint64_t deadline;
	size_t in_len, out_len, out_off;
	char in[2048];
	char *out; /* owned */
};

static struct hm__router_config cfg;
static struct hm__router_shm *shm;
static struct wrec *recs; /* indexed like shm->slot */
static uint32_t nworkers_wanted;
static uint32_t pending_spawns; /* replacements to fork */
static uint64_t spawn_at;	/* mono ms: not before (crash-loop brake) */
static uint64_t restarts;
static struct hm__router_counters retired;
static bool stopping;
static uint64_t stop_deadline;
static int sfd = -1, mfd = -1;
static struct mclient mclients[MCLIENTS];
static pid_t master_pid;

/* Rolling replacement (SIGUSR2): old pids still to replace, and the new worker being waited for. */
static pid_t *roll;
static uint32_t nroll;
static int roll_new = -1; /* slot of the new worker, -1: none */
static uint64_t roll_deadline;

static void die2(const char *fmt, const char *a, const char *b)
{
	fprintf(stderr, "hermod-router: ");
	fprintf(stderr, fmt, a, b);
	fputc('\n', stderr);
	exit(2);
}

static int read_secret(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	size_t n;

	if (f == NULL)
		return -errno;
	buf = malloc(65536);
	if (buf == NULL) {
		fclose(f);
		return -ENOMEM;
	}
	n = fread(buf, 1, 65536, f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n < 32) {
		free(buf);
		return -EINVAL; /* a key guessed with less work than the HMAC's */
	}
	cfg.secret = buf;
	cfg.secret_len = n;
	cfg.secret_from_file = true;
	return 0;
}

#define LISTEN_DEFAULT "0.0.0.0:8080"

/* The certificate store beside a table (hm_certstore_path(), the edge's own rule), malloc'd.
 * NULL, logged, if the path is too long or memory is short. */
static char *cert_store_path(const char *table)
{
	char p[PATH_MAX];
	int r = hm_certstore_path(table, p, sizeof(p));
	char *d = r == 0 ? strdup(p) : NULL;

	if (d == NULL)
		hm_log(HM_LOG_ERR, "router",
		       "cannot derive the certificate store's path from %s: %s", table,
		       hm_strerror(r != 0 ? r : -ENOMEM));
	return d;
}

static int listen_on(const char *hostport, int backlog, uint16_t *port_out)
{
	char host[256], portstr[8];
	struct addrinfo hints = {0}, *ai = NULL;
	uint16_t port;
	int fd, one = 1, r;

	if (hm_split_hostport(hostport, host, sizeof(host), &port) != 0)
		return -EINVAL;
	snprintf(portstr, sizeof(portstr), "%u", port);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	r = getaddrinfo(host[0] == '\0' || strcmp(host, "*") == 0 ? NULL : host, portstr, &hints,
			&ai);
	if (r != 0)
		return -EADDRNOTAVAIL;
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		freeaddrinfo(ai);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* Inherited by every accepted socket: no setsockopt per connection. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
		r = -errno;
		close(fd);
		freeaddrinfo(ai);
		return r;
	}
	freeaddrinfo(ai);
	*port_out = port;
	return fd;
}

/* ---- file descriptors --------------------------------------------------------------------- */

/* Descriptors a worker needs besides its connections: stdio, the loop's epoll, eventfd and
 * signal pipe, the listener, log files, the table while it is opened. */
#define FD_RESERVE 64

/*
 * Sizes the workers' connection limits from the file-descriptor limit, which each worker has
 * for itself. The soft limit is raised to the hard one first (as HAProxy does). A client
 * connection may hold a dyno connection, and the pool holds idle ones: each worker accepts at
 * most (NOFILE - FD_RESERVE - pool) / 2 clients by default, with the pool cut to a quarter of
 * what is left if it would take more. --max-connections N is shared evenly instead; a value
 * the limit cannot hold is kept, with a warning (running out is then handled: accepting
 * pauses, a connect is H99).
 */
static void plan_fds(uint32_t nworkers)
{
	struct rlimit rl;
	uint64_t usable, per, pool;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		rl.rlim_cur = rl.rlim_max = 1024;
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t want = rl.rlim_max == RLIM_INFINITY ? (rlim_t)1 << 20 : rl.rlim_max;

		rl.rlim_cur = want;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	usable = rl.rlim_cur > 2 * FD_RESERVE ? (uint64_t)rl.rlim_cur - FD_RESERVE : FD_RESERVE;
	pool = HM_MIN((uint64_t)cfg.pool_max, usable / 4);
	if (cfg.max_connections == 0) {
		cfg.pool_max = (int64_t)pool;
		per = (usable - pool) / 2;
	} else {
		per = ((uint64_t)cfg.max_connections + nworkers - 1) / nworkers;
		if (2 * per + (uint64_t)cfg.pool_max > usable)
			hm_log(
			    HM_LOG_WARNING, "router",
			    "--max-connections %lld needs about %llu file descriptors per worker "
			    "(pool included); the limit is %llu",
			    (long long)cfg.max_connections,
			    (unsigned long long)(2 * per + (uint64_t)cfg.pool_max + FD_RESERVE),
			    (unsigned long long)rl.rlim_cur);
	}
	cfg.worker_max_clients = (uint32_t)HM_MIN(per, UINT32_MAX);
	if (cfg.worker_max_clients == 0)
		cfg.worker_max_clients = 1;
}

/* ---- workers ---------------------------------------------------------------------------- */

/*
 * A slot for a new worker: a free one, else one whose dead worker's ledger no live worker has
 * claimed yet; the new worker then drains that ledger itself before it accepts (shm.h).
 */
static int free_slot(void)
{
	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid == 0 && __atomic_load_n(&shm->slot[i].ledger_state,
							__ATOMIC_ACQUIRE) == HM__LEDGER_OWNED)
			return (int)i;
	for (uint32_t i = 0; i < shm->nslots; i++) {
		uint32_t want = HM__LEDGER_ORPHAN;

		if (recs[i].pid == 0 &&
		    __atomic_compare_exchange_n(&shm->slot[i].ledger_state, &want, HM__LEDGER_OWNED,
						false, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
			return (int)i;
	}
	return -1;
}

/* A new worker's slot: counters, pid, flags and table view cleared; the ledger is empty, or an
 * orphan's that the worker drains. */
static void slot_prepare(struct hm__router_slot *s)
{
	__atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->ready, 0, __ATOMIC_RELAXED);
	memset(&s->table, 0, sizeof(s->table));
	memset(&s->c, 0, sizeof(s->c));
}

/* A worker is gone: its ledger is left for a live worker to subtract from the table (the
 * master never touches the table: a truncated file must not be able to kill it). */
static bool slot_orphan(struct hm__router_slot *s)
{
	if (!hm__router_ledger_pending(s)) {
		memset(s->ledger, 0, sizeof(s->ledger));
		s->ledger_lost = 0;
		__atomic_store_n(&s->ledger_state, HM__LEDGER_OWNED, __ATOMIC_RELEASE);
		return false;
	}
	__atomic_store_n(&s->ledger_state, HM__LEDGER_ORPHAN, __ATOMIC_RELEASE);
	return true;
}

static uint32_t live_workers(bool count_retiring)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid != 0 && (count_retiring || !recs[i].retiring))
			n++;
	return n;
}

static int spawn(void)
{
	int i = free_slot();
	pid_t pid;

	if (i < 0)
		return -ENOSPC;
	slot_prepare(&shm->slot[i]);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != master_pid)
			_exit(0);
		close(sfd);
		if (mfd >= 0)
			close(mfd);
		for (int k = 0; k < MCLIENTS; k++)
			if (mclients[k].fd > 0)
				close(mclients[k].fd);
		__atomic_store_n(&shm->slot[i].pid, (int32_t)getpid(), __ATOMIC_RELAXED);
		hm__router_worker_main(&cfg, shm, (uint32_t)i);
	}
	recs[i].pid = pid;
	recs[i].started = hm_mono_ms();
	recs[i].retiring = false;
	__atomic_store_n(&shm->slot[i].pid, (int32_t)pid, __ATOMIC_RELAXED);
	return i;
}

/* A worker is gone: keep its counters, leave its in-flight ledger to a live worker, free its
 * slot. */
static void reap_slot(uint32_t i, int status)
{
	struct hm__router_slot *s = &shm->slot[i];
	bool retiring = recs[i].retiring, orphan;
	uint64_t lived = hm_mono_ms() - recs[i].started;

	hm__router_counters_add(&retired, &s->c, false);
	memset(&s->c, 0, sizeof(s->c));
	orphan = slot_orphan(s);
	__atomic_store_n(&s->ready, 0, __ATOMIC_RELAXED);
	__atomic_store_n(&s->pid, 0, __ATOMIC_RELAXED);
	if (WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0) || !retiring)
		hm_log(stopping || retiring ? HM_LOG_INFO : HM_LOG_WARNING, "router",
		       "worker %d %s %d after %llu ms%s", (int)recs[i].pid,
		       WIFSIGNALED(status) ? "killed by signal" : "exited with",
		       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status),
		       (unsigned long long)lived,
		       orphan ? ", its in-flight counts left for a live worker to return" : "");
	recs[i].pid = 0;
	if (!stopping && !retiring) {
		pending_spawns++;
		restarts++;
		/* A worker that dies at once would otherwise be re-forked in a tight loop. */
		spawn_at = lived < 100 ? hm_mono_ms() + 500 : 0;
	}
}

static void reap(void)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (uint32_t i = 0; i < shm->nslots; i++)
			if (recs[i].pid == pid) {
				reap_slot(i, status);
				break;
			}
		if (roll_new >= 0 && recs[roll_new].pid == 0)
			roll_new = -1; /* the new worker died before it was ready */
	}
}

static void signal_workers(int sig)
{
	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid != 0)
			kill(recs[i].pid, sig);
}

static void start_stop(void)
{
	if (stopping)
		return;
	stopping = true;
	stop_deadline = hm_mono_ms() + (uint64_t)cfg.drain_timeout + 2000;
	pending_spawns = 0;
	nroll = 0;
	if (cfg.listen_fd >= 0) {
		close(cfg.listen_fd);
		cfg.listen_fd = -1;
	}
	if (cfg.tls_listen_fd >= 0) {
		close(cfg.tls_listen_fd);
		cfg.tls_listen_fd = -1;
	}
	hm_sd_notify("STOPPING=1\nSTATUS=draining");
	hm_log(HM_LOG_NOTICE, "router", "stopping: draining %u workers", live_workers(true));
	signal_workers(SIGTERM);
}

static void start_roll(void)
{
	if (stopping || nroll > 0 || roll_new >= 0)
		return;
	free(roll);
	roll = calloc(shm->nslots, sizeof(*roll));
	if (roll == NULL)
		return;
	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid != 0 && !recs[i].retiring)
			roll[nroll++] = recs[i].pid;
	hm_log(HM_LOG_NOTICE, "router", "replacing %u workers one by one", nroll);
}

/* One step of the rolling replacement: fork a new worker, wait until it accepts, then retire
 * one old worker. */
static void roll_step(void)
{
	uint64_t now = hm_mono_ms();

	if (roll_new >= 0) {
		bool ready = __atomic_load_n(&shm->slot[roll_new].ready, __ATOMIC_ACQUIRE) != 0;

		if (!ready && now < roll_deadline)
			return;
		roll_new = -1;
		while (nroll > 0) {
			pid_t old = roll[--nroll];

			for (uint32_t i = 0; i < shm->nslots; i++) {
				if (recs[i].pid == old && !recs[i].retiring) {
					recs[i].retiring = true;
					kill(old, SIGTERM);
					goto next;
				}
			}
		}
	next:
		if (nroll == 0)
			return;
	}
	if (nroll == 0)
		return;
	roll_new = spawn();
	if (roll_new < 0) {
		hm_log(HM_LOG_ERR, "router", "rolling restart: fork: %s", hm_strerror(roll_new));
		nroll = 0;
		roll_new = -1;
		return;
	}
	roll_deadline = now + 10000;
}

/* ---- /metrics --------------------------------------------------------------------------- */

/* The table's figures for /metrics, as the live workers see it (the master does not map it). */
static void table_metrics(struct hm__router_metrics_extra *x)
{
	const struct hm__router_table_seen *seen[HM__ROUTER_MAX_SLOTS];
	struct hm__router_table_seen t;
	size_t n = 0;
	uint64_t now = hm_wall_ms();

	for (uint32_t i = 0; i < shm->nslots && n < HM__ROUTER_MAX_SLOTS; i++)
		if (recs[i].pid != 0)
			seen[n++] = &shm->slot[i].table;
	hm__router_table_newest(seen, n, &t);
	x->table_present = t.present != 0;
	x->table_version = t.version;
	x->table_age_s = t.present && now > t.commit_ms ? (double)(now - t.commit_ms) / 1000.0 : 0;
}

static void render_metrics(struct mclient *m)
{
	struct hm__router_counters sum = retired;
	struct hm__router_metrics_extra x = {0};
	size_t cap = 65536, n;
	char *body = malloc(cap), head[256];
	int hl;

	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid != 0)
			hm__router_counters_add(&sum, &shm->slot[i].c, true);
	table_metrics(&x);
	x.tls = cfg.tls_listen != NULL;
	x.proxy_protocol = cfg.proxy_protocol;
	x.h2 = cfg.h2c || cfg.tls_listen != NULL;
	for (uint32_t i = 0; i < shm->nslots; i++) {
		int64_t t = __atomic_load_n(&shm->slot[i].cert_soonest, __ATOMIC_RELAXED);
		uint64_t n = __atomic_load_n(&shm->slot[i].certs, __ATOMIC_RELAXED);

		if (recs[i].pid == 0)
			continue;
		if (t > 0 && (x.cert_soonest == 0 || t < x.cert_soonest))
			x.cert_soonest = t;
		x.certs = HM_MAX(x.certs, n);
	}
	x.workers = live_workers(true);
	x.worker_restarts = restarts;
	n = body != NULL ? hm__router_metrics_render(&sum, &x, body, cap) : 0;
	hl = snprintf(head, sizeof(head),
		      "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
		      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		      n > 0 ? "200 OK" : "500 Internal Server Error", n);
	m->out = malloc((size_t)hl + n);
	if (m->out != NULL) {
		memcpy(m->out, head, (size_t)hl);
		if (n > 0)
			memcpy(m->out + hl, body, n);
		m->out_len = (size_t)hl + n;
	}
	free(body);
}

static void mclient_close(struct mclient *m)
{
	close(m->fd);
	free(m->out);
	memset(m, 0, sizeof(*m));
	m->fd = -1;
}

static void mclient_io(struct mclient *m, short revents)
{
	ssize_t r;

	if (m->out == NULL && (revents & POLLIN)) {
		r = read(m->fd, m->in + m->in_len, sizeof(m->in) - 1 - m->in_len);
		if (r <= 0) {
			if (r < 0 && errno == EAGAIN)
				return;
			mclient_close(m);
			return;
		}
		m->in_len += (size_t)r;
		m->in[m->in_len] = '\0';
		if (strstr(m->in, "\r\n\r\n") == NULL && strstr(m->in, "\n\n") == NULL) {
			if (m->in_len == sizeof(m->in) - 1)
				mclient_close(m);
			return;
		}
		render_metrics(m);
		if (m->out == NULL) {
			mclient_close(m);
			return;
		}
	}
	if (m->out != NULL) {
		r = write(m->fd, m->out + m->out_off, m->out_len - m->out_off);
		if (r < 0 && errno != EAGAIN) {
			mclient_close(m);
			return;
		}
		if (r > 0)
			m->out_off += (size_t)r;
		if (m->out_off == m->out_len)
			mclient_close(m);
	}
}

static void metrics_accept(void)
{
	int fd = accept4(mfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MCLIENTS; i++) {
		if (mclients[i].fd < 0) {
			mclients[i].fd = fd;
			mclients[i].deadline = hm_mono_ms() + 5000;
			return;
		}
	}
	close(fd); /* busy: the scraper retries */
}

/* ---- the loop --------------------------------------------------------------------------- */

static void handle_signals(void)
{
	struct signalfd_siginfo si;

	while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap();
			break;
		case SIGTERM:
		case SIGINT:
			start_stop();
			break;
		case SIGHUP:
			if (cfg.log != NULL) {
				int fd =
				    open(cfg.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

				if (fd >= 0) {
					dup2(fd, 2);
					close(fd);
				}
			}
			signal_workers(SIGHUP);
			break;
		case SIGUSR2:
			start_roll();
			break;
		default:
			break;
		}
	}
}

/* Workers that accept connections now. */
static uint32_t ready_workers(void)
{
	uint32_t n = 0;

	for (uint32_t i = 0; i < shm->nslots; i++)
		if (recs[i].pid != 0 && !recs[i].retiring &&
		    __atomic_load_n(&shm->slot[i].ready, __ATOMIC_ACQUIRE) != 0)
			n++;
	return n;
}

/* systemd readiness (Type=notify): READY once every worker accepts, RELOADING around a rolling
 * replacement, STOPPING when draining starts. */
static void notify_state(void)
{
	static bool ready, rolling;
	char msg[128];

	if (stopping)
		return;
	if (!ready && ready_workers() >= nworkers_wanted) {
		ready = true;
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=serving on %s with %u workers",
			 cfg.listen != NULL ? cfg.listen : cfg.tls_listen, nworkers_wanted);
		hm_sd_notify(msg);
	}
	if (!rolling && (nroll > 0 || roll_new >= 0)) {
		rolling = true;
		hm_sd_notify("RELOADING=1\nSTATUS=replacing workers");
	} else if (rolling && nroll == 0 && roll_new < 0) {
		rolling = false;
		hm_sd_notify("READY=1\nSTATUS=workers replaced");
	}
}

static int run(void)
{
	for (;;) {
		struct pollfd pfd[2 + MCLIENTS];
		int n = 0, timeout = 1000, idx[MCLIENTS];
		uint64_t now = hm_mono_ms();

		if (stopping) {
			if (live_workers(true) == 0)
				return 0;
			if (now >= stop_deadline) {
				hm_log(HM_LOG_WARNING, "router",
				       "workers still running: killing them");
				signal_workers(SIGKILL);
				stop_deadline = now + 1000;
			}
		}
		while (!stopping && pending_spawns > 0 && now >= spawn_at) {
			if (spawn() < 0)
				break;
			pending_spawns--;
		}
		if (!stopping && live_workers(false) < nworkers_wanted && pending_spawns == 0 &&
		    nroll == 0 && roll_new < 0)
			pending_spawns = nworkers_wanted - live_workers(false);
		if (!stopping && (nroll > 0 || roll_new >= 0))
			roll_step();
		notify_state();
		if (pending_spawns > 0 || roll_new >= 0 || ready_workers() < nworkers_wanted)
			timeout = 20;
		pfd[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		if (mfd >= 0)
			pfd[n++] = (struct pollfd){.fd = mfd, .events = POLLIN};
		for (int i = 0; i < MCLIENTS; i++) {
			idx[i] = -1;
			if (mclients[i].fd < 0)
				continue;
			if (now >= mclients[i].deadline) {
				mclient_close(&mclients[i]);
				continue;
			}
			idx[i] = n;
			pfd[n++] = (struct pollfd){
			    .fd = mclients[i].fd,
			    .events = mclients[i].out != NULL ? POLLOUT : POLLIN,
			};
		}
		if (poll(pfd, (nfds_t)n, timeout) < 0 && errno != EINTR)
			return 1;
		if (pfd[0].revents & POLLIN)
			handle_signals();
		if (mfd >= 0 && (pfd[1].revents & POLLIN))
			metrics_accept();
		for (int i = 0; i < MCLIENTS; i++)
			if (idx[i] >= 0 && pfd[idx[i]].revents != 0)
				mclient_io(&mclients[i], pfd[idx[i]].revents);
	}
}

int main(int argc, char **argv)
{
	char err[512], **pos = calloc((size_t)argc + 1, sizeof(char *));
	sigset_t set;
	int npos = 0, r;
	uint16_t mport;

	hm_tls_mem_init(); /* before anything uses OpenSSL */
	hm_log_set_ident("hermod-router");
	if (pos == NULL)
		return 1;
	/* Signals wait in the signalfd from the start: one sent as soon as the port accepts must
	 * not find the default action (SIGHUP would kill). */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	r = hm_opts_parse(options, &cfg, argc, argv, pos, &npos, err, sizeof(err));
	if (r == HM_OPTS_HELP) {
		hm_opts_usage(stdout, SYNOPSIS, options);
		free(pos);
		hm_opts_free(options, &cfg);
		return 0;
	}
	if (r != 0)
		die2("%s%s", err, "");
	if (npos > 0)
		die2("unexpected argument '%s'%s (see --help)", pos[0], "");
	free(pos);
	hm_log_set_level((enum hm_log_level)(cfg.log_level + HM_LOG_ERR));
	if (cfg.log != NULL) {
		int fd = open(cfg.log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

		if (fd < 0)
			die2("--log: cannot open %s: %s", cfg.log, strerror(errno));
		dup2(fd, 2);
		close(fd);
	}
	if (cfg.affinity_secret_file != NULL) {
		r = read_secret(cfg.affinity_secret_file);
		if (r != 0)
			die2("--affinity-secret-file: cannot use %s: %s", cfg.affinity_secret_file,
			     r == -EINVAL ? "it holds fewer than 32 bytes" : strerror(-r));
	} else {
		/* Until the table holds the cluster's secret (an origin older than it), cookies
		 * are signed with this router's own random key. */
		cfg.secret = malloc(32);
		cfg.secret_len = 32;
		if (cfg.secret == NULL || hm_random_bytes(cfg.secret, 32) != 0)
			return 1;
	}
	nworkers_wanted =
	    cfg.workers > 0 ? (uint32_t)cfg.workers : (uint32_t)sysconf(_SC_NPROCESSORS_ONLN);
	if (nworkers_wanted == 0)
		nworkers_wanted = 1;

	plan_fds(nworkers_wanted);
	if (cfg.listen == NULL && cfg.tls_listen == NULL &&
	    (cfg.listen = strdup(LISTEN_DEFAULT)) == NULL)
		return 1;
	if (cfg.tls_listen != NULL && cfg.cert_store == NULL &&
	    (cfg.cert_store = cert_store_path(cfg.table)) == NULL)
		return 1;
	cfg.listen_fd = cfg.tls_listen_fd = -1;
	if (cfg.listen != NULL) {
		r = listen_on(cfg.listen, (int)cfg.backlog, &cfg.port);
		if (r < 0) {
			hm_log(HM_LOG_ERR, "router", "cannot listen on %s: %s", cfg.listen,
			       hm_strerror(r));
			return 1;
		}
		cfg.listen_fd = r;
	}
	if (cfg.tls_listen != NULL) {
		r = listen_on(cfg.tls_listen, (int)cfg.backlog, &cfg.tls_port);
		if (r < 0) {
			hm_log(HM_LOG_ERR, "router", "cannot listen on %s: %s", cfg.tls_listen,
			       hm_strerror(r));
			return 1;
		}
		cfg.tls_listen_fd = r;
	}
	if (cfg.metrics != NULL) {
		r = listen_on(cfg.metrics, 64, &mport);
		if (r < 0) {
			hm_log(HM_LOG_ERR, "router", "cannot listen on %s: %s", cfg.metrics,
			       hm_strerror(r));
			return 1;
		}
		mfd = r;
		fcntl(mfd, F_SETFL, fcntl(mfd, F_GETFL) | O_NONBLOCK);
	}
	for (int i = 0; i < MCLIENTS; i++)
		mclients[i].fd = -1;
	r = hm__router_shm_new(&shm, 2 * nworkers_wanted + 2);
	if (r == 0) {
		recs = calloc(shm->nslots, sizeof(*recs));
		r = recs != NULL ? 0 : -ENOMEM;
	}
	if (r != 0) {
		hm_log(HM_LOG_ERR, "router", "start-up: %s", hm_strerror(r));
		return 1;
	}
	hm__router_http_init();
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0)
		return 1;
	master_pid = getpid();
	hm_log(HM_LOG_INFO, "router",
	       "listening on %s%s%s%s with %u workers (%u connections each), table %s%s%s",
	       cfg.listen != NULL ? cfg.listen : "",
	       cfg.listen != NULL && cfg.tls_listen ? ", " : "",
	       cfg.tls_listen != NULL ? "TLS " : "", cfg.tls_listen != NULL ? cfg.tls_listen : "",
	       nworkers_wanted, cfg.worker_max_clients, cfg.table,
	       cfg.tls_listen != NULL ? ", certificates " : "",
	       cfg.tls_listen != NULL ? cfg.cert_store : "");
	pending_spawns = nworkers_wanted;
	r = run();
	hm_log(HM_LOG_INFO, "router", "stopped");
	return r;
}
