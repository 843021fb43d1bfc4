/*
 * The wire protocol between hermodctl, hermod-syncd origin and hermod-syncd edge: msgpack
 * messages, each an array that starts with [type, schema version]. docs/protocol.md describes
 * every message field by field. This module encodes and decodes only: no sockets, no event
 * loop, no logging.
 *
 * Decoding is strict and total: every field's type and range is checked, names are checked
 * against the contract's grammar (hm_change_check), lengths are bounded. A message that fails is
 * reported with a distinct code and nothing of it is returned:
 *   HM_ETRUNC    the bytes end inside the message
 *   HM_ETYPE     a field has the wrong msgpack type
 *   HM_ERANGE    a number is out of its range, or an enum value is unknown
 *   HM_ETOOBIG   the message, a string or an array is over its bound
 *   HM_EARITY    an array has the wrong number of elements for its type and version
 *   HM_EUNKNOWN  the type is not one this build knows
 *   HM_EVERSION  a known type with a newer schema version than this build speaks (skip, count)
 *   HM_ETRAILING bytes follow the message
 *   the hm_change_check() codes (HM_EAPPNAME, ...) for a change that breaks the grammar,
 *   including an unknown op, state or balance value (HM_EOP, HM_ESTATE, HM_EBALANCE), a
 *   non-put change inside a snapshot (HM_EOP), and a secret op in a control request or in a
 *   version-1 BATCH or SNAPSHOT_REP (HM_EOP).
 * The rules, field by field, are in docs/protocol.md; hm_proto_decode_error() says where a
 * failed decode stopped.
 */
#ifndef HM_PROTO_PROTO_H
#define HM_PROTO_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

/* The schema version of every message type but BATCH and SNAPSHOT_REP, which are at 3 (secret
 * ops, then certificate ops), and CTL_REQ and CTL_REP, at 2 (certificate ops, ACK warnings);
 * hm_proto_version() gives each type's. */
#define HM_PROTO_VERSION 1

/* Bounds. A receiver sets NNG_OPT_RECVMAXSZ to HM_PROTO_MAX_MSG. */
#define HM_PROTO_MAX_MSG     (4u << 20) /* bytes in one message */
#define HM_PROTO_MAX_CHANGES 16384u	/* changes in one message (batch part, chunk, ctl part) */
#define HM_PROTO_MAX_PARTS   65536u	/* parts of one batch: 1 G changes */
#define HM_PROTO_MAX_BATCHES 4096u	/* batch parts in one catch-up reply */
#define HM_PROTO_MAX_REASON  1024u	/* bytes of an error reason */
/*
 * Bytes of one message's encoded changes (the elements of its change array). The headroom under
 * HM_PROTO_MAX_MSG holds any head around them, so the changes of a CTL_REQ part always fit one
 * BATCH part, and any BATCH fits a catch-up reply on its own. Pack parts by
 * hm_proto_change_size() to stay under it.
 */
#define HM_PROTO_MAX_LIST (HM_PROTO_MAX_MSG - 4096u)

enum hm_msg_type {
	HM_MSG_BATCH = 1,	 /* origin -> edges (PUB), and inside catch-up replies */
	HM_MSG_HEARTBEAT = 2,	 /* origin -> edges (PUB), every second */
	HM_MSG_CATCHUP_REQ = 3,	 /* edge -> origin (sync REQ) */
	HM_MSG_CATCHUP_REP = 4,	 /* origin -> edge */
	HM_MSG_SNAPSHOT_REQ = 5, /* edge -> origin (sync REQ) */
	HM_MSG_SNAPSHOT_REP = 6, /* origin -> edge */
	HM_MSG_CTL_REQ = 7,	 /* hermodctl -> origin (control REQ) */
	HM_MSG_CTL_REP = 8,	 /* origin -> hermodctl */
};

/*
 * One part of a numbered batch. A batch is atomic: an edge applies it only when it holds all
 * nparts parts (part = 0 .. nparts-1, each at most HM_PROTO_MAX_CHANGES changes).
 */
struct hm_batch_part {
	uint64_t seq;
	uint64_t ts_ms; /* wall-clock ms when the origin accepted the batch */
	uint32_t part;
	uint32_t nparts;
	uint32_t nchanges;
	struct hm_change *changes; /* decoded: owned by the decoder; strings borrow the input;
				      may be NULL when nchanges is 0 */
};

enum hm_catchup_status {
	HM_CATCHUP_OK = 0, /* parts follow (possibly none: the edge is up to date) */
	HM_CATCHUP_SNAPSHOT =
	    1, /* the origin no longer holds what follows after_seq: take a snapshot */
	HM_CATCHUP_EPOCH = 2, /* the edge's epoch is not the origin's: take a snapshot */
};

enum hm_ctl_status {
	HM_CTL_ACK = 0,	   /* the whole request is durable as (epoch, seq) */
	HM_CTL_STAGED = 1, /* a part of a multi-part request was received; send the next */
	HM_CTL_ERROR = 2,  /* rejected: code, reason and index say why; nothing changed */
};

struct hm_msg {
	uint8_t type;	  /* enum hm_msg_type */
	uint32_t version; /* HM_PROTO_VERSION for everything this build decodes */
	union {
		struct {
			uint64_t epoch;
			struct hm_batch_part b;
		} batch;
		struct {
			uint64_t epoch;
			uint64_t seq; /* last batch the origin made durable */
			uint64_t ts_ms;
			uint8_t digest[16]; /* of the origin's state at seq */
		} heartbeat;
		struct {
			uint64_t epoch;	    /* the edge's epoch (0 if it has none) */
			uint64_t after_seq; /* the edge holds every batch <= after_seq */
			uint32_t from_part; /* and parts < from_part of batch after_seq + 1 */
		} catchup_req;
		struct {
			uint64_t epoch;	   /* the origin's */
			uint64_t head_seq; /* the origin's last seq when it answered */
			uint8_t status;	   /* enum hm_catchup_status */
			bool more;	   /* parts remain after these: ask again */
			uint32_t nparts;
			struct hm_batch_part *parts; /* in order; owned by the decoder */
		} catchup_rep;
		struct {
			uint64_t snap_id; /* 0: the latest snapshot; else the one being fetched */
			uint32_t chunk;
		} snapshot_req;
		struct {
			uint64_t epoch;
			uint64_t seq; /* the snapshot is the whole state at this seq */
			uint64_t snap_id;
			uint32_t chunk;
			uint32_t nchunks;
			uint32_t apps, domains,
			    dynos;	    /* totals in the whole snapshot (for sizing) */
			uint8_t digest[16]; /* of the whole state at seq */
			/* Version >= 4: the certificates in the whole snapshot and the bytes of
			 * store heap they took on the origin (for sizing the store once); 0 in
			 * older versions, which do not say. */
			uint32_t certs;
			uint64_t cert_heap;
			uint32_t nchanges;
			struct hm_change *changes; /* put changes only; owned by the decoder */
		} snapshot_rep;
		struct {
			uint8_t req_id[16]; /* random per request: retries are answered, not
					       re-applied */
			uint32_t part;
			uint32_t nparts;
			uint32_t nchanges;
			struct hm_change *changes; /* owned by the decoder */
		} ctl_req;
		struct {
			uint8_t req_id[16];
			uint8_t status; /* enum hm_ctl_status */
			uint64_t epoch; /* ACK: where the request was made durable */
			uint64_t seq;
			int32_t code;	/* ERROR: an hm_errno or negative errno */
			uint32_t index; /* ERROR: index of the offending change in the request, or
					   UINT32_MAX if no single change is at fault */
			const char *reason; /* ERROR: human-readable (ACK: its warnings, if any),
					       borrowed from the input, not NUL-terminated, bytes
					       unchecked: escape to print */
			uint32_t reason_len;
		} ctl_rep;
	};
};

/* The schema version this build writes (and the newest it reads) of a message type; 0 for a
 * type it does not know. */
uint32_t hm_proto_version(uint8_t type);

/* ---- Decoding ---------------------------------------------------------------------------- */

struct hm_proto_decoder; /* reusable; keeps its buffers between messages; one thread at a time */

/* Returns 0 or -ENOMEM. hm_proto_decoder_free(NULL) does nothing. */
int hm_proto_decoder_new(struct hm_proto_decoder **out);
void hm_proto_decoder_free(struct hm_proto_decoder *d);

/*
 * Decodes one message of len bytes. On success returns 0 and fills *out; arrays in *out are
 * owned by d and valid until the next decode on d; strings point into buf, which must outlive
 * their use. On failure returns one of the codes above, and *out is unspecified.
 */
int hm_proto_decode(struct hm_proto_decoder *d, const void *buf, size_t len, struct hm_msg *out);

/*
 * What was known when the last hm_proto_decode() on d failed, so that the origin can answer a
 * bad control request with its req_id and the index of the change at fault, and a receiver can
 * count failures by type. Meaningless after a successful decode.
 */
struct hm_proto_error {
	uint8_t type;	 /* the message type if the head was read and the type is known, else 0 */
	bool has_req_id; /* CTL_REQ, CTL_REP: req_id was read before the failure */
	uint8_t req_id[16];
	uint32_t change; /* BATCH, SNAPSHOT_REP, CTL_REQ: index in the message's change array of
			    the change at fault; UINT32_MAX if the failure is not in one change */
};
void hm_proto_decode_error(const struct hm_proto_decoder *d, struct hm_proto_error *out);

/*
 * Reads only the [type, version] head: for counting or routing a message without decoding it.
 * Any type and version that fit the out fields are returned, known or not; nothing after the
 * head is read and len is not checked against HM_PROTO_MAX_MSG. Returns 0, HM_ETRUNC, HM_ETYPE,
 * HM_EARITY (an array of fewer than two elements) or HM_ERANGE (a negative number, a type over
 * 255 or a version over UINT32_MAX).
 */
int hm_proto_peek(const void *buf, size_t len, uint8_t *type, uint32_t *version);

/* ---- Encoding ---------------------------------------------------------------------------- */

/* A growable output buffer. Zero-initialise, encode, use data/len, hm_pbuf_fini(). */
struct hm_pbuf {
	char *data; /* owned */
	size_t len;
	size_t cap;
	/* Private to proto.c: the message being built by hm_proto_begin_* and hm_proto_add_*. */
	struct {
		size_t start;	/* offset of the message in data */
		size_t list;	/* offset of the first change of the current change array */
		uint64_t epoch; /* catch-up reply: the reply's epoch and head_seq */
		uint64_t head_seq;
		uint64_t prev_seq; /* catch-up reply: the last part added */
		uint32_t prev_part, prev_nparts;
		uint32_t left; /* items still to add */
		uint8_t kind;  /* what hm_proto_add_* may add */
		bool have_prev;
	} build;
};
void hm_pbuf_reset(struct hm_pbuf *b); /* len = 0, keeps the memory; abandons a message in steps */
void hm_pbuf_fini(struct hm_pbuf *b);
/* Hands the buffer's memory to the caller (free() it; NULL if nothing was ever written); b is
 * left empty. */
char *hm_pbuf_take(struct hm_pbuf *b, size_t *len);

/*
 * Each encoder appends one whole message to b and returns 0, or:
 *   -ENOMEM
 *   HM_ETOOBIG   the message would break a size bound above (HM_PROTO_MAX_MSG, _CHANGES,
 *                _BATCHES, _REASON, _LIST): whatever the decoder would reject for size
 *   HM_ERANGE    an argument the decoder would reject by range (epoch 0, part >= nparts, ...;
 *                docs/protocol.md lists them)
 *   HM_EARITY    a message being built in steps is not complete yet (see below)
 * On failure b holds what it held before the message began. The changes are not re-checked
 * against the grammar: encode what you have checked (an op outside enum hm_op is HM_EOP).
 */
int hm_proto_encode_batch(struct hm_pbuf *b, uint64_t epoch, const struct hm_batch_part *p);
int hm_proto_encode_heartbeat(struct hm_pbuf *b, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
			      const uint8_t digest[16]);
int hm_proto_encode_catchup_req(struct hm_pbuf *b, uint64_t epoch, uint64_t after_seq,
				uint32_t from_part);
int hm_proto_encode_snapshot_req(struct hm_pbuf *b, uint64_t snap_id, uint32_t chunk);
int hm_proto_encode_ctl_req(struct hm_pbuf *b, const uint8_t req_id[16], uint32_t part,
			    uint32_t nparts, const struct hm_change *changes, uint32_t nchanges);
int hm_proto_encode_ctl_ack(struct hm_pbuf *b, const uint8_t req_id[16], uint64_t epoch,
			    uint64_t seq);
/* An ACK with warnings (one line each, '\n'-separated, at most HM_PROTO_MAX_REASON bytes): what
 * the origin accepted but the operator should know (a certificate about to expire). */
int hm_proto_encode_ctl_ack_warn(struct hm_pbuf *b, const uint8_t req_id[16], uint64_t epoch,
				 uint64_t seq, const char *warnings, size_t len);
int hm_proto_encode_ctl_staged(struct hm_pbuf *b, const uint8_t req_id[16]);
int hm_proto_encode_ctl_error(struct hm_pbuf *b, const uint8_t req_id[16], int32_t code,
			      uint32_t index, const char *reason, size_t reason_len);

/*
 * Messages that carry many items are built in steps, so a large batch, catch-up reply or
 * snapshot chunk is never held twice:
 *   hm_proto_begin_catchup_rep(b, epoch, head_seq, status, more, nparts), then exactly nparts
 *   times: hm_proto_add_catchup_part(b, p) — or hm_proto_add_catchup_raw(b, msg, len) with a
 *   BATCH message as encoded by hm_proto_encode_batch() (e.g. read from the journal; its epoch
 *   must be the reply's).
 *   hm_proto_begin_snapshot_rep(b, ..., nchanges), then nchanges times hm_proto_add_change(b, c).
 * The caller must add exactly the announced number of items; the decoder rejects anything else.
 * An add beyond the announced number (or with no message begun) returns HM_EARITY; so does any
 * other encoder called on b before the message is complete (hm_pbuf_reset() abandons it).
 * hm_proto_add_catchup_part/raw also return HM_ERANGE for a part that does not follow the
 * previous one (same seq and the next part, or the next seq and part 0), a seq after head_seq,
 * or (raw) another epoch; hm_proto_add_catchup_raw checks the whole message, as the decoder
 * would, and returns the decoder's code if it is not one valid BATCH. hm_proto_add_change on a
 * snapshot returns HM_EOP for a change that is not a put. A failed add removes the whole message
 * being built from b; further adds return HM_EARITY.
 */
int hm_proto_begin_catchup_rep(struct hm_pbuf *b, uint64_t epoch, uint64_t head_seq, uint8_t status,
			       bool more, uint32_t nparts);
int hm_proto_add_catchup_part(struct hm_pbuf *b, const struct hm_batch_part *p);
int hm_proto_add_catchup_raw(struct hm_pbuf *b, const void *batch_msg, size_t len);

struct hm_snapshot_head {
	uint64_t epoch, seq, snap_id;
	uint32_t chunk, nchunks;
	uint32_t apps, domains, dynos;
	uint8_t digest[16];
	uint32_t certs;	    /* version >= 4 */
	uint64_t cert_heap; /* version >= 4 */
	uint8_t version;    /* 0: this build's; 3: the version before certs and cert_heap */
};
int hm_proto_begin_snapshot_rep(struct hm_pbuf *b, const struct hm_snapshot_head *h,
				uint32_t nchanges);
int hm_proto_begin_batch(struct hm_pbuf *b, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
			 uint32_t part, uint32_t nparts, uint32_t nchanges);
int hm_proto_add_change(struct hm_pbuf *b, const struct hm_change *c);

/*
 * The bytes an encoder spends on c (0 for an op outside enum hm_op). A sender fills a part up to
 * HM_PROTO_MAX_LIST bytes of changes and HM_PROTO_MAX_CHANGES changes, then starts the next.
 */
size_t hm_proto_change_size(const struct hm_change *c);

#endif
