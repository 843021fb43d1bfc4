/*
 * The journal store (store.h): the origin's state in its own data directory, as one machine
 * keeps it. A batch is durable when the journal's writer thread has fsynced it (journal.h:
 * group commit, any number of batches in flight); it is never refused. Start-up loads the
 * newest snapshot and replays the journal after it. The writer thread's "durable" signal
 * reaches the loop through a uv_async_t, and the durable() event reports the journal's
 * durable seq from there.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "syncd/journal.h"
#include "syncd/store.h"

struct jstore {
	struct hm__store base;
	int lock_fd;
	struct hm__journal *journal;
	uv_async_t async; /* the writer thread: something became durable */
	bool async_init;
};

const size_t hm__store_journal_size = sizeof(struct jstore);

static int j_open(struct hm__store *s, char *err, size_t errlen)
{
	struct jstore *j = (struct jstore *)s;
	int e;

	j->lock_fd = -1;
	if ((e = hm__store_lock_dir(s->cfg.dir, &j->lock_fd, err, errlen)) != 0)
		return e;
	if ((e = hm__recover_epoch(s->cfg.dir, &s->epoch)) != 0) {
		snprintf(err, errlen, "cannot read the epoch of %s: %s", s->cfg.dir,
			 hm_strerror(e));
		return e;
	}
	return 0;
}

/* Journal replay: one recovered batch (its reference is ours). */
static int replay_one(void *ctx, struct hm__batch *b, const struct hm__jpos *pos)
{
	struct hm__store_recovery *r = ctx;
	int e = hm__recover_apply(&r->rc, b);

	if (e == 0)
		hm__syncsrv_publish(r->rc.ss, b, pos);
	hm__batch_unref(b);
	return e;
}

static int j_recover(struct hm__store *s, struct hm__store_recovery *r)
{
	struct hm__jrecover jr = {0};
	int e;

	if ((e = hm__recover_snapshot(&r->rc, &r->loaded, &r->snapshot_seq)) != 0)
		return e;
	jr.epoch = s->epoch;
	jr.after_seq = r->snapshot_seq;
	jr.batch = replay_one;
	jr.ctx = r;
	if ((e = hm__journal_recover(s->cfg.dir, &jr)) != 0) {
		hm_log(HM_LOG_ERR, "origin", "journal recovery failed: %s", jr.err);
		return e;
	}
	r->records = jr.records;
	r->truncated = jr.truncated;
	return 0;
}

static void on_async(uv_async_t *a)
{
	struct jstore *j = a->data;

	if (j->journal != NULL)
		j->base.ev->durable(j->base.ctx, hm__journal_durable(j->journal));
}

/* The writer thread. */
static void on_durable(void *ctx)
{
	struct jstore *j = ctx;

	uv_async_send(&j->async);
}

static int j_start(struct hm__store *s, uint64_t next_seq, char *err, size_t errlen)
{
	struct jstore *j = (struct jstore *)s;
	struct hm__journal_cfg jc = {0};
	int e;

	if ((e = uv_async_init(s->loop, &j->async, on_async)) != 0) {
		snprintf(err, errlen, "cannot start the journal: %s", uv_strerror(e));
		return e;
	}
	j->async.data = j;
	j->async_init = true;
	jc.dir = s->cfg.dir;
	jc.epoch = s->epoch;
	jc.segment_bytes = s->cfg.segment_bytes;
	jc.durable = on_durable;
	jc.ctx = j;
	return hm__journal_start(&j->journal, &jc, next_seq, err, errlen);
}

static void j_append(struct hm__store *s, struct hm__batch *b, struct hm__jpos *pos)
{
	hm__journal_append(((struct jstore *)s)->journal, b, pos);
}

static void j_roll(struct hm__store *s, uint64_t next_seq)
{
	hm__journal_roll(((struct jstore *)s)->journal, next_seq);
}

static int j_covered(struct hm__store *s, uint64_t seq)
{
	return hm__journal_drop_covered(s->cfg.dir, seq);
}

static uint64_t j_bytes(const struct hm__store *s)
{
	const struct jstore *j = (const struct jstore *)s;

	return j->journal != NULL ? hm__journal_bytes(j->journal) : 0;
}

static void j_status(struct hm__store *s, struct hm__jsonw *w)
{
	struct jstore *j = (struct jstore *)s;

	hm__jw_kcstr(w, "store", "journal");
	hm__jw_ku64(w, "fsyncs", j->journal != NULL ? hm__journal_fsyncs(j->journal) : 0);
}

static void free_on_close(uv_handle_t *h)
{
	free(h->data);
}

static void j_close(struct hm__store *s)
{
	struct jstore *j = (struct jstore *)s;

	hm__journal_stop(j->journal); /* writes and fsyncs what is queued */
	j->journal = NULL;
	if (j->lock_fd >= 0)
		close(j->lock_fd);
	if (j->async_init)
		uv_close((uv_handle_t *)&j->async, free_on_close);
	else
		free(j);
}

const struct hm__store_ops hm__store_journal_ops = {
    .name = "journal",
    .flags = 0,
    .open = j_open,
    .recover = j_recover,
    .start = j_start,
    .append = j_append,
    .roll = j_roll,
    .covered = j_covered,
    .bytes = j_bytes,
    .status = j_status,
    .close = j_close,
};
