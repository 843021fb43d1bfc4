/*
 * Batches and journal records. The parts are encoded one after the other into one buffer; the
 * head (record head, fixed body fields, part_len[]) is built last, in a buffer of its own, when
 * the lengths and the checksum are known.
 */
#include "syncd/batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/hash.h"

void hm__batch_ref(struct hm__batch *b)
{
	atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

void hm__batch_unref(struct hm__batch *b)
{
	if (b == NULL || atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) != 1)
		return;
	free(b->head);
	if (!b->data_in_head)
		free(b->data);
	free(b->part_off);
	free(b->part_len);
	free(b);
}

void hm__batch_builder_fini(struct hm__batch_builder *bb)
{
	hm_pbuf_fini(&bb->pb);
	free(bb->counts);
	free(bb->part_off);
	free(bb->part_len);
	memset(bb, 0, sizeof(*bb));
}

int hm__batch_begin(struct hm__batch_builder *bb, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
		    const uint32_t *counts, uint32_t nparts)
{
	hm__batch_builder_fini(bb);
	if (nparts == 0 || nparts > HM_PROTO_MAX_PARTS)
		return HM_ERANGE;
	for (uint32_t i = 0; i < nparts; i++)
		if (counts[i] == 0)
			return HM_ERANGE;
	bb->counts = malloc(nparts * sizeof(*bb->counts));
	bb->part_off = calloc(nparts, sizeof(*bb->part_off));
	bb->part_len = calloc(nparts, sizeof(*bb->part_len));
	if (bb->counts == NULL || bb->part_off == NULL || bb->part_len == NULL) {
		hm__batch_builder_fini(bb);
		return -ENOMEM;
	}
	memcpy(bb->counts, counts, nparts * sizeof(*counts));
	bb->epoch = epoch;
	bb->seq = seq;
	bb->ts_ms = ts_ms;
	bb->nparts = nparts;
	bb->part = 0;
	bb->left = 0;
	return 0;
}

int hm__batch_add(struct hm__batch_builder *bb, const struct hm_change *c)
{
	int e;

	if (bb->left == 0) {
		if (bb->part >= bb->nparts)
			return HM_EARITY;
		bb->part_off[bb->part] = bb->pb.len;
		e = hm_proto_begin_batch(&bb->pb, bb->epoch, bb->seq, bb->ts_ms, bb->part,
					 bb->nparts, bb->counts[bb->part]);
		if (e != 0)
			return e;
		bb->left = bb->counts[bb->part];
	}
	if ((e = hm_proto_add_change(&bb->pb, c)) != 0)
		return e;
	if (--bb->left == 0) {
		if (bb->pb.len >
		    (size_t)HM__JREC_MAX_BODY - HM__JREC_FIXED - 4 * (size_t)bb->nparts)
			return HM_ETOOBIG;
		bb->part_len[bb->part] = (uint32_t)(bb->pb.len - bb->part_off[bb->part]);
		bb->part++;
	}
	return 0;
}

int hm__batch_end(struct hm__batch_builder *bb, const uint8_t req_id[16], const uint8_t digest[16],
		  uint32_t apps, uint32_t domains, uint32_t dynos, struct hm__batch **out)
{
	struct hm__batch *b;
	size_t head_len = HM__JREC_HEAD + HM__JREC_FIXED + 4 * (size_t)bb->nparts;
	char *head, *body;
	uint32_t crc;

	if (bb->part != bb->nparts || bb->left != 0) {
		hm__batch_builder_fini(bb);
		return HM_EARITY;
	}
	if ((b = calloc(1, sizeof(*b))) == NULL || (head = calloc(1, head_len)) == NULL) {
		free(b);
		hm__batch_builder_fini(bb);
		return -ENOMEM;
	}
	body = head + HM__JREC_HEAD;
	hm__put_le64(body, bb->seq);
	hm__put_le64(body + 8, bb->ts_ms);
	memcpy(body + 16, req_id, 16);
	memcpy(body + 32, digest, 16);
	hm__put_le32(body + 48, apps);
	hm__put_le32(body + 52, domains);
	hm__put_le32(body + 56, dynos);
	hm__put_le32(body + 60, bb->nparts);
	for (uint32_t i = 0; i < bb->nparts; i++)
		hm__put_le32(body + HM__JREC_FIXED + 4 * (size_t)i, bb->part_len[i]);
	crc = hm_crc32c(0, body, head_len - HM__JREC_HEAD);
	crc = hm_crc32c(crc, bb->pb.data, bb->pb.len);
	hm__put_le32(head, HM__JREC_MAGIC);
	hm__put_le32(head + 4, (uint32_t)(head_len - HM__JREC_HEAD + bb->pb.len));
	hm__put_le32(head + 8, crc);
	hm__put_le32(head + 12, HM__JREC_KIND_BATCH);

	atomic_init(&b->refs, 1);
	b->seq = bb->seq;
	b->ts_ms = bb->ts_ms;
	memcpy(b->req_id, req_id, 16);
	memcpy(b->digest, digest, 16);
	b->apps = apps;
	b->domains = domains;
	b->dynos = dynos;
	b->nparts = bb->nparts;
	b->head = head;
	b->head_len = head_len;
	b->data = hm_pbuf_take(&bb->pb, &b->data_len);
	b->rec_len = head_len + b->data_len;
	b->part_off = bb->part_off;
	b->part_len = bb->part_len;
	bb->part_off = NULL;
	bb->part_len = NULL;
	hm__batch_builder_fini(bb);
	*out = b;
	return 0;
}

char *hm__batch_flatten(const struct hm__batch *b)
{
	char *r = malloc(b->rec_len);

	if (r != NULL) {
		memcpy(r, b->head, b->head_len);
		memcpy(r + b->head_len, b->data, b->data_len);
	}
	return r;
}

int hm__jrec_check(const void *p, size_t avail, size_t max_body, size_t *len)
{
	const char *r = p;
	uint32_t body_len;

	if (avail < HM__JREC_HEAD)
		return 0;
	if (hm__le32(r) != HM__JREC_MAGIC || hm__le32(r + 12) != HM__JREC_KIND_BATCH)
		return HM_ECORRUPT;
	body_len = hm__le32(r + 4);
	if (body_len < HM__JREC_FIXED || body_len > max_body)
		return HM_ECORRUPT;
	if (avail - HM__JREC_HEAD < body_len)
		return 0;
	if (hm_crc32c(0, r + HM__JREC_HEAD, body_len) != hm__le32(r + 8))
		return HM_ECORRUPT;
	*len = HM__JREC_HEAD + (size_t)body_len;
	return 1;
}

int hm__batch_from_record(char *rec, size_t len, struct hm__batch **out)
{
	const char *body = rec + HM__JREC_HEAD;
	size_t body_len = len - HM__JREC_HEAD, off;
	struct hm__batch *b;
	uint32_t nparts;

	if (len < HM__JREC_HEAD + HM__JREC_FIXED)
		return HM_ECORRUPT;
	nparts = hm__le32(body + 60);
	if (nparts == 0 || nparts > HM_PROTO_MAX_PARTS || (body_len - HM__JREC_FIXED) / 4 < nparts)
		return HM_ECORRUPT;
	if ((b = calloc(1, sizeof(*b))) == NULL)
		return -ENOMEM;
	b->part_off = malloc(nparts * sizeof(*b->part_off));
	b->part_len = malloc(nparts * sizeof(*b->part_len));
	if (b->part_off == NULL || b->part_len == NULL) {
		free(b->part_off);
		free(b->part_len);
		free(b);
		return -ENOMEM;
	}
	off = HM__JREC_HEAD + HM__JREC_FIXED + 4 * (size_t)nparts;
	for (uint32_t i = 0; i < nparts; i++) {
		uint32_t pl = hm__le32(body + HM__JREC_FIXED + 4 * (size_t)i);
		size_t head_len = HM__JREC_HEAD + HM__JREC_FIXED + 4 * (size_t)nparts;

		if (pl == 0 || pl > len - off) {
			free(b->part_off);
			free(b->part_len);
			free(b);
			return HM_ECORRUPT;
		}
		b->part_off[i] = off - head_len;
		b->part_len[i] = pl;
		off += pl;
	}
	if (off != len) {
		free(b->part_off);
		free(b->part_len);
		free(b);
		return HM_ECORRUPT;
	}
	atomic_init(&b->refs, 1);
	b->seq = hm__le64(body);
	b->ts_ms = hm__le64(body + 8);
	memcpy(b->req_id, body + 16, 16);
	memcpy(b->digest, body + 32, 16);
	b->apps = hm__le32(body + 48);
	b->domains = hm__le32(body + 52);
	b->dynos = hm__le32(body + 56);
	b->nparts = nparts;
	b->head = rec;
	b->head_len = HM__JREC_HEAD + HM__JREC_FIXED + 4 * (size_t)nparts;
	b->data = rec + b->head_len;
	b->data_len = len - b->head_len;
	b->data_in_head = true;
	b->rec_len = len;
	*out = b;
	return 0;
}
