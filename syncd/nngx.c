/*
 * nng glue. Each listener's watchdog runs on a thread of its own: probing and re-creating listeners
 * calls nng functions that wait (closing a dialer or a listener), and if one of them ever hung (nng
 * 1.5.2 has such bugs: #1543) it must not take the loop with it. Its only shared state with
 * nng's threads is one atomic per listener: the monotonic time of the last pipe it added,
 * stored by the pipe-notify callback.
 */
#include "syncd/nngx.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/tlscfg.h"

#define WATCH_EVERY_MS	 250
#define PROBE_IDLE_MS	 500 /* probe a listener that added no pipe for this long */
#define PROBE_TIMEOUT_MS 1000
#define PROBE_STRIKES	 2 /* probes in a row whose pipe was never added: re-create */
#define PROBE_SLOW_MAX	 8 /* probes in a row that failed in any way: re-create */

int hm__nng_err(int rv)
{
	switch (rv) {
	case 0:
		return 0;
	case NNG_ETIMEDOUT:
		return -ETIMEDOUT;
	case NNG_ECONNREFUSED:
		return -ECONNREFUSED;
	case NNG_ECLOSED:
	case NNG_ECANCELED:
		return -ECANCELED;
	case NNG_ENOMEM:
		return -ENOMEM;
	case NNG_EINVAL:
	case NNG_EADDRINVAL:
		return -EINVAL;
	case NNG_EMSGSIZE:
		return -EMSGSIZE;
	case NNG_EADDRINUSE:
		return -EADDRINUSE;
	case NNG_EAGAIN:
		return -EAGAIN;
	case NNG_ENOENT:
		return -ENOENT;
	case NNG_ECONNRESET:
	case NNG_ECONNSHUT:
		return -ECONNRESET;
	case NNG_EPERM:
		return -EPERM;
	default:
		return HM_ENNG;
	}
}

int hm__nng_socket_opts(nng_socket s, int sendbuf)
{
	int rv = nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, HM_PROTO_MAX_MSG);

	if (rv == 0 && sendbuf > 0)
		rv = nng_socket_set_int(s, NNG_OPT_SENDBUF, sendbuf);
	return hm__nng_err(rv);
}

/* ---- Stalled pipes ------------------------------------------------------------------------- */

static struct hm__txpipe *txpipe(struct hm__txwatch *w, uint32_t id)
{
	for (size_t i = 0; i < w->n; i++)
		if (w->v[i].id == id)
			return &w->v[i];
	if (w->n == w->cap) {
		size_t cap = w->cap ? w->cap * 2 : 16;
		struct hm__txpipe *v = realloc(w->v, cap * sizeof(*v));

		if (v == NULL)
			return NULL;
		w->v = v;
		w->cap = cap;
	}
	w->v[w->n] = (struct hm__txpipe){.id = id};
	return &w->v[w->n++];
}

int hm__txwatch_run(struct hm__txwatch *w, nng_socket s, uint64_t sent, uint64_t stall_ms)
{
	uint64_t now = hm_mono_ms();
	nng_stat *all, *st;
	int closed = 0;

	if (nng_stats_get(&all) != 0)
		return 0;
	for (size_t i = 0; i < w->n; i++)
		w->v[i].seen = false;
	/* Pipes are top-level statistics: {id, socket, tx_msgs, ...} */
	for (st = nng_stat_child(all); st != NULL; st = nng_stat_next(st)) {
		nng_stat *sock, *id, *tx;
		struct hm__txpipe *p;

		if (strcmp(nng_stat_name(st), "pipe") != 0 ||
		    (sock = nng_stat_find(st, "socket")) == NULL ||
		    nng_stat_value(sock) != (uint64_t)nng_socket_id(s) ||
		    (id = nng_stat_find(st, "id")) == NULL ||
		    (tx = nng_stat_find(st, "tx_msgs")) == NULL)
			continue;
		if ((p = txpipe(w, (uint32_t)nng_stat_value(id))) == NULL)
			break;
		p->seen = true;
		if (p->since_ms == 0 || nng_stat_value(tx) != p->tx) {
			p->tx = nng_stat_value(tx);
			p->since_ms = now;
			p->since_sent = sent;
		} else if (now - p->since_ms >= stall_ms && sent != p->since_sent) {
			nng_pipe pipe = NNG_PIPE_INITIALIZER;

			pipe.id = p->id;
			nng_pipe_close(pipe);
			p->since_ms = now; /* once: the pipe is going */
			closed++;
		}
	}
	nng_stats_free(all);
	for (size_t i = 0; i < w->n;) /* forget pipes that are gone */
		if (!w->v[i].seen)
			w->v[i] = w->v[--w->n];
		else
			i++;
	return closed;
}

void hm__txwatch_fini(struct hm__txwatch *w)
{
	free(w->v);
	w->v = NULL;
	w->n = w->cap = 0;
}

void hm__rep_send(nng_ctx ctx, nng_aio *aio, nng_msg *reply)
{
	nng_aio_set_msg(aio, reply);
	nng_aio_set_timeout(aio, HM__REP_SEND_TIMEOUT_MS);
	nng_ctx_send(ctx, aio);
}

void hm__rep_recv(nng_ctx ctx, nng_aio *aio)
{
	nng_aio_set_timeout(aio, NNG_DURATION_INFINITE);
	nng_ctx_recv(ctx, aio);
}

void hm__rep_sent(nng_aio *aio, int rv, nng_pipe pipe, const char *what)
{
	static _Atomic uint64_t dropped;
	uint64_t n;

	if (rv == 0)
		return;
	nng_msg_free(nng_aio_get_msg(aio));
	nng_aio_set_msg(aio, NULL);
	if (rv != NNG_ETIMEDOUT)
		return;
	nng_pipe_close(pipe);
	n = atomic_fetch_add(&dropped, 1) + 1;
	if (n <= 10 || n % 1000 == 0)
		hm_log(HM_LOG_WARNING, "nng",
		       "%s: closed a connection that does not read its replies (%" PRIu64
		       " so far)",
		       what, n);
}

int hm__nng_dial(nng_socket s, const char *url, nng_tls_config *tls, nng_dialer *out)
{
	nng_dialer d;
	int rv;

	if ((rv = nng_dialer_create(&d, s, url)) != 0)
		return hm__nng_err(rv);
	nng_dialer_set_ms(d, NNG_OPT_RECONNMINT, 100);
	nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT, 2000);
	nng_dialer_set_size(d, NNG_OPT_RECVMAXSZ, HM_PROTO_MAX_MSG);
	nng_dialer_set_bool(d, NNG_OPT_TCP_KEEPALIVE, true); /* ENOTSUP on ipc: fine */
	if (tls != NULL && (rv = nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, tls)) != 0) {
		nng_dialer_close(d);
		return hm__nng_err(rv);
	}
	if ((rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK)) != 0) {
		nng_dialer_close(d);
		return hm__nng_err(rv);
	}
	if (out != NULL)
		*out = d;
	return 0;
}

int hm__nng_url_check(const char *value, char *err, size_t errlen)
{
	nng_url *u;
	int ok;

	if (nng_url_parse(&u, value) != 0) {
		snprintf(err, errlen, "'%s' is not an nng URL (tcp://HOST:PORT or ipc:///PATH)",
			 value);
		return -EINVAL;
	}
	ok = strcmp(u->u_scheme, "tcp") == 0 || strcmp(u->u_scheme, "tcp4") == 0 ||
	     strcmp(u->u_scheme, "tcp6") == 0 || strcmp(u->u_scheme, "ipc") == 0 ||
	     strcmp(u->u_scheme, "tls+tcp") == 0;
	if (ok && strncmp(u->u_scheme, "tcp", 3) == 0 && u->u_port[0] == '\0')
		ok = 0;
	nng_url_free(u);
	if (!ok) {
		snprintf(err, errlen, "'%s': want tcp://HOST:PORT or ipc:///PATH", value);
		return -EINVAL;
	}
	return 0;
}

int hm__nng_urls_parse(const char *list, struct hm__urls *out, char *err, size_t errlen)
{
	const char *p = list;

	memset(out, 0, sizeof(*out));
	for (;;) {
		const char *comma = strchr(p, ',');
		size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
		char *u;

		if (len == 0) {
			snprintf(err, errlen, "'%s': an empty URL in the list", list);
			goto fail;
		}
		if (out->n == HM__URLS_MAX) {
			snprintf(err, errlen, "more than %d URLs in the list", HM__URLS_MAX);
			goto fail;
		}
		u = strndup(p, len);
		hm_require(u != NULL);
		out->v[out->n++] = u;
		if (hm__nng_url_check(u, err, errlen) != 0)
			goto fail;
		for (uint32_t i = 0; i + 1 < out->n; i++)
			if (strcmp(out->v[i], u) == 0) {
				snprintf(err, errlen, "'%s' is in the list twice", u);
				goto fail;
			}
		if (comma == NULL)
			return 0;
		p = comma + 1;
	}
fail:
	hm__nng_urls_free(out);
	return -EINVAL;
}

void hm__nng_urls_free(struct hm__urls *u)
{
	for (uint32_t i = 0; i < u->n; i++)
		free(u->v[i]);
	memset(u, 0, sizeof(*u));
}

int hm__nng_urls_check(const char *value, char *err, size_t errlen)
{
	struct hm__urls u;
	int r = hm__nng_urls_parse(value, &u, err, errlen);

	hm__nng_urls_free(&u);
	return r;
}

static uint64_t stat_of(nng_stat *root, nng_stat *obj, const char *name)
{
	nng_stat *st = obj != NULL ? nng_stat_find(obj, name) : NULL;

	(void)root;
	return st != NULL ? nng_stat_value(st) : 0;
}

uint64_t hm__nng_dialer_stat(nng_dialer d, const char *name)
{
	nng_stat *all;
	uint64_t v;

	if (nng_stats_get(&all) != 0)
		return 0;
	v = stat_of(all, nng_stat_find_dialer(all, d), name);
	nng_stats_free(all);
	return v;
}

/* ---- Address policy --------------------------------------------------------------------------
 */

static bool addr_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/* True if every address host resolves to is a loopback address (a wildcard is not). */
static bool host_loopback(const char *host)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	bool all = true;

	if (host[0] == '\0' || strcmp(host, "*") == 0)
		return false;
	if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL)
		return false;
	for (ai = res; ai != NULL; ai = ai->ai_next)
		all = all && addr_loopback(ai->ai_addr);
	freeaddrinfo(res);
	return all;
}

int hm__nng_url_policy(const char *what, const char *url, bool tls, bool insecure, char *err,
		       size_t errlen)
{
	nng_url *u;
	bool plain_tcp;
	int e = 0;

	if (nng_url_parse(&u, url) != 0) {
		snprintf(err, errlen, "--%s: '%s' is not an nng URL", what, url);
		return -EINVAL;
	}
	plain_tcp = strncmp(u->u_scheme, "tcp", 3) == 0;
	if (hm__tls_url(url) && !tls) {
		snprintf(err, errlen, "--%s: %s needs --tls-cert and --tls-ca (mutual TLS)", what,
			 url);
		e = -EINVAL;
	} else if (plain_tcp && !insecure && !host_loopback(u->u_hostname)) {
		snprintf(err, errlen,
			 "--%s: %s is plaintext on an address that is not loopback: use tls+tcp:// "
			 "(with --tls-cert and --tls-ca), or --insecure-plaintext",
			 what, url);
		e = -EINVAL;
	}
	nng_url_free(u);
	return e;
}

struct deadline {
	unsigned ms;
	char what[64];
};

static _Atomic(const char *) shutdown_step = "";

void hm__shutdown_step(const char *step)
{
	atomic_store(&shutdown_step, step);
}

static void *deadline_main(void *arg)
{
	struct deadline *d = arg;
	struct timespec ts = {d->ms / 1000, (long)(d->ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
	hm_log(HM_LOG_WARNING, "nng",
	       "%s: shutdown stuck in %s for %u ms (nng 1.5.2 bug #1543); everything that matters "
	       "is done, exiting",
	       d->what, atomic_load(&shutdown_step), d->ms);
	_exit(0);
	return NULL;
}

void hm__exit_deadline(unsigned ms, const char *what)
{
	static struct deadline d; /* lives until the process ends */
	static bool armed;
	pthread_attr_t attr;
	pthread_t t;

	if (armed)
		return;
	armed = true;
	d.ms = ms;
	snprintf(d.what, sizeof(d.what), "%s", what);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, deadline_main, &d) != 0)
		hm_log(HM_LOG_WARNING, "nng", "no shutdown deadline thread");
	pthread_attr_destroy(&attr);
}

/* ---- Self-healing listeners --------------------------------------------------------------- */

/*
 * The probe is a plain socket, not an nng one: it connects, sends the SP header of the peer
 * protocol, reads the listener's header, waits for the listener's socket to report the pipe
 * (NNG_PIPE_EV_ADD_POST), and only then closes, so it never closes during a handshake. Keeping
 * nng out of the probe's side also keeps its dialers out of nng's reaper, where closing them
 * hangs now and then in 1.5.2 (#1543).
 */

struct lentry {
	struct lentry *next;
	struct hm__listeners *ls;
	nng_socket sock;
	pthread_mutex_t mu; /* guards l, tls and tls_gen between the watchdog and the loop */
	nng_listener l;
	bool listening;
	nng_tls_config *tls; /* one hold; NULL for plaintext; replaced: hm__tls_config_retire() */
	uint64_t tls_gen;    /* bumped by every hm__listeners_set_tls */
	bool is_tls;	     /* set once: tls is never NULL then (the probe reads this) */
	char *url;	     /* owned */
	char name[24];
	enum hm__peer peer;
	_Atomic uint64_t last_add_ms; /* written by nng threads */
	_Atomic uint32_t lid;	      /* the current listener's id */
	/* where to probe */
	int family; /* AF_INET, AF_INET6, AF_UNIX; 0: not probed */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	uint64_t last_ok;
	int strikes, misses; /* in a row: probes with no pipe added; failed probes */
	pthread_t thread;    /* its watchdog */
	bool thread_started;
#ifdef HM_TEST_HOOKS
	int test_missed, test_slow;
#endif
};

struct hm__listeners {
	bool watchdog, started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;	     /* under mu */
	struct lentry *list; /* fixed once the watchdogs start; each entry is then its thread's */
	_Atomic uint64_t restarts, probes, probe_misses;
};

static void on_pipe(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct lentry *e = arg;
	nng_listener l = nng_pipe_listener(p);

	if (ev == NNG_PIPE_EV_ADD_POST &&
	    (uint32_t)nng_listener_id(l) == atomic_load_explicit(&e->lid, memory_order_relaxed))
		atomic_store_explicit(&e->last_add_ms, hm_mono_ms(), memory_order_release);
}

/* Resolves the listened URL to an address to connect to (a wildcard host means loopback). */
static int probe_target(struct lentry *e)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
	nng_url *u;
	const char *host;
	int rv = -EINVAL;

	if (nng_url_parse(&u, e->url) != 0)
		return -EINVAL;
	if (strcmp(u->u_scheme, "ipc") == 0) {
		struct sockaddr_un *sa = (struct sockaddr_un *)&e->addr;

		if (strlen(u->u_path) < sizeof(sa->sun_path)) {
			sa->sun_family = AF_UNIX;
			memcpy(sa->sun_path, u->u_path, strlen(u->u_path) + 1);
			e->addrlen = sizeof(*sa);
			e->family = AF_UNIX;
			rv = 0;
		}
	} else if (strncmp(u->u_scheme, "tcp", 3) == 0 || strncmp(u->u_scheme, "tls+tcp", 7) == 0) {
		const char *v = u->u_scheme + strlen(u->u_scheme) - 1;

		host = u->u_hostname;
		hints.ai_family = *v == '6' ? AF_INET6 : *v == '4' ? AF_INET : AF_UNSPEC;
		if (host[0] == '\0' || strcmp(host, "*") == 0 || strcmp(host, "0.0.0.0") == 0)
			host = "127.0.0.1";
		else if (strcmp(host, "::") == 0)
			host = "::1";
		if (getaddrinfo(host, u->u_port, &hints, &res) == 0 && res != NULL &&
		    res->ai_addrlen <= sizeof(e->addr)) {
			memcpy(&e->addr, res->ai_addr, res->ai_addrlen);
			e->addrlen = res->ai_addrlen;
			e->family = res->ai_family;
			rv = 0;
		}
		if (res != NULL)
			freeaddrinfo(res);
	} else {
		rv = -ENOTSUP;
	}
	nng_url_free(u);
	return rv;
}

/* Waits for fd to be ready for events until deadline (mono ms). */
static bool wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		uint64_t now = hm_mono_ms();
		struct pollfd p = {.fd = fd, .events = events};
		int r;

		if (now >= deadline)
			return false;
		r = poll(&p, 1, (int)(deadline - now));
		if (r > 0)
			return (p.revents & (events | POLLHUP | POLLERR)) != 0;
		if (r == 0 || errno != EINTR)
			return false;
	}
}

/* What a probe found. */
enum probe_result {
	PROBE_OK,	   /* the listener added the probe's pipe */
	PROBE_NO_PIPE,	   /* the transport finished its handshake, the listener added no pipe */
	PROBE_NO_HANDSHAKE /* no transport handshake in time: a slow moment, or worse */
};

/*
 * Connects, completes the transport's handshake (TLS, then the SP header), then waits for the
 * listener to add the pipe. Each stage has PROBE_TIMEOUT_MS. Bug #1518 breaks only the last
 * stage (the transport still answers), so PROBE_NO_PIPE is its mark; a loaded machine shows as
 * PROBE_NO_HANDSHAKE (a TLS handshake waiting behind others, a starved nng thread).
 */
static enum probe_result probe(struct lentry *e)
{
	static const uint16_t peer_proto[] = {[HM__PEER_REQ] = 0x30, [HM__PEER_SUB] = 0x21};
	uint8_t hdr[8] = {0, 'S', 'P', 0, 0, 0, 0, 0}, got[8];
	uint64_t start = hm_mono_ms(), deadline = start + PROBE_TIMEOUT_MS;
	size_t n = 0;
	int fd, err = 0;
	enum probe_result res = PROBE_NO_HANDSHAKE;
	socklen_t el = sizeof(err);
	struct hm__tls_probe *tp = NULL;

	hdr[4] = (uint8_t)(peer_proto[e->peer] >> 8);
	hdr[5] = (uint8_t)peer_proto[e->peer];
	fd = socket(e->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return PROBE_OK; /* no probe possible: do not blame the listener */
	if (connect(fd, (struct sockaddr *)&e->addr, e->addrlen) != 0 &&
	    (errno != EINPROGRESS || !wait_fd(fd, POLLOUT, deadline) ||
	     getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0))
		goto out;
	if (e->is_tls) {
		if (hm__tls_probe_open(&tp, fd, deadline) != 0 ||
		    hm__tls_probe_write(tp, hdr, sizeof(hdr), deadline) != 0 ||
		    hm__tls_probe_read(tp, got, sizeof(got), deadline) != 0)
			goto out;
		n = sizeof(got);
	} else if (send(fd, hdr, sizeof(hdr), MSG_NOSIGNAL) != (ssize_t)sizeof(hdr)) {
		goto out;
	}
	while (n < sizeof(got)) {
		ssize_t r;

		if (!wait_fd(fd, POLLIN, deadline))
			goto out;
		r = recv(fd, got + n, sizeof(got) - n, 0);
		if (r <= 0 && !(r < 0 && (errno == EINTR || errno == EAGAIN)))
			goto out;
		if (r > 0)
			n += (size_t)r;
	}
	/* The transport finished its handshake; the listener must now hand the pipe over (its
	 * own PROBE_TIMEOUT_MS for that). A broken listener (#1518) never does. */
	res = PROBE_NO_PIPE;
	deadline = hm_mono_ms() + PROBE_TIMEOUT_MS;
	while (hm_mono_ms() < deadline) {
		struct timespec ts = {0, 2 * 1000 * 1000};

		if (atomic_load_explicit(&e->last_add_ms, memory_order_acquire) >= start) {
			res = PROBE_OK;
			break;
		}
		nanosleep(&ts, NULL);
	}
out:
	hm__tls_probe_close(tp);
	close(fd);
	return res;
}

/* The directory of an ipc:// socket (/run/hermod), made for the service's user and group if it
 * is missing. */
static void ipc_parent(const char *url)
{
	char dir[PATH_MAX];
	const char *slash;

	if (strncmp(url, "ipc://", 6) != 0 || (slash = strrchr(url + 6, '/')) == NULL ||
	    slash == url + 6 || (size_t)(slash - (url + 6)) >= sizeof(dir))
		return;
	memcpy(dir, url + 6, (size_t)(slash - (url + 6)));
	dir[slash - (url + 6)] = '\0';
	if (mkdir(dir, 0750) != 0 && errno != EEXIST)
		hm_log(HM_LOG_WARNING, "nng", "cannot create %s: %s", dir, strerror(errno));
}

static int entry_listen(struct lentry *e)
{
	nng_tls_config *tls = NULL;
	nng_listener l;
	uint64_t gen;
	int rv;

	pthread_mutex_lock(&e->mu);
	if ((tls = e->tls) != NULL)
		nng_tls_config_hold(tls);
	gen = e->tls_gen;
	pthread_mutex_unlock(&e->mu);
	if ((rv = nng_listener_create(&l, e->sock, e->url)) != 0)
		goto out;
	nng_listener_set_size(l, NNG_OPT_RECVMAXSZ, HM_PROTO_MAX_MSG);
	/* An ipc:// socket is for the service's user and group (the contract's 0660 for
	 * control); ENOTSUP on other transports. */
	nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0660);
	if ((tls != NULL && (rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls)) != 0) ||
	    (rv = nng_listener_start(l, 0)) != 0) {
		nng_listener_close(l);
		goto out;
	}
	pthread_mutex_lock(&e->mu);
	e->l = l;
	if (e->tls_gen != gen) /* a reload came meanwhile: the listener gets the new one too */
		nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, e->tls);
	pthread_mutex_unlock(&e->mu);
	atomic_store(&e->lid, (uint32_t)nng_listener_id(l));
	e->listening = true;
out:
	if (tls != NULL)
		nng_tls_config_free(tls);
	return rv;
}

static void relisten(struct lentry *e)
{
	int rv;

	if (e->listening) {
		nng_listener_close(e->l);
		e->listening = false;
	}
	if ((rv = entry_listen(e)) != 0) {
		hm_log(HM_LOG_ERR, "nng", "%s: cannot listen again on %s: %s (retrying)", e->name,
		       e->url, nng_strerror(rv));
		return;
	}
	atomic_fetch_add(&e->ls->restarts, 1);
}

/* Test builds: HM_TEST_PROBE_MISSES=N makes the first N probes of each listener find no pipe
 * added (the mark of #1518), HM_TEST_PROBE_SLOW=N the next N find no handshake; neither is made.
 * Returns PROBE_OK when the real probe is to be made. */
static enum probe_result test_probe(struct lentry *e)
{
#ifdef HM_TEST_HOOKS
	const char *v;

	if ((v = getenv("HM_TEST_PROBE_MISSES")) != NULL && e->test_missed < atoi(v)) {
		e->test_missed++;
		return PROBE_NO_PIPE;
	}
	if ((v = getenv("HM_TEST_PROBE_SLOW")) != NULL && e->test_slow < atoi(v)) {
		e->test_slow++;
		return PROBE_NO_HANDSHAKE;
	}
#else
	(void)e;
#endif
	return PROBE_OK;
}

/* One look at one listener: probe it if it has been idle; re-create it once the probes say it is
 * dead (below). */
static void watch_entry(struct lentry *e)
{
	uint64_t now = hm_mono_ms(), last;
	enum probe_result r;

	if (!e->listening) {
		relisten(e);
		e->last_ok = now;
		return;
	}
	last = atomic_load_explicit(&e->last_add_ms, memory_order_acquire);
	if (e->family == 0)
		return;
	if (now - HM_MAX(last, e->last_ok) < PROBE_IDLE_MS) {
		e->strikes = e->misses = 0; /* it added a pipe since: alive */
		return;
	}
	if ((r = test_probe(e)) == PROBE_OK)
		r = probe(e);
	atomic_fetch_add(&e->ls->probes, 1);
	if (r == PROBE_OK) {
		e->last_ok = hm_mono_ms();
		e->strikes = e->misses = 0;
		return;
	}
	atomic_fetch_add(&e->ls->probe_misses, 1);
	e->misses++;
	if (r == PROBE_NO_PIPE)
		e->strikes++;
	/* Re-creating a listener closes its connections: it takes two probes in a row that the
	 * transport answered but that never became a pipe (#1518's mark; a healthy listener adds
	 * one at once), or PROBE_SLOW_MAX that failed in any way (some other way of not
	 * accepting). One slow probe is a loaded machine: a sanitizer build, a TLS handshake
	 * queued behind a crowd of reconnecting edges. */
	if (e->strikes < PROBE_STRIKES && e->misses < PROBE_SLOW_MAX) {
		hm_log(HM_LOG_INFO, "nng", "%s: a probe of %s %s within %d ms; probing again",
		       e->name, e->url,
		       r == PROBE_NO_PIPE ? "was never added as a pipe" : "got no handshake",
		       PROBE_TIMEOUT_MS);
		return;
	}
	hm_log(HM_LOG_WARNING, "nng",
	       "%s: the listener on %s completed no handshake in %d probes in a row (nng bug "
	       "#1518: a peer closed during a handshake); re-creating it",
	       e->name, e->url, e->misses);
	relisten(e);
	e->strikes = e->misses = 0;
	e->last_ok = hm_mono_ms();
}

/* Each listener has a watchdog thread of its own: a dead listener's probes (a second each) do
 * not delay the others'. */
static void *watch_main(void *arg)
{
	struct lentry *e = arg;
	struct hm__listeners *ls = e->ls;

	pthread_mutex_lock(&ls->mu);
	while (!ls->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += WATCH_EVERY_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&ls->cv, &ls->mu, &ts);
		if (ls->stop)
			break;
		pthread_mutex_unlock(&ls->mu);
		watch_entry(e);
		pthread_mutex_lock(&ls->mu);
	}
	pthread_mutex_unlock(&ls->mu);
	return NULL;
}

int hm__listeners_new(struct hm__listeners **out, bool watchdog)
{
	struct hm__listeners *ls = calloc(1, sizeof(*ls));

	if (ls == NULL)
		return -ENOMEM;
	ls->watchdog = watchdog;
	atomic_init(&ls->restarts, 0);
	atomic_init(&ls->probes, 0);
	atomic_init(&ls->probe_misses, 0);
	pthread_mutex_init(&ls->mu, NULL);
	pthread_cond_init(&ls->cv, NULL);
	*out = ls;
	return 0;
}

int hm__listeners_start(struct hm__listeners *ls)
{
	int e;

	if (!ls->watchdog || ls->started)
		return 0;
	ls->started = true;
	for (struct lentry *l = ls->list; l != NULL; l = l->next) {
		if ((e = pthread_create(&l->thread, NULL, watch_main, l)) != 0) {
			hm__listeners_stop(ls);
			return -e;
		}
		l->thread_started = true;
	}
	return 0;
}

int hm__listeners_add(struct hm__listeners *ls, nng_socket s, const char *url, enum hm__peer peer,
		      const char *name, nng_tls_config *tls, char *err, size_t errlen)
{
	struct lentry *e = calloc(1, sizeof(*e));
	int rv;

	if (e == NULL || (e->url = strdup(url)) == NULL) {
		free(e);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pthread_mutex_init(&e->mu, NULL);
	if (tls != NULL) {
		nng_tls_config_hold(tls);
		e->tls = tls;
		e->is_tls = true;
	}
	ipc_parent(url);
	e->ls = ls;
	e->sock = s;
	e->peer = peer;
	snprintf(e->name, sizeof(e->name), "%s", name);
	atomic_init(&e->last_add_ms, 0);
	atomic_init(&e->lid, 0);
	e->last_ok = hm_mono_ms();
	if ((rv = nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, on_pipe, e)) != 0 ||
	    (rv = entry_listen(e)) != 0) {
		snprintf(err, errlen, "cannot listen on %s (%s): %s", url, name, nng_strerror(rv));
		if (e->tls != NULL)
			nng_tls_config_free(e->tls);
		pthread_mutex_destroy(&e->mu);
		free(e->url);
		free(e);
		return hm__nng_err(rv);
	}
	if (ls->watchdog && (rv = probe_target(e)) != 0)
		hm_log(HM_LOG_WARNING, "nng", "%s: %s cannot be probed (%s): no watchdog for it",
		       name, url, hm_strerror(rv));
	e->next = ls->list;
	ls->list = e;
	return 0;
}

void hm__listeners_stats(const struct hm__listeners *ls, struct hm__listener_stats *out)
{
	struct hm__listeners *m = (struct hm__listeners *)ls;

	out->restarts = atomic_load(&m->restarts);
	out->probes = atomic_load(&m->probes);
	out->probe_misses = atomic_load(&m->probe_misses);
}

int hm__listeners_set_tls(struct hm__listeners *ls, nng_socket s, nng_tls_config *tls)
{
	int rv = 0;

	for (struct lentry *e = ls->list; e != NULL; e = e->next) {
		nng_tls_config *old;

		if (nng_socket_id(e->sock) != nng_socket_id(s) || !e->is_tls)
			continue;
		nng_tls_config_hold(tls);
		pthread_mutex_lock(&e->mu);
		old = e->tls;
		e->tls = tls;
		e->tls_gen++;
		/* A listener the watchdog is closing just refuses the option: its successor takes
		 * the new configuration in entry_listen(). */
		rv = nng_listener_set_ptr(e->l, NNG_OPT_TLS_CONFIG, tls);
		pthread_mutex_unlock(&e->mu);
		hm__tls_config_retire(old); /* nng may be about to take it (tlscfg.h) */
		/* nng 1.5.2 makes each listener's next TLS connection, with the configuration of
		 * the moment, as soon as the previous one is accepted: one connection after a
		 * reload would still present the old certificate. A probe uses that one up now
		 * (a few ms; at most PROBE_TIMEOUT_MS if the listener is broken). */
		if (e->family != 0 && probe(e) != PROBE_OK)
			hm_log(HM_LOG_WARNING, "nng",
			       "%s: no probe went through after the reload; the next connection "
			       "may still get the previous certificate",
			       e->name);
	}
	return rv == NNG_ECLOSED || rv == NNG_ENOENT ? 0 : hm__nng_err(rv);
}

uint64_t hm__listeners_tls_refused(struct hm__listeners *ls)
{
	nng_stat *all;
	uint64_t n = 0;

	if (ls == NULL || nng_stats_get(&all) != 0)
		return 0;
	for (struct lentry *e = ls->list; e != NULL; e = e->next) {
		nng_listener l;

		if (!e->is_tls)
			continue;
		pthread_mutex_lock(&e->mu);
		l = e->l;
		pthread_mutex_unlock(&e->mu);
		n += stat_of(all, nng_stat_find_listener(all, l), "auth");
	}
	nng_stats_free(all);
	return n;
}

void hm__listeners_stop(struct hm__listeners *ls)
{
	if (ls == NULL)
		return;
	pthread_mutex_lock(&ls->mu);
	if (ls->stop) {
		pthread_mutex_unlock(&ls->mu);
		return;
	}
	ls->stop = true;
	pthread_cond_broadcast(&ls->cv);
	pthread_mutex_unlock(&ls->mu);
	hm__shutdown_step("stopping the listener watchdog");
	for (struct lentry *e = ls->list; e != NULL; e = e->next) {
		if (e->thread_started)
			pthread_join(e->thread, NULL);
		e->thread_started = false;
	}
	ls->started = false;
}

void hm__listeners_free(struct hm__listeners *ls)
{
	struct lentry *e, *next;

	if (ls == NULL)
		return;
	for (e = ls->list; e != NULL; e = next) {
		next = e->next;
		if (e->tls != NULL)
			nng_tls_config_free(e->tls);
		pthread_mutex_destroy(&e->mu);
		free(e->url);
		free(e);
	}
	pthread_mutex_destroy(&ls->mu);
	pthread_cond_destroy(&ls->cv);
	free(ls);
}
