/*
 * The etcd store (store.h, docs/store-etcd.md): several origins share one etcd cluster, and
 * etcd's compare-and-swap is the sequencer. The origin appends a group of batches (everything it
 * validated while the previous group was in flight), numbered head + 1 .. head + k, and the store
 * commits them by one transaction that compares P/head's mod_revision with the revision at which
 * this origin last saw it, and puts P/log/<seq> of each (the batch record in an envelope naming
 * the group's commit) and the new P/head. If another origin committed first, the compare fails:
 * nothing of the group is in etcd, the origin aborts it, learns the batches that won, and
 * validates the requests again. Records over HM__INLINE_MAX are staged first in chunk keys and
 * committed by the same transaction with an envelope that points at them; it also compares that
 * each stage's chunk 0 is still there and marks the stage committed (its meta key), so that the
 * compactor, which deletes stages nothing refers to, never deletes one in use.
 *
 * Every origin learns every commit by reading P/log/ from its head + 1 in seq order: when the
 * watch on P/log/ says something changed, when the once-a-second poll of P/head finds it ahead,
 * and after a lost compare. It applies what it reads to its state (foreign()), caches it in its
 * own journal segments (written by the journal's thread; etcd is the durable copy) and serves
 * catch-up and snapshots from them as the journal store does. Its own commits are recognised by
 * their seq: the head has already passed them.
 *
 * A transaction whose outcome is unknown (timed out, connection lost) is sent again, unchanged,
 * until some member answers: if an earlier attempt committed, the compare fails and the failure
 * branch shows P/log/<first seq of the group> with this commit's id. Meanwhile nothing else is
 * validated, and after STALE_MS without an answer from etcd the store reports itself stale (the
 * origin then refuses requests with the reason instead of holding them).
 *
 * At start-up the local cache is rebuilt from etcd: P/snap (if any), then the log after it.
 *
 * Upkeep (store_etcd_maint.c): one origin at a time, the compactor, uploads its snapshots and
 * compacts and defragments etcd; every origin watches for the NOSPACE alarm, during which it
 * is stale (requests refused with the reason) until the compactor has recovered.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/util.h"
#include "syncd/etcd.h"
#include "syncd/journal.h"
#include "syncd/snapfile.h"
#include "syncd/store.h"
#include "syncd/store_etcd_maint.h"

#define HM__INLINE_MAX (512u << 10) /* a record over this is staged in chunks */
#define CHUNK_BYTES    (1u << 20)
#define PAGE	       64 /* log entries per range while catching up */
#define POLL_MS	       1000
#define STALE_MS       3000
#define RETRY_MS       200
#define KEY_MAX	       HM__ETCD_KEY_MAX

/* A group: at most GROUP_OPS operations per txn (one log key per batch and the head: under etcd's
 * --max-txn-ops default of 128), and a batch joins while the envelopes so far are under
 * GROUP_BYTES; an inline record is at most HM__INLINE_MAX, so a txn carries at most 1.25 MiB of
 * values (under --max-request-bytes, 1.5 MiB, with room for the keys). */
#define GROUP_OPS   100
#define GROUP_MAX   (GROUP_OPS - 1)
#define GROUP_BYTES (768u << 10)
#define GROUP_HIST  8 /* batches per txn: 1, 2-3, 4-7, .., 64-127 */

#define EPOCH_MAGIC "HMEPOCH1"
#define SNAP_MAGIC  "HMSNAPD1"
#define SNAP_LEN    40 /* magic, seq, snap_id, bytes, pieces, crc */
#define HEAD_MAGIC  "HMHEAD01"
#define LOG_MAGIC   "HMLOG001"
#define EPOCH_LEN   24 /* magic, epoch, cluster id */
#define HEAD_LEN    40 /* magic, seq, ts_ms, commit_id */
#define LOG_FIXED   28 /* magic, kind, commit_id */
#define STAGED_LEN  (LOG_FIXED + 16 + 8 + 4 + 4)

enum { LOG_INLINE = 1, LOG_STAGED = 2 };

/* A key-value copied out of a response (the client's are borrowed for the callback). */
struct kvc {
	char *key;
	size_t key_len;
	uint8_t *value;
	size_t value_len;
	int64_t mod_revision;
};

/* A response, copied: the kvs of the op, or of every op of the txn branch taken, in order. */
struct res {
	int err;
	char msg[256];
	struct hm__etcd_header h;
	bool succeeded, more;
	struct kvc *kvs;
	size_t n;
	bool done; /* start-up: the loop runs until it is set */
};

/* IDLE -> (append) GROUP -> (flush) [STAGING ->] COMMITTING [-> WAITING -> COMMITTING] -> IDLE */
enum append_state { A_IDLE, A_GROUP, A_STAGING, A_COMMITTING, A_WAITING };

/* A batch of the group; rec is its flat record if it is staged (over HM__INLINE_MAX). */
struct member {
	struct hm__batch *b; /* one reference */
	struct hm__jpos *pos;
	uint8_t stage_id[16];
	char *rec;
	uint32_t nchunks;
};

struct estore {
	struct hm__store base;
	int lock_fd;
	struct hm__etcd *etcd;
	char prefix[KEY_MAX / 2];
	struct hm__journal *cache;
	struct hm__recover_ctx rc; /* the origin's state etc., for the start-up replay */
	uint64_t cluster_id;

	uint64_t head;	  /* the last seq this origin holds (applied or committed) */
	int64_t head_rev; /* P/head's mod_revision at that seq: the CAS compares it */

	/* The group being built or in flight (A_GROUP .. A_WAITING): g[0 .. gn), numbered
	 * head + 1 .., committed by one txn named commit_id; staging member stage_i, chunk. */
	enum append_state state;
	struct member g[GROUP_MAX];
	uint32_t gn, stage_i, chunk;
	size_t g_bytes;	   /* the envelopes' bytes */
	uint32_t g_staged; /* members staged: each adds a compare and a put (meta) to the txn */
	uint8_t commit_id[16];

	bool fetching, refetch; /* a catch-up range in flight; another wanted after it */
	bool want_ready;	/* ready() is due once caught up (after a commit resolved) */
	struct hm__etcd_watch *watch;
	uv_timer_t retry_timer, poll_timer;
	int handles; /* open uv handles: the struct is freed when the last one closes */
	bool polling, closing;

	bool stale;
	uint64_t last_ok_ms; /* mono ms of the last answer from etcd */
	char why[300];

	/* Uploading a snapshot (one at a time): its file, the piece being put. */
	char *up;
	size_t up_len;
	uint64_t up_seq, up_id;
	uint32_t up_piece, up_pieces;
	bool uploading;

	/* Upkeep: the compactor lease, compaction, defragmentation, the NOSPACE alarm. */
	struct hm__etcd_maint *maint;
	int64_t seen_rev; /* the latest revision a poll saw */
	bool nospace;	  /* the alarm is raised: stale until it is cleared */

	uint64_t commits, conflicts, retries, foreign, staged, watch_events, snapshots;
	uint64_t batches; /* committed by this origin's txns (commits counts the txns) */
	uint64_t group_hist[GROUP_HIST]; /* committed txns by batches in them */
	uint32_t group_max;
};

const size_t hm__store_etcd_size = sizeof(struct estore);

/* ---- Small helpers --------------------------------------------------------------------------- */

static void put_u64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 3; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static size_t key_of(const struct estore *s, char *buf, const char *what)
{
	return (size_t)snprintf(buf, KEY_MAX, "%s%s", s->prefix, what);
}

static size_t log_key(const struct estore *s, char *buf, uint64_t seq)
{
	return hm__etcd_log_key(buf, s->prefix, seq);
}

/* P/stage/<hex id>/ and, with chunk >= 0, that chunk's key. */
static size_t stage_key(const struct estore *s, char *buf, const uint8_t id[16], int64_t chunk)
{
	char hex[33];

	hm_hex(id, 16, hex);
	if (chunk < 0)
		return (size_t)snprintf(buf, KEY_MAX, "%sstage/%s/", s->prefix, hex);
	return (size_t)snprintf(buf, KEY_MAX, "%sstage/%s/%08" PRId64, s->prefix, hex, chunk);
}

/* The chunks of stage id, without its meta: [key, end) (both KEY_MAX); returns key's length,
 * *end_len end's. */
static size_t chunks_range(const struct estore *s, const uint8_t id[16], char *key, char *end,
			   size_t *end_len)
{
	size_t n = stage_key(s, key, id, -1);

	memcpy(end, key, n);
	end[n] = '9' + 1; /* chunk keys are digits */
	*end_len = n + 1;
	return n;
}

/* A delete of garbage: whatever it leaves, nothing refers to. */
static void best_effort_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	(void)arg;
	(void)er;
	if (err != 0 && err != -ECANCELED)
		hm_log(HM_LOG_DEBUG, "origin", "etcd: deleting garbage failed: %s",
		       hm_strerror(err));
}

static void res_fini(struct res *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->kvs[i].key);
		free(r->kvs[i].value);
	}
	free(r->kvs);
	memset(r, 0, sizeof(*r));
}

static void copy_kvs(struct res *r, const struct hm__etcd_op_result *op)
{
	struct kvc *kvs;

	if (op->nkvs == 0)
		return;
	kvs = realloc(r->kvs, (r->n + op->nkvs) * sizeof(*kvs));
	hm_require(kvs != NULL);
	r->kvs = kvs;
	for (size_t i = 0; i < op->nkvs; i++) {
		struct kvc *k = &r->kvs[r->n++];
		const struct hm__etcd_kv *src = &op->kvs[i];

		k->key = malloc(src->key_len + 1);
		k->value = malloc(src->value_len + 1);
		hm_require(k->key != NULL && k->value != NULL);
		memcpy(k->key, src->key, src->key_len);
		k->key[src->key_len] = '\0';
		memcpy(k->value, src->value, src->value_len);
		k->key_len = src->key_len;
		k->value_len = src->value_len;
		k->mod_revision = src->mod_revision;
	}
	if (op->more)
		r->more = true;
}

/* Copies what a callback was given into r. */
static void res_take(struct res *r, int err, const struct hm__etcd_result *er)
{
	r->err = err;
	snprintf(r->msg, sizeof(r->msg), "%s", er->message != NULL ? er->message : "");
	r->h = er->header;
	if (err != 0)
		return;
	r->succeeded = er->succeeded;
	copy_kvs(r, &er->op);
	for (size_t i = 0; i < er->nresponses; i++)
		copy_kvs(r, &er->responses[i]);
}

static void sync_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct res *r = arg;

	res_take(r, err, er);
	r->done = true;
}

static void on_tick(uv_timer_t *t)
{
	(void)t;
}

/*
 * Start-up only: runs the loop until the request started (e: what starting it returned) has
 * answered. A tick bounds each turn: an answer delivered from a timer callback comes before the
 * turn's poll, which would otherwise block with nothing left to wake it.
 */
static int wait_res(struct estore *s, int e, struct res *r)
{
	if (e != 0)
		return e;
	uv_timer_start(&s->retry_timer, on_tick, 5, 5);
	while (!r->done)
		uv_run(s->base.loop, UV_RUN_ONCE);
	uv_timer_stop(&s->retry_timer);
	return r->err;
}

static const struct kvc *find_kv(const struct res *r, const char *key, size_t n)
{
	for (size_t i = 0; i < r->n; i++)
		if (r->kvs[i].key_len == n && memcmp(r->kvs[i].key, key, n) == 0)
			return &r->kvs[i];
	return NULL;
}

static void set_stale(struct estore *s, bool stale, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_stale(struct estore *s, bool stale, const char *fmt, ...)
{
	va_list ap;

	if (stale) {
		va_start(ap, fmt);
		vsnprintf(s->why, sizeof(s->why), fmt, ap);
		va_end(ap);
	}
	if (stale == s->stale || s->closing)
		return;
	s->stale = stale;
	if (stale)
		hm_log(HM_LOG_ERR, "origin", "etcd: cannot commit: %s", s->why);
	else
		hm_log(HM_LOG_NOTICE, "origin", "etcd: committing again");
	s->base.ev->stale(s->base.ctx, stale, s->why);
}

/* etcd answered (anything that proves it can commit for us, or a definite answer). */
static void heard(struct estore *s)
{
	s->last_ok_ms = hm_mono_ms();
	if (!s->nospace)
		set_stale(s, false, NULL);
}

static void not_heard(struct estore *s, int err, const char *msg)
{
	if (hm_mono_ms() - s->last_ok_ms >= STALE_MS)
		set_stale(s, true, "no answer from etcd (%s) for %" PRIu64 " ms: %s%s%s",
			  hm__etcd_endpoint(s->etcd, hm__etcd_current(s->etcd)),
			  hm_mono_ms() - s->last_ok_ms, hm_strerror(err), msg[0] ? ": " : "", msg);
}

/* ---- Envelopes ------------------------------------------------------------------------------- */

static uint8_t *head_value(uint64_t seq, const uint8_t commit_id[16])
{
	uint8_t *v = malloc(HEAD_LEN);

	hm_require(v != NULL);
	memcpy(v, HEAD_MAGIC, 8);
	put_u64(v + 8, seq);
	put_u64(v + 16, hm_wall_ms());
	memcpy(v + 24, commit_id, 16);
	return v;
}

static int parse_head(const struct kvc *k, uint64_t *seq)
{
	if (k == NULL || k->value_len != HEAD_LEN || memcmp(k->value, HEAD_MAGIC, 8) != 0)
		return HM_ECORRUPT;
	*seq = get_u64(k->value + 8);
	return 0;
}

/* The bytes of m's log envelope. */
static size_t log_len(const struct member *m)
{
	return m->rec != NULL ? STAGED_LEN : LOG_FIXED + m->b->rec_len;
}

/* The log envelope of group member m (inline: the record; staged: where it is) into v
 * (log_len(m) bytes), naming the group's commit. */
static void log_value(const struct estore *s, const struct member *m, uint8_t *v)
{
	memcpy(v, LOG_MAGIC, 8);
	put_u32(v + 8, m->rec != NULL ? LOG_STAGED : LOG_INLINE);
	memcpy(v + 12, s->commit_id, 16);
	if (m->rec != NULL) {
		memcpy(v + LOG_FIXED, m->stage_id, 16);
		put_u64(v + LOG_FIXED + 16, m->b->rec_len);
		put_u32(v + LOG_FIXED + 24, m->nchunks);
		put_u32(v + LOG_FIXED + 28, hm_crc32c(0, m->rec, m->b->rec_len));
	} else {
		memcpy(v + LOG_FIXED, m->b->head, m->b->head_len);
		memcpy(v + LOG_FIXED + m->b->head_len, m->b->data, m->b->data_len);
	}
}

/* A checked batch from a whole record (rec_len bytes at rec, copied). */
static int batch_of(const void *rec, size_t len, struct hm__batch **out)
{
	size_t got;
	char *copy;
	int e;

	if ((e = hm__jrec_check(rec, len, HM__JREC_MAX_BODY, &got)) != 1 || got != len)
		return HM_ECORRUPT;
	if ((copy = malloc(len)) == NULL)
		return -ENOMEM;
	memcpy(copy, rec, len);
	if ((e = hm__batch_from_record(copy, len, out)) != 0)
		free(copy);
	return e;
}

/* ---- Learning commits: reading P/log/ from head + 1 ------------------------------------------ */

static void catch_up(struct estore *s);
static void on_retry(uv_timer_t *t);

/*
 * Applies the log entry kv (the next seq), whose staged record, if any, is in chunks (NULL:
 * inline). Returns 0, or an error after which this origin must stop (a gap or a record that does
 * not reproduce its digest: etcd's history is not what this origin applied).
 */
static int deliver(struct estore *s, const struct kvc *kv, const struct res *chunks, bool startup)
{
	struct hm__batch *b = NULL;
	struct hm__jpos pos = {0};
	uint64_t seq = strtoull(kv->key + strlen(s->prefix) + 4, NULL, 10);
	int e;

	if (seq != s->head + 1) {
		hm_log(HM_LOG_ERR, "origin", "etcd: log entry %" PRIu64 " after %" PRIu64 ": a gap",
		       seq, s->head);
		return HM_EGAP;
	}
	if (kv->value_len < LOG_FIXED || memcmp(kv->value, LOG_MAGIC, 8) != 0)
		return HM_ECORRUPT;
	if (get_u32(kv->value + 8) == LOG_INLINE) {
		e = batch_of(kv->value + LOG_FIXED, kv->value_len - LOG_FIXED, &b);
	} else {
		uint64_t bytes = get_u64(kv->value + LOG_FIXED + 16);
		uint32_t n = get_u32(kv->value + LOG_FIXED + 24);
		uint32_t crc = get_u32(kv->value + LOG_FIXED + 28);
		char *rec = NULL;
		size_t off = 0;

		e = HM_ECORRUPT;
		if (chunks != NULL && chunks->n == n && bytes <= SIZE_MAX &&
		    (rec = malloc(bytes)) != NULL) {
			for (size_t i = 0; i < n && off + chunks->kvs[i].value_len <= bytes; i++) {
				memcpy(rec + off, chunks->kvs[i].value, chunks->kvs[i].value_len);
				off += chunks->kvs[i].value_len;
			}
			if (off == bytes && hm_crc32c(0, rec, bytes) == crc)
				e = batch_of(rec, bytes, &b);
		}
		free(rec);
	}
	if (e == 0 && b->seq != seq)
		e = HM_ECORRUPT;
	if (e != 0) {
		hm_log(HM_LOG_ERR, "origin", "etcd: log entry %" PRIu64 ": %s", seq,
		       hm_strerror(e));
		hm__batch_unref(b);
		return e;
	}
	if (startup) {
		e = hm__recover_apply(&s->rc, b);
	} else {
		hm__journal_append(s->cache, b, &pos);
		e = s->base.ev->foreign(s->base.ctx, b, &pos);
		s->foreign++;
	}
	if (e == 0) {
		s->head = seq;
		s->head_rev = kv->mod_revision;
	}
	hm__batch_unref(b);
	return e;
}

/* Fatal: the origin cannot follow etcd's history (a gap: the log was trimmed past it while it
 * was cut off; or a batch it cannot apply). Nothing more is delivered. */
static void lost(struct estore *s, int e)
{
	char why[sizeof(s->why)];

	set_stale(s, true, "cannot follow etcd's log after seq %" PRIu64 ": %s", s->head,
		  hm_strerror(e));
	snprintf(why, sizeof(why), "%s", s->why);
	s->closing = true;
	s->base.ev->fatal(s->base.ctx, e, why);
}

static void chunks_cb(void *arg, int err, const struct hm__etcd_result *er);

struct fetch {
	struct estore *s;
	struct res log; /* the page being applied */
	size_t next;	/* its next entry */
};

/* Applies the page from f->next on; a staged entry fetches its chunks and comes back here. */
static void apply_page(struct fetch *f)
{
	struct estore *s = f->s;
	char key[KEY_MAX], end[KEY_MAX];
	int e;

	for (; f->next < f->log.n; f->next++) {
		const struct kvc *kv = &f->log.kvs[f->next];
		uint64_t seq = strtoull(kv->key + strlen(s->prefix) + 4, NULL, 10);

		if (seq <= s->head)
			continue; /* ours, or already learned */
		if (s->state != A_IDLE) {
			/* A batch of ours is in flight: it resolves first (its compare fails if
			 * this entry took its seq), then catch-up starts again. */
			s->refetch = true;
			break;
		}
		if (kv->value_len >= STAGED_LEN && get_u32(kv->value + 8) == LOG_STAGED) {
			struct hm__etcd_range_opts o = {.range_end = end};
			size_t n =
			    chunks_range(s, kv->value + LOG_FIXED, key, end, &o.range_end_len);

			if (hm__etcd_range(s->etcd, key, n, &o, chunks_cb, f) == 0)
				return;
			s->refetch = true;
			break;
		}
		if ((e = deliver(s, kv, NULL, false)) != 0) {
			lost(s, e);
			break;
		}
	}
	if (f->next == f->log.n && f->log.more)
		s->refetch = true;
	res_fini(&f->log);
	free(f);
	s->fetching = false;
	if (s->closing || s->state != A_IDLE)
		return; /* settle() catches up again when the batch in flight resolves */
	if (s->refetch) {
		catch_up(s);
	} else if (s->want_ready) {
		s->want_ready = false;
		s->base.ev->ready(s->base.ctx);
	}
}

static void chunks_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct fetch *f = arg;
	struct estore *s = f->s;
	struct res r = {0};
	int e;

	res_take(&r, err, er);
	if (err == -ECANCELED || s->closing) {
		res_fini(&r);
		res_fini(&f->log);
		free(f);
		s->fetching = false;
		return;
	}
	if (err != 0) {
		not_heard(s, err, r.msg);
		s->refetch = true;
	} else if (s->state != A_IDLE) {
		/* A batch of ours went in flight while the chunks were read: as in apply_page(),
		 * it resolves first, then catch-up reads this entry again. */
		s->refetch = true;
	} else if ((e = deliver(s, &f->log.kvs[f->next], &r, false)) != 0) {
		lost(s, e);
	} else {
		f->next++;
		res_fini(&r);
		apply_page(f);
		return;
	}
	res_fini(&r);
	f->next = f->log.n;
	f->log.more = false;
	apply_page(f);
}

static void page_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct fetch *f = arg;
	struct estore *s = f->s;

	res_take(&f->log, err, er);
	if (err == -ECANCELED || s->closing) {
		res_fini(&f->log);
		free(f);
		s->fetching = false;
		return;
	}
	if (err != 0) {
		not_heard(s, err, f->log.msg);
		res_fini(&f->log);
		s->refetch = true; /* the poll tries again */
		free(f);
		s->fetching = false;
		return;
	}
	heard(s);
	apply_page(f);
}

/* Reads P/log/<head + 1> .. in pages and delivers what it finds, unless a read is in flight. */
static void catch_up(struct estore *s)
{
	struct hm__etcd_range_opts o = {.limit = PAGE};
	char key[KEY_MAX], end[KEY_MAX];
	struct fetch *f;
	size_t n, en;

	if (s->fetching || s->closing || s->cache == NULL) {
		s->refetch = true;
		return;
	}
	s->refetch = false;
	n = log_key(s, key, s->head + 1);
	en = key_of(s, end, "log0"); /* '0' follows '/': every key under P/log/ */
	o.range_end = end;
	o.range_end_len = en;
	f = calloc(1, sizeof(*f));
	hm_require(f != NULL);
	f->s = s;
	if (hm__etcd_range(s->etcd, key, n, &o, page_cb, f) != 0) {
		free(f);
		s->refetch = true;
		return;
	}
	s->fetching = true;
}

static void watch_cb(void *arg, int err, const struct hm__etcd_header *h,
		     const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev);

static void start_watch(struct estore *s, int64_t from_rev)
{
	char key[KEY_MAX], end[KEY_MAX];
	size_t n = key_of(s, key, "log/"), en = key_of(s, end, "log0");

	if (hm__etcd_watch_start(&s->watch, s->etcd, key, n, end, en, from_rev, watch_cb, s) != 0)
		s->watch = NULL; /* the poll keeps the origin following; it tries again */
}

static void watch_cb(void *arg, int err, const struct hm__etcd_header *h,
		     const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev)
{
	struct estore *s = arg;

	(void)h;
	(void)ev;
	if (err != 0) {
		/* Compacted or refused: what matters is in the keys; read them and watch again. */
		hm_log(HM_LOG_WARNING, "origin", "etcd: the watch ended (%s); watching again",
		       hm_strerror(err));
		hm__etcd_watch_stop(s->watch);
		s->watch = NULL;
		if (!s->closing)
			start_watch(s, compact_rev > 0 ? compact_rev : 0);
		catch_up(s);
		return;
	}
	s->watch_events += nev;
	catch_up(s);
}

/* Every POLL_MS: can etcd still commit for us (a linearizable read), and is its head ahead? */
static void poll_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;
	struct res r = {0};
	char key[KEY_MAX];
	size_t n = key_of(s, key, "head");
	uint64_t seq;

	s->polling = false;
	res_take(&r, err, er);
	if (err == -ECANCELED || s->closing) {
		res_fini(&r);
		return;
	}
	if (err != 0) {
		not_heard(s, err, r.msg);
	} else {
		if (r.h.cluster_id != s->cluster_id && s->cluster_id != 0)
			set_stale(s, true,
				  "etcd's cluster id is %016" PRIx64 ", not %016" PRIx64
				  " as when this state was created: refusing to serve it",
				  r.h.cluster_id, s->cluster_id);
		else if (s->state == A_IDLE || s->state == A_GROUP || s->state == A_STAGING)
			heard(s); /* a commit in flight says for itself whether etcd commits */
		s->seen_rev = r.h.revision;
		if ((parse_head(find_kv(&r, key, n), &seq) == 0 && seq > s->head) || s->refetch ||
		    s->want_ready)
			catch_up(s);
		if (s->watch == NULL)
			start_watch(s, 0);
	}
	res_fini(&r);
}

/* The upkeep says NOSPACE was raised or cleared: no commit can succeed meanwhile. */
static void on_alarm(void *arg, bool nospace, const char *why)
{
	struct estore *s = arg;

	s->nospace = nospace;
	if (nospace)
		set_stale(s, true, "%s", why);
	else
		heard(s);
}

static void on_poll(uv_timer_t *t)
{
	struct estore *s = t->data;
	char key[KEY_MAX];
	size_t n = key_of(s, key, "head");

	if (s->closing)
		return;
	hm__etcd_maint_tick(s->maint, s->seen_rev);
	if (s->polling)
		return;
	if (hm__etcd_range(s->etcd, key, n, NULL, poll_cb, s) == 0)
		s->polling = true;
	if (s->state == A_COMMITTING && hm_mono_ms() - s->last_ok_ms >= STALE_MS)
		not_heard(s, -ETIMEDOUT, "the commit in flight has no answer");
}

/* ---- Committing: one txn per group ----------------------------------------------------------- */

static void finish_group(struct estore *s)
{
	for (uint32_t i = 0; i < s->gn; i++) {
		hm__batch_unref(s->g[i].b);
		free(s->g[i].rec);
		s->g[i] = (struct member){0};
	}
	s->gn = 0;
	s->g_bytes = 0;
	s->g_staged = 0;
	s->state = A_IDLE;
}

/* The group was not committed: its stages are garbage (best effort: what a failed delete leaves
 * is garbage nothing refers to). */
static void drop_stages(struct estore *s)
{
	char key[KEY_MAX], end[KEY_MAX];
	size_t n;

	for (uint32_t i = 0; i < s->gn; i++) {
		if (s->g[i].rec == NULL)
			continue;
		n = stage_key(s, key, s->g[i].stage_id, -1);
		hm__etcd_delete(s->etcd, key, n, end, hm__etcd_prefix_end(key, n, end),
				best_effort_cb, s);
	}
}

/* The group in flight resolved: learn what others committed meanwhile, then take the next. */
static void settle(struct estore *s)
{
	s->want_ready = true;
	if (s->refetch)
		catch_up(s);
	else if (!s->fetching) {
		s->want_ready = false;
		s->base.ev->ready(s->base.ctx);
	}
}

/* The group is in etcd at rev: cached, counted, reported durable. */
static void committed(struct estore *s, int64_t rev)
{
	uint64_t last = s->g[s->gn - 1].b->seq;
	unsigned bucket = 0;

	for (uint32_t i = 0; i < s->gn; i++)
		hm__journal_append(s->cache, s->g[i].b, s->g[i].pos);
	s->head = last;
	s->head_rev = rev;
	s->commits++;
	s->batches += s->gn;
	while (bucket + 1 < GROUP_HIST && (2u << bucket) <= s->gn)
		bucket++;
	s->group_hist[bucket]++;
	s->group_max = HM_MAX(s->group_max, s->gn);
	finish_group(s);
	s->base.ev->durable(s->base.ctx, last);
}

static bool test_file(const char *env);

static void txn_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;
	struct res r = {0};
	char key[KEY_MAX];
	size_t n;
	const struct kvc *mine;
	uint64_t first;

	res_take(&r, err, er);
	if (err == -ECANCELED || s->closing) {
		res_fini(&r);
		return;
	}
	first = s->g[0].b->seq;
	if (err == 0 && r.succeeded && test_file("HM_TEST_ETCD_LOSE_ANSWER")) {
		/* Test builds: an answer lost after etcd applied the txn. */
		err = -ETIMEDOUT;
		snprintf(r.msg, sizeof(r.msg), "answer dropped (HM_TEST_ETCD_LOSE_ANSWER)");
	}
	if (err == -ENOSPC || err == HM_ETOOBIG || err == -EACCES || err == -EPERM ||
	    err == -EINVAL) {
		char why[400];

		/* Refused for good, never applied. */
		heard(s);
		snprintf(why, sizeof(why), "etcd refused the commit: %s%s%s", hm_strerror(err),
			 r.msg[0] ? ": " : "", r.msg);
		drop_stages(s);
		finish_group(s);
		res_fini(&r);
		s->base.ev->refused(s->base.ctx, err, why);
		settle(s);
		return;
	}
	if (err != 0) {
		/* Unknown outcome: the same txn again; its compare tells. */
		hm_log(HM_LOG_WARNING, "origin",
		       "etcd: the commit of seqs %" PRIu64 "..%" PRIu64
		       " has no answer (%s%s%s): sending it again",
		       first, s->g[s->gn - 1].b->seq, hm_strerror(err), r.msg[0] ? ": " : "",
		       r.msg);
		not_heard(s, err, r.msg);
		res_fini(&r);
		s->state = A_WAITING;
		s->retries++;
		uv_timer_start(&s->retry_timer, on_retry, RETRY_MS, 0);
		return;
	}
	heard(s);
	n = log_key(s, key, first);
	mine = r.succeeded ? NULL : find_kv(&r, key, n);
	if (r.succeeded || (mine != NULL && mine->value_len >= LOG_FIXED &&
			    memcmp(mine->value + 12, s->commit_id, 16) == 0)) {
		/* Committed, the whole group (now, or by an attempt whose answer was lost). */
		if (!r.succeeded)
			s->refetch = true; /* others may have committed after it */
		committed(s, r.succeeded ? r.h.revision : mine->mod_revision);
		res_fini(&r);
		settle(s);
		return;
	}
	/* Another origin was first: nothing of this group is in etcd. */
	s->conflicts++;
	drop_stages(s);
	finish_group(s);
	res_fini(&r);
	s->refetch = true;
	s->base.ev->refused(s->base.ctx, HM_ECONFLICT, "another origin committed that seq first");
	settle(s);
}

/* The staged members' part of the commit txn: each compares that its chunk 0 exists (the
 * compactor deletes a stage whole, so a stage it collected is never committed after) and puts
 * its meta (HMSTAGE1, seq; no lease), which tells the compactor the stage is committed. keys
 * holds 2 * KEY_MAX bytes and vals 16 bytes per staged member. */
static void stage_ops(struct estore *s, struct hm__etcd_cmp *cmp, struct hm__etcd_op *ops,
		      char (*keys)[KEY_MAX], uint8_t *vals)
{
	uint32_t k = 0;

	for (uint32_t i = 0; i < s->gn; i++) {
		const struct member *m = &s->g[i];
		size_t cn, mn;

		if (m->rec == NULL)
			continue;
		cn = stage_key(s, keys[2 * k], m->stage_id, 0);
		mn = stage_key(s, keys[2 * k + 1], m->stage_id, -1);
		mn += (size_t)snprintf(keys[2 * k + 1] + mn, KEY_MAX - mn, "meta");
		memcpy(vals + 16 * k, HM__ETCD_STAGE_MAGIC, 8);
		put_u64(vals + 16 * k + 8, m->b->seq);
		cmp[k] = (struct hm__etcd_cmp){.key = keys[2 * k],
					       .key_len = cn,
					       .target = HM__ETCD_VERSION,
					       .result = HM__ETCD_GREATER,
					       .number = 0};
		ops[k] = (struct hm__etcd_op){.kind = HM__ETCD_PUT,
					      .key = keys[2 * k + 1],
					      .key_len = mn,
					      .value = vals + 16 * k,
					      .value_len = 16};
		k++;
	}
}

/*
 * Sends the commit txn of the group (again, after an unknown outcome): compare P/head's
 * mod_revision (and that each stage's chunk 0 exists); put P/log/<seq> of every batch, each
 * stage's meta and P/head at the last; on failure read P/head and P/log/<first>, whose commit
 * id says whose commit took that seq.
 */
static void try_commit(struct estore *s)
{
	char hkey[KEY_MAX], lkeys[GROUP_MAX][KEY_MAX];
	uint64_t last = s->g[s->gn - 1].b->seq;
	size_t hn = key_of(s, hkey, "head"), off = 0;
	uint8_t *hv = head_value(last, s->commit_id), *lv = malloc(s->g_bytes);
	char(*skeys)[KEY_MAX] = calloc(2 * s->g_staged + 1, KEY_MAX);
	uint8_t *svals = malloc(16 * s->g_staged + 1);
	struct hm__etcd_cmp cmp[1 + GROUP_MAX] = {{.key = hkey,
						   .key_len = hn,
						   .target = HM__ETCD_MOD,
						   .result = HM__ETCD_EQUAL,
						   .number = s->head_rev}};
	struct hm__etcd_op ok[GROUP_OPS];
	struct hm__etcd_op bad[2] = {{.kind = HM__ETCD_RANGE, .key = hkey, .key_len = hn},
				     {.kind = HM__ETCD_RANGE, .key = lkeys[0]}};
	struct hm__etcd_txn t = {.cmp = cmp,
				 .ncmp = 1 + s->g_staged,
				 .success = ok,
				 .nsuccess = s->gn + 1 + s->g_staged,
				 .failure = bad,
				 .nfailure = 2};
	int e;

	hm_require(lv != NULL && skeys != NULL && svals != NULL &&
		   s->gn + 1 + s->g_staged <= GROUP_OPS);
	for (uint32_t i = 0; i < s->gn; i++) {
		size_t ln = log_key(s, lkeys[i], s->g[i].b->seq), vn = log_len(&s->g[i]);

		log_value(s, &s->g[i], lv + off);
		ok[i] = (struct hm__etcd_op){.kind = HM__ETCD_PUT,
					     .key = lkeys[i],
					     .key_len = ln,
					     .value = lv + off,
					     .value_len = vn};
		off += vn;
	}
	bad[1].key_len = ok[0].key_len;
	stage_ops(s, cmp + 1, ok + s->gn, skeys, svals);
	ok[s->gn + s->g_staged] = (struct hm__etcd_op){
	    .kind = HM__ETCD_PUT, .key = hkey, .key_len = hn, .value = hv, .value_len = HEAD_LEN};
	s->state = A_COMMITTING;
	e = hm__etcd_txn(s->etcd, &t, txn_cb, s);
	free(hv);
	free(lv);
	free(skeys);
	free(svals);
	if (e != 0) {
		s->state = A_WAITING;
		uv_timer_start(&s->retry_timer, on_retry, RETRY_MS, 0);
	}
}

static void stage_next(struct estore *s);
static void on_retry(uv_timer_t *t);

static void chunk_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;

	if (err == -ECANCELED || s->closing)
		return;
	if (err != 0) {
		/* A put of an immutable chunk: sending it again is harmless. */
		not_heard(s, err, er->message != NULL ? er->message : "");
		s->state = A_WAITING;
		uv_timer_start(&s->retry_timer, on_retry, RETRY_MS, 0);
		return;
	}
	heard(s);
	s->chunk++;
	stage_next(s);
}

/* Stages the next chunk of the group's large records, member by member; then the commit. */
static void stage_next(struct estore *s)
{
	char key[KEY_MAX];
	struct member *m;
	size_t n, off, len;
	long limit;

	while (s->stage_i < s->gn && s->chunk == s->g[s->stage_i].nchunks) {
		s->stage_i++;
		s->chunk = 0;
	}
	if (s->stage_i == s->gn) {
		try_commit(s);
		return;
	}
	m = &s->g[s->stage_i];
	s->state = A_STAGING;
	/* Test builds: HM_TEST_ETCD_STAGE_LIMIT stops a member's staging before that chunk. */
	limit = hm__etcd_test_limit("HM_TEST_ETCD_STAGE_LIMIT");
	if (limit >= 0 && s->chunk >= (uint32_t)limit) {
		uv_timer_start(&s->retry_timer, on_retry, 10, 0);
		return;
	}
	n = stage_key(s, key, m->stage_id, s->chunk);
	off = (size_t)s->chunk * CHUNK_BYTES;
	len = HM_MIN((size_t)CHUNK_BYTES, m->b->rec_len - off);
	if (hm__etcd_put(s->etcd, key, n, m->rec + off, len, 0, chunk_cb, s) != 0) {
		s->state = A_WAITING;
		uv_timer_start(&s->retry_timer, on_retry, RETRY_MS, 0);
	}
}

static void on_retry(uv_timer_t *t)
{
	struct estore *s = t->data;

	if (s->closing || s->gn == 0)
		return;
	stage_next(s); /* the commit, once every stage is in */
}

static void e_append(struct hm__store *base, struct hm__batch *b, struct hm__jpos *pos)
{
	struct estore *s = (struct estore *)base;
	struct member *m;

	hm_require((s->state == A_IDLE || s->state == A_GROUP) && s->gn < GROUP_MAX &&
		   b->seq == s->head + s->gn + 1);
	m = &s->g[s->gn++];
	hm__batch_ref(b);
	m->b = b;
	m->pos = pos;
	if (b->rec_len > HM__INLINE_MAX) {
		hm_random_bytes(m->stage_id, sizeof(m->stage_id));
		m->rec = hm__batch_flatten(b);
		hm_require(m->rec != NULL);
		m->nchunks = (uint32_t)((b->rec_len + CHUNK_BYTES - 1) / CHUNK_BYTES);
		s->staged++;
		s->g_staged++;
	}
	s->g_bytes += log_len(m);
	s->state = A_GROUP;
}

static bool e_room(const struct hm__store *base)
{
	const struct estore *s = (const struct estore *)base;

	/* One more batch takes at most two ops: its log key and, if staged, its meta. A staged
	 * batch ends its group: a bad request after it would make hm_state_extend() feed the
	 * whole large record again (the rebuild re-feeds the group so far). */
	return s->gn == 0 || (s->g_staged == 0 && s->gn < GROUP_MAX && s->gn + 3 <= GROUP_OPS &&
			      s->g_bytes < GROUP_BYTES);
}

/*
 * Test builds: whether the file the environment variable env names exists. While the file
 * HM_TEST_ETCD_HOLD names exists, a group waits before it is sent, so that tests can make the
 * next requests queue behind it (and another origin commit first) without depending on timing;
 * while HM_TEST_ETCD_LOSE_ANSWER's exists, a successful commit's answer is taken as lost (the
 * unknown outcome that the commit id resolves).
 */
static bool test_file(const char *env)
{
#ifdef HM_TEST_HOOKS
	const char *v = getenv(env);

	return v != NULL && access(v, F_OK) == 0;
#else
	(void)env;
	return false;
#endif
}

static bool held(void)
{
	return test_file("HM_TEST_ETCD_HOLD");
}

static void on_hold(uv_timer_t *t)
{
	struct estore *s = t->data;

	if (s->closing || s->gn == 0)
		return;
	if (held())
		uv_timer_start(&s->retry_timer, on_hold, 10, 0);
	else
		stage_next(s);
}

static void e_flush(struct hm__store *base)
{
	struct estore *s = (struct estore *)base;

	if (s->state != A_GROUP)
		return;
	hm_random_bytes(s->commit_id, sizeof(s->commit_id));
	s->stage_i = s->chunk = 0;
	if (held()) {
		s->state = A_WAITING;
		uv_timer_start(&s->retry_timer, on_hold, 10, 0);
		return;
	}
	stage_next(s);
}

/* ---- Snapshots in etcd ----------------------------------------------------------------------- */

static void upload_end(struct estore *s)
{
	free(s->up);
	s->up = NULL;
	s->uploading = false;
}

static size_t snapfile_key(const struct estore *s, char *buf, uint64_t id, int64_t piece)
{
	if (piece < 0)
		return (size_t)snprintf(buf, KEY_MAX, "%ssnapfile/%016" PRIx64 "/", s->prefix, id);
	return (size_t)snprintf(buf, KEY_MAX, "%ssnapfile/%016" PRIx64 "/%08" PRId64, s->prefix, id,
				piece);
}

static void drop_pieces(struct estore *s, uint64_t id)
{
	char key[KEY_MAX], end[KEY_MAX];
	size_t n = snapfile_key(s, key, id, -1);

	/* Best effort: pieces nothing refers to are garbage, and the next snapshot's txn deletes
	 * the previous one's. */
	hm__etcd_delete(s->etcd, key, n, end, hm__etcd_prefix_end(key, n, end), best_effort_cb, s);
}

static void snap_txn_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;

	(void)er;
	if (err == -ECANCELED || s->closing)
		return;
	if (err != 0) {
		hm_log(HM_LOG_WARNING, "origin",
		       "etcd: the snapshot at seq %" PRIu64 " may not be installed: %s", s->up_seq,
		       hm_strerror(err));
	} else if (!er->succeeded) {
		/* Another snapshot went first, or this origin's compactor lease is gone. */
		drop_pieces(s, s->up_id);
	} else {
		s->snapshots++;
		hm_log(HM_LOG_INFO, "origin",
		       "etcd: snapshot at seq %" PRIu64 " installed (%u pieces); the log keys "
		       "the previous one covered deleted",
		       s->up_seq, s->up_pieces);
	}
	upload_end(s);
}

/*
 * The pieces are in: one txn installs P/snap if it is still what was read (old) and this origin
 * still holds P/compactor by its lease (a holder whose lease expired while uploading installs
 * nothing: another origin may be the compactor by now), deletes the log keys the previous
 * snapshot covered (those after it stay, so an origin retrying a commit of a recent seq still
 * finds its envelope) and the previous snapshot's pieces.
 */
static void snap_install(struct estore *s, const struct res *old)
{
	char skey[KEY_MAX], lo[KEY_MAX], hi[KEY_MAX], okey[KEY_MAX], oend[KEY_MAX];
	size_t sn = key_of(s, skey, "snap");
	const struct kvc *k = find_kv(old, skey, sn);
	uint64_t old_seq = 0, old_id = 0;
	uint8_t v[SNAP_LEN];
	char ckey[KEY_MAX];
	size_t cn = hm__etcd_maint_key(s->maint, ckey, sizeof(ckey));
	struct hm__etcd_cmp cmp[2] = {{.key = skey,
				       .key_len = sn,
				       .target = HM__ETCD_MOD,
				       .result = HM__ETCD_EQUAL,
				       .number = k != NULL ? k->mod_revision : 0},
				      {.key = ckey,
				       .key_len = cn,
				       .target = HM__ETCD_LEASE,
				       .result = HM__ETCD_EQUAL,
				       .number = hm__etcd_maint_lease(s->maint)}};
	struct hm__etcd_op ops[3];
	struct hm__etcd_txn t = {.cmp = cmp, .ncmp = 2, .success = ops, .nsuccess = 1};

	if (k != NULL && k->value_len == SNAP_LEN && memcmp(k->value, SNAP_MAGIC, 8) == 0) {
		old_seq = get_u64(k->value + 8);
		old_id = get_u64(k->value + 16);
	}
	if (old_seq >= s->up_seq) {
		drop_pieces(s, s->up_id); /* a newer one is there already */
		upload_end(s);
		return;
	}
	memcpy(v, SNAP_MAGIC, 8);
	put_u64(v + 8, s->up_seq);
	put_u64(v + 16, s->up_id);
	put_u64(v + 24, s->up_len);
	put_u32(v + 32, s->up_pieces);
	put_u32(v + 36, hm_crc32c(0, s->up, s->up_len));
	ops[0] = (struct hm__etcd_op){
	    .kind = HM__ETCD_PUT, .key = skey, .key_len = sn, .value = v, .value_len = SNAP_LEN};
	if (old_seq > 0) {
		size_t ln = log_key(s, lo, 0), hn = log_key(s, hi, old_seq + 1);

		ops[t.nsuccess++] = (struct hm__etcd_op){.kind = HM__ETCD_DELETE,
							 .key = lo,
							 .key_len = ln,
							 .range_end = hi,
							 .range_end_len = hn};
	}
	if (old_id != 0) {
		size_t on = snapfile_key(s, okey, old_id, -1);

		ops[t.nsuccess++] =
		    (struct hm__etcd_op){.kind = HM__ETCD_DELETE,
					 .key = okey,
					 .key_len = on,
					 .range_end = oend,
					 .range_end_len = hm__etcd_prefix_end(okey, on, oend)};
	}
	if (hm__etcd_txn(s->etcd, &t, snap_txn_cb, s) != 0)
		upload_end(s);
}

static void snap_read_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;
	struct res r = {0};

	if (err == -ECANCELED || s->closing)
		return;
	res_take(&r, err, er);
	if (err != 0) {
		drop_pieces(s, s->up_id);
		upload_end(s);
	} else {
		snap_install(s, &r);
	}
	res_fini(&r);
}

static void put_piece(struct estore *s);

static void piece_cb(void *arg, int err, const struct hm__etcd_result *er)
{
	struct estore *s = arg;
	char key[KEY_MAX];
	size_t n;

	if (err == -ECANCELED || s->closing)
		return;
	if (err != 0) {
		hm_log(HM_LOG_WARNING, "origin",
		       "etcd: cannot upload the snapshot at seq %" PRIu64 ": %s%s%s", s->up_seq,
		       hm_strerror(err), er->message[0] ? ": " : "", er->message);
		drop_pieces(s, s->up_id);
		upload_end(s);
		return;
	}
	if (++s->up_piece < s->up_pieces) {
		put_piece(s);
		return;
	}
	n = key_of(s, key, "snap");
	if (hm__etcd_range(s->etcd, key, n, NULL, snap_read_cb, s) != 0)
		upload_end(s);
}

static void put_piece(struct estore *s)
{
	char key[KEY_MAX];
	size_t n = snapfile_key(s, key, s->up_id, s->up_piece);
	size_t off = (size_t)s->up_piece * CHUNK_BYTES;

	if (hm__etcd_put(s->etcd, key, n, s->up + off, HM_MIN((size_t)CHUNK_BYTES, s->up_len - off),
			 0, piece_cb, s) != 0)
		upload_end(s);
}

/*
 * A compaction's snapshot file: uploaded in CHUNK_BYTES pieces, then installed as P/snap by
 * snap_install(). Only the compactor uploads (the others' compactions stay local), one upload
 * at a time (a compaction finishing meanwhile is skipped: the next one uploads).
 */
static void e_snapshot(struct hm__store *base, const char *path, uint64_t seq, uint64_t snap_id)
{
	struct estore *s = (struct estore *)base;
	FILE *f;
	long len;

	if (s->uploading || s->closing || !hm__etcd_maint_holder(s->maint))
		return;
	if ((f = fopen(path, "rb")) == NULL)
		return;
	if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (s->up = malloc((size_t)len)) != NULL &&
	    fread(s->up, 1, (size_t)len, f) == (size_t)len) {
		s->up_len = (size_t)len;
		s->up_seq = seq;
		s->up_id = snap_id;
		s->up_piece = 0;
		s->up_pieces = (uint32_t)((s->up_len + CHUNK_BYTES - 1) / CHUNK_BYTES);
		s->uploading = true;
		put_piece(s);
	} else {
		free(s->up);
		s->up = NULL;
	}
	fclose(f);
}

/* ---- Start-up -------------------------------------------------------------------------------- */

/* Deletes the local cache (journal segments and snapshots): it is rebuilt from etcd. */
static void clear_cache(const char *dir)
{
	uint64_t *firsts = NULL, *seqs = NULL, *ids = NULL;
	char path[PATH_MAX];
	int n;

	if ((n = hm__journal_list(dir, &firsts)) > 0)
		for (int i = 0; i < n; i++) {
			hm__journal_path(dir, firsts[i], path, sizeof(path));
			unlink(path);
		}
	free(firsts);
	if ((n = hm__snap_list(dir, &seqs, &ids)) > 0)
		for (int i = 0; i < n; i++) {
			hm__snap_path(dir, seqs[i], ids[i], path, sizeof(path));
			unlink(path);
		}
	free(seqs);
	free(ids);
}

static int e_open(struct hm__store *base, char *err, size_t errlen)
{
	struct estore *s = (struct estore *)base;
	struct hm__etcd_cfg ec = {.endpoints = base->cfg.spec + 5,
				  .ca = base->cfg.etcd_ca,
				  .cert = base->cfg.etcd_cert,
				  .timeout_ms = base->cfg.etcd_timeout_ms};
	char ekey[KEY_MAX], hkey[KEY_MAX];
	size_t en, hn;
	struct res r = {0};
	uint8_t ev[EPOCH_LEN], hv[HEAD_LEN], zero[16] = {0};
	const struct kvc *k;
	uint64_t epoch = 0;
	int e;

	s->lock_fd = -1;
	snprintf(s->prefix, sizeof(s->prefix), "%s",
		 base->cfg.etcd_prefix != NULL ? base->cfg.etcd_prefix : "/hermod/");
	if ((e = hm__store_lock_dir(base->cfg.dir, &s->lock_fd, err, errlen)) != 0)
		return e;
	uv_timer_init(base->loop, &s->retry_timer);
	uv_timer_init(base->loop, &s->poll_timer);
	s->retry_timer.data = s->poll_timer.data = s;
	s->handles = 2;
	if ((e = hm__etcd_new(&s->etcd, base->loop, &ec, err, errlen)) != 0)
		return e;
	en = key_of(s, ekey, "epoch");
	hn = key_of(s, hkey, "head");
	/* The cluster id comes with any answer: read the epoch first. */
	if ((e = wait_res(s, hm__etcd_range(s->etcd, ekey, en, NULL, sync_cb, &r), &r)) != 0) {
		/* A member that requires a client certificate may only reset the connection after
		 * the handshake (TLS 1.3): say what is likely missing. */
		bool no_cert = strstr(ec.endpoints, "https://") != NULL && ec.cert == NULL &&
			       (e == -ECONNRESET || e == HM_EETCDTLS);

		snprintf(err, errlen, "etcd (%s): cannot read %s: %s%s%s%s", ec.endpoints, ekey,
			 hm_strerror(e), r.msg[0] ? ": " : "", r.msg,
			 no_cert ? " (no client certificate was given: --etcd-cert, if etcd "
				   "requires one)"
				 : "");
		res_fini(&r);
		return e;
	}
	s->cluster_id = r.h.cluster_id;
	if (r.n == 0) {
		/* The first origin ever: create the epoch and the head at seq 0, unless another
		 * origin does it first. */
		struct hm__etcd_cmp cmp = {.key = ekey,
					   .key_len = en,
					   .target = HM__ETCD_CREATE,
					   .result = HM__ETCD_EQUAL,
					   .number = 0};
		struct hm__etcd_op ok[2] = {{.kind = HM__ETCD_PUT,
					     .key = ekey,
					     .key_len = en,
					     .value = ev,
					     .value_len = EPOCH_LEN},
					    {.kind = HM__ETCD_PUT,
					     .key = hkey,
					     .key_len = hn,
					     .value = hv,
					     .value_len = HEAD_LEN}};
		struct hm__etcd_op bad = {.kind = HM__ETCD_RANGE, .key = ekey, .key_len = en};
		struct hm__etcd_txn t = {.cmp = &cmp,
					 .ncmp = 1,
					 .success = ok,
					 .nsuccess = 2,
					 .failure = &bad,
					 .nfailure = 1};
		uint8_t *h = head_value(0, zero);

		memcpy(hv, h, HEAD_LEN);
		free(h);
		while (epoch == 0)
			hm_random_bytes(&epoch, sizeof(epoch));
		memcpy(ev, EPOCH_MAGIC, 8);
		put_u64(ev + 8, epoch);
		put_u64(ev + 16, s->cluster_id);
		res_fini(&r);
		if ((e = wait_res(s, hm__etcd_txn(s->etcd, &t, sync_cb, &r), &r)) != 0) {
			snprintf(err, errlen, "etcd: cannot create %s: %s%s%s", ekey,
				 hm_strerror(e), r.msg[0] ? ": " : "", r.msg);
			res_fini(&r);
			return e;
		}
		if (r.succeeded) {
			res_fini(&r);
			hm_log(HM_LOG_NOTICE, "origin",
			       "etcd: new routing state under %s: epoch %016" PRIx64, s->prefix,
			       epoch);
			base->epoch = epoch;
			goto local;
		}
	}
	k = find_kv(&r, ekey, en);
	if (k == NULL || k->value_len != EPOCH_LEN || memcmp(k->value, EPOCH_MAGIC, 8) != 0 ||
	    get_u64(k->value + 8) == 0) {
		snprintf(err, errlen, "etcd: %s is not an epoch record", ekey);
		res_fini(&r);
		return HM_ECORRUPT;
	}
	base->epoch = get_u64(k->value + 8);
	if (get_u64(k->value + 16) != s->cluster_id) {
		snprintf(err, errlen,
			 "etcd: %s was created in etcd cluster %016" PRIx64 ", this is %016" PRIx64
			 ": a restored or different etcd may hold a shorter history; refusing it",
			 ekey, get_u64(k->value + 16), s->cluster_id);
		res_fini(&r);
		return HM_EEPOCH;
	}
	res_fini(&r);
local:
	/* The local files are a cache of etcd's state: rebuilt from it at every start. */
	clear_cache(base->cfg.dir);
	return hm__write_epoch(base->cfg.dir, base->epoch);
}

/* Start-up: the staged record of kv, read (blocking) into *chunks. */
static int read_chunks(struct estore *s, const struct kvc *kv, int64_t rev, struct res *chunks)
{
	char key[KEY_MAX], end[KEY_MAX];
	struct hm__etcd_range_opts o = {.revision = rev, .range_end = end};
	size_t n = chunks_range(s, kv->value + LOG_FIXED, key, end, &o.range_end_len);

	return wait_res(s, hm__etcd_range(s->etcd, key, n, &o, sync_cb, chunks), chunks);
}

/*
 * Start-up: the snapshot in etcd at rev, if any, downloaded into DIR (checked by its CRC, then
 * as any snapshot file) and loaded; the log is then read from its seq + 1. Without one, the
 * state starts empty at (epoch, 0).
 */
static int load_snap(struct estore *s, int64_t rev, struct hm__store_recovery *rec)
{
	struct hm__etcd_range_opts o = {.revision = rev};
	char key[KEY_MAX], end[KEY_MAX], path[PATH_MAX];
	size_t n = key_of(s, key, "snap"), off = 0;
	struct res r = {0}, p = {0};
	const struct kvc *k;
	uint64_t seq, id, bytes;
	uint32_t crc;
	char *buf = NULL;
	FILE *f;
	int e;

	if ((e = wait_res(s, hm__etcd_range(s->etcd, key, n, &o, sync_cb, &r), &r)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "etcd: cannot read %s: %s", key, hm_strerror(e));
		res_fini(&r);
		return e;
	}
	if ((k = find_kv(&r, key, n)) == NULL) {
		res_fini(&r);
		hm_require(hm_state_begin(rec->rc.st, s->base.epoch, 0) == 0);
		return hm_state_commit(rec->rc.st, s->base.epoch, 0);
	}
	if (k->value_len != SNAP_LEN || memcmp(k->value, SNAP_MAGIC, 8) != 0) {
		hm_log(HM_LOG_ERR, "origin", "etcd: %s is not a snapshot record", key);
		res_fini(&r);
		return HM_ECORRUPT;
	}
	seq = get_u64(k->value + 8);
	id = get_u64(k->value + 16);
	bytes = get_u64(k->value + 24);
	crc = get_u32(k->value + 36);
	res_fini(&r);
	n = snapfile_key(s, key, id, -1);
	o.range_end = end;
	o.range_end_len = hm__etcd_prefix_end(key, n, end);
	e = wait_res(s, hm__etcd_range(s->etcd, key, n, &o, sync_cb, &p), &p);
	if (e == 0 && (bytes > SIZE_MAX / 2 || (buf = malloc(bytes > 0 ? bytes : 1)) == NULL))
		e = -ENOMEM;
	for (size_t i = 0; e == 0 && i < p.n; i++) {
		if (off + p.kvs[i].value_len > bytes)
			break;
		memcpy(buf + off, p.kvs[i].value, p.kvs[i].value_len);
		off += p.kvs[i].value_len;
	}
	if (e == 0 && (off != bytes || hm_crc32c(0, buf, bytes) != crc))
		e = HM_ECORRUPT;
	res_fini(&p);
	hm__snap_path(s->base.cfg.dir, seq, id, path, sizeof(path));
	if (e == 0) {
		if ((f = fopen(path, "wb")) == NULL)
			e = -EIO;
		else if (fwrite(buf, 1, bytes, f) != bytes)
			e = -EIO;
		if (f != NULL && fclose(f) != 0)
			e = -EIO;
	}
	free(buf);
	if (e == 0)
		e = hm__recover_snapshot(&rec->rc, &rec->loaded, &rec->snapshot_seq);
	if (e == 0 && (!rec->loaded || rec->snapshot_seq != seq))
		e = HM_ECORRUPT;
	if (e != 0) {
		hm_log(HM_LOG_ERR, "origin",
		       "etcd: cannot load the snapshot at seq %" PRIu64 ": %s", seq,
		       hm_strerror(e));
		return e;
	}
	hm_log(HM_LOG_INFO, "origin", "etcd: loaded the snapshot at seq %" PRIu64, seq);
	s->head = seq;
	return 0;
}

static int e_recover(struct hm__store *base, struct hm__store_recovery *rec)
{
	struct estore *s = (struct estore *)base;
	char hkey[KEY_MAX], key[KEY_MAX], end[KEY_MAX];
	size_t hn = key_of(s, hkey, "head"), en = key_of(s, end, "log0");
	struct res r = {0};
	uint64_t head;
	int64_t rev;
	int e;

	s->rc = rec->rc;
	if ((e = wait_res(s, hm__etcd_range(s->etcd, hkey, hn, NULL, sync_cb, &r), &r)) != 0 ||
	    (e = parse_head(find_kv(&r, hkey, hn), &head)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "etcd: cannot read %s: %s%s%s", hkey, hm_strerror(e),
		       r.msg[0] ? ": " : "", r.msg);
		res_fini(&r);
		return e;
	}
	rev = r.h.revision;
	s->head_rev = find_kv(&r, hkey, hn)->mod_revision;
	res_fini(&r);
	if ((e = load_snap(s, rev, rec)) != 0)
		return e;
	/* Everything up to head, read at the revision head was read at. */
	while (s->head < head) {
		struct hm__etcd_range_opts o = {
		    .range_end = end, .range_end_len = en, .revision = rev, .limit = PAGE};
		size_t n = log_key(s, key, s->head + 1);

		if ((e = wait_res(s, hm__etcd_range(s->etcd, key, n, &o, sync_cb, &r), &r)) != 0) {
			hm_log(HM_LOG_ERR, "origin",
			       "etcd: cannot read the log after %" PRIu64 ": %s", s->head,
			       hm_strerror(e));
			res_fini(&r);
			return e;
		}
		if (r.n == 0) {
			hm_log(HM_LOG_ERR, "origin",
			       "etcd: the log ends at %" PRIu64 " but the head is %" PRIu64,
			       s->head, head);
			res_fini(&r);
			return HM_EGAP;
		}
		for (size_t i = 0; i < r.n && s->head < head && e == 0; i++) {
			const struct kvc *kv = &r.kvs[i];
			int64_t mod = kv->mod_revision;

			if (kv->value_len >= STAGED_LEN && get_u32(kv->value + 8) == LOG_STAGED) {
				struct res c = {0};

				if ((e = read_chunks(s, kv, rev, &c)) == 0)
					e = deliver(s, kv, &c, true);
				res_fini(&c);
			} else {
				e = deliver(s, kv, NULL, true);
			}
			if (e == 0 && s->head == head)
				s->head_rev = HM_MAX(s->head_rev, mod);
		}
		res_fini(&r);
		if (e != 0)
			return e;
		rec->records = s->head - rec->snapshot_seq;
	}
	/* The batches read after the snapshot are in no local file the sync threads could serve
	 * them from: the origin writes a snapshot at the head instead, as for a fresh directory. */
	if (rec->records > 0)
		rec->loaded = false;
	/* Everything after rev arrives through the watch and the poll. */
	start_watch(s, rev + 1);
	return 0;
}

static int e_start(struct hm__store *base, uint64_t next_seq, char *err, size_t errlen)
{
	struct estore *s = (struct estore *)base;
	struct hm__journal_cfg jc = {
	    .dir = base->cfg.dir, .epoch = base->epoch, .segment_bytes = base->cfg.segment_bytes};
	int e;

	hm_require(next_seq == s->head + 1);
	struct hm__etcd_maint_cfg mc = {.prefix = s->prefix,
					.node = base->cfg.node,
					.lease_ttl_ms = base->cfg.etcd_lease_ttl_ms,
					.compact_every_ms = base->cfg.etcd_compact_every_ms,
					.defrag_every_ms = base->cfg.etcd_defrag_every_ms,
					.defrag_min = base->cfg.etcd_defrag_min,
					.quota = base->cfg.etcd_quota};

	if ((e = hm__etcd_maint_new(&s->maint, s->etcd, &mc, on_alarm, s)) != 0) {
		snprintf(err, errlen, "etcd: %s", hm_strerror(e));
		return e;
	}
	if ((e = hm__journal_start(&s->cache, &jc, next_seq, err, errlen)) != 0)
		return e;
	s->last_ok_ms = hm_mono_ms();
	uv_timer_start(&s->poll_timer, on_poll, POLL_MS, POLL_MS);
	return 0;
}

static void e_roll(struct hm__store *base, uint64_t next_seq)
{
	hm__journal_roll(((struct estore *)base)->cache, next_seq);
}

static int e_covered(struct hm__store *base, uint64_t seq)
{
	return hm__journal_drop_covered(base->cfg.dir, seq);
}

static uint64_t e_bytes(const struct hm__store *base)
{
	const struct estore *s = (const struct estore *)base;

	return s->cache != NULL ? hm__journal_bytes(s->cache) : 0;
}

static void e_status(struct hm__store *base, struct hm__jsonw *w)
{
	struct estore *s = (struct estore *)base;

	hm__jw_kcstr(w, "store", "etcd");
	hm__jw_ku64(w, "fsyncs", s->cache != NULL ? hm__journal_fsyncs(s->cache) : 0);
	hm__jw_kcstr(w, "etcd_endpoint", hm__etcd_endpoint(s->etcd, hm__etcd_current(s->etcd)));
	hm__jw_ku64(w, "etcd_commits", s->commits);
	hm__jw_ku64(w, "etcd_batches", s->batches);
	hm__jw_ku64(w, "etcd_group_max", s->group_max);
	hm__jw_ku64(w, "etcd_group_inflight", s->gn); /* batches of the group being committed */
	hm__jw_key(w, "etcd_group_hist");	      /* txns by batches in them: 1, 2-3, 4-7, .. */
	hm__jw_arr(w);
	for (unsigned i = 0; i < GROUP_HIST; i++)
		hm__jw_u64(w, s->group_hist[i]);
	hm__jw_arr_end(w);
	hm__jw_ku64(w, "etcd_conflicts", s->conflicts);
	hm__jw_ku64(w, "etcd_retries", s->retries);
	hm__jw_ku64(w, "etcd_foreign", s->foreign);
	hm__jw_ku64(w, "etcd_staged", s->staged);
	hm__jw_ku64(w, "etcd_watch_events", s->watch_events);
	hm__jw_ku64(w, "etcd_snapshots", s->snapshots);
	hm__jw_ku64(w, "etcd_compactions",
		    s->maint != NULL ? hm__etcd_maint_compactions(s->maint) : 0);
	if (s->maint != NULL)
		hm__etcd_maint_status(s->maint, w);
	hm__jw_ku64(w, "etcd_watch_resumes",
		    s->watch != NULL ? hm__etcd_watch_resumes(s->watch) : 0);
	hm__jw_kcstr_or_null(w, "store_error", s->stale ? s->why : NULL);
}

static void handle_closed(uv_handle_t *h)
{
	struct estore *s = h->data;

	if (--s->handles == 0)
		free(s);
}

static void e_close(struct hm__store *base)
{
	struct estore *s = (struct estore *)base;

	s->closing = true;
	if (s->watch != NULL)
		hm__etcd_watch_stop(s->watch);
	s->watch = NULL;
	if (s->etcd != NULL)
		hm__etcd_close(s->etcd); /* pending callbacks see closing and do nothing */
	hm__etcd_maint_free(s->maint);	 /* its requests have ended with the client */
	s->maint = NULL;
	hm__journal_stop(s->cache);
	s->cache = NULL;
	finish_group(s);
	upload_end(s);
	if (s->lock_fd >= 0)
		close(s->lock_fd);
	if (s->handles == 0) {
		free(s);
		return;
	}
	uv_close((uv_handle_t *)&s->retry_timer, handle_closed);
	uv_close((uv_handle_t *)&s->poll_timer, handle_closed);
}

const struct hm__store_ops hm__store_etcd_ops = {
    .name = "etcd",
    .flags = HM__STORE_MAY_REFUSE,
    .open = e_open,
    .recover = e_recover,
    .start = e_start,
    .append = e_append,
    .room = e_room,
    .flush = e_flush,
    .roll = e_roll,
    .covered = e_covered,
    .snapshot = e_snapshot,
    .bytes = e_bytes,
    .status = e_status,
    .close = e_close,
};
