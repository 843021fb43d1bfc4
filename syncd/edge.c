/*
 * hermod-syncd edge: keeps the node's routing table equal to the origins' state.
 *
 * The loop owns the table writer and a small state machine (docs/sync.md, "The edge"):
 *
 *   WAIT      the SUB socket is not connected yet; the table serves what it has.
 *   CATCHUP   a CATCHUP_REQ is out (or being retried); every PUB message is buffered.
 *   SNAPSHOT  a full resync: chunks are fetched one by one into a fresh table file.
 *   LIVE      PUB messages are applied as they come; a gap or a heartbeat ahead of the table
 *             starts a catch-up, another epoch or a digest mismatch a snapshot.
 *
 * The edge follows every origin it is given (docs/sync.md, "Several origins"): one SUB socket
 * per origin, all feeding the same state machine, so each (epoch, seq) is applied once, from
 * whichever origin delivers it first, and the copies are dropped by seq; one REQ socket per
 * origin, of which one at a time (sync_cur) gets the sync requests, moving on when it fails or
 * cannot serve. Origins that disagree with the ones the edge follows (another epoch, another
 * digest at the same seq) are refused, logged and counted.
 *
 * nng's threads only post mail: SUB messages and pipe events come from aio and pipe callbacks,
 * sync replies from the REQ aio's callback. One sync request is out at a time, and its send
 * completes before its receive starts, so a REQ send and receive are never pending together
 * (nng #1702). No SUB receive ever has a timeout (nng #1523/#1682).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/sub.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "common/log.h"
#include "common/sdnotify.h"
#include "common/state.h"
#include "common/table.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/admin.h"
#include "syncd/assemble.h"
#include "syncd/certcheck.h"
#include "syncd/mailbox.h"
#include "syncd/nngx.h"
#include "syncd/syncd.h"
#include "syncd/tlscfg.h"

#define TICK_MS		 250
#define BACKOFF_MIN_MS	 100
#define BACKOFF_MAX_MS	 2000
#define BUFFER_MAX_BYTES (256u << 20)
#define HISTORY		 1024
#define SEND_TIMEOUT_MS	 2000

enum mail_kind { MAIL_SUB = 1, MAIL_SUB_UP, MAIL_SUB_DOWN, MAIL_SYNC };

enum edge_state { ST_WAIT, ST_CATCHUP, ST_SNAPSHOT, ST_LIVE };

static const char *const state_names[] = {"connecting", "catching-up", "snapshot", "live"};

/* A received message shared by the parts it carries (a catch-up reply carries many). */
struct mref {
	nng_msg *msg;
	uint32_t refs;
};

/* One part held by the assembler: part idx of a catch-up reply, or a whole BATCH message. */
struct partobj {
	struct mref *mr;
	uint32_t idx;
	bool catchup;
	uint64_t epoch; /* the origin's epoch the message carries */
};

struct bufmsg {
	struct bufmsg *next;
	nng_msg *msg;
	uint32_t link; /* the origin it came from */
};

struct edge;

/* One origin: its two sockets and what was heard from it. */
struct link {
	struct edge *e;
	uint32_t idx;
	const char *publish, *sync; /* borrowed from the configuration */
	nng_socket sub, req;
	bool sub_open, req_open;
	nng_dialer sub_d, req_d;
	nng_tls_config *sub_tls, *req_tls; /* a reference to each dialer's: keep_tls() */
	nng_aio *sub_aio;
	int sub_pipes;
	bool connected;
	uint64_t last_hb_ms; /* mono; 0: none yet */
	uint64_t last_sub_ms, last_redial_ms;
	uint64_t agreed_ms; /* its last heartbeat whose digest matched this edge's at that seq */
	uint64_t hb_epoch, hb_seq;
	bool conflict; /* it disagrees with the origins the edge follows: refused */
};

struct edge {
	const struct hm__edge_cfg *cfg;
	char node[256];
	uv_loop_t loop;
	struct hm__mailbox mb;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t tick, retry;

	struct hm_table_writer *w;	   /* NULL only while re-opening */
	struct hm_certstore_writer *certs; /* the node's certificate store; NULL with w */
	char certs_path[PATH_MAX];	   /* the table's path, ".table" -> ".certs" */
	struct hm_proto_decoder *dec_in, *dec_apply;
	struct hm__asm as;

	/* the table's published state, cached for status */
	uint64_t epoch, applied;
	uint32_t apps, domains, dynos, secrets, ncerts, ticket_keys;
	uint8_t digest[16];	  /* of the table and the certificate store (hm_state_digest) */
	uint8_t table_digest[16]; /* of the table alone (what its file says) */
	struct {
		uint64_t seq;
		uint8_t digest[16];
	} history[HISTORY];

	enum edge_state state;
	bool catchup_again;    /* another catch-up is needed once this one is done */
	bool draining;	       /* going through the buffer after a catch-up */
	uint64_t catchup_head; /* the origin's head_seq in the last catch-up reply */
	bool fetch_busy;
	uint64_t backoff_ms;

	/* full resync in progress */
	struct {
		bool loading;
		struct hm_table_writer *fresh;
		struct hm_certstore_writer *fresh_certs;
		struct hm_state st;  /* the two fresh files, one batch open across the chunks */
		uint32_t grow_certs; /* the store's capacity multiplier after -ENOSPC */
		uint64_t epoch, seq, snap_id;
		uint32_t nchunks, next;
		uint32_t apps, domains, dynos;
		uint32_t certs;	    /* SNAPSHOT_REP version >= 4; 0: not said (older) */
		uint64_t cert_heap; /* the store heap they took on the origin */
		uint8_t digest[16];
		uint32_t grow;	   /* capacity multiplier after HM_EFULL */
		bool discard_next; /* a chunk request is out for a load that was abandoned */
	} snap;

	/* what the origins said last */
	uint64_t origin_epoch, origin_seq;
	uint64_t last_hb_ms; /* mono, the latest from an origin not refused; 0: none yet */
	bool stale;

	/* messages received while not LIVE */
	struct bufmsg *bhead, *btail;
	uint64_t buffered, buffered_bytes;

	/* the origins */
	struct link *links; /* owned, nlinks */
	uint32_t nlinks;
	atomic_bool sub_stop; /* shutdown: no receive after a receive */

	/* sync requests: one at a time, to links[sync_cur] */
	uint32_t sync_cur;
	struct link *req_link; /* where the request in flight went */
	nng_aio *req_aio;
	bool req_sending;     /* the REQ aio is sending (else receiving) */
	atomic_bool req_stop; /* shutdown: no receive after a send */
	/* the origins that could not serve the current catch-up (failed, or answered SNAPSHOT or
	 * EPOCH), and the best of those that answered, to resync from once none can serve */
	uint32_t declined;
	int resync_from;
	bool resync_same_epoch;
	uint64_t resync_epoch, resync_head;
	uint64_t origin_conflicts; /* origins refused so far */

	uint64_t start_ms;
	uint64_t last_sync_ok_ms;
	bool stale_warned;
	bool ready; /* READY=1 was sent */
	struct hm__admin *admin;

	struct hm__tls_state tls; /* the certificates in use; .cur NULL without TLS */
	uint64_t tls_failures_seen, tls_warned_ms;
	bool started; /* the first dials are done */

	/* another epoch seen: the last change, for status */
	uint64_t epoch_changes, epoch_from, epoch_to;

	uint64_t catchups, snapshots, skipped_invalid, skipped_version, digest_mismatches;
	uint64_t snapshot_restarts; /* loads started again because a file was full */
	uint64_t batches_applied, buffer_drops, sync_errors, sync_redials;
	int table_error;       /* the last failure to write the table (0 once a commit works) */
	uint64_t table_errors; /* such failures so far */
	bool stopping;
};

/* ---- Small helpers ------------------------------------------------------------------------ */

static void mref_unref(struct mref *mr)
{
	if (--mr->refs == 0) {
		nng_msg_free(mr->msg);
		free(mr);
	}
}

static void free_part(void *p)
{
	struct partobj *po = p;

	mref_unref(po->mr);
	free(po);
}

static struct partobj *part_new(struct mref *mr, uint32_t idx, bool catchup, uint64_t epoch)
{
	struct partobj *po = malloc(sizeof(*po));

	hm_require(po != NULL);
	po->mr = mr;
	po->idx = idx;
	po->catchup = catchup;
	po->epoch = epoch;
	mr->refs++;
	return po;
}

static bool rate_ok(uint64_t n)
{
	return n <= 10 || n % 1000 == 0;
}

/*
 * Writing the table failed (no space to grow it or make a new file, say): the last published
 * version stays at the path for the routers, the error is logged and shown in status, and the
 * caller falls back to a full resync, retried with backoff until the table can be written.
 */
static void table_failed(struct edge *e, const char *what, uint64_t seq, int err)
{
	e->table_error = err;
	e->table_errors++;
	hm_log(HM_LOG_ERR, "edge", "%s %" PRIu64 ": %s; the table stays at seq %" PRIu64, what, seq,
	       hm_strerror(err), e->applied);
}

static struct hm_state edge_state(struct edge *e);

static void remember(struct edge *e)
{
	struct hm_table_info info;
	struct hm_certstore_info ci;
	struct hm_state st = edge_state(e);

	hm_table_writer_info(e->w, &info);
	hm_certstore_writer_info(e->certs, &ci);
	memcpy(e->table_digest, info.digest, 16);
	hm_state_digest(&st, info.digest);
	e->ncerts = ci.certs;
	e->ticket_keys = ci.ticket_keys;
	e->epoch = info.epoch;
	e->applied = info.seq;
	e->apps = info.apps;
	e->domains = info.domains;
	e->dynos = info.dynos;
	e->secrets = info.secrets;
	memcpy(e->digest, info.digest, 16);
	e->history[info.seq % HISTORY].seq = info.seq;
	memcpy(e->history[info.seq % HISTORY].digest, info.digest, 16);
}

/* A version was committed: writing the table works again. */
static void committed(struct edge *e)
{
	remember(e);
	e->table_error = 0;
}

static void set_state(struct edge *e, enum edge_state s)
{
	if (e->state != s)
		hm_log(HM_LOG_DEBUG, "edge", "%s -> %s", state_names[e->state], state_names[s]);
	e->state = s;
}

/* An applied cert.put's id must match its bytes (docs/tls.md): they end in a file every router
 * worker trusts, so they are checked end to end once. */
static int cert_verify(const struct hm_change *c)
{
	uint8_t id[HM_CERT_ID_LEN];
	int e = hm_certcheck_entry_id(c->cert, c->cert_len, c->key, c->key_len, id);

	if (e != 0)
		return e;
	return memcmp(id, c->id, HM_CERT_ID_LEN) == 0 ? 0 : HM_ECORRUPT;
}

/* The node's state as one hm_state (common/state.h) over the current writers. */
static struct hm_state edge_state(struct edge *e)
{
	return (struct hm_state){.table = e->w, .certs = e->certs, .cert_verify = cert_verify};
}

/* Opens the certificate store writer, resuming a valid store; a missing or invalid one is
 * replaced by a fresh, empty one (the digest then differs from the origin's, and the edge
 * resyncs). A store someone else owns, or that others may read, is refused, as the table is. */
static int certs_open(struct edge *e, struct hm_certstore_writer **out, unsigned flags)
{
	int r = hm_certstore_writer_open(out, e->certs_path, NULL, flags, 0);

	if (r == -ENOENT || r == -EUCLEAN) {
		if (r == -EUCLEAN)
			hm_log(HM_LOG_WARNING, "edge",
			       "%s is not a valid certificate store; starting from a full resync",
			       e->certs_path);
		r = hm_certstore_writer_open(out, e->certs_path, NULL, 0, 0);
	}
	if (r == -EPERM) {
		char why[160] = "not acceptable";
		struct stat sb;

		if (stat(e->certs_path, &sb) == 0)
			hm_stat_trusted(&sb, HM_TRUST_PRIVATE, why, sizeof(why));
		hm_log(HM_LOG_ERR, "edge",
		       "refusing the certificate store: %s is %s; remove it or choose another "
		       "--table",
		       e->certs_path, why);
	} else if (r != 0) {
		hm_log(HM_LOG_ERR, "edge", "cannot open the certificate store %s: %s",
		       e->certs_path, r == -EBUSY ? "another process writes it" : hm_strerror(r));
	}
	if (r != 0)
		*out = NULL;
	return r;
}

static int table_open_only(struct edge *e);

/* Opens the writers of the table and the certificate store, resuming valid files. */
static int table_open(struct edge *e)
{
	int r;

	if (e->certs == NULL && (r = certs_open(e, &e->certs, HM_CERTSTORE_RESUME)) != 0)
		return r;
	if ((r = table_open_only(e)) != 0) {
		hm_certstore_writer_close(e->certs);
		e->certs = NULL;
	}
	return r;
}

static int table_open_only(struct edge *e)
{
	int r = hm_table_writer_open(&e->w, e->cfg->table, NULL, HM_TABLE_RESUME,
				     (uint64_t)e->cfg->table_max);

	if (r == HM_EBADTABLE) {
		hm_log(HM_LOG_WARNING, "edge",
		       "%s is not a valid routing table; starting from a full resync",
		       e->cfg->table);
		r = hm_table_writer_open(&e->w, e->cfg->table, NULL, 0,
					 (uint64_t)e->cfg->table_max);
	}
	if (r == HM_EUNTRUSTED) {
		char why[160] = "", lock[PATH_MAX];
		const char *bad = e->cfg->table;

		/* The attack this stops: another local user made the file first, with routes of
		 * their own. It is not ours to resume, replace or delete. */
		snprintf(lock, sizeof(lock), "%s.lock", e->cfg->table);
		if (hm_path_trusted(bad, why, sizeof(why)) != HM_EUNTRUSTED) {
			bad = lock;
			hm_path_trusted(bad, why, sizeof(why));
		}
		hm_log(HM_LOG_ERR, "edge",
		       "refusing the routing table: %s is %s; remove it or choose another --table",
		       bad, why);
	}
	if (r != 0) {
		e->w = NULL;
		if (r != HM_EUNTRUSTED)
			hm_log(HM_LOG_ERR, "edge", "cannot open the routing table %s: %s",
			       e->cfg->table,
			       r == -EBUSY ? "another process writes it" : hm_strerror(r));
		return r;
	}
	memset(e->history, 0, sizeof(e->history));
	remember(e);
	return 0;
}

/* ---- Several origins ------------------------------------------------------------------------ */

static bool recent(const struct edge *e, uint64_t ms, uint64_t now)
{
	return ms != 0 && now - ms <= (uint64_t)e->cfg->stale_after;
}

/* Another origin than l, not refused, whose heartbeats recently agreed with this edge's state:
 * a disagreement with l is then l's, not this edge's. */
static bool another_agrees(const struct edge *e, const struct link *l)
{
	uint64_t now = hm_mono_ms();

	for (uint32_t i = 0; i < e->nlinks; i++) {
		const struct link *o = &e->links[i];

		if (o != l && !o->conflict && recent(e, o->agreed_ms, now))
			return true;
	}
	return false;
}

/* The first origin after sync_cur (round the list, sync_cur last) that is not refused and not
 * in the bitmask skip, or -1. */
static int next_origin(const struct edge *e, uint32_t skip)
{
	for (uint32_t k = 1; k <= e->nlinks; k++) {
		uint32_t i = (e->sync_cur + k) % e->nlinks;

		if (!e->links[i].conflict && !(skip & (1u << i)))
			return (int)i;
	}
	return -1;
}

static void round_reset(struct edge *e)
{
	e->declined = 0;
	e->resync_from = -1;
	e->resync_same_epoch = false;
	e->resync_head = 0;
}

/*
 * l disagrees with the origins this edge follows (another epoch, or another digest at a seq,
 * while another origin agrees): it is refused — its batches dropped, no sync request sent to
 * it — until one of its heartbeats agrees again, or until no origin that agrees is heard from
 * (on_tick). Origins on one store never disagree, so this is a misconfiguration: said loudly.
 */
static void refuse(struct edge *e, struct link *l, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void refuse(struct edge *e, struct link *l, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	int n;

	if (l->conflict)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	l->conflict = true;
	l->agreed_ms = 0;
	e->origin_conflicts++;
	hm_log(HM_LOG_ERR, "edge",
	       "the origins disagree: %s %s, unlike the other origin(s) this edge follows; "
	       "refusing it (%" PRIu64 " refusal(s) so far). Origins of one cluster share one "
	       "store and never disagree: check their --store and data",
	       l->publish, why, e->origin_conflicts);
	if (e->sync_cur == l->idx && (n = next_origin(e, 0)) >= 0)
		e->sync_cur = (uint32_t)n;
}

/* A heartbeat from a refused origin: it is followed again once it agrees with this edge. */
static void reconsider(struct edge *e, struct link *l, const struct hm_msg *m);

/* ---- Requests to the origin's sync socket --------------------------------------------------- */

static int dial(struct edge *e, nng_socket s, const char *url, nng_dialer *out,
		nng_tls_config **kept);

/* nng thread: the sync request was sent (then its answer is awaited) or answered. */
static void req_cb(void *arg)
{
	struct edge *e = arg;
	int rv = nng_aio_result(e->req_aio);

	if (e->req_sending) {
		e->req_sending = false;
		if (rv != 0) {
			nng_msg_free(nng_aio_get_msg(e->req_aio));
			hm__mailbox_post(&e->mb, MAIL_SYNC, hm__nng_err(rv), 0, 0, NULL);
			return;
		}
		if (atomic_load(&e->req_stop)) {
			hm__mailbox_post(&e->mb, MAIL_SYNC, -ECANCELED, 0, 0, NULL);
			return;
		}
		nng_aio_set_timeout(e->req_aio, (nng_duration)e->cfg->timeout);
		nng_recv_aio(e->req_link->req, e->req_aio);
		return;
	}
	hm__mailbox_post(&e->mb, MAIL_SYNC, hm__nng_err(rv), 0, 0,
			 rv == 0 ? nng_aio_get_msg(e->req_aio) : NULL);
}

static void fetch_send(struct edge *e, struct hm_pbuf *pb)
{
	nng_msg *m;

	hm_require(!e->fetch_busy);
	hm_require(nng_msg_alloc(&m, pb->len) == 0);
	memcpy(nng_msg_body(m), pb->data, pb->len);
	e->fetch_busy = true;
	e->req_sending = true;
	e->req_link = &e->links[e->sync_cur];
	nng_aio_set_msg(e->req_aio, m);
	nng_aio_set_timeout(e->req_aio, SEND_TIMEOUT_MS);
	nng_send_aio(e->req_link->req, e->req_aio);
}

static void send_catchup(struct edge *e)
{
	struct hm_pbuf pb = {0};
	uint32_t from = 0;

	if (e->fetch_busy || e->stopping)
		return;
	if (e->as.have > 0 && e->as.seq == e->applied + 1)
		from = e->as.have;
	else
		hm__asm_reset(&e->as);
	hm_require(hm_proto_encode_catchup_req(&pb, e->epoch, e->applied, from) == 0);
	fetch_send(e, &pb);
	hm_pbuf_fini(&pb);
}

static void send_snapshot_req(struct edge *e)
{
	struct hm_pbuf pb = {0};

	if (e->fetch_busy || e->stopping)
		return;
	if (e->snap.loading)
		hm_require(hm_proto_encode_snapshot_req(&pb, e->snap.snap_id, e->snap.next) == 0);
	else
		hm_require(hm_proto_encode_snapshot_req(&pb, 0, 0) == 0);
	fetch_send(e, &pb);
	hm_pbuf_fini(&pb);
}

/* Sends what the state needs now, or after the backoff if the last attempt failed. */
static void send_next(struct edge *e)
{
	if (e->state == ST_CATCHUP)
		send_catchup(e);
	else if (e->state == ST_SNAPSHOT)
		send_snapshot_req(e);
}

static void on_retry(uv_timer_t *t)
{
	send_next(t->data);
}

static void retry_later(struct edge *e)
{
	e->backoff_ms = e->backoff_ms == 0 ? BACKOFF_MIN_MS
					   : HM_MIN(e->backoff_ms * 2, (uint64_t)BACKOFF_MAX_MS);
	uv_timer_start(&e->retry, on_retry, e->backoff_ms, 0);
}

static void start_catchup(struct edge *e)
{
	if (e->stopping)
		return;
	if (e->state == ST_CATCHUP || e->state == ST_SNAPSHOT) {
		e->catchup_again = e->state == ST_CATCHUP;
		return;
	}
	set_state(e, ST_CATCHUP);
	e->catchup_again = false;
	round_reset(e);
	if (!e->links[e->sync_cur].connected) {
		/* An origin whose feed is down is likely down: ask one whose feed is up. */
		for (uint32_t i = 0; i < e->nlinks; i++)
			if (e->links[i].connected && !e->links[i].conflict) {
				e->sync_cur = i;
				break;
			}
	}
	send_catchup(e);
}

/* Abandons a snapshot being loaded: the fresh file is discarded, the old table resumed. */
static void snap_abort(struct edge *e)
{
	if (!e->snap.loading)
		return;
	e->snap.loading = false;
	hm_state_abort(&e->snap.st);
	hm_table_writer_close(e->snap.fresh);
	hm_certstore_writer_close(e->snap.fresh_certs);
	e->snap.fresh = NULL;
	e->snap.fresh_certs = NULL;
	if (e->w == NULL && table_open(e) != 0) {
		hm_log(HM_LOG_ERR, "edge", "lost the routing table writer; exiting");
		exit(1);
	}
}

static void start_snapshot(struct edge *e, const char *why)
{
	if (e->stopping)
		return;
	hm_log(HM_LOG_NOTICE, "edge", "full resync from a snapshot (%s)", why);
	snap_abort(e);
	hm__asm_reset(&e->as);
	set_state(e, ST_SNAPSHOT);
	e->catchup_again = false;
	send_snapshot_req(e);
}

/* ---- Applying batches -------------------------------------------------------------------- */

/* The assembled batch's changes, re-decoded part by part (an hm_state_feed_fn). */
static int asm_feed(struct hm_state *st, void *arg)
{
	struct edge *e = arg;
	struct mref *prev = NULL;
	struct hm_msg m;
	int r = 0;

	for (uint32_t i = 0; i < e->as.have && r == 0; i++) {
		struct partobj *po = e->as.parts[i];
		const struct hm_batch_part *bp;

		if (po->mr != prev) {
			r = hm_proto_decode(e->dec_apply, nng_msg_body(po->mr->msg),
					    nng_msg_len(po->mr->msg), &m);
			if (r != 0)
				break;
			prev = po->mr;
		}
		bp = po->catchup ? &m.catchup_rep.parts[po->idx] : &m.batch.b;
		for (uint32_t k = 0; k < bp->nchanges && r == 0; k++)
			r = hm_state_change(st, &bp->changes[k]);
	}
	return r;
}

/* Applies the batch the assembler holds (all its parts) to the table and the store. */
static int apply_assembled(struct edge *e)
{
	struct hm_state st = edge_state(e);
	/* Every part of a batch carries the origin's epoch; the first part's is the batch's. */
	uint64_t epoch = e->as.have > 0 ? ((struct partobj *)e->as.parts[0])->epoch : 0;
	int r = hm_state_apply(&st, asm_feed, e, epoch, e->as.seq);

	hm__asm_reset(&e->as);
	if (r != 0)
		return r;
	committed(e);
	e->batches_applied++;
	return 0;
}

static int direct_feed(struct hm_state *st, void *arg)
{
	const struct hm_batch_part *bp = arg;
	int r = 0;

	for (uint32_t k = 0; k < bp->nchanges && r == 0; k++)
		r = hm_state_change(st, &bp->changes[k]);
	return r;
}

/* Applies a whole single-part batch that is already decoded (the common case: no re-decoding,
 * no assembler). */
static int apply_direct(struct edge *e, uint64_t epoch, const struct hm_batch_part *bp)
{
	struct hm_state st = edge_state(e);
	int r = hm_state_apply(&st, direct_feed, (void *)bp, epoch, bp->seq);

	if (r != 0)
		return r;
	committed(e);
	e->batches_applied++;
	return 0;
}

/* A whole batch in one part, next in line: applied at once. Returns false if it is not that
 * case (the caller goes through the assembler). */
static bool try_direct(struct edge *e, uint64_t epoch, const struct hm_batch_part *bp)
{
	int err;

	if (bp->nparts != 1 || bp->seq != e->applied + 1 || e->as.have != 0)
		return false;
	if ((err = apply_direct(e, epoch, bp)) != 0) {
		table_failed(e, "cannot apply batch", bp->seq, err);
		start_snapshot(e, "a batch could not be applied");
	}
	return true;
}

/* Offers one part; applies the batch when it is complete. Returns the assembler's verdict
 * (obj is taken on HELD/COMPLETE). A table error leads to a full resync. */
static enum hm__asm_result offer(struct edge *e, uint64_t seq, uint32_t part, uint32_t nparts,
				 struct partobj *po)
{
	enum hm__asm_result r = hm__asm_offer(&e->as, e->applied, seq, part, nparts, po);
	int err;

	if (r == HM__ASM_COMPLETE && (err = apply_assembled(e)) != 0) {
		table_failed(e, "cannot apply batch", seq, err);
		start_snapshot(e, "a batch could not be applied");
	}
	return r;
}

static void buffer_push(struct edge *e, uint32_t link, nng_msg *msg, bool front)
{
	struct bufmsg *b;

	if (e->buffered_bytes + nng_msg_len(msg) > BUFFER_MAX_BYTES) {
		/* Dropping is safe: whatever is missing shows up as a gap and is fetched. */
		while (e->bhead != NULL) {
			b = e->bhead;
			e->bhead = b->next;
			nng_msg_free(b->msg);
			free(b);
		}
		e->btail = NULL;
		e->buffer_drops += e->buffered;
		e->buffered = e->buffered_bytes = 0;
		hm_log(HM_LOG_WARNING, "edge", "buffer over %u MiB while catching up: dropped it",
		       BUFFER_MAX_BYTES >> 20);
	}
	b = malloc(sizeof(*b));
	hm_require(b != NULL);
	b->msg = msg;
	b->link = link;
	b->next = NULL;
	if (front) {
		b->next = e->bhead;
		e->bhead = b;
		if (e->btail == NULL)
			e->btail = b;
	} else {
		if (e->btail != NULL)
			e->btail->next = b;
		else
			e->bhead = b;
		e->btail = b;
	}
	e->buffered++;
	e->buffered_bytes += nng_msg_len(msg);
}

static nng_msg *buffer_pop(struct edge *e, uint32_t *link)
{
	struct bufmsg *b = e->bhead;
	nng_msg *m;

	if (b == NULL)
		return NULL;
	e->bhead = b->next;
	if (e->bhead == NULL)
		e->btail = NULL;
	m = b->msg;
	*link = b->link;
	free(b);
	e->buffered--;
	e->buffered_bytes -= nng_msg_len(m);
	return m;
}

static bool digest_at(const struct edge *e, uint64_t seq, uint8_t out[16])
{
	if (seq == e->applied) {
		memcpy(out, e->digest, 16);
		return true;
	}
	if (e->history[seq % HISTORY].seq == seq && seq != 0) {
		memcpy(out, e->history[seq % HISTORY].digest, 16);
		return true;
	}
	return false;
}

/* The checks a heartbeat from l makes once the edge is LIVE (its liveness was noted on
 * receipt). */
static void check_heartbeat(struct edge *e, struct link *l, const struct hm_msg *m)
{
	uint8_t mine[16];
	char a[33], b[33];

	if (m->heartbeat.epoch != e->epoch) {
		if (e->epoch != 0 && another_agrees(e, l)) {
			refuse(e, l, "publishes epoch %016" PRIx64 " (this edge: %016" PRIx64 ")",
			       m->heartbeat.epoch, e->epoch);
			return;
		}
		start_catchup(e); /* the origin answers EPOCH, and a snapshot follows */
		return;
	}
	if (m->heartbeat.seq > e->applied) {
		start_catchup(e); /* something after the last batch was lost */
		return;
	}
	if (!digest_at(e, m->heartbeat.seq, mine))
		return;
	if (memcmp(mine, m->heartbeat.digest, 16) == 0) {
		l->agreed_ms = hm_mono_ms();
		return;
	}
	hm_digest_hex(mine, a);
	hm_digest_hex(m->heartbeat.digest, b);
	if (another_agrees(e, l)) {
		refuse(e, l, "has digest %s at seq %" PRIu64 " (this edge: %s)", b,
		       m->heartbeat.seq, a);
		return;
	}
	e->digest_mismatches++;
	hm_log(HM_LOG_ERR, "edge", "digest mismatch at seq %" PRIu64 ": this edge has %s, %s %s",
	       m->heartbeat.seq, a, l->publish, b);
	start_snapshot(e, "digest mismatch");
}

static void reconsider(struct edge *e, struct link *l, const struct hm_msg *m)
{
	uint8_t mine[16];

	if (m->heartbeat.epoch != e->epoch || !digest_at(e, m->heartbeat.seq, mine) ||
	    memcmp(mine, m->heartbeat.digest, 16) != 0)
		return;
	l->conflict = false;
	l->agreed_ms = hm_mono_ms();
	hm_log(HM_LOG_NOTICE, "edge",
	       "%s agrees with this edge again (seq %" PRIu64 "): following it", l->publish,
	       m->heartbeat.seq);
}

static void count_skip(struct edge *e, int err, size_t len, const char *where)
{
	uint64_t n;

	if (err == HM_EVERSION)
		n = ++e->skipped_version;
	else
		n = ++e->skipped_invalid;
	if (rate_ok(n))
		hm_log(HM_LOG_WARNING, "edge",
		       "skipped a %s message of %zu bytes: %s (%" PRIu64 " so far)", where, len,
		       hm_strerror(err), n);
}

/* A PUB message from l in the LIVE state. Takes msg. */
static void live_msg(struct edge *e, struct link *l, nng_msg *msg)
{
	struct hm_msg m;
	int r = hm_proto_decode(e->dec_in, nng_msg_body(msg), nng_msg_len(msg), &m);

	if (r != 0) {
		count_skip(e, r, nng_msg_len(msg), "published");
		nng_msg_free(msg);
		return;
	}
	if (l->conflict) {
		nng_msg_free(msg); /* buffered before it was refused */
		return;
	}
	if (m.type == HM_MSG_HEARTBEAT) {
		check_heartbeat(e, l, &m);
		nng_msg_free(msg);
		return;
	}
	if (m.type != HM_MSG_BATCH) {
		count_skip(e, HM_EUNKNOWN, nng_msg_len(msg), "published");
		nng_msg_free(msg);
		return;
	}
	if (m.batch.b.seq > e->origin_seq)
		e->origin_seq = m.batch.b.seq;
	if (m.batch.epoch != e->epoch) {
		nng_msg_free(msg);
		if (e->epoch != 0 && another_agrees(e, l))
			refuse(e, l, "publishes epoch %016" PRIx64 " (this edge: %016" PRIx64 ")",
			       m.batch.epoch, e->epoch);
		else
			start_catchup(e); /* another epoch: the origin answers EPOCH */
		return;
	}
	if (try_direct(e, m.batch.epoch, &m.batch.b)) {
		nng_msg_free(msg);
		return;
	}
	{
		struct mref *mr = malloc(sizeof(*mr));
		struct partobj *po;
		enum hm__asm_result res;

		hm_require(mr != NULL);
		mr->msg = msg;
		mr->refs = 1;
		po = part_new(mr, 0, false, m.batch.epoch);
		res = offer(e, m.batch.b.seq, m.batch.b.part, m.batch.b.nparts, po);
		if (res == HM__ASM_OLD) {
			free_part(po);
		} else if (res == HM__ASM_GAP) {
			free_part(po); /* mr is ours alone again */
			free(mr);
			if (e->draining && m.batch.b.seq > e->catchup_head) {
				/* Not following what the catch-up just brought: either something
				 * was lost after it, or the message is from before the origin went
				 * back (a restored data directory), or it is a part the origin did
				 * not have when it answered (seq head + 1 with its predecessors
				 * missing). Keeping it makes catch-ups loop (at once, for as long
				 * as the origin publishes nothing); dropping it is safe (a
				 * catch-up fetches what exists). */
				nng_msg_free(msg);
				e->buffer_drops++;
				start_catchup(e);
				return;
			}
			/* Kept for after the catch-up (it may be the next one then). */
			buffer_push(e, l->idx, msg, true);
			start_catchup(e);
			return;
		}
		mref_unref(mr);
	}
}

static void drain_buffer(struct edge *e)
{
	uint32_t link;
	nng_msg *m;

	e->draining = true;
	while (e->state == ST_LIVE && (m = buffer_pop(e, &link)) != NULL)
		live_msg(e, &e->links[link], m);
	e->draining = false;
}

/* ---- Sync replies ------------------------------------------------------------------------- */

static void catchup_done(struct edge *e)
{
	e->backoff_ms = 0;
	if (e->catchup_again) {
		e->catchup_again = false;
		send_catchup(e);
		return;
	}
	e->catchups++;
	round_reset(e);
	if (e->catchup_head < e->origin_seq) {
		/* This origin is behind another (it learns commits later): the next catch-up asks
		 * the next one rather than this one again. */
		int n = next_origin(e, 1u << e->sync_cur);

		if (n >= 0)
			e->sync_cur = (uint32_t)n;
	}
	set_state(e, ST_LIVE);
	if (!e->ready) {
		/* systemd (Type=notify): the table is loaded and current, routers can start. */
		char st[160];

		snprintf(st, sizeof(st), "READY=1\nSTATUS=live at seq %" PRIu64, e->applied);
		hm_sd_notify(st);
		e->ready = true;
	}
	hm_log(HM_LOG_INFO, "edge",
	       "caught up: seq %" PRIu64 " (origin at %" PRIu64 "), %" PRIu64
	       " buffered message(s) to go through",
	       e->applied, HM_MAX(e->origin_seq, e->applied), e->buffered);
	drain_buffer(e);
}

/*
 * The origin answers in another epoch than the table's. That is how a restored backup is
 * published, but also what a process answering on the origin's address looks like (with
 * plaintext sockets, any local user who binds the ports while the origin is down), so it is an
 * error, counted and shown in status, once per new epoch. The edge still follows it.
 */
static void epoch_changed(struct edge *e, uint64_t to)
{
	if (to == e->epoch_to && e->epoch_from == e->epoch)
		return;
	e->epoch_changes++;
	e->epoch_from = e->epoch;
	e->epoch_to = to;
	hm_log(HM_LOG_ERR, "edge",
	       "the origin's epoch changed from %016" PRIx64 " to %016" PRIx64
	       " (at %s): loading its whole state. Expected only after the origin's data was "
	       "replaced (a restore); otherwise something else answers on the origin's address",
	       e->epoch, to, e->links[e->sync_cur].sync);
}

/* Every origin was tried for the catch-up: a full resync from the best answer (resync_from). */
static void resync_from_best(struct edge *e)
{
	uint64_t epoch = e->resync_epoch, head = e->resync_head;
	const char *why = e->resync_same_epoch
			      ? (e->nlinks > 1 ? "no origin holds the missing batches"
					       : "the origin no longer holds the missing batches")
			      : (e->epoch == 0 ? "a new table" : "the origin's epoch changed");

	e->sync_cur = (uint32_t)e->resync_from;
	round_reset(e);
	e->origin_epoch = epoch;
	if (head > e->origin_seq || epoch != e->epoch)
		e->origin_seq = head;
	if (epoch != e->epoch && e->epoch != 0)
		epoch_changed(e, epoch);
	start_snapshot(e, why);
}

/*
 * The sync request to links[sync_cur] failed: the next origin not tried in this round gets it
 * at once. Once every origin was tried, a catch-up that some origin declined (SNAPSHOT or
 * EPOCH) is a full resync from the best of them; otherwise the round starts again after the
 * backoff.
 */
static void sync_failed(struct edge *e)
{
	int n;

	e->declined |= 1u << e->req_link->idx;
	if ((n = next_origin(e, e->declined)) >= 0) {
		e->sync_cur = (uint32_t)n;
		send_next(e);
		return;
	}
	if (e->state == ST_CATCHUP && e->resync_from >= 0) {
		resync_from_best(e);
		return;
	}
	round_reset(e);
	if ((n = next_origin(e, 0)) >= 0)
		e->sync_cur = (uint32_t)n;
	retry_later(e);
}

/*
 * links[sync_cur] answered a catch-up with SNAPSHOT or EPOCH (epoch, head: its reply's). With
 * several origins that is no reason for a full resync yet: one that is behind this edge, or
 * compacted more, says SNAPSHOT where another can still serve the batches. The next origin not
 * tried in this round is asked at once (a full resync costs far more than a request that times
 * out); once none is left, the edge resyncs from the best answer (this edge's epoch first, then the
 * highest head). An answer in another epoch while other origins agree with this edge refuses that
 * origin. An edge without a table resyncs at once: every origin says EPOCH to it.
 */
static void declined(struct edge *e, uint64_t epoch, uint64_t head)
{
	struct link *l = &e->links[e->sync_cur];
	bool same = epoch == e->epoch;
	int n;

	if (e->epoch != 0 && !same && another_agrees(e, l))
		refuse(e, l, "answers in epoch %016" PRIx64 " (this edge: %016" PRIx64 ")", epoch,
		       e->epoch);
	if (!l->conflict && (e->resync_from < 0 || (same && !e->resync_same_epoch) ||
			     (same == e->resync_same_epoch && head > e->resync_head))) {
		e->resync_from = (int)l->idx;
		e->resync_same_epoch = same;
		e->resync_epoch = epoch;
		e->resync_head = head;
	}
	e->declined |= 1u << l->idx;
	if (e->epoch != 0 && (n = next_origin(e, e->declined)) >= 0) {
		e->sync_cur = (uint32_t)n;
		send_catchup(e);
		return;
	}
	if (e->resync_from < 0) {
		round_reset(e); /* only refused origins answered */
		retry_later(e);
		return;
	}
	resync_from_best(e);
}

static void on_catchup_rep(struct edge *e, nng_msg *msg, const struct hm_msg *m)
{
	struct mref *mr;
	bool gap = false;

	e->catchup_head = m->catchup_rep.head_seq;
	if (m->catchup_rep.status == HM_CATCHUP_EPOCH ||
	    m->catchup_rep.status == HM_CATCHUP_SNAPSHOT) {
		uint64_t epoch = m->catchup_rep.epoch, head = m->catchup_rep.head_seq;

		nng_msg_free(msg);
		e->backoff_ms = 0;
		declined(e, epoch, head);
		return;
	}
	e->origin_epoch = m->catchup_rep.epoch;
	if (m->catchup_rep.head_seq > e->origin_seq)
		e->origin_seq = m->catchup_rep.head_seq;
	e->declined = 0; /* this origin serves */
	mr = malloc(sizeof(*mr));
	hm_require(mr != NULL);
	mr->msg = msg;
	mr->refs = 1;
	for (uint32_t i = 0; i < m->catchup_rep.nparts && !gap && e->state == ST_CATCHUP; i++) {
		const struct hm_batch_part *p = &m->catchup_rep.parts[i];
		struct partobj *po;
		enum hm__asm_result r;

		if (try_direct(e, m->catchup_rep.epoch, p))
			continue;
		po = part_new(mr, i, true, m->catchup_rep.epoch);
		r = offer(e, p->seq, p->part, p->nparts, po);

		if (r == HM__ASM_OLD || r == HM__ASM_GAP)
			free_part(po);
		if (r == HM__ASM_GAP)
			gap = true;
	}
	mref_unref(mr);
	if (e->state != ST_CATCHUP)
		return; /* a failed apply started a snapshot */
	if (gap) {
		hm_log(HM_LOG_WARNING, "edge",
		       "a catch-up reply did not follow seq %" PRIu64 "; asking again", e->applied);
		hm__asm_reset(&e->as);
		retry_later(e);
		return;
	}
	if (m->catchup_rep.more) {
		send_catchup(e);
		return;
	}
	catchup_done(e);
}

static void snapshot_caps(const struct edge *e, struct hm_table_caps *caps)
{
	uint64_t g = e->snap.grow ? e->snap.grow : 1;

	*caps = HM_TABLE_CAPS_DEFAULT;
	caps->apps =
	    (uint32_t)HM_MIN((uint64_t)HM_MAX(caps->apps, 2ull * e->snap.apps * g), 1u << 24);
	caps->domains =
	    (uint32_t)HM_MIN((uint64_t)HM_MAX(caps->domains, 2ull * e->snap.domains * g), 1u << 26);
	caps->dynos =
	    (uint32_t)HM_MIN((uint64_t)HM_MAX(caps->dynos, 2ull * e->snap.dynos * g), 1u << 27);
	caps->heap =
	    HM_MIN((uint64_t)HM_MAX(caps->heap, ((1ull << 20) + 16ull * e->snap.dynos +
						 64ull * e->snap.domains + 64ull * e->snap.apps) *
						    g),
		   0xfffff000ull);
}

/* The most store heap one certificate can take (chain, key and metadata at their bounds). */
#define CERT_ENTRY_MAX ((uint64_t)HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX + HM_CERT_META_MAX + 1024)

/*
 * The fresh store's capacities: from the snapshot's certificate count and heap bytes when it
 * says them (SNAPSHOT_REP version 4: the store is made once, with room for as many again), else
 * from the store in use; times the multiplier of the loads restarted because it was full.
 */
static void snapshot_cert_caps(const struct edge *e, struct hm_certstore_caps *ccaps)
{
	uint64_t g = e->snap.grow_certs ? e->snap.grow_certs : 1, certs, heap;
	struct hm_certstore_info ci;

	if (e->snap.certs > 0) {
		certs = e->snap.certs;
		heap = e->snap.cert_heap;
	} else {
		hm_certstore_writer_info(e->certs, &ci);
		certs = ci.certs;
		heap = ci.heap_used;
	}
	/* Bounded: the counts come from the origin, and a store made too big for the disk
	 * fails to open and is retried as a full one is. */
	heap = HM_MIN(heap, CERT_ENTRY_MAX * HM_MAX(certs, 1));
	*ccaps = HM_CERTSTORE_CAPS_DEFAULT;
	ccaps->certs = (uint32_t)HM_MIN(HM_MAX((uint64_t)ccaps->certs, 2ull * certs) * g, 1u << 26);
	ccaps->heap = HM_MAX(ccaps->heap, 2 * heap) * g;
}

static void on_snapshot_rep(struct edge *e, nng_msg *msg, const struct hm_msg *m)
{
#define r (&m->snapshot_rep)
	int err = 0;
	bool more;

	if (e->snap.discard_next) {
		/* The answer to a request sent before the load was abandoned: start over now. */
		e->snap.discard_next = false;
		nng_msg_free(msg);
		if (e->snap.grow != 0)
			send_snapshot_req(e);
		else
			retry_later(e);
		return;
	}

	if (e->snap.loading && r->snap_id != e->snap.snap_id) {
		/* The snapshot being fetched was replaced on the origin: start over with this one.
		 */
		hm_log(HM_LOG_INFO, "edge", "snapshot replaced on the origin; starting over");
		snap_abort(e);
	}
	if (!e->snap.loading) {
		struct hm_table_caps caps;
		struct hm_certstore_caps ccaps;

		if (r->chunk != 0) {
			nng_msg_free(msg);
			send_snapshot_req(e);
			return;
		}
		e->snap.epoch = r->epoch;
		e->snap.seq = r->seq;
		e->snap.snap_id = r->snap_id;
		e->snap.nchunks = r->nchunks;
		e->snap.apps = r->apps;
		e->snap.domains = r->domains;
		e->snap.dynos = r->dynos;
		e->snap.certs = r->certs;
		e->snap.cert_heap = r->cert_heap;
		memcpy(e->snap.digest, r->digest, 16);
		e->snap.next = 0;
		snapshot_caps(e, &caps);
		snapshot_cert_caps(e, &ccaps);
		hm_table_writer_close(e->w);
		e->w = NULL;
		err = hm_table_writer_open(&e->snap.fresh, e->cfg->table, &caps, 0,
					   (uint64_t)e->cfg->table_max);
		if (err == 0) {
			/* The store's writer is replaced only once the table's could be. */
			hm_certstore_writer_close(e->certs);
			e->certs = NULL;
			err = hm_certstore_writer_open(&e->snap.fresh_certs, e->certs_path, &ccaps,
						       0, 0);
			if (err != 0) {
				hm_table_writer_close(e->snap.fresh);
				e->snap.fresh = NULL;
			}
		}
		if (err != 0) {
			table_failed(e, "cannot create a table for the snapshot at seq", r->seq,
				     err);
			if (table_open(e) != 0)
				exit(1);
			nng_msg_free(msg);
			retry_later(e);
			return;
		}
		e->snap.st = (struct hm_state){.table = e->snap.fresh,
					       .certs = e->snap.fresh_certs,
					       .cert_verify = cert_verify};
		hm_require(hm_state_begin(&e->snap.st, r->epoch, r->seq) == 0);
		e->snap.loading = true;
		hm_log(HM_LOG_INFO, "edge",
		       "loading snapshot %016" PRIx64 " at seq %" PRIu64
		       ": %u apps, %u domains, %u "
		       "dynos in %u chunk(s)",
		       r->snap_id, r->seq, r->apps, r->domains, r->dynos, r->nchunks);
	}
	if (r->chunk != e->snap.next || r->nchunks != e->snap.nchunks || r->seq != e->snap.seq ||
	    r->epoch != e->snap.epoch) {
		nng_msg_free(msg);
		snap_abort(e);
		retry_later(e);
		return;
	}
	/* The next chunk is asked for before this one is applied, so that fetching and applying
	 * overlap. */
	e->snap.next++;
	more = e->snap.next < e->snap.nchunks;
	if (more)
		send_snapshot_req(e);
	for (uint32_t i = 0; i < r->nchanges && err == 0; i++)
		err = hm_state_change(&e->snap.st, &r->changes[i]);
	nng_msg_free(msg);
	if (err != 0) {
		bool tfull, cfull;

		/* A full file: start over with a larger one (HM_EFULL below). */
		hm_state_full(&e->snap.st, &tfull, &cfull);
		if (tfull) {
			e->snap.grow = e->snap.grow ? e->snap.grow * 2 : 2;
			err = HM_EFULL;
		} else if (cfull && e->snap.grow_certs < 4096) {
			e->snap.grow_certs = e->snap.grow_certs ? e->snap.grow_certs * 8 : 8;
			err = HM_EFULL;
		}
		if (err == HM_EFULL) {
			e->snapshot_restarts++;
			hm_log(HM_LOG_INFO, "edge",
			       "snapshot chunk %u: the %s is full; loading again with a larger one",
			       r->chunk, tfull ? "table" : "certificate store");
		}
		if (err != HM_EFULL)
			hm_log(HM_LOG_ERR, "edge", "snapshot chunk %u does not apply: %s", r->chunk,
			       hm_strerror(err));
		snap_abort(e);
		if (more)
			e->snap.discard_next = true; /* its answer restarts the load */
		else if (err == HM_EFULL)
			send_snapshot_req(e);
		else
			retry_later(e);
		return;
	}
	e->backoff_ms = 0;
	if (more)
		return;
	/* All chunks in: publish the new files, the store first. */
	if ((err = hm_state_commit(&e->snap.st, e->snap.epoch, e->snap.seq)) != 0) {
		table_failed(e, "cannot install the table of the snapshot at seq", e->snap.seq,
			     err);
		snap_abort(e);
		retry_later(e);
		return;
	}
	e->w = e->snap.fresh;
	e->certs = e->snap.fresh_certs;
	e->snap.fresh = NULL;
	e->snap.fresh_certs = NULL;
	e->snap.loading = false;
	e->snap.grow = 0;
	e->snap.grow_certs = 0;
	memset(e->history, 0, sizeof(e->history));
	committed(e);
	e->snapshots++;
	if (memcmp(e->digest, e->snap.digest, 16) != 0 || e->apps != e->snap.apps ||
	    e->domains != e->snap.domains || e->dynos != e->snap.dynos) {
		char a[33], b[33];

		e->digest_mismatches++;
		hm_digest_hex(e->digest, a);
		hm_digest_hex(e->snap.digest, b);
		hm_log(HM_LOG_ERR, "edge",
		       "the snapshot at seq %" PRIu64 " loaded with digest %s, the origin's is %s; "
		       "resyncing again",
		       e->snap.seq, a, b);
		set_state(e, ST_SNAPSHOT);
		retry_later(e);
		return;
	}
	hm_log(HM_LOG_NOTICE, "edge",
	       "snapshot loaded: seq %" PRIu64 ", %u apps, %u domains, %u dynos", e->applied,
	       e->apps, e->domains, e->dynos);
	set_state(e, ST_CATCHUP);
	send_catchup(e);
#undef r
}

static void on_sync_reply(struct edge *e, int rc, nng_msg *msg)
{
	struct hm_msg m;
	int r;

	struct link *l = e->req_link;

	e->fetch_busy = false;
	if (e->stopping) {
		if (msg != NULL)
			nng_msg_free(msg);
		return;
	}
	if (rc != 0) {
		bool redial = rc == -ETIMEDOUT && !e->stopping;

		e->snap.discard_next = false; /* the request it was about has ended */
		if (rate_ok(++e->sync_errors))
			hm_log(HM_LOG_WARNING, "edge",
			       "sync request to %s failed: %s; retrying%s%s", l->sync,
			       hm_strerror(rc), redial ? " on a new connection" : "",
			       e->nlinks > 1 ? ", and with the next origin" : "");
		/* No answer in --timeout: the connection may carry nothing any more while nng
		 * keeps it (nng 1.5.2's TLS can leave one so when the peer dies as a message
		 * arrives), and REQ would keep using it. A new dialer closes it. */
		if (redial) {
			nng_dialer_close(l->req_d);
			if (dial(e, l->req, l->sync, &l->req_d, &l->req_tls) != 0)
				hm_log(HM_LOG_ERR, "edge", "cannot dial %s", l->sync);
			e->sync_redials++;
		}
		sync_failed(e);
		return;
	}
	if (l->conflict) {
		/* Refused while its answer was on the way: ask the origin that replaced it. */
		nng_msg_free(msg);
		e->snap.discard_next = false;
		if (!e->links[e->sync_cur].conflict)
			send_next(e);
		else
			retry_later(e);
		return;
	}
	e->last_sync_ok_ms = hm_mono_ms();
	e->stale = false;
	if ((r = hm_proto_decode(e->dec_in, nng_msg_body(msg), nng_msg_len(msg), &m)) != 0) {
		count_skip(e, r, nng_msg_len(msg), "sync reply");
		nng_msg_free(msg);
		retry_later(e);
		return;
	}
	if (e->state == ST_CATCHUP && m.type == HM_MSG_CATCHUP_REP) {
		on_catchup_rep(e, msg, &m);
	} else if (e->state == ST_SNAPSHOT && m.type == HM_MSG_SNAPSHOT_REP) {
		on_snapshot_rep(e, msg, &m);
	} else {
		count_skip(e, HM_EUNKNOWN, nng_msg_len(msg), "sync reply");
		nng_msg_free(msg);
		retry_later(e);
	}
}

/* ---- PUB messages and pipe events -------------------------------------------------------- */

static void on_sub_msg(struct edge *e, struct link *l, nng_msg *msg)
{
	uint64_t now = hm_mono_ms();
	uint8_t type;
	uint32_t version;

	l->last_sub_ms = now;
	/* Liveness is noted at once, whatever the state: a heartbeat ends staleness. */
	if (hm_proto_peek(nng_msg_body(msg), nng_msg_len(msg), &type, &version) == 0 &&
	    type == HM_MSG_HEARTBEAT) {
		struct hm_msg m;

		if (hm_proto_decode(e->dec_in, nng_msg_body(msg), nng_msg_len(msg), &m) == 0) {
			l->last_hb_ms = now;
			l->hb_epoch = m.heartbeat.epoch;
			l->hb_seq = m.heartbeat.seq;
			if (l->conflict) {
				reconsider(e, l, &m);
			} else {
				e->stale = false;
				e->last_hb_ms = now;
				/* Several origins: the furthest one in the epoch. */
				if (m.heartbeat.epoch != e->origin_epoch ||
				    m.heartbeat.seq > e->origin_seq || e->nlinks == 1) {
					e->origin_epoch = m.heartbeat.epoch;
					e->origin_seq = m.heartbeat.seq;
				}
			}
		}
	}
	if (l->conflict) {
		nng_msg_free(msg); /* refused: nothing of it is applied */
		return;
	}
	if (e->state != ST_LIVE) {
		buffer_push(e, l->idx, msg, false);
		return;
	}
	live_msg(e, l, msg);
}

/* Another origin than l is subscribed, and not refused. */
static bool another_connected(const struct edge *e, const struct link *l)
{
	for (uint32_t i = 0; i < e->nlinks; i++)
		if (&e->links[i] != l && e->links[i].connected && !e->links[i].conflict)
			return true;
	return false;
}

static void on_mail(void *ctx, struct hm__mail *m)
{
	struct edge *e = ctx;
	struct link *l = m->kind != MAIL_SYNC ? &e->links[m->idx] : NULL;

	switch (m->kind) {
	case MAIL_SUB:
		if (e->stopping)
			nng_msg_free(m->ptr);
		else
			on_sub_msg(e, l, m->ptr);
		break;
	case MAIL_SUB_UP:
		l->sub_pipes++;
		l->connected = true;
		l->last_redial_ms = hm_mono_ms();
		hm_log(HM_LOG_INFO, "edge", "subscribed to %s", l->publish);
		/* Anything published while no origin was subscribed was lost: catch up. With
		 * another origin subscribed all along, nothing was (a gap would show). */
		if (e->state == ST_LIVE && another_connected(e, l))
			break;
		if (e->state == ST_LIVE)
			set_state(e, ST_WAIT);
		start_catchup(e);
		break;
	case MAIL_SUB_DOWN:
		if (l->sub_pipes > 0)
			l->sub_pipes--;
		l->connected = l->sub_pipes > 0;
		if (!l->connected && !e->stopping)
			hm_log(HM_LOG_INFO, "edge", "lost the subscription to %s; reconnecting",
			       l->publish);
		break;
	case MAIL_SYNC:
		on_sync_reply(e, m->rc, m->ptr);
		break;
	}
	hm__mail_free(m);
}

static void discard_mail(struct hm__mail *m)
{
	if ((m->kind == MAIL_SUB || m->kind == MAIL_SYNC) && m->ptr != NULL)
		nng_msg_free(m->ptr);
}

static void sub_cb(void *arg)
{
	struct link *l = arg;
	int rv = nng_aio_result(l->sub_aio);

	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv == 0)
		hm__mailbox_post(&l->e->mb, MAIL_SUB, 0, l->idx, 0, nng_aio_get_msg(l->sub_aio));
	/* Not re-armed once shutdown began: a receive started while the socket closes is what
	 * nng 1.5.2's close can hang on (#1543). */
	if (!atomic_load(&l->e->sub_stop))
		nng_recv_aio(l->sub, l->sub_aio);
}

static void sub_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
	struct link *l = arg;

	hm__mailbox_post(&l->e->mb, ev == NNG_PIPE_EV_ADD_POST ? MAIL_SUB_UP : MAIL_SUB_DOWN, 0,
			 l->idx, (uint64_t)nng_pipe_id(p), NULL);
}

/* ---- Dialing ------------------------------------------------------------------------------ */

/*
 * The edge holds a reference to the configuration each dialer has (*kept, taking over the
 * caller's reference to c); the one c replaces is retired, not freed, since nng 1.5.2 may still
 * be about to take it for a connection (hm__tls_config_retire()).
 */
static void keep_tls(nng_tls_config **kept, nng_tls_config *c)
{
	hm__tls_config_retire(*kept);
	*kept = c;
}

/* Dials url from s, with the certificates in use when it is tls+tcp:// (kept: keep_tls()). */
static int dial(struct edge *e, nng_socket s, const char *url, nng_dialer *out,
		nng_tls_config **kept)
{
	nng_tls_config *tls = NULL;
	bool named = true;
	int rv;

	if (hm__tls_url(url) && (rv = hm__tls_dialer_config(e->tls.cur, url, &tls, &named)) != 0)
		return rv;
	if (!named && !e->started)
		hm_log(HM_LOG_NOTICE, "edge",
		       "%s names the origin by address: its certificate's chain and serverAuth "
		       "usage are checked, no name (docs/security.md)",
		       url);
	rv = hm__nng_dial(s, url, tls, out);
	if (rv == 0)
		keep_tls(kept, tls); /* NULL for tcp:// */
	else if (tls != NULL)
		nng_tls_config_free(tls);
	return rv;
}

/* Gives every dialer a configuration made from t (SIGHUP). */
static int apply_tls(void *ctx, struct hm__tls *t)
{
	struct edge *e = ctx;
	int rv = 0;

	for (uint32_t i = 0; i < 2 * e->nlinks && rv == 0; i++) {
		struct link *l = &e->links[i / 2];
		nng_dialer d = i % 2 == 0 ? l->sub_d : l->req_d;
		nng_tls_config **kept = i % 2 == 0 ? &l->sub_tls : &l->req_tls;
		const char *url = i % 2 == 0 ? l->publish : l->sync;
		nng_tls_config *c;
		bool named;

		if (!hm__tls_url(url))
			continue;
		if ((rv = hm__tls_dialer_config(t, url, &c, &named)) != 0)
			break;
		rv = hm__nng_err(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, c));
		if (rv == 0)
			keep_tls(kept, c);
		else
			nng_tls_config_free(c);
	}
	return rv;
}

/*
 * SIGHUP: the certificate files are read again, and both dialers get configurations made from
 * them: the next connection uses them, the established ones are kept. Files that do not load
 * change nothing.
 */
static void on_sighup(uv_signal_t *sig, int signum)
{
	struct edge *e = sig->data;

	(void)signum;
	if (!e->stopping)
		hm__tls_reload(&e->tls, e->cfg->tls_cert, e->cfg->tls_ca, NULL, apply_tls, e,
			       "edge");
}

/* TLS handshakes with the origins that failed, on every dialer (nng's "auth" statistic). */
static uint64_t tls_failures(struct edge *e)
{
	uint64_t n = 0;

	if (e->tls.cur == NULL)
		return 0;
	for (uint32_t i = 0; i < e->nlinks; i++)
		n += hm__nng_dialer_stat(e->links[i].sub_d, "auth") +
		     hm__nng_dialer_stat(e->links[i].req_d, "auth");
	return n;
}

/* ---- Timers and signals ------------------------------------------------------------------- */

/*
 * Refused origins are followed again once no origin that agrees with this edge has been heard
 * from for --stale-after: the ones it followed are gone (or were moved to a new epoch last), and
 * a lone origin is followed as it always is (another epoch or a digest mismatch: a resync).
 */
static void refused_alone(struct edge *e, uint64_t now)
{
	bool any = false;

	for (uint32_t i = 0; i < e->nlinks; i++) {
		if (!e->links[i].conflict && recent(e, e->links[i].last_hb_ms, now))
			return;
		any = any || e->links[i].conflict;
	}
	if (!any)
		return;
	hm_log(HM_LOG_WARNING, "edge",
	       "no origin that agrees with this edge was heard from for %" PRId64
	       " ms: following the refused ones again",
	       e->cfg->stale_after);
	for (uint32_t i = 0; i < e->nlinks; i++)
		e->links[i].conflict = false;
}

static void on_tick(uv_timer_t *t)
{
	struct edge *e = t->data;
	uint64_t now = hm_mono_ms(), quiet;
	/* Heard from the origin: a heartbeat, or a sync reply (which proves it is there and that
	 * the edge was current when it came). The grace period at start counts too. */
	uint64_t heard = HM_MAX(HM_MAX(e->last_hb_ms, e->last_sync_ok_ms), e->start_ms);
	bool stale = now - heard > (uint64_t)e->cfg->stale_after;

	if (stale && !e->stale_warned) {
		hm_log(HM_LOG_WARNING, "edge",
		       "stale: nothing from the origin for %" PRId64
		       " ms (the table keeps serving)",
		       e->cfg->stale_after);
		e->stale_warned = true;
	}
	if (!stale && e->stale_warned) {
		hm_log(HM_LOG_NOTICE, "edge", "hearing from the origin again: no longer stale");
		e->stale_warned = false;
	}
	e->stale = stale;
	if (!e->ready && stale && e->applied > 0) {
		/* The origin is out of reach at start, but the resumed table is a complete version:
		 * routers serve it (as they would if the edge had stopped), so let them start
		 * rather than hold the node back until the origin answers. A node without a table
		 * waits. */
		char st[160];

		snprintf(st, sizeof(st),
			 "READY=1\nSTATUS=stale: serving the resumed table at seq %" PRIu64
			 ", origin not reachable yet",
			 e->applied);
		hm_sd_notify(st);
		e->ready = true;
		hm_log(HM_LOG_WARNING, "edge",
		       "origin not reachable: ready with the resumed table at seq %" PRIu64,
		       e->applied);
	}
	refused_alone(e, now);
	for (uint32_t i = 0; i < e->nlinks; i++) {
		struct link *l = &e->links[i];

		/* A connection that carries nothing for long may be half-open (no TCP keepalive
		 * on the far side): dial again. */
		quiet = now - HM_MAX(HM_MAX(l->last_sub_ms, l->last_hb_ms), l->last_redial_ms);
		if (l->connected && quiet > 2 * (uint64_t)e->cfg->stale_after && l->sub_open) {
			hm_log(HM_LOG_WARNING, "edge",
			       "nothing received from %s for %" PRIu64 " ms; "
			       "dialing again",
			       l->publish, quiet);
			nng_dialer_close(l->sub_d);
			if (dial(e, l->sub, l->publish, &l->sub_d, &l->sub_tls) != 0)
				hm_log(HM_LOG_ERR, "edge", "cannot dial %s", l->publish);
			l->last_redial_ms = now;
		}
	}
	if (e->tls.cur != NULL && now / 1000 != (now - TICK_MS) / 1000) {
		/* Once a second: a handshake refused by the origin, or an origin whose certificate
		 * is not trusted here, only shows in nng's statistics. */
		uint64_t n = tls_failures(e);

		/* Said at once, then at most once a minute while it goes on. */
		if (n > e->tls_failures_seen &&
		    (e->tls_warned_ms == 0 || now - e->tls_warned_ms >= 60000)) {
			hm_log(HM_LOG_WARNING, "edge",
			       "%" PRIu64 " TLS handshake(s) with the origin failed (%" PRIu64
			       " in all): check that each side's certificate chains to the other's "
			       "--tls-ca, is valid now, and names the origin as in %s",
			       n - e->tls_failures_seen, n, e->links[0].publish);
			e->tls_failures_seen = n;
			e->tls_warned_ms = now;
		}
	}
}

static void close_handle(uv_handle_t *h)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static void shutdown_edge(struct edge *e)
{
	e->stopping = true;
	hm_sd_notify("STOPPING=1");
	uv_timer_stop(&e->retry);
	snap_abort(e);
	/* The table holds every commit already: only closing and freeing remain. */
	hm__exit_deadline(3000, "edge");
	atomic_store(&e->sub_stop, true);
	hm__shutdown_step("stopping the subscriptions");
	for (uint32_t i = 0; i < e->nlinks; i++)
		if (e->links[i].sub_aio != NULL)
			nng_aio_stop(e->links[i].sub_aio);
	for (uint32_t i = 0; i < e->nlinks; i++) {
		struct link *l = &e->links[i];

		if (l->sub_open) {
			nng_dialer_close(l->sub_d);
			hm__shutdown_step("closing a SUB socket");
			nng_close(l->sub);
			l->sub_open = false;
		}
	}
	/* Nothing may be in flight on a socket nng_close() reaps (nng #1543). */
	hm__shutdown_step("stopping the sync request");
	atomic_store(&e->req_stop, true);
	if (e->req_aio != NULL)
		nng_aio_stop(e->req_aio);
	for (uint32_t i = 0; i < e->nlinks; i++) {
		struct link *l = &e->links[i];

		if (l->req_open) {
			hm__shutdown_step("closing a sync socket");
			nng_close(l->req);
			l->req_open = false;
		}
		if (l->sub_tls != NULL)
			nng_tls_config_free(l->sub_tls);
		if (l->req_tls != NULL)
			nng_tls_config_free(l->req_tls);
		l->sub_tls = l->req_tls = NULL;
	}
	hm__tls_retired_free(); /* every socket closed: no connection may start */
	hm__admin_stop(e->admin);
	e->admin = NULL;
	hm__mailbox_close(&e->mb);
	close_handle((uv_handle_t *)&e->sigterm);
	close_handle((uv_handle_t *)&e->sigint);
	close_handle((uv_handle_t *)&e->sighup);
	/* Once libuv lets go of them, a second SIGTERM must not kill the process mid-cleanup. */
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	close_handle((uv_handle_t *)&e->tick);
	close_handle((uv_handle_t *)&e->retry);
}

static void on_signal(uv_signal_t *s, int signum)
{
	struct edge *e = s->data;

	if (e->stopping)
		return;
	hm_log(HM_LOG_NOTICE, "edge", "%s: stopping at seq %" PRIu64,
	       signum == SIGTERM ? "SIGTERM" : "SIGINT", e->applied);
	shutdown_edge(e);
}

/* ---- Admin ----------------------------------------------------------------------------------- */

static void admin_status(void *ctx, struct hm__jsonw *w)
{
	struct edge *e = ctx;
	char hex[33];

	hm__jw_kcstr(w, "role", "edge");
	hm__jw_kcstr(w, "node", e->node);
	hm__jw_kcstr(w, "state", state_names[e->state]);
	hm__jw_khex64(w, "epoch", e->epoch);
	hm__jw_ku64(w, "seq", e->applied);
	hm__jw_ku64(w, "origin_seq", HM_MAX(e->origin_seq, e->applied));
	hm__jw_khex64(w, "origin_epoch", e->origin_epoch);
	hm__jw_ku64(w, "apps", e->apps);
	hm__jw_ku64(w, "domains", e->domains);
	hm__jw_ku64(w, "dynos", e->dynos);
	hm__jw_ku64(w, "secrets", e->secrets); /* counted, never shown */
	hm__jw_ku64(w, "certs", e->ncerts);
	hm__jw_ku64(w, "ticket_keys", e->ticket_keys);
	hm__jw_kcstr(w, "cert_store", e->certs_path);
	hm_digest_hex(e->digest, hex);
	hm__jw_kcstr(w, "digest", hex);
	hm_digest_hex(e->table_digest, hex);
	hm__jw_kcstr(w, "table_digest", hex);
	hm__jw_kbool(w, "stale", e->stale);
	hm__jw_ku64_or_null(w, "last_heartbeat_ms", e->last_hb_ms != 0,
			    hm_mono_ms() - e->last_hb_ms);
	hm__jw_kbool(w, "subscribed", another_connected(e, NULL));
	/* Each origin: its URLs, whether its feed is connected, and what it said last. */
	hm__jw_key(w, "origins");
	hm__jw_arr(w);
	for (uint32_t i = 0; i < e->nlinks; i++) {
		const struct link *l = &e->links[i];

		hm__jw_obj(w);
		hm__jw_kcstr(w, "url", l->publish);
		hm__jw_kcstr(w, "sync", l->sync);
		hm__jw_kbool(w, "connected", l->connected);
		hm__jw_ku64_or_null(w, "last_heartbeat_ms", l->last_hb_ms != 0,
				    hm_mono_ms() - l->last_hb_ms);
		if (l->last_hb_ms != 0) {
			hm__jw_khex64(w, "epoch", l->hb_epoch);
		} else {
			hm__jw_key(w, "epoch");
			hm__jw_null(w);
		}
		hm__jw_ku64(w, "seq", l->hb_seq);
		hm__jw_kbool(w, "refused", l->conflict);
		hm__jw_kbool(w, "syncing", i == e->sync_cur);
		hm__jw_obj_end(w);
	}
	hm__jw_arr_end(w);
	hm__jw_ku64(w, "origin_conflicts", e->origin_conflicts);
	hm__admin_tls_status(w, &e->tls);
	hm__jw_ku64(w, "tls_handshake_failures", tls_failures(e));
	hm__jw_kcstr(w, "table", e->cfg->table);
	hm__jw_ku64(w, "batches_applied", e->batches_applied);
	hm__jw_ku64(w, "catchups", e->catchups);
	hm__jw_ku64(w, "snapshots", e->snapshots);
	hm__jw_ku64(w, "snapshot_restarts", e->snapshot_restarts);
	hm__jw_ku64(w, "skipped_invalid", e->skipped_invalid);
	hm__jw_ku64(w, "skipped_version", e->skipped_version);
	hm__jw_ku64(w, "digest_mismatches", e->digest_mismatches);
	hm__jw_ku64(w, "epoch_changes", e->epoch_changes);
	hm__jw_key(w, "last_epoch_change");
	if (e->epoch_changes > 0) {
		hm__jw_obj(w);
		hm__jw_khex64(w, "from", e->epoch_from);
		hm__jw_khex64(w, "to", e->epoch_to);
		hm__jw_obj_end(w);
	} else {
		hm__jw_null(w);
	}
	hm__jw_ku64(w, "buffered", e->buffered);
	hm__jw_ku64(w, "buffer_drops", e->buffer_drops);
	hm__jw_ku64(w, "sync_errors", e->sync_errors);
	hm__jw_kcstr_or_null(w, "table_error",
			     e->table_error != 0 ? hm_strerror(e->table_error) : NULL);
	hm__jw_ku64(w, "table_errors", e->table_errors);
	hm__jw_ku64(w, "sync_redials", e->sync_redials);
}

static void admin_dump_head(void *ctx, struct hm__jsonw *w)
{
	struct edge *e = ctx;
	char hex[33];

	hm__jw_kcstr(w, "role", "edge");
	hm__jw_kcstr(w, "node", e->node);
	hm__jw_khex64(w, "epoch", e->epoch);
	hm__jw_ku64(w, "seq", e->applied);
	hm_digest_hex(e->digest, hex);
	hm__jw_kcstr(w, "digest", hex);
}

static const struct hm_table_writer *admin_table(void *ctx)
{
	struct edge *e = ctx;

	/* During a full resync the old writer is closed (the file still serves the routers). */
	return e->w;
}

static const struct hm_certstore_writer *admin_certs(void *ctx)
{
	return ((struct edge *)ctx)->certs;
}

static const struct hm__admin_ops admin_ops = {
    .status = admin_status,
    .dump_head = admin_dump_head,
    .table = admin_table,
    .certs = admin_certs,
};

/* ---- Run ------------------------------------------------------------------------------------- */

/* Opens and dials one origin's SUB and REQ sockets. */
static int link_open(struct edge *e, struct link *l)
{
	int rv;

	if ((rv = nng_sub0_open(&l->sub)) != 0) {
		hm_log(HM_LOG_ERR, "edge", "cannot open a SUB socket: %s", nng_strerror(rv));
		return hm__nng_err(rv);
	}
	l->sub_open = true;
	if ((rv = nng_req0_open(&l->req)) != 0) {
		hm_log(HM_LOG_ERR, "edge", "cannot open a REQ socket: %s", nng_strerror(rv));
		return hm__nng_err(rv);
	}
	l->req_open = true;
	if ((rv = hm__nng_socket_opts(l->sub, 0)) != 0 ||
	    (rv = hm__nng_socket_opts(l->req, 0)) != 0 ||
	    (rv = hm__nng_err(nng_socket_set(l->sub, NNG_OPT_SUB_SUBSCRIBE, "", 0))) != 0 ||
	    (rv = hm__nng_err(nng_socket_set_int(l->sub, NNG_OPT_RECVBUF, 8192))) != 0) {
		hm_log(HM_LOG_ERR, "edge", "cannot set socket options: %s", hm_strerror(rv));
		return rv;
	}
	if ((rv = nng_pipe_notify(l->sub, NNG_PIPE_EV_ADD_POST, sub_pipe_cb, l)) != 0 ||
	    (rv = nng_pipe_notify(l->sub, NNG_PIPE_EV_REM_POST, sub_pipe_cb, l)) != 0 ||
	    (rv = nng_aio_alloc(&l->sub_aio, sub_cb, l)) != 0)
		return hm__nng_err(rv);
	if ((rv = dial(e, l->sub, l->publish, &l->sub_d, &l->sub_tls)) != 0 ||
	    (rv = dial(e, l->req, l->sync, &l->req_d, &l->req_tls)) != 0) {
		hm_log(HM_LOG_ERR, "edge", "cannot dial %s / %s: %s", l->publish, l->sync,
		       hm_strerror(rv));
		return rv;
	}
	l->last_redial_ms = hm_mono_ms();
	return 0;
}

static int setup(struct edge *e)
{
	const struct hm__edge_cfg *cfg = e->cfg;
	char err[512], dir[PATH_MAX];
	const char *slash = strrchr(cfg->table, '/');
	int rv;

	/* The table's directory (/run/hermod under systemd): made if missing, for the service's
	 * user and group only. */
	if (slash != NULL && slash != cfg->table && (size_t)(slash - cfg->table) < sizeof(dir)) {
		memcpy(dir, cfg->table, (size_t)(slash - cfg->table));
		dir[slash - cfg->table] = '\0';
		if (mkdir(dir, 0750) != 0 && errno != EEXIST)
			hm_log(HM_LOG_WARNING, "edge", "cannot create %s: %s", dir,
			       strerror(errno));
	}
	if ((rv = hm_certstore_path(cfg->table, e->certs_path, sizeof(e->certs_path))) != 0 ||
	    (rv = table_open(e)) != 0)
		return rv;
	if ((rv = hm__admin_start(&e->admin, &e->loop, cfg->admin, (uint64_t)cfg->admin_idle,
				  &admin_ops, e, err, sizeof(err))) != 0) {
		hm_log(HM_LOG_ERR, "edge", "%s", err);
		return rv;
	}
	if ((rv = nng_aio_alloc(&e->req_aio, req_cb, e)) != 0)
		return hm__nng_err(rv);
	e->start_ms = hm_mono_ms();
	for (uint32_t i = 0; i < e->nlinks; i++)
		if ((rv = link_open(e, &e->links[i])) != 0)
			return rv;
	e->started = true;
	for (uint32_t i = 0; i < e->nlinks; i++)
		nng_recv_aio(e->links[i].sub, e->links[i].sub_aio);
	uv_signal_start(&e->sigterm, on_signal, SIGTERM);
	uv_signal_start(&e->sigint, on_signal, SIGINT);
	uv_signal_start(&e->sighup, on_sighup, SIGHUP);
	uv_timer_start(&e->tick, on_tick, TICK_MS, TICK_MS);
	return 0;
}

int hm__edge_run(const struct hm__edge_cfg *cfg)
{
	struct edge *e = calloc(1, sizeof(*e));
	int rv, code = 0;

	if (e == NULL)
		return 1;
	e->cfg = cfg;
	snprintf(e->node, sizeof(e->node), "%s", cfg->node);
	hm_require(cfg->norigins >= 1 && cfg->norigins <= HM__URLS_MAX);
	e->links = calloc(cfg->norigins, sizeof(*e->links));
	hm_require(e->links != NULL);
	e->nlinks = cfg->norigins;
	for (uint32_t i = 0; i < e->nlinks; i++) {
		e->links[i].e = e;
		e->links[i].idx = i;
		e->links[i].publish = cfg->publish_urls[i];
		e->links[i].sync = cfg->sync_urls[i];
	}
	round_reset(e);
	uv_loop_init(&e->loop);
	hm_require(hm__mailbox_init(&e->mb, &e->loop, on_mail, discard_mail, e) == 0);
	uv_signal_init(&e->loop, &e->sighup);
	uv_signal_init(&e->loop, &e->sigterm);
	uv_signal_init(&e->loop, &e->sigint);
	uv_timer_init(&e->loop, &e->tick);
	uv_timer_init(&e->loop, &e->retry);
	e->sigterm.data = e->sigint.data = e->sighup.data = e->tick.data = e->retry.data = e;
	if ((e->tls.cur = cfg->tls) != NULL)
		hm__tls_ref(e->tls.cur);
	hm__asm_init(&e->as, free_part);
	hm_require(hm_proto_decoder_new(&e->dec_in) == 0 &&
		   hm_proto_decoder_new(&e->dec_apply) == 0);
	rv = setup(e);
	if (rv == 0) {
		hm_log(HM_LOG_NOTICE, "edge",
		       "node %s: table %s at epoch %016" PRIx64 " seq %" PRIu64
		       "; following %s and %s",
		       e->node, cfg->table, e->epoch, e->applied, cfg->publish, cfg->sync);
		uv_run(&e->loop, UV_RUN_DEFAULT);
	} else {
		code = 1;
	}
	if (!e->stopping)
		shutdown_edge(e);
	uv_run(&e->loop, UV_RUN_DEFAULT);
	for (uint32_t i = 0; i < e->nlinks; i++)
		if (e->links[i].sub_aio != NULL)
			nng_aio_free(e->links[i].sub_aio);
	if (e->req_aio != NULL)
		nng_aio_free(e->req_aio);
	while (e->bhead != NULL) {
		uint32_t link;

		nng_msg_free(buffer_pop(e, &link));
	}
	hm__asm_fini(&e->as);
	hm_table_writer_close(e->w);
	hm_certstore_writer_close(e->certs);
	hm_proto_decoder_free(e->dec_in);
	hm_proto_decoder_free(e->dec_apply);
	hm__mailbox_fini(&e->mb);
	if (uv_loop_close(&e->loop) != 0)
		hm_log(HM_LOG_WARNING, "edge", "libuv loop not empty at exit");
	hm__tls_unref(e->tls.cur);
	if (code == 0)
		hm_log(HM_LOG_NOTICE, "edge", "stopped");
	free(e->links);
	free(e);
	return code;
}
