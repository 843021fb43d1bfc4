/*
 * Snapshot files: the whole routing state at one seq, stored as the SNAPSHOT_REP chunks the sync
 * socket sends, already encoded, so serving a chunk is one pread().
 *
 * DIR/snapshot-<seq, 20 digits>-<snap_id, 16 hex>.snap (little-endian):
 *   header, 128 bytes: magic "HMSNAP01" | u32 version | u32 header bytes | u64 epoch | u64 seq
 *     | u64 snap_id | u64 created_ms | u32 nchunks | u32 apps | u32 domains | u32 dynos
 *     | u8 digest[16] | u32 nreq | u32 0 | u64 index offset | u64 request-ids offset
 *     | u32 certs | u32 0 | u64 cert heap bytes (both 0 in files written before they were)
 *     | zeros | u32 CRC-32C of the 124 bytes before it
 *   the chunks, back to back
 *   index: nchunks x {u64 offset, u32 length, u32 CRC-32C of the chunk} | u32 CRC-32C
 *   request ids: nreq x {u8 id[16], u64 seq} | u32 CRC-32C   (the origin's de-duplication cache)
 * A file is written under a ".tmp" name, fsynced, renamed into place and the directory fsynced.
 */
#ifndef HM_SYNCD_SNAPFILE_H
#define HM_SYNCD_SNAPFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/state.h"
#include "common/table.h"
#include "proto/proto.h"
#include "syncd/reqcache.h"

struct hm__snap_info {
	uint64_t epoch, seq, snap_id, created_ms;
	uint32_t nchunks;
	uint32_t apps, domains, dynos;
	uint8_t digest[16];
	uint32_t nreq;
	uint64_t file_bytes;
	uint32_t certs;	    /* 0: not said (a file from before), or none */
	uint64_t cert_heap; /* the store heap they took when written */
};

/* DIR/snapshot-<seq>-<snap_id>.snap into buf. */
void hm__snap_path(const char *dir, uint64_t seq, uint64_t snap_id, char *buf, size_t len);

/*
 * Writes a snapshot of st's published state (table, then certificates and ticket keys:
 * hm_state_foreach) and the request ids of rc (may be NULL). Meant for a forked child: it reads
 * st and rc without changing them. Returns 0 and
 * the file's path in path, or a negative errno / encoder error with a reason in err.
 */
int hm__snap_write(const char *dir, const struct hm_state *st, uint64_t snap_id,
		   const struct hm__reqcache *rc, char *path, size_t pathlen, char *err,
		   size_t errlen);

/* Snapshots in dir, newest (highest seq) first: fills seqs/ids (malloc'd; free both). Returns
 * the count or a negative errno. ".tmp" files are removed. */
int hm__snap_list(const char *dir, uint64_t **seqs, uint64_t **ids);

struct hm__snapfile;

/*
 * Opens and checks a snapshot: header, index and request ids always; with verify, every chunk's
 * checksum too. Returns 0, HM_ECORRUPT, or a negative errno. The descriptor stays open until
 * hm__snap_close(), so an unlinked file stays readable.
 */
int hm__snap_open(struct hm__snapfile **out, const char *path, bool verify);
void hm__snap_close(struct hm__snapfile *s);
const struct hm__snap_info *hm__snap_info(const struct hm__snapfile *s);

/* Length of chunk i; reads it into dst (that many bytes) and checks its checksum. Any thread
 * (pread). Returns 0, HM_ECORRUPT, -ERANGE (no such chunk) or a negative errno. */
uint32_t hm__snap_chunk_len(const struct hm__snapfile *s, uint32_t i);
int hm__snap_chunk_read(const struct hm__snapfile *s, uint32_t i, void *dst);

/* Calls cb for each saved request id, oldest first. */
void hm__snap_reqs(const struct hm__snapfile *s,
		   void (*cb)(void *ctx, const uint8_t id[16], uint64_t seq), void *ctx);

/*
 * Loads the snapshot into st (which must hold no state) as one batch committed at the snapshot's
 * (epoch, seq), growing its files as needed (hm_state_apply), and checks the resulting digest
 * (table and certificates) and counts against the header. Returns 0, HM_EDIGEST, HM_ECORRUPT, a
 * decode or table error, or a negative errno.
 */
int hm__snap_load(const struct hm__snapfile *s, struct hm_state *st, struct hm_proto_decoder *d);

#endif
