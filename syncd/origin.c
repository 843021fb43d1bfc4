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
#include "syncd/certput.h"
#include "syncd/journal.h"
#include "syncd/mailbox.h"
#include "syncd/nngx.h"
#include "syncd/reqcache.h"
#include "syncd/snapfile.h"
#include "syncd/syncd.h"
#include "syncd/syncsrv.h"
#include "syncd/tlscfg.h"
#include "syncd/wire.h"

#define NCTL		 16
#define REQCACHE_SIZE	 65536
#define STAGED_IDLE_MS	 60000
#define LINGER_MS	 150
#define COMPACT_RETRY_MS 60000
/* What a staged request holds besides its parts' bytes (its struct and tables, nng's message
 * headers), charged against --max-request too: otherwise a peer sending many tiny first parts
 * would hold far more memory than --max-request allows. Measured at about half of this. */
#define STAGED_REQUEST_COST 1024
#define STAGED_PART_COST    256

/* The cluster's affinity secret (docs/security.md): made here once, replicated like any change. */
#define AFFINITY_SECRET	    "affinity"
#define AFFINITY_SECRET_LEN 32

/* The "control context" of a batch the origin makes itself: nobody waits for its answer. */
#define NO_CTL UINT32_MAX

enum mail_kind { MAIL_CTL = 1, MAIL_DURABLE = 2 };

enum ctl_state { CTL_RECV, CTL_BUSY, CTL_SEND };

struct ctl {
	struct origin *o;
	uint32_t idx;
	nng_ctx ctx;
	nng_aio *aio;
	nng_pipe pipe; /* the request's connection */
	enum ctl_state state;
};

struct counts {
	uint32_t *v;
	uint32_t n, cap;
};

/* A multi-part request whose last part has not arrived yet. */
struct staged {
	struct staged *next;
	uint8_t req_id[16];
	uint32_t nparts, have, cap;
	nng_msg **msgs; /* owned, have entries (grown as parts come: nparts is the peer's word) */
	size_t bytes;
	uint64_t last_ms;
	struct hm__splitter split; /* how the changes so far are cut into published parts */
	struct counts parts;
};

struct waiter {
	struct waiter *next;
	uint32_t ctl;
	uint8_t req_id[16];
	char *warn; /* owned; warnings for the ACK (a certificate about to expire), or NULL */
};

/* A batch validated and queued for the journal, not yet durable. */
struct pending {
	struct pending *next;
	struct hm__batch *b; /* one reference */
	struct hm__jpos pos;
	struct waiter *waiters;
	uint64_t queued_ns;
};

struct origin {
	const struct hm__origin_cfg *cfg;
	char node[256];
	uv_loop_t loop;
	struct hm__mailbox mb;
	uv_signal_t sigterm, sigint, sigchld, sighup;
	uv_timer_t hb_timer, maint_timer, linger_timer;

	int lock_fd;
	uint64_t epoch;
	struct hm_state st; /* the table and the certificate store, both in private memory */
	struct hm_proto_decoder *dec;
	struct hm__reqcache *reqs;
	struct hm__journal *journal;
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
	struct staged *staged;
	size_t staged_bytes;

	nng_socket ctl_sock, pub_sock, sync_sock;
	bool ctl_open, pub_open, sync_open;
	struct ctl ctls[NCTL];

	/* compaction */
	pid_t child;
	uint64_t child_seq, child_snap_id;
	uint64_t journal_at_snapshot; /* hm__journal_bytes() when the last snapshot began */
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

static void free_msgs(nng_msg **msgs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		nng_msg_free(msgs[i]);
}

static void counts_push(struct counts *c, uint32_t first)
{
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 16;
		uint32_t *v = realloc(c->v, cap * sizeof(*v));

		hm_require(v != NULL);
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = first;
}

/*
 * The changes a request's message holds: a control request's part, or (a batch of the origin's
 * own, submit_own()) a BATCH message, which may hold secret ops. Only the origin makes the
 * latter: handle_ctl() refuses any other type from the network.
 */
static const struct hm_change *msg_changes(const struct hm_msg *m, uint32_t *n)
{
	if (m->type == HM_MSG_BATCH) {
		*n = m->batch.b.nchanges;
		return m->batch.b.changes;
	}
	*n = m->ctl_req.nchanges;
	return m->ctl_req.changes;
}

static struct pending *pending_find(struct origin *o, uint64_t seq)
{
	for (struct pending *p = o->pend_head; p != NULL; p = p->next)
		if (p->b->seq == seq)
			return p;
	return NULL;
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

/* Decides how a request's changes will be cut into published parts (as they arrive). */
static void split_changes(struct hm__splitter *sp, struct counts *parts, const struct hm_msg *m)
{
	uint32_t n;
	const struct hm_change *cs = msg_changes(m, &n);

	for (uint32_t k = 0; k < n; k++) {
		if (hm__split_add(sp, hm__wire_change_size(&cs[k])))
			counts_push(parts, 0);
		parts->v[parts->n - 1]++;
	}
}

/* The canonical records of a request's cert.put changes, in request order. */
struct req_certs {
	struct hm__certput **v; /* each allocated on its own: a record points into its own check */
	uint32_t n, cap;
	char warn[HM_PROTO_MAX_REASON]; /* the warnings, one line each */
};

static void req_certs_fini(struct req_certs *rc)
{
	for (uint32_t i = 0; i < rc->n; i++) {
		hm__certput_fini(rc->v[i]);
		free(rc->v[i]);
	}
	free(rc->v);
	memset(rc, 0, sizeof(*rc));
}

/*
 * Checks every cert.put of the request (syncd/certcheck, docs/tls.md) before anything is
 * applied, and keeps the canonical records. Returns 0, or an error already answered.
 */
static int check_certs(struct origin *o, uint32_t idx, const uint8_t id[16], nng_msg **msgs,
		       uint32_t n, const struct hm_msg *first, struct req_certs *rc)
{
	uint64_t total = 0;
	int64_t now = (int64_t)(hm_wall_ms() / 1000);
	size_t wl = 0;

	for (uint32_t i = 0; i < n; i++) {
		struct hm_msg dm;
		const struct hm_msg *m = &dm;
		uint32_t nc;

		if (i == 0 && first != NULL)
			m = first;
		else
			hm_require(hm_proto_decode(o->dec, nng_msg_body(msgs[i]),
						   nng_msg_len(msgs[i]), &dm) == 0);
		const struct hm_change *cs = msg_changes(m, &nc);

		for (uint32_t k = 0; k < nc; k++, total++) {
			struct hm__certput *cp;
			int e;

			if (cs[k].op != HM_OP_CERT_PUT)
				continue;
			if (rc->n == rc->cap) {
				uint32_t cap = rc->cap ? rc->cap * 2 : 4;
				struct hm__certput **v = realloc(rc->v, cap * sizeof(*v));

				hm_require(v != NULL);
				rc->v = v;
				rc->cap = cap;
			}
			hm_require((cp = calloc(1, sizeof(*cp))) != NULL);
			rc->v[rc->n++] = cp;
			if ((e = hm__certput_make(cp, &cs[k], now)) != 0) {
				reply_error(o, idx, id, e == -EINVAL ? HM_ECERTREFUSED : e,
					    total > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)total,
					    "change %" PRIu64 " (cert.put %.*s): %s", total,
					    (int)cs[k].name_len, cs[k].name,
					    cp->chk.text[0] != '\0' ? cp->chk.text
								    : hm_strerror(e));
				return e;
			}
			if (cp->chk.warnings != 0 && wl < sizeof(rc->warn) - 1) {
				int w = snprintf(rc->warn + wl, sizeof(rc->warn) - wl,
						 "%scert %.*s: %s", wl > 0 ? "\n" : "",
						 (int)cs[k].name_len, cs[k].name, cp->chk.text);

				wl = w < 0 ? wl : HM_MIN(wl + (size_t)w, sizeof(rc->warn) - 1);
			}
		}
	}
	return 0;
}

/* What sequence() feeds into the state: the request's changes, each cert.put replaced by its
 * canonical record, encoded into the batch at the same time. */
struct seq_feed {
	struct origin *o;
	nng_msg **msgs;
	uint32_t n;
	const struct hm_msg *first; /* msgs[0] decoded; usable until anything else is decoded */
	struct hm__batch_builder *bb;
	const struct counts *parts;
	const struct req_certs *certs;
	uint64_t seq, ts, total;
	uint32_t bad;
	int fed;
	bool encode_failed;
	char reason[HM_PROTO_MAX_REASON];
};

static int seq_feed(struct hm_state *s, void *arg)
{
	struct seq_feed *f = arg;
	bool counting = hm_state_counting(s);
	uint32_t ci = 0;
	int e = 0;

	f->total = 0;
	if (!counting && (e = hm__batch_begin(f->bb, f->o->epoch, f->seq, f->ts, f->parts->v,
					      f->parts->n)) != 0) {
		f->encode_failed = true;
		snprintf(f->reason, sizeof(f->reason), "cannot encode the batch: %s",
			 hm_strerror(e));
		return e;
	}
	for (uint32_t i = 0; i < f->n; i++) {
		struct hm_msg dm;
		const struct hm_msg *m = &dm;
		uint32_t nc;

		if (i == 0 && f->first != NULL && f->fed == 0)
			m = f->first;
		else
			hm_require(hm_proto_decode(f->o->dec, nng_msg_body(f->msgs[i]),
						   nng_msg_len(f->msgs[i]), &dm) == 0);
		f->fed++;
		const struct hm_change *cs = msg_changes(m, &nc);

		for (uint32_t k = 0; k < nc; k++, f->total++) {
			const struct hm_change *c = &cs[k];
			char desc[400];

			if (c->op == HM_OP_CERT_PUT)
				c = &f->certs->v[ci++]->c;
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
			if (!counting && (e = hm__batch_add(f->bb, c)) != 0) {
				f->encode_failed = true;
				snprintf(f->reason, sizeof(f->reason),
					 "cannot encode the batch: %s", hm_strerror(e));
				return e;
			}
		}
	}
	return 0;
}

/*
 * Validates the whole request (msgs are taken; first, if not NULL, is msgs[0] already decoded)
 * as one state batch (hm_state_apply: grows the table or the certificate store as needed),
 * encoding it into a batch at the same time, and on success numbers it and queues it for the
 * journal. parts says how the batch is cut into published parts. A change the state refuses
 * aborts everything and is answered with its index and a reason; so does a certificate that
 * fails its checks, before anything is applied.
 */
static void sequence(struct origin *o, uint32_t idx, const uint8_t id[16], nng_msg **msgs,
		     uint32_t n, const struct counts *parts, const struct hm_msg *first)
{
	struct hm__batch_builder bb = {0};
	struct hm_table_info info;
	struct req_certs certs = {0};
	struct hm__batch *b = NULL;
	struct pending *p;
	uint8_t digest[HM_DIGEST_LEN];
	uint64_t total = 0, seq = o->head_seq + 1, ts = hm_wall_ms(), t0 = hm_mono_ns();
	struct seq_feed f = {.o = o,
			     .msgs = msgs,
			     .n = n,
			     .first = first,
			     .bb = &bb,
			     .parts = parts,
			     .certs = &certs,
			     .seq = seq,
			     .ts = ts,
			     .bad = UINT32_MAX};
	int e = 0;

	if (parts->n == 0) {
		reply_error(o, idx, id, HM_EUSAGE, UINT32_MAX, "the request holds no changes");
		goto out;
	}
	if (check_certs(o, idx, id, msgs, n, first, &certs) != 0)
		goto out;
	if (n > 1)
		f.first = NULL; /* check_certs decoded the other messages over it */
	if ((e = hm_state_apply(&o->st, seq_feed, &f, o->epoch, seq)) != 0) {
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
	hm_table_writer_info(o->st.table, &info);
	hm_state_digest(&o->st, digest);
	/* The table has moved: from here on the batch must reach the journal or the process
	 * must die (a restart recovers what is durable). */
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
	hm__reqcache_put(o->reqs, id, seq);
	p = calloc(1, sizeof(*p));
	hm_require(p != NULL);
	p->b = b;
	p->queued_ns = hm_mono_ns();
	hm__journal_append(o->journal, b, &p->pos);
	if (idx != NO_CTL)
		add_waiter(p, idx, id, certs.warn);
	if (o->pend_tail != NULL)
		o->pend_tail->next = p;
	else
		o->pend_head = p;
	o->pend_tail = p;
out:
	req_certs_fini(&certs);
	free_msgs(msgs, n);
	free(msgs);
}

static struct staged *staged_find(struct origin *o, const uint8_t id[16], struct staged ***link)
{
	struct staged **pp = &o->staged;

	for (; *pp != NULL; pp = &(*pp)->next)
		if (memcmp((*pp)->req_id, id, 16) == 0) {
			if (link != NULL)
				*link = pp;
			return *pp;
		}
	return NULL;
}

static void staged_drop(struct origin *o, struct staged **link)
{
	struct staged *st = *link;

	*link = st->next;
	o->staged_bytes -= st->bytes;
	free_msgs(st->msgs, st->have);
	free(st->msgs);
	free(st->parts.v);
	free(st);
}

static void handle_ctl(struct origin *o, uint32_t idx, nng_msg *msg)
{
	static const uint8_t zero_id[16];
	struct hm_proto_error derr;
	struct hm_msg m;
	struct staged *st, **link = NULL;
	const uint8_t *id;
	uint64_t seq, cost;
	uint32_t part, nparts;
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
	part = m.ctl_req.part;
	nparts = m.ctl_req.nparts;
	if (hm__reqcache_get(o->reqs, id, &seq)) {
		struct pending *p;

		o->resent++;
		if (seq <= o->published_seq) {
			reply_ack(o, idx, id, seq, NULL);
		} else if ((p = pending_find(o, seq)) != NULL) {
			add_waiter(p, idx, id, NULL);
		} else {
			/* Cannot happen: every seq above published_seq is pending. */
			reply_error(o, idx, id, -EAGAIN, UINT32_MAX, "try again");
		}
		nng_msg_free(msg);
		return;
	}
	if (nparts == 1) {
		nng_msg **one = malloc(sizeof(*one));
		struct hm__splitter sp;
		struct counts parts = {0};

		hm_require(one != NULL);
		one[0] = msg;
		hm__split_init(&sp, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
		split_changes(&sp, &parts, &m);
		sequence(o, idx, id, one, 1, &parts, &m);
		free(parts.v);
		return;
	}
	st = staged_find(o, id, &link);
	if (st == NULL && part == 0) {
		st = calloc(1, sizeof(*st));
		hm_require(st != NULL);
		memcpy(st->req_id, id, 16);
		st->nparts = nparts;
		hm__split_init(&st->split, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
		st->next = o->staged;
		o->staged = st;
		link = &o->staged;
	}
	if (st == NULL) {
		reply_error(o, idx, id, HM_EGAP, UINT32_MAX,
			    "part %u of %u arrived without the parts before it (the origin may "
			    "have restarted): send the request again from part 0",
			    part, nparts);
		nng_msg_free(msg);
		return;
	}
	if (st->nparts != nparts || part > st->have) {
		reply_error(o, idx, id, HM_EGAP, UINT32_MAX,
			    "part %u of %u does not follow the %u parts received: send the request "
			    "again from part 0",
			    part, nparts, st->have);
		staged_drop(o, link);
		nng_msg_free(msg);
		return;
	}
	st->last_ms = hm_mono_ms();
	if (part < st->have) {
		/* A resend of a part already held. */
		nng_msg_free(msg);
		reply_staged(o, idx, id);
		return;
	}
	cost = nng_msg_len(msg) + STAGED_PART_COST + (st->have == 0 ? STAGED_REQUEST_COST : 0);
	if (o->staged_bytes + cost > (uint64_t)o->cfg->max_request) {
		reply_error(o, idx, id, HM_ETOOBIG, UINT32_MAX,
			    "multi-part requests in progress would exceed --max-request (%" PRId64
			    " bytes)",
			    o->cfg->max_request);
		staged_drop(o, link);
		nng_msg_free(msg);
		return;
	}
	if (st->have == st->cap) {
		uint32_t cap = st->cap ? HM_MIN(st->cap * 2, st->nparts) : HM_MIN(8u, st->nparts);
		nng_msg **msgs = realloc(st->msgs, cap * sizeof(*msgs));

		hm_require(msgs != NULL);
		st->msgs = msgs;
		st->cap = cap;
	}
	st->msgs[st->have++] = msg;
	st->bytes += cost;
	o->staged_bytes += cost;
	split_changes(&st->split, &st->parts, &m);
	if (st->have < st->nparts) {
		reply_staged(o, idx, id);
		return;
	}
	/* The last part: the whole request is validated as one batch. */
	{
		nng_msg **msgs = st->msgs;
		uint32_t n = st->have;
		struct counts parts = st->parts;

		st->msgs = NULL;
		st->have = 0;
		st->parts.v = NULL;
		o->staged_bytes -= st->bytes;
		st->bytes = 0;
		staged_drop(o, link);
		sequence(o, idx, id, msgs, n, &parts, NULL);
		free(parts.v);
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
	struct counts parts = {0};
	struct hm_msg m;
	uint8_t id[16];
	nng_msg **one = malloc(sizeof(*one));

	hm_require(one != NULL);
	part.changes = (struct hm_change *)changes;
	hm_random_bytes(id, sizeof(id));
	hm_require(hm_proto_encode_batch(&pb, o->epoch, &part) == 0);
	hm_require(nng_msg_alloc(&one[0], pb.len) == 0);
	memcpy(nng_msg_body(one[0]), pb.data, pb.len);
	hm_pbuf_fini(&pb);
	hm_require(hm_proto_decode(o->dec, nng_msg_body(one[0]), nng_msg_len(one[0]), &m) == 0);
	hm__split_init(&sp, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
	split_changes(&sp, &parts, &m);
	sequence(o, NO_CTL, id, one, 1, &parts, &m);
	free(parts.v);
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
 * Makes the first keys, or rotates when the next key's time has come: next becomes current,
 * current becomes previous (still decrypting the tickets it issued for one more period), and a
 * new next is made one period on. Loop thread; called at start and every second.
 */
static void ticket_keys_tick(struct origin *o)
{
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX], out[3];
	uint64_t now = hm_wall_ms(), period = (uint64_t)o->cfg->ticket_rotation;
	int n = hm_certstore_writer_ticket_keys(o->st.certs, keys);

	if (o->stopping || period == 0)
		return;
	if (n < 2) {
		/* A data directory from before the keys existed: they become the next batch. */
		struct hm_change c[2];

		ticket_keys_first(o, out, c);
		hm_log(HM_LOG_NOTICE, "origin", "making the TLS session ticket keys");
		submit_own(o, c, 2);
		memset(out, 0, sizeof(out));
	} else if (now >= ticket_key_start(&keys[1])) {
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

static void handle_durable(struct origin *o)
{
	uint64_t durable = hm__journal_durable(o->journal);

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
		free(p);
	}
	if (o->stopping && o->pend_head == NULL)
		begin_close(o);
}

/* ---- Mail from other threads -------------------------------------------------------------- */

static void on_mail(void *ctx, struct hm__mail *m)
{
	struct origin *o = ctx;

	if (m->kind == MAIL_CTL)
		handle_ctl(o, m->idx, m->ptr);
	else if (m->kind == MAIL_DURABLE && o->journal != NULL)
		handle_durable(o);
	hm__mail_free(m);
}

static void discard_mail(struct hm__mail *m)
{
	if (m->kind == MAIL_CTL && m->ptr != NULL)
		nng_msg_free(m->ptr);
}

static void on_journal_durable(void *ctx)
{
	struct origin *o = ctx;

	hm__mailbox_post(&o->mb, MAIL_DURABLE, 0, 0, 0, NULL);
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
	dropped = hm__journal_drop_covered(o->cfg->data, o->snapshot_seq);
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
	hm__journal_roll(o->journal, o->head_seq + 1);
	o->journal_at_snapshot = hm__journal_bytes(o->journal);
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
	if ((e = install_snapshot(o, path)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot open the new snapshot %s: %s", path,
		       hm_strerror(e));
		o->compact_after_ms = hm_mono_ms() + COMPACT_RETRY_MS;
	}
}

static void on_maint(uv_timer_t *t)
{
	struct origin *o = t->data;
	struct staged **pp = &o->staged;
	uint64_t now = hm_mono_ms();

	ticket_keys_tick(o);
	while (*pp != NULL) {
		if (now - (*pp)->last_ms >= STAGED_IDLE_MS) {
			hm_log(HM_LOG_WARNING, "origin",
			       "dropping a multi-part request idle for %d s (%u of %u parts)",
			       STAGED_IDLE_MS / 1000, (*pp)->have, (*pp)->nparts);
			staged_drop(o, pp);
		} else {
			pp = &(*pp)->next;
		}
	}
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
	if (o->child == 0 && !o->stopping && now >= o->compact_after_ms &&
	    hm__journal_bytes(o->journal) - o->journal_at_snapshot >=
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
	hm__jw_kbool(w, "stale", false);
	hm__jw_key(w, "last_heartbeat_ms");
	if (o->last_hb_ms != 0)
		hm__jw_u64(w, hm_mono_ms() - o->last_hb_ms);
	else
		hm__jw_null(w);
	hm__jw_ku64(w, "batches", o->batches);
	hm__jw_ku64(w, "changes", o->changes);
	hm__jw_ku64(w, "fsyncs", o->journal != NULL ? hm__journal_fsyncs(o->journal) : 0);
	hm__jw_ku64(w, "rejected", o->rejected);
	hm__jw_ku64(w, "resent", o->resent);
	hm__jw_ku64(w, "bad_requests", o->bad_requests);
	hm__jw_ku64(w, "snapshot_seq", ss.snapshot_seq);
	hm__jw_kbool(w, "compacting", o->child > 0);
	hm__jw_ku64(w, "journal_bytes",
		    o->journal != NULL ? hm__journal_bytes(o->journal) - o->journal_at_snapshot
				       : 0);
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
	hm__jw_ku64(w, "staged_bytes", o->staged_bytes);
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

/* ---- Start-up: data directory, recovery ---------------------------------------------------- */

static int mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Reads DIR/epoch, or creates it for a fresh directory. */
static int load_epoch(struct origin *o)
{
	const char *dir = o->cfg->data;
	char path[PATH_MAX], tmp[PATH_MAX], text[64];
	uint64_t *a = NULL, *b = NULL, *c = NULL;
	int fd, n, nj, ns;
	ssize_t r;

	snprintf(path, sizeof(path), "%s/epoch", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		r = read(fd, text, sizeof(text) - 1);
		close(fd);
		if (r < 16 || hm_unhex(text, 16, &o->epoch, 8) != 0) {
			hm_log(HM_LOG_ERR, "origin", "%s is not 16 hex digits", path);
			return HM_ECORRUPT;
		}
		/* hm_unhex wrote the bytes big-endian-first; read them back as a number. */
		{
			uint8_t *p = (uint8_t *)&o->epoch;
			uint64_t v = 0;

			for (int i = 0; i < 8; i++)
				v = v << 8 | p[i];
			o->epoch = v;
		}
		if (o->epoch == 0) {
			hm_log(HM_LOG_ERR, "origin", "%s holds epoch 0", path);
			return HM_ECORRUPT;
		}
		return 0;
	}
	if (errno != ENOENT) {
		hm_log(HM_LOG_ERR, "origin", "cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	nj = hm__journal_list(dir, &a);
	ns = hm__snap_list(dir, &b, &c);
	free(a);
	free(b);
	free(c);
	if (nj > 0 || ns > 0) {
		hm_log(HM_LOG_ERR, "origin", "%s has a journal or snapshots but no epoch file",
		       dir);
		return HM_ECORRUPT;
	}
	while (o->epoch == 0)
		hm_random_bytes(&o->epoch, sizeof(o->epoch));
	n = snprintf(text, sizeof(text), "%016" PRIx64 "\n", o->epoch);
	snprintf(tmp, sizeof(tmp), "%s/epoch.tmp", dir);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    write(fd, text, (size_t)n) != n || fsync(fd) != 0 || close(fd) != 0 ||
	    rename(tmp, path) != 0 || hm_fsync_path(dir, false) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot create %s: %s", path, strerror(errno));
		return -EIO;
	}
	hm_log(HM_LOG_NOTICE, "origin", "new data directory %s: epoch %016" PRIx64, dir, o->epoch);
	return 0;
}

static void reqs_from_snapshot(void *ctx, const uint8_t id[16], uint64_t seq)
{
	hm__reqcache_put(ctx, id, seq);
}

/* The origin's state in private memory: a table and a certificate store (docs/tls.md). */
static int open_state(struct origin *o)
{
	int e;

	if ((e = hm_table_writer_open(&o->st.table, NULL, NULL, 0, 0)) != 0)
		return e;
	if ((e = hm_certstore_writer_open(&o->st.certs, NULL, NULL, 0, 0)) != 0) {
		hm_table_writer_close(o->st.table);
		o->st.table = NULL;
	}
	return e;
}

/* Loads the newest usable snapshot (*loaded, *seq), or leaves an empty table at (epoch, 0). */
static int load_snapshot(struct origin *o, bool *loaded, uint64_t *seq)
{
	uint64_t *seqs, *ids;
	int n = hm__snap_list(o->cfg->data, &seqs, &ids), e = 0;
	char path[PATH_MAX];

	*seq = 0;
	*loaded = false;
	if (n < 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot list %s: %s", o->cfg->data, strerror(-n));
		return n;
	}
	for (int i = 0; i < n; i++) {
		struct hm__snapfile *s;

		hm__snap_path(o->cfg->data, seqs[i], ids[i], path, sizeof(path));
		if ((e = hm__snap_open(&s, path, true)) != 0) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: %s", path,
			       hm_strerror(e));
			continue;
		}
		if (hm__snap_info(s)->epoch != o->epoch) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: another epoch",
			       path);
			hm__snap_close(s);
			continue;
		}
		e = hm__snap_load(s, &o->st, o->dec);
		if (e != 0) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: %s", path,
			       hm_strerror(e));
			hm__snap_close(s);
			hm_table_writer_close(o->st.table);
			hm_certstore_writer_close(o->st.certs);
			o->st.table = NULL;
			o->st.certs = NULL;
			if ((e = open_state(o)) != 0)
				break;
			continue;
		}
		hm__snap_reqs(s, reqs_from_snapshot, o->reqs);
		*loaded = true;
		*seq = hm__snap_info(s)->seq;
		o->snapshot_seq = *seq;
		hm__syncsrv_snapshot(o->ss, s);
		hm_log(HM_LOG_INFO, "origin", "loaded snapshot %s (seq %" PRIu64 ")", path, *seq);
		break;
	}
	free(seqs);
	free(ids);
	if (e != 0 && o->st.table == NULL)
		return e;
	if (!*loaded) {
		/* No snapshot: the empty state, stamped with the epoch. */
		hm_require(hm_state_begin(&o->st, o->epoch, 0) == 0);
		if ((e = hm_state_commit(&o->st, o->epoch, 0)) != 0)
			return e;
	}
	return 0;
}

/* Journal replay: one recovered batch, fed part by part. */
struct replay_feed {
	struct origin *o;
	const struct hm__batch *b;
};

static int replay_feed(struct hm_state *s, void *arg)
{
	struct replay_feed *f = arg;
	const struct hm__batch *b = f->b;
	int e = 0;

	for (uint32_t i = 0; i < b->nparts && e == 0; i++) {
		struct hm_msg m;

		e = hm_proto_decode(f->o->dec, hm__batch_part(b, i), b->part_len[i], &m);
		if (e == 0 && (m.type != HM_MSG_BATCH || m.batch.epoch != f->o->epoch ||
			       m.batch.b.seq != b->seq || m.batch.b.part != i ||
			       m.batch.b.nparts != b->nparts))
			e = HM_ECORRUPT;
		for (uint32_t k = 0; e == 0 && k < m.batch.b.nchanges; k++)
			e = hm_state_change(s, &m.batch.b.changes[k]);
	}
	return e;
}

static int replay_batch(void *ctx, struct hm__batch *b, const struct hm__jpos *pos)
{
	struct origin *o = ctx;
	struct replay_feed f = {o, b};
	struct hm_table_info info;
	uint8_t digest[HM_DIGEST_LEN];
	int e;

	if ((e = hm_state_apply(&o->st, replay_feed, &f, o->epoch, b->seq)) != 0) {
		hm__batch_unref(b);
		return e;
	}
	hm_table_writer_info(o->st.table, &info);
	hm_state_digest(&o->st, digest);
	if (memcmp(digest, b->digest, 16) != 0 || info.apps != b->apps ||
	    info.domains != b->domains || info.dynos != b->dynos) {
		hm__batch_unref(b);
		return HM_EDIGEST;
	}
	hm__reqcache_put(o->reqs, b->req_id, b->seq);
	hm__syncsrv_publish(o->ss, b, pos);
	hm__batch_unref(b);
	return 0;
}

static int recover(struct origin *o)
{
	struct hm__jrecover r = {0};
	struct hm_table_info info;
	uint64_t snap_seq;
	bool loaded;
	int e;

	if ((e = load_snapshot(o, &loaded, &snap_seq)) != 0)
		return e;
	r.epoch = o->epoch;
	r.after_seq = snap_seq;
	r.batch = replay_batch;
	r.ctx = o;
	if ((e = hm__journal_recover(o->cfg->data, &r)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "journal recovery failed: %s", r.err);
		return e;
	}
	if (!loaded && r.records == 0) {
		/* A fresh data directory: the cluster secret and the TLS ticket keys are part of
		 * its state at seq 0, in the first snapshot written below, so every edge has them
		 * from its first load. */
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
		hm__journal_drop_covered(o->cfg->data, o->snapshot_seq);
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
	hm__journal_stop(o->journal);
	o->journal = NULL;
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
	uv_timer_start(&o->linger_timer, final_close, LINGER_MS, 0);
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

static int setup(struct origin *o)
{
	const struct hm__origin_cfg *cfg = o->cfg;
	struct hm__journal_cfg jc = {0};
	char path[PATH_MAX], err[PATH_MAX + 256];
	int e;

	if ((e = mkdir_p(cfg->data, 0700)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot create %s: %s", cfg->data, strerror(-e));
		return e;
	}
	snprintf(path, sizeof(path), "%s/lock", cfg->data);
	if ((o->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot open %s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(o->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s is in use by another origin", cfg->data);
		return -EBUSY;
	}
	if ((e = load_epoch(o)) != 0)
		return e;
	if ((e = open_state(o)) != 0 || (e = hm_proto_decoder_new(&o->dec)) != 0 ||
	    (e = hm__reqcache_new(&o->reqs, REQCACHE_SIZE)) != 0 ||
	    (e = hm__syncsrv_new(&o->ss, cfg->data, o->epoch, (uint64_t)cfg->ring)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot start: %s", hm_strerror(e));
		return e;
	}
	if ((e = recover(o)) != 0)
		return e;
	jc.dir = cfg->data;
	jc.epoch = o->epoch;
	jc.segment_bytes = (uint64_t)cfg->segment;
	jc.durable = on_journal_durable;
	jc.ctx = o;
	if ((e = hm__journal_start(&o->journal, &jc, o->head_seq + 1, err, sizeof(err))) != 0) {
		hm_log(HM_LOG_ERR, "origin", "%s", err);
		return e;
	}
	if (!has_affinity_secret(o) && secret_wanted()) {
		/* A data directory from before the secret existed: it becomes the next batch,
		 * delivered to the edges as a change. */
		uint8_t v[AFFINITY_SECRET_LEN];
		struct hm_change c = new_affinity_secret(v);

		hm_log(HM_LOG_NOTICE, "origin",
		       "no cluster affinity secret in this state: making one (seq %" PRIu64 ")",
		       o->head_seq + 1);
		submit_own(o, &c, 1);
		memset(v, 0, sizeof(v));
	}
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
	o->lock_fd = -1;
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
	hm__journal_stop(o->journal); /* already stopped unless start-up failed */
	for (int i = 0; i < NCTL; i++)
		if (o->ctls[i].aio != NULL)
			nng_aio_free(o->ctls[i].aio);
	hm__syncsrv_free(o->ss);
	hm__listeners_free(o->ls);
	while (o->staged != NULL)
		staged_drop(o, &o->staged);
	while (o->pend_head != NULL) {
		struct pending *p = o->pend_head;

		o->pend_head = p->next;
		while (p->waiters != NULL) {
			struct waiter *w = p->waiters;

			p->waiters = w->next;
			free(w->warn);
			free(w);
		}
		hm__batch_unref(p->b);
		free(p);
	}
	hm__reqcache_free(o->reqs);
	hm__txwatch_fini(&o->pub_watch);
	hm_table_writer_close(o->st.table);
	hm_certstore_writer_close(o->st.certs);
	hm_proto_decoder_free(o->dec);
	hm__mailbox_fini(&o->mb);
	if (uv_loop_close(&o->loop) != 0)
		hm_log(HM_LOG_WARNING, "origin", "libuv loop not empty at exit");
	if (o->lock_fd >= 0)
		close(o->lock_fd);
	hm__tls_unref(o->tls.cur);
	if (code == 0)
		hm_log(HM_LOG_NOTICE, "origin", "stopped at seq %" PRIu64, o->published_seq);
	free(o);
	return code;
}
