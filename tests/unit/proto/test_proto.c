/*
 * Tests proto/proto.c: every message and change op round-trips through the encoders and the
 * decoder; the encoders' bytes equal an independent msgpack rendering of the layout in
 * docs/protocol.md; and the decoder rejects, with the documented code, every truncation, every
 * mistyped field, every wrong arity, every out-of-range value and every oversized item of the
 * sample messages, then survives a seeded mutation fuzz loop (run under ASan+UBSan in CI).
 *
 * The independent rendering is a small value tree ("tv") packed with msgpack-c. The rejection
 * tests walk that tree and replace, extend or shorten one node at a time, so each field of each
 * message is covered without writing each case by hand. Every decode reads from a heap copy of
 * exactly the message's size, so that ASan sees any read past the end.
 */
#include <errno.h>
#include <msgpack.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/errors.h"
#include "common/model.h"
#include "proto/proto.h"
#include "tests/unit/hm_check.h"

#define S(x)	 x, strlen(x)
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Check's ck_assert_* report every passing assertion to the parent through a pipe, a system
 * call each; the loops here make millions of checks, so only a failure reaches Check.
 */
#define REQUIRE(cond, ...)                                                                         \
	do {                                                                                       \
		if (!(cond))                                                                       \
			ck_abort_msg(__VA_ARGS__);                                                 \
	} while (0)
#define TRUE(cond) REQUIRE(cond, "%s", #cond)
#define EQ_U(a, b)                                                                                 \
	do {                                                                                       \
		uintmax_t a_ = (a), b_ = (b);                                                      \
		REQUIRE(a_ == b_, "%s == %ju, %s == %ju", #a, a_, #b, b_);                         \
	} while (0)
#define EQ_I(a, b)                                                                                 \
	do {                                                                                       \
		intmax_t a_ = (a), b_ = (b);                                                       \
		REQUIRE(a_ == b_, "%s == %jd (%s), %s == %jd", #a, a_, ename((int)a_), #b, b_);    \
	} while (0)
#define MEM_EQ(a, b, n) REQUIRE(memcmp((a), (b), (n)) == 0, "%s != %s", #a, #b)

static const char *ename(int rc)
{
	return rc == 0 ? "0" : hm_errname(rc);
}

static const uint8_t DIGEST[16] = {0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
static const uint8_t REQ_ID[16] = {0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,
				   0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};

static struct hm_proto_decoder *dec;

static void setup(void)
{
	EQ_I(hm_proto_decoder_new(&dec), 0);
}

static void teardown(void)
{
	hm_proto_decoder_free(dec);
	dec = NULL;
}

/* Decodes a heap copy of exactly n bytes, then frees it: for verdicts only (strings dangle). */
static int decode_copy(const void *p, size_t n, struct hm_msg *m)
{
	void *copy = malloc(n > 0 ? n : 1);
	int rc;

	TRUE(copy != NULL);
	if (n > 0)
		memcpy(copy, p, n);
	rc = hm_proto_decode(dec, copy, n, m);
	free(copy);
	return rc;
}

static int verdict(const void *p, size_t n)
{
	struct hm_msg m;

	return decode_copy(p, n, &m);
}

/* ---- Changes ------------------------------------------------------------------------------ */

/* One change as the tests define it: what the encoder is given and what the tree spells. */
struct cdef {
	uint8_t op;
	const char *app, *name, *addr;
	bool maint, aff;
	uint8_t balance, state;
};

static struct hm_change to_change(const struct cdef *d)
{
	struct hm_change c = {.op = d->op,
			      .maintenance = d->maint,
			      .affinity = d->aff,
			      .balance = d->balance,
			      .state = d->state};

	if (d->app != NULL) {
		c.app = d->app;
		c.app_len = (uint8_t)strlen(d->app);
	}
	if (d->name != NULL) {
		c.name = d->name;
		c.name_len = (uint16_t)strlen(d->name);
	}
	if (d->addr != NULL)
		EQ_I(hm_addr_parse(S(d->addr), &c.addr), 0);
	return c;
}

/* Every op; hostnames in any case with a trailing dot, wildcards, IPv4 and IPv6. */
/* clang-format off */
static const struct cdef ALL_OPS[] = {
	{.op = HM_OP_APP_PUT, .app = "shop", .maint = true, .balance = HM_BALANCE_LEAST_CONN},
	{.op = HM_OP_APP_PUT, .app = "blog-2", .aff = true, .balance = HM_BALANCE_RANDOM},
	{.op = HM_OP_DOMAIN_PUT, .name = "Shop.Example.COM.", .app = "shop"},
	{.op = HM_OP_DOMAIN_PUT, .name = "*.example.org", .app = "blog-2"},
	{.op = HM_OP_DYNO_PUT, .app = "shop", .name = "web.1", .addr = "10.0.0.1:5000",
	 .state = HM_DYNO_UP},
	{.op = HM_OP_DYNO_PUT, .app = "shop", .name = "worker_big-2.10",
	 .addr = "[2001:db8::1]:8080", .state = HM_DYNO_STARTING},
	{.op = HM_OP_DYNO_PUT, .app = "blog-2", .name = "web.2", .addr = "[::1]:1",
	 .state = HM_DYNO_CRASHED},
	{.op = HM_OP_DYNO_PUT, .app = "blog-2", .name = "web.3", .addr = "192.168.1.254:65535",
	 .state = HM_DYNO_DOWN},
	{.op = HM_OP_DYNO_RM, .app = "shop", .name = "web.1"},
	{.op = HM_OP_DOMAIN_RM, .name = "*.example.org"},
	{.op = HM_OP_APP_RM, .app = "blog-2"},
};

static const struct cdef PUTS[] = {
	{.op = HM_OP_APP_PUT, .app = "a", .balance = HM_BALANCE_RANDOM},
	{.op = HM_OP_DOMAIN_PUT, .name = "a.example.com", .app = "a"},
	{.op = HM_OP_DYNO_PUT, .app = "a", .name = "web.1", .addr = "[fe80::1:2]:443",
	 .state = HM_DYNO_UP},
};

static const struct cdef FEW[] = {
	{.op = HM_OP_APP_RM, .app = "x"},
	{.op = HM_OP_DOMAIN_RM, .name = "x.example.net"},
};
/* clang-format on */

static struct hm_change all_ops[NELEM(ALL_OPS)], put_chg[NELEM(PUTS)], few[NELEM(FEW)];

static void changes_init(void)
{
	for (size_t i = 0; i < NELEM(ALL_OPS); i++)
		all_ops[i] = to_change(&ALL_OPS[i]);
	for (size_t i = 0; i < NELEM(PUTS); i++)
		put_chg[i] = to_change(&PUTS[i]);
	for (size_t i = 0; i < NELEM(FEW); i++)
		few[i] = to_change(&FEW[i]);
}

static void assert_change_eq(const struct hm_change *a, const struct hm_change *b, size_t i)
{
	REQUIRE(a->op == b->op, "change %zu: op %u != %u", i, a->op, b->op);
	EQ_U(a->app_len, b->app_len);
	EQ_U(a->name_len, b->name_len);
	TRUE(a->app_len == 0 || memcmp(a->app, b->app, a->app_len) == 0);
	TRUE(a->name_len == 0 || memcmp(a->name, b->name, a->name_len) == 0);
	EQ_I(a->maintenance, b->maintenance);
	EQ_I(a->affinity, b->affinity);
	EQ_U(a->balance, b->balance);
	EQ_U(a->state, b->state);
	EQ_U(a->addr.family, b->addr.family);
	EQ_U(a->addr.port, b->addr.port);
	MEM_EQ(a->addr.ip, b->addr.ip, 16);
	EQ_U(a->value_len, b->value_len);
	TRUE(a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
}

static void assert_changes_eq(const struct hm_change *a, const struct hm_change *b, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		assert_change_eq(&a[i], &b[i], i);
}

/* ---- Sample messages ---------------------------------------------------------------------- */

static struct hm_batch_part catchup_parts[3];

/* Sample i as the decoder should return it. */
static void sample_msg(int i, struct hm_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->version = HM_PROTO_VERSION;
	switch (i) {
	case 0: /* a one-part batch with every op */
		m->type = HM_MSG_BATCH;
		m->batch.epoch = 3;
		m->batch.b = (struct hm_batch_part){.seq = 42,
						    .ts_ms = 1700000000123ull,
						    .part = 0,
						    .nparts = 1,
						    .nchanges = NELEM(all_ops),
						    .changes = all_ops};
		break;
	case 1: /* the middle part of a three-part batch, with big numbers */
		m->type = HM_MSG_BATCH;
		m->batch.epoch = UINT64_MAX;
		m->batch.b = (struct hm_batch_part){.seq = 1ull << 40,
						    .ts_ms = UINT64_MAX,
						    .part = 1,
						    .nparts = 3,
						    .nchanges = NELEM(few),
						    .changes = few};
		break;
	case 2:
		m->type = HM_MSG_HEARTBEAT;
		m->heartbeat.epoch = 3;
		m->heartbeat.seq = 0;
		m->heartbeat.ts_ms = 1700000000999ull;
		memcpy(m->heartbeat.digest, DIGEST, 16);
		break;
	case 3:
		m->type = HM_MSG_CATCHUP_REQ;
		m->catchup_req.epoch = 3;
		m->catchup_req.after_seq = 41;
		m->catchup_req.from_part = 2;
		break;
	case 4: /* the end of batch 5, all of 6 and 7; more to come */
		catchup_parts[0] = (struct hm_batch_part){.seq = 5,
							  .ts_ms = 100,
							  .part = 1,
							  .nparts = 2,
							  .nchanges = NELEM(few),
							  .changes = few};
		catchup_parts[1] = (struct hm_batch_part){
		    .seq = 6, .ts_ms = 200, .part = 0, .nparts = 1, .nchanges = 0};
		catchup_parts[2] = (struct hm_batch_part){.seq = 7,
							  .ts_ms = 300,
							  .part = 0,
							  .nparts = 1,
							  .nchanges = NELEM(all_ops),
							  .changes = all_ops};
		m->type = HM_MSG_CATCHUP_REP;
		m->catchup_rep.epoch = 3;
		m->catchup_rep.head_seq = 9;
		m->catchup_rep.status = HM_CATCHUP_OK;
		m->catchup_rep.more = true;
		m->catchup_rep.nparts = 3;
		m->catchup_rep.parts = catchup_parts;
		break;
	case 5:
		m->type = HM_MSG_CATCHUP_REP;
		m->catchup_rep.epoch = 4;
		m->catchup_rep.head_seq = 77;
		m->catchup_rep.status = HM_CATCHUP_SNAPSHOT;
		break;
	case 6:
		m->type = HM_MSG_SNAPSHOT_REQ;
		m->snapshot_req.snap_id = 7;
		m->snapshot_req.chunk = 2;
		break;
	case 7:
		m->type = HM_MSG_SNAPSHOT_REP;
		m->snapshot_rep.epoch = 3;
		m->snapshot_rep.seq = 42;
		m->snapshot_rep.snap_id = 7;
		m->snapshot_rep.chunk = 2;
		m->snapshot_rep.nchunks = 5;
		m->snapshot_rep.apps = 1;
		m->snapshot_rep.domains = 1;
		m->snapshot_rep.dynos = 70000;
		memcpy(m->snapshot_rep.digest, DIGEST, 16);
		m->snapshot_rep.certs = 3;
		m->snapshot_rep.cert_heap = 12345;
		m->snapshot_rep.nchanges = NELEM(put_chg);
		m->snapshot_rep.changes = put_chg;
		break;
	case 8:
		m->type = HM_MSG_CTL_REQ;
		memcpy(m->ctl_req.req_id, REQ_ID, 16);
		m->ctl_req.part = 0;
		m->ctl_req.nparts = 2;
		m->ctl_req.nchanges = NELEM(all_ops);
		m->ctl_req.changes = all_ops;
		break;
	case 9:
		m->type = HM_MSG_CTL_REP;
		memcpy(m->ctl_rep.req_id, REQ_ID, 16);
		m->ctl_rep.status = HM_CTL_ACK;
		m->ctl_rep.epoch = 3;
		m->ctl_rep.seq = 42;
		m->ctl_rep.index = UINT32_MAX;
		m->ctl_rep.reason = "";
		break;
	case 10:
		m->type = HM_MSG_CTL_REP;
		memcpy(m->ctl_rep.req_id, REQ_ID, 16);
		m->ctl_rep.status = HM_CTL_STAGED;
		m->ctl_rep.index = UINT32_MAX;
		m->ctl_rep.reason = "";
		break;
	case 11:
		m->type = HM_MSG_CTL_REP;
		memcpy(m->ctl_rep.req_id, REQ_ID, 16);
		m->ctl_rep.status = HM_CTL_ERROR;
		m->ctl_rep.code = HM_ENOAPP;
		m->ctl_rep.index = 3;
		m->ctl_rep.reason = "no such app: shop";
		m->ctl_rep.reason_len = 17;
		break;
	default:
		ck_abort_msg("no sample %d", i);
	}
	m->version = hm_proto_version(m->type);
}
#define NSAMPLES 12

static int encode_msg(struct hm_pbuf *b, const struct hm_msg *m, bool raw);

/* Appends p as a raw journal record: encoded on its own, then copied in. */
static int add_raw(struct hm_pbuf *b, uint64_t epoch, const struct hm_batch_part *p)
{
	struct hm_pbuf one = {0};
	int rc = hm_proto_encode_batch(&one, epoch, p);

	if (rc == 0)
		rc = hm_proto_add_catchup_raw(b, one.data, one.len);
	hm_pbuf_fini(&one);
	return rc;
}

/* Encodes m with the public encoders. raw: catch-up parts alternate raw and encoded. */
static int encode_msg(struct hm_pbuf *b, const struct hm_msg *m, bool raw)
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
			rc = raw && i % 2 == 1
				 ? add_raw(b, m->catchup_rep.epoch, &m->catchup_rep.parts[i])
				 : hm_proto_add_catchup_part(b, &m->catchup_rep.parts[i]);
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
			return hm_proto_encode_ctl_ack_warn(b, m->ctl_rep.req_id, m->ctl_rep.epoch,
							    m->ctl_rep.seq, m->ctl_rep.reason,
							    m->ctl_rep.reason_len);
		if (m->ctl_rep.status == HM_CTL_STAGED)
			return hm_proto_encode_ctl_staged(b, m->ctl_rep.req_id);
		return hm_proto_encode_ctl_error(b, m->ctl_rep.req_id, m->ctl_rep.code,
						 m->ctl_rep.index, m->ctl_rep.reason,
						 m->ctl_rep.reason_len);
	default:
		ck_abort_msg("cannot encode type %u", m->type);
		return -1;
	}
}

static void assert_part_eq(const struct hm_batch_part *a, const struct hm_batch_part *b)
{
	EQ_U(a->seq, b->seq);
	EQ_U(a->ts_ms, b->ts_ms);
	EQ_U(a->part, b->part);
	EQ_U(a->nparts, b->nparts);
	EQ_U(a->nchanges, b->nchanges);
	assert_changes_eq(a->changes, b->changes, a->nchanges);
}

static void assert_msg_eq(const struct hm_msg *a, const struct hm_msg *b)
{
	EQ_U(a->type, b->type);
	EQ_U(a->version, b->version);
	switch (a->type) {
	case HM_MSG_BATCH:
		EQ_U(a->batch.epoch, b->batch.epoch);
		assert_part_eq(&a->batch.b, &b->batch.b);
		break;
	case HM_MSG_HEARTBEAT:
		EQ_U(a->heartbeat.epoch, b->heartbeat.epoch);
		EQ_U(a->heartbeat.seq, b->heartbeat.seq);
		EQ_U(a->heartbeat.ts_ms, b->heartbeat.ts_ms);
		MEM_EQ(a->heartbeat.digest, b->heartbeat.digest, 16);
		break;
	case HM_MSG_CATCHUP_REQ:
		EQ_U(a->catchup_req.epoch, b->catchup_req.epoch);
		EQ_U(a->catchup_req.after_seq, b->catchup_req.after_seq);
		EQ_U(a->catchup_req.from_part, b->catchup_req.from_part);
		break;
	case HM_MSG_CATCHUP_REP:
		EQ_U(a->catchup_rep.epoch, b->catchup_rep.epoch);
		EQ_U(a->catchup_rep.head_seq, b->catchup_rep.head_seq);
		EQ_U(a->catchup_rep.status, b->catchup_rep.status);
		EQ_I(a->catchup_rep.more, b->catchup_rep.more);
		EQ_U(a->catchup_rep.nparts, b->catchup_rep.nparts);
		for (uint32_t i = 0; i < a->catchup_rep.nparts; i++)
			assert_part_eq(&a->catchup_rep.parts[i], &b->catchup_rep.parts[i]);
		break;
	case HM_MSG_SNAPSHOT_REQ:
		EQ_U(a->snapshot_req.snap_id, b->snapshot_req.snap_id);
		EQ_U(a->snapshot_req.chunk, b->snapshot_req.chunk);
		break;
	case HM_MSG_SNAPSHOT_REP:
		EQ_U(a->snapshot_rep.epoch, b->snapshot_rep.epoch);
		EQ_U(a->snapshot_rep.seq, b->snapshot_rep.seq);
		EQ_U(a->snapshot_rep.snap_id, b->snapshot_rep.snap_id);
		EQ_U(a->snapshot_rep.chunk, b->snapshot_rep.chunk);
		EQ_U(a->snapshot_rep.nchunks, b->snapshot_rep.nchunks);
		EQ_U(a->snapshot_rep.apps, b->snapshot_rep.apps);
		EQ_U(a->snapshot_rep.domains, b->snapshot_rep.domains);
		EQ_U(a->snapshot_rep.dynos, b->snapshot_rep.dynos);
		MEM_EQ(a->snapshot_rep.digest, b->snapshot_rep.digest, 16);
		EQ_U(a->snapshot_rep.nchanges, b->snapshot_rep.nchanges);
		assert_changes_eq(a->snapshot_rep.changes, b->snapshot_rep.changes,
				  a->snapshot_rep.nchanges);
		break;
	case HM_MSG_CTL_REQ:
		MEM_EQ(a->ctl_req.req_id, b->ctl_req.req_id, 16);
		EQ_U(a->ctl_req.part, b->ctl_req.part);
		EQ_U(a->ctl_req.nparts, b->ctl_req.nparts);
		EQ_U(a->ctl_req.nchanges, b->ctl_req.nchanges);
		assert_changes_eq(a->ctl_req.changes, b->ctl_req.changes, a->ctl_req.nchanges);
		break;
	case HM_MSG_CTL_REP:
		MEM_EQ(a->ctl_rep.req_id, b->ctl_rep.req_id, 16);
		EQ_U(a->ctl_rep.status, b->ctl_rep.status);
		EQ_U(a->ctl_rep.epoch, b->ctl_rep.epoch);
		EQ_U(a->ctl_rep.seq, b->ctl_rep.seq);
		EQ_I(a->ctl_rep.code, b->ctl_rep.code);
		EQ_U(a->ctl_rep.index, b->ctl_rep.index);
		EQ_U(a->ctl_rep.reason_len, b->ctl_rep.reason_len);
		TRUE(a->ctl_rep.reason_len == 0 ||
		     memcmp(a->ctl_rep.reason, b->ctl_rep.reason, a->ctl_rep.reason_len) == 0);
		break;
	default:
		ck_abort_msg("type %u", a->type);
	}
}

/* ---- The independent rendering: value trees ----------------------------------------------- */

enum tv_kind { TV_UINT, TV_INT, TV_BOOL, TV_STR, TV_BIN, TV_ARR };

struct tv {
	enum tv_kind kind;
	uint64_t u;
	int64_t i;
	const char *s;
	size_t n;
	uint32_t nk;
	struct tv *k[16];
};

static struct tv pool[8192];
static size_t npool;

static struct tv *tv_new(enum tv_kind kind)
{
	struct tv *t;

	TRUE(npool < NELEM(pool));
	t = &pool[npool++];
	memset(t, 0, sizeof(*t));
	t->kind = kind;
	return t;
}

static struct tv *U(uint64_t v)
{
	struct tv *t = tv_new(TV_UINT);

	t->u = v;
	return t;
}

static struct tv *I(int64_t v)
{
	struct tv *t = tv_new(TV_INT);

	t->i = v;
	return t;
}

static struct tv *B(bool v)
{
	struct tv *t = tv_new(TV_BOOL);

	t->u = v;
	return t;
}

static struct tv *STRN(const char *s, size_t n)
{
	struct tv *t = tv_new(TV_STR);

	t->s = s;
	t->n = n;
	return t;
}

static struct tv *STR(const char *s)
{
	return STRN(s, strlen(s));
}

static struct tv *BIN(const void *p, size_t n)
{
	struct tv *t = tv_new(TV_BIN);

	t->s = p;
	t->n = n;
	return t;
}

static struct tv *arr(size_t n, struct tv *const *k)
{
	struct tv *t = tv_new(TV_ARR);

	TRUE(n <= NELEM(t->k));
	for (size_t i = 0; i < n; i++)
		t->k[i] = k[i];
	t->nk = (uint32_t)n;
	return t;
}
#define A(...)                                                                                     \
	arr(sizeof((struct tv *[]){__VA_ARGS__}) / sizeof(struct tv *),                            \
	    (struct tv *[]){__VA_ARGS__})
#define A0() arr(0, NULL)

/* A mutation of one node, found by its pre-order index. */
enum mut_mode { MUT_NONE, MUT_REPLACE, MUT_APPEND, MUT_DROP };
enum repl { R_NIL, R_TRUE, R_FALSE, R_UINT, R_STR, R_BIN, R_FLOAT, R_MAP, R_ARR, R_EXT, NREPL };

struct mut {
	enum mut_mode mode;
	long target;
	enum repl repl;
	long at; /* pre-order counter while packing */
};

static void pack_repl(msgpack_packer *pk, enum repl r)
{
	switch (r) {
	case R_NIL:
		msgpack_pack_nil(pk);
		break;
	case R_TRUE:
		msgpack_pack_true(pk);
		break;
	case R_FALSE:
		msgpack_pack_false(pk);
		break;
	case R_UINT:
		msgpack_pack_uint8(pk, 1);
		break;
	case R_STR:
		msgpack_pack_str(pk, 16);
		msgpack_pack_str_body(pk, "abcdefghijklmnop", 16);
		break;
	case R_BIN:
		msgpack_pack_bin(pk, 16);
		msgpack_pack_bin_body(pk, DIGEST, 16);
		break;
	case R_FLOAT:
		msgpack_pack_double(pk, 1.0);
		break;
	case R_MAP:
		msgpack_pack_map(pk, 0);
		break;
	case R_ARR:
		msgpack_pack_array(pk, 0);
		break;
	default:
		msgpack_pack_ext(pk, 1, 1);
		msgpack_pack_ext_body(pk, "x", 1);
		break;
	}
}

static void pack_tv(msgpack_packer *pk, const struct tv *t, struct mut *m)
{
	long at = m->at++;
	bool hit = at == m->target;
	uint32_t n;

	if (hit && m->mode == MUT_REPLACE) {
		pack_repl(pk, m->repl);
		return;
	}
	switch (t->kind) {
	case TV_UINT:
		msgpack_pack_uint64(pk, t->u);
		break;
	case TV_INT:
		msgpack_pack_int64(pk, t->i);
		break;
	case TV_BOOL:
		if (t->u)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		break;
	case TV_STR:
		msgpack_pack_str(pk, t->n);
		msgpack_pack_str_body(pk, t->s, t->n);
		break;
	case TV_BIN:
		msgpack_pack_bin(pk, t->n);
		msgpack_pack_bin_body(pk, t->s, t->n);
		break;
	case TV_ARR:
		n = t->nk;
		if (hit && m->mode == MUT_DROP)
			n--;
		msgpack_pack_array(pk, n + (hit && m->mode == MUT_APPEND));
		for (uint32_t i = 0; i < n; i++)
			pack_tv(pk, t->k[i], m);
		if (hit && m->mode == MUT_APPEND)
			msgpack_pack_uint8(pk, 0);
		break;
	}
}

/* Packs t (mutated as m says) into sb, which the caller destroys. */
static void tv_pack(const struct tv *t, struct mut *m, msgpack_sbuffer *sb)
{
	struct mut none = {.mode = MUT_NONE, .target = -1};
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	if (m == NULL)
		m = &none;
	m->at = 0;
	pack_tv(&pk, t, m);
}

static int tv_verdict(const struct tv *t)
{
	msgpack_sbuffer sb;
	int rc;

	tv_pack(t, NULL, &sb);
	rc = verdict(sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	return rc;
}

static long tv_count(const struct tv *t)
{
	long n = 1;

	if (t->kind == TV_ARR)
		for (uint32_t i = 0; i < t->nk; i++)
			n += tv_count(t->k[i]);
	return n;
}

/* The node with pre-order index target, and whether it is a list (variable length). */
static const struct tv *tv_node(const struct tv *t, long *at, long target)
{
	const struct tv *f;

	if ((*at)++ == target)
		return t;
	if (t->kind == TV_ARR)
		for (uint32_t i = 0; i < t->nk; i++)
			if ((f = tv_node(t->k[i], at, target)) != NULL)
				return f;
	return NULL;
}

/* ---- The layout, spelled out independently ------------------------------------------------ */

static struct tv *T_change(const struct cdef *d)
{
	switch (d->op) {
	case HM_OP_APP_PUT:
		return A(U(1), STR(d->app), B(d->maint), B(d->aff), U(d->balance));
	case HM_OP_APP_RM:
		return A(U(2), STR(d->app));
	case HM_OP_DOMAIN_PUT:
		return A(U(3), STR(d->name), STR(d->app));
	case HM_OP_DOMAIN_RM:
		return A(U(4), STR(d->name));
	case HM_OP_DYNO_PUT:
		return A(U(5), STR(d->app), STR(d->name), STR(d->addr), U(d->state));
	default:
		return A(U(6), STR(d->app), STR(d->name));
	}
}

static struct tv *T_changes(const struct cdef *d, size_t n)
{
	struct tv *t = A0();

	for (size_t i = 0; i < n; i++) {
		TRUE(t->nk < NELEM(t->k));
		t->k[t->nk++] = T_change(&d[i]);
	}
	return t;
}
#define T_CHANGES(a) T_changes(a, NELEM(a))

static struct tv *T_batch(uint64_t epoch, uint64_t seq, uint64_t ts, uint64_t part, uint64_t nparts,
			  struct tv *changes)
{
	return A(U(1), U(3), U(epoch), U(seq), U(ts), U(part), U(nparts), changes);
}

static struct tv *T_ctl_rep(uint64_t status, uint64_t epoch, uint64_t seq, int64_t code,
			    uint64_t index, const char *reason)
{
	return A(U(8), U(2), BIN(REQ_ID, 16), U(status), U(epoch), U(seq), I(code), U(index),
		 STR(reason));
}

static struct tv *T_snapshot_rep(uint64_t epoch, uint64_t seq, uint64_t snap_id, uint64_t chunk,
				 uint64_t nchunks, struct tv *changes)
{
	return A(U(6), U(4), U(epoch), U(seq), U(snap_id), U(chunk), U(nchunks), U(1), U(1),
		 U(70000), BIN(DIGEST, 16), U(3), U(12345), changes);
}

/* An older version (1..3: no certificate count), as snapshot files written before hold it. */
static struct tv *T_snapshot_rep_old(uint64_t version, uint64_t epoch, uint64_t seq,
				     uint64_t snap_id, uint64_t chunk, uint64_t nchunks,
				     struct tv *changes)
{
	return A(U(6), U(version), U(epoch), U(seq), U(snap_id), U(chunk), U(nchunks), U(1), U(1),
		 U(70000), BIN(DIGEST, 16), changes);
}

/* Sample i as docs/protocol.md spells it. */
static struct tv *sample_tree(int i)
{
	switch (i) {
	case 0:
		return T_batch(3, 42, 1700000000123ull, 0, 1, T_CHANGES(ALL_OPS));
	case 1:
		return T_batch(UINT64_MAX, 1ull << 40, UINT64_MAX, 1, 3, T_CHANGES(FEW));
	case 2:
		return A(U(2), U(1), U(3), U(0), U(1700000000999ull), BIN(DIGEST, 16));
	case 3:
		return A(U(3), U(1), U(3), U(41), U(2));
	case 4:
		return A(U(4), U(1), U(3), U(9), U(0), B(true),
			 A(T_batch(3, 5, 100, 1, 2, T_CHANGES(FEW)), T_batch(3, 6, 200, 0, 1, A0()),
			   T_batch(3, 7, 300, 0, 1, T_CHANGES(ALL_OPS))));
	case 5:
		return A(U(4), U(1), U(4), U(77), U(1), B(false), A0());
	case 6:
		return A(U(5), U(1), U(7), U(2));
	case 7:
		return T_snapshot_rep(3, 42, 7, 2, 5, T_CHANGES(PUTS));
	case 8:
		return A(U(7), U(2), BIN(REQ_ID, 16), U(0), U(2), T_CHANGES(ALL_OPS));
	case 9:
		return T_ctl_rep(0, 3, 42, 0, UINT32_MAX, "");
	case 10:
		return T_ctl_rep(1, 0, 0, 0, UINT32_MAX, "");
	case 11:
		return T_ctl_rep(2, 0, 0, HM_ENOAPP, 3, "no such app: shop");
	default:
		ck_abort_msg("no sample %d", i);
		return NULL;
	}
}

/* Encodes sample i with the encoders into a fresh buffer the caller finis. */
static void sample_bytes(int i, bool raw, struct hm_pbuf *b)
{
	struct hm_msg m;

	sample_msg(i, &m);
	memset(b, 0, sizeof(*b));
	EQ_I(encode_msg(b, &m, raw), 0);
}

/* ---- Round trips -------------------------------------------------------------------------- */

START_TEST(round_trip_samples)
{
	for (int i = 0; i < NSAMPLES; i++) {
		for (int raw = 0; raw < 2; raw++) {
			struct hm_msg want, got;
			struct hm_pbuf b;
			char *copy;

			sample_msg(i, &want);
			sample_bytes(i, raw, &b);
			copy = malloc(b.len);
			memcpy(copy, b.data, b.len);
			REQUIRE(hm_proto_decode(dec, copy, b.len, &got) == 0, "sample %d", i);
			assert_msg_eq(&got, &want);
			free(copy);
			hm_pbuf_fini(&b);
		}
	}
}
END_TEST

START_TEST(layout_matches_docs)
{
	for (int i = 0; i < NSAMPLES; i++) {
		msgpack_sbuffer sb;
		struct hm_pbuf b;

		sample_bytes(i, i % 2, &b);
		tv_pack(sample_tree(i), NULL, &sb);
		REQUIRE(sb.size == b.len && memcmp(sb.data, b.data, b.len) == 0,
			"sample %d: encoder and docs disagree", i);
		msgpack_sbuffer_destroy(&sb);
		hm_pbuf_fini(&b);
	}
}
END_TEST

/* SNAPSHOT_REP version 3 (no certificate count) still decodes, with the count 0, and can still
 * be written (test builds write such files); each version has its own arity. */
START_TEST(snapshot_rep_v3_still_decodes)
{
	struct hm_snapshot_head h = {.epoch = 3,
				     .seq = 42,
				     .snap_id = 7,
				     .chunk = 2,
				     .nchunks = 5,
				     .apps = 1,
				     .domains = 1,
				     .dynos = 70000,
				     .certs = 9,
				     .cert_heap = 99,
				     .version = 3};
	msgpack_sbuffer sb;
	struct hm_pbuf b = {0};
	struct hm_msg m;

	tv_pack(T_snapshot_rep_old(3, 3, 42, 7, 2, 5, T_CHANGES(PUTS)), NULL, &sb);
	EQ_I(hm_proto_decode(dec, sb.data, sb.size, &m), 0);
	EQ_U(m.version, 3);
	EQ_U(m.snapshot_rep.dynos, 70000);
	EQ_U(m.snapshot_rep.certs, 0);
	EQ_U(m.snapshot_rep.cert_heap, 0);
	memcpy(h.digest, DIGEST, 16);
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, m.snapshot_rep.nchanges), 0);
	for (uint32_t i = 0; i < m.snapshot_rep.nchanges; i++)
		EQ_I(hm_proto_add_change(&b, &m.snapshot_rep.changes[i]), 0);
	REQUIRE(b.len == sb.size && memcmp(b.data, sb.data, b.len) == 0,
		"version 3 written as before");
	msgpack_sbuffer_destroy(&sb);
	hm_pbuf_fini(&b);
	/* Version 4 with version 3's elements, and the reverse: HM_EARITY. */
	tv_pack(A(U(6), U(4), U(3), U(42), U(7), U(2), U(5), U(1), U(1), U(70000), BIN(DIGEST, 16),
		  T_CHANGES(PUTS)),
		NULL, &sb);
	EQ_I(hm_proto_decode(dec, sb.data, sb.size, &m), HM_EARITY);
	msgpack_sbuffer_destroy(&sb);
	tv_pack(A(U(6), U(3), U(3), U(42), U(7), U(2), U(5), U(1), U(1), U(70000), BIN(DIGEST, 16),
		  U(3), U(12345), T_CHANGES(PUTS)),
		NULL, &sb);
	EQ_I(hm_proto_decode(dec, sb.data, sb.size, &m), HM_EARITY);
	msgpack_sbuffer_destroy(&sb);
	/* Versions the encoder does not write. */
	h.version = 2;
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 1), HM_ERANGE);
	h.version = 5;
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 1), HM_ERANGE);
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(decoded_strings_borrow_input)
{
	struct hm_pbuf b;
	struct hm_msg m;
	const char *lo, *hi;

	sample_bytes(0, false, &b);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	lo = b.data;
	hi = b.data + b.len;
	for (uint32_t i = 0; i < m.batch.b.nchanges; i++) {
		const struct hm_change *c = &m.batch.b.changes[i];

		TRUE(c->app_len == 0 || (c->app > lo && c->app + c->app_len <= hi));
		TRUE(c->name_len == 0 || (c->name > lo && c->name + c->name_len <= hi));
	}
	/* "Shop.Example.COM." arrives as sent: canonicalising is the table's job. */
	EQ_U(m.batch.b.changes[2].name_len, 17);
	MEM_EQ(m.batch.b.changes[2].name, "Shop.Example.COM.", 17);
	hm_pbuf_fini(&b);
}
END_TEST

static char names[HM_PROTO_MAX_CHANGES][16];
static struct hm_change big[HM_PROTO_MAX_CHANGES + 1];

/* n dyno.put changes with IPv6 addresses and distinct names. */
static void big_init(uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		int len = snprintf(names[i % HM_PROTO_MAX_CHANGES], 16, "web.%u", i);

		big[i] = (struct hm_change){.op = HM_OP_DYNO_PUT,
					    .app = "big",
					    .app_len = 3,
					    .name = names[i % HM_PROTO_MAX_CHANGES],
					    .name_len = (uint16_t)len,
					    .state = HM_DYNO_UP};
		EQ_I(hm_addr_parse(S("[2001:db8:ffff:ffff:ffff:ffff:ffff:1]:65535"), &big[i].addr),
		     0);
		big[i].addr.ip[15] = (uint8_t)i;
	}
}

START_TEST(round_trip_max_arrays)
{
	struct hm_pbuf b = {0};
	struct hm_snapshot_head h = {.epoch = 1, .seq = 1, .snap_id = 1, .nchunks = 1};
	struct hm_batch_part p = {.seq = 9,
				  .part = 65535,
				  .nparts = HM_PROTO_MAX_PARTS,
				  .nchanges = HM_PROTO_MAX_CHANGES,
				  .changes = big};
	struct hm_msg m;

	big_init(HM_PROTO_MAX_CHANGES);
	/* a batch part */
	EQ_I(hm_proto_encode_batch(&b, 2, &p), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	EQ_U(m.batch.b.nparts, HM_PROTO_MAX_PARTS);
	EQ_U(m.batch.b.part, HM_PROTO_MAX_PARTS - 1);
	assert_part_eq(&m.batch.b, &p);
	/* a control request */
	hm_pbuf_reset(&b);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 3, 4, big, HM_PROTO_MAX_CHANGES), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	assert_changes_eq(m.ctl_req.changes, big, HM_PROTO_MAX_CHANGES);
	/* a snapshot chunk */
	hm_pbuf_reset(&b);
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, HM_PROTO_MAX_CHANGES), 0);
	for (uint32_t i = 0; i < HM_PROTO_MAX_CHANGES; i++)
		EQ_I(hm_proto_add_change(&b, &big[i]), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	assert_changes_eq(m.snapshot_rep.changes, big, HM_PROTO_MAX_CHANGES);
	/* a catch-up reply with the most parts, raw and encoded, one change each */
	hm_pbuf_reset(&b);
	EQ_I(hm_proto_begin_catchup_rep(&b, 5, HM_PROTO_MAX_BATCHES, HM_CATCHUP_OK, false,
					HM_PROTO_MAX_BATCHES),
	     0);
	for (uint32_t i = 0; i < HM_PROTO_MAX_BATCHES; i++) {
		struct hm_batch_part q = {
		    .seq = i + 1, .ts_ms = i, .nparts = 1, .nchanges = 1, .changes = &big[i]};

		EQ_I(i % 3 == 0 ? add_raw(&b, 5, &q) : hm_proto_add_catchup_part(&b, &q), 0);
	}
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	EQ_U(m.catchup_rep.nparts, HM_PROTO_MAX_BATCHES);
	for (uint32_t i = 0; i < HM_PROTO_MAX_BATCHES; i++) {
		EQ_U(m.catchup_rep.parts[i].seq, i + 1);
		EQ_U(m.catchup_rep.parts[i].nchanges, 1);
		assert_change_eq(m.catchup_rep.parts[i].changes, &big[i], i);
	}
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(decoder_reuse)
{
	struct hm_pbuf small, large = {0};
	struct hm_batch_part p = {.seq = 1, .nparts = 1, .nchanges = 3000, .changes = big};
	struct hm_msg m;

	big_init(3000);
	sample_bytes(1, false, &small);
	EQ_I(hm_proto_encode_batch(&large, 1, &p), 0);
	for (int round = 0; round < 3; round++) {
		EQ_I(hm_proto_decode(dec, large.data, large.len, &m), 0);
		assert_part_eq(&m.batch.b, &p);
		EQ_I(hm_proto_decode(dec, small.data, small.len, &m), 0);
		EQ_U(m.batch.b.nchanges, NELEM(few));
		assert_changes_eq(m.batch.b.changes, few, NELEM(few));
	}
	/* A failed decode between two good ones leaves nothing behind. */
	EQ_I(hm_proto_decode(dec, large.data, large.len - 1, &m), HM_ETRUNC);
	EQ_I(hm_proto_decode(dec, small.data, small.len, &m), 0);
	assert_changes_eq(m.batch.b.changes, few, NELEM(few));
	hm_pbuf_fini(&small);
	hm_pbuf_fini(&large);
}
END_TEST

/* ---- Rejections, walked over every sample ------------------------------------------------- */

START_TEST(truncation_at_every_offset)
{
	for (int i = 0; i < NSAMPLES; i++) {
		struct hm_pbuf b;

		sample_bytes(i, false, &b);
		for (size_t n = 0; n < b.len; n++)
			REQUIRE(verdict(b.data, n) == HM_ETRUNC, "sample %d cut at %zu: %s", i, n,
				hm_errname(verdict(b.data, n)));
		EQ_I(verdict(b.data, b.len), 0);
		hm_pbuf_fini(&b);
	}
}
END_TEST

static int category(enum tv_kind k)
{
	return k == TV_INT ? TV_UINT : (int)k;
}

static int repl_category(enum repl r)
{
	switch (r) {
	case R_TRUE:
	case R_FALSE:
		return TV_BOOL;
	case R_UINT:
		return TV_UINT;
	case R_STR:
		return TV_STR;
	case R_BIN:
		return TV_BIN;
	case R_ARR:
		return TV_ARR;
	default:
		return -1;
	}
}

START_TEST(every_field_mistyped)
{
	long cases = 0;

	for (int i = 0; i < NSAMPLES; i++) {
		struct tv *t = sample_tree(i);
		long nodes = tv_count(t);

		for (long at = 0; at < nodes; at++) {
			long k = 0;
			const struct tv *node = tv_node(t, &k, at);

			for (int r = 0; r < NREPL; r++) {
				struct mut m = {.mode = MUT_REPLACE, .target = at, .repl = r};
				msgpack_sbuffer sb;
				int rc;

				if (repl_category(r) == category(node->kind))
					continue;
				tv_pack(t, &m, &sb);
				rc = verdict(sb.data, sb.size);
				REQUIRE(rc == HM_ETYPE, "sample %d node %ld as %d: %s", i, at, r,
					hm_errname(rc));
				msgpack_sbuffer_destroy(&sb);
				cases++;
			}
		}
	}
	ck_assert_int_gt(cases, 1000);
}
END_TEST

/* Lists are the arrays whose length the sender chooses; every other array is a record. */
static bool is_list(const struct tv *root, const struct tv *node)
{
	if (node->kind != TV_ARR || node == root)
		return false;
	/* A list is the last element of its record and holds records (or nothing); a record's
	 * first element is a number. */
	return node->nk == 0 || node->k[0]->kind == TV_ARR;
}

START_TEST(every_record_wrong_arity)
{
	long cases = 0;

	for (int i = 0; i < NSAMPLES; i++) {
		struct tv *t = sample_tree(i);
		long nodes = tv_count(t);

		for (long at = 0; at < nodes; at++) {
			long k = 0;
			const struct tv *node = tv_node(t, &k, at);

			if (node->kind != TV_ARR || is_list(t, node))
				continue;
			for (int mode = MUT_APPEND; mode <= MUT_DROP; mode++) {
				struct mut m = {.mode = mode, .target = at};
				msgpack_sbuffer sb;
				int rc;

				tv_pack(t, &m, &sb);
				rc = verdict(sb.data, sb.size);
				REQUIRE(rc == HM_EARITY, "sample %d node %ld mode %d: %s", i, at,
					mode, hm_errname(rc));
				msgpack_sbuffer_destroy(&sb);
				cases++;
			}
		}
	}
	ck_assert_int_gt(cases, 100);
}
END_TEST

START_TEST(trailing_bytes)
{
	for (int i = 0; i < NSAMPLES; i++) {
		struct hm_pbuf b;
		size_t len;

		sample_bytes(i, false, &b);
		len = b.len;
		EQ_I(hm_proto_encode_catchup_req(&b, 1, 2, 3), 0);
		EQ_I(verdict(b.data, len + 1), HM_ETRAILING);
		EQ_I(verdict(b.data, b.len), HM_ETRAILING);
		hm_pbuf_fini(&b);
	}
}
END_TEST

/* ---- Rejections, case by case ------------------------------------------------------------- */

/* Raw bytes and the verdict on them. */
struct raw_case {
	const char *what;
	uint8_t b[40];
	size_t n;
	int want;
};

static void run_raw(const struct raw_case *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = verdict(c[i].b, c[i].n);

		REQUIRE(rc == c[i].want, "%s: got %s, want %s", c[i].what, ename(rc),
			ename(c[i].want));
	}
}

START_TEST(head_errors)
{
	/* clang-format off */
	static const struct raw_case c[] = {
		{"empty input", {0}, 0, HM_ETRUNC},
		{"[]", {0x90}, 1, HM_EARITY},
		{"[1]", {0x91, 0x01}, 2, HM_EARITY},
		{"not an array", {0x01}, 1, HM_ETYPE},
		{"a map", {0x80}, 1, HM_ETYPE},
		{"type 0", {0x92, 0x00, 0x01}, 3, HM_EUNKNOWN},
		{"type 9", {0x92, 0x09, 0x01}, 3, HM_EUNKNOWN},
		{"type -1", {0x92, 0xff, 0x01}, 3, HM_EUNKNOWN},
		{"type 2^56 + 1", {0x92, 0xcf, 1, 0, 0, 0, 0, 0, 0, 1, 0x01}, 11, HM_EUNKNOWN},
		{"type as str", {0x92, 0xa1, 'x', 0x01}, 4, HM_ETYPE},
		{"version 0", {0x92, 0x02, 0x00}, 3, HM_ERANGE},
		{"version -1", {0x92, 0x02, 0xff}, 3, HM_ERANGE},
		{"version as str", {0x92, 0x02, 0xa0}, 3, HM_ETYPE},
		/* A newer version is reported before its arity is judged. */
		{"version 2", {0x92, 0x02, 0x02}, 3, HM_EVERSION},
		{"version 2^63", {0x92, 0x02, 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0}, 11, HM_EVERSION},
		{"version 1, 2 fields", {0x92, 0x02, 0x01}, 3, HM_EARITY},
	};
	/* clang-format on */

	run_raw(c, NELEM(c));
}
END_TEST

START_TEST(newer_versions)
{
	/* Every type at the version after this build's, with one more field. */
	for (int i = 0; i < NSAMPLES; i++) {
		struct tv *t = sample_tree(i);
		struct hm_msg m;

		sample_msg(i, &m);
		t->k[1] = U(hm_proto_version(m.type) + 1);
		t->k[t->nk++] = STR("added in the next version");
		EQ_I(tv_verdict(t), HM_EVERSION);
	}
}
END_TEST

START_TEST(integer_formats)
{
	/* msgpack has one integer type: any format holding the value is accepted. */
	/* clang-format off */
	static const uint8_t wide[] = {
		0x94,
		0xcf, 0, 0, 0, 0, 0, 0, 0, 5,   /* type 5 as uint64 */
		0xd0, 0x01,                     /* version 1 as int8 */
		0xd3, 0, 0, 0, 0, 0, 0, 0, 7,   /* snap_id 7 as int64 */
		0xcd, 0x00, 0x02,               /* chunk 2 as uint16 */
	};
	/* CATCHUP_REQ with from_part -1 */
	static const uint8_t negpart[] = {0x95, 0x03, 0x01, 0x01, 0x01, 0xff};
	/* clang-format on */
	struct hm_msg m;

	EQ_I(decode_copy(wide, sizeof(wide), &m), 0);
	EQ_U(m.type, HM_MSG_SNAPSHOT_REQ);
	EQ_U(m.snapshot_req.snap_id, 7);
	EQ_U(m.snapshot_req.chunk, 2);
	/* A negative number where a count is wanted is out of range, not mistyped. */
	EQ_I(verdict(negpart, sizeof(negpart)), HM_ERANGE);
}
END_TEST

struct tcase_def {
	struct tv *t;
	int want;
	const char *what;
};

static void run_cases(const struct tcase_def *c, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int rc = tv_verdict(c[i].t);

		REQUIRE(rc == c[i].want, "%s: got %s, want %s", c[i].what, ename(rc),
			ename(c[i].want));
	}
}

#define BAT(seq, part, nparts) T_batch(3, seq, 0, part, nparts, A0())
#define CREP(head, status, more, ...)                                                              \
	A(U(4), U(1), U(3), U(head), U(status), B(more), A(__VA_ARGS__))
#define CREP0(head, status, more) A(U(4), U(1), U(3), U(head), U(status), B(more), A0())

START_TEST(out_of_range)
{
	const uint64_t P = HM_PROTO_MAX_PARTS;
	const struct tcase_def c[] = {
	    {T_batch(0, 1, 0, 0, 1, A0()), HM_ERANGE, "batch epoch 0"},
	    {T_batch(1, 0, 0, 0, 1, A0()), HM_ERANGE, "batch seq 0"},
	    {T_batch(1, 1, 0, 0, 0, A0()), HM_ERANGE, "batch nparts 0"},
	    {T_batch(1, 1, 0, 0, P + 1, A0()), HM_ERANGE, "batch nparts over max"},
	    {T_batch(1, 1, 0, 1, 1, A0()), HM_ERANGE, "batch part == nparts"},
	    {T_batch(1, 1, 0, 1ull << 32, P, A0()), HM_ERANGE, "batch part over 32 bits"},
	    {T_batch(1, 1, 0, 0, 1ull << 32, A0()), HM_ERANGE, "batch nparts over 32 bits"},
	    {A(U(1), U(1), U(1), U(1), I(-1), U(0), U(1), A0()), HM_ERANGE, "batch ts negative"},
	    {A(U(1), U(1), I(-3), U(1), U(0), U(0), U(1), A0()), HM_ERANGE, "batch epoch negative"},
	    {T_batch(1, 1, 0, P - 1, P, A0()), 0, "batch last part of the most"},
	    {A(U(2), U(1), U(0), U(0), U(0), BIN(DIGEST, 16)), HM_ERANGE, "heartbeat epoch 0"},
	    {A(U(2), U(1), U(1), U(0), U(0), BIN(DIGEST, 15)), HM_ERANGE, "digest 15 bytes"},
	    {A(U(2), U(1), U(1), U(0), U(0), BIN(REQ_ID, 0)), HM_ERANGE, "digest empty"},
	    {A(U(2), U(1), U(1), U(0), U(0), BIN(names, 17)), HM_ERANGE, "digest 17 bytes"},
	    {A(U(3), U(1), U(0), U(0), U(P)), HM_ERANGE, "catch-up from_part max"},
	    {A(U(3), U(1), U(0), U(0), U(P - 1)), 0, "catch-up from_part max - 1, no epoch"},
	    {CREP0(0, 3, false), HM_ERANGE, "catch-up status 3"},
	    {A(U(4), U(1), U(0), U(0), U(0), B(false), A0()), HM_ERANGE, "catch-up rep epoch 0"},
	    {CREP(9, 1, false, BAT(5, 0, 1)), HM_ERANGE, "SNAPSHOT status with a part"},
	    {CREP0(9, 2, true), HM_ERANGE, "EPOCH status with more"},
	    {CREP0(9, 0, true), HM_ERANGE, "more with no parts"},
	    {CREP0(9, 2, false), 0, "EPOCH status alone"},
	    {CREP(9, 0, false, T_batch(4, 5, 0, 0, 1, A0())), HM_ERANGE, "embedded epoch differs"},
	    {CREP(4, 0, false, BAT(5, 0, 1)), HM_ERANGE, "part after head_seq"},
	    {CREP(9, 0, false, BAT(5, 0, 1), BAT(7, 0, 1)), HM_ERANGE, "seq gap"},
	    {CREP(9, 0, false, BAT(5, 0, 3), BAT(5, 2, 3)), HM_ERANGE, "part skipped"},
	    {CREP(9, 0, false, BAT(5, 0, 3), BAT(5, 1, 2)), HM_ERANGE, "nparts changed"},
	    {CREP(9, 0, false, BAT(5, 0, 2), BAT(6, 0, 1)), HM_ERANGE, "batch left incomplete"},
	    {CREP(9, 0, false, BAT(5, 0, 1), BAT(6, 1, 2)), HM_ERANGE, "batch begun mid-way"},
	    {CREP(9, 0, false, BAT(5, 0, 1), BAT(5, 0, 1)), HM_ERANGE, "batch repeated"},
	    {CREP(9, 0, true, BAT(5, 1, 2), BAT(6, 0, 2), BAT(6, 1, 2), BAT(7, 0, 1)), 0,
	     "contiguous parts, starting mid-batch"},
	    {CREP(9, 0, false, A(U(2), U(1), U(3), U(0), U(0), BIN(DIGEST, 16))), HM_ERANGE,
	     "heartbeat inside a catch-up reply"},
	    {CREP(9, 0, false, A(U(1), U(0), U(3), U(5), U(0), U(0), U(1), A0())), HM_ERANGE,
	     "embedded version 0"},
	    {CREP(9, 0, false, A(U(1), U(4), U(3), U(5), U(0), U(0), U(1), A0(), U(0))),
	     HM_EVERSION, "embedded version 4"},
	    {CREP(9, 0, false, A(U(1))), HM_EARITY, "embedded batch of one element"},
	    {A(U(5), U(1), U(0), U(1)), HM_ERANGE, "snapshot chunk 1 of the latest"},
	    {A(U(5), U(1), U(0), U(0)), 0, "snapshot chunk 0 of the latest"},
	    {A(U(5), U(1), U(1), U(1ull << 32)), HM_ERANGE, "snapshot chunk over 32 bits"},
	    {T_snapshot_rep(0, 1, 1, 0, 1, A0()), HM_ERANGE, "snapshot epoch 0"},
	    {T_snapshot_rep(1, 0, 1, 0, 1, A0()), 0, "snapshot at seq 0"},
	    {T_snapshot_rep(1, 1, 0, 0, 1, A0()), HM_ERANGE, "snapshot id 0"},
	    {T_snapshot_rep(1, 1, 1, 1, 1, A0()), HM_ERANGE, "snapshot chunk == nchunks"},
	    {T_snapshot_rep(1, 1, 1, 0, 0, A0()), HM_ERANGE, "snapshot nchunks 0"},
	    {A(U(6), U(1), U(1), U(1), U(1), U(0), U(1), U(1ull << 32), U(1), U(1), BIN(DIGEST, 16),
	       A0()),
	     HM_ERANGE, "snapshot apps over 32 bits"},
	    {A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(0), A0()), HM_ERANGE, "ctl nparts 0"},
	    {A(U(7), U(1), BIN(REQ_ID, 16), U(2), U(2), A0()), HM_ERANGE, "ctl part == nparts"},
	    {A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(P + 1), A0()), HM_ERANGE, "ctl nparts max"},
	    {A(U(7), U(1), BIN(REQ_ID, 8), U(0), U(1), A0()), HM_ERANGE, "ctl req_id 8 bytes"},
	    {A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1), A0()), 0, "ctl with no changes"},
	    {T_ctl_rep(3, 0, 0, -1, 0, ""), HM_ERANGE, "ctl status 3"},
	    {T_ctl_rep(0, 0, 1, 0, UINT32_MAX, ""), HM_ERANGE, "ACK epoch 0"},
	    {T_ctl_rep(0, 1, 0, 0, UINT32_MAX, ""), 0, "ACK at seq 0"},
	    {T_ctl_rep(0, 1, 1, -1, UINT32_MAX, ""), HM_ERANGE, "ACK with a code"},
	    {T_ctl_rep(0, 1, 1, 0, 0, ""), HM_ERANGE, "ACK with an index"},
	    {T_ctl_rep(0, 1, 1, 0, UINT32_MAX, "x"), 0, "ACK with warnings (version 2)"},
	    {A(U(8), U(1), BIN(REQ_ID, 16), U(0), U(1), U(1), U(0), U(UINT32_MAX), STR("x")),
	     HM_ERANGE, "ACK with a reason in version 1"},
	    {T_ctl_rep(1, 0, 0, 0, UINT32_MAX, "x"), HM_ERANGE, "STAGED with a reason"},
	    {T_ctl_rep(1, 1, 0, 0, UINT32_MAX, ""), HM_ERANGE, "STAGED with an epoch"},
	    {T_ctl_rep(1, 0, 1, 0, UINT32_MAX, ""), HM_ERANGE, "STAGED with a seq"},
	    {T_ctl_rep(2, 0, 0, 0, 0, "x"), HM_ERANGE, "ERROR with code 0"},
	    {A(U(8), U(1), BIN(REQ_ID, 16), U(2), U(0), U(0), U(5), U(0), STR("x")), HM_ERANGE,
	     "ERROR with a positive code"},
	    {T_ctl_rep(2, 0, 0, (int64_t)INT32_MIN - 1, 0, "x"), HM_ERANGE, "code below int32"},
	    {T_ctl_rep(2, 0, 0, INT32_MIN, 0, "x"), 0, "code INT32_MIN"},
	    {T_ctl_rep(2, 0, 0, INT64_MIN, 0, "x"), HM_ERANGE, "code INT64_MIN"},
	    {T_ctl_rep(2, 1, 0, -1, 0, "x"), HM_ERANGE, "ERROR with an epoch"},
	    {T_ctl_rep(2, 0, 0, -1, 1ull << 32, "x"), HM_ERANGE, "index over 32 bits"},
	    {T_ctl_rep(2, 0, 0, -1, UINT32_MAX, ""), 0, "ERROR of no one change, no reason"},
	};

	run_cases(c, NELEM(c));
}
END_TEST

START_TEST(ctl_rep_code_sign)
{
	struct hm_msg m;
	msgpack_sbuffer sb;

	tv_pack(T_ctl_rep(2, 0, 0, INT32_MIN, 7, "why"), NULL, &sb);
	EQ_I(hm_proto_decode(dec, sb.data, sb.size, &m), 0);
	EQ_I(m.ctl_rep.code, INT32_MIN);
	EQ_U(m.ctl_rep.index, 7);
	EQ_U(m.ctl_rep.reason_len, 3);
	MEM_EQ(m.ctl_rep.reason, "why", 3);
	msgpack_sbuffer_destroy(&sb);
	tv_pack(T_ctl_rep(2, 0, 0, -EPROTO, 0, ""), NULL, &sb);
	EQ_I(hm_proto_decode(dec, sb.data, sb.size, &m), 0);
	EQ_I(m.ctl_rep.code, -EPROTO);
	msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(too_big)
{
	/* clang-format off */
	static const struct raw_case c[] = {
		/* [1, 1, 1, 1, 0, 0, 1, <list header>] */
		{"batch of 16385", {0x98, 1, 1, 1, 1, 0, 0, 1, 0xdc, 0x40, 0x01}, 11, HM_ETOOBIG},
		{"batch of 2^32 - 1",
		 {0x98, 1, 1, 1, 1, 0, 0, 1, 0xdd, 0xff, 0xff, 0xff, 0xff}, 13, HM_ETOOBIG},
		{"16384, no bytes", {0x98, 1, 1, 1, 1, 0, 0, 1, 0xdc, 0x40, 0x00}, 11, HM_ETRUNC},
		/* [4, 1, 1, 1, 0, false, <list header>] */
		{"catch-up of 4097", {0x97, 4, 1, 1, 1, 0, 0xc2, 0xdc, 0x10, 0x01}, 10, HM_ETOOBIG},
		/* [7, 1, bin16, 0, 1, <list header>] */
		{"control request of 16385",
		 {0x96, 7, 1, 0xc4, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		  0, 1, 0xdc, 0x40, 0x01}, 26, HM_ETOOBIG},
		/* [6, 1, 1, 1, 1, 0, 1, 0, 0, 0, bin16, <list header>] */
		{"snapshot of 16385",
		 {0x9c, 6, 1, 1, 1, 1, 0, 1, 0, 0, 0,
		  0xc4, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
		  0xdc, 0x40, 0x01}, 32, HM_ETOOBIG},
	};
	/* clang-format on */
	static char reason[HM_PROTO_MAX_REASON + 1];
	struct hm_pbuf b = {0};
	uint8_t *huge;

	run_raw(c, NELEM(c));

	memset(reason, 'r', sizeof(reason));
	EQ_I(tv_verdict(T_ctl_rep(2, 0, 0, -1, 0, "")), 0);
	EQ_I(tv_verdict(A(U(8), U(1), BIN(REQ_ID, 16), U(2), U(0), U(0), I(-1), U(0),
			  STRN(reason, HM_PROTO_MAX_REASON))),
	     0);
	EQ_I(tv_verdict(A(U(8), U(1), BIN(REQ_ID, 16), U(2), U(0), U(0), I(-1), U(0),
			  STRN(reason, HM_PROTO_MAX_REASON + 1))),
	     HM_ETOOBIG);

	/* The whole input: HM_PROTO_MAX_MSG bytes are judged on content, one more is not read. */
	huge = calloc(1, HM_PROTO_MAX_MSG + 1);
	EQ_I(hm_proto_encode_catchup_req(&b, 1, 1, 0), 0);
	memcpy(huge, b.data, b.len);
	EQ_I(hm_proto_decode(dec, huge, b.len, &(struct hm_msg){0}), 0);
	EQ_I(hm_proto_decode(dec, huge, HM_PROTO_MAX_MSG, &(struct hm_msg){0}), HM_ETRAILING);
	EQ_I(hm_proto_decode(dec, huge, HM_PROTO_MAX_MSG + 1, &(struct hm_msg){0}), HM_ETOOBIG);
	free(huge);
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(encoders_refuse_too_big)
{
	static char host[HM_HOST_MAX + 1], reason[HM_PROTO_MAX_REASON + 1];
	struct hm_batch_part p = {
	    .seq = 1, .nparts = 1, .nchanges = HM_PROTO_MAX_CHANGES + 1, .changes = big};
	struct hm_snapshot_head h = {.epoch = 1, .snap_id = 1, .nchunks = 1};
	struct hm_pbuf b = {0};
	struct hm_change d;
	size_t before;

	big_init(HM_PROTO_MAX_CHANGES + 1);
	/* A message already in b must survive every refusal below. */
	EQ_I(hm_proto_encode_catchup_req(&b, 1, 2, 3), 0);
	before = b.len;

	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ETOOBIG);
	EQ_U(b.len, before);
	EQ_I(hm_proto_begin_batch(&b, 1, 1, 0, 0, 1, HM_PROTO_MAX_CHANGES + 1), HM_ETOOBIG);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, big, HM_PROTO_MAX_CHANGES + 1), HM_ETOOBIG);
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, HM_PROTO_MAX_CHANGES + 1), HM_ETOOBIG);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, 1, HM_CATCHUP_OK, false, HM_PROTO_MAX_BATCHES + 1),
	     HM_ETOOBIG);
	memset(reason, 'r', sizeof(reason));
	EQ_I(hm_proto_encode_ctl_error(&b, REQ_ID, -1, 0, reason, sizeof(reason)), HM_ETOOBIG);
	EQ_U(b.len, before);

	/* 16384 changes with the longest hostnames are over 4 MiB. */
	memset(host, 'a', sizeof(host));
	for (size_t i = 63; i < HM_HOST_MAX; i += 64)
		host[i] = '.';
	EQ_I(hm_hostname_check(host, HM_HOST_MAX, false), 0);
	d = (struct hm_change){.op = HM_OP_DOMAIN_PUT,
			       .app = "a",
			       .app_len = 1,
			       .name = host,
			       .name_len = HM_HOST_MAX};
	for (uint32_t i = 0; i < HM_PROTO_MAX_CHANGES; i++)
		big[i] = d;
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, big, HM_PROTO_MAX_CHANGES), HM_ETOOBIG);
	EQ_U(b.len, before);
	EQ_I(hm_proto_begin_batch(&b, 1, 1, 0, 0, 1, HM_PROTO_MAX_CHANGES), 0);
	{
		uint32_t i;
		int rc = 0;

		for (i = 0; i < HM_PROTO_MAX_CHANGES && rc == 0; i++)
			rc = hm_proto_add_change(&b, &big[i]);
		EQ_I(rc, HM_ETOOBIG);
		ck_assert_uint_gt(i, HM_PROTO_MAX_CHANGES / 2);
	}
	EQ_U(b.len, before);
	EQ_I(hm_proto_add_change(&b, &big[0]), HM_EARITY);
	/* Half of them fit. */
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, big, HM_PROTO_MAX_CHANGES / 2), 0);
	ck_assert_uint_le(b.len - before, HM_PROTO_MAX_MSG);
	EQ_I(verdict(b.data + before, b.len - before), 0);
	EQ_I(verdict(b.data, before), 0);
	hm_pbuf_fini(&b);
}
END_TEST

/* A valid hostname of exactly n bytes (n < 256): labels of 60 letters. */
static void make_host(char *buf, size_t n)
{
	memset(buf, 'a', n);
	for (size_t i = 60; i + 1 < n; i += 61)
		buf[i] = '.';
	EQ_I(hm_hostname_check(buf, n, false), 0);
}

/* [7, 1, req_id, 0, 1, [changes]] packed by the test, not the encoder, so that it can be too big.
 */
static void pack_ctl_req(msgpack_sbuffer *sb, const struct hm_change *c, uint32_t n)
{
	msgpack_packer pk;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 6);
	msgpack_pack_uint8(&pk, 7);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_bin(&pk, 16);
	msgpack_pack_bin_body(&pk, REQ_ID, 16);
	msgpack_pack_uint8(&pk, 0);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_array(&pk, n);
	for (uint32_t i = 0; i < n; i++) {
		TRUE(c[i].op == HM_OP_DOMAIN_PUT);
		msgpack_pack_array(&pk, 3);
		msgpack_pack_uint8(&pk, c[i].op);
		msgpack_pack_str(&pk, c[i].name_len);
		msgpack_pack_str_body(&pk, c[i].name, c[i].name_len);
		msgpack_pack_str(&pk, c[i].app_len);
		msgpack_pack_str_body(&pk, c[i].app, c[i].app_len);
	}
}

START_TEST(change_sizes)
{
	struct hm_pbuf b = {0};
	struct hm_change bad = {.op = 0};

	for (size_t i = 0; i < NELEM(all_ops); i++) {
		size_t before;

		EQ_I(hm_proto_begin_batch(&b, 1, 1, 0, 0, 1, 1), 0);
		before = b.len;
		EQ_I(hm_proto_add_change(&b, &all_ops[i]), 0);
		EQ_U(hm_proto_change_size(&all_ops[i]), b.len - before);
		hm_pbuf_reset(&b);
	}
	EQ_U(hm_proto_change_size(&bad), 0);

	/* The largest change (docs/protocol.md): a wildcard of 253 bytes plus "*." and ".", and an
	 * app of 63. */
	{
		static char host[256], app[63];
		struct hm_change big_one = {.op = HM_OP_DOMAIN_PUT,
					    .app = app,
					    .app_len = 63,
					    .name = host,
					    .name_len = 256};

		memcpy(host, "*.", 2);
		make_host(host + 2, 253);
		host[255] = '.';
		memset(app, 'a', sizeof(app));
		EQ_I(hm_change_check(&big_one), 0);
		EQ_U(hm_proto_change_size(&big_one), 326);
	}
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(list_bound)
{
	/* 16384 changes of 255 and 256 bytes: the list is exactly HM_PROTO_MAX_LIST bytes with
	 * 12288 of the longer ones. */
	static char h249[249], h250[250];
	const uint32_t at_bound = HM_PROTO_MAX_LIST - HM_PROTO_MAX_CHANGES * 255u;
	struct hm_change c249, c250;
	struct hm_batch_part p = {
	    .seq = 1, .nparts = 1, .nchanges = HM_PROTO_MAX_CHANGES, .changes = big};
	struct hm_proto_error e;
	struct hm_pbuf b = {0};
	msgpack_sbuffer sb;

	make_host(h249, sizeof(h249));
	make_host(h250, sizeof(h250));
	c249 = (struct hm_change){.op = HM_OP_DOMAIN_PUT,
				  .app = "a",
				  .app_len = 1,
				  .name = h249,
				  .name_len = sizeof(h249)};
	c250 = c249;
	c250.name = h250;
	c250.name_len = sizeof(h250);
	EQ_U(hm_proto_change_size(&c249), 255);
	EQ_U(hm_proto_change_size(&c250), 256);
	EQ_U(at_bound, 12288);
	for (uint32_t i = 0; i < HM_PROTO_MAX_CHANGES; i++)
		big[i] = i < at_bound ? c250 : c249;

	/* At the bound: a control request, and its changes as one BATCH in a catch-up reply. */
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, big, HM_PROTO_MAX_CHANGES), 0);
	EQ_I(verdict(b.data, b.len), 0);
	hm_pbuf_reset(&b);
	EQ_I(hm_proto_begin_catchup_rep(&b, UINT64_MAX, UINT64_MAX, HM_CATCHUP_OK, false, 1), 0);
	p.seq = UINT64_MAX;
	p.ts_ms = UINT64_MAX;
	p.part = HM_PROTO_MAX_PARTS - 1;
	p.nparts = HM_PROTO_MAX_PARTS;
	EQ_I(hm_proto_add_catchup_part(&b, &p), 0);
	EQ_I(verdict(b.data, b.len), 0);
	hm_pbuf_reset(&b);

	/* One byte more: every encoder refuses, and so does the decoder. */
	big[at_bound] = c250;
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, big, HM_PROTO_MAX_CHANGES), HM_ETOOBIG);
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ETOOBIG);
	EQ_U(b.len, 0);
	pack_ctl_req(&sb, big, HM_PROTO_MAX_CHANGES);
	TRUE(sb.size <= HM_PROTO_MAX_MSG);
	EQ_I(verdict(sb.data, sb.size), HM_ETOOBIG);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.change, HM_PROTO_MAX_CHANGES - 1);
	msgpack_sbuffer_destroy(&sb);
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(catchup_message_bound)
{
	/* 4096 batches of about 1 KiB do not fit one reply: the add that would overflow fails. */
	static char h250[250];
	struct hm_change c[4];
	struct hm_pbuf b = {0};
	int rc = 0;
	uint32_t i;

	make_host(h250, sizeof(h250));
	for (i = 0; i < 4; i++)
		c[i] = (struct hm_change){.op = HM_OP_DOMAIN_PUT,
					  .app = "a",
					  .app_len = 1,
					  .name = h250,
					  .name_len = sizeof(h250)};
	EQ_I(hm_proto_encode_heartbeat(&b, 1, 1, 1, DIGEST), 0);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, HM_PROTO_MAX_BATCHES, HM_CATCHUP_OK, false,
					HM_PROTO_MAX_BATCHES),
	     0);
	for (i = 0; i < HM_PROTO_MAX_BATCHES && rc == 0; i++) {
		struct hm_batch_part p = {.seq = i + 1, .nparts = 1, .nchanges = 4, .changes = c};

		rc = hm_proto_add_catchup_part(&b, &p);
	}
	EQ_I(rc, HM_ETOOBIG);
	TRUE(i > HM_PROTO_MAX_BATCHES * 3 / 4);
	EQ_I(verdict(b.data, b.len), 0); /* only the heartbeat is left */
	hm_pbuf_fini(&b);
}
END_TEST

#define BATCH1(change) T_batch(1, 1, 0, 0, 1, A(change))

START_TEST(grammar)
{
	static char longstr[65536 + 20];
	struct tv *snap_rm[3];
	/* Lengths that would wrap in hm_change's 8- and 16-bit length fields. */
	memset(longstr, 'a', sizeof(longstr));
	memcpy(longstr + 1, ".example.com", 12);
	EQ_I(hm_hostname_check(longstr, 13, false), 0);

	const struct tcase_def c[] = {
	    {BATCH1(A(U(1), STR(""), B(0), B(0), U(0))), HM_EAPPNAME, "empty app"},
	    {BATCH1(A(U(1), STR("Shop"), B(0), B(0), U(0))), HM_EAPPNAME, "upper-case app"},
	    {BATCH1(A(U(1), STRN(longstr + 100, 64), B(0), B(0), U(0))), HM_EAPPNAME, "app 64"},
	    {BATCH1(A(U(1), STRN(longstr + 100, 63), B(0), B(0), U(0))), 0, "app 63"},
	    {BATCH1(A(U(1), STRN(longstr + 100, 256 + 5), B(0), B(0), U(0))), HM_EAPPNAME,
	     "app of 261 bytes (5 mod 256)"},
	    {BATCH1(A(U(2), STR("a_b"))), HM_EAPPNAME, "app.rm bad app"},
	    {BATCH1(A(U(1), STR("a"), B(0), B(0), U(2))), HM_EBALANCE, "balance 2"},
	    {BATCH1(A(U(1), STR("a"), B(0), B(0), I(-1))), HM_EBALANCE, "balance -1"},
	    {BATCH1(A(U(3), STR("a..b"), STR("a"))), HM_EHOSTNAME, "empty label"},
	    {BATCH1(A(U(3), STR("a.*.com"), STR("a"))), HM_EHOSTNAME, "inner wildcard"},
	    {BATCH1(A(U(3), STR("*.x.y"), STR("a"))), 0, "wildcard"},
	    {BATCH1(A(U(3), STR("EXAMPLE.com."), STR("a"))), 0, "case and trailing dot"},
	    {BATCH1(A(U(3), STR("x.y"), STR("A"))), HM_EAPPNAME, "domain of a bad app"},
	    {BATCH1(A(U(3), STRN(longstr, 257), STR("a"))), HM_EHOSTNAME, "hostname 257"},
	    {BATCH1(A(U(3), STRN(longstr, 65536 + 13), STR("a"))), HM_EHOSTNAME,
	     "hostname of 65549 bytes (13 mod 65536)"},
	    {BATCH1(A(U(4), STR("*"))), HM_EHOSTNAME, "domain.rm *"},
	    {BATCH1(A(U(4), STR(""))), HM_EHOSTNAME, "domain.rm empty"},
	    {BATCH1(A(U(5), STR("a"), STR("web"), STR("10.0.0.1:80"), U(1))), HM_EDYNONAME,
	     "dyno without number"},
	    {BATCH1(A(U(5), STR("a"), STRN(longstr + 100, 62), STR("10.0.0.1:80"), U(1))),
	     HM_EDYNONAME, "dyno without dot"},
	    {BATCH1(A(U(5), STR("a"), STRN(longstr, 256 + 5), STR("10.0.0.1:80"), U(1))),
	     HM_EDYNONAME, "dyno of 261 bytes"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1"), U(1))), HM_EADDR, "no port"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:0"), U(1))), HM_EADDR, "port 0"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:65536"), U(1))), HM_EADDR,
	     "port 65536"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("[::1]"), U(1))), HM_EADDR, "v6 no port"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("localhost:80"), U(1))), HM_EADDR,
	     "a name, not an address"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR(""), U(1))), HM_EADDR, "empty address"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STRN(longstr, 300), U(1))), HM_EADDR,
	     "long address"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"),
		      STR("[2001:0db8:0000:0000:0000:ff00:0042:8329]:65535"), U(4))),
	     0, "longest address"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:80"), U(0))), HM_ESTATE,
	     "state 0"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:80"), U(5))), HM_ESTATE,
	     "state 5"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:80"), U(257))), HM_ESTATE,
	     "state 257 (1 mod 256)"},
	    {BATCH1(A(U(5), STR("a"), STR("web.1"), STR("10.0.0.1:80"), I(-1))), HM_ESTATE,
	     "state -1"},
	    {BATCH1(A(U(6), STR("a"), STR("web.x"))), HM_EDYNONAME, "dyno.rm bad dyno"},
	    {BATCH1(A(U(0), STR("a"))), HM_EOP, "op 0"},
	    {BATCH1(A(U(11), STR("a"))), HM_EOP, "op 11"},
	    {BATCH1(A(U(263), STR("a"))), HM_EOP, "op 263 (7 mod 256)"},
	    {BATCH1(A(I(-1), STR("a"))), HM_EOP, "op -1"},
	    {BATCH1(A0()), HM_EARITY, "empty change"},
	    {T_snapshot_rep(1, 1, 1, 0, 1, T_CHANGES(PUTS)), 0, "snapshot of puts"},
	    {T_snapshot_rep(1, 1, 1, 0, 1, A(U(2), STR("a"))), HM_ETYPE, "change not in a list"},
	    {T_snapshot_rep(1, 1, 1, 0, 1, A(T_change(&PUTS[0]), snap_rm[0] = A(U(2), STR("a")))),
	     HM_EOP, "app.rm in a snapshot"},
	    {T_snapshot_rep(1, 1, 1, 0, 1, A(snap_rm[1] = A(U(4), STR("a.b")))), HM_EOP,
	     "domain.rm in a snapshot"},
	    {T_snapshot_rep(1, 1, 1, 0, 1, A(snap_rm[2] = A(U(6), STR("a"), STR("web.1")))), HM_EOP,
	     "dyno.rm in a snapshot"},
	    {A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1), A(A(U(2), STR("a")), A(U(2), STR("B")))),
	     HM_EAPPNAME, "control request"},
	};

	run_cases(c, NELEM(c));
}
END_TEST

START_TEST(decode_error_info)
{
	struct hm_proto_error e;
	uint8_t other[16] = {9};

	EQ_I(
	    tv_verdict(A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1),
			 A(A(U(2), STR("a")), A(U(2), STR("b")), A(U(3), STR("x.y"), STR("Bad"))))),
	    HM_EAPPNAME);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_CTL_REQ);
	TRUE(e.has_req_id);
	MEM_EQ(e.req_id, REQ_ID, 16);
	EQ_U(e.change, 2);

	EQ_I(tv_verdict(A(U(7), U(1), BIN(other, 16), U(1), U(1), A0())), HM_ERANGE);
	hm_proto_decode_error(dec, &e);
	TRUE(e.has_req_id);
	MEM_EQ(e.req_id, other, 16);
	EQ_U(e.change, UINT32_MAX);

	EQ_I(tv_verdict(A(U(7), U(1), BIN(REQ_ID, 15), U(0), U(1), A0())), HM_ERANGE);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_CTL_REQ);
	TRUE(!e.has_req_id);

	EQ_I(tv_verdict(T_batch(1, 1, 0, 0, 1, A(A(U(2), STR("a")), A(U(11))))), HM_EOP);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_BATCH);
	TRUE(!e.has_req_id);
	EQ_U(e.change, 1);

	EQ_I(tv_verdict(T_snapshot_rep(1, 1, 1, 0, 1, A(A(U(2), STR("a"))))), HM_EOP);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_SNAPSHOT_REP);
	EQ_U(e.change, 0);

	/* Inside a catch-up reply the index would be ambiguous: not given. */
	EQ_I(tv_verdict(CREP(9, 0, false, T_batch(3, 5, 0, 0, 1, A(A(U(11)))))), HM_EOP);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_CATCHUP_REP);
	EQ_U(e.change, UINT32_MAX);

	EQ_I(tv_verdict(A(U(12), U(1))), HM_EUNKNOWN);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, 0);
	EQ_I(tv_verdict(A(U(8), U(3))), HM_EVERSION);
	hm_proto_decode_error(dec, &e);
	EQ_U(e.type, HM_MSG_CTL_REP);
	TRUE(!e.has_req_id);
	EQ_U(e.change, UINT32_MAX);
}
END_TEST

START_TEST(peek)
{
	/* clang-format off */
	static const struct {
		const char *what;
		uint8_t b[12];
		size_t n;
		int want;
		uint8_t type;
		uint32_t version;
	} c[] = {
		{"newer, with more", {0x93, 0x05, 0x07, 0xc0}, 4, 0, 5, 7},
		{"unknown type", {0x92, 0xcc, 200, 1}, 4, 0, 200, 1},
		{"type 256", {0x92, 0xcd, 1, 0, 1}, 5, HM_ERANGE, 0, 0},
		{"version 2^40", {0x92, 1, 0xcf, 0, 0, 1, 0, 0, 0, 0, 0}, 11, HM_ERANGE, 0, 0},
		{"type -1", {0x92, 0xff, 1}, 3, HM_ERANGE, 0, 0},
		{"[1]", {0x91, 1}, 2, HM_EARITY, 0, 0},
		{"a str", {0xa1, 'x'}, 2, HM_ETYPE, 0, 0},
		{"version as str", {0x92, 1, 0xa0}, 3, HM_ETYPE, 0, 0},
		{"no version", {0x92, 1}, 2, HM_ETRUNC, 0, 0},
		{"empty", {0}, 0, HM_ETRUNC, 0, 0},
	};
	/* clang-format on */
	uint8_t type = 0;
	uint32_t version = 0;

	for (int i = 0; i < NSAMPLES; i++) {
		struct hm_msg m;
		struct hm_pbuf b;

		sample_msg(i, &m);
		sample_bytes(i, false, &b);
		EQ_I(hm_proto_peek(b.data, b.len, &type, &version), 0);
		EQ_U(type, m.type);
		EQ_U(version, hm_proto_version(m.type));
		/* The head is enough: a cut body does not matter. */
		EQ_I(hm_proto_peek(b.data, 3, &type, &version), 0);
		EQ_U(type, m.type);
		EQ_I(hm_proto_peek(b.data, 2, &type, &version), HM_ETRUNC);
		hm_pbuf_fini(&b);
	}
	for (size_t i = 0; i < NELEM(c); i++) {
		int rc = hm_proto_peek(c[i].b, c[i].n, &type, &version);

		REQUIRE(rc == c[i].want, "%s: %s", c[i].what, ename(rc));
		REQUIRE(rc != 0 || (type == c[i].type && version == c[i].version), "%s: %u %u",
			c[i].what, type, version);
	}
}
END_TEST

/* ---- Encoder contracts -------------------------------------------------------------------- */

START_TEST(encoders_refuse_out_of_range)
{
	struct hm_pbuf b = {0};
	struct hm_batch_part p = {.seq = 1, .nparts = 1};
	struct hm_snapshot_head h = {.epoch = 1, .snap_id = 1, .nchunks = 1};
	struct hm_change bad = {.op = 11};

	EQ_I(hm_proto_encode_batch(&b, 0, &p), HM_ERANGE);
	p.seq = 0;
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ERANGE);
	p = (struct hm_batch_part){.seq = 1, .part = 1, .nparts = 1};
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ERANGE);
	p = (struct hm_batch_part){.seq = 1, .nparts = 0};
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ERANGE);
	p.nparts = HM_PROTO_MAX_PARTS + 1;
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_ERANGE);
	p = (struct hm_batch_part){.seq = 1, .nparts = 1, .nchanges = 1, .changes = &bad};
	EQ_I(hm_proto_encode_batch(&b, 1, &p), HM_EOP);
	EQ_I(hm_proto_encode_heartbeat(&b, 0, 1, 1, DIGEST), HM_ERANGE);
	EQ_I(hm_proto_encode_catchup_req(&b, 1, 1, HM_PROTO_MAX_PARTS), HM_ERANGE);
	EQ_I(hm_proto_encode_snapshot_req(&b, 0, 1), HM_ERANGE);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 1, 1, NULL, 0), HM_ERANGE);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 0, NULL, 0), HM_ERANGE);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, &bad, 1), HM_EOP);
	EQ_I(hm_proto_encode_ctl_ack(&b, REQ_ID, 0, 1), HM_ERANGE);
	EQ_I(hm_proto_encode_ctl_error(&b, REQ_ID, 0, 0, "x", 1), HM_ERANGE);
	EQ_I(hm_proto_encode_ctl_error(&b, REQ_ID, 1, 0, "x", 1), HM_ERANGE);
	EQ_I(hm_proto_begin_catchup_rep(&b, 0, 1, HM_CATCHUP_OK, false, 0), HM_ERANGE);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, 1, 3, false, 0), HM_ERANGE);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, 1, HM_CATCHUP_SNAPSHOT, false, 1), HM_ERANGE);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, 1, HM_CATCHUP_EPOCH, true, 0), HM_ERANGE);
	EQ_I(hm_proto_begin_catchup_rep(&b, 1, 1, HM_CATCHUP_OK, true, 0), HM_ERANGE);
	h.epoch = 0;
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 0), HM_ERANGE);
	h = (struct hm_snapshot_head){.epoch = 1, .snap_id = 0, .nchunks = 1};
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 0), HM_ERANGE);
	h = (struct hm_snapshot_head){.epoch = 1, .snap_id = 1, .chunk = 1, .nchunks = 1};
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 0), HM_ERANGE);
	EQ_U(b.len, 0);
	/* NULL reason with length 0 is an empty reason. */
	EQ_I(hm_proto_encode_ctl_error(&b, REQ_ID, -1, 0, NULL, 0), 0);
	EQ_I(verdict(b.data, b.len), 0);
	hm_pbuf_fini(&b);
}
END_TEST

START_TEST(step_builders)
{
	struct hm_pbuf b = {0};
	struct hm_snapshot_head h = {.epoch = 1, .snap_id = 1, .nchunks = 1};
	struct hm_batch_part p5 = {.seq = 5, .nparts = 2, .nchanges = 1, .changes = few};
	struct hm_pbuf raw = {0};
	struct hm_msg m;
	size_t first;

	/* Nothing begun, nothing to add to. */
	EQ_I(hm_proto_add_change(&b, &few[0]), HM_EARITY);
	EQ_I(hm_proto_add_catchup_part(&b, &p5), HM_EARITY);
	EQ_I(hm_proto_add_catchup_raw(&b, "x", 1), HM_EARITY);

	/* No item announced: the message is complete at once. */
	EQ_I(hm_proto_begin_batch(&b, 1, 1, 0, 0, 1, 0), 0);
	EQ_I(hm_proto_add_change(&b, &few[0]), HM_EARITY);
	EQ_I(verdict(b.data, b.len), 0);
	first = b.len;

	/* An incomplete message blocks every other encoder, and adds stop at the count. */
	EQ_I(hm_proto_begin_batch(&b, 1, 2, 0, 0, 1, 2), 0);
	EQ_I(hm_proto_add_catchup_part(&b, &p5), HM_EARITY);
	EQ_I(hm_proto_add_change(&b, &few[0]), 0);
	EQ_I(hm_proto_encode_heartbeat(&b, 1, 1, 1, DIGEST), HM_EARITY);
	EQ_I(hm_proto_begin_batch(&b, 1, 3, 0, 0, 1, 1), HM_EARITY);
	EQ_I(verdict(b.data + first, b.len - first), HM_ETRUNC);
	EQ_I(hm_proto_add_change(&b, &few[1]), 0);
	EQ_I(hm_proto_add_change(&b, &few[1]), HM_EARITY);
	EQ_I(decode_copy(b.data + first, b.len - first, &m), 0);
	EQ_U(m.batch.b.nchanges, 2);

	/* hm_pbuf_reset abandons an incomplete message. */
	EQ_I(hm_proto_begin_batch(&b, 1, 2, 0, 0, 1, 2), 0);
	hm_pbuf_reset(&b);
	EQ_I(hm_proto_encode_heartbeat(&b, 1, 1, 1, DIGEST), 0);
	EQ_I(verdict(b.data, b.len), 0);
	first = b.len;

	/* A snapshot takes puts only; a failed add removes the whole message. */
	EQ_I(hm_proto_begin_snapshot_rep(&b, &h, 3), 0);
	EQ_I(hm_proto_add_change(&b, &put_chg[0]), 0);
	EQ_I(hm_proto_add_change(&b, &few[0]), HM_EOP);
	EQ_U(b.len, first);
	EQ_I(hm_proto_add_change(&b, &put_chg[1]), HM_EARITY);
	EQ_I(verdict(b.data, b.len), 0);

	/* Catch-up parts: contiguous, within head_seq, of the reply's epoch, whole BATCHes. */
	EQ_I(hm_proto_encode_batch(&raw, 3, &p5), 0);
	EQ_I(hm_proto_begin_catchup_rep(&b, 3, 6, HM_CATCHUP_OK, false, 3), 0);
	EQ_I(hm_proto_add_change(&b, &few[0]), HM_EARITY);
	EQ_I(hm_proto_add_catchup_raw(&b, raw.data, raw.len), 0);
	p5.part = 1;
	EQ_I(hm_proto_add_catchup_part(&b, &p5), 0);
	{
		struct hm_batch_part p7 = {.seq = 7, .nparts = 1};

		EQ_I(hm_proto_add_catchup_part(&b, &p7), HM_ERANGE);
		EQ_U(b.len, first);
	}
	/* Each of these is refused, and removes the reply. */
	{
		static const uint8_t garbage[] = {0x98, 0x01, 0x01, 0xa1};
		struct hm_pbuf other = {0}, trail = {0}, hb = {0};
		struct hm_batch_part q = {.seq = 5, .nparts = 1};
		const struct {
			const void *p;
			size_t n;
			int want;
		} bad[] = {
		    {NULL, 0, HM_ETRUNC},	    {garbage, sizeof(garbage), HM_ETYPE},
		    {NULL, 1, HM_ERANGE}, /* another epoch (filled below) */
		    {NULL, 2, HM_ETRAILING},	    {NULL, 3, HM_ERANGE}, /* a heartbeat */
		    {raw.data, raw.len, HM_ERANGE}, /* seq 5 after head_seq 4 */
		};

		EQ_I(hm_proto_encode_batch(&other, 4, &q), 0);
		EQ_I(hm_proto_encode_batch(&trail, 3, &q), 0);
		EQ_I(hm_proto_encode_heartbeat(&trail, 3, 1, 1, DIGEST), 0);
		EQ_I(hm_proto_encode_heartbeat(&hb, 3, 1, 1, DIGEST), 0);
		for (size_t i = 0; i < NELEM(bad); i++) {
			const void *p = bad[i].p;
			size_t n = bad[i].n;

			if (p == NULL && n == 1) {
				p = other.data;
				n = other.len;
			} else if (p == NULL && n == 2) {
				p = trail.data;
				n = trail.len;
			} else if (p == NULL && n == 3) {
				p = hb.data;
				n = hb.len;
			}
			EQ_I(hm_proto_begin_catchup_rep(&b, 3, i + 1 == NELEM(bad) ? 4 : 9,
							HM_CATCHUP_OK, false, 1),
			     0);
			REQUIRE(hm_proto_add_catchup_raw(&b, p, n) == bad[i].want, "bad %zu", i);
			EQ_U(b.len, first);
			EQ_I(hm_proto_add_catchup_raw(&b, raw.data, raw.len), HM_EARITY);
		}
		hm_pbuf_fini(&other);
		hm_pbuf_fini(&trail);
		hm_pbuf_fini(&hb);
	}
	EQ_I(verdict(b.data, b.len), 0);

	/* hm_pbuf_take hands over exactly what was written. */
	{
		size_t len = 0;
		char *data = hm_pbuf_take(&b, &len);

		EQ_U(len, first);
		ck_assert_ptr_null(b.data);
		EQ_U(b.len, 0);
		EQ_I(verdict(data, len), 0);
		free(data);
		EQ_I(hm_proto_encode_catchup_req(&b, 1, 1, 1), 0);
	}
	hm_pbuf_fini(&raw);
	hm_pbuf_fini(&b);
}
END_TEST

/* ---- Mutation fuzz ------------------------------------------------------------------------ */

static uint64_t rng = 0x243f6a8885a308d3ull;

static uint64_t rnd(void)
{
	/* xorshift64*: deterministic, so a failure reproduces. */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 0x2545f4914f6cdd1dull;
}

static bool known_code(int rc)
{
	static const int codes[] = {HM_ETRUNC,	 HM_ETYPE,     HM_ERANGE,    HM_ETOOBIG,
				    HM_EUNKNOWN, HM_EVERSION,  HM_ETRAILING, HM_EARITY,
				    HM_EAPPNAME, HM_EDYNONAME, HM_EHOSTNAME, HM_EADDR,
				    HM_ESTATE,	 HM_EBALANCE,  HM_EOP,	     HM_ECONTROL};

	for (size_t i = 0; i < NELEM(codes); i++)
		if (rc == codes[i])
			return true;
	return false;
}

static size_t mutate(uint8_t *buf, size_t len, size_t cap)
{
	static const uint8_t interesting[] = {0x00, 0x01, 0x7f, 0x80, 0x90, 0x9f, 0xa0, 0xbf,
					      0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc6, 0xcc, 0xcf,
					      0xd0, 0xd3, 0xd9, 0xdb, 0xdc, 0xdd, 0xe0, 0xff};
	int n = 1 + (int)(rnd() % 4);

	for (int i = 0; i < n && len > 0; i++) {
		size_t at = rnd() % len;

		switch (rnd() % 7) {
		case 0:
			buf[at] ^= (uint8_t)(1u << (rnd() % 8));
			break;
		case 1:
			buf[at] = (uint8_t)rnd();
			break;
		case 2:
			buf[at] = interesting[rnd() % sizeof(interesting)];
			break;
		case 3:
			if (len < cap) {
				memmove(buf + at + 1, buf + at, len - at);
				buf[at] = (uint8_t)rnd();
				len++;
			}
			break;
		case 4:
			memmove(buf + at, buf + at + 1, len - at - 1);
			len--;
			break;
		case 5:
			len = at;
			break;
		default: { /* repeat a slice */
			size_t n2 = 1 + rnd() % (len - at);

			if (len + n2 <= cap) {
				memmove(buf + at + n2, buf + at, len - at);
				len += n2;
			}
			break;
		}
		}
	}
	return len;
}

/* What a successful decode promises, re-checked: every change passes the grammar, and the
 * encoders take the message back and produce a message that decodes to the same thing. */
static void check_accepted(const struct hm_msg *m)
{
	const struct hm_change *c = NULL;
	struct hm_proto_decoder *d2;
	struct hm_pbuf b = {0};
	struct hm_msg again;
	uint32_t n = 0;

	if (m->type == HM_MSG_BATCH) {
		c = m->batch.b.changes;
		n = m->batch.b.nchanges;
	} else if (m->type == HM_MSG_SNAPSHOT_REP) {
		c = m->snapshot_rep.changes;
		n = m->snapshot_rep.nchanges;
	} else if (m->type == HM_MSG_CTL_REQ) {
		c = m->ctl_req.changes;
		n = m->ctl_req.nchanges;
	}
	for (uint32_t i = 0; i < n; i++)
		EQ_I(hm_change_check(&c[i]), 0);
	EQ_I(encode_msg(&b, m, false), 0);
	EQ_I(hm_proto_decoder_new(&d2), 0);
	EQ_I(hm_proto_decode(d2, b.data, b.len, &again), 0);
	again.version = m->version; /* the encoder writes this build's version of any type */
	assert_msg_eq(&again, m);
	hm_proto_decoder_free(d2);
	hm_pbuf_fini(&b);
}

START_TEST(mutation_fuzz)
{
	struct hm_pbuf seeds[NSAMPLES];
	long outcomes[2] = {0, 0}, raw_ok = 0;

	for (int i = 0; i < NSAMPLES; i++)
		sample_bytes(i, false, &seeds[i]);
	for (long iter = 0; iter < 200000; iter++) {
		const struct hm_pbuf *s = &seeds[rnd() % NSAMPLES];
		size_t cap = s->len * 2 + 16, len;
		uint8_t *work = malloc(cap), *exact;
		struct hm_msg m;
		int rc;

		memcpy(work, s->data, s->len);
		len = mutate(work, s->len, cap);
		exact = malloc(len > 0 ? len : 1);
		memcpy(exact, work, len);
		rc = hm_proto_decode(dec, exact, len, &m);
		REQUIRE(rc == 0 || known_code(rc), "iteration %ld: %d", iter, rc);
		outcomes[rc == 0]++;
		if (rc == 0)
			check_accepted(&m);
		/* A journal record the origin accepts is one an edge accepts. */
		if (iter % 8 == 0 && s == &seeds[0]) {
			struct hm_pbuf b = {0};

			EQ_I(hm_proto_begin_catchup_rep(&b, 3, UINT64_MAX, HM_CATCHUP_OK, false, 1),
			     0);
			if (hm_proto_add_catchup_raw(&b, exact, len) == 0) {
				EQ_I(verdict(b.data, b.len), 0);
				raw_ok++;
			} else {
				EQ_U(b.len, 0);
			}
			hm_pbuf_fini(&b);
		}
		free(exact);
		free(work);
	}
	/* Both verdicts occur, so the loop exercises more than the first byte. */
	ck_assert_int_gt(outcomes[0], 1000);
	ck_assert_int_gt(outcomes[1], 1000);
	ck_assert_int_gt(raw_ok, 10);
	for (int i = 0; i < NSAMPLES; i++)
		hm_pbuf_fini(&seeds[i]);
}
END_TEST

static void fixture_setup(void)
{
	npool = 0;
	changes_init();
	setup();
}

/* Secret ops (version 2 of BATCH and SNAPSHOT_REP): only where the origin sends them. */
START_TEST(secret_ops)
{
	static const uint8_t key[32] = {1,  2,	3,  4,	5,  6,	7,  8,	9,  10, 11,
					12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
					23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
	uint8_t big[HM_SECRET_MAX + 1] = {0};
	struct hm_change put = {.op = HM_OP_SECRET_PUT,
				.name = "affinity",
				.name_len = 8,
				.value = key,
				.value_len = 32};
	struct hm_change rm = {.op = HM_OP_SECRET_RM, .name = "affinity", .name_len = 8};
	struct hm_batch_part p = {.seq = 1, .part = 0, .nparts = 1, .nchanges = 2};
	struct hm_change both[2] = {put, rm};
	struct hm_pbuf b = {0};
	struct hm_msg m;
	struct tv *v1;

	/* A batch carries them, round trip; the size is what the encoder spends. */
	p.changes = both;
	EQ_I(hm_proto_encode_batch(&b, 3, &p), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	EQ_U(m.version, 3);
	EQ_U(m.batch.b.nchanges, 2);
	assert_changes_eq(m.batch.b.changes, both, 2);
	EQ_U(m.batch.b.changes[0].value_len, 32);
	ck_assert(memcmp(m.batch.b.changes[0].value, key, 32) == 0);
	EQ_U(hm_proto_change_size(&put), 1 + 1 + 9 + 2 + 32);
	hm_pbuf_fini(&b);
	/* A control request never: the encoder refuses, and so does the decoder. */
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, &put, 1), HM_EOP);
	EQ_U(b.len, 0);
	EQ_I(tv_verdict(A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1),
			  A(A(U(7), STR("affinity"), BIN(key, 32))))),
	     HM_EOP);
	EQ_I(tv_verdict(A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1), A(A(U(8), STR("affinity"))))),
	     HM_EOP);
	/* Version 1 of a batch or a snapshot chunk has no secret ops. */
	v1 = T_batch(3, 1, 0, 0, 1, A(A(U(7), STR("affinity"), BIN(key, 32))));
	v1->k[1] = U(1);
	EQ_I(tv_verdict(v1), HM_EOP);
	v1 = T_batch(3, 1, 0, 0, 1, A(A(U(1), STR("a"), B(false), B(false), U(0))));
	v1->k[1] = U(1);
	EQ_I(tv_verdict(v1), 0);
	v1 = T_snapshot_rep_old(1, 3, 1, 7, 0, 1, A(A(U(7), STR("affinity"), BIN(key, 32))));
	EQ_I(tv_verdict(v1), HM_EOP);
	/* A snapshot chunk holds puts only: secret.put yes, secret.rm no. */
	EQ_I(tv_verdict(T_snapshot_rep(3, 1, 7, 0, 1, A(A(U(7), STR("affinity"), BIN(key, 32))))),
	     0);
	EQ_I(tv_verdict(T_snapshot_rep(3, 1, 7, 0, 1, A(A(U(8), STR("affinity"))))), HM_EOP);
	/* The grammar: name, length, type. */
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("affinity"), BIN(big, HM_SECRET_MAX + 1)))), HM_ESECRET);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("affinity"), BIN(big, HM_SECRET_MAX)))), 0);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("affinity"), BIN(big, 0)))), HM_ESECRET);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("Affinity"), BIN(key, 32)))), HM_ESECRET);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("a234567890123456789012345678901b"), BIN(key, 32)))),
	     HM_ESECRET);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("affinity"), STR("not bin")))), HM_ETYPE);
	EQ_I(tv_verdict(BATCH1(A(U(7), STR("affinity")))), HM_EARITY);
	EQ_I(tv_verdict(BATCH1(A(U(8), STR("affinity\x1b")))), HM_ECONTROL);
}
END_TEST

START_TEST(cert_ops)
{
	static const char pem[] = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
	static const char key[] =
	    "-----BEGIN PRIVATE KEY-----\r\nMIGH\r\n-----END PRIVATE KEY-----\r\n";
	static const uint8_t meta[] = {0x92, 0xc4, 0x01, 0xaa, 0x90};
	uint8_t id[HM_CERT_ID_LEN];
	struct hm_change full = {.op = HM_OP_CERT_PUT,
				 .name = "*.example.com",
				 .name_len = 13,
				 .cert = pem,
				 .cert_len = sizeof(pem) - 1,
				 .key = key,
				 .key_len = sizeof(key) - 1,
				 .meta = meta,
				 .meta_len = sizeof(meta),
				 .id = id,
				 .not_after = 1900000000};
	struct hm_change client = full,
			 rm = {.op = HM_OP_CERT_RM, .name = "default", .name_len = 7};
	struct hm_change two[2];
	struct hm_batch_part p = {.seq = 1, .part = 0, .nparts = 1, .nchanges = 2, .changes = two};
	struct hm_pbuf b = {0};
	struct hm_msg m;
	struct tv *v;

	for (int i = 0; i < HM_CERT_ID_LEN; i++)
		id[i] = (uint8_t)(i * 7);
	client.id = NULL;
	client.meta = NULL;
	client.meta_len = 0;
	client.not_after = 0;
	two[0] = full;
	two[1] = rm;
	/* The origin's record: a batch carries it whole, round trip, size as spent. */
	EQ_I(hm_proto_encode_batch(&b, 3, &p), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	EQ_U(m.version, 3);
	EQ_U(m.batch.b.nchanges, 2);
	EQ_U(m.batch.b.changes[0].op, HM_OP_CERT_PUT);
	EQ_U(m.batch.b.changes[0].cert_len, sizeof(pem) - 1);
	TRUE(memcmp(m.batch.b.changes[0].cert, pem, sizeof(pem) - 1) == 0);
	EQ_U(m.batch.b.changes[0].key_len, sizeof(key) - 1);
	TRUE(memcmp(m.batch.b.changes[0].key, key, sizeof(key) - 1) == 0);
	EQ_U(m.batch.b.changes[0].meta_len, sizeof(meta));
	TRUE(memcmp(m.batch.b.changes[0].meta, meta, sizeof(meta)) == 0);
	TRUE(memcmp(m.batch.b.changes[0].id, id, HM_CERT_ID_LEN) == 0);
	EQ_I(m.batch.b.changes[0].not_after, 1900000000);
	EQ_U(m.batch.b.changes[1].op, HM_OP_CERT_RM);
	EQ_U(m.batch.b.changes[1].name_len, 7);
	hm_pbuf_fini(&b);
	/* A control client's record: name, cert, key only; the full one is the origin's. */
	two[0] = client;
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, two, 2), 0);
	EQ_I(hm_proto_decode(dec, b.data, b.len, &m), 0);
	EQ_U(m.version, 2);
	TRUE(m.ctl_req.changes[0].id == NULL);
	EQ_U(m.ctl_req.changes[0].cert_len, sizeof(pem) - 1);
	EQ_U(m.ctl_req.changes[1].op, HM_OP_CERT_RM);
	hm_pbuf_fini(&b);
	EQ_I(hm_proto_encode_ctl_req(&b, REQ_ID, 0, 1, &full, 1), HM_EOP);
	p.changes = &client;
	p.nchanges = 1;
	EQ_I(hm_proto_encode_batch(&b, 3, &p), HM_EOP);
	EQ_U(b.len, 0);
	hm_pbuf_fini(&b);
	EQ_I(tv_verdict(
		 A(U(7), U(2), BIN(REQ_ID, 16), U(0), U(1),
		   A(A(U(9), STR("a.b"), STR(pem), STR(key), U(1), BIN(id, 32), BIN(meta, 5))))),
	     HM_EARITY);
	EQ_I(tv_verdict(BATCH1(A(U(9), STR("a.b"), STR(pem), STR(key)))), HM_EARITY);
	/* Version 1 of a control request, version 2 of a batch or a chunk: no certificates. */
	v = A(U(7), U(1), BIN(REQ_ID, 16), U(0), U(1), A(A(U(10), STR("a.b"))));
	EQ_I(tv_verdict(v), HM_EOP);
	v = T_batch(3, 1, 0, 0, 1, A(A(U(10), STR("a.b"))));
	v->k[1] = U(2);
	EQ_I(tv_verdict(v), HM_EOP);
	v = T_snapshot_rep(
	    3, 1, 7, 0, 1,
	    A(A(U(9), STR("a.b"), STR(pem), STR(key), U(1), BIN(id, 32), BIN(meta, 5))));
	EQ_I(tv_verdict(v), 0);
	v = T_snapshot_rep_old(
	    3, 3, 1, 7, 0, 1,
	    A(A(U(9), STR("a.b"), STR(pem), STR(key), U(1), BIN(id, 32), BIN(meta, 5))));
	EQ_I(tv_verdict(v), 0);
	v = T_snapshot_rep_old(
	    2, 3, 1, 7, 0, 1,
	    A(A(U(9), STR("a.b"), STR(pem), STR(key), U(1), BIN(id, 32), BIN(meta, 5))));
	EQ_I(tv_verdict(v), HM_EOP);
	/* A snapshot chunk holds puts only. */
	EQ_I(tv_verdict(T_snapshot_rep(3, 1, 7, 0, 1, A(A(U(10), STR("a.b"))))), HM_EOP);
	/* The grammar: the name, PEM text (its line ends only), the id's length, not_after. */
	EQ_I(tv_verdict(BATCH1(A(U(10), STR("a..b")))), HM_EHOSTNAME);
	EQ_I(tv_verdict(BATCH1(A(U(10), STR("DEFAULT")))), 0);
	EQ_I(tv_verdict(BATCH1(A(U(10), STR("*.a\x1b.b")))), HM_ECONTROL);
	EQ_I(tv_verdict(BATCH1(
		 A(U(9), STR("a.b"), STR("PEM\x07x"), STR(key), U(1), BIN(id, 32), BIN(meta, 5)))),
	     HM_ECONTROL);
	EQ_I(tv_verdict(BATCH1(
		 A(U(9), STR("a.b"), STR(pem), STR("k\x1b[2J"), U(1), BIN(id, 32), BIN(meta, 5)))),
	     HM_ECONTROL);
	EQ_I(tv_verdict(
		 BATCH1(A(U(9), STR("a.b"), STR(""), STR(key), U(1), BIN(id, 32), BIN(meta, 5)))),
	     HM_ECERT);
	EQ_I(tv_verdict(
		 BATCH1(A(U(9), STR("a.b"), STR(pem), STR(key), U(1), BIN(id, 31), BIN(meta, 5)))),
	     HM_ERANGE);
	EQ_I(tv_verdict(
		 BATCH1(A(U(9), STR("a.b"), STR(pem), STR(key), I(-1), BIN(id, 32), BIN(meta, 5)))),
	     HM_ERANGE);
	EQ_I(tv_verdict(BATCH1(
		 A(U(9), STR("a.b"), BIN(pem, 5), STR(key), U(1), BIN(id, 32), BIN(meta, 5)))),
	     HM_ETYPE);
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("codec");
	TCase *fz = tcase_create("fuzz");

	tcase_add_checked_fixture(tc, fixture_setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, round_trip_samples);
	tcase_add_test(tc, layout_matches_docs);
	tcase_add_test(tc, snapshot_rep_v3_still_decodes);
	tcase_add_test(tc, decoded_strings_borrow_input);
	tcase_add_test(tc, round_trip_max_arrays);
	tcase_add_test(tc, decoder_reuse);
	tcase_add_test(tc, truncation_at_every_offset);
	tcase_add_test(tc, every_field_mistyped);
	tcase_add_test(tc, every_record_wrong_arity);
	tcase_add_test(tc, trailing_bytes);
	tcase_add_test(tc, head_errors);
	tcase_add_test(tc, newer_versions);
	tcase_add_test(tc, integer_formats);
	tcase_add_test(tc, out_of_range);
	tcase_add_test(tc, ctl_rep_code_sign);
	tcase_add_test(tc, too_big);
	tcase_add_test(tc, encoders_refuse_too_big);
	tcase_add_test(tc, change_sizes);
	tcase_add_test(tc, list_bound);
	tcase_add_test(tc, catchup_message_bound);
	tcase_add_test(tc, grammar);
	tcase_add_test(tc, secret_ops);
	tcase_add_test(tc, cert_ops);
	tcase_add_test(tc, decode_error_info);
	tcase_add_test(tc, peek);
	tcase_add_test(tc, encoders_refuse_out_of_range);
	tcase_add_test(tc, step_builders);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(fz, fixture_setup, teardown);
	tcase_set_timeout(fz, 100);
	tcase_add_test(fz, mutation_fuzz);
	suite_add_tcase(s, fz);
	return s;
}

HM_CHECK_MAIN(proto_suite)
