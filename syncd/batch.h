/*
 * One numbered batch as the origin handles it: encoded once, at validation time, into a
 * journal record whose body holds the batch's published BATCH messages ("parts") verbatim.
 * The same bytes are written to the journal, sent on the PUB socket, kept in the catch-up ring
 * and, after a restart, read back from the journal. A batch is immutable once built and
 * reference-counted, so the loop, the journal thread and the sync threads share it without
 * copying or locking.
 *
 * Journal record (all integers little-endian):
 *   u32 magic "HMJR" | u32 body length | u32 CRC-32C of the body | u32 kind (1 = batch)
 *   body: u64 seq | u64 ts_ms | u8 req_id[16] | u8 digest[16] | u32 apps | u32 domains
 *         | u32 dynos | u32 nparts | u32 part_len[nparts] | the parts back to back
 * digest and counts describe the whole state after the batch (checked again at replay).
 */
#ifndef HM_SYNCD_BATCH_H
#define HM_SYNCD_BATCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"
#include "proto/proto.h"
#include "syncd/buf.h"

#define HM__JREC_MAGIC	    0x524a4d48u /* "HMJR" */
#define HM__JREC_KIND_BATCH 1u
#define HM__JREC_HEAD	    16u /* magic, length, crc, kind */
#define HM__JREC_FIXED	    64u /* body bytes before part_len[] */
#define HM__JREC_MAX_BODY   (UINT32_MAX - 64u)

struct hm__batch {
	atomic_uint refs;
	uint64_t seq;
	uint64_t ts_ms;
	uint8_t req_id[16];
	uint8_t digest[16];
	uint32_t apps, domains, dynos;
	uint32_t nparts;
	/* The record is head (the 16-byte record head, the fixed body fields and part_len[]) then
	 * data (the parts back to back): two buffers when built, so the parts are encoded in place
	 * and never copied; one when read back from a file. */
	char *head; /* owned */
	size_t head_len;
	char *data; /* owned unless data_in_head */
	size_t data_len;
	bool data_in_head;
	size_t rec_len;	    /* head_len + data_len */
	uint64_t *part_off; /* owned: offset of each part in data */
	uint32_t *part_len; /* owned */
};

void hm__batch_ref(struct hm__batch *b);
/* Drops a reference; frees the batch at zero. NULL is ignored. Any thread. */
void hm__batch_unref(struct hm__batch *b);

/* The bytes of part i (a complete BATCH message). */
static inline const char *hm__batch_part(const struct hm__batch *b, uint32_t i)
{
	return b->data + b->part_off[i];
}

/* The whole record in one malloc'd buffer of b->rec_len bytes (NULL: out of memory). */
char *hm__batch_flatten(const struct hm__batch *b);

/*
 * Builds a batch: begin with the number of changes in each part (from an hm__splitter run over
 * the same changes, in the same order), add every change, end. The changes are encoded as they
 * are added; their strings are not kept.
 */
struct hm__batch_builder {
	struct hm_pbuf pb; /* the parts, encoded back to back */
	uint64_t epoch, seq, ts_ms;
	uint32_t nparts, part, left;
	uint32_t *counts;   /* owned copy */
	uint64_t *part_off; /* owned until handed to the batch */
	uint32_t *part_len;
};

/* Returns 0, -ENOMEM, or HM_ERANGE (no parts, or a part with no changes). */
int hm__batch_begin(struct hm__batch_builder *bb, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
		    const uint32_t *counts, uint32_t nparts);
/* Returns 0 or an encoder error (-ENOMEM, HM_ETOOBIG, HM_EARITY when more changes are added than
 * announced). */
int hm__batch_add(struct hm__batch_builder *bb, const struct hm_change *c);
/* Completes the record. Returns 0 with a batch holding one reference, HM_EARITY if fewer changes
 * were added than announced, or -ENOMEM. The builder is reset either way. */
int hm__batch_end(struct hm__batch_builder *bb, const uint8_t req_id[16], const uint8_t digest[16],
		  uint32_t apps, uint32_t domains, uint32_t dynos, struct hm__batch **out);
/* Frees what the builder holds (after an error, or when it is no longer needed). */
void hm__batch_builder_fini(struct hm__batch_builder *bb);

/*
 * Checks the record at p, of which avail bytes are present: returns 1 and its total length in
 * *len if it is whole and its checksum matches, 0 if it is cut short (avail too small: a torn
 * tail, or read more), or HM_ECORRUPT (bad magic, kind, length over max_body, checksum).
 */
int hm__jrec_check(const void *p, size_t avail, size_t max_body, size_t *len);

/*
 * Makes a batch of a checked record; takes ownership of rec (malloc'd) on success. Checks the
 * body's structure (part lengths add up). Returns 0, HM_ECORRUPT, or -ENOMEM.
 */
int hm__batch_from_record(char *rec, size_t len, struct hm__batch **out);

#endif
