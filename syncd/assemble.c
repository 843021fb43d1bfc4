/*
 * Part reassembly. The only state is "parts 0 .. have-1 of batch seq"; everything else is
 * decided from (applied, seq, part).
 */
#include "syncd/assemble.h"

#include <stdlib.h>

#include "common/util.h"

void hm__asm_init(struct hm__asm *a, void (*free_part)(void *part))
{
	a->seq = 0;
	a->nparts = 0;
	a->have = 0;
	a->parts = NULL;
	a->cap = 0;
	a->free_part = free_part;
}

void hm__asm_reset(struct hm__asm *a)
{
	for (uint32_t i = 0; i < a->have; i++)
		a->free_part(a->parts[i]);
	a->have = 0;
	a->nparts = 0;
	a->seq = 0;
}

void hm__asm_fini(struct hm__asm *a)
{
	hm__asm_reset(a);
	free(a->parts);
	a->parts = NULL;
	a->cap = 0;
}

enum hm__asm_result hm__asm_offer(struct hm__asm *a, uint64_t applied, uint64_t seq, uint32_t part,
				  uint32_t nparts, void *obj)
{
	if (seq <= applied)
		return HM__ASM_OLD;
	if (a->have > 0 && a->seq != applied + 1)
		hm__asm_reset(a); /* held parts of a batch the edge got elsewhere */
	if (seq != applied + 1 || nparts == 0 || part >= nparts)
		return HM__ASM_GAP;
	if (a->have > 0 && nparts != a->nparts) {
		hm__asm_reset(a);
		return HM__ASM_GAP;
	}
	if (part < a->have)
		return HM__ASM_OLD;
	if (part > a->have)
		return HM__ASM_GAP;
	if (a->have == a->cap) {
		uint32_t cap = a->cap ? a->cap * 2 : 4;
		void **p = realloc(a->parts, cap * sizeof(*p));

		hm_require(p != NULL);
		a->parts = p;
		a->cap = cap;
	}
	a->seq = seq;
	a->nparts = nparts;
	a->parts[a->have++] = obj;
	return a->have == a->nparts ? HM__ASM_COMPLETE : HM__ASM_HELD;
}
