/*
 * A node's replicated state: its routing table and its certificate store, changed together. Every
 * writer of that state (the origin's private copy, an edge's files, a snapshot being loaded)
 * applies a batch of changes through this one entry, which sends each change to the file that
 * holds it (certificates and the TLS ticket keys to the store, everything else to the table),
 * grows whichever file is full by itself and applies the batch again, and commits both files at
 * the batch's (epoch, seq), the store first (docs/tls.md, "Sequence between the two files"). So
 * the "full -> grow -> retry" loop exists once.
 *
 * Ticket keys travel as the secrets "tls-ticket-0" .. "tls-ticket-3" (80 bytes each: the
 * struct hm_ticket_key layout) and are written into the store's ticket-key list in that order
 * (slot 0 encrypts); they never enter the table, which is world-readable (docs/security.md).
 *
 * Threads: one hm_state belongs to one thread.
 */
#ifndef HM_COMMON_STATE_H
#define HM_COMMON_STATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/certstore.h"
#include "common/model.h"
#include "common/table.h"

#define HM_TICKET_SECRET_PREFIX "tls-ticket-" /* + a digit 0..HM_TICKET_KEYS_MAX-1 */
#define HM_TICKET_KEY_LEN	80	      /* sizeof(struct hm_ticket_key) */

struct hm_state {
	struct hm_table_writer *table;	   /* required; borrowed */
	struct hm_certstore_writer *certs; /* borrowed; NULL: certificate ops fail HM_EOP */
	/* Optional check of every cert.put before it is stored (the edge: the record's id against
	 * its bytes). Returns 0 or an error that fails the batch. */
	int (*cert_verify)(const struct hm_change *c);
	/* Private. */
	bool open, counting, skip_table, skip_certs, keys_dirty, table_full, certs_full;
	uint8_t nkeys;
	uint64_t open_epoch, open_seq; /* what the open batch was begun at */
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	uint64_t need_apps, need_domains, need_dynos, need_heap, need_certs, need_cert_heap;
};

/*
 * The feed of one batch: calls hm_state_change() for each change in order, and returns 0, the
 * first non-zero result of hm_state_change() (return it unchanged: the entry recognises "full"),
 * or an error of its own. hm_state_apply() may call it several times (after a growth, and once
 * with hm_state_counting() true to size the files: then skip side effects such as encoding).
 */
typedef int (*hm_state_feed_fn)(struct hm_state *s, void *arg);

/*
 * Applies one batch: begin, feed, commit both files at (epoch, seq). A file that already holds
 * seq (its published position is (epoch, >= seq): the process died between the two commits) is
 * skipped. On "full" (the table's HM_EFULL, the store's -ENOSPC) aborts, grows the full file (to
 * fit the whole batch the first time, doubling after) and feeds again, up to 40 times. Returns 0,
 * the feed's error (nothing changed), a growth error (HM_EFULL: the table reached its max_bytes;
 * -ENOSPC: the store did, or the file system is full; nothing changed), or a commit error (the
 * store may then be one batch ahead of the table; the next apply of seq skips it).
 */
int hm_state_apply(struct hm_state *s, hm_state_feed_fn feed, void *arg, uint64_t epoch,
		   uint64_t seq);

/*
 * hm_state_apply() without the commit: on success the batch stays open in both files, to be
 * committed (hm_state_commit) or aborted (hm_state_abort) later; an origin whose store may refuse
 * the batch (docs/store-etcd.md) keeps it open until the store has answered. Same returns as
 * hm_state_apply() but for the commit's; on error nothing is open.
 */
int hm_state_prepare(struct hm_state *s, hm_state_feed_fn feed, void *arg, uint64_t epoch,
		     uint64_t seq);

/*
 * Feeds one more part (feed) into the batch open since hm_state_prepare(), on top of what is in
 * it: an origin whose store commits a group of batches in one transaction validates each request
 * of the group this way (docs/store-etcd.md, "Group commit"). redo must feed exactly what the
 * open batch holds so far, as it was fed then. On success the batch stays open with both. On
 * failure the batch is rebuilt as it was before the call (aborted, begun again at the same
 * (epoch, seq), redo fed), so one bad part never spoils the parts before it; "full" grows the full
 * file (sized by counting redo and feed) and feeds both again, as hm_state_prepare() does.
 * Returns 0, or the feed's error or a growth error with the batch open as before the call; if
 * even the rebuild failed (redo's error, e.g. -ENOMEM), nothing is open (hm_state_batch_info()
 * says -EINVAL). -EINVAL if no batch is open.
 */
int hm_state_extend(struct hm_state *s, hm_state_feed_fn feed, void *arg, hm_state_feed_fn redo,
		    void *redo_arg);

/* The digest (as hm_state_digest) and the table's facts (hm_table_batch_info) of the open batch
 * as applied so far. 0, or -EINVAL if no batch is open. */
int hm_state_batch_info(const struct hm_state *s, uint8_t digest[HM_DIGEST_LEN],
			struct hm_table_info *table);

/* Routes one change of the batch being fed. The hm_table_apply() / hm_certstore_put() codes;
 * HM_ENOCERT for a cert.rm of no certificate. In counting mode it only accounts. */
int hm_state_change(struct hm_state *s, const struct hm_change *c);

/* True while hm_state_apply() feeds only to size the files. */
bool hm_state_counting(const struct hm_state *s);

/*
 * The steps, for a batch whose changes arrive over time (an edge loading snapshot chunks): begin
 * (0 or -EBUSY), change x n, then commit or abort. After a "full" error the caller aborts and
 * starts over with larger files (hm_state_full() says which one).
 */
int hm_state_begin(struct hm_state *s, uint64_t epoch, uint64_t seq);
int hm_state_commit(struct hm_state *s, uint64_t epoch, uint64_t seq);
void hm_state_abort(struct hm_state *s);
/* Whether the last failed change found the table (table) or the store full. */
void hm_state_full(const struct hm_state *s, bool *table, bool *certs);
/* Whether err is a "full" error of either file. */
bool hm_state_is_full(int err);

/* The digest of both files' published versions (the store's added lane-wise to the table's). */
void hm_state_digest(const struct hm_state *s, uint8_t out[HM_DIGEST_LEN]);

/*
 * Calls cb with the put change of every object of the published state: the table's
 * (hm_table_foreach), then each certificate (cert.put with id, not_after and meta), then each
 * ticket key (secret.put "tls-ticket-N"). Strings are borrowed for the call. For snapshots.
 * Returns 0 or cb's non-zero value.
 */
int hm_state_foreach(const struct hm_state *s, int (*cb)(void *ctx, const struct hm_change *c),
		     void *ctx);

/* The ticket-key slot of a secret name ("tls-ticket-2" -> 2), or -1 if it is not one. */
int hm_ticket_secret_slot(const char *name, size_t n);

#endif
