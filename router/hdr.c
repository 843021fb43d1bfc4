/*
 * The router's HTTP vocabulary (see hdr-t.h): the header table expanded into a flags array and
 * a name index, and the reason phrases into an array indexed by status.
 *
 * Header names are classified for every field of every request and response, so the lookup is
 * a small open-addressed hash over (length, first and last letter) with 64 slots for the ~20
 * known names: an unknown name usually costs one slot and a length comparison, a known one a
 * case-insensitive comparison more. The index is built from the table once (the constants
 * below give no collision for today's names; a new name that collides only costs a probe).
 */
#include "router/hdr.h"

#include <stdbool.h>

#include "common/util.h"

#define SLOTS 64 /* power of two, above twice the number of names */

struct hdr_info {
	const char *name;
	uint8_t len;
};

static const struct hdr_info info[HM__HDR_COUNT] = {[HM__HDR_OTHER] = {"", 0},
#define HM__HDR_INFO(id, s, flags) [HM__HDR_##id] = {s, sizeof(s) - 1},
						    HM__HDR_TABLE(HM__HDR_INFO)
#undef HM__HDR_INFO
};

const uint8_t hm__router_hdr_flags[HM__HDR_COUNT] = {
#define HM__HDR_FLAGS(id, s, flags) [HM__HDR_##id] = (flags),
    HM__HDR_TABLE(HM__HDR_FLAGS)
#undef HM__HDR_FLAGS
};

static const char *const reasons[600] = {
#define HM__REASON(status, text) [status] = text,
    HM__HTTP_REASONS(HM__REASON)
#undef HM__REASON
};

static uint8_t slot_id[SLOTS]; /* 0: empty, else an id */
static bool built;

static inline unsigned hash(const char *s, size_t n)
{
	return ((unsigned)n * 26u + (unsigned char)hm__router_lower(s[0]) +
		(unsigned char)hm__router_lower(s[n - 1]) * 11u) &
	       (SLOTS - 1);
}

void hm__router_hdr_init(void)
{
	if (built)
		return;
	for (uint8_t id = 1; id < HM__HDR_COUNT; id++) {
		unsigned h = hash(info[id].name, info[id].len);

		while (slot_id[h] != 0)
			h = (h + 1) & (SLOTS - 1);
		slot_id[h] = id;
	}
	built = true;
}

uint8_t hm__router_hdr_classify(const char *name, size_t n)
{
	unsigned h;

	if (!built)
		hm__router_hdr_init();
	if (n == 0)
		return HM__HDR_OTHER;
	for (h = hash(name, n);; h = (h + 1) & (SLOTS - 1)) {
		uint8_t id = slot_id[h];
		const char *k;
		size_t i;

		if (id == 0)
			return HM__HDR_OTHER;
		if (info[id].len != n)
			continue;
		k = info[id].name;
		for (i = 0; i < n && hm__router_lower(name[i]) == k[i]; i++)
			;
		if (i == n)
			return id;
	}
}

const char *hm__router_hdr_name(uint8_t id)
{
	return id < HM__HDR_COUNT ? info[id].name : "";
}

const char *hm__router_reason(int status)
{
	const char *r =
	    status >= 0 && status < (int)HM_ARRAY_SIZE(reasons) ? reasons[status] : NULL;

	return r != NULL ? r : "";
}
