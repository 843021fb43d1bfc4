/*
 * Applying one change to the batch copy of a table (table.h: hm_table_apply()), and checking
 * what changes keep (hm_table_verify()). Every byte written is first recorded with
 * hm__table_touch(), so that commit and abort copy only the lines the batch wrote (table_write.c).
 * The structures are open-addressing hash tables with backward-shift deletion, free lists threaded
 * through unused records, a heap of power-of-two size classes, and per-app dyno arrays partitioned
 * by state; the digest is kept as a sum of record hashes, so each change costs O(1)
 * (docs/table.md).
 */
#include <errno.h>
#include <mbedtls/sha256.h>
#include <string.h>

#include "common/errors.h"
#include "common/table-t.h"
#include "common/util.h"

/* Fixed seeds: the digest must be equal on every node for equal state. */
#define DIGEST_SEED0 0x68657264676d6f64ull
#define DIGEST_SEED1 0x1f83d9abfb41bd6bull

#define TOUCH(w, c, p, len)                                                                        \
	do {                                                                                       \
		int e_ = hm__table_touch((w), (c), (p), (len));                                    \
		if (e_ != 0)                                                                       \
			return e_;                                                                 \
	} while (0)

/* The writer's view of the same array (trusted). */
static uint32_t *arr_of(struct hm__table_copy *c, struct hm__table_rec_app *a)
{
	return a->dynos != 0 ? (uint32_t *)(c->heap + a->dynos) : a->inl;
}

/* ---- Digest ---------------------------------------------------------------------------------- */

struct dsum {
	uint64_t lane[2];
};

static struct dsum rec_digest(const uint8_t *buf, size_t n)
{
	struct dsum d = {{hm_hash64(buf, n, DIGEST_SEED0), hm_hash64(buf, n, DIGEST_SEED1)}};

	return d;
}

static size_t put_str(uint8_t *p, const char *s, size_t n)
{
	p[0] = (uint8_t)n;
	memcpy(p + 1, s, n);
	return n + 1;
}

static struct dsum digest_app(const char *name, size_t n, const struct hm__table_rec_app *a)
{
	uint8_t buf[4 + HM_APP_NAME_MAX + 4];
	size_t k = 0;

	buf[k++] = 'A';
	k += put_str(buf + k, name, n);
	buf[k++] = a->maintenance;
	buf[k++] = a->affinity;
	buf[k++] = a->balance;
	return rec_digest(buf, k);
}

static struct dsum digest_domain(const char *key, size_t n, bool wild, const char *app, size_t an)
{
	uint8_t buf[8 + HM_HOST_MAX + HM_APP_NAME_MAX];
	size_t k = 0;

	buf[k++] = 'D';
	buf[k++] = wild;
	k += put_str(buf + k, key, n);
	k += put_str(buf + k, app, an);
	return rec_digest(buf, k);
}

static struct dsum digest_dyno(const char *app, size_t an, const char *name, size_t n,
			       const struct hm__table_rec_dyno *y)
{
	uint8_t buf[8 + HM_APP_NAME_MAX + HM_DYNO_NAME_MAX + 24];
	size_t k = 0;

	buf[k++] = 'Y';
	k += put_str(buf + k, app, an);
	k += put_str(buf + k, name, n);
	buf[k++] = y->family;
	buf[k++] = (uint8_t)(y->port & 0xff);
	buf[k++] = (uint8_t)(y->port >> 8);
	memcpy(buf + k, y->ip, 16);
	k += 16;
	buf[k++] = y->state;
	return rec_digest(buf, k);
}

/* The digest covers a secret without revealing it: its record hashes SHA-256 of the value. */
static struct dsum digest_secret(const struct hm__table_rec_secret *r)
{
	uint8_t buf[2 + HM_SECRET_NAME_MAX + 32];
	size_t k = 0;

	buf[k++] = 'S';
	k += put_str(buf + k, r->name, r->name_len);
	mbedtls_sha256_ret(r->value, r->value_len, buf + k, 0);
	k += 32;
	return rec_digest(buf, k);
}

/* ---- heap ------------------------------------------------------------------------------------ */

static unsigned heap_class(uint64_t size)
{
	unsigned k = 0;

	while (((uint64_t)HM__TABLE_HEAP_MIN << k) < size)
		k++;
	return k;
}

static int64_t heap_alloc(struct hm_table_writer *w, struct hm__table_copy *c, uint64_t size)
{
	unsigned k = heap_class(size);
	uint64_t bytes = (uint64_t)HM__TABLE_HEAP_MIN << k, off;

	if (k >= HM__TABLE_HEAP_CLASSES)
		return HM_EFULL;
	TOUCH(w, c, c->h, sizeof(*c->h));
	off = c->h->heap_free[k];
	if (off != 0) {
		uint32_t next;

		memcpy(&next, c->heap + off, 4);
		c->h->heap_free[k] = next;
		return (int64_t)off;
	}
	off = c->h->heap_top < HM__TABLE_HEAP_MIN ? HM__TABLE_HEAP_MIN : c->h->heap_top;
	if (off + bytes > w->lay.heap_bytes) {
		w->full = 4;
		return HM_EFULL;
	}
	c->h->heap_top = off + bytes;
	return (int64_t)off;
}

static int heap_free(struct hm_table_writer *w, struct hm__table_copy *c, uint64_t off,
		     uint64_t size)
{
	unsigned k = heap_class(size);
	uint32_t next = c->h->heap_free[k];

	TOUCH(w, c, c->heap + off, 4);
	TOUCH(w, c, c->h, sizeof(*c->h));
	memcpy(c->heap + off, &next, 4);
	c->h->heap_free[k] = (uint32_t)off;
	return 0;
}

/* Stores a name inline or on the heap. */
static int name_store(struct hm_table_writer *w, struct hm__table_copy *c, char *inl,
		      size_t inl_cap, uint32_t *heap_off, const char *s, size_t n)
{
	if (n <= inl_cap) {
		memcpy(inl, s, n);
		*heap_off = 0;
		return 0;
	}
	int64_t off = heap_alloc(w, c, n);

	if (off < 0)
		return (int)off;
	TOUCH(w, c, c->heap + off, n);
	memcpy(c->heap + off, s, n);
	*heap_off = (uint32_t)off;
	return 0;
}

/* ---- hash tables ----------------------------------------------------------------------------- */

static int slot_insert(struct hm_table_writer *w, struct hm__table_copy *c,
		       struct hm__table_slot *tab, uint32_t mask, uint64_t hash, uint32_t idx,
		       uint32_t aux)
{
	uint32_t tag = (uint32_t)hash, i = tag & mask;

	while (tab[i].idx != 0)
		i = (i + 1) & mask;
	TOUCH(w, c, &tab[i], sizeof(tab[i]));
	tab[i].tag = tag;
	tab[i].idx = idx + 1;
	tab[i].aux = aux;
	return 0;
}

/* Backward-shift deletion: entries after the hole move back if their home allows it. */
static int slot_delete(struct hm_table_writer *w, struct hm__table_copy *c,
		       struct hm__table_slot *tab, uint32_t mask, uint32_t i)
{
	uint32_t j = i;

	for (;;) {
		uint32_t home;

		j = (j + 1) & mask;
		if (tab[j].idx == 0)
			break;
		home = tab[j].tag & mask;
		/* Move tab[j] into the hole at i unless its home lies cyclically in (i, j]. */
		if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
			continue;
		TOUCH(w, c, &tab[i], sizeof(tab[i]));
		tab[i] = tab[j];
		i = j;
	}
	TOUCH(w, c, &tab[i], sizeof(tab[i]));
	memset(&tab[i], 0, sizeof(tab[i]));
	return 0;
}

/* ---- records --------------------------------------------------------------------------------- */

static void digest_add(struct hm__table_copy *c, struct dsum d, int sign)
{
	for (int i = 0; i < 2; i++)
		c->h->digest[i] += sign > 0 ? d.lane[i] : (uint64_t)0 - d.lane[i];
}

static int64_t rec_alloc(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t *freelist,
			 uint32_t *top, uint32_t cap, void *records, size_t rec_size,
			 size_t link_off, int full_code)
{
	uint32_t idx;

	TOUCH(w, c, c->h, sizeof(*c->h));
	if (*freelist != 0) {
		idx = *freelist - 1;
		memcpy(freelist, (uint8_t *)records + (size_t)idx * rec_size + link_off, 4);
	} else if (*top < cap) {
		idx = (*top)++;
	} else {
		w->full = full_code;
		return HM_EFULL;
	}
	TOUCH(w, c, (uint8_t *)records + (size_t)idx * rec_size, rec_size);
	memset((uint8_t *)records + (size_t)idx * rec_size, 0, rec_size);
	return idx;
}

static int rec_free(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t *freelist,
		    void *records, size_t rec_size, size_t link_off, uint32_t idx)
{
	uint8_t *r = (uint8_t *)records + (size_t)idx * rec_size;
	uint32_t link = *freelist;

	TOUCH(w, c, r, rec_size);
	TOUCH(w, c, c->h, sizeof(*c->h));
	memset(r, 0, rec_size);
	memcpy(r + link_off, &link, 4);
	*freelist = idx + 1;
	return 0;
}

#define APP_ALLOC(w, c)                                                                            \
	rec_alloc(w, c, &(c)->h->free_apps, &(c)->h->top_apps, (w)->lay.cap_apps, (c)->apps,       \
		  sizeof(struct hm__table_rec_app),                                                \
		  offsetof(struct hm__table_rec_app, domain_head), 1)
#define DOMAIN_ALLOC(w, c)                                                                         \
	rec_alloc(w, c, &(c)->h->free_domains, &(c)->h->top_domains, (w)->lay.cap_domains,         \
		  (c)->domains, sizeof(struct hm__table_rec_domain),                               \
		  offsetof(struct hm__table_rec_domain, next), 2)
#define DYNO_ALLOC(w, c)                                                                           \
	rec_alloc(w, c, &(c)->h->free_dynos, &(c)->h->top_dynos, (w)->lay.cap_dynos, (c)->dynos,   \
		  sizeof(struct hm__table_rec_dyno), offsetof(struct hm__table_rec_dyno, pos), 3)

/* Domain list of an app: doubly linked by index + 1. */
static int domain_unlink(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t di)
{
	struct hm__table_rec_domain *d = &c->domains[di];
	struct hm__table_rec_app *a = &c->apps[d->app];

	if (d->prev != 0) {
		TOUCH(w, c, &c->domains[d->prev - 1], sizeof(*d));
		c->domains[d->prev - 1].next = d->next;
	} else {
		TOUCH(w, c, a, sizeof(*a));
		a->domain_head = d->next;
	}
	if (d->next != 0) {
		TOUCH(w, c, &c->domains[d->next - 1], sizeof(*d));
		c->domains[d->next - 1].prev = d->prev;
	}
	return 0;
}

static int domain_link(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t di,
		       uint32_t ai)
{
	struct hm__table_rec_domain *d = &c->domains[di];
	struct hm__table_rec_app *a = &c->apps[ai];

	TOUCH(w, c, d, sizeof(*d));
	TOUCH(w, c, a, sizeof(*a));
	d->app = ai;
	d->prev = 0;
	d->next = a->domain_head;
	if (a->domain_head != 0) {
		TOUCH(w, c, &c->domains[a->domain_head - 1], sizeof(*d));
		c->domains[a->domain_head - 1].prev = di + 1;
	}
	a->domain_head = di + 1;
	return 0;
}

/* Per-app dyno array: partitions [up | starting | crashed | down]. */
static uint32_t part_start(const struct hm__table_rec_app *a, unsigned state)
{
	uint32_t s = 0;

	for (unsigned k = HM_DYNO_UP; k < state; k++)
		s += a->n[k];
	return s;
}

static int arr_swap(struct hm_table_writer *w, struct hm__table_copy *c,
		    struct hm__table_rec_app *a, uint32_t i, uint32_t j)
{
	uint32_t *arr = arr_of(c, a), t;

	if (i == j)
		return 0;
	TOUCH(w, c, &arr[i], 4);
	TOUCH(w, c, &arr[j], 4);
	t = arr[i];
	arr[i] = arr[j];
	arr[j] = t;
	TOUCH(w, c, &c->dynos[arr[i]], sizeof(struct hm__table_rec_dyno));
	TOUCH(w, c, &c->dynos[arr[j]], sizeof(struct hm__table_rec_dyno));
	c->dynos[arr[i]].pos = i;
	c->dynos[arr[j]].pos = j;
	return 0;
}

/* Moves the dyno at *pos from partition `from` to partition `to`, updating the counts. */
static int arr_move(struct hm_table_writer *w, struct hm__table_copy *c,
		    struct hm__table_rec_app *a, uint32_t pos, unsigned from, unsigned to)
{
	int e;

	TOUCH(w, c, a, sizeof(*a));
	while (from > to) {
		uint32_t first = part_start(a, from);

		if ((e = arr_swap(w, c, a, pos, first)) != 0)
			return e;
		pos = first;
		a->n[from]--;
		a->n[from - 1]++;
		from--;
	}
	while (from < to) {
		uint32_t last = part_start(a, from + 1) - 1;

		if ((e = arr_swap(w, c, a, pos, last)) != 0)
			return e;
		pos = last;
		a->n[from]--;
		a->n[from + 1]++;
		from++;
	}
	return 0;
}

static int arr_reserve(struct hm_table_writer *w, struct hm__table_copy *c,
		       struct hm__table_rec_app *a)
{
	uint32_t cap;
	int64_t off;

	if (a->dynos == 0 ? a->n[0] < HM__TABLE_APP_INLINE_DYNOS : a->n[0] < a->dyno_cap)
		return 0;
	cap = a->dynos == 0 ? 4 * HM__TABLE_APP_INLINE_DYNOS : a->dyno_cap * 2;
	off = heap_alloc(w, c, (uint64_t)cap * 4);
	if (off < 0)
		return (int)off;
	TOUCH(w, c, c->heap + off, (size_t)a->n[0] * 4 + 4);
	memcpy(c->heap + off, arr_of(c, a), (size_t)a->n[0] * 4);
	if (a->dynos != 0) {
		int e = heap_free(w, c, a->dynos, (uint64_t)a->dyno_cap * 4);

		if (e != 0)
			return e;
	}
	TOUCH(w, c, a, sizeof(*a));
	a->dynos = (uint32_t)off;
	a->dyno_cap = cap;
	return 0;
}

static struct dsum app_digest(const struct hm__table_rec_app *a)
{
	return digest_app(a->name, a->name_len, a);
}

static struct dsum domain_digest(const struct hm__table_copy *c,
				 const struct hm__table_rec_domain *d)
{
	const struct hm__table_rec_app *a = &c->apps[d->app];

	return digest_domain(hm__table_domain_name(c, d, d->name_len), d->name_len, d->wildcard,
			     a->name, a->name_len);
}

static struct dsum dyno_digest(const struct hm__table_copy *c, const struct hm__table_rec_dyno *y)
{
	const struct hm__table_rec_app *a = &c->apps[y->app];

	return digest_dyno(a->name, a->name_len, hm__table_dyno_name(c, y, y->name_len),
			   y->name_len, y);
}

static int domain_remove(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t di,
			 uint32_t slot_pos)
{
	struct hm__table_rec_domain *d = &c->domains[di];
	int e;

	TOUCH(w, c, c->h, sizeof(*c->h));
	digest_add(c, domain_digest(c, d), -1);
	c->h->n_domains--;
	c->h->n_wild -= d->wildcard;
	if ((e = domain_unlink(w, c, di)) != 0 ||
	    (e = slot_delete(w, c, c->domain_hash, w->lay.domain_mask, slot_pos)) != 0)
		return e;
	if (d->name_len > HM__TABLE_DOMAIN_INLINE &&
	    (e = heap_free(w, c, d->name_heap, d->name_len)) != 0)
		return e;
	return rec_free(w, c, &c->h->free_domains, c->domains, sizeof(*d),
			offsetof(struct hm__table_rec_domain, next), di);
}

static int dyno_remove(struct hm_table_writer *w, struct hm__table_copy *c, uint32_t yi,
		       uint32_t slot_pos)
{
	struct hm__table_rec_dyno *y = &c->dynos[yi];
	struct hm__table_rec_app *a = &c->apps[y->app];
	uint32_t last;
	int e;

	TOUCH(w, c, c->h, sizeof(*c->h));
	digest_add(c, dyno_digest(c, y), -1);
	c->h->n_dynos--;
	/* To the end of the down partition (the end of the array), then drop it. */
	if ((e = arr_move(w, c, a, y->pos, y->state, HM_DYNO_DOWN)) != 0)
		return e;
	last = a->n[0] - 1;
	if ((e = arr_swap(w, c, a, y->pos, last)) != 0)
		return e;
	TOUCH(w, c, a, sizeof(*a));
	a->n[HM_DYNO_DOWN]--;
	a->n[0]--;
	if ((e = slot_delete(w, c, c->dyno_hash, w->lay.dyno_mask, slot_pos)) != 0)
		return e;
	if (y->name_len > HM__TABLE_DYNO_INLINE &&
	    (e = heap_free(w, c, y->name_heap, y->name_len)) != 0)
		return e;
	return rec_free(w, c, &c->h->free_dynos, c->dynos, sizeof(*y),
			offsetof(struct hm__table_rec_dyno, pos), yi);
}

static int op_app_put(struct hm_table_writer *w, struct hm__table_copy *c,
		      const struct hm_change *ch)
{
	struct hm__table_rec_app *a;
	uint32_t ai;
	int64_t r;
	int e;

	if (hm__table_find_app(c, ch->app, ch->app_len, &ai) >= 0) {
		a = &c->apps[ai];
		TOUCH(w, c, a, sizeof(*a));
		TOUCH(w, c, c->h, sizeof(*c->h));
		digest_add(c, app_digest(a), -1);
	} else {
		if ((r = APP_ALLOC(w, c)) < 0)
			return (int)r;
		ai = (uint32_t)r;
		a = &c->apps[ai];
		a->used = 1;
		a->name_len = ch->app_len;
		memcpy(a->name, ch->app, ch->app_len);
		if ((e = slot_insert(w, c, c->app_hash, w->lay.app_mask,
				     hm__table_app_hash(&w->lay, ch->app, ch->app_len), ai, 0)) !=
		    0)
			return e;
		c->h->n_apps++;
	}
	a->maintenance = ch->maintenance;
	a->affinity = ch->affinity;
	a->balance = ch->balance;
	digest_add(c, app_digest(a), +1);
	return 0;
}

static int op_app_rm(struct hm_table_writer *w, struct hm__table_copy *c,
		     const struct hm_change *ch)
{
	struct hm__table_rec_app *a;
	uint32_t ai, idx;
	int64_t pos = hm__table_find_app(c, ch->app, ch->app_len, &ai);
	int e;

	if (pos < 0)
		return HM_ENOAPP;
	a = &c->apps[ai];
	while (a->domain_head != 0) {
		struct hm__table_rec_domain *d = &c->domains[a->domain_head - 1];
		int64_t sp = hm__table_find_domain(c, hm__table_domain_name(c, d, d->name_len),
						   d->name_len, d->wildcard, &idx);

		if (sp < 0 || (e = domain_remove(w, c, idx, (uint32_t)sp)) != 0)
			return sp < 0 ? HM_EBADTABLE : e;
	}
	while (a->n[0] > 0) {
		struct hm__table_rec_dyno *y = &c->dynos[arr_of(c, a)[a->n[0] - 1]];
		int64_t sp = hm__table_find_dyno(c, ai, hm__table_dyno_name(c, y, y->name_len),
						 y->name_len, &idx);

		if (sp < 0 || (e = dyno_remove(w, c, idx, (uint32_t)sp)) != 0)
			return sp < 0 ? HM_EBADTABLE : e;
	}
	if (a->dynos != 0 && (e = heap_free(w, c, a->dynos, (uint64_t)a->dyno_cap * 4)) != 0)
		return e;
	TOUCH(w, c, c->h, sizeof(*c->h));
	digest_add(c, app_digest(a), -1);
	c->h->n_apps--;
	if ((e = slot_delete(w, c, c->app_hash, w->lay.app_mask, (uint32_t)pos)) != 0)
		return e;
	return rec_free(w, c, &c->h->free_apps, c->apps, sizeof(*a),
			offsetof(struct hm__table_rec_app, domain_head), ai);
}

/* Splits a hostname into its table key: canonical, without "*." for a wildcard. */
static size_t domain_key(const struct hm_change *ch, char *buf, bool *wild)
{
	size_t n = hm_host_canon(ch->name, ch->name_len, buf);

	*wild = n >= 2 && buf[0] == '*' && buf[1] == '.';
	if (*wild) {
		memmove(buf, buf + 2, n - 1);
		n -= 2;
	}
	return n;
}

static int op_domain_put(struct hm_table_writer *w, struct hm__table_copy *c,
			 const struct hm_change *ch)
{
	char key[HM_HOST_MAX + 3];
	bool wild;
	size_t n = domain_key(ch, key, &wild);
	uint32_t ai, di;
	struct hm__table_rec_domain *d;
	int64_t r, pos;
	int e;

	if (hm__table_find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	if ((pos = hm__table_find_domain(c, key, n, wild, &di)) >= 0) {
		d = &c->domains[di];
		if (d->app == ai)
			return 0;
		TOUCH(w, c, &c->domain_hash[pos], sizeof(struct hm__table_slot));
		c->domain_hash[pos].aux = ai;
		TOUCH(w, c, c->h, sizeof(*c->h));
		digest_add(c, domain_digest(c, d), -1);
		if ((e = domain_unlink(w, c, di)) != 0 || (e = domain_link(w, c, di, ai)) != 0)
			return e;
		digest_add(c, domain_digest(c, d), +1);
		return 0;
	}
	if ((r = DOMAIN_ALLOC(w, c)) < 0)
		return (int)r;
	di = (uint32_t)r;
	d = &c->domains[di];
	d->used = 1;
	d->wildcard = wild;
	d->name_len = (uint16_t)n;
	if ((e = name_store(w, c, d->name, HM__TABLE_DOMAIN_INLINE, &d->name_heap, key, n)) != 0 ||
	    (e = slot_insert(w, c, c->domain_hash, w->lay.domain_mask,
			     hm__table_domain_hash(&w->lay, key, n, wild), di, ai)) != 0 ||
	    (e = domain_link(w, c, di, ai)) != 0)
		return e;
	c->h->n_domains++;
	c->h->n_wild += wild;
	digest_add(c, domain_digest(c, d), +1);
	return 0;
}

static int op_domain_rm(struct hm_table_writer *w, struct hm__table_copy *c,
			const struct hm_change *ch)
{
	char key[HM_HOST_MAX + 3];
	bool wild;
	size_t n = domain_key(ch, key, &wild);
	uint32_t di;
	int64_t pos = hm__table_find_domain(c, key, n, wild, &di);

	if (pos < 0)
		return HM_ENODOMAIN;
	return domain_remove(w, c, di, (uint32_t)pos);
}

static int op_dyno_put(struct hm_table_writer *w, struct hm__table_copy *c,
		       const struct hm_change *ch)
{
	struct hm__table_rec_app *a;
	struct hm__table_rec_dyno *y;
	uint32_t ai, yi;
	int64_t r = 0;
	int e;

	if (hm__table_find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	a = &c->apps[ai];
	if (hm__table_find_dyno(c, ai, ch->name, ch->name_len, &yi) >= 0) {
		y = &c->dynos[yi];
		TOUCH(w, c, y, sizeof(*y));
		TOUCH(w, c, c->h, sizeof(*c->h));
		digest_add(c, dyno_digest(c, y), -1);
		if (y->state != ch->state) {
			if ((e = arr_move(w, c, a, y->pos, y->state, ch->state)) != 0)
				return e;
			y->state = ch->state;
		}
	} else {
		if ((e = arr_reserve(w, c, a)) != 0 || (r = DYNO_ALLOC(w, c)) < 0)
			return e != 0 ? e : (int)r;
		yi = (uint32_t)r;
		y = &c->dynos[yi];
		y->used = 1;
		y->app = ai;
		y->name_len = (uint8_t)ch->name_len;
		if ((e = name_store(w, c, y->name, HM__TABLE_DYNO_INLINE, &y->name_heap, ch->name,
				    ch->name_len)) != 0 ||
		    (e = slot_insert(w, c, c->dyno_hash, w->lay.dyno_mask,
				     hm__table_dyno_hash(&w->lay, ai, ch->name, ch->name_len), yi,
				     0)) != 0)
			return e;
		/* Append as a down dyno at the end of the array, then move to its partition. */
		TOUCH(w, c, a, sizeof(*a));
		TOUCH(w, c, &arr_of(c, a)[a->n[0]], 4);
		arr_of(c, a)[a->n[0]] = yi;
		y->pos = a->n[0];
		y->state = HM_DYNO_DOWN;
		a->n[0]++;
		a->n[HM_DYNO_DOWN]++;
		if ((e = arr_move(w, c, a, y->pos, HM_DYNO_DOWN, ch->state)) != 0)
			return e;
		y->state = ch->state;
		c->h->n_dynos++;
	}
	y->family = ch->addr.family;
	y->port = ch->addr.port;
	memcpy(y->ip, ch->addr.ip, 16);
	digest_add(c, dyno_digest(c, y), +1);
	return 0;
}

static int op_dyno_rm(struct hm_table_writer *w, struct hm__table_copy *c,
		      const struct hm_change *ch)
{
	uint32_t ai, yi;
	int64_t pos;

	if (hm__table_find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	pos = hm__table_find_dyno(c, ai, ch->name, ch->name_len, &yi);
	if (pos < 0)
		return HM_ENODYNO;
	return dyno_remove(w, c, yi, (uint32_t)pos);
}

/* ---- secrets --------------------------------------------------------------------------------- */

static struct hm__table_rec_secret *secret_find(struct hm__table_copy *c, const char *name,
						size_t n)
{
	for (unsigned i = 0; i < HM__TABLE_SECRETS; i++) {
		struct hm__table_rec_secret *r = &c->h->secrets[i];

		if (r->used && r->name_len == n && memcmp(r->name, name, n) == 0)
			return r;
	}
	return NULL;
}

static int op_secret_put(struct hm_table_writer *w, struct hm__table_copy *c,
			 const struct hm_change *ch)
{
	struct hm__table_rec_secret *r = secret_find(c, ch->name, ch->name_len);

	if (r != NULL) {
		TOUCH(w, c, r, sizeof(*r));
		digest_add(c, digest_secret(r), -1);
	} else {
		for (unsigned i = 0; i < HM__TABLE_SECRETS && r == NULL; i++)
			if (!c->h->secrets[i].used)
				r = &c->h->secrets[i];
		if (r == NULL)
			return HM_ESECRETS;
		TOUCH(w, c, r, sizeof(*r));
		TOUCH(w, c, &c->h->n_secrets, sizeof(c->h->n_secrets));
		c->h->n_secrets++;
	}
	memset(r, 0, sizeof(*r));
	r->used = 1;
	r->name_len = (uint8_t)ch->name_len;
	memcpy(r->name, ch->name, ch->name_len);
	r->value_len = ch->value_len;
	memcpy(r->value, ch->value, ch->value_len);
	TOUCH(w, c, c->h->digest, sizeof(c->h->digest));
	digest_add(c, digest_secret(r), +1);
	return 0;
}

static int op_secret_rm(struct hm_table_writer *w, struct hm__table_copy *c,
			const struct hm_change *ch)
{
	struct hm__table_rec_secret *r = secret_find(c, ch->name, ch->name_len);

	if (r == NULL)
		return HM_ENOSECRET;
	TOUCH(w, c, r, sizeof(*r));
	TOUCH(w, c, &c->h->n_secrets, sizeof(c->h->n_secrets));
	TOUCH(w, c, c->h->digest, sizeof(c->h->digest));
	digest_add(c, digest_secret(r), -1);
	memset(r, 0, sizeof(*r));
	c->h->n_secrets--;
	return 0;
}

/* ---- The batch API --------------------------------------------------------------------------- */

int hm_table_apply(struct hm_table_writer *w, const struct hm_change *ch)
{
	struct hm__table_copy c;
	int e;

	if (!w->in_batch)
		return -EINVAL;
	if ((e = hm_change_check(ch)) != 0)
		return e;
	hm__table_copy_view(&c, w->base, &w->lay, hm__table_batch_copy(w));
	switch (ch->op) {
	case HM_OP_APP_PUT:
		return op_app_put(w, &c, ch);
	case HM_OP_APP_RM:
		return op_app_rm(w, &c, ch);
	case HM_OP_DOMAIN_PUT:
		return op_domain_put(w, &c, ch);
	case HM_OP_DOMAIN_RM:
		return op_domain_rm(w, &c, ch);
	case HM_OP_DYNO_PUT:
		return op_dyno_put(w, &c, ch);
	case HM_OP_DYNO_RM:
		return op_dyno_rm(w, &c, ch);
	case HM_OP_SECRET_PUT:
		return op_secret_put(w, &c, ch);
	case HM_OP_SECRET_RM:
		return op_secret_rm(w, &c, ch);
	default:
		return HM_EOP;
	}
}

/* ---- Verification ---------------------------------------------------------------------------- */

/* verify_copy's part: names valid and unique, lengths in range, the count and digest. */
static int verify_secrets(const struct hm__table_copy *c, uint64_t dig[2])
{
	uint32_t n = 0;

	for (unsigned i = 0; i < HM__TABLE_SECRETS; i++) {
		const struct hm__table_rec_secret *r = &c->h->secrets[i];
		struct dsum d;

		if (!r->used)
			continue;
		n++;
		if (r->name_len > HM_SECRET_NAME_MAX ||
		    hm_secret_name_check(r->name, r->name_len) != 0 || r->value_len == 0 ||
		    r->value_len > HM_SECRET_MAX)
			return HM_EBADTABLE;
		for (unsigned k = 0; k < i; k++)
			if (c->h->secrets[k].used && c->h->secrets[k].name_len == r->name_len &&
			    memcmp(c->h->secrets[k].name, r->name, r->name_len) == 0)
				return HM_EBADTABLE;
		d = digest_secret(r);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	return n == c->h->n_secrets ? 0 : HM_EBADTABLE;
}

int hm__table_verify_copy(const struct hm_table_writer *w, const struct hm__table_copy *c)
{
	const struct hm__table_layout *l = &w->lay;
	uint64_t dig[2] = {0, 0};
	uint32_t napps = 0, ndomains = 0, ndynos = 0, nwild = 0, idx;
	int64_t pos;
	struct dsum d;

	if (c->h->top_apps > l->cap_apps || c->h->top_domains > l->cap_domains ||
	    c->h->top_dynos > l->cap_dynos || c->h->heap_top > l->heap_bytes)
		return HM_EBADTABLE;
	for (uint32_t i = 0; i < c->h->top_apps; i++) {
		const struct hm__table_rec_app *a = &c->apps[i];
		uint64_t sum = 0; /* the writer adds these counts in 32 bits: they must not wrap */

		if (!a->used)
			continue;
		napps++;
		if (a->name_len == 0 || a->name_len > HM_APP_NAME_MAX ||
		    hm__table_find_app(c, a->name, a->name_len, &idx) < 0 || idx != i)
			return HM_EBADTABLE;
		for (unsigned s = HM_DYNO_UP; s <= HM_DYNO_DOWN; s++)
			sum += a->n[s];
		if (sum != a->n[0] || (a->n[0] > 0 && hm__table_app_dynos(c, a, a->n[0]) == NULL))
			return HM_EBADTABLE;
		d = app_digest(a);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	for (uint32_t i = 0; i < c->h->top_domains; i++) {
		const struct hm__table_rec_domain *dm = &c->domains[i];
		const char *name;

		if (!dm->used)
			continue;
		ndomains++;
		nwild += dm->wildcard;
		name = hm__table_domain_name(c, dm, dm->name_len);
		/* lengths first: the digest hashes names through fixed-size buffers */
		if (name == NULL || dm->name_len > HM_HOST_MAX || dm->app >= c->h->top_apps ||
		    !c->apps[dm->app].used ||
		    (pos = hm__table_find_domain(c, name, dm->name_len, dm->wildcard, &idx)) < 0 ||
		    idx != i || c->domain_hash[pos].aux != dm->app)
			return HM_EBADTABLE;
		d = domain_digest(c, dm);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	for (uint32_t i = 0; i < c->h->top_dynos; i++) {
		const struct hm__table_rec_dyno *y = &c->dynos[i];
		const struct hm__table_rec_app *a;
		const uint32_t *arr;
		const char *name;

		if (!y->used)
			continue;
		ndynos++;
		name = hm__table_dyno_name(c, y, y->name_len);
		if (name == NULL || y->name_len > HM_DYNO_NAME_MAX || y->app >= c->h->top_apps ||
		    !(a = &c->apps[y->app])->used ||
		    hm__table_find_dyno(c, y->app, name, y->name_len, &idx) < 0 || idx != i ||
		    (arr = hm__table_app_dynos(c, a, a->n[0])) == NULL || y->pos >= a->n[0] ||
		    arr[y->pos] != i || y->state < HM_DYNO_UP || y->state > HM_DYNO_DOWN ||
		    y->pos < part_start(a, y->state) || y->pos >= part_start(a, y->state + 1))
			return HM_EBADTABLE;
		d = dyno_digest(c, y);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	if (verify_secrets(c, dig) != 0)
		return HM_EBADTABLE;
	if (napps != c->h->n_apps || ndomains != c->h->n_domains || ndynos != c->h->n_dynos ||
	    nwild != c->h->n_wild || dig[0] != c->h->digest[0] || dig[1] != c->h->digest[1])
		return HM_EBADTABLE;
	return 0;
}

int hm_table_verify(const struct hm_table_writer *w)
{
	struct hm__table_copy c;
	int e;

	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	if ((e = hm__table_verify_copy(w, &c)) != 0)
		return e;
	if (!w->in_batch && memcmp(w->base + w->lay.copy_off[0], w->base + w->lay.copy_off[1],
				   w->lay.copy_bytes) != 0)
		return HM_EBADTABLE;
	return 0;
}
