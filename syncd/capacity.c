/*
 * Capacity estimates. The heap holds names too long to be stored inline and each app's dyno
 * array; arrays double, and the blocks they leave go to per-size free lists, so an app with n
 * dynos may hold up to 8n bytes of arrays. The estimate errs on the large side: a table that is
 * too big costs memory, one that is too small costs a whole re-application of the batch.
 */
#include "syncd/capacity.h"

#define CAP32_MAX 0x7fffffffu
#define HEAP_MAX  0xfffff000ull

void hm__need_add(struct hm__need *n, const struct hm_change *c)
{
	switch (c->op) {
	case HM_OP_APP_PUT:
		n->apps++;
		n->heap += 256;
		break;
	case HM_OP_DOMAIN_PUT:
		n->domains++;
		n->heap += 2 * (uint64_t)c->name_len + 16;
		break;
	case HM_OP_DYNO_PUT:
		n->dynos++;
		n->heap += 16 + 2 * (uint64_t)c->name_len;
		break;
	default:
		break;
	}
}

static uint32_t cap32(uint64_t v)
{
	return v > CAP32_MAX ? CAP32_MAX : (uint32_t)v;
}

void hm__need_caps(const struct hm_table_info *info, const struct hm__need *n,
		   struct hm_table_caps *out)
{
	uint64_t heap = info->caps.heap + n->heap + 16 * (uint64_t)info->dynos;

	out->apps = cap32((uint64_t)info->apps + n->apps);
	out->domains = cap32((uint64_t)info->domains + n->domains);
	out->dynos = cap32((uint64_t)info->dynos + n->dynos);
	out->heap = heap > HEAP_MAX ? HEAP_MAX : heap;
}
