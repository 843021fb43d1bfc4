/*
 * The origin's store: where numbered batches become durable, and where the state comes from at
 * start-up. An ops table, as nng has one per transport, with two implementations:
 *
 *  journal  (store_journal.c, `--data DIR`) the local journal and snapshot files: one origin,
 *           durable when fsynced; never refuses a batch.
 *  etcd     (store_etcd.c, `--store etcd:URL,...`) etcd's Raft log, shared by several origins:
 *           a batch is durable when the transaction that numbers it by compare-and-swap
 *           commits. It can refuse one (another origin took the seq), delivers the batches
 *           other origins commit, and can be unreachable for a while (stale).
 *
 * Both keep the journal segments and snapshot files in DIR, which the sync threads read for
 * catch-up and snapshots (syncsrv.h): with etcd they are a cache. docs/store-etcd.md is the
 * design; docs/sync.md the origin's flow.
 *
 * Threads: every op and every event runs on the origin's loop thread. An event is never called
 * from inside an op.
 */
#ifndef HM_SYNCD_STORE_H
#define HM_SYNCD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "syncd/batch.h"
#include "syncd/journal.h"
#include "syncd/jsonw.h"
#include "syncd/recovery.h"

/* The store may refuse an appended batch: the origin keeps it open in the table (validated,
 * not committed) until durable() or refused(). Batches are appended in groups: after ready(),
 * every batch appended until flush() joins one group (while room() says so), committed or
 * refused as a whole; requests arriving while a group is in flight wait for the next one. */
#define HM__STORE_MAY_REFUSE 1u

struct hm__store_cfg {
	const char *dir;	  /* the data directory (journal and snapshots, or etcd's cache) */
	const char *spec;	  /* NULL: the journal; "etcd:URL[,URL...]" */
	const char *etcd_ca;	  /* PEM: CAs for https:// etcd endpoints (NULL: the system's) */
	const char *etcd_cert;	  /* PEM: client certificate and key for etcd (or NULL) */
	const char *etcd_prefix;  /* key prefix (NULL: "/hermod/") */
	uint64_t segment_bytes;	  /* journal segment size */
	uint64_t etcd_timeout_ms; /* one etcd request's deadline (0: 5000) */
	/* etcd's upkeep (store_etcd_maint.h; 0: its defaults) */
	const char *node;		/* this origin's name, shown as the compactor */
	uint64_t etcd_lease_ttl_ms;	/* the compactor's lease */
	uint64_t etcd_compact_every_ms; /* history compaction period */
	uint64_t etcd_defrag_every_ms;	/* defragmentation check period */
	uint64_t etcd_defrag_min;	/* a member's file is defragmented from this size */
	uint64_t etcd_quota;		/* etcd's --quota-backend-bytes */
};

struct hm__store_events {
	/* Every appended batch up to last_seq is durable; their journal positions are filled. */
	void (*durable)(void *ctx, uint64_t last_seq);
	/* The group in flight was not committed, none of its batches (etcd: another origin took
	 * its first seq, err HM_ECONFLICT; or etcd refused it for good, e.g. -ENOSPC: why says
	 * so). The origin aborts them all; the batches that beat it follow through foreign(),
	 * then ready(). */
	void (*refused)(void *ctx, int err, const char *why);
	/* A batch another origin committed (borrowed), the next seq after the origin's head; pos
	 * is where the store cached it. Never while a batch of the origin's is in flight. Returns
	 * 0, or an error that makes the store stop delivering (the origin then exits). */
	int (*foreign)(void *ctx, struct hm__batch *b, const struct hm__jpos *pos);
	/* HM__STORE_MAY_REFUSE: the store takes the next append (after durable() or refused(),
	 * once the batches that beat a refused one have come through foreign()). */
	void (*ready)(void *ctx);
	/* The store can (stale false) or cannot (true, why says why) commit right now. */
	void (*stale)(void *ctx, bool stale, const char *why);
	/* The store cannot go on (etcd's log has a gap this origin cannot bridge, or a batch that
	 * does not reproduce its digest): the origin stops; restarted, it loads the state anew. */
	void (*fatal)(void *ctx, int err, const char *why);
};

/* What recover() loads into (borrowed) and reports. */
struct hm__store_recovery {
	struct hm__recover_ctx rc; /* every batch replayed is also handed to rc.ss to serve */
	bool loaded;		   /* out: a snapshot was loaded, and the local files hold every
				    * batch after it (false: the origin writes one at the head) */
	uint64_t snapshot_seq;	   /* out: its seq (0 if none) */
	uint64_t records;	   /* out: batches replayed after it */
	uint64_t truncated;	   /* out: torn bytes cut off the journal */
};

struct hm__store;

struct hm__store_ops {
	const char *name; /* "journal", "etcd" */
	unsigned flags;	  /* HM__STORE_MAY_REFUSE */
	/* Opens the store: the data directory (locked against a second origin) and the epoch,
	 * made if this is the first start. Blocks (start-up only). Returns 0 or an error (err
	 * says why). */
	int (*open)(struct hm__store *s, char *err, size_t errlen);
	/* Loads the state into the empty table: the snapshot, then every batch after it. Blocks
	 * (start-up only). Returns 0 or an error (logged). */
	int (*recover)(struct hm__store *s, struct hm__store_recovery *r);
	/* Starts taking appends; the next one is next_seq. Returns 0 or an error (err). */
	int (*start)(struct hm__store *s, uint64_t next_seq, char *err, size_t errlen);
	/* Makes b (a reference is taken; numbered the last appended + 1) durable; durable() or
	 * refused() follows. *pos (owned by the caller until then) is filled before durable()
	 * reports it. Journal: any number in flight, each written at once. HM__STORE_MAY_REFUSE:
	 * b joins the group being built (only between ready() and flush(), while room()). */
	void (*append)(struct hm__store *s, struct hm__batch *b, struct hm__jpos *pos);
	/* HM__STORE_MAY_REFUSE (else NULL): whether the group being built takes one more batch
	 * of any size (the first always does). */
	bool (*room)(const struct hm__store *s);
	/* HM__STORE_MAY_REFUSE (else NULL): commits the group appended since ready() in one
	 * transaction (nothing if it is empty); durable() or refused() follows for all of it. */
	void (*flush)(struct hm__store *s);
	/* Compaction: the next batch starts a new journal segment, first seq next_seq. */
	void (*roll)(struct hm__store *s, uint64_t next_seq);
	/* A snapshot at seq is in place: drops what it covers. Returns how many journal segments
	 * were dropped, or a negative errno. */
	int (*covered)(struct hm__store *s, uint64_t seq);
	/* A new local snapshot file (path; its seq and id) is in place after a compaction. etcd:
	 * uploads it as P/snap and drops the log keys the previous one covered. NULL: nothing. */
	void (*snapshot)(struct hm__store *s, const char *path, uint64_t seq, uint64_t snap_id);
	/* Bytes appended to the journal since start. */
	uint64_t (*bytes)(const struct hm__store *s);
	/* Admin "status" fields of the store. */
	void (*status)(struct hm__store *s, struct hm__jsonw *w);
	/* Finishes what is in flight (durable() for what completes), stops, and frees the store
	 * once the loop has closed its handles. */
	void (*close)(struct hm__store *s);
};

/* What every implementation's struct starts with. */
struct hm__store {
	const struct hm__store_ops *ops;
	uv_loop_t *loop;
	struct hm__store_cfg cfg; /* strings borrowed from the caller, who keeps them */
	const struct hm__store_events *ev;
	void *ctx;
	uint64_t epoch; /* set by open() */
};

/*
 * Makes the store cfg->spec names (not opened yet). Returns 0, -EINVAL (an unknown spec: err
 * says why) or -ENOMEM.
 */
int hm__store_new(struct hm__store **out, uv_loop_t *loop, const struct hm__store_cfg *cfg,
		  const struct hm__store_events *ev, void *ctx, char *err, size_t errlen);

extern const struct hm__store_ops hm__store_journal_ops;
extern const size_t hm__store_journal_size;
extern const struct hm__store_ops hm__store_etcd_ops;
extern const size_t hm__store_etcd_size;

/* Allocates an implementation's struct of size bytes with the common part filled. */
struct hm__store *hm__store_alloc(size_t size, const struct hm__store_ops *ops, uv_loop_t *loop,
				  const struct hm__store_cfg *cfg,
				  const struct hm__store_events *ev, void *ctx);

/* The data directory: created if missing, and locked (*lock_fd) so that two origins never share
 * it. Returns 0 or an error (err says why). */
int hm__store_lock_dir(const char *dir, int *lock_fd, char *err, size_t errlen);

#endif
