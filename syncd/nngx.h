/*
 * nng glue for syncd: error conversion at the boundary, the socket options every hermod socket
 * sets, dialing, and self-healing listeners.
 *
 * Self-healing listeners work around nng 1.5.2 bug #1518 (a peer that closes during the SP
 * handshake can make a listener stop accepting for good; fixed upstream in PR #1519, not in
 * Debian's 1.5.2). A watchdog per listener proves every ~500 ms that each listener still
 * completes handshakes — a pipe of that listener was added recently, or a probe dialed from a
 * private socket of the peer protocol is seen as NNG_PIPE_EV_ADD_POST on the listener's socket
 * (the probe is closed only after that, so it never closes mid-handshake itself) — and closes and
 * re-creates a listener whose transport answers two probes in a row that never become pipes (or
 * that fails 8 in a row in any way). The watchdog runs on a thread of its own, so an nng call
 * that hangs there cannot stop the loop. docs/sync.md has the details.
 */
#ifndef HM_SYNCD_NNGX_H
#define HM_SYNCD_NNGX_H

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* nng's positive codes as hermod codes: 0; -ETIMEDOUT, -ECONNREFUSED, -ECANCELED (closed or
 * cancelled), -ENOMEM, -EINVAL, -EMSGSIZE, -EADDRINUSE, -EAGAIN, -ENOENT; HM_ENNG otherwise. */
int hm__nng_err(int rv);

/* The options every hermod socket gets: NNG_OPT_RECVMAXSZ = HM_PROTO_MAX_MSG; and
 * NNG_OPT_SENDBUF = sendbuf unless 0 (the PUB socket: messages queued per subscriber, beyond
 * which nng drops the oldest). Returns 0 or a converted error. */
int hm__nng_socket_opts(nng_socket s, int sendbuf);

/*
 * Finds the pipes of a socket that have stopped taking messages, from nng's per-pipe tx_msgs
 * statistic (messages the transport finished writing to the kernel), and closes them: a PUB
 * subscriber that stopped reading holds one message in flight, and its TCP buffers, for as long
 * as it stays connected. A pipe is stalled when its tx_msgs has not moved for stall_ms although
 * the socket sent something meanwhile (sent: a count the caller bumps per message sent on s).
 * Call hm__txwatch_run about once a second from one thread; it returns the pipes closed.
 */
struct hm__txwatch {
	struct hm__txpipe {
		uint32_t id;
		uint64_t tx;	     /* tx_msgs when last seen moving */
		uint64_t since_ms;   /* when it last moved (mono) */
		uint64_t since_sent; /* sent, then */
		bool seen;	     /* in the latest snapshot */
	} * v;
	size_t n, cap;
};
int hm__txwatch_run(struct hm__txwatch *w, nng_socket s, uint64_t sent, uint64_t stall_ms);
void hm__txwatch_fini(struct hm__txwatch *w);

/* Dials url without blocking (nng retries in the background, 100 ms doubling to 2 s), with TCP
 * keepalive where the transport has it, and with tls (borrowed; the dialer keeps its own hold)
 * unless NULL. Returns 0 or a converted error (bad URL). */
int hm__nng_dial(nng_socket s, const char *url, nng_tls_config *tls, nng_dialer *out);

/*
 * Errors a dialer or listener has counted so far under one of nng's statistics ("auth": TLS
 * handshakes that failed, "refused", "disconnect", ...). 0 if nng keeps no such statistic.
 * Takes a snapshot of all of nng's statistics: call it about once a second, not per message.
 */
uint64_t hm__nng_dialer_stat(nng_dialer d, const char *name);

/*
 * Replies on REP contexts. nng's REP hands a reply to its peer's connection at once if that
 * connection is idle, and otherwise queues the context behind the replies still being written
 * there. A peer that sends requests and never reads the answers would so hold every context of
 * the socket, for every other peer, for as long as it stays connected. So a reply is sent with
 * a deadline (hm__rep_send), which only a reply queued behind unread ones can miss, and a reply
 * that misses it closes its peer's connection (hm__rep_sent): the contexts queued there are
 * released, and a real REQ peer reconnects and resends. A context's receives have no deadline
 * (hm__rep_recv).
 */
#define HM__REP_SEND_TIMEOUT_MS 2000

void hm__rep_send(nng_ctx ctx, nng_aio *aio, nng_msg *reply);
void hm__rep_recv(nng_ctx ctx, nng_aio *aio);
/* Call from the aio callback of a send with its result rv (the message is freed on failure);
 * pipe is the request's (nng_msg_get_pipe), what names the socket for the log. */
void hm__rep_sent(nng_aio *aio, int rv, nng_pipe pipe, const char *what);

/* An hm_opt check for URLs: something nng can parse, with a transport hermod supports. */
int hm__nng_url_check(const char *value, char *err, size_t errlen);

/*
 * A list of URLs, "URL[,URL...]": the origins an edge follows (--publish, --sync) or hermodctl
 * tries (--control), in order. At most HM__URLS_MAX, so what a program holds per origin is
 * bounded. Commas separate, so a URL cannot hold one.
 */
#define HM__URLS_MAX 16

struct hm__urls {
	uint32_t n;
	char *v[HM__URLS_MAX]; /* owned */
};

/* Splits list into out (zero it first): every element passes hm__nng_url_check, none is empty
 * or given twice, at most HM__URLS_MAX. Returns 0, or -EINVAL with a one-line reason in err
 * (out then holds nothing). */
int hm__nng_urls_parse(const char *list, struct hm__urls *out, char *err, size_t errlen);
void hm__nng_urls_free(struct hm__urls *u);

/* An hm_opt check for such lists. */
int hm__nng_urls_check(const char *value, char *err, size_t errlen);

/*
 * The contract's rules for a URL a program listens on or dials (docs/security.md): tls+tcp://
 * needs certificates (tls: --tls-cert and --tls-ca were given); plaintext tcp:// is allowed on
 * loopback only (127.0.0.0/8, ::1, or a name all of whose addresses are loopback) unless
 * insecure (--insecure-plaintext). what names the option for the reason. Returns 0 or -EINVAL
 * with a one-line reason in err; the program then exits 2.
 */
int hm__nng_url_policy(const char *what, const char *url, bool tls, bool insecure, char *err,
		       size_t errlen);

/*
 * Arms a deadline for the rest of a shutdown: if the process is still running `ms` later, it
 * logs why and exits with status 0. nng 1.5.2 can hang in nng_close() (bug #1543: its reaper
 * waits for a task that never starts); call this once everything that must be flushed (journal,
 * replies) is done and only closing nng sockets and freeing memory remain. Any thread; once.
 */
void hm__exit_deadline(unsigned ms, const char *what);

/* Names the shutdown step in progress (a string literal), for the deadline's message. */
void hm__shutdown_step(const char *step);

enum hm__peer {
	HM__PEER_REQ, /* the listener's socket is REP: probe with REQ */
	HM__PEER_SUB, /* the listener's socket is PUB: probe with SUB */
};

struct hm__listeners;

/* watchdog false disables probing (tests of the bug itself). Returns 0 or -ENOMEM. */
int hm__listeners_new(struct hm__listeners **out, bool watchdog);

/* Starts the watchdog threads (one per listener), once every listener is added. Returns 0 or a
 * negative errno. */
int hm__listeners_start(struct hm__listeners *ls);

/*
 * Starts listening on url with socket s (which must outlive the set) and watches it. One
 * listener per socket. A tls+tcp:// url needs tls (borrowed; the set keeps its own hold), which
 * its listener (and any listener re-created for it) uses; the watchdog then probes it with a
 * real TLS handshake (tlscfg.h). Returns 0 or a converted error, with a reason in err.
 */
int hm__listeners_add(struct hm__listeners *ls, nng_socket s, const char *url, enum hm__peer peer,
		      const char *name, nng_tls_config *tls, char *err, size_t errlen);

/*
 * Gives the listener of socket s a new TLS configuration (borrowed; the set keeps its own hold):
 * new connections use it, established ones keep theirs. nng has already made the listener's
 * next connection with the old one, so this probes the listener once, which uses that one up:
 * it waits for that (a few ms; 1 s at most). Loop thread. Returns 0 or a converted error.
 */
int hm__listeners_set_tls(struct hm__listeners *ls, nng_socket s, nng_tls_config *tls);

/* TLS handshakes the listeners have refused so far (nng's "auth" statistic), summed. */
uint64_t hm__listeners_tls_refused(struct hm__listeners *ls);

/* The watchdog's counts so far: listeners re-created; probes made; probes that got no handshake
 * in time (a listener is re-created after two misses in a row: one alone is a slow moment). */
struct hm__listener_stats {
	uint64_t restarts, probes, probe_misses;
};
void hm__listeners_stats(const struct hm__listeners *ls, struct hm__listener_stats *out);

/* Stops the watchdog threads and closes the probes. The listened sockets must then be closed
 * (nng_close) before hm__listeners_free(). */
void hm__listeners_stop(struct hm__listeners *ls);
void hm__listeners_free(struct hm__listeners *ls);

#endif
