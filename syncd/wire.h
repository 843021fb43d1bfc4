/*
 * Splitting a list of changes into messages that respect the protocol's bounds
 * (HM_PROTO_MAX_CHANGES changes, HM_PROTO_MAX_MSG bytes). A message's size is only known once
 * it is encoded, but every message that carries changes announces their count first, so the
 * split is decided beforehand from an upper bound of each change's encoded size.
 */
#ifndef HM_SYNCD_WIRE_H
#define HM_SYNCD_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

/* Budgets for the changes of one message; the rest of HM_PROTO_MAX_MSG is headroom for the
 * message head and, for a BATCH part, for being embedded in a catch-up reply. */
#define HM__PUB_PART_BYTES (1u << 20) /* a published BATCH part, a snapshot chunk */
#define HM__CTL_PART_BYTES (2u << 20) /* a control request part (hermodctl) */

/* An upper bound of the bytes c takes inside an encoded message. */
size_t hm__wire_change_size(const struct hm_change *c);

struct hm__splitter {
	size_t limit_bytes;
	uint32_t limit_changes;
	size_t bytes;	 /* of the current part */
	uint32_t n;	 /* changes in the current part */
	uint32_t nparts; /* parts started so far */
};

void hm__split_init(struct hm__splitter *s, size_t limit_bytes, uint32_t limit_changes);

/*
 * Accounts one more change of size bytes. Returns true if it starts a new part (the first
 * change always does): the part before it, if any, is complete with the count it had.
 */
bool hm__split_add(struct hm__splitter *s, size_t bytes);

#endif
