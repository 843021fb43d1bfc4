/*
 * The etcd store's upkeep (store_etcd_maint.h, docs/store-etcd.md "Keeping etcd bounded").
 *
 * The compactor. Snapshot uploads, history compaction and defragmentation are done by one
 * origin at a time, so that N origins do not upload N snapshots and defragment the same members
 * N times. An origin claims the role by a txn that creates P/compactor (its node name) attached
 * to a fresh lease, only if the key does not exist; it keeps the lease alive every TTL/3 and
 * stops acting as the compactor as soon as a keep-alive says the lease is gone, or none has been
 * answered for a whole TTL (it may be gone: better nobody for a moment than two). When the
 * holder dies, its lease expires, the key goes with it, and the next claim of another origin
 * (each reads the key every tick, about a second) wins. The holder reads the key every TTL/3,
 * and stops if it is gone or attached to another lease. Correctness never depends on there being
 * exactly one: the snapshot install is a CAS that also compares P/compactor's lease with the
 * installer's, compactions are idempotent, and a defragmentation only costs time.
 *
 * Garbage stages (docs/store-etcd.md "Garbage stages"). Every period the compactor also reads
 * a bounded page of P/stage/ keys (keys only) and deletes the stages whose newest key is at or
 * below the revision it saw a period earlier and that nothing refers to: each by a txn that
 * compares their meta absent (never committed; the commit compares chunk 0 present, so a stage
 * deleted here is never committed after) or, for a committed one, its log entry gone (trimmed
 * under a snapshot).
 *
 * One job runs at a time (a claim, a compaction, a collection, a sweep of the members), so the
 * compactor never defragments two members at once: a sweep asks every member's status, then
 * defragments those whose file is mostly free pages (in use at most half of it, and the file
 * at least defrag_min), followers first and the leader last, each only after the previous one
 * answered. A defragmentation that fails or times out ends the sweep: that member may still
 * be busy with it, and the next sweep comes a period later.
 *
 * NOSPACE. Every origin asks its current member's status every tick; 3.4 lists the cluster's
 * alarms in it. While NOSPACE is raised, etcd refuses every write that adds data, so the store
 * is told (it then refuses requests with the reason, instead of failing them one by one). The
 * compactor recovers: it compacts etcd's history to the latest revision (not a minute back:
 * the space is needed now; watches behind it restart from the keys), defragments every member,
 * measures them again, and disarms the alarm only when every member's file is under 90% of the
 * quota (otherwise live data fills it: the operator must act, and the log says so; it tries
 * again a compaction period later). If the alarm is up and nobody holds P/compactor (the
 * holder died, and NOSPACE refuses the lease grant a new claim needs), an origin whose grant
 * was refused recovers without the lease: every step is safe to repeat.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "syncd/store_etcd_maint.h"

#define KEY_MAX		HM__ETCD_KEY_MAX
#define DEFAULT_TTL_MS	10000
#define DEFAULT_COMPACT 60000
#define DEFAULT_DEFRAG	600000
#define DEFAULT_QUOTA	(2ull << 30)
#define DISARM_PERCENT	90

#define GC_SCAN 4096 /* stage keys read per collection (keys only) */
#define GC_MAX	16   /* stages deleted per collection */

enum job { J_NONE, J_COMPACT, J_MEASURE, J_DEFRAG, J_REMEASURE, J_ALARMS, J_DISARM, J_COLLECT };

/* A stage the collection may delete: its id (hex), whether it has a meta key (committed). */
struct garbage {
	char id[33];
	bool committed;
};

struct member {
	uint64_t id, size, in_use;
	bool known, want;
};

struct hm__etcd_maint {
	struct hm__etcd *etcd; /* borrowed */
	struct hm__etcd_maint_cfg cfg;
	char prefix[KEY_MAX / 2], node[128];
	hm__etcd_maint_alarm_cb cb;
	void *arg;

	/* The lease and P/compactor. */
	bool holder, keeping, orphan; /* orphan: NOSPACE refused our claim, nobody holds it */
	bool claiming;		      /* reading P/compactor, granting, claiming: in flight */
	int64_t lease, ka_lease;      /* ka_lease: the one the keep-alive in flight is for */
	/* ka_ok: when the last keep-alive answered (or the grant) was sent; etcd's expiry is at
	 * least a TTL after it, so stepping down a TTL after ka_ok is never late. */
	uint64_t ttl_ms, ka_due, ka_ok, ka_sent, claim_due;
	char holder_name[128]; /* "" when nobody holds it (as last read) */

	/* The job in flight (the claim runs beside it). */
	enum job job;
	bool recovering; /* the sweep is a NOSPACE recovery: every member, then disarm */
	struct member *members;
	uint32_t n, at, pass; /* the member asked or defragmented; pass 0 followers, 1 leader */
	uint64_t leader;
	struct hm__etcd_alarm *alarms; /* owned copy while disarming */
	size_t nalarms, alarm_at;

	int64_t seen_rev, latest_rev, compact_to, compacted_to;
	uint64_t compact_due, defrag_due, recover_due;

	/* The alarm, from the status of the current member. */
	bool probing, nospace;
	uint64_t db_size, db_in_use;

	/* Collecting garbage stages: scanned from gc_from ("": the first), each old when its
	 * newest key is at or below gc_old (the revision seen a period before the scan). */
	char gc_from[KEY_MAX];
	struct garbage gc[GC_MAX];
	uint32_t gc_n, gc_at;
	int64_t gc_old, gc_mark;
	uint64_t gc_due;

	uint64_t compactions, defrags, disarms, stages_collected, gc_passes;
};

static void job_done(struct hm__etcd_maint *m)
{
	/* The next recovery (if the alarm is still up) a period after this one ended. */
	if (m->recovering)
		m->recover_due = hm_mono_ms() + m->cfg.compact_every_ms;
	m->job = J_NONE;
	m->recovering = false;
}

static void best_effort_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	(void)arg;
	(void)err;
	(void)r;
}

static void lose(struct hm__etcd_maint *m, const char *why)
{
	hm_log(HM_LOG_WARNING, "origin", "etcd: no longer the compactor: %s", why);
	if (m->lease != 0) /* gone already, most likely: then etcd says so and nothing happens */
		hm__etcd_lease_revoke(m->etcd, m->lease, best_effort_cb, m);
	m->holder = false;
	m->lease = 0;
	m->holder_name[0] = '\0';
	m->claim_due = hm_mono_ms();
}

/* ---- The alarm ------------------------------------------------------------------------------- */

static void set_nospace(struct hm__etcd_maint *m, bool nospace)
{
	char why[400];

	if (nospace == m->nospace)
		return;
	m->nospace = nospace;
	if (!nospace) {
		m->orphan = false;
		hm_log(HM_LOG_NOTICE, "origin", "etcd: the NOSPACE alarm is cleared");
		m->cb(m->arg, false, "");
		return;
	}
	snprintf(why, sizeof(why),
		 "etcd's database is over its space quota (alarm NOSPACE; this member's file "
		 "%.1f MiB, %.1f MiB in use): etcd refuses writes until the compactor (%s) has "
		 "compacted, defragmented and disarmed it",
		 (double)m->db_size / (1 << 20), (double)m->db_in_use / (1 << 20),
		 m->holder	     ? "this origin"
		 : m->holder_name[0] ? m->holder_name
				     : "none yet");
	hm_log(HM_LOG_ERR, "origin", "etcd: %s", why);
	m->cb(m->arg, true, why);
}

static void probe_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;

	m->probing = false;
	if (err != 0)
		return; /* the store's own requests say whether etcd answers */
	m->db_size = (uint64_t)r->db_size;
	m->db_in_use = (uint64_t)r->db_size_in_use;
	m->latest_rev = HM_MAX(m->latest_rev, r->header.revision);
	set_nospace(m, r->nospace);
}

/* ---- Sweeps: status of every member, defragment one at a time, disarm -------------------- */

static void sweep_next(struct hm__etcd_maint *m);

static void disarm_next(struct hm__etcd_maint *m);

static void disarm_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		hm_log(HM_LOG_WARNING, "origin", "etcd: disarming NOSPACE failed: %s%s%s",
		       hm_strerror(err), r->message[0] ? ": " : "", r->message);
		free(m->alarms);
		m->alarms = NULL;
		job_done(m);
		return;
	}
	m->disarms++;
	hm_log(HM_LOG_NOTICE, "origin", "etcd: NOSPACE disarmed on member %016" PRIx64,
	       m->alarms[m->alarm_at].member_id);
	m->alarm_at++;
	disarm_next(m);
}

static void disarm_next(struct hm__etcd_maint *m)
{
	for (; m->alarm_at < m->nalarms; m->alarm_at++)
		if (m->alarms[m->alarm_at].type == HM__ETCD_ALARM_NOSPACE &&
		    hm__etcd_alarm_disarm(m->etcd, m->alarms[m->alarm_at].member_id,
					  HM__ETCD_ALARM_NOSPACE, disarm_cb, m) == 0)
			return;
	free(m->alarms);
	m->alarms = NULL;
	m->probing = false; /* the next tick asks again at once */
	job_done(m);
}

static void alarms_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;

	if (err == -ECANCELED)
		return;
	if (err != 0 || r->nalarms == 0 ||
	    (m->alarms = calloc(r->nalarms, sizeof(*m->alarms))) == NULL) {
		job_done(m);
		return;
	}
	memcpy(m->alarms, r->alarms, r->nalarms * sizeof(*m->alarms));
	m->nalarms = r->nalarms;
	m->alarm_at = 0;
	m->job = J_DISARM;
	disarm_next(m);
}

/* After a recovery's defragmentation: every member measured again. */
static void recovered(struct hm__etcd_maint *m)
{
	uint64_t quota = m->cfg.quota != 0 ? m->cfg.quota : DEFAULT_QUOTA, largest = 0;

	for (uint32_t i = 0; i < m->n; i++)
		largest = HM_MAX(largest, m->members[i].size);
	if (largest * 100 >= quota * DISARM_PERCENT) {
		hm_log(
		    HM_LOG_ERR, "origin",
		    "etcd: after compaction and defragmentation a member's file is still %.1f MiB "
		    "of the %.1f MiB quota: live data fills it (delete data, or raise etcd's "
		    "--quota-backend-bytes and the origins' --etcd-quota); trying again later",
		    (double)largest / (1 << 20), (double)quota / (1 << 20));
		job_done(m);
		return;
	}
	m->job = J_ALARMS;
	if (hm__etcd_alarm_list(m->etcd, alarms_cb, m) != 0)
		job_done(m);
}

static void measure_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	struct member *mb;

	if (err == -ECANCELED)
		return;
	mb = &m->members[m->at];
	mb->known = err == 0;
	if (err == 0) {
		mb->id = r->header.member_id;
		mb->size = (uint64_t)r->db_size;
		mb->in_use = (uint64_t)r->db_size_in_use;
		if (r->leader != 0)
			m->leader = r->leader;
	}
	m->at++;
	sweep_next(m);
}

static void defrag_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	struct member *mb;

	if (err == -ECANCELED)
		return;
	mb = &m->members[m->at];
	if (err != 0) {
		/* It may still be defragmenting (a slow member, a deadline): touch no other member
		 * until the next sweep. */
		hm_log(HM_LOG_WARNING, "origin",
		       "etcd: defragmenting %s failed: %s%s%s; the next sweep goes on",
		       hm__etcd_endpoint(m->etcd, m->at), hm_strerror(err),
		       r->message[0] ? ": " : "", r->message);
		job_done(m);
		return;
	}
	m->defrags++;
	hm_log(HM_LOG_INFO, "origin",
	       "etcd: defragmented %s (its file was %.1f MiB, %.1f MiB in use)",
	       hm__etcd_endpoint(m->etcd, m->at), (double)mb->size / (1 << 20),
	       (double)mb->in_use / (1 << 20));
	mb->want = false;
	m->at++;
	sweep_next(m);
}

/* The next step of the sweep in m->job; ends the job when there is none. */
static void sweep_next(struct hm__etcd_maint *m)
{
	if (m->job == J_MEASURE || m->job == J_REMEASURE) {
		if (m->at < m->n) {
			if (hm__etcd_status(m->etcd, m->at, measure_cb, m) != 0)
				job_done(m);
			return;
		}
		if (m->job == J_REMEASURE) {
			recovered(m);
			return;
		}
		for (uint32_t i = 0; i < m->n; i++) {
			struct member *mb = &m->members[i];

			mb->want = mb->known && (m->recovering || (mb->size >= m->cfg.defrag_min &&
								   mb->in_use * 2 <= mb->size));
			hm_log(HM_LOG_DEBUG, "origin",
			       "etcd: %s: file %" PRIu64 " bytes, %" PRIu64 " in use%s",
			       hm__etcd_endpoint(m->etcd, i), mb->size, mb->in_use,
			       mb->want ? ": to defragment" : "");
		}
		m->job = J_DEFRAG;
		m->at = 0;
		m->pass = 0;
	}
	/* J_DEFRAG: followers, then the leader (a defragmenting member stops answering for a
	 * moment; the leader's pause also stalls the cluster's writes). */
	for (; m->pass < 2; m->pass++, m->at = 0)
		for (; m->at < m->n; m->at++) {
			struct member *mb = &m->members[m->at];

			if (!mb->want || (mb->id == m->leader) != (m->pass == 1))
				continue;
			if (hm__etcd_defragment(m->etcd, m->at, defrag_cb, m) != 0) {
				job_done(m);
				return;
			}
			return;
		}
	if (m->recovering) {
		m->job = J_REMEASURE;
		m->at = 0;
		sweep_next(m);
		return;
	}
	job_done(m);
}

static void sweep(struct hm__etcd_maint *m)
{
	memset(m->members, 0, m->n * sizeof(*m->members));
	m->leader = 0;
	m->job = J_MEASURE;
	m->at = 0;
	sweep_next(m);
}

/* ---- Compaction ------------------------------------------------------------------------------ */

static void compact_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	uint64_t now = hm_mono_ms();

	if (err == -ECANCELED)
		return;
	if (err == 0) {
		m->compactions++;
		hm_log(HM_LOG_DEBUG, "origin", "etcd: history compacted to revision %" PRId64,
		       m->compacted_to);
	} else if (err == HM_ECOMPACTED) { /* compacted as far already (by a previous holder) */
		hm_log(HM_LOG_DEBUG, "origin", "etcd: history already compacted to %" PRId64 ": %s",
		       m->compacted_to, r->message);
	} else
		hm_log(HM_LOG_WARNING, "origin", "etcd: compaction failed: %s%s%s",
		       hm_strerror(err), r->message[0] ? ": " : "", r->message);
	if (m->recovering) {
		sweep(m);
	} else if (now >= m->defrag_due) {
		m->defrag_due = now + m->cfg.defrag_every_ms;
		sweep(m);
	} else {
		job_done(m);
	}
}

static void compact(struct hm__etcd_maint *m, int64_t rev)
{
	m->job = J_COMPACT;
	m->compacted_to = rev;
	if (hm__etcd_compact(m->etcd, rev, false, compact_cb, m) != 0)
		job_done(m);
}

/* ---- Garbage stages -------------------------------------------------------------------------- */

/* P/stage/ into buf (KEY_MAX / 2 + 8 bytes at least). */
static size_t stages_key(const struct hm__etcd_maint *m, char *buf)
{
	return (size_t)snprintf(buf, KEY_MAX / 2 + 8, "%sstage/", m->prefix);
}

static void collect_next(struct hm__etcd_maint *m);

static void drop_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	struct garbage *g = &m->gc[m->gc_at];

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		hm_log(HM_LOG_WARNING, "origin", "etcd: deleting stage %s failed: %s%s%s", g->id,
		       hm_strerror(err), r->message[0] ? ": " : "", r->message);
		job_done(m); /* the next collection tries again */
		return;
	}
	if (r->succeeded) {
		m->stages_collected++;
		hm_log(HM_LOG_INFO, "origin", "etcd: deleted the %s stage %s",
		       g->committed ? "trimmed" : "abandoned", g->id);
	}
	m->gc_at++;
	collect_next(m);
}

/*
 * Deletes stage g by a txn that holds only if nothing refers to it: an uncommitted stage has
 * no meta (the commit txn puts it, and compares that chunk 0 exists, so a stage deleted here
 * is never committed after); a committed one's log entry (meta's seq) is gone, trimmed under
 * a snapshot, and no log entry is ever written again at that seq.
 */
static void drop_stage(struct hm__etcd_maint *m, const struct garbage *g, uint64_t seq)
{
	char key[KEY_MAX], end[KEY_MAX], ck[KEY_MAX];
	size_t n = (size_t)snprintf(key, sizeof(key), "%sstage/%s/", m->prefix, g->id), cn;
	struct hm__etcd_cmp cmp = {.target = HM__ETCD_CREATE, .result = HM__ETCD_EQUAL};
	struct hm__etcd_op del = {.kind = HM__ETCD_DELETE,
				  .key = key,
				  .key_len = n,
				  .range_end = end,
				  .range_end_len = hm__etcd_prefix_end(key, n, end)};
	struct hm__etcd_txn t = {.cmp = &cmp, .ncmp = 1, .success = &del, .nsuccess = 1};

	if (g->committed)
		cn = hm__etcd_log_key(ck, m->prefix, seq);
	else
		cn = (size_t)snprintf(ck, sizeof(ck), "%smeta", key);
	cmp.key = ck;
	cmp.key_len = cn;
	if (hm__etcd_txn(m->etcd, &t, drop_cb, m) != 0)
		job_done(m);
}

static void meta_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	const struct hm__etcd_kv *kv = r->op.nkvs == 1 ? &r->op.kvs[0] : NULL;
	uint64_t seq = 0;

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		job_done(m);
		return;
	}
	if (kv != NULL && kv->value_len == 16 && memcmp(kv->value, HM__ETCD_STAGE_MAGIC, 8) == 0) {
		for (int i = 0; i < 8; i++) /* little-endian, as store_etcd.c writes it */
			seq |= (uint64_t)kv->value[8 + i] << (8 * i);
		drop_stage(m, &m->gc[m->gc_at], seq);
		return;
	}
	if (kv != NULL)
		hm_log(HM_LOG_WARNING, "origin",
		       "etcd: stage %s has a meta key that is not one: kept", m->gc[m->gc_at].id);
	m->gc_at++; /* gone meanwhile: deleted by a previous compactor */
	collect_next(m);
}

/* The next candidate of the collection; ends the job when there is none. */
static void collect_next(struct hm__etcd_maint *m)
{
	const struct garbage *g;
	char key[KEY_MAX];
	size_t n;

	if (m->gc_at == m->gc_n) {
		job_done(m);
		return;
	}
	g = &m->gc[m->gc_at];
	if (!g->committed) {
		drop_stage(m, g, 0);
		return;
	}
	n = (size_t)snprintf(key, sizeof(key), "%sstage/%s/meta", m->prefix, g->id);
	if (hm__etcd_range(m->etcd, key, n, NULL, meta_cb, m) != 0)
		job_done(m);
}

/*
 * The scan's page of stage keys (sorted, so a stage's keys are adjacent: its chunks, then
 * meta): a stage is a candidate when its newest key is at or below gc_old. The last stage of a
 * page that has more may be cut: the next collection starts at it.
 */
static void scan_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	char base[KEY_MAX / 2 + 8], id[33] = "";
	size_t bn = stages_key(m, base);
	int64_t newest = 0;
	bool committed = false;

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		hm_log(HM_LOG_DEBUG, "origin", "etcd: reading the stages failed: %s",
		       hm_strerror(err));
		job_done(m);
		return;
	}
	m->gc_n = m->gc_at = 0;
	m->gc_from[0] = '\0';
	for (size_t i = 0; i <= r->op.nkvs; i++) {
		const struct hm__etcd_kv *kv = i < r->op.nkvs ? &r->op.kvs[i] : NULL;
		bool same = kv != NULL && kv->key_len > bn + 33 && id[0] != '\0' &&
			    memcmp(kv->key + bn, id, 32) == 0;

		if (!same && id[0] != '\0') {
			if (kv == NULL && r->op.more) { /* maybe cut: the next scan from it */
				snprintf(m->gc_from, sizeof(m->gc_from), "%s%s/", base, id);
				break;
			}
			if (newest <= m->gc_old) {
				if (m->gc_n == GC_MAX) {
					snprintf(m->gc_from, sizeof(m->gc_from), "%s%s/", base, id);
					break;
				}
				memcpy(m->gc[m->gc_n].id, id, sizeof(id));
				m->gc[m->gc_n++].committed = committed;
			}
			id[0] = '\0';
		}
		if (kv == NULL || kv->key_len <= bn + 33 || kv->key[bn + 32] != '/')
			continue; /* not a stage's key: not ours to judge */
		if (!same) {
			memcpy(id, kv->key + bn, 32);
			id[32] = '\0';
			newest = 0;
			committed = false;
		}
		newest = HM_MAX(newest, kv->mod_revision);
		committed |=
		    kv->key_len == bn + 33 + 4 && memcmp(kv->key + bn + 33, "meta", 4) == 0;
	}
	collect_next(m);
}

/* Reads the stage keys (keys only, a bounded page) to find the garbage among them. */
static void collect(struct hm__etcd_maint *m)
{
	char key[KEY_MAX], end[KEY_MAX];
	size_t n = stages_key(m, key);
	struct hm__etcd_range_opts o = {.limit = GC_SCAN, .keys_only = true};

	o.range_end = end;
	o.range_end_len = hm__etcd_prefix_end(key, n, end);
	if (m->gc_from[0] != '\0')
		n = (size_t)snprintf(key, sizeof(key), "%s", m->gc_from);
	m->job = J_COLLECT;
	if (hm__etcd_range(m->etcd, key, n, &o, scan_cb, m) != 0)
		job_done(m);
}

/* ---- Claiming and keeping the lease ---------------------------------------------------------- */

static void claim_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	uint64_t now = hm_mono_ms();
	int64_t lease = m->lease;

	if (err == -ECANCELED)
		return;
	m->claiming = false;
	if (err == 0 && r->succeeded) {
		m->holder = true;
		m->ka_ok = m->ka_sent;
		m->ka_due = now + m->ttl_ms / 3;
		m->compact_due = now + m->cfg.compact_every_ms;
		m->defrag_due = now + m->cfg.defrag_every_ms;
		m->compact_to = m->seen_rev;
		m->gc_due = now + m->cfg.compact_every_ms;
		m->gc_mark = m->seen_rev;
		snprintf(m->holder_name, sizeof(m->holder_name), "%s", m->node);
		hm_log(HM_LOG_NOTICE, "origin",
		       "etcd: this origin is the compactor (lease %016" PRIx64 ", TTL %" PRIu64
		       " ms)",
		       (uint64_t)lease, m->ttl_ms);
		return;
	}
	if (err == 0 && r->nresponses == 1 && r->responses[0].nkvs == 1) {
		const struct hm__etcd_kv *kv = &r->responses[0].kvs[0];

		snprintf(m->holder_name, sizeof(m->holder_name), "%.*s", (int)kv->value_len,
			 (const char *)kv->value);
	}
	if (err == -ENOSPC)
		m->orphan = true;
	m->lease = 0;
	hm__etcd_lease_revoke(m->etcd, lease, best_effort_cb, m);
}

static void grant_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	char key[KEY_MAX];
	size_t n = hm__etcd_maint_key(m, key, sizeof(key));
	struct hm__etcd_cmp cmp = {
	    .key = key, .key_len = n, .target = HM__ETCD_CREATE, .result = HM__ETCD_EQUAL};
	struct hm__etcd_op put = {.kind = HM__ETCD_PUT,
				  .key = key,
				  .key_len = n,
				  .value = m->node,
				  .value_len = strlen(m->node)};
	struct hm__etcd_op get = {.kind = HM__ETCD_RANGE, .key = key, .key_len = n};
	struct hm__etcd_txn t = {
	    .cmp = &cmp, .ncmp = 1, .success = &put, .nsuccess = 1, .failure = &get, .nfailure = 1};

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		/* NOSPACE refuses grants: with nobody holding the key, recover without one. */
		m->orphan = err == -ENOSPC;
		m->claiming = false;
		return;
	}
	m->lease = r->lease_id;
	m->ttl_ms = r->ttl > 0 ? (uint64_t)r->ttl * 1000 : m->cfg.lease_ttl_ms;
	put.lease = m->lease;
	if (hm__etcd_txn(m->etcd, &t, claim_cb, m) != 0) {
		hm__etcd_lease_revoke(m->etcd, m->lease, best_effort_cb, m);
		m->lease = 0;
		m->claiming = false;
	}
}

static void read_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;

	if (err == -ECANCELED)
		return;
	if (err != 0) {
		m->claiming = false;
		return;
	}
	if (r->op.nkvs == 1 && m->holder && r->op.kvs[0].lease != m->lease)
		lose(m, "P/compactor is attached to another lease");
	if (r->op.nkvs == 1) {
		snprintf(m->holder_name, sizeof(m->holder_name), "%.*s",
			 (int)r->op.kvs[0].value_len, (const char *)r->op.kvs[0].value);
		m->orphan = false;
		m->claiming = false;
		return;
	}
	if (m->holder)
		lose(m, "P/compactor is gone");
	m->holder_name[0] = '\0';
	m->ka_sent = hm_mono_ms(); /* the lease lives at least a TTL from here */
	if (hm__etcd_lease_grant(m->etcd, (int64_t)((m->cfg.lease_ttl_ms + 999) / 1000), grant_cb,
				 m) != 0)
		m->claiming = false;
}

static void keepalive_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct hm__etcd_maint *m = arg;
	uint64_t now = hm_mono_ms();

	if (err == -ECANCELED)
		return;
	m->keeping = false;
	if (!m->holder || m->ka_lease != m->lease)
		return; /* about a lease already given up */
	if (err == -ENOENT || (err == 0 && r->ttl <= 0)) {
		lose(m, "its lease expired");
	} else if (err == 0) {
		m->ka_ok = m->ka_sent;
		m->ka_due = now + m->ttl_ms / 3;
	}
	/* Another error: the next tick tries again; a TTL without an answer ends the role. */
}

/* ---- The module ------------------------------------------------------------------------------ */

int hm__etcd_maint_new(struct hm__etcd_maint **out, struct hm__etcd *etcd,
		       const struct hm__etcd_maint_cfg *cfg, hm__etcd_maint_alarm_cb cb, void *arg)
{
	struct hm__etcd_maint *m = calloc(1, sizeof(*m));
	uint32_t n = hm__etcd_nendpoints(etcd);

	if (m == NULL || (m->members = calloc(n, sizeof(*m->members))) == NULL) {
		free(m);
		return -ENOMEM;
	}
	m->etcd = etcd;
	m->cfg = *cfg;
	snprintf(m->prefix, sizeof(m->prefix), "%s", cfg->prefix);
	snprintf(m->node, sizeof(m->node), "%s", cfg->node != NULL ? cfg->node : "");
	m->cfg.prefix = m->prefix;
	m->cfg.node = m->node;
	if (m->cfg.lease_ttl_ms == 0)
		m->cfg.lease_ttl_ms = DEFAULT_TTL_MS;
	if (m->cfg.compact_every_ms == 0)
		m->cfg.compact_every_ms = DEFAULT_COMPACT;
	if (m->cfg.defrag_every_ms == 0)
		m->cfg.defrag_every_ms = DEFAULT_DEFRAG;
	m->ttl_ms = m->cfg.lease_ttl_ms;
	m->n = n;
	m->cb = cb;
	m->arg = arg;
	*out = m;
	return 0;
}

void hm__etcd_maint_free(struct hm__etcd_maint *m)
{
	if (m == NULL)
		return;
	free(m->alarms);
	free(m->members);
	free(m);
}

/*
 * A collection, if one is due: stages untouched since the revision seen a period ago are
 * garbage if nothing refers to them (revisions, not clocks: the writer may be another machine).
 * Returns whether it took the job.
 */
static bool start_collection(struct hm__etcd_maint *m, uint64_t now)
{
	long limit = hm__etcd_test_limit("HM_TEST_ETCD_GC_LIMIT");

	if (now < m->gc_due || m->seen_rev <= 0 || limit == 0 ||
	    (limit > 0 && m->gc_passes >= (uint64_t)limit))
		return false;
	m->gc_due = now + m->cfg.compact_every_ms;
	m->gc_passes++;
	m->gc_old = m->gc_mark;
	m->gc_mark = m->seen_rev;
	if (m->gc_old > 0)
		collect(m);
	return m->job != J_NONE;
}

void hm__etcd_maint_tick(struct hm__etcd_maint *m, int64_t seen_rev)
{
	uint64_t now = hm_mono_ms();

	m->seen_rev = HM_MAX(m->seen_rev, seen_rev);
	m->latest_rev = HM_MAX(m->latest_rev, seen_rev);
	if (!m->probing && hm__etcd_status(m->etcd, hm__etcd_current(m->etcd), probe_cb, m) == 0)
		m->probing = true;
	if (m->holder && now - m->ka_ok >= m->ttl_ms)
		lose(m, "no keep-alive answered for the lease's TTL");
	if (m->holder && !m->keeping && now >= m->ka_due &&
	    hm__etcd_lease_keepalive(m->etcd, m->lease, keepalive_cb, m) == 0) {
		m->keeping = true;
		m->ka_lease = m->lease;
		m->ka_sent = now;
	}
	/* The others read P/compactor every tick, to claim it within a tick of its lease's
	 * expiry; the holder every TTL/3, to notice it was deleted or taken (an operator, a lease
	 * it thought alive). */
	if (!m->claiming && now >= m->claim_due) {
		char key[KEY_MAX];
		size_t n = hm__etcd_maint_key(m, key, sizeof(key));

		m->claim_due = m->holder ? now + m->ttl_ms / 3 : now;
		if (hm__etcd_range(m->etcd, key, n, NULL, read_cb, m) == 0)
			m->claiming = true;
	}
	if (m->job != J_NONE)
		return;
	if (!m->holder && !(m->orphan && m->nospace))
		return;
	if (m->nospace && now >= m->recover_due && m->latest_rev > 0) {
		hm_log(HM_LOG_NOTICE, "origin",
		       "etcd: NOSPACE: compacting to revision %" PRId64
		       ", then defragmenting every member",
		       m->latest_rev);
		m->recovering = true;
		compact(m, m->latest_rev);
		return;
	}
	/* Compaction and collection share the period: whichever has waited longer goes first. */
	if (m->holder && m->gc_due < m->compact_due && start_collection(m, now))
		return;
	if (m->holder && now >= m->compact_due && m->seen_rev > 0) {
		m->compact_due = now + m->cfg.compact_every_ms;
		if (m->compact_to > 0)
			compact(m, m->compact_to);
		m->compact_to = m->seen_rev;
		if (m->job != J_NONE)
			return;
	}
	if (m->holder)
		start_collection(m, now);
}

size_t hm__etcd_log_key(char *buf, const char *prefix, uint64_t seq)
{
	return (size_t)snprintf(buf, HM__ETCD_KEY_MAX, "%slog/%020" PRIu64, prefix, seq);
}

long hm__etcd_test_limit(const char *env)
{
#ifdef HM_TEST_HOOKS
	const char *v = getenv(env);
	FILE *f = v != NULL ? fopen(v, "r") : NULL;
	long n = -1;

	if (f != NULL) {
		if (fscanf(f, "%ld", &n) != 1)
			n = 0;
		fclose(f);
	}
	return n;
#else
	(void)env;
	return -1;
#endif
}

bool hm__etcd_maint_holder(const struct hm__etcd_maint *m)
{
	return m->holder;
}

int64_t hm__etcd_maint_lease(const struct hm__etcd_maint *m)
{
	return m->holder ? m->lease : 0;
}

size_t hm__etcd_maint_key(const struct hm__etcd_maint *m, char *buf, size_t size)
{
	return (size_t)snprintf(buf, size, "%scompactor", m->prefix);
}

uint64_t hm__etcd_maint_compactions(const struct hm__etcd_maint *m)
{
	return m->compactions;
}

void hm__etcd_maint_status(const struct hm__etcd_maint *m, struct hm__jsonw *w)
{
	hm__jw_kcstr_or_null(w, "etcd_compactor",
			     m->holder_name[0] != '\0' ? m->holder_name : NULL);
	hm__jw_kbool(w, "etcd_compactor_self", m->holder);
	hm__jw_ku64(w, "etcd_defrags", m->defrags);
	hm__jw_ku64(w, "etcd_disarms", m->disarms);
	hm__jw_ku64(w, "etcd_stage_scans", m->gc_passes);
	hm__jw_ku64(w, "etcd_stages_collected", m->stages_collected);
	hm__jw_kcstr_or_null(w, "etcd_alarm", m->nospace ? "NOSPACE" : NULL);
	hm__jw_ku64(w, "etcd_db_size", m->db_size);
	hm__jw_ku64(w, "etcd_db_size_in_use", m->db_in_use);
}
