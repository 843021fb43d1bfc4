/*
 * hermodctl: the control-plane and admin client (../shared/CONTRACT.md, docs/sync.md).
 *
 * Control commands build changes, check them locally (so nothing malformed is ever sent), and
 * send them to the origin's control socket under one random request id, in parts of at most
 * HM_PROTO_MAX_CHANGES changes and HM__CTL_PART_BYTES; the origin answers STAGED to every part
 * but the last, and ACK (durable at (epoch, seq)) or ERROR to the last. nng's REQ resends a
 * request after a reconnect, and a part with no answer for RESEND_AFTER_MS is sent again on a
 * new connection (nng 1.5.2's TLS can leave a connection that carries nothing any more looking
 * alive for good) — to the next origin when --control names several; the request id makes all
 * of these harmless.
 *
 * `apply` reads its file twice, one change at a time: the first pass checks every change and
 * decides the parts, the second sends them. At most one part is in memory.
 *
 * Admin commands write one line to the admin socket and read one JSON line back; --json copies
 * it to stdout as it arrives, otherwise it is printed as tables (dump and certs are scanned
 * element by element, never held whole).
 *
 * Exit status: 0 done, 1 rejected, 2 usage, 3 cannot reach.
 */
#include <cJSON.h>
#include <errno.h>
#include <execinfo.h>
#include <stdarg.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/batchfile.h"
#include "common/errors.h"
#include "common/model.h"
#include "common/opts.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/buf.h"
#include "syncd/certcheck.h"
#include "syncd/jsonw.h"
#include "syncd/nngx.h"
#include "syncd/tlscfg.h"
#include "syncd/wire.h"

#define EXIT_OK		 0
#define EXIT_REJECTED	 1
#define EXIT_USAGE	 2
#define EXIT_UNREACHABLE 3

struct cfg {
	char *control;
	char *admin;
	char *tls_cert, *tls_ca;
	bool insecure_plaintext;
	bool json;
	int64_t timeout;
	int64_t reply_timeout;
	int maintenance, affinity, balance, state; /* -1: not given */
};

static const char *const on_off[] = {"off", "on", NULL};
static const char *const balances[] = {"random", "least-conn", NULL};
static const char *const states[] = {"up", "starting", "crashed", "down", NULL};

static int check_urls(const char *value, char *err, size_t errlen)
{
	return hm__nng_urls_check(value, err, errlen);
}

static const struct hm_opt options[] = {
    {.name = "control",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, control),
     .def = "ipc:///run/hermod/control.sock",
     .env = "HERMOD_CONTROL",
     .arg = "URL[,URL...]",
     .check = check_urls,
     .help = "the origins' control sockets, tried in this order ($HERMOD_CONTROL)"},
    {.name = "tls-cert",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, tls_cert),
     .env = "HERMOD_TLS_CERT",
     .arg = "FILE",
     .help = "PEM: a control-plane certificate chain and its key, for tls+tcp:// "
	     "($HERMOD_TLS_CERT)"},
    {.name = "tls-ca",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, tls_ca),
     .env = "HERMOD_TLS_CA",
     .arg = "FILE",
     .help = "PEM: the CA the origin's certificate chains to ($HERMOD_TLS_CA)"},
    {.name = "insecure-plaintext",
     .type = HM_OPT_BOOL,
     .offset = offsetof(struct cfg, insecure_plaintext),
     .def = "false",
     .help = "allow a plaintext tcp:// control URL that is not loopback"},
    {.name = "admin",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, admin),
     .def = "/run/hermod/edge.sock",
     .env = "HERMOD_ADMIN",
     .arg = "PATH",
     .help = "a syncd's admin socket, for status, lookup and dump ($HERMOD_ADMIN)"},
    {.name = "json",
     .type = HM_OPT_BOOL,
     .offset = offsetof(struct cfg, json),
     .def = "false",
     .help = "print one JSON object instead of text"},
    {.name = "timeout",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct cfg, timeout),
     .def = "5s",
     .min = 1,
     .max = 3600000,
     .arg = "DURATION",
     .help = "how long to try to reach the origin or the admin socket"},
    {.name = "reply-timeout",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct cfg, reply_timeout),
     .def = "60s",
     .min = 1,
     .max = 3600000,
     .arg = "DURATION",
     .help = "how long to wait for the origin's answer once connected"},
    {.name = "maintenance",
     .type = HM_OPT_ENUM,
     .offset = offsetof(struct cfg, maintenance),
     .choices = on_off,
     .arg = "on|off",
     .help = "app put: maintenance mode (default off)"},
    {.name = "affinity",
     .type = HM_OPT_ENUM,
     .offset = offsetof(struct cfg, affinity),
     .choices = on_off,
     .arg = "on|off",
     .help = "app put: session affinity (default off)"},
    {.name = "balance",
     .type = HM_OPT_ENUM,
     .offset = offsetof(struct cfg, balance),
     .choices = balances,
     .arg = "random|least-conn",
     .help = "app put: how dynos are picked (default random)"},
    {.name = "state",
     .type = HM_OPT_ENUM,
     .offset = offsetof(struct cfg, state),
     .choices = states,
     .arg = "up|starting|crashed|down",
     .help = "dyno put: state (default up)"},
    HM_OPT_END,
};

static const char synopsis[] =
    "hermodctl [--control URL[,URL...]] [--tls-cert FILE --tls-ca FILE] [--json] app put NAME "
    "[--maintenance on|off] [--affinity on|off] "
    "[--balance random|least-conn]\n"
    "       hermodctl [--control URL[,URL...]] app rm NAME\n"
    "       hermodctl [--control URL[,URL...]] domain put HOSTNAME APP | domain rm HOSTNAME\n"
    "       hermodctl [--control URL[,URL...]] dyno put APP DYNO HOST:PORT [--state "
    "up|starting|crashed|down]"
    "\n"
    "       hermodctl [--control URL[,URL...]] dyno rm APP DYNO\n"
    "       hermodctl [--control URL[,URL...]] cert put NAME CERT.pem KEY.pem | cert rm NAME\n"
    "       hermodctl [--control URL[,URL...]] apply FILE|-\n"
    "       hermodctl [--admin PATH] [--json] status | lookup HOST | dump | certs";

static struct cfg cfg;

/* ---- Output: nothing a server, a file or an argument holds may drive the terminal -------- */

/*
 * Writes s[0..n) to f with every control character (hm_ctl_scan's set: C0, DEL, C1 in UTF-8)
 * written as \xNN, or as \u00NN where json (which keeps JSON text valid).
 */
static void put_esc(FILE *f, const char *s, size_t n, bool json)
{
	size_t i = 0;

	while (i < n) {
		long k = hm_ctl_scan(s + i, n - i);
		size_t run = k < 0 ? n - i : (size_t)k;
		unsigned c;

		fwrite(s + i, 1, run, f);
		i += run;
		if (i == n)
			break;
		c = (unsigned char)s[i];
		if (c == 0xc2) /* a C1 control: its second byte is the code point */
			c = (unsigned char)s[++i];
		fprintf(f, json ? "\\u%04x" : "\\x%02x", c);
		i++;
	}
}

/* printf into a buffer, then put_esc: every message hermodctl writes goes through this. */
static void vprint_esc(FILE *f, const char *fmt, va_list ap)
{
	char buf[4096];
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	size_t fl = strlen(fmt);
	bool nl = fl > 0 && fmt[fl - 1] == '\n';
	size_t len;

	if (n < 0)
		return;
	len = HM_MIN((size_t)n, sizeof(buf) - 1);
	/* The line's own end is the format's; any other newline came from an argument. A line
	 * cut at the buffer's size (a certificate with a hundred SANs) still ends. */
	if (nl && len > 0 && buf[len - 1] == '\n')
		len--;
	put_esc(f, buf, len, false);
	if (nl)
		fputc('\n', f);
}

static void print_esc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void print_esc(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprint_esc(stdout, fmt, ap);
	va_end(ap);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "hermodctl: ");
	va_start(ap, fmt);
	vprint_esc(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (see hermodctl --help)\n");
	return EXIT_USAGE;
}

static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(int code, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "hermodctl: ");
	va_start(ap, fmt);
	vprint_esc(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	return code;
}

/* Prints a JSON object built by fn to stdout (for --json). */
static void print_json(struct hm__buf *b)
{
	put_esc(stdout, b->data, b->len, true);
	putchar('\n');
	hm__buf_fini(b);
}

/* ---- The control socket ------------------------------------------------------------------ */

/*
 * --control may name several origins (URL,URL...: origins sharing one store). hermodctl talks to
 * one at a time, the first it can reach in the list's order, and moves to the next when the
 * one it uses cannot be reached within its share of --timeout (at once if the connection is
 * refused), when the connection drops while a part waits for its answer (the origin died
 * mid-request), or when a part has had no answer for RESEND_AFTER_MS. Every part it sends again,
 * wherever, carries the same request id, which every origin of the store answers from its
 * request cache once the request is committed: a request is never applied twice.
 */
static struct hm__urls ctl_urls;

static atomic_int ctl_pipes;

static void ctl_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	(void)p;
	(void)arg;
	atomic_fetch_add(&ctl_pipes, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1);
}

/* A part unanswered this long is sent again, on a new connection (to the next origin). */
#define RESEND_AFTER_MS 5000
/* With several origins, the least time one gets to be reached before the next is tried. */
#define CONNECT_SLICE_MS 1000

struct client {
	nng_socket s;
	nng_dialer d;
	bool dialed;
	uint32_t cur;	     /* ctl_urls.v[cur] is dialed */
	struct hm__tls *tls; /* one hold while open; NULL for plaintext */
	bool open;
	nng_aio *aio;	      /* the receive of an answer */
	atomic_bool aio_done; /* set by its callback */
	struct hm_proto_decoder *dec;
	uint8_t req_id[16];
};

static const char *cur_url(const struct client *c)
{
	return ctl_urls.v[c->cur];
}

/* The contract's rules for every control URL, then the certificates: EXIT_OK or EXIT_USAGE. */
static int control_tls(struct hm__tls **tls)
{
	char err[512];
	bool any = false;

	*tls = NULL;
	if ((cfg.tls_cert == NULL) != (cfg.tls_ca == NULL))
		return usage_error("--tls-cert and --tls-ca go together");
	for (uint32_t i = 0; i < ctl_urls.n; i++) {
		if (hm__nng_url_policy("control", ctl_urls.v[i], cfg.tls_cert != NULL,
				       cfg.insecure_plaintext, err, sizeof(err)) != 0)
			return usage_error("%s", err);
		any = any || hm__tls_url(ctl_urls.v[i]);
	}
	if (!any)
		return EXIT_OK;
	if (hm__tls_load(tls, cfg.tls_cert, cfg.tls_ca, NULL, err, sizeof(err)) != 0)
		return usage_error("%s", err);
	return EXIT_OK;
}

/* Dials ctl_urls.v[c->cur] (closing the previous dialer and its connection). */
static int dial_cur(struct client *c)
{
	nng_tls_config *tls = NULL;
	bool named;
	int rv;

	if (c->dialed)
		nng_dialer_close(c->d);
	c->dialed = false;
	if (hm__tls_url(cur_url(c)) &&
	    (rv = hm__tls_dialer_config(c->tls, cur_url(c), &tls, &named)) != 0)
		return fail(EXIT_USAGE, "cannot configure TLS for %s: %s", cur_url(c),
			    hm_strerror(rv));
	rv = hm__nng_dial(c->s, cur_url(c), tls, &c->d);
	if (tls != NULL)
		nng_tls_config_free(tls);
	if (rv != 0)
		return fail(EXIT_USAGE, "cannot dial %s: %s", cur_url(c), hm_strerror(rv));
	c->dialed = true;
	return EXIT_OK;
}

/* Connection attempts of the current dialer that failed (refused, timed out, other). */
static uint64_t connect_failures(const struct client *c)
{
	return hm__nng_dialer_stat(c->d, "refused") + hm__nng_dialer_stat(c->d, "timeout") +
	       hm__nng_dialer_stat(c->d, "other");
}

/*
 * Reaches an origin, starting with the one dialed: EXIT_OK once the socket has a connection, or
 * EXIT_UNREACHABLE once deadline passes (or at once when the only origin refused the TLS
 * handshake: waiting will not make it succeed). With several origins, each gets a slice of the
 * time and is left for the next as soon as its connection fails.
 */
static int await_pipe(struct client *c, uint64_t deadline)
{
	uint64_t start = hm_mono_ms(), next_check = 0;
	uint64_t slice = ctl_urls.n == 1 ? UINT64_MAX
					 : HM_MAX((uint64_t)CONNECT_SLICE_MS,
						  (uint64_t)cfg.timeout / ctl_urls.n);
	int code;

	while (atomic_load(&ctl_pipes) <= 0) {
		uint64_t now = hm_mono_ms();
		bool next = now - start >= slice;

		if (now >= deadline)
			return fail(EXIT_UNREACHABLE,
				    "cannot reach the origin at %s within %" PRId64
				    " ms (is hermod-syncd origin running?)",
				    cfg.control, cfg.timeout);
		if (now >= next_check && !next) {
			next_check = now + 50;
			if (c->tls != NULL && hm__nng_dialer_stat(c->d, "auth") > 0) {
				if (ctl_urls.n == 1)
					return fail(
					    EXIT_UNREACHABLE,
					    "the TLS handshake with the origin at %s "
					    "failed: check that --tls-cert chains to the "
					    "origin's --control-ca, that --tls-ca is the CA "
					    "of the origin's certificate, that both are "
					    "valid now, and that the URL names the origin",
					    cur_url(c));
				fprintf(stderr, "hermodctl: the TLS handshake with %s failed\n",
					cur_url(c));
				next = true;
			} else if (ctl_urls.n > 1 && connect_failures(c) > 0) {
				next = true;
			}
		}
		if (next) {
			c->cur = (c->cur + 1) % ctl_urls.n;
			if ((code = dial_cur(c)) != EXIT_OK)
				return code;
			start = hm_mono_ms();
			next_check = start + 50;
			continue;
		}
		struct timespec ts = {0, 5 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
	return EXIT_OK;
}

/*
 * A watchdog over each step that waits on libnng: reaching an origin, one part's answer,
 * closing. hermodctl's own waits are bounded by --timeout and --reply-timeout, but a wait inside
 * libnng 1.5.2 that never ends (a dialer's close or a send whose expiry does not fire; seen once,
 * in CI under heavy load: hermodctl still running 90 s past its --reply-timeout) would hang the
 * script that runs it forever. Past its step's budget and WATCHDOG_SLACK_MS, hermodctl says which
 * step was stuck, prints the stack of its main thread (the one that waits: the timer's signal
 * goes to it, not to one of libnng's threads), and exits EXIT_UNREACHABLE: the change may or may
 * not have been applied, as when any answer is lost (the request id makes sending it again safe).
 */
#define WATCHDOG_SLACK_MS 10000
#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid /* Linux; glibc does not name it */
#endif

static timer_t wd_timer;
static const char *volatile step_name = "";

static void on_watchdog(int sig)
{
	static const char a[] = "hermodctl: stuck in libnng while ",
			  b[] = " (past --timeout and --reply-timeout): giving up; the change may "
				"or may not have been applied; where it waited:\n";
	const char *what = step_name;
	void *frames[48];
	int n = backtrace(frames, 48);

	(void)sig;
	(void)!write(STDERR_FILENO, a, sizeof(a) - 1);
	(void)!write(STDERR_FILENO, what, strlen(what));
	(void)!write(STDERR_FILENO, b, sizeof(b) - 1);
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
	_exit(EXIT_UNREACHABLE);
}

/* The timer (not armed) whose expiry is SIGALRM to this thread; backtrace() loaded now, so that
 * the handler does not load it. */
static void watchdog_init(void)
{
	struct sigevent ev;
	void *frame;

	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_THREAD_ID;
	ev.sigev_signo = SIGALRM;
	ev.sigev_notify_thread_id = gettid();
	signal(SIGALRM, on_watchdog);
	hm_require(timer_create(CLOCK_MONOTONIC, &ev, &wd_timer) == 0);
	(void)backtrace(&frame, 1);
}

/* Arms the watchdog for the step named what, budget_ms (plus the slack) from now; 0 with what
 * NULL disarms it. */
static void watchdog(const char *what, uint64_t budget_ms)
{
	struct itimerspec it = {{0, 0}, {0, 0}};

	if (what != NULL) {
		uint64_t ms = HM_MIN(budget_ms, (uint64_t)INT32_MAX * 1000) + WATCHDOG_SLACK_MS;

		step_name = what;
		it.it_value.tv_sec = (time_t)(ms / 1000);
		it.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
	}
	hm_require(timer_settime(wd_timer, 0, &it, NULL) == 0);
}

/* The budget of one part's exchange: answer_of's --reply-timeout, and the last redial's waits
 * (the old connection's end, the new one, the send: --timeout each). */
static uint64_t exchange_budget(void)
{
	return (uint64_t)cfg.reply_timeout + 3 * (uint64_t)cfg.timeout;
}

static void recv_done(void *arg)
{
	struct client *c = arg;

	atomic_store(&c->aio_done, true);
}

static int client_open(struct client *c)
{
	int rv;

	if ((rv = control_tls(&c->tls)) != EXIT_OK)
		return rv;
	watchdog("reaching an origin", (uint64_t)cfg.timeout);
	if ((rv = nng_req0_open(&c->s)) != 0)
		return fail(EXIT_UNREACHABLE, "cannot open a socket: %s", nng_strerror(rv));
	c->open = true;
	hm__nng_socket_opts(c->s, 0);
	nng_socket_set_ms(c->s, NNG_OPT_SENDTIMEO, (nng_duration)cfg.timeout);
	nng_pipe_notify(c->s, NNG_PIPE_EV_ADD_POST, ctl_pipe_cb, NULL);
	nng_pipe_notify(c->s, NNG_PIPE_EV_REM_POST, ctl_pipe_cb, NULL);
	hm_require(nng_aio_alloc(&c->aio, recv_done, c) == 0);
	if ((rv = dial_cur(c)) != EXIT_OK)
		return rv;
	if ((rv = await_pipe(c, hm_mono_ms() + (uint64_t)cfg.timeout)) != EXIT_OK)
		return rv;
	hm_require(hm_proto_decoder_new(&c->dec) == 0);
	hm_random_bytes(c->req_id, sizeof(c->req_id));
	return EXIT_OK;
}

/* Closes the connection (and the dialer: nng closes its pipes with it) and dials again: the
 * next origin if there are several. */
static int redial(struct client *c)
{
	uint64_t deadline = hm_mono_ms() + (uint64_t)cfg.timeout;
	int rv;

	/* nng removes the closed dialer's connection asynchronously: until it is gone, the socket
	 * would send the request on it again (to the origin it is leaving). */
	if (c->dialed)
		nng_dialer_close(c->d);
	c->dialed = false;
	while (atomic_load(&ctl_pipes) > 0 && hm_mono_ms() < deadline) {
		struct timespec ts = {0, 1000 * 1000};

		nanosleep(&ts, NULL);
	}
	c->cur = (c->cur + 1) % ctl_urls.n;
	if ((rv = dial_cur(c)) != EXIT_OK)
		return rv;
	return await_pipe(c, hm_mono_ms() + (uint64_t)cfg.timeout);
}

static void client_close(struct client *c)
{
	watchdog("closing the connection", 0);
	if (c->aio != NULL) {
		nng_aio_stop(c->aio);
		nng_aio_free(c->aio);
	}
	if (c->open)
		nng_close(c->s);
	hm__tls_unref(c->tls);
	hm_proto_decoder_free(c->dec);
	watchdog(NULL, 0);
}

struct answer {
	uint8_t status;
	uint64_t epoch, seq;
	int32_t code;
	uint32_t index;
	char reason[HM_PROTO_MAX_REASON + 1];
};

/* Sends one part (the message is copied: pb may be reused at once). */
static int send_part(struct client *c, const struct hm_pbuf *pb)
{
	nng_msg *m;
	int rv;

	hm_require(nng_msg_alloc(&m, pb->len) == 0);
	memcpy(nng_msg_body(m), pb->data, pb->len);
	if ((rv = nng_sendmsg(c->s, m, 0)) != 0) {
		nng_msg_free(m);
		return fail(EXIT_UNREACHABLE, "cannot send to the origin at %s: %s", cur_url(c),
			    nng_strerror(rv));
	}
	return EXIT_OK;
}

enum wait_end { ANSWERED, LATE, LOST };

/* Waits up to wait_ms for a message on c->s: ANSWERED (*rep set), LATE, or LOST: with several
 * origins, the connection dropped (the origin died mid-request: the next one is tried). Returns
 * EXIT_OK or an exit code. A receive is never timed out by nng, which would abandon the request
 * (nng's REQ treats a cancelled receive so); it is cancelled only when we move on. */
static int await_msg(struct client *c, uint64_t wait_ms, nng_msg **rep, enum wait_end *end)
{
	uint64_t until = hm_mono_ms() + wait_ms;
	int rv;

	atomic_store(&c->aio_done, false);
	nng_recv_aio(c->s, c->aio);
	*end = ANSWERED;
	while (!atomic_load(&c->aio_done)) {
		struct timespec ts = {0, 2 * 1000 * 1000};

		if (hm_mono_ms() >= until) {
			*end = LATE;
		} else if (ctl_urls.n > 1 && atomic_load(&ctl_pipes) <= 0) {
			*end = LOST;
		} else {
			nanosleep(&ts, NULL);
			continue;
		}
		nng_aio_cancel(c->aio);
		nng_aio_wait(c->aio);
		if (nng_aio_result(c->aio) == 0) {
			*end = ANSWERED; /* it came as we gave up */
			break;
		}
		return EXIT_OK;
	}
	if ((rv = nng_aio_result(c->aio)) != 0)
		return fail(EXIT_UNREACHABLE,
			    "no answer from the origin at %s (%s): the change may or may not have "
			    "been applied",
			    cur_url(c), nng_strerror(rv));
	*rep = nng_aio_get_msg(c->aio);
	return EXIT_OK;
}

/* Waits up to wait_ms for the answer to the part sent last. Returns EXIT_OK with *a filled
 * (*end ANSWERED), or with *end LATE or LOST; or an exit code. */
static int await_answer(struct client *c, struct answer *a, uint64_t wait_ms, enum wait_end *end)
{
	nng_msg *rep = NULL;
	struct hm_msg r;
	int rv, code;

	for (;;) {
		if ((code = await_msg(c, wait_ms, &rep, end)) != EXIT_OK || *end != ANSWERED)
			return code;
		rv = hm_proto_decode(c->dec, nng_msg_body(rep), nng_msg_len(rep), &r);
		if (rv != 0 || r.type != HM_MSG_CTL_REP) {
			nng_msg_free(rep);
			return fail(EXIT_UNREACHABLE, "the origin at %s sent an invalid answer: %s",
				    cur_url(c), rv != 0 ? hm_strerror(rv) : "not a control reply");
		}
		if (memcmp(r.ctl_rep.req_id, c->req_id, 16) == 0 ||
		    r.ctl_rep.status == HM_CTL_ERROR)
			break;
		nng_msg_free(rep); /* an answer to something else: keep waiting */
	}
	a->status = r.ctl_rep.status;
	a->epoch = r.ctl_rep.epoch;
	a->seq = r.ctl_rep.seq;
	a->code = r.ctl_rep.code;
	a->index = r.ctl_rep.index;
	{
		/* Raw bytes from the network, escaped wherever they are printed; a NUL would end
		 * the string early, so it becomes a space here. */
		uint32_t n = HM_MIN(r.ctl_rep.reason_len, (uint32_t)HM_PROTO_MAX_REASON);

		for (uint32_t i = 0; i < n; i++)
			a->reason[i] = r.ctl_rep.reason[i] != '\0' ? r.ctl_rep.reason[i] : ' ';
		a->reason[n] = '\0';
	}
	nng_msg_free(rep);
	return EXIT_OK;
}

/* Waits for the answer to pb (just sent), up to --reply-timeout: after RESEND_AFTER_MS without
 * one, or at once when the connection drops with several origins, pb is sent again on a new
 * connection, to the next origin (an origin answers a request id it has committed as it
 * answered it first, or once that batch is done). An origin that answers it cannot commit now
 * (HM_ESTORE: cut off from etcd, or etcd without a leader; nothing was applied) is left for the
 * next one too; when every origin of the list has answered so, the round starts again after a
 * pause (100 ms doubling to 1 s), until --reply-timeout, after which that answer is reported. */
static int answer_of(struct client *c, const struct hm_pbuf *pb, struct answer *a)
{
	uint64_t end = hm_mono_ms() + (uint64_t)cfg.reply_timeout, pause_ms = 100;
	unsigned sent = 1;
	uint32_t cannot = 0; /* origins (bits of ctl_urls) that answered HM_ESTORE this round */
	uint32_t told = 0;   /* those said on stderr */

	for (;;) {
		uint64_t now = hm_mono_ms();
		enum wait_end why;
		int code;

		code = await_answer(c, a, HM_MIN(RESEND_AFTER_MS, end > now ? end - now : 1), &why);
		if (code != EXIT_OK)
			return code;
		if (why == ANSWERED) {
			uint32_t me = 1u << c->cur, all = (1u << ctl_urls.n) - 1;

			if (a->status != HM_CTL_ERROR || a->code != HM_ESTORE)
				return code;
			if (hm_mono_ms() + pause_ms >= end)
				return code;
			if (!(told & me)) {
				fprintf(stderr, "hermodctl: the origin at %s cannot commit now (",
					cur_url(c));
				put_esc(stderr, a->reason, strlen(a->reason), false);
				fprintf(stderr, "); %s\n",
					ctl_urls.n > 1 ? "sending the request to the next origin"
						       : "sending the request again");
				told |= me;
			}
			if ((cannot & me) || (cannot | me) == all) {
				/* A full round (or the next origin was not reached in between). */
				struct timespec ts = {(time_t)(pause_ms / 1000),
						      (long)(pause_ms % 1000) * 1000000L};

				nanosleep(&ts, NULL);
				pause_ms = HM_MIN(pause_ms * 2, (uint64_t)1000);
				cannot = 0;
			} else {
				cannot |= me;
			}
		} else if (hm_mono_ms() >= end)
			return fail(EXIT_UNREACHABLE,
				    "no answer from the origin at %s within %" PRId64
				    " ms (sent %u times, on %u connections): the change may or may "
				    "not have been applied",
				    cfg.control, cfg.reply_timeout, sent, sent);
		else if (why == LOST)
			fprintf(stderr,
				"hermodctl: lost the connection to %s while waiting for its "
				"answer; sending the request again to the next origin\n",
				cur_url(c));
		if ((code = redial(c)) != EXIT_OK || (code = send_part(c, pb)) != EXIT_OK)
			return code;
		sent++;
	}
}

static int exchange(struct client *c, const struct hm_pbuf *pb, struct answer *a)
{
	int code;

	watchdog("waiting for the origin's answer", exchange_budget());
	code = send_part(c, pb);

	return code != EXIT_OK ? code : answer_of(c, pb, a);
}

static int report_ack(const struct answer *a, uint64_t nchanges)
{
	/* Warnings (a certificate not yet valid or about to expire): accepted, exit 0. */
	if (a->reason[0] != '\0') {
		const char *p = a->reason;

		while (*p != '\0') {
			size_t n = strcspn(p, "\n");

			fprintf(stderr, "hermodctl: warning: ");
			put_esc(stderr, p, n, false);
			fputc('\n', stderr);
			p += n + (p[n] == '\n');
		}
	}
	if (cfg.json) {
		struct hm__buf b = {0};
		struct hm__jsonw w;

		hm__jw_init(&w, &b);
		hm__jw_obj(&w);
		hm__jw_kbool(&w, "ok", true);
		hm__jw_khex64(&w, "epoch", a->epoch);
		hm__jw_ku64(&w, "seq", a->seq);
		hm__jw_ku64(&w, "changes", nchanges);
		if (a->reason[0] != '\0')
			hm__jw_kcstr(&w, "warnings", a->reason);
		hm__jw_obj_end(&w);
		print_json(&b);
	} else {
		printf("seq %" PRIu64 "\n", a->seq);
	}
	return EXIT_OK;
}

static int report_rejected(int code, uint32_t index, const char *reason)
{
	if (cfg.json) {
		struct hm__buf b = {0};
		struct hm__jsonw w;

		hm__jw_init(&w, &b);
		hm__jw_obj(&w);
		hm__jw_kbool(&w, "ok", false);
		hm__jw_kcstr(&w, "code", hm_errname(code));
		hm__jw_kcstr(&w, "error", reason);
		hm__jw_ku64_or_null(&w, "index", index != UINT32_MAX, index);
		hm__jw_obj_end(&w);
		print_json(&b);
	}
	return fail(EXIT_REJECTED, "rejected: %s", reason);
}

/* A request's buffer may hold a cert.put's key: wiped before it is freed. (nng's own copy of
 * the message, and the blocks the encoder's growth gave back, are out of reach.) */
static void pbuf_wipe_fini(struct hm_pbuf *pb)
{
	if (pb->data != NULL)
		OPENSSL_cleanse(pb->data, pb->cap);
	hm_pbuf_fini(pb);
}

/* Sends one single-part request. */
static int send_changes(const struct hm_change *changes, uint32_t n)
{
	struct client c = {0};
	struct hm_pbuf pb = {0};
	struct answer a;
	int code;

	if ((code = client_open(&c)) != EXIT_OK) {
		client_close(&c);
		return code;
	}
	hm_require(hm_proto_encode_ctl_req(&pb, c.req_id, 0, 1, changes, n) == 0);
	code = exchange(&c, &pb, &a);
	pbuf_wipe_fini(&pb);
	if (code == EXIT_OK) {
		if (a.status == HM_CTL_ACK)
			code = report_ack(&a, n);
		else if (a.status == HM_CTL_ERROR)
			code = report_rejected(a.code, a.index, a.reason);
		else
			code =
			    fail(EXIT_UNREACHABLE, "the origin answered STAGED to a whole request");
	}
	client_close(&c);
	return code;
}

/* ---- Single-change commands ---------------------------------------------------------------- */

static int reject_local(int e, const char *what, const char *value)
{
	char reason[512];

	snprintf(reason, sizeof(reason), "%s: %s: \"%.200s\"", what, hm_strerror(e), value);
	return report_rejected(e, 0, reason);
}

static int cmd_control(char **pos, int npos)
{
	const char *noun = pos[0], *verb = pos[1];
	struct hm_change c;
	int e, want;

	memset(&c, 0, sizeof(c));
	if (strcmp(noun, "app") == 0)
		want = 3;
	else if (strcmp(noun, "domain") == 0)
		want = strcmp(verb, "put") == 0 ? 4 : 3;
	else
		want = strcmp(verb, "put") == 0 ? 5 : 4;
	if (npos != want)
		return usage_error("'%s %s' takes %d argument%s, got %d", noun, verb, want - 2,
				   want - 2 == 1 ? "" : "s", npos - 2);
	if ((cfg.maintenance >= 0 || cfg.affinity >= 0 || cfg.balance >= 0) &&
	    !(strcmp(noun, "app") == 0 && strcmp(verb, "put") == 0))
		return usage_error("--maintenance, --affinity and --balance are for 'app put'");
	if (cfg.state >= 0 && !(strcmp(noun, "dyno") == 0 && strcmp(verb, "put") == 0))
		return usage_error("--state is for 'dyno put'");

	if (strcmp(noun, "app") == 0) {
		c.op = strcmp(verb, "put") == 0 ? HM_OP_APP_PUT : HM_OP_APP_RM;
		if ((e = hm_app_name_check(pos[2], strlen(pos[2]))) != 0)
			return reject_local(e, "app", pos[2]);
		c.app = pos[2];
		c.app_len = (uint8_t)strlen(pos[2]);
		c.maintenance = cfg.maintenance == 1;
		c.affinity = cfg.affinity == 1;
		c.balance = cfg.balance > 0 ? HM_BALANCE_LEAST_CONN : HM_BALANCE_RANDOM;
	} else if (strcmp(noun, "domain") == 0) {
		c.op = strcmp(verb, "put") == 0 ? HM_OP_DOMAIN_PUT : HM_OP_DOMAIN_RM;
		if ((e = hm_hostname_check(pos[2], strlen(pos[2]), true)) != 0)
			return reject_local(e, "domain", pos[2]);
		c.name = pos[2];
		c.name_len = (uint16_t)strlen(pos[2]);
		if (c.op == HM_OP_DOMAIN_PUT) {
			if ((e = hm_app_name_check(pos[3], strlen(pos[3]))) != 0)
				return reject_local(e, "app", pos[3]);
			c.app = pos[3];
			c.app_len = (uint8_t)strlen(pos[3]);
		}
	} else {
		c.op = strcmp(verb, "put") == 0 ? HM_OP_DYNO_PUT : HM_OP_DYNO_RM;
		if ((e = hm_app_name_check(pos[2], strlen(pos[2]))) != 0)
			return reject_local(e, "app", pos[2]);
		if ((e = hm_dyno_name_check(pos[3], strlen(pos[3]))) != 0)
			return reject_local(e, "dyno", pos[3]);
		c.app = pos[2];
		c.app_len = (uint8_t)strlen(pos[2]);
		c.name = pos[3];
		c.name_len = (uint16_t)strlen(pos[3]);
		if (c.op == HM_OP_DYNO_PUT) {
			if ((e = hm_addr_parse(pos[4], strlen(pos[4]), &c.addr)) != 0)
				return reject_local(e, "addr", pos[4]);
			c.state = (uint8_t)(cfg.state >= 0 ? cfg.state + 1 : HM_DYNO_UP);
		}
	}
	if ((e = hm_change_check(&c)) != 0)
		return reject_local(e, "change", noun);
	return send_changes(&c, 1);
}

/*
 * Reads a PEM file for `cert put`: at most max bytes (max + 1 read, so that a longer file is
 * seen as too long). The buffer is allocated once, before the first byte, and filled in place:
 * a private key is never left behind in a realloc'd-away block or a stack copy. The caller
 * wipes out->data. Returns EXIT_OK or a usage failure.
 */
static int read_pem(const char *what, const char *path, size_t max, struct hm__buf *out)
{
	FILE *f = fopen(path, "rb");
	size_t n;

	if (f == NULL)
		return fail(EXIT_USAGE, "cannot read %s %s: %s", what, path, strerror(errno));
	setvbuf(f, NULL, _IONBF, 0); /* no stdio buffer holding a copy */
	if (!hm__buf_reserve(out, max + 1)) {
		fclose(f);
		return fail(EXIT_USAGE, "out of memory reading %s", path);
	}
	while (out->len <= max && (n = fread(out->data + out->len, 1, max + 1 - out->len, f)) > 0)
		out->len += n;
	if (ferror(f)) {
		fclose(f);
		return fail(EXIT_USAGE, "cannot read %s %s: %s", what, path, strerror(errno));
	}
	fclose(f);
	return EXIT_OK;
}

/*
 * `cert put NAME CERT.pem KEY.pem` and `cert rm NAME`. The origin's checks run here first, with
 * the same texts (syncd/certcheck), so a wrong file is caught without a round trip; the origin's
 * check is the one that counts. Neither the key nor the certificate is ever printed.
 */
static int cmd_cert(char **pos, int npos)
{
	bool put = strcmp(pos[1], "put") == 0;
	struct hm_change c = {.op = put ? HM_OP_CERT_PUT : HM_OP_CERT_RM};
	struct hm__buf cert = {0}, key = {0};
	int e, code;

	if (npos != (put ? 5 : 3))
		return usage_error(put ? "'cert put' takes NAME CERT.pem KEY.pem"
				       : "'cert rm' takes one NAME");
	if ((e = hm_cert_name_check(pos[2], strlen(pos[2]))) != 0)
		return reject_local(e, "cert", pos[2]);
	c.name = pos[2];
	c.name_len = (uint16_t)strlen(pos[2]);
	if (!put)
		return send_changes(&c, 1);
	if ((code = read_pem("certificate", pos[3], HM_CERT_CHAIN_MAX, &cert)) != EXIT_OK ||
	    (code = read_pem("key", pos[4], HM_CERT_KEY_MAX, &key)) != EXIT_OK)
		goto out;
	if (cert.len == 0 || cert.len > HM_CERT_CHAIN_MAX || key.len == 0 ||
	    key.len > HM_CERT_KEY_MAX) {
		code = fail(EXIT_USAGE, "%s must hold 1 to %u bytes, %s 1 to %u",
			    "the certificate file", HM_CERT_CHAIN_MAX, "the key file",
			    HM_CERT_KEY_MAX);
		goto out;
	}
	{
		struct hm_certcheck chk;
		char reason[HM_CERTCHECK_TEXT_MAX + 300];

		e = hm_certcheck_run(&chk, c.name, c.name_len, cert.data, cert.len, key.data,
				     key.len, (int64_t)time(NULL));
		if (e != 0) {
			snprintf(reason, sizeof(reason), "cert.put %s: %s", pos[2],
				 chk.text[0] != '\0' ? chk.text : hm_strerror(e));
			hm_certcheck_fini(&chk);
			code = report_rejected(e == -EINVAL ? HM_ECERTREFUSED : e, 0, reason);
			goto out;
		}
		hm_certcheck_fini(&chk);
	}
	c.cert = cert.data;
	c.cert_len = (uint32_t)cert.len;
	c.key = key.data;
	c.key_len = (uint32_t)key.len;
	if ((e = hm_change_check(&c)) != 0) {
		/* Never the bytes: only which file is not PEM text. */
		code = report_rejected(e, 0,
				       hm_pem_scan(c.cert, c.cert_len) >= 0
					   ? "the certificate file is not PEM text"
					   : "the key file is not PEM text");
		goto out;
	}
	code = send_changes(&c, 1);
out:
	if (key.data != NULL)
		OPENSSL_cleanse(key.data, key.cap);
	hm__buf_fini(&cert);
	hm__buf_fini(&key);
	return code;
}

/* ---- apply ------------------------------------------------------------------------------------
 */

struct owned {
	struct hm_change c;
	char app[HM_APP_NAME_MAX + 1];
	char name[HM_HOST_MAX + 4];
	char *pem; /* a cert.put's chain and key (malloc'd), or NULL */
};

/* Drops what o holds; a cert.put's key is wiped first. */
static void disown(struct owned *o)
{
	if (o->pem != NULL)
		OPENSSL_cleanse(o->pem, (size_t)o->c.cert_len + o->c.key_len);
	free(o->pem);
	o->pem = NULL;
}

static void own(struct owned *o, const struct hm_change *c)
{
	disown(o);
	o->c = *c;
	if (c->op == HM_OP_CERT_PUT) {
		hm_require((o->pem = malloc((size_t)c->cert_len + c->key_len)) != NULL);
		memcpy(o->pem, c->cert, c->cert_len);
		memcpy(o->pem + c->cert_len, c->key, c->key_len);
		o->c.cert = o->pem;
		o->c.key = o->pem + c->cert_len;
	}
	if (c->app_len > 0) {
		memcpy(o->app, c->app, c->app_len);
		o->c.app = o->app;
	}
	if (c->name_len > 0) {
		memcpy(o->name, c->name, HM_MIN(c->name_len, sizeof(o->name)));
		o->c.name = o->name;
	}
}

static FILE *open_input(const char *file, int *code)
{
	FILE *f, *tmp;
	char buf[65536];
	size_t n;

	if (strcmp(file, "-") != 0) {
		if ((f = fopen(file, "rb")) == NULL)
			*code = fail(EXIT_USAGE, "cannot read %s: %s", file, strerror(errno));
		return f;
	}
	/* stdin is read twice: keep a copy in an unlinked temporary file (disk, not memory). */
	if ((tmp = tmpfile()) == NULL) {
		*code = fail(EXIT_USAGE, "cannot create a temporary file for stdin: %s",
			     strerror(errno));
		return NULL;
	}
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		if (fwrite(buf, 1, n, tmp) != n) {
			fclose(tmp);
			*code = fail(EXIT_USAGE, "cannot copy stdin: %s", strerror(errno));
			return NULL;
		}
	if (ferror(stdin) || fflush(tmp) != 0 || fseek(tmp, 0, SEEK_SET) != 0) {
		fclose(tmp);
		*code = fail(EXIT_USAGE, "cannot read stdin");
		return NULL;
	}
	return tmp;
}

/* Reads the next n changes and encodes them as part p of nparts into pb. */
static int encode_part(struct hm_batch_reader *br, struct owned *part, const struct client *c,
		       uint32_t p, uint32_t nparts, uint32_t n, struct hm_pbuf *pb,
		       const char *file)
{
	struct hm_change *cs = malloc(n * sizeof(*cs)), ch;
	int r;

	hm_require(cs != NULL);
	for (uint32_t i = 0; i < n; i++) {
		if (hm_batch_reader_next(br, &ch) != 1) {
			free(cs);
			return fail(EXIT_USAGE, "%s changed while it was being sent", file);
		}
		own(&part[i], &ch);
		cs[i] = part[i].c;
	}
	hm_pbuf_reset(pb);
	r = hm_proto_encode_ctl_req(pb, c->req_id, p, nparts, cs, n);
	free(cs);
	if (r != 0)
		return fail(EXIT_REJECTED, "cannot encode part %u: %s", p, hm_strerror(r));
	return EXIT_OK;
}

static int cmd_apply(const char *file)
{
	struct hm_batch_reader *br = NULL;
	struct hm__splitter sp;
	struct hm_change ch;
	uint32_t *counts = NULL, ncounts = 0, cap = 0;
	uint64_t total = 0;
	struct owned *part = NULL;
	struct client c = {0};
	struct hm_pbuf pb[2] = {{0}}; /* part p in pb[p % 2], the next one encoded meanwhile */
	struct answer a;
	int code = EXIT_OK, r, restarts = 0;
	FILE *f = open_input(file, &code);

	if (f == NULL)
		return code;
	/* Pass 1: check every change, decide the parts. */
	hm_require(hm_batch_reader_new(&br, f) == 0);
	hm__split_init(&sp, HM__CTL_PART_BYTES, HM_PROTO_MAX_CHANGES);
	while ((r = hm_batch_reader_next(br, &ch)) == 1) {
		if (hm__split_add(&sp, hm__wire_change_size(&ch))) {
			if (ncounts == cap) {
				cap = cap ? cap * 2 : 64;
				counts = realloc(counts, cap * sizeof(*counts));
				hm_require(counts != NULL);
			}
			counts[ncounts++] = 0;
		}
		counts[ncounts - 1]++;
		total++;
	}
	if (r != 0) {
		code = report_rejected(r, (uint32_t)HM_MIN(hm_batch_reader_count(br), UINT32_MAX),
				       hm_batch_reader_error(br));
		goto out;
	}
	hm_batch_reader_free(br);
	br = NULL;
	if (total == 0) {
		if (cfg.json)
			printf("{\"ok\":true,\"seq\":null,\"changes\":0}\n");
		else
			printf("nothing to apply (the batch is empty)\n");
		goto out;
	}
	if (ncounts > HM_PROTO_MAX_PARTS) {
		code = report_rejected(HM_ETOOBIG, UINT32_MAX, "the batch has too many changes");
		goto out;
	}
	if ((code = client_open(&c)) != EXIT_OK)
		goto out;
	part = calloc(HM_PROTO_MAX_CHANGES, sizeof(*part));
	hm_require(part != NULL);
again:
	/* Pass 2: send the parts. */
	if (fseek(f, 0, SEEK_SET) != 0) {
		code = fail(EXIT_USAGE, "cannot re-read %s", file);
		goto out;
	}
	hm_batch_reader_free(br);
	hm_require(hm_batch_reader_new(&br, f) == 0);
	/* Part p + 1 is read and encoded while the origin takes part p. */
	if ((code = encode_part(br, part, &c, 0, ncounts, counts[0], &pb[0], file)) != EXIT_OK)
		goto out;
	for (uint32_t p = 0; p < ncounts; p++) {
		watchdog("waiting for the origin's answer", exchange_budget());
		if ((code = send_part(&c, &pb[p % 2])) != EXIT_OK)
			goto out;
		if (p + 1 < ncounts &&
		    (code = encode_part(br, part, &c, p + 1, ncounts, counts[p + 1],
					&pb[(p + 1) % 2], file)) != EXIT_OK)
			goto out;
		if ((code = answer_of(&c, &pb[p % 2], &a)) != EXIT_OK)
			goto out;
		if (a.status == HM_CTL_ERROR) {
			if (a.code == HM_EGAP && restarts < 3) {
				/* The origin lost the parts it had (it restarted): start over. */
				restarts++;
				goto again;
			}
			code = report_rejected(a.code, a.index, a.reason);
			goto out;
		}
		if (a.status == HM_CTL_ACK) {
			/* Before the last part: an origin that already committed the request
			 * (through another origin, before a failover) answers its request id from
			 * its cache, whatever the part. */
			code = report_ack(&a, total);
			goto out;
		}
		if (p + 1 < ncounts && a.status != HM_CTL_STAGED) {
			code = fail(EXIT_UNREACHABLE, "the origin answered part %u of %u with %s",
				    p, ncounts, "?");
			goto out;
		}
		if (p + 1 == ncounts) {
			code =
			    fail(EXIT_UNREACHABLE, "the origin did not acknowledge the last part");
			goto out;
		}
	}
out:
	client_close(&c);
	pbuf_wipe_fini(&pb[0]);
	pbuf_wipe_fini(&pb[1]);
	hm_batch_reader_free(br);
	for (uint32_t i = 0; part != NULL && i < HM_PROTO_MAX_CHANGES; i++)
		disown(&part[i]);
	free(part);
	free(counts);
	fclose(f);
	return code;
}

/* ---- Admin commands ------------------------------------------------------------------------- */

struct reader {
	int fd;
	char buf[65536];
	size_t pos, len;
	bool eof;
	int timeout_ms;
	int err;
};

/* The next byte, or -1 at the end of the line's stream (EOF, timeout, error in r->err). */
static int rd_peek(struct reader *r)
{
	while (r->pos == r->len) {
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		ssize_t n;

		if (r->eof)
			return -1;
		if (poll(&p, 1, r->timeout_ms) <= 0) {
			r->err = -ETIMEDOUT;
			r->eof = true;
			return -1;
		}
		n = read(r->fd, r->buf, sizeof(r->buf));
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				r->err = -errno;
			r->eof = true;
			return -1;
		}
		r->pos = 0;
		r->len = (size_t)n;
	}
	return (unsigned char)r->buf[r->pos];
}

/* Makes at least n bytes available at pos unless the stream ends first. */
static bool rd_fill(struct reader *r, size_t n)
{
	while (r->len - r->pos < n && !r->eof) {
		struct pollfd p = {.fd = r->fd, .events = POLLIN};
		ssize_t got;

		if (r->pos > 0) {
			memmove(r->buf, r->buf + r->pos, r->len - r->pos);
			r->len -= r->pos;
			r->pos = 0;
		}
		if (poll(&p, 1, r->timeout_ms) <= 0) {
			r->err = -ETIMEDOUT;
			r->eof = true;
			break;
		}
		got = read(r->fd, r->buf + r->len, sizeof(r->buf) - r->len);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0) {
			if (got < 0)
				r->err = -errno;
			r->eof = true;
			break;
		}
		r->len += (size_t)got;
	}
	return r->len - r->pos >= n;
}

static int rd_next(struct reader *r)
{
	int c = rd_peek(r);

	if (c >= 0)
		r->pos++;
	return c;
}

static int admin_connect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint64_t deadline = hm_mono_ms() + (uint64_t)cfg.timeout;
	int fd, e;

	if (strlen(cfg.admin) >= sizeof(sa.sun_path)) {
		fail(EXIT_USAGE, "admin socket path too long: %s", cfg.admin);
		return -EXIT_USAGE;
	}
	memcpy(sa.sun_path, cfg.admin, strlen(cfg.admin) + 1);
	for (;;) {
		if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0) {
			fail(EXIT_UNREACHABLE, "socket: %s", strerror(errno));
			return -EXIT_UNREACHABLE;
		}
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return fd;
		e = errno;
		close(fd);
		if ((e != ENOENT && e != ECONNREFUSED && e != EAGAIN) || hm_mono_ms() >= deadline) {
			fail(EXIT_UNREACHABLE, "cannot reach the admin socket %s: %s%s", cfg.admin,
			     strerror(e),
			     e == ENOENT || e == ECONNREFUSED
				 ? " (is hermod-syncd running? see --admin)"
				 : "");
			return -EXIT_UNREACHABLE;
		}
		struct timespec ts = {0, 20 * 1000 * 1000};

		nanosleep(&ts, NULL);
	}
}

/* Reads one JSON value (an object or array element) into out: bounded by depth tracking. */
static int rd_value(struct reader *r, struct hm__buf *out)
{
	struct hm_json_extent x = {0};
	int c;

	hm__buf_reset(out);
	for (;;) {
		c = rd_peek(r);
		if (c < 0)
			return -1;
		/* A scalar ends where the enclosing object or array goes on. */
		if (!x.in_str && x.depth == 0 && (c == ',' || c == '}' || c == ']') && out->len > 0)
			break;
		rd_next(r);
		hm__buf_add(out, &(char){(char)c}, 1);
		if (hm_json_extent_feed(&x, (char)c))
			break;
	}
	hm__buf_add(out, "", 1);
	return out->oom ? -1 : 0;
}

static void skip_ws(struct reader *r)
{
	int c;

	while ((c = rd_peek(r)) == ' ' || c == '\t' || c == '\r')
		rd_next(r);
}

static const char *jstr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : "";
}

static const char *jbool(const cJSON *o, const char *key)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)) ? "on" : "off";
}

/* One certificate of `certs` or `dump`: name, expiry (UTC), fingerprint, SANs. */
static void print_cert(const cJSON *o)
{
	const cJSON *na = cJSON_GetObjectItemCaseSensitive(o, "not_after"), *san;
	char when[32] = "?";
	struct hm__buf sans = {0};

	if (cJSON_IsNumber(na)) {
		time_t t = (time_t)na->valuedouble;
		struct tm tm;

		if (gmtime_r(&t, &tm) != NULL)
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	}
	cJSON_ArrayForEach(san, cJSON_GetObjectItemCaseSensitive(o, "sans"))
	{
		if (!cJSON_IsString(san))
			continue;
		if (sans.len > 0)
			hm__buf_add(&sans, ",", 1);
		hm__buf_add(&sans, san->valuestring, strlen(san->valuestring));
	}
	hm__buf_add(&sans, "", 1);
	print_esc("%-40s %-20s %-64s %s\n", jstr(o, "name"), when, jstr(o, "sha256"),
		  sans.data != NULL && !sans.oom ? sans.data : "");
	hm__buf_fini(&sans);
}

static void print_cert_header(void)
{
	printf("%-40s %-20s %-64s %s\n", "NAME", "NOT_AFTER", "SHA256", "SANS");
}

static void print_row(const char *section, const cJSON *o)
{
	if (strcmp(section, "apps") == 0)
		print_esc("%-32s %-11s %-8s %s\n", jstr(o, "app"), jbool(o, "maintenance"),
			  jbool(o, "affinity"), jstr(o, "balance"));
	else if (strcmp(section, "domains") == 0)
		print_esc("%-48s %s\n", jstr(o, "domain"), jstr(o, "app"));
	else if (strcmp(section, "dynos") == 0)
		print_esc("%-24s %-16s %-24s %s\n", jstr(o, "app"), jstr(o, "name"),
			  jstr(o, "addr"), jstr(o, "state"));
	else if (strcmp(section, "certs") == 0)
		print_cert(o);
}

/* A table's heading; blank: after a blank line (a dump's second table and after). */
static void print_header(const char *section, bool blank)
{
	if (strcmp(section, "apps") == 0)
		printf("\n%-32s %-11s %-8s %s\n", "APP", "MAINTENANCE", "AFFINITY", "BALANCE");
	else if (strcmp(section, "domains") == 0)
		printf("\n%-48s %s\n", "DOMAIN", "APP");
	else if (strcmp(section, "dynos") == 0)
		printf("\n%-24s %-16s %-24s %s\n", "APP", "DYNO", "ADDR", "STATE");
	else if (strcmp(section, "certs") == 0) {
		if (blank)
			putchar('\n');
		print_cert_header();
	}
}

/*
 * Prints a dump or a certs answer as it streams in: scalars as "key: value", arrays as tables
 * (a blank line before each but, for certs, the first). An "error" member (certs: the store
 * changed while it was listed) goes to stderr and exits 1.
 */
static int print_dump(struct reader *r, bool is_dump)
{
	struct hm__buf v = {0};
	char key[64];
	int c, code = EXIT_OK;

	skip_ws(r);
	if (rd_next(r) != '{')
		goto bad;
	for (;;) {
		size_t kl = 0;

		skip_ws(r);
		c = rd_next(r);
		if (c == '}')
			break;
		if (c == ',') {
			skip_ws(r);
			c = rd_next(r);
		}
		if (c != '"')
			goto bad;
		while ((c = rd_next(r)) >= 0 && c != '"')
			if (kl + 1 < sizeof(key))
				key[kl++] = (char)c;
		key[kl] = '\0';
		skip_ws(r);
		if (rd_next(r) != ':')
			goto bad;
		skip_ws(r);
		if (rd_peek(r) == '[') {
			rd_next(r);
			print_header(key, is_dump);
			for (;;) {
				skip_ws(r);
				c = rd_peek(r);
				if (c == ']') {
					rd_next(r);
					break;
				}
				if (c == ',') {
					rd_next(r);
					continue;
				}
				if (rd_value(r, &v) != 0)
					goto bad;
				cJSON *o = cJSON_Parse(v.data);

				if (o == NULL)
					goto bad;
				print_row(key, o);
				cJSON_Delete(o);
			}
		} else {
			if (rd_value(r, &v) != 0)
				goto bad;
			cJSON *o = cJSON_Parse(v.data);

			if (strcmp(key, "error") == 0)
				code =
				    fail(EXIT_REJECTED, "%s",
					 o != NULL && cJSON_IsString(o) ? o->valuestring : v.data);
			else if (o != NULL && cJSON_IsString(o))
				print_esc("%-8s %s\n", key, o->valuestring);
			else
				print_esc("%-8s %s\n", key, v.data);
			cJSON_Delete(o);
		}
	}
	hm__buf_fini(&v);
	return code;
bad:
	hm__buf_fini(&v);
	return fail(EXIT_UNREACHABLE, "the dump from %s was cut short or malformed%s%s", cfg.admin,
		    r->err ? ": " : "", r->err ? hm_strerror(r->err) : "");
}

static int print_status(const cJSON *o)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, o)
	{
		char *v = cJSON_IsString(it) ? NULL : cJSON_PrintUnformatted(it);

		print_esc("%-20s %s\n", it->string, v != NULL ? v : it->valuestring);
		free(v);
	}
	return EXIT_OK;
}

static int print_lookup(const cJSON *o)
{
	const cJSON *d, *dynos = cJSON_GetObjectItemCaseSensitive(o, "dynos");
	const cJSON *cert = cJSON_GetObjectItemCaseSensitive(o, "cert");

	print_esc("host         %s\n", jstr(o, "host"));
	print_esc("app          %s\n", jstr(o, "app"));
	print_esc("maintenance  %s\n", jbool(o, "maintenance"));
	print_esc("affinity     %s\n", jbool(o, "affinity"));
	print_esc("balance      %s\n", jstr(o, "balance"));
	print_esc("cert         %s\n", cJSON_IsString(cert) ? cert->valuestring : "-");
	printf("\n%-16s %-24s %s\n", "DYNO", "ADDR", "STATE");
	cJSON_ArrayForEach(d, dynos)
	    print_esc("%-16s %-24s %s\n", jstr(d, "name"), jstr(d, "addr"), jstr(d, "state"));
	return EXIT_OK;
}

static int cmd_admin(const char *cmd, const char *arg)
{
	struct reader *r = calloc(1, sizeof(*r));
	char line[600];
	int fd, n, code = EXIT_OK, c;
	bool is_dump = strcmp(cmd, "dump") == 0;

	hm_require(r != NULL);
	if ((fd = admin_connect()) < 0) {
		free(r);
		return -fd;
	}
	n = snprintf(line, sizeof(line), "%s%s%s\n", cmd, arg ? " " : "", arg ? arg : "");
	if (write(fd, line, (size_t)n) != n) {
		close(fd);
		free(r);
		return fail(EXIT_UNREACHABLE, "cannot write to %s: %s", cfg.admin, strerror(errno));
	}
	r->fd = fd;
	r->timeout_ms = (int)HM_MIN(cfg.reply_timeout, INT32_MAX);
	/* An error answer starts with {"error" whatever the command. */
	if (rd_fill(r, 8) && memcmp(r->buf + r->pos, "{\"error\"", 8) == 0) {
		struct hm__buf v = {0};
		cJSON *o;

		rd_value(r, &v);
		o = v.data != NULL ? cJSON_Parse(v.data) : NULL;
		if (cfg.json && v.data != NULL) {
			put_esc(stdout, v.data, strlen(v.data), true);
			putchar('\n');
		}
		code = fail(EXIT_REJECTED, "%s", o != NULL ? jstr(o, "error") : "error");
		cJSON_Delete(o);
		hm__buf_fini(&v);
		goto out;
	}
	if (cfg.json) {
		/* Copied through as it arrives (a dump is never held whole), control characters
		 * escaped: the server's JSON has none outside escapes, so valid JSON is unchanged.
		 */
		while ((c = rd_next(r)) >= 0) {
			if (c == '\n') {
				putchar(c);
				break;
			}
			if (c == 0xc2 && rd_peek(r) >= 0x80 && rd_peek(r) <= 0x9f) {
				printf("\\u%04x", rd_next(r));
				continue;
			}
			if (c < 0x20 || c == 0x7f)
				printf("\\u%04x", c);
			else
				putchar(c);
		}
		if (c != '\n')
			code =
			    fail(EXIT_UNREACHABLE, "the answer from %s was cut short", cfg.admin);
		goto out;
	}
	if (is_dump || strcmp(cmd, "certs") == 0) {
		code = print_dump(r, is_dump);
	} else {
		struct hm__buf v = {0};
		cJSON *o;

		if (rd_value(r, &v) != 0 || (o = cJSON_Parse(v.data)) == NULL) {
			hm__buf_fini(&v);
			code = fail(EXIT_UNREACHABLE, "no valid answer from %s", cfg.admin);
			goto out;
		}
		code = strcmp(cmd, "status") == 0 ? print_status(o) : print_lookup(o);
		cJSON_Delete(o);
		hm__buf_fini(&v);
	}
out:
	close(fd);
	free(r);
	return code;
}

/* ---- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	char err[512], **pos;
	int npos = 0, r, code;

	signal(SIGPIPE, SIG_IGN);
	watchdog_init();
	memset(&cfg, 0, sizeof(cfg));
	cfg.maintenance = cfg.affinity = cfg.balance = cfg.state = -1;
	if ((pos = calloc((size_t)argc + 1, sizeof(*pos))) == NULL)
		return EXIT_REJECTED;
	r = hm_opts_parse(options, &cfg, argc, argv, pos, &npos, err, sizeof(err));
	if (r == 0 && hm__nng_urls_parse(cfg.control, &ctl_urls, err, sizeof(err)) != 0)
		r = -1; /* only $HERMOD_CONTROL can get here: the flag's own check said so */
	if (r == HM_OPTS_HELP) {
		hm_opts_usage(stdout, synopsis, options);
		code = EXIT_OK;
	} else if (r != 0) {
		code = usage_error("%s", err);
	} else if (npos == 0) {
		code = usage_error("no command given");
	} else if ((cfg.maintenance >= 0 || cfg.affinity >= 0 || cfg.balance >= 0 ||
		    cfg.state >= 0) &&
		   strcmp(pos[0], "app") != 0 && strcmp(pos[0], "dyno") != 0) {
		code =
		    usage_error("--maintenance, --affinity, --balance and --state are for 'put'");
	} else if (strcmp(pos[0], "app") == 0 || strcmp(pos[0], "domain") == 0 ||
		   strcmp(pos[0], "dyno") == 0) {
		if (npos < 2 || (strcmp(pos[1], "put") != 0 && strcmp(pos[1], "rm") != 0))
			code = usage_error("'%s' needs 'put' or 'rm'", pos[0]);
		else
			code = cmd_control(pos, npos);
	} else if (strcmp(pos[0], "cert") == 0) {
		if (npos < 2 || (strcmp(pos[1], "put") != 0 && strcmp(pos[1], "rm") != 0))
			code = usage_error("'cert' needs 'put' or 'rm'");
		else
			code = cmd_cert(pos, npos);
	} else if (strcmp(pos[0], "apply") == 0) {
		code = npos != 2 ? usage_error("'apply' takes one FILE (or - for stdin)")
				 : cmd_apply(pos[1]);
	} else if (strcmp(pos[0], "status") == 0 || strcmp(pos[0], "dump") == 0 ||
		   strcmp(pos[0], "certs") == 0) {
		code = npos != 1 ? usage_error("'%s' takes no arguments", pos[0])
				 : cmd_admin(pos[0], NULL);
	} else if (strcmp(pos[0], "lookup") == 0) {
		if (npos != 2)
			code = usage_error("'lookup' takes one HOST");
		else if (hm_ctl_scan(pos[1], strlen(pos[1])) >= 0)
			/* It would end the admin request's line and start another. */
			code =
			    usage_error("'lookup': HOST \"%s\" holds a control character", pos[1]);
		else
			code = cmd_admin("lookup", pos[1]);
	} else {
		code = usage_error("unknown command '%s'", pos[0]);
	}
	fflush(stdout);
	hm__nng_urls_free(&ctl_urls);
	hm_opts_free(options, &cfg);
	free(pos);
	return code;
}
