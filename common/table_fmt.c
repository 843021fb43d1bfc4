/*
 * The table's format, as both sides compute it: where everything is in a file of given
 * capacities (readers recompute it and refuse a header that disagrees, so a bad file cannot
 * make them read outside their mapping), and what a copy says about itself.
 */
#include <errno.h>
#include <string.h>

#include "common/errors.h"
#include "common/table-t.h"
#include "common/util.h"

/* ---- Layout ---------------------------------------------------------------------------------- */

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static uint32_t slots_for(uint32_t cap)
{
	uint32_t s = 16;

	while (s < 2 * (uint64_t)cap)
		s *= 2;
	return s;
}

int hm__table_layout_compute(struct hm__table_layout *l, uint32_t apps, uint32_t domains,
			     uint32_t dynos, uint64_t heap, uint64_t seed)
{
	uint64_t o;

	if (apps == 0 || apps > HM__TABLE_CAP_APPS_MAX || domains == 0 ||
	    domains > HM__TABLE_CAP_DOMAINS_MAX || dynos == 0 || dynos > HM__TABLE_CAP_DYNOS_MAX ||
	    heap < 4096 || heap > HM__TABLE_CAP_HEAP_MAX)
		return HM_EBADTABLE;
	memset(l, 0, sizeof(*l));
	l->cap_apps = apps;
	l->cap_domains = domains;
	l->cap_dynos = dynos;
	l->app_mask = slots_for(apps) - 1;
	l->domain_mask = slots_for(domains) - 1;
	l->dyno_mask = slots_for(dynos) - 1;
	l->heap_bytes = align_up(heap, HM__TABLE_LINE);
	l->seed = seed;
	o = align_up(sizeof(struct hm__table_copy_hdr), HM__TABLE_LINE);
	l->off_apps = o;
	o = align_up(o + (uint64_t)apps * sizeof(struct hm__table_rec_app), HM__TABLE_LINE);
	l->off_app_hash = o;
	o = align_up(o + ((uint64_t)l->app_mask + 1) * sizeof(struct hm__table_slot),
		     HM__TABLE_LINE);
	l->off_domains = o;
	o = align_up(o + (uint64_t)domains * sizeof(struct hm__table_rec_domain), HM__TABLE_LINE);
	l->off_domain_hash = o;
	o = align_up(o + ((uint64_t)l->domain_mask + 1) * sizeof(struct hm__table_slot),
		     HM__TABLE_LINE);
	l->off_dynos = o;
	o = align_up(o + (uint64_t)dynos * sizeof(struct hm__table_rec_dyno), HM__TABLE_LINE);
	l->off_dyno_hash = o;
	o = align_up(o + ((uint64_t)l->dyno_mask + 1) * sizeof(struct hm__table_slot),
		     HM__TABLE_LINE);
	l->off_heap = o;
	o += l->heap_bytes;
	l->copy_bytes = align_up(o, HM__TABLE_PAGE);
	l->copy_off[0] = HM__TABLE_HDR_BYTES;
	l->copy_off[1] = HM__TABLE_HDR_BYTES + l->copy_bytes;
	l->counters_off = HM__TABLE_HDR_BYTES + 2 * l->copy_bytes;
	l->counters_bytes = align_up((uint64_t)dynos * sizeof(int32_t), HM__TABLE_PAGE);
	l->file_bytes = l->counters_off + l->counters_bytes;
	return 0;
}

/* Checks a header read from a file and derives its layout. */
int hm__table_layout_from_hdr(struct hm__table_layout *l, const struct hm__table_hdr *h,
			      uint64_t file_size)
{
	if (h->magic != HM__TABLE_MAGIC || h->layout != HM__TABLE_LAYOUT ||
	    h->hdr_bytes != HM__TABLE_HDR_BYTES)
		return HM_EBADTABLE;
	if (hm__table_layout_compute(l, h->cap_apps, h->cap_domains, h->cap_dynos, h->cap_heap,
				     h->seed) != 0)
		return HM_EBADTABLE;
	if (l->file_bytes != h->file_bytes || l->file_bytes != file_size ||
	    l->copy_off[0] != h->copy_off[0] || l->copy_off[1] != h->copy_off[1] ||
	    l->copy_bytes != h->copy_bytes || l->counters_off != h->counters_off ||
	    l->counters_bytes != h->counters_bytes)
		return HM_EBADTABLE;
	return 0;
}

/* ---- What a copy says ------------------------------------------------------------------------ */

static void digest_bytes(const struct hm__table_copy_hdr *h, uint8_t out[HM_DIGEST_LEN])
{
	for (int lane = 0; lane < 2; lane++)
		for (int i = 0; i < 8; i++)
			out[lane * 8 + i] = (uint8_t)(h->digest[lane] >> (8 * i));
}

void hm_digest_hex(const uint8_t digest[HM_DIGEST_LEN], char out[2 * HM_DIGEST_LEN + 1])
{
	hm_hex(digest, HM_DIGEST_LEN, out);
}

void hm__table_info_from_copy(const struct hm__table_copy *c, const struct hm__table_layout *l,
			      uint64_t version, uint64_t file_id, struct hm_table_info *out)
{
	out->version = version;
	out->epoch = c->h->epoch;
	out->seq = c->h->seq;
	out->commit_ms = c->h->commit_ms;
	out->apps = c->h->n_apps;
	out->domains = c->h->n_domains;
	out->dynos = c->h->n_dynos;
	out->secrets = c->h->n_secrets;
	digest_bytes(c->h, out->digest);
	out->caps.apps = l->cap_apps;
	out->caps.domains = l->cap_domains;
	out->caps.dynos = l->cap_dynos;
	out->caps.heap = l->heap_bytes;
	out->file_bytes = l->file_bytes;
	out->file_id = file_id;
}

/* Copies secret name of c into out; its length, or HM_ENOSECRET. */
int hm__table_secret_read(const struct hm__table_copy *c, const char *name,
			  uint8_t out[HM_SECRET_MAX])
{
	size_t n = strlen(name);

	for (unsigned i = 0; i < HM__TABLE_SECRETS; i++) {
		const struct hm__table_rec_secret *r = &c->h->secrets[i];

		if (r->used && r->name_len == n && memcmp(r->name, name, n) == 0 &&
		    r->value_len <= HM_SECRET_MAX) {
			memcpy(out, r->value, r->value_len);
			return r->value_len;
		}
	}
	return HM_ENOSECRET;
}
