/*
 * The edge's reassembly of a multi-part batch. A batch is applied only when every one of its
 * parts is there, and parts only ever come in order (PUB keeps order; catch-up replies are in
 * order), so the assembler holds the parts of one batch — the next one the edge needs — and
 * classifies every offered part. Parts are opaque objects (received messages) that the
 * assembler owns while it holds them and releases with free_part.
 */
#ifndef HM_SYNCD_ASSEMBLE_H
#define HM_SYNCD_ASSEMBLE_H

#include <stdint.h>

enum hm__asm_result {
	HM__ASM_HELD = 0,     /* taken; more parts are needed */
	HM__ASM_COMPLETE = 1, /* taken; all parts are held: apply, then hm__asm_reset() */
	HM__ASM_OLD = 2,      /* not taken: the edge already has it (seq <= applied, or a part
				 already held) */
	HM__ASM_GAP = 3,      /* not taken: something before it is missing */
};

struct hm__asm {
	uint64_t seq; /* the batch being assembled (valid when have > 0) */
	uint32_t nparts;
	uint32_t have; /* parts 0 .. have - 1 are held */
	void **parts;  /* owned, have entries */
	uint32_t cap;
	void (*free_part)(void *part);
};

void hm__asm_init(struct hm__asm *a, void (*free_part)(void *part));
/* Releases every held part. */
void hm__asm_reset(struct hm__asm *a);
void hm__asm_fini(struct hm__asm *a);

/*
 * Offers part `part` of `nparts` of batch seq to an edge that has applied everything up to
 * applied. On HELD/COMPLETE the assembler owns obj; otherwise the caller keeps it. A part of the
 * next batch whose nparts disagrees with the parts held resets the assembler (GAP).
 */
enum hm__asm_result hm__asm_offer(struct hm__asm *a, uint64_t applied, uint64_t seq, uint32_t part,
				  uint32_t nparts, void *obj);

#endif
