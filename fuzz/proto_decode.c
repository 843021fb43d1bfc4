/*
 * libFuzzer target for proto/: feeds arbitrary bytes to hm_proto_decode() and hm_proto_peek(),
 * and aborts on anything the contract in proto/proto.h forbids, not only on memory errors:
 *   - a result that is neither 0 nor a negative code;
 *   - an accepted message the encoders refuse, or whose re-encoding is not a fixed point
 *     (encode, decode, encode again: the same bytes);
 *   - a verdict that depends on what the decoder decoded before (a fresh one and one that
 *     has decoded the corpus so far must agree);
 *   - hm_proto_add_catchup_raw() and the decoder disagreeing about a BATCH: the origin relays
 *     journal records with it, so anything it accepts an edge must accept, and the reverse.
 * The whole input is one message, so a corpus of real messages is the best start.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

static struct hm_proto_decoder *dec, *dec2;

static void require(int cond)
{
	if (!cond)
		abort();
}

static int encode(struct hm_pbuf *b, const struct hm_msg *m)
{
	struct hm_snapshot_head h;
	int rc;

	switch (m->type) {
	case HM_MSG_BATCH:
		return hm_proto_encode_batch(b, m->batch.epoch, &m->batch.b);
	case HM_MSG_HEARTBEAT:
		return hm_proto_encode_heartbeat(b, m->heartbeat.epoch, m->heartbeat.seq,
						 m->heartbeat.ts_ms, m->heartbeat.digest);
	case HM_MSG_CATCHUP_REQ:
		return hm_proto_encode_catchup_req(
		    b, m->catchup_req.epoch, m->catchup_req.after_seq, m->catchup_req.from_part);
	case HM_MSG_CATCHUP_REP:
		rc = hm_proto_begin_catchup_rep(b, m->catchup_rep.epoch, m->catchup_rep.head_seq,
						m->catchup_rep.status, m->catchup_rep.more,
						m->catchup_rep.nparts);
		for (uint32_t i = 0; rc == 0 && i < m->catchup_rep.nparts; i++)
			rc = hm_proto_add_catchup_part(b, &m->catchup_rep.parts[i]);
		return rc;
	case HM_MSG_SNAPSHOT_REQ:
		return hm_proto_encode_snapshot_req(b, m->snapshot_req.snap_id,
						    m->snapshot_req.chunk);
	case HM_MSG_SNAPSHOT_REP:
		h = (struct hm_snapshot_head){.epoch = m->snapshot_rep.epoch,
					      .seq = m->snapshot_rep.seq,
					      .snap_id = m->snapshot_rep.snap_id,
					      .chunk = m->snapshot_rep.chunk,
					      .nchunks = m->snapshot_rep.nchunks,
					      .apps = m->snapshot_rep.apps,
					      .domains = m->snapshot_rep.domains,
					      .dynos = m->snapshot_rep.dynos,
					      .certs = m->snapshot_rep.certs,
					      .cert_heap = m->snapshot_rep.cert_heap,
					      /* 3 stays 3 (no count); 1 and 2 become this
					       * build's */
					      .version = m->version == 3 ? 3 : 0};
		memcpy(h.digest, m->snapshot_rep.digest, 16);
		rc = hm_proto_begin_snapshot_rep(b, &h, m->snapshot_rep.nchanges);
		for (uint32_t i = 0; rc == 0 && i < m->snapshot_rep.nchanges; i++)
			rc = hm_proto_add_change(b, &m->snapshot_rep.changes[i]);
		return rc;
	case HM_MSG_CTL_REQ:
		return hm_proto_encode_ctl_req(b, m->ctl_req.req_id, m->ctl_req.part,
					       m->ctl_req.nparts, m->ctl_req.changes,
					       m->ctl_req.nchanges);
	case HM_MSG_CTL_REP:
		if (m->ctl_rep.status == HM_CTL_ACK)
			return hm_proto_encode_ctl_ack(b, m->ctl_rep.req_id, m->ctl_rep.epoch,
						       m->ctl_rep.seq);
		if (m->ctl_rep.status == HM_CTL_STAGED)
			return hm_proto_encode_ctl_staged(b, m->ctl_rep.req_id);
		return hm_proto_encode_ctl_error(b, m->ctl_rep.req_id, m->ctl_rep.code,
						 m->ctl_rep.index, m->ctl_rep.reason,
						 m->ctl_rep.reason_len);
	default:
		abort();
	}
}

/* Whether the bytes pass hm_proto_add_catchup_raw() as a part of a reply in epoch. */
static int raw_ok(const uint8_t *data, size_t size, uint64_t epoch)
{
	struct hm_pbuf b = {0};
	struct hm_msg m;
	int rc;

	require(hm_proto_begin_catchup_rep(&b, epoch, UINT64_MAX, HM_CATCHUP_OK, false, 1) == 0);
	rc = hm_proto_add_catchup_raw(&b, data, size);
	require(rc <= 0);
	if (rc == 0)
		require(hm_proto_decode(dec2, b.data, b.len, &m) == 0);
	else
		require(b.len == 0);
	hm_pbuf_fini(&b);
	return rc == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hm_pbuf once = {0}, twice = {0};
	struct hm_msg m, again;
	uint32_t version;
	uint8_t type;
	bool is_batch;
	int rc;

	if (dec == NULL)
		require(hm_proto_decoder_new(&dec) == 0 && hm_proto_decoder_new(&dec2) == 0);
	require(hm_proto_peek(data, size, &type, &version) <= 0);
	/* A decoder's first message decodes as it does after others (the shared decoders have
	 * arrays from earlier inputs; a fresh one has none: fuzz/corpus/proto_decode/
	 * catchup-rep-no-changes, under clang's UBSan). */
	{
		struct hm_proto_decoder *fresh = NULL;
		struct hm_msg f;

		require(hm_proto_decoder_new(&fresh) == 0);
		rc = hm_proto_decode(fresh, data, size, &f);
		hm_proto_decoder_free(fresh);
	}
	require(hm_proto_decode(dec, data, size, &m) == rc);
	require(rc <= 0);
	/* The decoder's verdict on a BATCH and the origin's on the same journal record agree. */
	is_batch = rc == 0 && m.type == HM_MSG_BATCH;
	require(raw_ok(data, size, is_batch ? m.batch.epoch : 1) == is_batch);
	if (rc != 0)
		return 0;
	require(encode(&once, &m) == 0);
	require(hm_proto_decode(dec2, once.data, once.len, &again) == 0);
	require(encode(&twice, &again) == 0);
	require(once.len == twice.len && memcmp(once.data, twice.data, once.len) == 0);
	hm_pbuf_fini(&once);
	hm_pbuf_fini(&twice);
	return 0;
}
