/*
 * Sizing a table before a large batch. hm_table_apply() reports HM_EFULL when a capacity runs
 * out; the batch must then be aborted, the table grown and the batch applied again. Growing by
 * doubling alone would re-apply a million-change batch a dozen times, so the callers count what
 * the batch needs (an upper bound: every put may create an object) and grow once to fit it.
 */
#ifndef HM_SYNCD_CAPACITY_H
#define HM_SYNCD_CAPACITY_H

#include <stdint.h>

#include "common/model.h"
#include "common/table.h"

struct hm__need {
	uint64_t apps, domains, dynos, heap;
};

/* Accounts what c may add to a table. */
void hm__need_add(struct hm__need *n, const struct hm_change *c);

/* Capacities that hold the table described by info plus n. */
void hm__need_caps(const struct hm_table_info *info, const struct hm__need *n,
		   struct hm_table_caps *out);

#endif
