/*
 * Start-up recovery of the origin's state, shared by its stores (store.h): the data directory
 * and its epoch file, the newest usable snapshot file, and applying one numbered batch record to
 * the validation state (table and certificate store, common/state.h) as a replay does (the journal
 * at start-up; with etcd, also every batch another origin committed). Moved out of origin.c, which
 * keeps sequencing and publishing.
 *
 * Everything here runs on the origin's loop thread, or before it runs.
 */
#ifndef HM_SYNCD_RECOVERY_H
#define HM_SYNCD_RECOVERY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/state.h"
#include "common/table.h"
#include "proto/proto.h"
#include "syncd/batch.h"
#include "syncd/reqcache.h"
#include "syncd/syncsrv.h"

/* mkdir -p. Returns 0 or a negative errno. */
int hm__mkdir_p(const char *path, mode_t mode);

/*
 * Reads DIR/epoch (16 hex digits) into *epoch, or, for a fresh directory (no journal and no
 * snapshot), makes a random one and writes the file durably. Logs what is wrong. Returns 0,
 * HM_ECORRUPT (a bad epoch file, or a journal without one), or a negative errno.
 */
int hm__recover_epoch(const char *dir, uint64_t *epoch);

/*
 * Writes DIR/epoch durably (replacing any). Returns 0 or -EIO (logged).
 */
int hm__write_epoch(const char *dir, uint64_t epoch);

/* Opens the origin's state in private memory: an empty table and certificate store (st's
 * other fields are left as they are). Returns 0 or a negative errno (nothing open). */
int hm__recover_state_open(struct hm_state *st);

/* Closes both files of st (either may be NULL) and sets them to NULL. */
void hm__recover_state_close(struct hm_state *st);

/* What hm__recover_snapshot and hm__recover_apply work on (all borrowed). */
struct hm__recover_ctx {
	const char *dir;
	uint64_t epoch;
	struct hm_state *st; /* its files replaced by new, empty ones if a load fails midway */
	struct hm_proto_decoder *dec;
	struct hm__reqcache *reqs;
	struct hm__syncsrv *ss;
};

/*
 * Loads the newest usable snapshot of the epoch in DIR into the (empty) state, its request ids
 * into reqs, and hands it to ss to serve: *loaded and *seq say which. Without one, the state is
 * left empty and committed at (epoch, 0). Returns 0 or an error (logged).
 */
int hm__recover_snapshot(const struct hm__recover_ctx *rc, bool *loaded, uint64_t *seq);

/*
 * Feeds the changes of b (borrowed) into the batch open in st, part by part (the body of a
 * hm_state_feed_fn: a replay's, or an origin rebuilding the group it validated), each part
 * checked to be b's (decoded with dec, for epoch). Returns 0, HM_ECORRUPT, or the first error of
 * hm_state_change() (unchanged: the state recognises "full").
 */
int hm__recover_feed(struct hm_state *st, struct hm_proto_decoder *dec, uint64_t epoch,
		     const struct hm__batch *b);

/*
 * Applies one numbered batch (borrowed) to the state as one batch committed at (epoch, b->seq)
 * (hm_state_apply: grows the table or the certificate store as needed), and checks the
 * resulting digest (hm_state_digest) and counts against the record's. Then remembers its request
 * id. Returns 0, HM_ECORRUPT (a part that is not this batch's) or a state error (the state is
 * unchanged), or HM_EDIGEST (the state has moved to one that is not the record's: the caller
 * must stop serving).
 */
int hm__recover_apply(const struct hm__recover_ctx *rc, const struct hm__batch *b);

#endif
