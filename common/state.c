/*
 * One entry for applying a batch to a node's state (table + certificate store): routing each
 * change to its file, the "full -> grow -> apply again" loop, and the commit order. Growing by
 * doubling alone would re-apply a million-change batch a dozen times, so the first growth feeds
 * the batch once more in counting mode and sizes the full file for all of it (an upper bound:
 * every put may create an object). The estimates err on the large side: a file that is too big
 * costs memory, one that is too small a whole re-application.
 */
#include "common/state.h"

#include <errno.h>
#include <string.h>

#include "common/errors.h"

#define CAP32_MAX    0x7fffffffu
#define HEAP_MAX     0xfffff000ull
#define MAX_ATTEMPTS 40

int hm_ticket_secret_slot(const char *name, size_t n)
{
	size_t p = sizeof(HM_TICKET_SECRET_PREFIX) - 1;

	if (n != p + 1 || memcmp(name, HM_TICKET_SECRET_PREFIX, p) != 0 || name[p] < '0' ||
	    name[p] >= '0' + HM_TICKET_KEYS_MAX)
		return -1;
	return name[p] - '0';
}

bool hm_state_is_full(int err)
{
	return err == HM_EFULL || err == -ENOSPC;
}

bool hm_state_counting(const struct hm_state *s)
{
	return s->counting;
}

void hm_state_full(const struct hm_state *s, bool *table, bool *certs)
{
	*table = s->table_full;
	*certs = s->certs_full;
}

/* What c may add to the files (see the top). */
static void need_add(struct hm_state *s, const struct hm_change *c)
{
	switch (c->op) {
	case HM_OP_APP_PUT:
		s->need_apps++;
		s->need_heap += 256;
		break;
	case HM_OP_DOMAIN_PUT:
		s->need_domains++;
		s->need_heap += 2 * (uint64_t)c->name_len + 16;
		break;
	case HM_OP_DYNO_PUT:
		s->need_dynos++;
		s->need_heap += 16 + 2 * (uint64_t)c->name_len;
		break;
	case HM_OP_CERT_PUT:
		/* A blob's size class wastes under 1/8; 64 bytes of alignment and header. */
		s->need_certs++;
		s->need_cert_heap +=
		    ((uint64_t)c->name_len + c->cert_len + c->key_len + c->meta_len) * 9 / 8 + 128;
		break;
	default:
		break;
	}
}

static uint32_t cap32(uint64_t v)
{
	return v > CAP32_MAX ? CAP32_MAX : (uint32_t)v;
}

/*
 * Grows the files found full. The first time, the batch is fed once more in counting mode and
 * each full file is sized for all of it; a file full again (the estimate fell short) is doubled
 * from its current capacities. *counted and *sized (per file) persist across one apply's
 * attempts.
 */
static int grow(struct hm_state *s, hm_state_feed_fn feed, void *arg, bool *counted, bool sized[2])
{
	bool table = s->table_full, certs = s->certs_full;
	int e = 0;

	if (!*counted) {
		s->need_apps = s->need_domains = s->need_dynos = s->need_heap = 0;
		s->need_certs = s->need_cert_heap = 0;
		s->counting = true;
		e = feed(s, arg);
		s->counting = false;
		if (e != 0)
			return e;
		*counted = true;
	}
	if (table) {
		struct hm_table_info info;
		struct hm_table_caps min;
		uint64_t heap;

		hm_table_writer_info(s->table, &info);
		heap = info.caps.heap + s->need_heap + 16 * (uint64_t)info.dynos;
		min.apps = cap32((uint64_t)info.apps + s->need_apps);
		min.domains = cap32((uint64_t)info.domains + s->need_domains);
		min.dynos = cap32((uint64_t)info.dynos + s->need_dynos);
		min.heap = heap > HEAP_MAX ? HEAP_MAX : heap;
		if ((e = hm_table_grow(s->table, sized[0] ? NULL : &min)) != 0)
			return e;
		sized[0] = true;
	}
	if (certs && s->certs != NULL) {
		struct hm_certstore_info info;
		struct hm_certstore_caps min;

		hm_certstore_writer_info(s->certs, &info);
		if (!sized[1]) {
			min.certs = cap32((uint64_t)info.certs + s->need_certs);
			min.heap = info.heap_used + s->need_cert_heap;
		} else {
			/* The store doubles by its published counts, which a batch that never
			 * committed leaves at zero: double its capacities here. */
			min.certs = cap32(2 * (uint64_t)info.caps.certs);
			min.heap = 2 * info.caps.heap;
		}
		if ((e = hm_certstore_grow(s->certs, &min)) != 0)
			return e;
		sized[1] = true;
	}
	return 0;
}

int hm_state_begin(struct hm_state *s, uint64_t epoch, uint64_t seq)
{
	struct hm_table_info ti;
	int e;

	if (s->open)
		return -EBUSY;
	s->table_full = s->certs_full = false;
	s->keys_dirty = false;
	hm_table_writer_info(s->table, &ti);
	s->skip_table = seq != 0 && ti.epoch == epoch && ti.seq >= seq;
	s->skip_certs = true;
	if (s->certs != NULL) {
		struct hm_certstore_info ci;

		hm_certstore_writer_info(s->certs, &ci);
		s->skip_certs = seq != 0 && ci.epoch == epoch && ci.seq >= seq;
	}
	if (!s->skip_table && (e = hm_table_begin(s->table)) != 0)
		return e;
	if (!s->skip_certs) {
		if ((e = hm_certstore_begin(s->certs)) != 0) {
			if (!s->skip_table)
				hm_table_abort(s->table);
			return e;
		}
		s->nkeys = (uint8_t)hm_certstore_writer_ticket_keys(s->certs, s->keys);
	}
	s->open = true;
	s->open_epoch = epoch;
	s->open_seq = seq;
	return 0;
}

void hm_state_abort(struct hm_state *s)
{
	if (!s->open)
		return;
	if (!s->skip_certs)
		hm_certstore_abort(s->certs);
	if (!s->skip_table)
		hm_table_abort(s->table);
	s->open = false;
}

/* secret.put/rm of a ticket-key slot: the store's key list, slots kept in order. */
static int ticket_change(struct hm_state *s, int slot, const struct hm_change *c)
{
	if (c->op == HM_OP_SECRET_PUT) {
		if (c->value_len != HM_TICKET_KEY_LEN || slot > s->nkeys)
			return HM_ESECRET; /* a slot is filled only after the ones before it */
		memcpy(&s->keys[slot], c->value, HM_TICKET_KEY_LEN);
		if (slot == s->nkeys)
			s->nkeys++;
	} else {
		if (slot >= s->nkeys)
			return HM_ENOSECRET;
		if (slot + 1 != s->nkeys)
			return HM_ESECRET; /* only the last slot may go: the order means something
					    */
		s->nkeys--;
	}
	s->keys_dirty = true;
	return 0;
}

int hm_state_change(struct hm_state *s, const struct hm_change *c)
{
	bool cert = c->op == HM_OP_CERT_PUT || c->op == HM_OP_CERT_RM;
	int slot = -1, e;

	if (c->op == HM_OP_SECRET_PUT || c->op == HM_OP_SECRET_RM)
		slot = hm_ticket_secret_slot(c->name, c->name_len);
	if ((cert || slot >= 0) && s->certs == NULL)
		return HM_EOP;
	if (s->counting) {
		need_add(s, c);
		return 0;
	}
	if (!cert && slot < 0) {
		if (s->skip_table)
			return 0;
		e = hm_table_apply(s->table, c);
		s->table_full = e == HM_EFULL;
		return e;
	}
	if (s->skip_certs)
		return 0;
	if ((e = hm_change_check(c)) != 0)
		return e;
	if (slot >= 0)
		return ticket_change(s, slot, c);
	if (c->op == HM_OP_CERT_RM) {
		e = hm_certstore_rm(s->certs, c->name, c->name_len);
		return e == -ENOENT ? HM_ENOCERT : e;
	}
	if (c->id == NULL)
		return HM_ECERT; /* a control client's record: the origin makes the canonical one */
	if (s->cert_verify != NULL && (e = s->cert_verify(c)) != 0)
		return e;
	struct hm_cert_put p = {.name = c->name,
				.name_len = c->name_len,
				.cert = c->cert,
				.cert_len = c->cert_len,
				.key = c->key,
				.key_len = c->key_len,
				.meta = c->meta,
				.meta_len = c->meta_len,
				.not_after = c->not_after};

	memcpy(p.id, c->id, HM_CERT_ID_LEN);
	e = hm_certstore_put(s->certs, &p);
	s->certs_full = e == -ENOSPC;
	return e;
}

int hm_state_commit(struct hm_state *s, uint64_t epoch, uint64_t seq)
{
	int e;

	if (!s->open)
		return -EINVAL;
	if (!s->skip_certs && s->keys_dirty &&
	    (e = hm_certstore_set_ticket_keys(s->certs, s->keys, s->nkeys)) != 0) {
		hm_state_abort(s);
		return e;
	}
	/* The store first: a domain served over HTTPS never appears before its certificate. */
	if (!s->skip_certs && (e = hm_certstore_commit(s->certs, epoch, seq)) != 0) {
		s->skip_certs = true; /* the store aborted its batch itself */
		hm_state_abort(s);
		return e;
	}
	s->open = false;
	if (!s->skip_table && (e = hm_table_commit(s->table, epoch, seq)) != 0)
		return e;
	return 0;
}

int hm_state_prepare(struct hm_state *s, hm_state_feed_fn feed, void *arg, uint64_t epoch,
		     uint64_t seq)
{
	bool counted = false, sized[2] = {false, false};
	int e;

	for (int attempt = 0;; attempt++) {
		if ((e = hm_state_begin(s, epoch, seq)) != 0)
			return e;
		if ((e = feed(s, arg)) == 0)
			return 0;
		hm_state_abort(s);
		if (!hm_state_is_full(e) || !(s->table_full || s->certs_full) ||
		    attempt + 1 >= MAX_ATTEMPTS)
			return e;
		if ((e = grow(s, feed, arg, &counted, sized)) != 0)
			return e;
	}
}

/* What hm_state_extend() feeds when it rebuilds: the open batch's parts, then the new one. */
struct extend_feed {
	hm_state_feed_fn feed, redo;
	void *arg, *redo_arg;
};

static int redo_then_feed(struct hm_state *s, void *arg)
{
	const struct extend_feed *x = arg;
	int e = x->redo(s, x->redo_arg);

	return e != 0 ? e : x->feed(s, x->arg);
}

int hm_state_extend(struct hm_state *s, hm_state_feed_fn feed, void *arg, hm_state_feed_fn redo,
		    void *redo_arg)
{
	struct extend_feed x = {feed, redo, arg, redo_arg};
	bool counted = false, sized[2] = {false, false};
	uint64_t epoch = s->open_epoch, seq = s->open_seq;
	int e, r;

	if (!s->open)
		return -EINVAL;
	if ((e = feed(s, arg)) == 0)
		return 0;
	for (int attempt = 0;; attempt++) {
		hm_state_abort(s);
		/* Grown only for a "full" that feed (not redo, which fitted before) ran into. */
		if (hm_state_is_full(e) && (s->table_full || s->certs_full) &&
		    attempt + 1 < MAX_ATTEMPTS &&
		    (e = grow(s, redo_then_feed, &x, &counted, sized)) == 0) {
			if ((r = hm_state_begin(s, epoch, seq)) != 0)
				return r;
			if ((e = redo_then_feed(s, &x)) == 0)
				return 0;
			continue;
		}
		/* Back to the batch as it was before the call. */
		if ((r = hm_state_begin(s, epoch, seq)) != 0)
			return r;
		if ((r = redo(s, redo_arg)) != 0) {
			hm_state_abort(s);
			return r;
		}
		return e;
	}
}

int hm_state_apply(struct hm_state *s, hm_state_feed_fn feed, void *arg, uint64_t epoch,
		   uint64_t seq)
{
	int e = hm_state_prepare(s, feed, arg, epoch, seq);

	return e != 0 ? e : hm_state_commit(s, epoch, seq);
}

int hm_state_batch_info(const struct hm_state *s, uint8_t digest[HM_DIGEST_LEN],
			struct hm_table_info *table)
{
	int e;

	if (!s->open)
		return -EINVAL;
	if (s->skip_table)
		hm_table_writer_info(s->table, table);
	else if ((e = hm_table_batch_info(s->table, table)) != 0)
		return e;
	memcpy(digest, table->digest, HM_DIGEST_LEN);
	if (s->certs != NULL) {
		struct hm_certstore_info ci;

		if (s->skip_certs)
			hm_certstore_writer_info(s->certs, &ci);
		else if ((e = hm_certstore_batch_info(s->certs, &ci)) != 0)
			return e;
		hm_certstore_digest_add(digest, digest, ci.digest);
	}
	return 0;
}

void hm_state_digest(const struct hm_state *s, uint8_t out[HM_DIGEST_LEN])
{
	struct hm_table_info ti;

	hm_table_writer_info(s->table, &ti);
	memcpy(out, ti.digest, HM_DIGEST_LEN);
	if (s->certs != NULL) {
		struct hm_certstore_info ci;

		hm_certstore_writer_info(s->certs, &ci);
		hm_certstore_digest_add(out, out, ci.digest);
	}
}

struct foreach_ctx {
	int (*cb)(void *ctx, const struct hm_change *c);
	void *ctx;
};

static int cert_cb(void *ctx, const struct hm_cert_entry *e)
{
	struct foreach_ctx *f = ctx;
	struct hm_change c = {.op = HM_OP_CERT_PUT,
			      .name = e->name,
			      .name_len = (uint16_t)e->name_len,
			      .cert = (const char *)e->cert,
			      .cert_len = (uint32_t)e->cert_len,
			      .key = (const char *)e->key,
			      .key_len = (uint32_t)e->key_len,
			      .meta = e->meta,
			      .meta_len = (uint32_t)e->meta_len,
			      .id = e->id,
			      .not_after = e->not_after};

	return f->cb(f->ctx, &c);
}

int hm_state_foreach(const struct hm_state *s, int (*cb)(void *ctx, const struct hm_change *c),
		     void *ctx)
{
	struct foreach_ctx f = {cb, ctx};
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	char name[sizeof(HM_TICKET_SECRET_PREFIX) + 1];
	int e, n;

	if ((e = hm_table_foreach(s->table, cb, ctx)) != 0 || s->certs == NULL)
		return e;
	if ((e = hm_certstore_foreach(s->certs, cert_cb, &f)) != 0)
		return e;
	n = hm_certstore_writer_ticket_keys(s->certs, keys);
	for (int i = 0; i < n; i++) {
		struct hm_change c = {.op = HM_OP_SECRET_PUT,
				      .name = name,
				      .name_len = sizeof(name) - 1,
				      .value = (const uint8_t *)&keys[i],
				      .value_len = HM_TICKET_KEY_LEN};

		memcpy(name, HM_TICKET_SECRET_PREFIX, sizeof(HM_TICKET_SECRET_PREFIX) - 1);
		name[sizeof(name) - 2] = (char)('0' + i);
		name[sizeof(name) - 1] = '\0';
		if ((e = cb(ctx, &c)) != 0)
			return e;
	}
	return 0;
}
