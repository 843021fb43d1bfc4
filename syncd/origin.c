/*
 * hermod-syncd origin: the one sequencer.
 *
 * One libuv loop owns everything here: the validation table (the routing table in private
 * memory), the sequence counter, the request-id cache, the queue of batches waiting for their
 * fsync. Control requests arrive on 16 REP contexts whose aio callbacks post them to the
 * mailbox; the loop validates a request as one table batch, numbers it, encodes it once
 * (batch.h) and hands it to the journal thread. When the journal thread reports a group of
 * records durable, the loop publishes them in seq order, answers their clients and moves them
 * into the sync server's ring. docs/sync.md describes the whole flow and its failure cases.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/reqrep0/rep.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/sdnotify.h"
#include "common/state.h"
#include "common/table.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/admin.h"
#include "syncd/batch.h"
#include "syncd/certjob.h"
#include "syncd/certput.h"
#include "syncd/mailbox.h"
#include "syncd/nngx.h"
#include "syncd/reqcache.h"
#include "syncd/snapfile.h"
#include "syncd/staging.h"
#include "syncd/store.h"
#include "syncd/syncd.h"
#include "syncd/syncsrv.h"
#include "syncd/tlscfg.h"
#include "syncd/wire.h"

#define NCTL		   16
#define REQCACHE_SIZE	   65536
#define STAGED_IDLE_MS	   60000
#define LINGER_MS	   150
#define COMPACT_RETRY_MS   60000
#define STOP_UNRESOLVED_MS 5000

/* The cluster's affinity secret (docs/security.md): made here once, replicated like any change. */
#define AFFINITY_SECRET	    "affinity"
#define AFFINITY_SECRET_LEN 32

/* The "control context" of a batch the origin makes itself: nobody waits for its answer. */
#define NO_CTL UINT32_MAX

enum mail_kind { MAIL_CTL = 1 };

enum ctl_state { CTL_RECV, CTL_BUSY, CTL_SEND };

struct ctl {
	struct origin *o;
	uint32_t idx;
	nng_ctx ctx;
	nng_aio *aio;
	nng_pipe pipe; /* the request's connection */
	enum ctl_state state;
};

struct waiter {
	struct waiter *next;
	uint32_t ctl;
	uint8_t req_id[16];
	char *warn; /* owned; warnings for the ACK (a certificate about to expire), or NULL */
};

/* A batch validated and handed to the store, not yet durable. */
struct pending {
	struct pending *next;
	struct hm__batch *b; /* one reference */
	struct hm__jpos pos;
	struct waiter *waiters;
	uint64_t queued_ns;
	/* A store that may refuse: the request, kept to be validated again after a conflict. */
	struct hm__request req;
	uint32_t idx;
	uint8_t id[16];
};

/* A whole request waiting for its certificate checks, or behind another one of its connection
 * or with its id (admit()). */
struct held {
	struct held *next;
	struct origin *o;
	uint32_t idx;
	uint8_t id[16];
	nng_pipe pipe;
	struct hm__request req;
	struct hm__certjob *job; /* owned; NULL once checked, or when there is nothing to check */
	bool checking;		 /* job on the thread pool */
	bool resend; /* one message whose id an earlier one has: handled again after it */
	int err;     /* the check refused it (job holds the reason) */
};

/* A whole request waiting for the store (HM__STORE_MAY_REFUSE: one batch in flight at a time). */
struct queued {
	struct queued *next;
	uint32_t idx;
	uint8_t id[16];
	struct hm__request req;
};

struct origin {
	const struct hm__origin_cfg *cfg;
	char node[256];
	uv_loop_t loop;
	struct hm__mailbox mb;
	uv_signal_t sigterm, sigint, sigchld, sighup;
	uv_timer_t hb_timer, maint_timer, linger_timer;

	uint64_t epoch;
	struct hm_state st; /* the table and the certificate store, both in private memory */
	struct hm_proto_decoder *dec;
	struct hm__reqcache *reqs;
	struct hm__store *store;
	struct hm__syncsrv *ss;
	struct hm__listeners *ls;
	struct hm__admin *admin;
	struct hm__tls_state tls; /* the certificates in use; .cur NULL without TLS */

	uint64_t head_seq;	/* last seq validated */
	uint64_t published_seq; /* last seq durable and published */
	uint8_t published_digest[16];
	uint32_t pub_apps, pub_domains, pub_dynos;
	uint64_t last_hb_ms; /* mono ms of the last heartbeat sent; 0 if none */

	struct pending *pend_head, *pend_tail;
	struct hm__staging *staging;
	struct hm__recover_ctx rc; /* the state etc., for batches other origins committed */

	/* A store that may refuse (etcd): the batch in flight is open in the table until it is
	 * durable or refused; requests wait in the queue until the store is ready again. */
	bool may_refuse, store_busy, open_batch;
	bool store_stale;
	char store_why[300];
	struct queued *q_head, *q_tail;
	uint64_t conflicts, foreign;

	/* Requests whose certificates are being checked off the loop, and those that wait for
	 * them (admit()); at most NCTL, as each holds a control context. */
	struct held *held_head, *held_tail;
	uint64_t cert_checks; /* requests checked on the thread pool */

	nng_socket ctl_sock, pub_sock, sync_sock;
	bool ctl_open, pub_open, sync_open;
	struct ctl ctls[NCTL];

	/* compaction */
	pid_t child;
	uint64_t child_seq, child_snap_id;
	uint64_t journal_at_snapshot; /* the store's journal bytes when the last snapshot began */
	uint64_t compact_after_ms;    /* no new compaction before this (after a failure) */
	uint64_t snapshot_seq;

	/* counters */
	uint64_t batches, changes, rejected, bad_requests, resent, dropped_pub;
	uint64_t pub_sent;	      /* messages handed to the PUB socket */
	uint64_t ticket_rotations;    /* TLS ticket key rotations since start */
	uint64_t pub_stalled;	      /* subscribers disconnected for not taking messages */
	struct hm__txwatch pub_watch; /* per-subscriber progress (hm__txwatch_run) */

	bool stopping, closing;
	atomic_bool closing_nng; /* nng threads: do not start new receives */
	int exit_code;
};

/* ---- Replies ----------------------------------------------------------------------------- */

static void ctl_send(struct origin *o, uint32_t idx, struct hm_pbuf *pb)
{
	struct ctl *c;
	nng_msg *m;

	if (idx == NO_CTL)
		return;
	c = &o->ctls[idx];

	if (nng_msg_alloc(&m, pb->len) != 0) {
		hm_log(HM_LOG_ERR, "origin", "out of memory answering a control request");
		c->state = CTL_RECV;
		hm__rep_recv(c->ctx, c->aio);
		return;
	}
	memcpy(nng_msg_body(m), pb->data, pb->len);
	c->state = CTL_SEND;
	hm__rep_send(c->ctx, c->aio, m);
}

static void reply_ack(struct origin *o, uint32_t idx, const uint8_t id[16], uint64_t seq,
		      const char *warn)
{
	struct hm_pbuf pb = {0};

	hm_require(hm_proto_encode_ctl_ack_warn(&pb, id, o->epoch, seq, warn,
						warn != NULL ? strlen(warn) : 0) == 0);
	ctl_send(o, idx, &pb);
	hm_pbuf_fini(&pb);
}

static void reply_staged(struct origin *o, uint32_t idx, const uint8_t id[16])
{
	struct hm_pbuf pb = {0};

	hm_require(hm_proto_encode_ctl_staged(&pb, id) == 0);
	ctl_send(o, idx, &pb);
	hm_pbuf_fini(&pb);
}

static void reply_error(struct origin *o, uint32_t idx, const uint8_t id[16], int code,
			uint32_t index, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void reply_error(struct origin *o, uint32_t idx, const uint8_t id[16], int code,
			uint32_t index, const char *fmt, ...)
{
	struct hm_pbuf pb = {0};
	char reason[HM_PROTO_MAX_REASON];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(reason))
		n = sizeof(reason) - 1;
	hm_require(hm_proto_encode_ctl_error(&pb, id, code, index, reason, (size_t)n) == 0);
	if (idx == NO_CTL)
		hm_log(HM_LOG_ERR, "origin", "a batch of the origin's own was refused: %s", reason);
	ctl_send(o, idx, &pb);
	hm_pbuf_fini(&pb);
	o->rejected++;
}

/* "dyno.put web/web.1" */
static void change_desc(const struct hm_change *c, char *out, size_t n)
{
	const char *op = hm_op_name(c->op);

	switch (c->op) {
	case HM_OP_APP_PUT:
	case HM_OP_APP_RM:
		snprintf(out, n, "%s %.*s", op, (int)c->app_len, c->app);
		break;
	case HM_OP_DOMAIN_PUT:
		snprintf(out, n, "%s %.*s -> %.*s", op, (int)c->name_len, c->name, (int)c->app_len,
			 c->app);
		break;
	case HM_OP_DOMAIN_RM:
	case HM_OP_CERT_PUT: /* the name only: never the PEM */
	case HM_OP_CERT_RM:
		snprintf(out, n, "%s %.*s", op, (int)c->name_len, c->name);
		break;
	default:
		snprintf(out, n, "%s %.*s/%.*s", op ? op : "?", (int)c->app_len, c->app,
			 (int)c->name_len, c->name);
		break;
	}
}

/* ---- Validation and sequencing ------------------------------------------------------------ */

static struct pending *pending_find(struct origin *o, uint64_t seq)
{
	for (struct pending *p = o->pend_head; p != NULL; p = p->next)
		if (p->b->seq == seq)
			return p;
	return NULL;
}

/* The batch of the group being built or in flight (a store that may refuse) made from request
 * id: a resend of it waits for the group to resolve instead of joining it. */
static bool pending_has_id(const struct origin *o, const uint8_t id[16])
{
	for (const struct pending *p = o->pend_head; p != NULL; p = p->next)
		if (memcmp(p->id, id, 16) == 0)
			return true;
	return false;
}

/* hm_state_extend()'s redo: the batches of the group validated so far, in order. */
static int group_redo(struct hm_state *st, void *arg)
{
	struct origin *o = arg;
	int e = 0;

	for (struct pending *p = o->pend_head; p != NULL && e == 0; p = p->next)
		e = hm__recover_feed(st, o->dec, o->epoch, p->b);
	return e;
}

static void add_waiter(struct pending *p, uint32_t idx, const uint8_t id[16], const char *warn)
{
	struct waiter *w = calloc(1, sizeof(*w));

	hm_require(w != NULL);
	if (warn != NULL && warn[0] != '\0')
		hm_require((w->warn = strdup(warn)) != NULL);
	w->ctl = idx;
	memcpy(w->req_id, id, 16);
	w->next = p->waiters;
	p->waiters = w;
}

/* What sequence() feeds into the state: the request's changes, each cert.put replaced by its
 * canonical record, encoded into the batch at the same time. */
struct seq_feed {
	struct origin *o;
	const struct hm__request *r;
	const struct hm_msg *first; /* r->msgs[0] decoded; usable until anything else is decoded */
	struct hm__batch_builder *bb;
	uint64_t seq, ts, total;
	uint32_t bad;
	int fed;
	char reason[HM_PROTO_MAX_REASON];
};

/* The batch could not be encoded: answered with the reason, without a change's index. */
static int seq_encode_failed(struct seq_feed *f, int e)
{
	snprintf(f->reason, sizeof(f->reason), "cannot encode the batch: %s", hm_strerror(e));
	return e;
}

static int seq_feed(struct hm_state *s, void *arg)
{
	struct seq_feed *f = arg;
	bool counting = hm_state_counting(s);
	uint32_t ci = 0;
	int e = 0;

	f->total = 0;
	if (!counting && (e = hm__batch_begin(f->bb, f->o->epoch, f->seq, f->ts, f->r->parts.v,
					      f->r->parts.n)) != 0)
		return seq_encode_failed(f, e);
	for (uint32_t i = 0; i < f->r->n; i++) {
		struct hm_msg dm;
		const struct hm_msg *m = &dm;
		uint32_t nc;

		if (i == 0 && f->first != NULL && f->fed == 0)
			m = f->first;
		else
			hm_require(hm_proto_decode(f->o->dec, nng_msg_body(f->r->msgs[i]),
						   nng_msg_len(f->r->msgs[i]), &dm) == 0);
		f->fed++;
		const struct hm_change *cs = hm__msg_changes(m, &nc);

		for (uint32_t k = 0; k < nc; k++, f->total++) {
			const struct hm_change *c = &cs[k];
			char desc[400];

			if (c->op == HM_OP_CERT_PUT) {
				hm_require(f->r->certs != NULL && ci < f->r->certs->n);
				c = &f->r->certs->v[ci++].c;
			}
			if ((e = hm_state_change(s, c)) != 0) {
				if (hm_state_is_full(e))
					return e;
				change_desc(c, desc, sizeof(desc));
				f->bad =
				    f->total > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)f->total;
				snprintf(f->reason, sizeof(f->reason),
					 "change %" PRIu64 " (%s): %s", f->total, desc,
					 hm_strerror(e));
				return e;
			}
			if (!counting && (e = hm__batch_add(f->bb, c)) != 0)
				return seq_encode_failed(f, e);
		}
	}
	return 0;
}

/*
 * Validates the whole request r (taken; first, if not NULL, is r->msgs[0] already decoded) as
 * one state batch (hm_state_apply: grows the table or the certificate store as needed),
 * encoding it into a batch at the same time, and on success numbers it and hands it to the
 * store. r->parts says how the batch is cut into published parts; r->certs holds its cert.put
 * changes, checked (admit()). A change the state refuses aborts everything and is answered
 * with its index and a reason. A store that may refuse the batch gets it with
 * the batch still open in the state (hm_state_prepare), committed once the store has; the next
 * requests of the same group are validated on top of it in the same open batch
 * (hm_state_extend: one that fails is taken out again, the others stay), each numbered and
 * appended as its own batch with the digest and counts of the state after it.
 */
static void sequence(struct origin *o, uint32_t idx, const uint8_t id[16], struct hm__request *r,
		     const struct hm_msg *first)
{
	struct hm__batch_builder bb = {0};
	struct hm_table_info info;
	struct hm__batch *b = NULL;
	struct pending *p;
	const char *warn;
	uint8_t digest[HM_DIGEST_LEN];
	uint64_t total = 0, seq = o->head_seq + 1, ts = hm_wall_ms(), t0 = hm_mono_ns();
	struct seq_feed f = {
	    .o = o, .r = r, .first = first, .bb = &bb, .seq = seq, .ts = ts, .bad = UINT32_MAX};
	int e = 0;

	if (r->parts.n == 0) {
		reply_error(o, idx, id, HM_EUSAGE, UINT32_MAX, "the request holds no changes");
		goto out;
	}
	/* With a store that may refuse, the group stays open in the state until the store has
	 * committed it: another origin may take these seqs first. */
	if (!o->may_refuse)
		e = hm_state_apply(&o->st, seq_feed, &f, o->epoch, seq);
	else if (!o->open_batch)
		e = hm_state_prepare(&o->st, seq_feed, &f, o->epoch, seq);
	else {
		e = hm_state_extend(&o->st, seq_feed, &f, group_redo, o);
		/* The group validated so far is open again whatever this request did (only
		 * running out of memory rebuilding it could lose it). */
		hm_require(hm_state_batch_info(&o->st, digest, &info) == 0);
	}
	if (e != 0) {
		hm__batch_builder_fini(&bb);
		if (f.reason[0] == '\0')
			snprintf(f.reason, sizeof(f.reason), "%s: %s",
				 hm_state_is_full(e) ? "the routing state cannot grow"
						     : "cannot commit",
				 hm_strerror(e));
		reply_error(o, idx, id, e, f.bad, "%s", f.reason);
		goto out;
	}
	total = f.total;
	if (o->may_refuse) {
		hm_require(hm_state_batch_info(&o->st, digest, &info) == 0);
		o->open_batch = true;
	} else {
		hm_table_writer_info(o->st.table, &info);
		hm_state_digest(&o->st, digest);
	}
	/* The state has moved: from here on the batch must reach the store or the process must
	 * die (a restart recovers what is durable). */
	hm_require(hm__batch_end(&bb, id, digest, info.apps, info.domains, info.dynos, &b) == 0);
	o->head_seq = seq;
	o->batches++;
	o->changes += total;
	if (total >= 100000)
		hm_log(HM_LOG_INFO, "origin",
		       "seq %" PRIu64 ": %" PRIu64
		       " changes in %u part(s), %zu bytes; validated and "
		       "encoded in %" PRIu64 " ms",
		       seq, total, b->nparts, b->rec_len, (hm_mono_ns() - t0) / 1000000);
	p = calloc(1, sizeof(*p));
	hm_require(p != NULL);
	p->b = b;
	p->queued_ns = hm_mono_ns();
	warn = r->certs != NULL ? r->certs->warn : NULL; /* moves with r into p->req */
	if (o->may_refuse) {
		/* Its id is remembered when it is durable; until then a resend waits for the
		 * group to resolve (run_queue). */
		p->req = *r;
		memset(r, 0, sizeof(*r));
		p->idx = idx;
		memcpy(p->id, id, 16);
	} else {
		hm__reqcache_put(o->reqs, id, seq);
	}
	if (idx != NO_CTL)
		add_waiter(p, idx, id, warn);
	if (o->pend_tail != NULL)
		o->pend_tail->next = p;
	else
		o->pend_head = p;
	o->pend_tail = p;
	o->store->ops->append(o->store, b, &p->pos);
out:
	hm__request_fini(r);
}

static void reply_stale(struct origin *o, uint32_t idx, const uint8_t id[16])
{
	reply_error(o, idx, id, HM_ESTORE, UINT32_MAX,
		    "this origin cannot commit now (%s): send the request to another origin",
		    o->store_why);
}

static void run_queue(struct origin *o);

/*
 * A whole request (r taken): validated now (the journal), or queued and validated with whatever
 * else is queued as the next group once the store has no group in flight.
 */
static void submit(struct origin *o, uint32_t idx, const uint8_t id[16], struct hm__request *r,
		   const struct hm_msg *first)
{
	struct queued *q;

	if (!o->may_refuse) {
		sequence(o, idx, id, r, first);
		return;
	}
	if (o->store_stale) {
		reply_stale(o, idx, id);
		hm__request_fini(r);
		return;
	}
	q = calloc(1, sizeof(*q));
	hm_require(q != NULL);
	q->idx = idx;
	memcpy(q->id, id, 16);
	q->req = *r;
	if (o->q_tail != NULL)
		o->q_tail->next = q;
	else
		o->q_head = q;
	o->q_tail = q;
	if (!o->store_busy)
		run_queue(o);
}

/*
 * The store is ready (no group in flight): validates the queued requests, in order, as one group
 * while the store has room for it, and sends the group. A request whose id is in the group
 * already (a resend) ends the group: it waits for the answer in the request cache. Stale: the
 * queue is answered with the reason.
 */
static void run_queue(struct origin *o)
{
	while (o->q_head != NULL && !o->stopping && (o->store_stale || !o->store_busy)) {
		struct queued *q = o->q_head;
		uint64_t seq;

		if (!o->store_stale && o->open_batch &&
		    (!o->store->ops->room(o->store) || pending_has_id(o, q->id)))
			break;
		o->q_head = q->next;
		if (o->q_head == NULL)
			o->q_tail = NULL;
		if (q->idx != NO_CTL && hm__reqcache_get(o->reqs, q->id, &seq)) {
			/* Committed meanwhile: a resend, or a request retried here after it was
			 * committed through another origin. */
			o->resent++;
			reply_ack(o, q->idx, q->id, seq, NULL);
			hm__request_fini(&q->req);
		} else if (o->store_stale) {
			reply_stale(o, q->idx, q->id);
			hm__request_fini(&q->req);
		} else {
			sequence(o, q->idx, q->id, &q->req, NULL);
		}
		free(q);
	}
	if (o->open_batch && !o->store_busy) {
		o->store_busy = true;
		o->store->ops->flush(o->store);
	}
}

/* ---- Certificate checks off the loop ------------------------------------------------------ */

/*
 * A request with cert.put changes is checked on the thread pool (syncd/certjob.h) before it
 * is submitted; meanwhile the loop goes on with heartbeats and other requests. What the loop
 * used to guarantee by doing one request at a time is kept where a client can rely on it: a
 * request waits for the earlier requests of its connection (a client that pipelines, or sends
 * its next request after an answer it took for given), and a message whose request id an
 * earlier one has (nng resending it, or hermodctl on a new connection after RESEND_AFTER_MS)
 * waits for that one and is then handled as if it arrived only then: answered as a resend if
 * the request was committed. Requests from other connections pass: nothing ordered them before
 * their arrival. docs/tls.md, "Checks off the loop".
 */

static void held_free(struct held *h)
{
	hm__certjob_free(h->job);
	hm__request_fini(&h->req);
	free(h);
}

/* Whether a request held earlier than h (or arriving now, as h) must go first. */
static bool held_waits(const struct origin *o, const struct held *h, nng_pipe pipe,
		       const uint8_t id[16])
{
	for (const struct held *e = o->held_head; e != NULL && e != h; e = e->next)
		if (nng_pipe_id(e->pipe) == nng_pipe_id(pipe) || memcmp(e->id, id, 16) == 0)
			return true;
	return false;
}

/* Answers a request whose id was committed (a resend); false if it was not. */
static bool answer_resent(struct origin *o, uint32_t idx, const uint8_t id[16])
{
	struct pending *p;
	uint64_t seq;

	if (!hm__reqcache_get(o->reqs, id, &seq))
		return false;
	o->resent++;
	if (seq <= o->published_seq)
		reply_ack(o, idx, id, seq, NULL);
	else if ((p = pending_find(o, seq)) != NULL)
		add_waiter(p, idx, id, NULL);
	else /* Cannot happen: every seq above published_seq is pending. */
		reply_error(o, idx, id, -EAGAIN, UINT32_MAX, "try again");
	return true;
}

static void handle_ctl(struct origin *o, uint32_t idx, nng_msg *msg);

/* Appends a held request (r taken) to the list. */
static struct held *hold(struct origin *o, uint32_t idx, const uint8_t id[16],
			 struct hm__request *r)
{
	struct held *h = calloc(1, sizeof(*h));

	hm_require(h != NULL);
	h->o = o;
	h->idx = idx;
	memcpy(h->id, id, 16);
	h->pipe = idx != NO_CTL ? o->ctls[idx].pipe : (nng_pipe)NNG_PIPE_INITIALIZER;
	h->req = *r;
	memset(r, 0, sizeof(*r));
	if (o->held_tail != NULL)
		o->held_tail->next = h;
	else
		o->held_head = h;
	o->held_tail = h;
	return h;
}

/* A message whose request id a held request has (taken): handled as it arrives again once
 * that request is through (handle_ctl() answers it as a resend if it was committed). */
static bool hold_resend(struct origin *o, uint32_t idx, const uint8_t id[16], nng_msg *msg)
{
	struct hm__request r = {.n = 1};
	struct held *h;

	if (!held_waits(o, NULL, (nng_pipe)NNG_PIPE_INITIALIZER, id))
		return false;
	hm_require((r.msgs = malloc(sizeof(*r.msgs))) != NULL);
	r.msgs[0] = msg;
	h = hold(o, idx, id, &r);
	h->resend = true;
	return true;
}

/* Submits, in order, the held requests whose turn has come; when stopping, drops them
 * unanswered (their clients resend them to the restarted origin), as handle_ctl() does. */
static void release_held(struct origin *o)
{
	struct held **pp = &o->held_head, *prev = NULL, *h;

	while ((h = *pp) != NULL) {
		if (h->checking || (!o->stopping && held_waits(o, h, h->pipe, h->id))) {
			prev = h;
			pp = &h->next;
			continue;
		}
		*pp = h->next;
		if (o->held_tail == h)
			o->held_tail = prev;
		if (o->stopping) {
			held_free(h);
			continue;
		}
		if (h->err != 0) {
			const char *why;
			uint32_t bad = hm__certjob_error(h->job, &why);

			if (h->err == -ECANCELED || why[0] == '\0')
				reply_error(o, h->idx, h->id, h->err, UINT32_MAX,
					    "the certificates were not checked: %s",
					    hm_strerror(h->err));
			else
				reply_error(o, h->idx, h->id, h->err, bad, "%s", why);
			held_free(h);
		} else if (h->resend) {
			nng_msg *msg = h->req.msgs[0];
			uint32_t idx = h->idx;

			h->req.msgs[0] = NULL;
			h->req.n = 0;
			held_free(h);
			handle_ctl(o, idx, msg);
		} else {
			submit(o, h->idx, h->id, &h->req, NULL); /* takes h->req */
			hm__certjob_free(h->job);
			free(h);
		}
	}
}

/* Loop thread: a request's certificates are checked (or refused, or the check cancelled). */
static void on_checked(struct hm__certjob *j, int err, void *arg)
{
	struct held *h = arg;

	h->checking = false;
	h->err = err;
	if (err == 0) {
		h->req.certs = hm__certjob_take(j);
		hm__certjob_free(j);
		h->job = NULL;
	}
	release_held(h->o);
}

/*
 * A whole request (r taken; first, if not NULL, is r->msgs[0] decoded): submitted now if it
 * holds no cert.put and waits for nothing, else held, its certificates checked on the thread
 * pool, and submitted when its turn comes (release_held()).
 */
static void admit(struct origin *o, uint32_t idx, const uint8_t id[16], struct hm__request *r,
		  const struct hm_msg *first)
{
	nng_pipe pipe = idx != NO_CTL ? o->ctls[idx].pipe : (nng_pipe)NNG_PIPE_INITIALIZER;
	bool wait = held_waits(o, NULL, pipe, id);
	struct hm__certjob *j = NULL;
	struct held *h;
	int e;

	if (r->n != 1)
		first = NULL;
	if ((e = hm__certjob_new(&j, o->dec, r, first, (int64_t)(hm_wall_ms() / 1000))) != 0) {
		reply_error(o, idx, id, e, UINT32_MAX, "cannot check the certificates: %s",
			    hm_strerror(e));
		hm__request_fini(r);
		return;
	}
	if (j == NULL && !wait) {
		submit(o, idx, id, r, first);
		return;
	}
	h = hold(o, idx, id, r);
	h->job = j;
	if (j != NULL) {
		/* uv_queue_work() refuses only a NULL callback. */
		hm_require(hm__certjob_start(j, &o->loop, on_checked, h) == 0);
		h->checking = true;
		o->cert_checks++;
	}
}

/* Requests whose certificates are on the thread pool now. */
static uint64_t held_checking(const struct origin *o)
{
	uint64_t n = 0;

	for (const struct held *h = o->held_head; h != NULL; h = h->next)
		n += h->checking;
	return n;
}

/* Stopping: checks in flight are cancelled; what waits is dropped as their callbacks come. */
static void stop_held(struct origin *o)
{
	for (struct held *h = o->held_head; h != NULL; h = h->next)
		if (h->checking)
			hm__certjob_cancel(h->job);
	release_held(o);
}

static void handle_ctl(struct origin *o, uint32_t idx, nng_msg *msg)
{
	static const uint8_t zero_id[16];
	struct hm_proto_error derr;
	struct hm_msg m;
	const uint8_t *id;
	uint32_t nparts;
	int e;

	if (o->stopping) {
		/* Not answered: the client's REQ resends it to the restarted origin. */
		nng_msg_free(msg);
		return;
	}
	if ((e = hm_proto_decode(o->dec, nng_msg_body(msg), nng_msg_len(msg), &m)) != 0) {
		hm_proto_decode_error(o->dec, &derr);
		o->bad_requests++;
		if (o->bad_requests <= 10 || o->bad_requests % 1000 == 0)
			hm_log(HM_LOG_WARNING, "origin",
			       "rejected an undecodable control request (%zu bytes): %s",
			       nng_msg_len(msg), hm_strerror(e));
		nng_msg_free(msg);
		id = derr.has_req_id ? derr.req_id : zero_id;
		if (derr.change != UINT32_MAX)
			reply_error(o, idx, id, e, derr.change,
				    "undecodable request: change %u: %s", derr.change,
				    hm_strerror(e));
		else
			reply_error(o, idx, id, e, UINT32_MAX, "undecodable request: %s",
				    hm_strerror(e));
		return;
	}
	if (m.type != HM_MSG_CTL_REQ) {
		o->bad_requests++;
		nng_msg_free(msg);
		reply_error(o, idx, zero_id, HM_EUNKNOWN, UINT32_MAX,
			    "not a control request (message type %u)", m.type);
		return;
	}
	id = m.ctl_req.req_id;
	nparts = m.ctl_req.nparts;
	if (answer_resent(o, idx, id)) {
		nng_msg_free(msg);
		return;
	}
	if (hold_resend(o, idx, id, msg))
		return;
	if (nparts == 1) {
		struct hm__request r = {.n = 1};
		struct hm__splitter sp;

		r.msgs = malloc(sizeof(*r.msgs));
		hm_require(r.msgs != NULL);
		r.msgs[0] = msg;
		hm__split_init(&sp, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
		hm__split_changes(&sp, &r.parts, &r.cert_puts, &m);
		admit(o, idx, id, &r, &m);
		return;
	}
	{
		struct hm__request r = {0};
		char reason[HM_PROTO_MAX_REASON];

		switch (hm__staging_add(o->staging, &m, msg, &r, &e, reason, sizeof(reason))) {
		case HM__STAGE_HELD:
			reply_staged(o, idx, id);
			break;
		case HM__STAGE_REFUSED:
			reply_error(o, idx, id, e, UINT32_MAX, "%s", reason);
			break;
		case HM__STAGE_COMPLETE:
			/* The last part: the whole request is validated as one batch. */
			admit(o, idx, id, &r, NULL);
			break;
		}
	}
}

/*
 * A batch of the origin's own (the cluster secret; later TLS ticket keys): validated, numbered,
 * journaled and published like a control request, but nobody waits for an answer. The changes
 * travel as a BATCH message, the one message type that can hold secret ops. Loop thread.
 */
static void submit_own(struct origin *o, const struct hm_change *changes, uint32_t n)
{
	struct hm_batch_part part = {.seq = 1, .part = 0, .nparts = 1, .nchanges = n};
	struct hm_pbuf pb = {0};
	struct hm__splitter sp;
	struct hm__request r = {.n = 1};
	struct hm_msg m;
	uint8_t id[16];

	r.msgs = malloc(sizeof(*r.msgs));
	hm_require(r.msgs != NULL);
	part.changes = (struct hm_change *)changes;
	hm_random_bytes(id, sizeof(id));
	hm_require(hm_proto_encode_batch(&pb, o->epoch, &part) == 0);
	hm_require(nng_msg_alloc(&r.msgs[0], pb.len) == 0);
	memcpy(nng_msg_body(r.msgs[0]), pb.data, pb.len);
	hm_pbuf_fini(&pb);
	hm_require(hm_proto_decode(o->dec, nng_msg_body(r.msgs[0]), nng_msg_len(r.msgs[0]), &m) ==
		   0);
	hm__split_init(&sp, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
	hm__split_changes(&sp, &r.parts, &r.cert_puts, &m);
	submit(o, NO_CTL, id, &r, &m);
}

/* The put change of a new random affinity secret; value has AFFINITY_SECRET_LEN bytes. */
static struct hm_change new_affinity_secret(uint8_t *value)
{
	struct hm_change c = {.op = HM_OP_SECRET_PUT,
			      .name = AFFINITY_SECRET,
			      .name_len = sizeof(AFFINITY_SECRET) - 1,
			      .value = value,
			      .value_len = AFFINITY_SECRET_LEN};

	hm_require(hm_random_bytes(value, AFFINITY_SECRET_LEN) == 0);
	return c;
}

static bool has_affinity_secret(const struct origin *o)
{
	uint8_t v[HM_SECRET_MAX];

	return hm_table_writer_secret(o->st.table, AFFINITY_SECRET, v) > 0;
}

/* ---- TLS session ticket keys (docs/tls.md, section 5) --------------------------------------- */

/*
 * The keys are [current, next, previous] in the secrets tls-ticket-0, -1, -2, which go to the
 * certificate store on every node (common/state.h), never to the table. A key's 16-byte name
 * starts with the wall-clock ms at which it starts encrypting (big-endian), then 8 random
 * bytes: so the time of the next rotation survives restarts, in the journal like the keys.
 */
static uint64_t ticket_key_start(const struct hm_ticket_key *k)
{
	uint64_t t = 0;

	for (int i = 0; i < 8; i++)
		t = t << 8 | k->name[i];
	return t;
}

static void ticket_key_make(struct hm_ticket_key *k, uint64_t start_ms)
{
	hm_require(hm_random_bytes(k, sizeof(*k)) == 0);
	for (int i = 0; i < 8; i++)
		k->name[i] = (uint8_t)(start_ms >> (56 - 8 * i));
}

/* The secret.put changes of keys (n of them): tls-ticket-0 .. n-1, borrowing keys. */
static void ticket_key_changes(const struct hm_ticket_key *keys, unsigned n, struct hm_change *c)
{
	static const char *const names[] = {"tls-ticket-0", "tls-ticket-1", "tls-ticket-2"};

	for (unsigned i = 0; i < n; i++)
		c[i] = (struct hm_change){.op = HM_OP_SECRET_PUT,
					  .name = names[i],
					  .name_len = (uint16_t)strlen(names[i]),
					  .value = (const uint8_t *)&keys[i],
					  .value_len = HM_TICKET_KEY_LEN};
}

/* The first keys: current from now, next from one period on. */
static void ticket_keys_first(const struct origin *o, struct hm_ticket_key keys[2],
			      struct hm_change c[2])
{
	uint64_t now = hm_wall_ms();

	ticket_key_make(&keys[0], now);
	ticket_key_make(&keys[1], now + (uint64_t)o->cfg->ticket_rotation);
	ticket_key_changes(keys, 2, c);
}

/* Publishes keys (n of them) as one batch of the origin's. */
static void ticket_keys_submit(struct origin *o, struct hm_ticket_key *keys, unsigned n)
{
	struct hm_change c[3];

	ticket_key_changes(keys, n, c);
	submit_own(o, c, n);
	memset(keys, 0, n * sizeof(*keys));
}

/*
 * Whether the origin may submit a batch of its own now: a store that may refuse takes one batch
 * at a time, and the origin's own batches wait until the state others committed is applied
 * (else two origins would both make what the state lacks, or both rotate).
 */
static bool may_submit_own(const struct origin *o)
{
	return !o->stopping &&
	       (!o->may_refuse || (!o->store_busy && !o->store_stale && o->q_head == NULL));
}

/*
 * Rotates when the next key's time has come: next becomes current, current becomes previous
 * (still decrypting the tickets it issued for one more period), and a new next is made one
 * period on. Loop thread; called at start and every second. Making the first keys is
 * make_missing_secrets().
 */
static void ticket_keys_tick(struct origin *o)
{
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX], out[3];
	uint64_t now = hm_wall_ms(), period = (uint64_t)o->cfg->ticket_rotation;
	int n = hm_certstore_writer_ticket_keys(o->st.certs, keys);

	if (period != 0 && n >= 2 && may_submit_own(o) && now >= ticket_key_start(&keys[1])) {
		uint64_t next = ticket_key_start(&keys[1]) + period;

		out[0] = keys[1];
		ticket_key_make(&out[1], next > now ? next : now + period);
		out[2] = keys[0];
		hm_log(HM_LOG_INFO, "origin", "rotating the TLS session ticket keys");
		o->ticket_rotations++;
		ticket_keys_submit(o, out, 3);
	}
	memset(keys, 0, sizeof(keys));
}

/* Test builds: HM_TEST_NO_SECRET=1 starts without making the secret (a data directory from a
 * build before it existed). */
static bool secret_wanted(void)
{
#ifdef HM_TEST_HOOKS
	const char *v = getenv("HM_TEST_NO_SECRET");

	if (v != NULL && strcmp(v, "1") == 0)
		return false;
#endif
	return true;
}

/*
 * Makes what the state lacks as one batch of the origin's: the cluster affinity secret (when
 * affinity is true and secret_wanted()) and the first TLS ticket keys (unless rotation is off).
 * A data directory from before either existed gets them as the next batch, delivered to the
 * edges as changes; origins sharing a store (etcd) make them the same way, the first to commit
 * wins, and one that loses the race drops its batch (on_refused) and learns the winner's.
 */
static void make_missing_secrets(struct origin *o, bool affinity)
{
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	uint8_t v[AFFINITY_SECRET_LEN];
	struct hm_change c[3];
	uint32_t n = 0;

	if (affinity && secret_wanted() && !has_affinity_secret(o)) {
		c[n++] = new_affinity_secret(v);
		hm_log(HM_LOG_NOTICE, "origin",
		       "no cluster affinity secret in this state: making one (seq %" PRIu64 ")",
		       o->head_seq + 1);
	}
	if (o->cfg->ticket_rotation != 0 &&
	    hm_certstore_writer_ticket_keys(o->st.certs, keys) < 2) {
		ticket_keys_first(o, keys, &c[n]);
		n += 2;
		hm_log(HM_LOG_NOTICE, "origin", "making the TLS session ticket keys");
	}
	if (n > 0)
		submit_own(o, c, n);
	memset(v, 0, sizeof(v));
	memset(keys, 0, sizeof(keys));
}

/* ---- Durable: publish and answer ----------------------------------------------------------- */

static void begin_close(struct origin *o);

static void publish_batch(struct origin *o, const struct hm__batch *b)
{
	for (uint32_t i = 0; i < b->nparts; i++) {
		nng_msg *m;

		if (nng_msg_alloc(&m, b->part_len[i]) != 0) {
			o->dropped_pub++;
			continue;
		}
		memcpy(nng_msg_body(m), hm__batch_part(b, i), b->part_len[i]);
		if (nng_sendmsg(o->pub_sock, m, NNG_FLAG_NONBLOCK) != 0) {
			nng_msg_free(m);
			o->dropped_pub++;
		} else {
			o->pub_sent++;
		}
	}
}

/* Store event: every batch up to durable is durable. */
static void on_durable(void *ctx, uint64_t durable)
{
	struct origin *o = ctx;

	if (o->open_batch && o->pend_head != NULL && o->pend_head->b->seq <= durable) {
		/* The whole group at once (private memory: publishing cannot fail). */
		hm_require(o->pend_tail->b->seq == durable);
		hm_require(hm_state_commit(&o->st, o->epoch, durable) == 0);
		for (struct pending *p = o->pend_head; p != NULL; p = p->next)
			hm__reqcache_put(o->reqs, p->id, p->b->seq);
		o->open_batch = false;
	}
	while (o->pend_head != NULL && o->pend_head->b->seq <= durable) {
		struct pending *p = o->pend_head;
		struct waiter *w, *next;

		o->pend_head = p->next;
		if (o->pend_head == NULL)
			o->pend_tail = NULL;
		if (p->b->rec_len >= (8u << 20))
			hm_log(HM_LOG_INFO, "origin",
			       "seq %" PRIu64 ": durable %" PRIu64 " ms after "
			       "validation",
			       p->b->seq, (hm_mono_ns() - p->queued_ns) / 1000000);
		if (o->pub_open)
			publish_batch(o, p->b);
		hm__syncsrv_publish(o->ss, p->b, &p->pos);
		o->published_seq = p->b->seq;
		memcpy(o->published_digest, p->b->digest, 16);
		o->pub_apps = p->b->apps;
		o->pub_domains = p->b->domains;
		o->pub_dynos = p->b->dynos;
		for (w = p->waiters; w != NULL; w = next) {
			next = w->next;
			reply_ack(o, w->ctl, w->req_id, p->b->seq, w->warn);
			free(w->warn);
			free(w);
		}
		hm__batch_unref(p->b);
		hm__request_fini(&p->req);
		free(p);
	}
	if (o->stopping && o->pend_head == NULL)
		begin_close(o);
}

static void free_pending(struct pending *p)
{
	while (p->waiters != NULL) {
		struct waiter *w = p->waiters;

		p->waiters = w->next;
		free(w->warn);
		free(w);
	}
	hm__batch_unref(p->b);
	hm__request_fini(&p->req);
	free(p);
}

/*
 * Store event: the group in flight was not committed, none of it. A conflict puts its requests
 * back at the head of the queue, in order, to be validated again once the batches that won are
 * applied (the origin's own batches are dropped: on_maint() makes them again if the winners did
 * not); any other refusal is answered.
 */
static void on_refused(void *ctx, int err, const char *why)
{
	struct origin *o = ctx;
	struct queued *back = NULL, *last = NULL;

	hm_require(o->open_batch && o->pend_head != NULL);
	hm_state_abort(&o->st);
	o->open_batch = false;
	o->head_seq = o->published_seq;
	if (err == HM_ECONFLICT)
		o->conflicts++;
	while (o->pend_head != NULL) {
		struct pending *p = o->pend_head;

		o->pend_head = p->next;
		o->batches--;
		if (err == HM_ECONFLICT && p->idx != NO_CTL && !o->stopping) {
			struct queued *q = calloc(1, sizeof(*q));

			hm_require(q != NULL);
			q->idx = p->idx;
			memcpy(q->id, p->id, 16);
			q->req = p->req;
			memset(&p->req, 0, sizeof(p->req));
			if (last != NULL)
				last->next = q;
			else
				back = q;
			last = q;
		} else if (err != HM_ECONFLICT) {
			for (struct waiter *w = p->waiters; w != NULL; w = w->next)
				reply_error(o, w->ctl, w->req_id, err, UINT32_MAX, "%s", why);
		}
		free_pending(p);
	}
	o->pend_tail = NULL;
	if (back != NULL) {
		last->next = o->q_head;
		if (o->q_head == NULL)
			o->q_tail = last;
		o->q_head = back;
	}
	if (o->stopping && o->pend_head == NULL)
		begin_close(o);
}

/* Store event: a batch another origin committed, the next seq. */
static int on_foreign(void *ctx, struct hm__batch *b, const struct hm__jpos *pos)
{
	struct origin *o = ctx;
	int e;

	hm_require(!o->open_batch && b->seq == o->published_seq + 1);
	if ((e = hm__recover_apply(&o->rc, b)) != 0) {
		hm_log(HM_LOG_ERR, "origin",
		       "seq %" PRIu64 " from the store does not apply to this origin's state (%s): "
		       "stopping",
		       b->seq, hm_strerror(e));
		o->exit_code = 1;
		if (!o->stopping) {
			o->stopping = true;
			begin_close(o);
		}
		return e;
	}
	if (o->pub_open)
		publish_batch(o, b);
	hm__syncsrv_publish(o->ss, b, pos);
	o->head_seq = o->published_seq = b->seq;
	memcpy(o->published_digest, b->digest, 16);
	o->pub_apps = b->apps;
	o->pub_domains = b->domains;
	o->pub_dynos = b->dynos;
	o->foreign++;
	return 0;
}

/* Store event: it cannot go on. */
static void on_fatal(void *ctx, int err, const char *why)
{
	struct origin *o = ctx;

	(void)err;
	hm_log(HM_LOG_ERR, "origin", "the store cannot go on (%s): stopping", why);
	o->exit_code = 1;
	if (!o->stopping) {
		o->stopping = true;
		begin_close(o);
	}
}

/* Store event: it takes the next batch. */
static void on_ready(void *ctx)
{
	struct origin *o = ctx;

	o->store_busy = false;
	run_queue(o);
}

/* Store event: it can (not) commit now. Requests waiting are told why rather than held. */
static void on_stale(void *ctx, bool stale, const char *why)
{
	struct origin *o = ctx;

	o->store_stale = stale;
	snprintf(o->store_why, sizeof(o->store_why), "%s", stale ? why : "");
	if (stale)
		run_queue(o);
}

/* ---- Mail from other threads -------------------------------------------------------------- */

static void on_mail(void *ctx, struct hm__mail *m)
{
	struct origin *o = ctx;

	if (m->kind == MAIL_CTL)
		handle_ctl(o, m->idx, m->ptr);
	hm__mail_free(m);
}

static void discard_mail(struct hm__mail *m)
{
	if (m->kind == MAIL_CTL && m->ptr != NULL)
		nng_msg_free(m->ptr);
}

/* nng thread: a control context finished a receive or a send. */
static void ctl_cb(void *arg)
{
	struct ctl *c = arg;
	int rv = nng_aio_result(c->aio);

	if (c->state == CTL_SEND) {
		hm__rep_sent(c->aio, rv, c->pipe, "control");
		c->state = CTL_RECV;
		if (rv == NNG_ECLOSED || atomic_load(&c->o->closing_nng))
			return;
		hm__rep_recv(c->ctx, c->aio);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv != 0) {
		if (!atomic_load(&c->o->closing_nng))
			hm__rep_recv(c->ctx, c->aio);
		return;
	}
	c->state = CTL_BUSY;
	c->pipe = nng_msg_get_pipe(nng_aio_get_msg(c->aio));
	hm__mailbox_post(&c->o->mb, MAIL_CTL, 0, c->idx, 0, nng_aio_get_msg(c->aio));
}

/* ---- Timers: heartbeat, maintenance, compaction -------------------------------------------- */

static void send_heartbeat(struct origin *o)
{
	struct hm_pbuf pb = {0};
	nng_msg *m;

	if (!o->pub_open)
		return;
	if (hm_proto_encode_heartbeat(&pb, o->epoch, o->published_seq, hm_wall_ms(),
				      o->published_digest) == 0 &&
	    nng_msg_alloc(&m, pb.len) == 0) {
		memcpy(nng_msg_body(m), pb.data, pb.len);
		if (nng_sendmsg(o->pub_sock, m, NNG_FLAG_NONBLOCK) != 0)
			nng_msg_free(m);
		else
			o->pub_sent++;
	}
	hm_pbuf_fini(&pb);
	o->last_hb_ms = hm_mono_ms();
}

static void on_heartbeat(uv_timer_t *t)
{
	send_heartbeat(t->data);
}

static void drop_old_snapshots(struct origin *o, uint64_t keep_id)
{
	uint64_t *seqs, *ids;
	int n = hm__snap_list(o->cfg->data, &seqs, &ids);
	char path[PATH_MAX];

	for (int i = 0; i < n; i++) {
		if (ids[i] == keep_id)
			continue;
		hm__snap_path(o->cfg->data, seqs[i], ids[i], path, sizeof(path));
		unlink(path); /* the sync server keeps a descriptor while edges fetch it */
	}
	if (n > 0) {
		free(seqs);
		free(ids);
	}
}

/* A new snapshot is in place: serve it, forget what it covers. */
static int install_snapshot(struct origin *o, const char *path)
{
	struct hm__snapfile *s;
	int e, dropped;

	if ((e = hm__snap_open(&s, path, false)) != 0)
		return e;
	o->snapshot_seq = hm__snap_info(s)->seq;
	hm__syncsrv_snapshot(o->ss, s);
	drop_old_snapshots(o, hm__snap_info(s)->snap_id);
	dropped = o->store->ops->covered(o->store, o->snapshot_seq);
	hm_log(HM_LOG_INFO, "origin",
	       "snapshot at seq %" PRIu64 " in place (%u chunks); %d journal segment(s) dropped",
	       o->snapshot_seq, hm__snap_info(s)->nchunks, dropped > 0 ? dropped : 0);
	return 0;
}

static void start_compaction(struct origin *o)
{
	uint64_t snap_id = 0;
	pid_t parent = getpid(), pid;

	while (snap_id == 0)
		hm_random_bytes(&snap_id, sizeof(snap_id));
	/* Every batch after the snapshot's seq goes to a new segment, so the older segments hold
	 * only what the snapshot covers and can be deleted once it is in place. */
	o->store->ops->roll(o->store, o->head_seq + 1);
	o->journal_at_snapshot = o->store->ops->bytes(o->store);
	pid = fork();
	if (pid < 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot fork for compaction: %s", strerror(errno));
		o->compact_after_ms = hm_mono_ms() + COMPACT_RETRY_MS;
		return;
	}
	if (pid == 0) {
		char path[PATH_MAX], err[PATH_MAX + 256];
		int e;

		/* The child sees the table frozen at this instant (copy-on-write). It dies with its
		 * parent, so no snapshot can appear after the parent has gone. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		e = hm__snap_write(o->cfg->data, &o->st, snap_id, o->reqs, path, sizeof(path), err,
				   sizeof(err));
		if (e != 0)
			hm_log(HM_LOG_ERR, "origin", "compaction: %s", err);
		_exit(e == 0 ? 0 : 1);
	}
	o->child = pid;
	o->child_seq = o->head_seq;
	o->child_snap_id = snap_id;
	hm_log(HM_LOG_INFO, "origin", "compaction started at seq %" PRIu64 " (pid %ld)",
	       o->head_seq, (long)pid);
}

static void on_sigchld(uv_signal_t *s, int signum)
{
	struct origin *o = s->data;
	char path[PATH_MAX];
	int status, e;

	(void)signum;
	if (o->child <= 0 || waitpid(o->child, &status, WNOHANG) != o->child)
		return;
	o->child = 0;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		hm_log(HM_LOG_ERR, "origin", "compaction at seq %" PRIu64 " failed (status %d)",
		       o->child_seq, status);
		o->compact_after_ms = hm_mono_ms() + COMPACT_RETRY_MS;
		return;
	}
	hm__snap_path(o->cfg->data, o->child_seq, o->child_snap_id, path, sizeof(path));
	if (o->store->ops->snapshot != NULL)
		o->store->ops->snapshot(o->store, path, o->child_seq, o->child_snap_id);
	if ((e = install_snapshot(o, path)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot open the new snapshot %s: %s", path,
		       hm_strerror(e));
		o->compact_after_ms = hm_mono_ms() + COMPACT_RETRY_MS;
	}
}

static void on_maint(uv_timer_t *t)
{
	struct origin *o = t->data;
	uint64_t now = hm_mono_ms();

	hm__staging_expire(o->staging, now, STAGED_IDLE_MS);
	if (may_submit_own(o))
		make_missing_secrets(o, o->may_refuse);
	ticket_keys_tick(o);
	hm__syncsrv_tick(o->ss);
	if (o->pub_open && !o->stopping) {
		/* A subscriber that stopped reading costs a message in flight and its socket
		 * buffers until it goes; it catches up over sync when it comes back. */
		int n = hm__txwatch_run(&o->pub_watch, o->pub_sock, o->pub_sent,
					(uint64_t)o->cfg->pub_stall);

		if (n > 0) {
			o->pub_stalled += (uint64_t)n;
			hm_log(HM_LOG_WARNING, "origin",
			       "disconnected %d subscriber(s) that took no message for %" PRId64
			       " ms (%" PRIu64 " so far)",
			       n, o->cfg->pub_stall, o->pub_stalled);
		}
	}
	if (o->child == 0 && !o->stopping && !o->open_batch && now >= o->compact_after_ms &&
	    o->store->ops->bytes(o->store) - o->journal_at_snapshot >=
		(uint64_t)o->cfg->compact_after &&
	    o->head_seq > o->snapshot_seq)
		start_compaction(o);
}

/* ---- Admin ---------------------------------------------------------------------------------- */

static void admin_status(void *ctx, struct hm__jsonw *w)
{
	struct origin *o = ctx;
	struct hm__syncsrv_stats ss;
	struct hm__listener_stats lst = {0};
	char hex[33];

	hm__syncsrv_stats(o->ss, &ss);
	if (o->ls != NULL)
		hm__listeners_stats(o->ls, &lst);
	hm__jw_kcstr(w, "role", "origin");
	hm__jw_kcstr(w, "node", o->node);
	hm__jw_kcstr(w, "state", o->stopping ? "stopping" : "serving");
	hm__jw_khex64(w, "epoch", o->epoch);
	hm__jw_ku64(w, "seq", o->published_seq);
	hm__jw_ku64(w, "origin_seq", o->published_seq);
	hm__jw_ku64(w, "head_seq", o->head_seq);
	hm__jw_ku64(w, "apps", o->pub_apps);
	hm__jw_ku64(w, "domains", o->pub_domains);
	hm__jw_ku64(w, "dynos", o->pub_dynos);
	{
		struct hm_table_info info;

		struct hm_certstore_info ci;

		hm_table_writer_info(o->st.table, &info); /* named secrets: counted, never shown */
		hm_certstore_writer_info(o->st.certs, &ci);
		hm__jw_ku64(w, "secrets", info.secrets);
		hm__jw_ku64(w, "certs", ci.certs);
		hm__jw_ku64(w, "ticket_keys", ci.ticket_keys);
		hm__jw_ku64(w, "ticket_rotations", o->ticket_rotations);
	}
	hm_digest_hex(o->published_digest, hex);
	hm__jw_kcstr(w, "digest", hex);
	hm__jw_kbool(w, "stale", o->store_stale);
	hm__jw_ku64_or_null(w, "last_heartbeat_ms", o->last_hb_ms != 0,
			    hm_mono_ms() - o->last_hb_ms);
	hm__jw_ku64(w, "batches", o->batches);
	hm__jw_ku64(w, "changes", o->changes);
	if (o->store != NULL)
		o->store->ops->status(o->store, w);
	hm__jw_ku64(w, "rejected", o->rejected);
	hm__jw_ku64(w, "cert_checks", o->cert_checks);
	hm__jw_ku64(w, "cert_checks_running", held_checking(o));
	hm__jw_ku64(w, "resent", o->resent);
	hm__jw_ku64(w, "bad_requests", o->bad_requests);
	hm__jw_ku64(w, "snapshot_seq", ss.snapshot_seq);
	hm__jw_kbool(w, "compacting", o->child > 0);
	hm__jw_ku64(w, "journal_bytes",
		    o->store != NULL ? o->store->ops->bytes(o->store) - o->journal_at_snapshot : 0);
	hm__jw_ku64(w, "ring_batches", ss.ring_batches);
	hm__jw_ku64(w, "catchups", ss.catchups);
	hm__jw_ku64(w, "catchup_parts", ss.catchup_parts);
	hm__jw_ku64(w, "journal_reads", ss.journal_reads);
	hm__jw_ku64(w, "snapshots_sent", ss.snapshots_sent);
	hm__jw_ku64(w, "snapshot_chunks", ss.chunks);
	hm__jw_ku64(w, "bad_sync_requests", ss.bad_requests);
	hm__jw_ku64(w, "sync_requests_dropped", ss.dropped);
	hm__jw_ku64(w, "sync_requests_delayed", ss.delayed);
	hm__jw_ku64(w, "listener_restarts", lst.restarts);
	hm__jw_ku64(w, "listener_probes", lst.probes);
	hm__jw_ku64(w, "listener_probe_misses", lst.probe_misses);
	hm__jw_ku64(w, "subscribers_stalled", o->pub_stalled);
	hm__admin_tls_status(w, &o->tls);
	hm__jw_ku64(w, "tls_refused", hm__listeners_tls_refused(o->ls));
	hm__jw_ku64(w, "staged_bytes", hm__staging_bytes(o->staging));
	hm__jw_ku64(w, "store_conflicts", o->conflicts);
	{
		uint64_t n = 0;

		for (const struct queued *q = o->q_head; q != NULL; q = q->next)
			n++;
		hm__jw_ku64(w, "store_queued", n); /* requests waiting for the next group */
	}
	hm__jw_ku64(w, "store_foreign", o->foreign);
}

static void admin_dump_head(void *ctx, struct hm__jsonw *w)
{
	struct origin *o = ctx;
	struct hm_table_info info;
	char hex[33];

	uint8_t digest[HM_DIGEST_LEN];

	hm_table_writer_info(o->st.table, &info);
	hm_state_digest(&o->st, digest);
	hm__jw_kcstr(w, "role", "origin");
	hm__jw_kcstr(w, "node", o->node);
	hm__jw_khex64(w, "epoch", o->epoch);
	hm__jw_ku64(w, "seq", info.seq);
	hm_digest_hex(digest, hex);
	hm__jw_kcstr(w, "digest", hex);
}

static const struct hm_table_writer *admin_table(void *ctx)
{
	return ((struct origin *)ctx)->st.table;
}

static const struct hm_certstore_writer *admin_certs(void *ctx)
{
	return ((struct origin *)ctx)->st.certs;
}

static const struct hm__admin_ops admin_ops = {
    .status = admin_status,
    .dump_head = admin_dump_head,
    .table = admin_table,
    .certs = admin_certs,
};

/* ---- Start-up: recovery ---------------------------------------------------------------------- */

static int recover(struct origin *o)
{
	struct hm__store_recovery r = {.rc = o->rc};
	struct hm_table_info info;
	uint64_t snap_seq;
	bool loaded;
	int e;

	if ((e = o->store->ops->recover(o->store, &r)) != 0)
		return e;
	loaded = r.loaded;
	snap_seq = o->snapshot_seq = r.snapshot_seq;
	if (!loaded && r.records == 0 && !o->may_refuse) {
		/* A fresh data directory: the cluster secret and the TLS ticket keys are part of
		 * its state at seq 0, in the first snapshot written below, so every edge has them
		 * from its first load. (Origins sharing a store make them in one batch instead:
		 * make_missing_secrets().) */
		uint8_t v[AFFINITY_SECRET_LEN];
		struct hm_change c = new_affinity_secret(v), tk[2];
		struct hm_ticket_key keys[2];

		ticket_keys_first(o, keys, tk);
		hm_require(hm_state_begin(&o->st, o->epoch, 0) == 0);
		if ((secret_wanted() && (e = hm_state_change(&o->st, &c)) != 0) ||
		    (e = hm_state_change(&o->st, &tk[0])) != 0 ||
		    (e = hm_state_change(&o->st, &tk[1])) != 0 ||
		    (e = hm_state_commit(&o->st, o->epoch, 0)) != 0) {
			hm_state_abort(&o->st);
			hm_log(HM_LOG_ERR, "origin", "cannot make the cluster secrets: %s",
			       hm_strerror(e));
			return e;
		}
		memset(v, 0, sizeof(v));
		memset(keys, 0, sizeof(keys));
	}
	hm_table_writer_info(o->st.table, &info);
	o->head_seq = o->published_seq = info.seq;
	hm_state_digest(&o->st, o->published_digest);
	o->pub_apps = info.apps;
	o->pub_domains = info.domains;
	o->pub_dynos = info.dynos;
	if (r.records > 0 || r.truncated > 0 || snap_seq > 0)
		hm_log(HM_LOG_NOTICE, "origin",
		       "recovered epoch %016" PRIx64 " seq %" PRIu64 " (snapshot %" PRIu64
		       ", %" PRIu64 " journal records, %" PRIu64 " torn bytes truncated)",
		       o->epoch, o->head_seq, snap_seq, r.records, r.truncated);
	o->journal_at_snapshot = 0;
	if (!loaded) {
		/* No snapshot yet (a fresh directory): write one now, so there always is one to
		 * serve. It holds whatever the journal replay produced. */
		char path[PATH_MAX], err[PATH_MAX + 256];
		uint64_t snap_id = 0;

		while (snap_id == 0)
			hm_random_bytes(&snap_id, sizeof(snap_id));
		if ((e = hm__snap_write(o->cfg->data, &o->st, snap_id, o->reqs, path, sizeof(path),
					err, sizeof(err))) != 0) {
			hm_log(HM_LOG_ERR, "origin", "cannot write the first snapshot: %s", err);
			return e;
		}
		if ((e = install_snapshot(o, path)) != 0)
			return e;
	} else {
		o->store->ops->covered(o->store, o->snapshot_seq);
	}
	return 0;
}

/* ---- Shutdown -------------------------------------------------------------------------------- */

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void final_close(uv_timer_t *t)
{
	struct origin *o = t->data;

	/* Everything acknowledged is durable and answered: only closing and freeing remain. */
	if (o->store != NULL)
		o->store->ops->close(o->store);
	o->store = NULL;
	hm__exit_deadline(3000, "origin");
	if (o->ls != NULL)
		hm__listeners_stop(o->ls);
	/* No operation may be in flight on a socket nng_close() reaps: closing a REP socket with
	 * receives pending on its contexts is where nng 1.5.2 hangs (#1543). So: no new receives,
	 * stop the ones pending, close the contexts, then the sockets. */
	atomic_store(&o->closing_nng, true);
	hm__shutdown_step("stopping the control contexts");
	for (int i = 0; i < NCTL; i++)
		if (o->ctls[i].aio != NULL)
			nng_aio_stop(o->ctls[i].aio);
	for (int i = 0; i < NCTL; i++)
		if (o->ctls[i].aio != NULL)
			nng_ctx_close(o->ctls[i].ctx);
	hm__shutdown_step("stopping the sync threads");
	if (o->ss != NULL)
		hm__syncsrv_stop(o->ss);
	hm__shutdown_step("closing the control socket");
	if (o->ctl_open) {
		nng_close(o->ctl_sock);
		o->ctl_open = false;
	}
	hm__shutdown_step("closing the publish socket");
	if (o->pub_open) {
		nng_close(o->pub_sock);
		o->pub_open = false;
	}
	hm__shutdown_step("closing the sync socket");
	if (o->sync_open) {
		nng_close(o->sync_sock);
		o->sync_open = false;
	}
	hm__shutdown_step("closing");
	if (o->child > 0) {
		kill(o->child, SIGKILL);
		waitpid(o->child, NULL, 0);
		o->child = 0;
	}
	hm__admin_stop(o->admin);
	o->admin = NULL;
	hm__mailbox_close(&o->mb);
	close_handle((uv_handle_t *)&o->sigterm);
	close_handle((uv_handle_t *)&o->sigint);
	close_handle((uv_handle_t *)&o->sigchld);
	close_handle((uv_handle_t *)&o->sighup);
	/* Once libuv lets go of them, a second SIGTERM must not kill the process mid-cleanup. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	close_handle((uv_handle_t *)&o->hb_timer);
	close_handle((uv_handle_t *)&o->maint_timer);
	close_handle((uv_handle_t *)&o->linger_timer);
}

/* Everything acknowledged is answered: give the replies a moment to leave, then close. */
static void begin_close(struct origin *o)
{
	if (o->closing)
		return;
	o->closing = true;
	stop_held(o);
	uv_timer_start(&o->linger_timer, final_close, LINGER_MS, 0);
}

/* A store that cannot answer (etcd unreachable) does not hold a stop for ever: the batch in
 * flight is committed or not, and its client retries elsewhere either way. */
static void stop_anyway(uv_timer_t *t)
{
	struct origin *o = t->data;

	hm_log(HM_LOG_WARNING, "origin",
	       "stopping with seq %" PRIu64 " unresolved: the store has not answered (%s)",
	       o->head_seq, o->store_stale ? o->store_why : "no answer yet");
	begin_close(o);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct origin *o = s->data;

	if (o->stopping)
		return;
	hm_log(HM_LOG_NOTICE, "origin", "%s: finishing %s and stopping",
	       signum == SIGTERM ? "SIGTERM" : "SIGINT",
	       o->pend_head != NULL ? "the pending fsyncs" : "up");
	o->stopping = true;
	hm_sd_notify("STOPPING=1\nSTATUS=finishing pending fsyncs and answers");
	uv_timer_stop(&o->hb_timer);
	uv_timer_stop(&o->maint_timer);
	if (o->pend_head == NULL)
		begin_close(o);
	else if (o->may_refuse)
		uv_timer_start(&o->linger_timer, stop_anyway, STOP_UNRESOLVED_MS, 0);
}

/* ---- Run ------------------------------------------------------------------------------------- */

/* Listens on url with socket s (TLS for a tls+tcp:// url: its peers chain to the CA, or to the
 * control CA when control). */
static int listen_on(struct origin *o, nng_socket s, const char *url, enum hm__peer peer,
		     const char *name, bool control)
{
	nng_tls_config *tls = NULL;
	char err[512];
	int rv;

	if (hm__tls_url(url) && (rv = hm__tls_listener_config(o->tls.cur, control, &tls)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s: cannot configure TLS: %s", name, hm_strerror(rv));
		return rv;
	}
	rv = hm__listeners_add(o->ls, s, url, peer, name, tls, err, sizeof(err));
	if (tls != NULL)
		nng_tls_config_free(tls);
	if (rv != 0)
		hm_log(HM_LOG_ERR, "origin", "%s", err);
	return rv;
}

/* Gives every TLS listener a configuration made from t (SIGHUP). */
static int apply_tls(void *ctx, struct hm__tls *t)
{
	struct origin *o = ctx;
	const struct hm__origin_cfg *cfg = o->cfg;
	const struct {
		nng_socket s;
		const char *url;
		bool control;
	} socks[] = {{o->ctl_sock, cfg->control, true},
		     {o->pub_sock, cfg->publish, false},
		     {o->sync_sock, cfg->sync, false}};
	int e = 0;

	for (size_t i = 0; i < HM_ARRAY_SIZE(socks) && e == 0; i++) {
		nng_tls_config *c;

		if (!hm__tls_url(socks[i].url))
			continue;
		if ((e = hm__tls_listener_config(t, socks[i].control, &c)) != 0)
			break;
		e = hm__listeners_set_tls(o->ls, socks[i].s, c);
		nng_tls_config_free(c);
	}
	return e;
}

/*
 * SIGHUP: the certificate files are read again. New handshakes use them; connections already
 * made keep theirs, so nothing is dropped. Files that do not load change nothing.
 */
static void on_sighup(uv_signal_t *sig, int signum)
{
	struct origin *o = sig->data;

	(void)signum;
	if (!o->stopping)
		hm__tls_reload(&o->tls, o->cfg->tls_cert, o->cfg->tls_ca, o->cfg->control_ca,
			       apply_tls, o, "origin");
}

static int open_sockets(struct origin *o)
{
	const struct hm__origin_cfg *cfg = o->cfg;
	int rv;

	if ((rv = nng_rep0_open(&o->ctl_sock)) == 0) {
		o->ctl_open = true;
		if ((rv = nng_pub0_open(&o->pub_sock)) == 0) {
			o->pub_open = true;
			if ((rv = nng_rep0_open(&o->sync_sock)) == 0)
				o->sync_open = true;
		}
	}
	if (rv != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot open nng sockets: %s", nng_strerror(rv));
		return hm__nng_err(rv);
	}
	if ((rv = hm__nng_socket_opts(o->ctl_sock, 0)) != 0 ||
	    (rv = hm__nng_socket_opts(o->pub_sock, (int)cfg->pub_queue)) != 0 ||
	    (rv = hm__nng_socket_opts(o->sync_sock, 0)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot set socket options: %s", hm_strerror(rv));
		return rv;
	}
	if ((rv = hm__listeners_new(&o->ls, !cfg->no_watchdog)) != 0)
		return rv;
	if ((rv = listen_on(o, o->ctl_sock, cfg->control, HM__PEER_REQ, "control", true)) != 0 ||
	    (rv = listen_on(o, o->pub_sock, cfg->publish, HM__PEER_SUB, "publish", false)) != 0 ||
	    (rv = listen_on(o, o->sync_sock, cfg->sync, HM__PEER_REQ, "sync", false)) != 0)
		return rv;
	for (uint32_t i = 0; i < NCTL; i++) {
		struct ctl *c = &o->ctls[i];

		c->o = o;
		c->idx = i;
		if ((rv = nng_aio_alloc(&c->aio, ctl_cb, c)) != 0 ||
		    (rv = nng_ctx_open(&c->ctx, o->ctl_sock)) != 0) {
			hm_log(HM_LOG_ERR, "origin", "cannot open control contexts: %s",
			       nng_strerror(rv));
			return hm__nng_err(rv);
		}
	}
	if ((rv = hm__listeners_start(o->ls)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot start the listener watchdog: %s",
		       strerror(-rv));
		return rv;
	}
	hm__syncsrv_limit(o->ss, (uint64_t)cfg->sync_rate);
	if ((rv = hm__syncsrv_start(o->ss, o->sync_sock, 2)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot start the sync server: %s", hm_strerror(rv));
		return rv;
	}
	for (uint32_t i = 0; i < NCTL; i++) {
		o->ctls[i].state = CTL_RECV;
		hm__rep_recv(o->ctls[i].ctx, o->ctls[i].aio);
	}
	return 0;
}

static const struct hm__store_events store_events = {
    .durable = on_durable,
    .refused = on_refused,
    .foreign = on_foreign,
    .ready = on_ready,
    .stale = on_stale,
    .fatal = on_fatal,
};

static int setup(struct origin *o)
{
	const struct hm__origin_cfg *cfg = o->cfg;
	struct hm__store_cfg sc = {.dir = cfg->data,
				   .spec = cfg->store,
				   .etcd_ca = cfg->etcd_ca,
				   .etcd_cert = cfg->etcd_cert,
				   .segment_bytes = (uint64_t)cfg->segment,
				   .node = o->node,
				   .etcd_lease_ttl_ms = (uint64_t)cfg->etcd_lease_ttl,
				   .etcd_compact_every_ms = (uint64_t)cfg->etcd_compact_every,
				   .etcd_defrag_every_ms = (uint64_t)cfg->etcd_defrag_every,
				   .etcd_defrag_min = (uint64_t)cfg->etcd_defrag_min,
				   .etcd_quota = (uint64_t)cfg->etcd_quota};
	char err[PATH_MAX + 256];
	int e;

	if ((e = hm__store_new(&o->store, &o->loop, &sc, &store_events, o, err, sizeof(err))) !=
		0 ||
	    (e = o->store->ops->open(o->store, err, sizeof(err))) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s", err);
		return e;
	}
	o->epoch = o->store->epoch;
	o->may_refuse = (o->store->ops->flags & HM__STORE_MAY_REFUSE) != 0;
	if ((e = hm__recover_state_open(&o->st)) != 0 || (e = hm_proto_decoder_new(&o->dec)) != 0 ||
	    (e = hm__reqcache_new(&o->reqs, REQCACHE_SIZE)) != 0 ||
	    (e = hm__staging_new(&o->staging, (uint64_t)cfg->max_request)) != 0 ||
	    (e = hm__syncsrv_new(&o->ss, cfg->data, o->epoch, (uint64_t)cfg->ring)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot start: %s", hm_strerror(e));
		return e;
	}
	o->rc = (struct hm__recover_ctx){.dir = cfg->data,
					 .epoch = o->epoch,
					 .st = &o->st,
					 .dec = o->dec,
					 .reqs = o->reqs,
					 .ss = o->ss};
	if ((e = recover(o)) != 0)
		return e;
	if ((e = o->store->ops->start(o->store, o->head_seq + 1, err, sizeof(err))) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s", err);
		return e;
	}
	/* A data directory from before the secret or the ticket keys existed, or shared state
	 * (etcd) without them yet. */
	make_missing_secrets(o, true);
	ticket_keys_tick(o);
	if ((e = open_sockets(o)) != 0)
		return e;
	/* The admin socket last: when it answers, everything else is up (tests and scripts use it
	 * as the readiness signal). */
	if ((e = hm__admin_start(&o->admin, &o->loop, cfg->admin, (uint64_t)cfg->admin_idle,
				 &admin_ops, o, err, sizeof(err))) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s", err);
		return e;
	}
	uv_signal_start(&o->sigterm, on_signal, SIGTERM);
	uv_signal_start(&o->sigint, on_signal, SIGINT);
	uv_signal_start(&o->sigchld, on_sigchld, SIGCHLD);
	uv_signal_start(&o->sighup, on_sighup, SIGHUP);
	uv_timer_start(&o->hb_timer, on_heartbeat, 0, (uint64_t)cfg->heartbeat);
	uv_timer_start(&o->maint_timer, on_maint, 1000, 1000);
	return 0;
}

int hm__origin_run(const struct hm__origin_cfg *cfg)
{
	struct origin *o = calloc(1, sizeof(*o));
	int e, code;

	if (o == NULL)
		return 1;
	o->cfg = cfg;
	if ((o->tls.cur = cfg->tls) != NULL)
		hm__tls_ref(o->tls.cur);
	o->child = 0;
	snprintf(o->node, sizeof(o->node), "%s", cfg->node);
	uv_loop_init(&o->loop);
	hm_require(hm__mailbox_init(&o->mb, &o->loop, on_mail, discard_mail, o) == 0);
	uv_timer_init(&o->loop, &o->hb_timer);
	uv_timer_init(&o->loop, &o->maint_timer);
	uv_timer_init(&o->loop, &o->linger_timer);
	o->hb_timer.data = o->maint_timer.data = o->linger_timer.data = o;
	uv_signal_init(&o->loop, &o->sigterm);
	uv_signal_init(&o->loop, &o->sigint);
	uv_signal_init(&o->loop, &o->sigchld);
	uv_signal_init(&o->loop, &o->sighup);
	o->sigterm.data = o->sigint.data = o->sigchld.data = o->sighup.data = o;
	e = setup(o);
	if (e == 0) {
		char st[200];

		hm_log(HM_LOG_NOTICE, "origin",
		       "serving epoch %016" PRIx64 " at seq %" PRIu64
		       ": control %s, publish %s, sync %s, admin %s",
		       o->epoch, o->head_seq, cfg->control, cfg->publish, cfg->sync, cfg->admin);
		/* systemd (Type=notify): the journal is replayed and every socket listens. */
		snprintf(st, sizeof(st),
			 "READY=1\nSTATUS=serving epoch %016" PRIx64 " from seq %" PRIu64, o->epoch,
			 o->head_seq);
		hm_sd_notify(st);
		uv_run(&o->loop, UV_RUN_DEFAULT);
		code = o->exit_code;
	} else {
		code = 1;
		o->stopping = true;
		o->closing = true;
		final_close(&o->linger_timer);
		uv_run(&o->loop, UV_RUN_DEFAULT);
	}
	/* Every nng socket is closed and every aio stopped: now nothing calls back. */
	for (int i = 0; i < NCTL; i++)
		if (o->ctls[i].aio != NULL)
			nng_aio_free(o->ctls[i].aio);
	hm__syncsrv_free(o->ss);
	hm__listeners_free(o->ls);
	hm__tls_retired_free();
	hm__staging_free(o->staging);
	while (o->held_head != NULL) { /* the loop has run out: no check is in flight */
		struct held *h = o->held_head;

		o->held_head = h->next;
		held_free(h);
	}
	while (o->q_head != NULL) {
		struct queued *q = o->q_head;

		o->q_head = q->next;
		hm__request_fini(&q->req);
		free(q);
	}
	while (o->pend_head != NULL) {
		struct pending *p = o->pend_head;

		o->pend_head = p->next;
		free_pending(p);
	}
	hm__reqcache_free(o->reqs);
	hm__txwatch_fini(&o->pub_watch);
	hm_table_writer_close(o->st.table);
	hm_certstore_writer_close(o->st.certs);
	hm_proto_decoder_free(o->dec);
	hm__mailbox_fini(&o->mb);
	if (uv_loop_close(&o->loop) != 0)
		hm_log(HM_LOG_WARNING, "origin", "libuv loop not empty at exit");
	hm__tls_unref(o->tls.cur);
	if (code == 0)
		hm_log(HM_LOG_NOTICE, "origin", "stopped at seq %" PRIu64, o->published_seq);
	free(o);
	return code;
}
