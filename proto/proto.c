/*
 * The wire protocol: msgpack encoding with msgpack-c's packer, and a strict decoder of our own.
 *
 * Encoding goes through msgpack_packer with a write callback that appends to a struct hm_pbuf.
 * The callback also enforces HM_PROTO_MAX_MSG, so an encoder never grows a buffer past what a
 * receiver would accept, and every encoder rolls the buffer back to where its message began when
 * anything fails: b never holds part of a message. Messages with many items (a batch, a
 * catch-up reply, a snapshot chunk) are built in steps, with the state of the message being built
 * kept in hm_pbuf.build, so the caller never holds the items twice.
 *
 * Decoding does not use msgpack-c. msgpack_unpack_next() builds an object tree in a zone (up to
 * ~24 bytes per element, so ~100 MB for a 4 MiB message of tiny elements) and folds every
 * failure into one code. Instead a cursor walks the input once, driven by the schema: each read
 * (rd_array, rd_uint, rd_str, ...) checks the marker byte (HM_ETYPE), that the bytes are there
 * (HM_ETRUNC) and the bound, and the caller checks the range. Because the schema drives every
 * read, there is no generic "skip a value" and no recursion: nesting is at most five arrays deep
 * (catch-up reply > batches > batch > changes > change), whatever the input says. Strings are
 * borrowed from the input; change and part arrays live in the decoder and are reused, growing to
 * the largest message seen: a struct hm_change is 48 bytes and the smallest valid change 4, so
 * at most 12 bytes per input byte (24 with the doubling).
 *
 * The same reader, without a decoder to store into, checks a journal record handed to
 * hm_proto_add_catchup_raw(), so the origin never sends a catch-up reply an edge would reject.
 */
#include "proto/proto.h"

#include <errno.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"

/* Elements of each message array and of each change array, by type and op. */
static const uint8_t msg_arity[] = {
    [HM_MSG_BATCH] = 8,	      [HM_MSG_HEARTBEAT] = 6,	 [HM_MSG_CATCHUP_REQ] = 5,
    [HM_MSG_CATCHUP_REP] = 7, [HM_MSG_SNAPSHOT_REQ] = 4, [HM_MSG_SNAPSHOT_REP] = 14,
    [HM_MSG_CTL_REQ] = 6,     [HM_MSG_CTL_REP] = 9,
};
#define MSG_TYPE_MAX HM_MSG_CTL_REP

/* The schema version this build writes, and the newest it reads, of each type. Version 2 of
 * BATCH and SNAPSHOT_REP adds the secret ops, version 3 the certificate ops, version 4 of
 * SNAPSHOT_REP the certificate count and heap bytes (two more elements); version 2 of CTL_REQ
 * adds the certificate ops, and of CTL_REP an ACK's warnings (in its reason). */
static const uint8_t msg_version[] = {
    [HM_MSG_BATCH] = 3,	      [HM_MSG_HEARTBEAT] = 1,	 [HM_MSG_CATCHUP_REQ] = 1,
    [HM_MSG_CATCHUP_REP] = 1, [HM_MSG_SNAPSHOT_REQ] = 1, [HM_MSG_SNAPSHOT_REP] = 4,
    [HM_MSG_CTL_REQ] = 2,     [HM_MSG_CTL_REP] = 2,
};

/* SNAPSHOT_REP's arity before version 4, which still arrives from snapshot files written then. */
#define SNAPSHOT_REP_V3_ARITY 12

/* The elements of a message array of type and version (read: version <= msg_version[type]). */
static unsigned arity_of(uint8_t type, uint64_t version)
{
	if (type == HM_MSG_SNAPSHOT_REP && version < 4)
		return SNAPSHOT_REP_V3_ARITY;
	return msg_arity[type];
}

static const uint8_t change_arity[] = {
    [HM_OP_APP_PUT] = 5,  [HM_OP_APP_RM] = 2,  [HM_OP_DOMAIN_PUT] = 3, [HM_OP_DOMAIN_RM] = 2,
    [HM_OP_DYNO_PUT] = 5, [HM_OP_DYNO_RM] = 3, [HM_OP_SECRET_PUT] = 3, [HM_OP_SECRET_RM] = 2,
    [HM_OP_CERT_PUT] = 7, [HM_OP_CERT_RM] = 2,
};
/* A control client's cert.put: [9, name, cert, key] (the origin derives the rest). */
#define CTL_CERT_PUT_ARITY 4

/* Which ops a change list may hold (a bit per op), by message type and version. */
#define OP_BIT(op) (1u << (op))
#define OPS_PUTS   (OP_BIT(HM_OP_APP_PUT) | OP_BIT(HM_OP_DOMAIN_PUT) | OP_BIT(HM_OP_DYNO_PUT))
#define OPS_ROUTING                                                                                \
	(OPS_PUTS | OP_BIT(HM_OP_APP_RM) | OP_BIT(HM_OP_DOMAIN_RM) | OP_BIT(HM_OP_DYNO_RM))
#define OPS_SECRETS (OP_BIT(HM_OP_SECRET_PUT) | OP_BIT(HM_OP_SECRET_RM))
#define OPS_CERTS   (OP_BIT(HM_OP_CERT_PUT) | OP_BIT(HM_OP_CERT_RM))

static unsigned ops_allowed(uint8_t type, uint64_t version)
{
	unsigned ops = OPS_ROUTING;

	switch (type) {
	case HM_MSG_BATCH:
		if (version >= 2)
			ops |= OPS_SECRETS;
		return version >= 3 ? ops | OPS_CERTS : ops;
	case HM_MSG_SNAPSHOT_REP:
		ops = version >= 2 ? OPS_PUTS | OP_BIT(HM_OP_SECRET_PUT) : OPS_PUTS;
		return version >= 3 ? ops | OP_BIT(HM_OP_CERT_PUT) : ops;
	default: /* CTL_REQ: secrets are the origin's own; no client may send one */
		return version >= 2 ? ops | OPS_CERTS : ops;
	}
}

uint32_t hm_proto_version(uint8_t type)
{
	return type >= 1 && type <= MSG_TYPE_MAX ? msg_version[type] : 0;
}

/* The longest hostname string the grammar can accept: "*." + HM_HOST_MAX + ".". Longer ones are
 * refused before they are stored, because hm_change.name_len is 16 bits. */
#define HOST_STR_MAX (HM_HOST_MAX + 3)

/* A part may follow prev in a catch-up reply: the next part of the same batch, or the first part
 * of the next batch once prev's batch is complete. */
static bool part_follows(uint64_t prev_seq, uint32_t prev_part, uint32_t prev_nparts, uint64_t seq,
			 uint32_t part, uint32_t nparts)
{
	if (prev_part + 1 < prev_nparts)
		return seq == prev_seq && part == prev_part + 1 && nparts == prev_nparts;
	return seq == prev_seq + 1 && part == 0;
}

/* ---- Decoder state ------------------------------------------------------------------------ */

struct hm_proto_decoder {
	struct hm_change *changes; /* owned; every change of the last message, parts back to back */
	size_t changes_cap;
	struct hm_batch_part *parts; /* owned; the parts of the last catch-up reply */
	size_t parts_cap;
	struct hm_proto_error err;
};

int hm_proto_decoder_new(struct hm_proto_decoder **out)
{
	struct hm_proto_decoder *d = calloc(1, sizeof(*d));

	if (d == NULL)
		return -ENOMEM;
	*out = d;
	return 0;
}

void hm_proto_decoder_free(struct hm_proto_decoder *d)
{
	if (d == NULL)
		return;
	free(d->changes);
	free(d->parts);
	free(d);
}

void hm_proto_decode_error(const struct hm_proto_decoder *d, struct hm_proto_error *out)
{
	*out = d->err;
}

/* Makes room for need elements of size bytes. need is bounded by the input length, so the
 * multiplications cannot overflow. */
static int grow(void **arr, size_t *cap, size_t need, size_t size)
{
	size_t ncap = *cap < 64 ? 64 : *cap;
	void *p;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*arr, ncap * size);
	if (p == NULL)
		return -ENOMEM;
	*arr = p;
	*cap = ncap;
	return 0;
}

/* ---- Reading msgpack ---------------------------------------------------------------------- */

struct rd {
	const uint8_t *p;
	const uint8_t *end;
	struct hm_proto_decoder *d; /* NULL: check only, store nothing (hm_proto_add_catchup_raw) */
	size_t used;		    /* entries of d->changes this message has filled */
};

static size_t rd_left(const struct rd *r)
{
	return (size_t)(r->end - r->p);
}

/* Consumes n (1, 2, 4 or 8) big-endian bytes. */
static int rd_be(struct rd *r, unsigned n, uint64_t *v)
{
	uint64_t x = 0;

	if (rd_left(r) < n)
		return HM_ETRUNC;
	for (unsigned i = 0; i < n; i++)
		x = x << 8 | r->p[i];
	r->p += n;
	*v = x;
	return 0;
}

/* Consumes the marker byte. HM_ETRUNC if there is none. */
static int rd_marker(struct rd *r, uint8_t *m)
{
	if (r->p == r->end)
		return HM_ETRUNC;
	*m = *r->p++;
	return 0;
}

/*
 * An integer in any of msgpack's formats: the spec has one integer type, and an encoder may pick
 * a signed format for a non-negative value. *neg says whether the value is below zero; *v is the
 * value, two's complement when negative.
 */
static int rd_integer(struct rd *r, bool *neg, uint64_t *v)
{
	uint8_t m = 0;
	unsigned n;
	int rc;

	if (r->p == r->end)
		return HM_ETRUNC;
	m = *r->p;
	if (m <= 0x7f || m >= 0xe0) {
		r->p++;
		*neg = m >= 0xe0;
		*v = *neg ? (~(uint64_t)0xff | m) : m;
		return 0;
	}
	if (m >= 0xcc && m <= 0xcf) { /* uint 8, 16, 32, 64 */
		r->p++;
		*neg = false;
		return rd_be(r, 1u << (m - 0xcc), v);
	}
	if (m >= 0xd0 && m <= 0xd3) { /* int 8, 16, 32, 64 */
		r->p++;
		n = 1u << (m - 0xd0);
		rc = rd_be(r, n, v);
		if (rc != 0)
			return rc;
		if (n < 8 && (*v >> (8 * n - 1)) != 0)
			*v |= ~(uint64_t)0 << (8 * n);
		*neg = (*v >> 63) != 0;
		return 0;
	}
	return HM_ETYPE;
}

/* A non-negative integer <= max; HM_ERANGE otherwise. */
static int rd_uint(struct rd *r, uint64_t max, uint64_t *v)
{
	bool neg;
	int rc = rd_integer(r, &neg, v);

	if (rc != 0)
		return rc;
	return neg || *v > max ? HM_ERANGE : 0;
}

static int rd_u32(struct rd *r, uint32_t *v)
{
	uint64_t x;
	int rc = rd_uint(r, UINT32_MAX, &x);

	*v = (uint32_t)x;
	return rc;
}

static int rd_u64(struct rd *r, uint64_t *v)
{
	return rd_uint(r, UINT64_MAX, v);
}

/* An epoch or another number that must be at least 1. */
static int rd_u64_pos(struct rd *r, uint64_t *v)
{
	int rc = rd_u64(r, v);

	return rc == 0 && *v == 0 ? HM_ERANGE : rc;
}

static int rd_bool(struct rd *r, bool *v)
{
	uint8_t m = 0;
	int rc = rd_marker(r, &m);

	if (rc != 0)
		return rc;
	if (m != 0xc2 && m != 0xc3)
		return HM_ETYPE;
	*v = m == 0xc3;
	return 0;
}

/* The header of an array of any size; the caller checks the count. */
static int rd_array(struct rd *r, uint32_t *n)
{
	uint8_t m = 0;
	uint64_t v = 0;
	int rc = rd_marker(r, &m);

	if (rc != 0)
		return rc;
	if (m >= 0x90 && m <= 0x9f) {
		*n = m & 0x0f;
		return 0;
	}
	if (m != 0xdc && m != 0xdd)
		return HM_ETYPE;
	rc = rd_be(r, m == 0xdc ? 2 : 4, &v);
	*n = (uint32_t)v;
	return rc;
}

/* An array of at most max elements: a list. Each element takes at least one byte, so a count
 * beyond the bytes left is a truncated (or lying) message: refused before anything is sized
 * from it. */
static int rd_list(struct rd *r, uint32_t max, uint32_t *n)
{
	int rc = rd_array(r, n);

	if (rc != 0)
		return rc;
	if (*n > max)
		return HM_ETOOBIG;
	return *n > rd_left(r) ? HM_ETRUNC : 0;
}

/* The header of a str (want_bin false) or bin, then its bytes, borrowed. */
static int rd_bytes(struct rd *r, bool want_bin, const uint8_t **s, size_t *n)
{
	uint8_t m = 0;
	uint64_t v = 0;
	int rc = rd_marker(r, &m);

	if (rc != 0)
		return rc;
	if (!want_bin && m >= 0xa0 && m <= 0xbf) {
		v = m & 0x1f;
	} else if (!want_bin && m >= 0xd9 && m <= 0xdb) { /* str 8, 16, 32 */
		rc = rd_be(r, 1u << (m - 0xd9), &v);
	} else if (want_bin && m >= 0xc4 && m <= 0xc6) { /* bin 8, 16, 32 */
		rc = rd_be(r, 1u << (m - 0xc4), &v);
	} else {
		return HM_ETYPE;
	}
	if (rc != 0)
		return rc;
	if (v > rd_left(r))
		return HM_ETRUNC;
	*s = r->p;
	*n = (size_t)v;
	r->p += v;
	return 0;
}

static int rd_str(struct rd *r, const char **s, size_t *n)
{
	const uint8_t *p = NULL;
	int rc = rd_bytes(r, false, &p, n);

	*s = (const char *)p;
	return rc;
}

/* A digest or request id: bin of exactly 16 bytes. */
static int rd_bin16(struct rd *r, uint8_t out[16])
{
	const uint8_t *p = NULL;
	size_t n = 0;
	int rc = rd_bytes(r, true, &p, &n);

	if (rc != 0)
		return rc;
	if (n != 16)
		return HM_ERANGE;
	memcpy(out, p, 16);
	return 0;
}

/* ---- Decoding messages -------------------------------------------------------------------- */

/*
 * An enum field of a change: any integer outside 1..max (0..max for balance) is the grammar's
 * code, as hm_change_check() would say for the same value from the command line.
 */
static int rd_enum(struct rd *r, unsigned min, unsigned max, int bad, uint8_t *v)
{
	uint64_t x = 0;
	int rc = rd_uint(r, max, &x);

	if (rc == HM_ERANGE || (rc == 0 && x < min))
		return bad;
	*v = (uint8_t)x;
	return rc;
}

/* A name: max bounds what the change can store (app_len is 8 bits, name_len 16). */
static int rd_name(struct rd *r, size_t max, int too_long, const char **s, size_t *n)
{
	int rc = rd_str(r, s, n);

	if (rc != 0)
		return rc;
	return *n > max ? too_long : 0;
}

/* [9, name, cert, key(, not_after, id, meta)] or [10, name] after the op; full: the origin's
 * record (a BATCH or SNAPSHOT_REP), else a control client's. */
static int rd_cert(struct rd *r, bool full, struct hm_change *c)
{
	const uint8_t *v = NULL;
	const char *s = NULL;
	size_t n = 0;
	bool neg = false;
	uint64_t t = 0;
	int rc;

	if ((rc = rd_name(r, HOST_STR_MAX, HM_EHOSTNAME, &s, &n)) != 0)
		return rc;
	c->name = s;
	c->name_len = (uint16_t)n;
	if (c->op == HM_OP_CERT_RM)
		return hm_change_check(c);
	if ((rc = rd_str(r, &s, &n)) != 0)
		return rc;
	if (n > HM_CERT_CHAIN_MAX)
		return HM_ECERT;
	c->cert = s;
	c->cert_len = (uint32_t)n;
	if ((rc = rd_str(r, &s, &n)) != 0)
		return rc;
	if (n > HM_CERT_KEY_MAX)
		return HM_ECERT;
	c->key = s;
	c->key_len = (uint32_t)n;
	if (full) {
		if ((rc = rd_integer(r, &neg, &t)) != 0)
			return rc;
		if (neg || t > INT64_MAX)
			return HM_ERANGE;
		c->not_after = (int64_t)t;
		if ((rc = rd_bytes(r, true, &v, &n)) != 0)
			return rc;
		if (n != HM_CERT_ID_LEN)
			return HM_ERANGE;
		c->id = v;
		if ((rc = rd_bytes(r, true, &v, &n)) != 0)
			return rc;
		if (n > HM_CERT_META_MAX)
			return HM_ECERT;
		c->meta = v;
		c->meta_len = (uint32_t)n;
	}
	return hm_change_check(c);
}

/* [7, name, value] or [8, name] after the op. */
static int rd_secret(struct rd *r, struct hm_change *c)
{
	const uint8_t *v = NULL;
	const char *s = NULL;
	size_t n = 0;
	int rc;

	if ((rc = rd_name(r, HM_SECRET_NAME_MAX, HM_ESECRET, &s, &n)) != 0)
		return rc;
	c->name = s;
	c->name_len = (uint16_t)n;
	if (c->op == HM_OP_SECRET_PUT) {
		if ((rc = rd_bytes(r, true, &v, &n)) != 0)
			return rc;
		if (n > HM_SECRET_MAX)
			return HM_ESECRET;
		c->value = v;
		c->value_len = (uint16_t)n;
	}
	return hm_change_check(c);
}

static int rd_change(struct rd *r, unsigned ops, struct hm_change *c)
{
	const char *s = NULL, *addr = NULL;
	size_t n = 0, addr_len = 0;
	uint32_t arity = 0;
	int rc;

	memset(c, 0, sizeof(*c));
	if ((rc = rd_array(r, &arity)) != 0)
		return rc;
	if (arity == 0)
		return HM_EARITY;
	if ((rc = rd_enum(r, HM_OP_APP_PUT, HM_OP_MAX, HM_EOP, &c->op)) != 0)
		return rc;
	if (!(ops & OP_BIT(c->op)))
		return HM_EOP;
	if (c->op == HM_OP_CERT_PUT) {
		/* A list that may hold secrets is the origin's; any other is a client's. */
		bool full = (ops & OP_BIT(HM_OP_SECRET_PUT)) != 0;

		if (arity != (full ? change_arity[c->op] : CTL_CERT_PUT_ARITY))
			return HM_EARITY;
		return rd_cert(r, full, c);
	}
	if (arity != change_arity[c->op])
		return HM_EARITY;
	if (c->op == HM_OP_SECRET_PUT || c->op == HM_OP_SECRET_RM)
		return rd_secret(r, c);
	if (c->op == HM_OP_CERT_RM)
		return rd_cert(r, false, c);

	/* Fields come in the order of the contract's commands: "domain put HOSTNAME APP". */
	if (c->op == HM_OP_DOMAIN_PUT || c->op == HM_OP_DOMAIN_RM) {
		if ((rc = rd_name(r, HOST_STR_MAX, HM_EHOSTNAME, &s, &n)) != 0)
			return rc;
		c->name = s;
		c->name_len = (uint16_t)n;
	}
	if (c->op != HM_OP_DOMAIN_RM) {
		if ((rc = rd_name(r, HM_APP_NAME_MAX, HM_EAPPNAME, &s, &n)) != 0)
			return rc;
		c->app = s;
		c->app_len = (uint8_t)n;
	}
	switch (c->op) {
	case HM_OP_APP_PUT:
		if ((rc = rd_bool(r, &c->maintenance)) != 0 || (rc = rd_bool(r, &c->affinity)) != 0)
			return rc;
		if ((rc = rd_enum(r, 0, HM_BALANCE_MAX, HM_EBALANCE, &c->balance)) != 0)
			return rc;
		break;
	case HM_OP_DYNO_PUT:
	case HM_OP_DYNO_RM:
		if ((rc = rd_name(r, HM_DYNO_NAME_MAX, HM_EDYNONAME, &s, &n)) != 0)
			return rc;
		c->name = s;
		c->name_len = (uint16_t)n;
		if (c->op == HM_OP_DYNO_RM)
			break;
		if ((rc = rd_str(r, &addr, &addr_len)) != 0)
			return rc;
		if ((rc = rd_enum(r, HM_DYNO_UP, HM_DYNO_STATE_MAX, HM_ESTATE, &c->state)) != 0)
			return rc;
		if ((rc = hm_addr_parse(addr, addr_len, &c->addr)) != 0)
			return rc;
		break;
	default:
		break;
	}
	return hm_change_check(c);
}

/*
 * A list of changes. They go to d->changes from r->used on; the caller points at them once the
 * whole message is read, since the array may move while it grows. top: the message's own list,
 * whose failing index hm_proto_decode_error() reports.
 */
static int rd_changes(struct rd *r, unsigned ops, bool top, uint32_t *count)
{
	struct hm_proto_decoder *d = r->d;
	struct hm_change scratch;
	const uint8_t *first;
	uint32_t n = 0;
	int rc = rd_list(r, HM_PROTO_MAX_CHANGES, &n);

	if (rc != 0)
		return rc;
	if (d != NULL &&
	    grow((void **)&d->changes, &d->changes_cap, r->used + n, sizeof(*d->changes)) != 0)
		return -ENOMEM;
	first = r->p;
	for (uint32_t i = 0; i < n; i++) {
		rc = rd_change(r, ops, d != NULL ? &d->changes[r->used + i] : &scratch);
		if (rc == 0 && (size_t)(r->p - first) > HM_PROTO_MAX_LIST)
			rc = HM_ETOOBIG;
		if (rc != 0) {
			if (d != NULL && top)
				d->err.change = i;
			return rc;
		}
	}
	if (d != NULL)
		r->used += n;
	*count = n;
	return 0;
}

/* [epoch, seq, ts_ms, part, nparts, [changes]] after a BATCH's [type, version]. */
static int rd_batch_body(struct rd *r, uint64_t version, bool top, uint64_t *epoch,
			 struct hm_batch_part *p)
{
	int rc;

	if ((rc = rd_u64_pos(r, epoch)) != 0 || (rc = rd_u64_pos(r, &p->seq)) != 0 ||
	    (rc = rd_u64(r, &p->ts_ms)) != 0 || (rc = rd_u32(r, &p->part)) != 0 ||
	    (rc = rd_u32(r, &p->nparts)) != 0)
		return rc;
	if (p->nparts == 0 || p->nparts > HM_PROTO_MAX_PARTS || p->part >= p->nparts)
		return HM_ERANGE;
	p->changes = NULL;
	return rd_changes(r, ops_allowed(HM_MSG_BATCH, version), top, &p->nchanges);
}

/* A whole BATCH message inside a catch-up reply (or handed to hm_proto_add_catchup_raw). */
static int rd_embedded_batch(struct rd *r, uint64_t epoch, struct hm_batch_part *p)
{
	uint64_t type = 0, version = 0, batch_epoch = 0;
	uint32_t n = 0;
	int rc;

	if ((rc = rd_array(r, &n)) != 0)
		return rc;
	if (n < 2)
		return HM_EARITY;
	if ((rc = rd_u64(r, &type)) != 0)
		return rc;
	if (type != HM_MSG_BATCH)
		return HM_ERANGE;
	if ((rc = rd_u64(r, &version)) != 0)
		return rc;
	if (version == 0)
		return HM_ERANGE;
	if (version > msg_version[HM_MSG_BATCH])
		return HM_EVERSION;
	if (n != msg_arity[HM_MSG_BATCH])
		return HM_EARITY;
	if ((rc = rd_batch_body(r, version, false, &batch_epoch, p)) != 0)
		return rc;
	return batch_epoch == epoch ? 0 : HM_ERANGE;
}

static int rd_catchup_rep(struct rd *r, struct hm_msg *m)
{
	struct hm_proto_decoder *d = r->d;
	struct hm_batch_part *p, *prev = NULL;
	uint64_t status = 0;
	uint32_t n = 0;
	int rc;

	if ((rc = rd_u64_pos(r, &m->catchup_rep.epoch)) != 0 ||
	    (rc = rd_u64(r, &m->catchup_rep.head_seq)) != 0 ||
	    (rc = rd_uint(r, HM_CATCHUP_EPOCH, &status)) != 0 ||
	    (rc = rd_bool(r, &m->catchup_rep.more)) != 0 ||
	    (rc = rd_list(r, HM_PROTO_MAX_BATCHES, &n)) != 0)
		return rc;
	m->catchup_rep.status = (uint8_t)status;
	/* Only an OK reply carries parts, and "ask again" with nothing would loop forever. */
	if (status != HM_CATCHUP_OK && (n > 0 || m->catchup_rep.more))
		return HM_ERANGE;
	if (m->catchup_rep.more && n == 0)
		return HM_ERANGE;
	if (grow((void **)&d->parts, &d->parts_cap, n, sizeof(*d->parts)) != 0)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++) {
		p = &d->parts[i];
		if ((rc = rd_embedded_batch(r, m->catchup_rep.epoch, p)) != 0)
			return rc;
		if (p->seq > m->catchup_rep.head_seq)
			return HM_ERANGE;
		if (prev != NULL &&
		    !part_follows(prev->seq, prev->part, prev->nparts, p->seq, p->part, p->nparts))
			return HM_ERANGE;
		prev = p;
	}
	m->catchup_rep.nparts = n;
	m->catchup_rep.parts = d->parts;
	return 0;
}

static int rd_snapshot_rep(struct rd *r, struct hm_msg *m)
{
	int rc;

	if ((rc = rd_u64_pos(r, &m->snapshot_rep.epoch)) != 0 ||
	    (rc = rd_u64(r, &m->snapshot_rep.seq)) != 0 ||
	    (rc = rd_u64_pos(r, &m->snapshot_rep.snap_id)) != 0 ||
	    (rc = rd_u32(r, &m->snapshot_rep.chunk)) != 0 ||
	    (rc = rd_u32(r, &m->snapshot_rep.nchunks)) != 0)
		return rc;
	if (m->snapshot_rep.chunk >= m->snapshot_rep.nchunks)
		return HM_ERANGE;
	if ((rc = rd_u32(r, &m->snapshot_rep.apps)) != 0 ||
	    (rc = rd_u32(r, &m->snapshot_rep.domains)) != 0 ||
	    (rc = rd_u32(r, &m->snapshot_rep.dynos)) != 0 ||
	    (rc = rd_bin16(r, m->snapshot_rep.digest)) != 0)
		return rc;
	m->snapshot_rep.certs = 0;
	m->snapshot_rep.cert_heap = 0;
	if (m->version >= 4 && ((rc = rd_u32(r, &m->snapshot_rep.certs)) != 0 ||
				(rc = rd_u64(r, &m->snapshot_rep.cert_heap)) != 0))
		return rc;
	return rd_changes(r, ops_allowed(HM_MSG_SNAPSHOT_REP, m->version), true,
			  &m->snapshot_rep.nchanges);
}

static int rd_ctl_req(struct rd *r, struct hm_msg *m)
{
	int rc;

	if ((rc = rd_bin16(r, m->ctl_req.req_id)) != 0)
		return rc;
	memcpy(r->d->err.req_id, m->ctl_req.req_id, 16);
	r->d->err.has_req_id = true;
	if ((rc = rd_u32(r, &m->ctl_req.part)) != 0 || (rc = rd_u32(r, &m->ctl_req.nparts)) != 0)
		return rc;
	if (m->ctl_req.nparts == 0 || m->ctl_req.nparts > HM_PROTO_MAX_PARTS ||
	    m->ctl_req.part >= m->ctl_req.nparts)
		return HM_ERANGE;
	return rd_changes(r, ops_allowed(HM_MSG_CTL_REQ, m->version), true, &m->ctl_req.nchanges);
}

static int rd_ctl_rep(struct rd *r, struct hm_msg *m)
{
	uint64_t status = 0, code = 0;
	size_t reason_len = 0;
	bool neg = false, ok;
	int rc;

	if ((rc = rd_bin16(r, m->ctl_rep.req_id)) != 0)
		return rc;
	memcpy(r->d->err.req_id, m->ctl_rep.req_id, 16);
	r->d->err.has_req_id = true;
	if ((rc = rd_uint(r, HM_CTL_ERROR, &status)) != 0 ||
	    (rc = rd_u64(r, &m->ctl_rep.epoch)) != 0 || (rc = rd_u64(r, &m->ctl_rep.seq)) != 0 ||
	    (rc = rd_integer(r, &neg, &code)) != 0 || (rc = rd_u32(r, &m->ctl_rep.index)) != 0 ||
	    (rc = rd_str(r, &m->ctl_rep.reason, &reason_len)) != 0)
		return rc;
	if (reason_len > HM_PROTO_MAX_REASON)
		return HM_ETOOBIG;
	m->ctl_rep.status = (uint8_t)status;
	m->ctl_rep.reason_len = (uint32_t)reason_len;
	/* Each status has one shape, so a reply means one thing: an ACK names where the request
	 * became durable; STAGED names nothing; an ERROR has a negative int32 code. */
	if (status == HM_CTL_ERROR) {
		ok = neg && code >= (uint64_t)INT32_MIN && m->ctl_rep.epoch == 0 &&
		     m->ctl_rep.seq == 0;
		/* Two's complement back to a number without an implementation-defined cast. */
		m->ctl_rep.code = ok ? (int32_t)(-(int64_t)~code - 1) : 0;
	} else {
		/* Version 2: an ACK's reason holds its warnings (a certificate about to expire). */
		ok = code == 0 && m->ctl_rep.index == UINT32_MAX &&
		     (reason_len == 0 || (status == HM_CTL_ACK && m->version >= 2)) &&
		     (status == HM_CTL_ACK ? m->ctl_rep.epoch != 0
					   : m->ctl_rep.epoch == 0 && m->ctl_rep.seq == 0);
	}
	return ok ? 0 : HM_ERANGE;
}

static int rd_body(struct rd *r, struct hm_msg *m)
{
	uint64_t x = 0;
	int rc;

	switch (m->type) {
	case HM_MSG_BATCH:
		if ((rc = rd_batch_body(r, m->version, true, &m->batch.epoch, &m->batch.b)) != 0)
			return rc;
		m->batch.b.changes = r->d->changes;
		return 0;
	case HM_MSG_HEARTBEAT:
		if ((rc = rd_u64_pos(r, &m->heartbeat.epoch)) != 0 ||
		    (rc = rd_u64(r, &m->heartbeat.seq)) != 0 ||
		    (rc = rd_u64(r, &m->heartbeat.ts_ms)) != 0)
			return rc;
		return rd_bin16(r, m->heartbeat.digest);
	case HM_MSG_CATCHUP_REQ:
		if ((rc = rd_u64(r, &m->catchup_req.epoch)) != 0 ||
		    (rc = rd_u64(r, &m->catchup_req.after_seq)) != 0 ||
		    (rc = rd_uint(r, HM_PROTO_MAX_PARTS - 1, &x)) != 0)
			return rc;
		m->catchup_req.from_part = (uint32_t)x;
		return 0;
	case HM_MSG_CATCHUP_REP:
		if ((rc = rd_catchup_rep(r, m)) != 0)
			return rc;
		/* Every part's changes were stored back to back; the array no longer moves. */
		for (uint32_t i = 0, at = 0; i < m->catchup_rep.nparts; i++) {
			uint32_t n = m->catchup_rep.parts[i].nchanges;

			/* none: no array may exist yet (NULL + 0 is undefined in C) */
			m->catchup_rep.parts[i].changes = n > 0 ? r->d->changes + at : NULL;
			at += n;
		}
		return 0;
	case HM_MSG_SNAPSHOT_REQ:
		if ((rc = rd_u64(r, &m->snapshot_req.snap_id)) != 0 ||
		    (rc = rd_u32(r, &m->snapshot_req.chunk)) != 0)
			return rc;
		/* "The latest" may change between chunks: later chunks name their snapshot. */
		return m->snapshot_req.snap_id == 0 && m->snapshot_req.chunk != 0 ? HM_ERANGE : 0;
	case HM_MSG_SNAPSHOT_REP:
		if ((rc = rd_snapshot_rep(r, m)) != 0)
			return rc;
		m->snapshot_rep.changes = r->d->changes;
		return 0;
	case HM_MSG_CTL_REQ:
		if ((rc = rd_ctl_req(r, m)) != 0)
			return rc;
		m->ctl_req.changes = r->d->changes;
		return 0;
	case HM_MSG_CTL_REP:
		return rd_ctl_rep(r, m);
	default:
		return HM_EUNKNOWN;
	}
}

int hm_proto_decode(struct hm_proto_decoder *d, const void *buf, size_t len, struct hm_msg *out)
{
	struct rd r = {.d = d};
	uint64_t type = 0, version = 0;
	uint32_t n = 0;
	bool neg = false;
	int rc;

	memset(&d->err, 0, sizeof(d->err));
	d->err.change = UINT32_MAX;
	if (len > HM_PROTO_MAX_MSG)
		return HM_ETOOBIG;
	if (len == 0)
		return HM_ETRUNC;
	r.p = buf;
	r.end = r.p + len;
	memset(out, 0, sizeof(*out));

	if ((rc = rd_array(&r, &n)) != 0)
		return rc;
	if (n < 2)
		return HM_EARITY;
	if ((rc = rd_integer(&r, &neg, &type)) != 0)
		return rc;
	if (neg || type == 0 || type > MSG_TYPE_MAX)
		return HM_EUNKNOWN;
	d->err.type = (uint8_t)type;
	/* A newer version may add fields: its arity is not ours to judge. */
	if ((rc = rd_u64(&r, &version)) != 0)
		return rc;
	if (version == 0)
		return HM_ERANGE;
	if (version > msg_version[type])
		return HM_EVERSION;
	if (n != arity_of((uint8_t)type, version))
		return HM_EARITY;
	out->type = (uint8_t)type;
	out->version = (uint32_t)version;

	if ((rc = rd_body(&r, out)) != 0)
		return rc;
	return r.p == r.end ? 0 : HM_ETRAILING;
}

int hm_proto_peek(const void *buf, size_t len, uint8_t *type, uint32_t *version)
{
	struct rd r = {.d = NULL};
	uint64_t t = 0, v = 0;
	uint32_t n = 0;
	int rc;

	if (len == 0)
		return HM_ETRUNC;
	r.p = buf;
	r.end = r.p + len;
	if ((rc = rd_array(&r, &n)) != 0)
		return rc;
	if (n < 2)
		return HM_EARITY;
	if ((rc = rd_uint(&r, UINT8_MAX, &t)) != 0 || (rc = rd_uint(&r, UINT32_MAX, &v)) != 0)
		return rc;
	*type = (uint8_t)t;
	*version = (uint32_t)v;
	return 0;
}

/* ---- Output buffer ------------------------------------------------------------------------ */

enum build_kind {
	BUILD_NONE = 0,
	BUILD_CHANGES,	/* batch: hm_proto_add_change */
	BUILD_SNAPSHOT, /* snapshot chunk: hm_proto_add_change, puts only */
	BUILD_CATCHUP,	/* catch-up reply: hm_proto_add_catchup_part / _raw */
};

void hm_pbuf_reset(struct hm_pbuf *b)
{
	b->len = 0;
	memset(&b->build, 0, sizeof(b->build));
}

void hm_pbuf_fini(struct hm_pbuf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

char *hm_pbuf_take(struct hm_pbuf *b, size_t *len)
{
	char *data = b->data;

	*len = b->len;
	memset(b, 0, sizeof(*b));
	return data;
}

static int pbuf_reserve(struct hm_pbuf *b, size_t more)
{
	size_t ncap = b->cap < 256 ? 256 : b->cap;
	char *p;

	if (more <= b->cap - b->len)
		return 0;
	if (more > SIZE_MAX / 2 - b->len)
		return -ENOMEM;
	while (ncap - b->len < more)
		ncap *= 2;
	p = realloc(b->data, ncap);
	if (p == NULL)
		return -ENOMEM;
	b->data = p;
	b->cap = ncap;
	return 0;
}

/* ---- Encoding ----------------------------------------------------------------------------- */

/*
 * One message being written: the packer's callback appends to b and keeps the message within
 * HM_PROTO_MAX_MSG from start, and the change array being written (if any) within
 * HM_PROTO_MAX_LIST from list. Without b it only counts (hm_proto_change_size).
 */
struct enc {
	msgpack_packer pk;
	struct hm_pbuf *b;
	size_t start;
	size_t list;  /* NO_LIST outside a change array */
	size_t count; /* bytes written (counted) */
	int err;      /* why the callback refused */
};
#define NO_LIST SIZE_MAX

static int enc_write(void *data, const char *buf, size_t len)
{
	struct enc *e = data;
	struct hm_pbuf *b = e->b;

	e->count += len;
	if (len == 0 || b == NULL)
		return 0;
	if (len > HM_PROTO_MAX_MSG - (b->len - e->start) ||
	    (e->list != NO_LIST && len > HM_PROTO_MAX_LIST - (b->len - e->list))) {
		e->err = HM_ETOOBIG;
		return -1;
	}
	if (pbuf_reserve(b, len) != 0) {
		e->err = -ENOMEM;
		return -1;
	}
	memcpy(b->data + b->len, buf, len);
	b->len += len;
	return 0;
}

static void enc_init(struct enc *e, struct hm_pbuf *b, size_t start)
{
	msgpack_packer_init(&e->pk, e, enc_write);
	e->b = b;
	e->start = start;
	e->list = NO_LIST;
	e->count = 0;
	e->err = 0;
}

/* failed: a msgpack_pack_* call returned non-zero. Rolls b back to where the message began. */
static int enc_end(struct enc *e, bool failed)
{
	if (!failed)
		return 0;
	e->b->len = e->start;
	return e->err != 0 ? e->err : -ENOMEM;
}

static int pk_head(struct enc *e, uint8_t type)
{
	return msgpack_pack_array(&e->pk, msg_arity[type]) || msgpack_pack_uint8(&e->pk, type) ||
	       msgpack_pack_uint32(&e->pk, msg_version[type]);
}

static int pk_u64(struct enc *e, uint64_t v)
{
	return msgpack_pack_uint64(&e->pk, v);
}

static int pk_str(struct enc *e, const char *s, size_t n)
{
	return msgpack_pack_str(&e->pk, n) || msgpack_pack_str_body(&e->pk, s, n);
}

static int pk_bin16(struct enc *e, const uint8_t v[16])
{
	return msgpack_pack_bin(&e->pk, 16) || msgpack_pack_bin_body(&e->pk, v, 16);
}

static int pk_bool(struct enc *e, bool v)
{
	return v ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
}

/* The caller has checked c->op. */
static int pk_change(struct enc *e, const struct hm_change *c)
{
	char addr[HM_ADDR_STR_MAX];
	size_t addr_len;
	bool full = c->op == HM_OP_CERT_PUT && c->id != NULL;

	if (msgpack_pack_array(&e->pk, c->op == HM_OP_CERT_PUT && !full ? CTL_CERT_PUT_ARITY
									: change_arity[c->op]) ||
	    msgpack_pack_uint8(&e->pk, c->op))
		return -1;
	switch (c->op) {
	case HM_OP_APP_PUT:
		return pk_str(e, c->app, c->app_len) || pk_bool(e, c->maintenance) ||
		       pk_bool(e, c->affinity) || msgpack_pack_uint8(&e->pk, c->balance);
	case HM_OP_APP_RM:
		return pk_str(e, c->app, c->app_len);
	case HM_OP_DOMAIN_PUT:
		return pk_str(e, c->name, c->name_len) || pk_str(e, c->app, c->app_len);
	case HM_OP_DOMAIN_RM:
		return pk_str(e, c->name, c->name_len);
	case HM_OP_DYNO_PUT:
		addr_len = hm_addr_format(&c->addr, addr);
		return pk_str(e, c->app, c->app_len) || pk_str(e, c->name, c->name_len) ||
		       pk_str(e, addr, addr_len) || msgpack_pack_uint8(&e->pk, c->state);
	case HM_OP_DYNO_RM:
		return pk_str(e, c->app, c->app_len) || pk_str(e, c->name, c->name_len);
	case HM_OP_SECRET_PUT:
		return pk_str(e, c->name, c->name_len) || msgpack_pack_bin(&e->pk, c->value_len) ||
		       msgpack_pack_bin_body(&e->pk, c->value, c->value_len);
	case HM_OP_CERT_PUT:
		if (pk_str(e, c->name, c->name_len) || pk_str(e, c->cert, c->cert_len) ||
		    pk_str(e, c->key, c->key_len))
			return -1;
		if (!full)
			return 0;
		return msgpack_pack_int64(&e->pk, c->not_after) ||
		       msgpack_pack_bin(&e->pk, HM_CERT_ID_LEN) ||
		       msgpack_pack_bin_body(&e->pk, c->id, HM_CERT_ID_LEN) ||
		       msgpack_pack_bin(&e->pk, c->meta_len) ||
		       msgpack_pack_bin_body(&e->pk, c->meta, c->meta_len);
	default: /* HM_OP_SECRET_RM, HM_OP_CERT_RM */
		return pk_str(e, c->name, c->name_len);
	}
}

static bool op_known(uint8_t op)
{
	return op >= HM_OP_APP_PUT && op <= HM_OP_MAX;
}

size_t hm_proto_change_size(const struct hm_change *c)
{
	struct enc e;

	if (!op_known(c->op))
		return 0;
	enc_init(&e, NULL, 0);
	pk_change(&e, c);
	return e.count;
}

/* Every encoder refuses to start while a message built in steps is incomplete: it would land in
 * the middle of that message. */
static int enc_start(struct enc *e, struct hm_pbuf *b)
{
	if (b->build.left != 0)
		return HM_EARITY;
	enc_init(e, b, b->len);
	return 0;
}

/* Leaves b expecting n items of kind after the message head just written from e->start. */
static void build_expect(struct hm_pbuf *b, const struct enc *e, uint8_t kind, uint32_t n)
{
	memset(&b->build, 0, sizeof(b->build));
	b->build.start = e->start;
	b->build.list = b->len; /* the head ends with the change array's header */
	b->build.left = n;
	b->build.kind = n > 0 ? kind : BUILD_NONE;
}

/* Abandons the message being built: removes it from b. */
static int build_fail(struct hm_pbuf *b, int rc)
{
	b->len = b->build.start;
	memset(&b->build, 0, sizeof(b->build));
	return rc;
}

static int batch_head_check(uint64_t epoch, uint64_t seq, uint32_t part, uint32_t nparts,
			    uint32_t nchanges)
{
	if (epoch == 0 || seq == 0 || nparts == 0 || nparts > HM_PROTO_MAX_PARTS || part >= nparts)
		return HM_ERANGE;
	return nchanges > HM_PROTO_MAX_CHANGES ? HM_ETOOBIG : 0;
}

static int pk_batch_head(struct enc *e, uint64_t epoch, uint64_t seq, uint64_t ts_ms, uint32_t part,
			 uint32_t nparts, uint32_t nchanges)
{
	return pk_head(e, HM_MSG_BATCH) || pk_u64(e, epoch) || pk_u64(e, seq) || pk_u64(e, ts_ms) ||
	       pk_u64(e, part) || pk_u64(e, nparts) || msgpack_pack_array(&e->pk, nchanges);
}

int hm_proto_begin_batch(struct hm_pbuf *b, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
			 uint32_t part, uint32_t nparts, uint32_t nchanges)
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0 ||
	    (rc = batch_head_check(epoch, seq, part, nparts, nchanges)) != 0)
		return rc;
	rc = enc_end(&e, pk_batch_head(&e, epoch, seq, ts_ms, part, nparts, nchanges));
	if (rc == 0)
		build_expect(b, &e, BUILD_CHANGES, nchanges);
	return rc;
}

int hm_proto_add_change(struct hm_pbuf *b, const struct hm_change *c)
{
	struct enc e;

	if (b->build.left == 0 ||
	    (b->build.kind != BUILD_CHANGES && b->build.kind != BUILD_SNAPSHOT))
		return HM_EARITY;
	if (!op_known(c->op) ||
	    !(ops_allowed(b->build.kind == BUILD_SNAPSHOT ? HM_MSG_SNAPSHOT_REP : HM_MSG_BATCH, 3) &
	      OP_BIT(c->op)) ||
	    (c->op == HM_OP_CERT_PUT && c->id == NULL))
		return build_fail(b, HM_EOP);
	enc_init(&e, b, b->build.start); /* the bounds are the whole message's and list's */
	e.list = b->build.list;
	if (pk_change(&e, c) != 0)
		return build_fail(b, e.err != 0 ? e.err : -ENOMEM);
	if (--b->build.left == 0)
		b->build.kind = BUILD_NONE;
	return 0;
}

int hm_proto_encode_batch(struct hm_pbuf *b, uint64_t epoch, const struct hm_batch_part *p)
{
	int rc = hm_proto_begin_batch(b, epoch, p->seq, p->ts_ms, p->part, p->nparts, p->nchanges);

	for (uint32_t i = 0; rc == 0 && i < p->nchanges; i++)
		rc = hm_proto_add_change(b, &p->changes[i]);
	return rc;
}

int hm_proto_encode_heartbeat(struct hm_pbuf *b, uint64_t epoch, uint64_t seq, uint64_t ts_ms,
			      const uint8_t digest[16])
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (epoch == 0)
		return HM_ERANGE;
	return enc_end(&e, pk_head(&e, HM_MSG_HEARTBEAT) || pk_u64(&e, epoch) || pk_u64(&e, seq) ||
			       pk_u64(&e, ts_ms) || pk_bin16(&e, digest));
}

int hm_proto_encode_catchup_req(struct hm_pbuf *b, uint64_t epoch, uint64_t after_seq,
				uint32_t from_part)
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (from_part >= HM_PROTO_MAX_PARTS)
		return HM_ERANGE;
	return enc_end(&e, pk_head(&e, HM_MSG_CATCHUP_REQ) || pk_u64(&e, epoch) ||
			       pk_u64(&e, after_seq) || pk_u64(&e, from_part));
}

int hm_proto_encode_snapshot_req(struct hm_pbuf *b, uint64_t snap_id, uint32_t chunk)
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (snap_id == 0 && chunk != 0)
		return HM_ERANGE;
	return enc_end(&e, pk_head(&e, HM_MSG_SNAPSHOT_REQ) || pk_u64(&e, snap_id) ||
			       pk_u64(&e, chunk));
}

int hm_proto_encode_ctl_req(struct hm_pbuf *b, const uint8_t req_id[16], uint32_t part,
			    uint32_t nparts, const struct hm_change *changes, uint32_t nchanges)
{
	struct enc e;
	bool failed;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (nparts == 0 || nparts > HM_PROTO_MAX_PARTS || part >= nparts)
		return HM_ERANGE;
	if (nchanges > HM_PROTO_MAX_CHANGES)
		return HM_ETOOBIG;
	for (uint32_t i = 0; i < nchanges; i++)
		if (!op_known(changes[i].op) ||
		    !(ops_allowed(HM_MSG_CTL_REQ, msg_version[HM_MSG_CTL_REQ]) &
		      OP_BIT(changes[i].op)) ||
		    (changes[i].op == HM_OP_CERT_PUT && changes[i].id != NULL))
			return HM_EOP;
	failed = pk_head(&e, HM_MSG_CTL_REQ) || pk_bin16(&e, req_id) || pk_u64(&e, part) ||
		 pk_u64(&e, nparts) || msgpack_pack_array(&e.pk, nchanges);
	e.list = b->len;
	for (uint32_t i = 0; !failed && i < nchanges; i++)
		failed = pk_change(&e, &changes[i]) != 0;
	return enc_end(&e, failed);
}

static int encode_ctl_rep(struct hm_pbuf *b, const uint8_t req_id[16], uint8_t status,
			  uint64_t epoch, uint64_t seq, int32_t code, uint32_t index,
			  const char *reason, size_t reason_len)
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	/* As the decoder wants: an ACK names a real epoch, an error a negative code. */
	if ((status == HM_CTL_ACK && epoch == 0) || (status == HM_CTL_ERROR && code >= 0))
		return HM_ERANGE;
	if (reason_len > HM_PROTO_MAX_REASON)
		return HM_ETOOBIG;
	return enc_end(&e, pk_head(&e, HM_MSG_CTL_REP) || pk_bin16(&e, req_id) ||
			       msgpack_pack_uint8(&e.pk, status) || pk_u64(&e, epoch) ||
			       pk_u64(&e, seq) || msgpack_pack_int32(&e.pk, code) ||
			       pk_u64(&e, index) || pk_str(&e, reason, reason_len));
}

int hm_proto_encode_ctl_ack(struct hm_pbuf *b, const uint8_t req_id[16], uint64_t epoch,
			    uint64_t seq)
{
	return encode_ctl_rep(b, req_id, HM_CTL_ACK, epoch, seq, 0, UINT32_MAX, "", 0);
}

int hm_proto_encode_ctl_ack_warn(struct hm_pbuf *b, const uint8_t req_id[16], uint64_t epoch,
				 uint64_t seq, const char *warnings, size_t len)
{
	return encode_ctl_rep(b, req_id, HM_CTL_ACK, epoch, seq, 0, UINT32_MAX,
			      warnings != NULL ? warnings : "", warnings != NULL ? len : 0);
}

int hm_proto_encode_ctl_staged(struct hm_pbuf *b, const uint8_t req_id[16])
{
	return encode_ctl_rep(b, req_id, HM_CTL_STAGED, 0, 0, 0, UINT32_MAX, "", 0);
}

int hm_proto_encode_ctl_error(struct hm_pbuf *b, const uint8_t req_id[16], int32_t code,
			      uint32_t index, const char *reason, size_t reason_len)
{
	return encode_ctl_rep(b, req_id, HM_CTL_ERROR, 0, 0, code, index,
			      reason != NULL ? reason : "", reason != NULL ? reason_len : 0);
}

int hm_proto_begin_catchup_rep(struct hm_pbuf *b, uint64_t epoch, uint64_t head_seq, uint8_t status,
			       bool more, uint32_t nparts)
{
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (epoch == 0 || status > HM_CATCHUP_EPOCH ||
	    (status != HM_CATCHUP_OK && (nparts > 0 || more)) || (more && nparts == 0))
		return HM_ERANGE;
	if (nparts > HM_PROTO_MAX_BATCHES)
		return HM_ETOOBIG;
	rc = enc_end(&e, pk_head(&e, HM_MSG_CATCHUP_REP) || pk_u64(&e, epoch) ||
			     pk_u64(&e, head_seq) || msgpack_pack_uint8(&e.pk, status) ||
			     pk_bool(&e, more) || msgpack_pack_array(&e.pk, nparts));
	if (rc != 0)
		return rc;
	build_expect(b, &e, BUILD_CATCHUP, nparts);
	b->build.epoch = epoch;
	b->build.head_seq = head_seq;
	return 0;
}

/* Checks that a part may come next in the catch-up reply being built, and records it. */
static int catchup_next(struct hm_pbuf *b, uint64_t seq, uint32_t part, uint32_t nparts)
{
	if (seq > b->build.head_seq ||
	    (b->build.have_prev && !part_follows(b->build.prev_seq, b->build.prev_part,
						 b->build.prev_nparts, seq, part, nparts)))
		return HM_ERANGE;
	b->build.have_prev = true;
	b->build.prev_seq = seq;
	b->build.prev_part = part;
	b->build.prev_nparts = nparts;
	return 0;
}

static void catchup_added(struct hm_pbuf *b)
{
	if (--b->build.left == 0)
		memset(&b->build, 0, sizeof(b->build));
}

int hm_proto_add_catchup_part(struct hm_pbuf *b, const struct hm_batch_part *p)
{
	struct enc e;
	bool failed;
	int rc;

	if (b->build.left == 0 || b->build.kind != BUILD_CATCHUP)
		return HM_EARITY;
	if ((rc = batch_head_check(b->build.epoch, p->seq, p->part, p->nparts, p->nchanges)) != 0 ||
	    (rc = catchup_next(b, p->seq, p->part, p->nparts)) != 0)
		return build_fail(b, rc);
	for (uint32_t i = 0; i < p->nchanges; i++)
		if (!op_known(p->changes[i].op))
			return build_fail(b, HM_EOP);
	enc_init(&e, b, b->build.start);
	failed =
	    pk_batch_head(&e, b->build.epoch, p->seq, p->ts_ms, p->part, p->nparts, p->nchanges);
	e.list = b->len;
	for (uint32_t i = 0; !failed && i < p->nchanges; i++)
		failed = pk_change(&e, &p->changes[i]) != 0;
	if (failed)
		return build_fail(b, e.err != 0 ? e.err : -ENOMEM);
	catchup_added(b);
	return 0;
}

int hm_proto_add_catchup_raw(struct hm_pbuf *b, const void *batch_msg, size_t len)
{
	struct hm_batch_part p;
	struct rd r = {.d = NULL};
	struct enc e;
	int rc;

	if (b->build.left == 0 || b->build.kind != BUILD_CATCHUP)
		return HM_EARITY;
	if (len == 0)
		return build_fail(b, HM_ETRUNC);
	if (len > HM_PROTO_MAX_MSG)
		return build_fail(b, HM_ETOOBIG);
	r.p = batch_msg;
	r.end = r.p + len;
	if ((rc = rd_embedded_batch(&r, b->build.epoch, &p)) != 0)
		return build_fail(b, rc);
	if (r.p != r.end)
		return build_fail(b, HM_ETRAILING);
	if ((rc = catchup_next(b, p.seq, p.part, p.nparts)) != 0)
		return build_fail(b, rc);
	enc_init(&e, b, b->build.start);
	if (enc_write(&e, batch_msg, len) != 0)
		return build_fail(b, e.err);
	catchup_added(b);
	return 0;
}

int hm_proto_begin_snapshot_rep(struct hm_pbuf *b, const struct hm_snapshot_head *h,
				uint32_t nchanges)
{
	uint8_t v = h->version != 0 ? h->version : msg_version[HM_MSG_SNAPSHOT_REP];
	struct enc e;
	int rc;

	if ((rc = enc_start(&e, b)) != 0)
		return rc;
	if (h->epoch == 0 || h->snap_id == 0 || h->chunk >= h->nchunks || v < 3 ||
	    v > msg_version[HM_MSG_SNAPSHOT_REP])
		return HM_ERANGE;
	if (nchanges > HM_PROTO_MAX_CHANGES)
		return HM_ETOOBIG;
	rc = enc_end(&e, msgpack_pack_array(&e.pk, arity_of(HM_MSG_SNAPSHOT_REP, v)) ||
			     msgpack_pack_uint8(&e.pk, HM_MSG_SNAPSHOT_REP) ||
			     msgpack_pack_uint32(&e.pk, v) || pk_u64(&e, h->epoch) ||
			     pk_u64(&e, h->seq) || pk_u64(&e, h->snap_id) || pk_u64(&e, h->chunk) ||
			     pk_u64(&e, h->nchunks) || pk_u64(&e, h->apps) ||
			     pk_u64(&e, h->domains) || pk_u64(&e, h->dynos) ||
			     pk_bin16(&e, h->digest) ||
			     (v >= 4 && (pk_u64(&e, h->certs) || pk_u64(&e, h->cert_heap))) ||
			     msgpack_pack_array(&e.pk, nchanges));
	if (rc == 0)
		build_expect(b, &e, BUILD_SNAPSHOT, nchanges);
	return rc;
}
