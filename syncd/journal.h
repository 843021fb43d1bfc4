/*
 * The origin's journal: segment files of batch records (batch.h), written by one thread with
 * group commit, recovered at start-up with torn-tail truncation, read back for catch-up.
 *
 * A segment is DIR/journal-<first seq, 20 digits>.log: a 64-byte header (magic "HMJRNL01",
 * version, epoch, first seq, creation time, CRC-32C) and then records. Segments are contiguous:
 * segment i holds seqs first_i .. first_{i+1} - 1. A new segment starts at every start, when the
 * current one passes its size limit, and on hm__journal_roll(); the previous one is fsynced
 * before the new one is created, and the directory after, so only the last segment can end in
 * a torn record.
 *
 * Threads: hm__journal_append/roll/stop are for the loop thread that owns the journal. The
 * writer thread calls cfg.durable after each group of records is on disk. hm__journal_read and
 * the recovery functions touch only files and may run on any thread.
 */
#ifndef HM_SYNCD_JOURNAL_H
#define HM_SYNCD_JOURNAL_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "syncd/batch.h"

#define HM__JSEG_HEAD	       64u
#define HM__JSEG_DEFAULT_BYTES (64u << 20)

/* Where a record is: its segment (by first seq), offset and total length. */
struct hm__jpos {
	uint64_t seg;
	uint64_t off;
	uint64_t len;
};

struct hm__journal_cfg {
	const char *dir; /* copied */
	uint64_t epoch;
	uint64_t segment_bytes;	    /* 0: HM__JSEG_DEFAULT_BYTES */
	void (*durable)(void *ctx); /* writer thread: hm__journal_durable() moved */
	void *ctx;
};

struct hm__journal;

/*
 * Creates segment next_seq (replacing an empty one of that name) and starts the writer thread.
 * Returns 0 or a negative errno (err describes it).
 */
int hm__journal_start(struct hm__journal **out, const struct hm__journal_cfg *cfg,
		      uint64_t next_seq, char *err, size_t errlen);

/*
 * Queues b (a reference is taken) to be written and fsynced; *pos says where it will be. Batches
 * must be appended in seq order. Never blocks on I/O.
 */
void hm__journal_append(struct hm__journal *j, struct hm__batch *b, struct hm__jpos *pos);

/* Makes the next append start a new segment with first seq next_seq; the writer creates it
 * (empty) right away, so every older segment is complete once the queue before it is durable. */
void hm__journal_roll(struct hm__journal *j, uint64_t next_seq);

/* The last seq on disk (0 if none since start), and counters. Any thread. */
uint64_t hm__journal_durable(const struct hm__journal *j);
uint64_t hm__journal_fsyncs(const struct hm__journal *j);
/* Bytes appended since start (loop thread). */
uint64_t hm__journal_bytes(const struct hm__journal *j);

/* Writes and fsyncs everything queued, stops the thread, frees j. */
void hm__journal_stop(struct hm__journal *j);

/* ---- Files: recovery, reading, deletion (any thread) ------------------------------------- */

/* DIR/journal-<first>.log into buf. */
void hm__journal_path(const char *dir, uint64_t first, char *buf, size_t len);

/* The first seqs of DIR's segments, ascending (malloc'd array; free it). Returns the count or a
 * negative errno. */
int hm__journal_list(const char *dir, uint64_t **firsts);

struct hm__jrecover {
	uint64_t epoch;	    /* in: segments must carry it */
	uint64_t after_seq; /* in: records up to this seq (the snapshot's) are skipped */
	/* in: called for each record after after_seq, in order; takes the batch's reference.
	 * A non-zero return stops recovery with that code. */
	int (*batch)(void *ctx, struct hm__batch *b, const struct hm__jpos *pos);
	void *ctx;
	uint64_t last_seq;	  /* out: the last seq recovered (after_seq if none) */
	uint64_t bytes;		  /* out: bytes of the records after after_seq */
	uint64_t truncated;	  /* out: bytes cut off a torn tail */
	uint64_t records;	  /* out: records passed to batch() */
	char err[PATH_MAX + 256]; /* out: what was wrong, on failure */
};

/*
 * Replays DIR's journal. Returns 0, HM_ECORRUPT (a bad record outside the last segment's tail,
 * a gap in seqs, a segment of another epoch, a journal that starts after after_seq + 1), or a
 * negative errno; r->err says which file and where.
 */
int hm__journal_recover(const char *dir, struct hm__jrecover *r);

/* Reads the record at pos, checks it and that it holds seq. Returns 0 (*out holds one
 * reference), -ENOENT (segment gone: compacted), HM_ECORRUPT, or a negative errno. */
int hm__journal_read(const char *dir, const struct hm__jpos *pos, uint64_t seq,
		     struct hm__batch **out);

/* Deletes the segments all of whose records are at or before seq (never the last segment).
 * Returns how many were deleted, or a negative errno. */
int hm__journal_drop_covered(const char *dir, uint64_t seq);

#endif
