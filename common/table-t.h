/*
 * The routing table's insides, shared by its files and by nothing else (table.h is the API,
 * docs/table.md the design): the file format (header, the two copies, records, hash slots,
 * the layout computed from the capacities), the bounds-checked lookups both readers and the
 * writer make, and the writer's state that its two files share.
 *
 * The files: table_fmt.c computes and checks layouts and reads facts and secrets out of a copy;
 * table_read.c is the read side (maps, the SIGBUS fault registry, hm_table_route(), in-flight
 * counters), the only part hermod-router links; table_write.c is the writer (its file's
 * life-cycle through common/pubfile, batches, commit, abort, growth, queries on the published
 * copy); table_apply.c applies one change to the batch copy and checks what changes keep
 * (hm_table_verify()). The lookups are inline here: they are hm_table_route()'s hot path.
 */
#ifndef HM_COMMON_TABLE_T_H
#define HM_COMMON_TABLE_T_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/filesec.h"
#include "common/hash.h"
#include "common/pubfile.h"
#include "common/table.h"

#define HM__TABLE_MAGIC	    0x31454c4254444d48ull /* "HMDTBLE1" little-endian */
#define HM__TABLE_LAYOUT    2u			  /* 2: the named secrets in each copy's header */
#define HM__TABLE_HDR_BYTES 4096u
#define HM__TABLE_PAGE	    4096u
#define HM__TABLE_LINE	    64u

#define HM__TABLE_DOMAIN_INLINE 44
#define HM__TABLE_DYNO_INLINE	28
#define HM__TABLE_HEAP_MIN	16u /* smallest heap block; offsets below it mean "none" */
#define HM__TABLE_HEAP_CLASSES	29  /* 16 B << 0 .. 16 B << 28 (4 GiB) */

/* Capacity limits keep every index in 32 bits and every size computation in 64. */
#define HM__TABLE_CAP_APPS_MAX	  (1u << 24)
#define HM__TABLE_CAP_DOMAINS_MAX (1u << 26)
#define HM__TABLE_CAP_DYNOS_MAX	  (1u << 27)
#define HM__TABLE_CAP_HEAP_MAX	  0xfffff000ull

/* Fixed salts: keys must hash alike on every node (the seed is per file). */
#define HM__TABLE_WILD_SALT 0x9e3779b97f4a7c15ull
#define HM__TABLE_DYNO_SALT 0xc2b2ae3d27d4eb4full

struct hm__table_hdr {
	uint64_t magic;
	uint32_t layout;
	uint32_t hdr_bytes;
	uint64_t file_bytes;
	uint64_t file_id;
	uint64_t seed;
	uint32_t cap_apps, cap_domains, cap_dynos, pad0;
	uint64_t cap_heap;
	/* Derived layout, stored so that readers can check their own computation against it. */
	uint64_t copy_off[2];
	uint64_t copy_bytes;
	uint64_t counters_off;
	uint64_t counters_bytes;
	uint64_t created_ms;
	int64_t writer_pid;
	uint8_t pad1[256 - 120];
	_Atomic uint64_t pub; /* at offset 256, alone on its cache line */
	uint8_t pad2[HM__TABLE_HDR_BYTES - 264];
};
_Static_assert(sizeof(struct hm__table_hdr) == HM__TABLE_HDR_BYTES, "file header is one page");
_Static_assert(offsetof(struct hm__table_hdr, pub) == 256, "pub is on its own line");

/*
 * A named secret of the cluster (docs/security.md: the affinity key; later TLS ticket keys),
 * replicated like routing state but never listed. A handful, in the copy's header.
 */
struct hm__table_rec_secret {
	uint8_t used, name_len;
	uint16_t value_len;
	char name[HM_SECRET_NAME_MAX + 1];
	uint8_t value[HM_SECRET_MAX];
	uint8_t pad[28];
};
_Static_assert(sizeof(struct hm__table_rec_secret) == 192, "a secret is three lines");
#define HM__TABLE_SECRETS 16

struct hm__table_copy_hdr {
	uint64_t epoch, seq, commit_ms;
	uint64_t digest[2];
	uint32_t n_apps, n_domains, n_dynos, n_wild;
	uint32_t top_apps, top_domains, top_dynos;
	uint32_t free_apps, free_domains, free_dynos; /* index + 1; 0 = empty */
	uint64_t heap_top;
	uint32_t
	    heap_free[HM__TABLE_HEAP_CLASSES]; /* heap offset of the first free block; 0 = none */
	uint32_t n_secrets, pad_secrets;
	struct hm__table_rec_secret secrets[HM__TABLE_SECRETS];
};

#define HM__TABLE_APP_INLINE_DYNOS 7

/*
 * An app: the first line holds everything a lookup needs, including the dyno array itself
 * while the app has at most HM__TABLE_APP_INLINE_DYNOS dynos, so a lookup of a small app touches
 * the hash slot, the domain, this line and the chosen dyno (the domain and this line in parallel:
 * the slot carries the app index). The name is on the second line, writer-only links on the
 * third.
 */
struct hm__table_rec_app {
	uint8_t used, name_len, maintenance, affinity;
	uint8_t balance, pad[3];
	uint32_t dynos; /* heap offset of uint32[dyno_cap], or 0: the array is inl[] */
	uint32_t dyno_cap;
	uint32_t n[5]; /* [0] all dynos, [state] dynos in that state */
	uint32_t
	    inl[HM__TABLE_APP_INLINE_DYNOS]; /* the dyno array: [up | starting | crashed | down] */
	char name[HM_APP_NAME_MAX + 1];
	uint32_t domain_head; /* first domain (index + 1); free-list link when unused */
	uint8_t pad2[60];
};
_Static_assert(sizeof(struct hm__table_rec_app) == 192, "app record is three lines");
_Static_assert(offsetof(struct hm__table_rec_app, name) == 64,
	       "the lookup fields fill the first line");

struct hm__table_rec_domain {
	uint32_t app;
	uint32_t prev, next; /* app's domain list (index + 1); next is the free-list link */
	uint32_t name_heap;  /* heap offset when name_len > HM__TABLE_DOMAIN_INLINE */
	uint16_t name_len;
	uint8_t used, wildcard;
	char name[HM__TABLE_DOMAIN_INLINE]; /* canonical; a wildcard's key is the part after "*." */
};
_Static_assert(sizeof(struct hm__table_rec_domain) == 64, "domain record is one line");

struct hm__table_rec_dyno {
	uint32_t app;
	uint32_t pos; /* index in the app's dyno array; free-list link when unused */
	uint8_t used, state, family, name_len;
	uint16_t port, pad;
	uint8_t ip[16];
	uint32_t name_heap; /* heap offset when name_len > HM__TABLE_DYNO_INLINE */
	char name[HM__TABLE_DYNO_INLINE];
};
_Static_assert(sizeof(struct hm__table_rec_dyno) == 64, "dyno record is one line");

struct hm__table_slot {
	uint32_t tag; /* low 32 bits of the key's hash; its home is tag & mask */
	uint32_t idx; /* record index + 1; 0 = empty */
	uint32_t aux; /* domain slots: the app index, so the app loads while the name is checked */
};

/* Where everything is, computed from the capacities alone. */
struct hm__table_layout {
	uint32_t cap_apps, cap_domains, cap_dynos;
	uint32_t app_mask, domain_mask, dyno_mask; /* slots - 1 */
	uint64_t heap_bytes;
	uint64_t off_apps, off_app_hash, off_domains, off_domain_hash, off_dynos, off_dyno_hash;
	uint64_t off_heap;
	uint64_t copy_bytes, copy_off[2], counters_off, counters_bytes, file_bytes;
	uint64_t seed;
};

/* A view of one copy. */
struct hm__table_copy {
	uint8_t *base;
	const struct hm__table_layout *lay;
	struct hm__table_copy_hdr *h;
	struct hm__table_rec_app *apps;
	struct hm__table_slot *app_hash;
	struct hm__table_rec_domain *domains;
	struct hm__table_slot *domain_hash;
	struct hm__table_rec_dyno *dynos;
	struct hm__table_slot *dyno_hash;
	uint8_t *heap;
};

/* ---- Format (table_fmt.c) -------------------------------------------------------------------- */

/* The layout of a table with these capacities and hash seed. Returns 0, or HM_EBADTABLE if a
 * capacity is out of range. */
int hm__table_layout_compute(struct hm__table_layout *l, uint32_t apps, uint32_t domains,
			     uint32_t dynos, uint64_t heap, uint64_t seed);

/* Checks a header read from a file of file_size bytes and derives its layout: 0 or HM_EBADTABLE. */
int hm__table_layout_from_hdr(struct hm__table_layout *l, const struct hm__table_hdr *h,
			      uint64_t file_size);

/* Facts about copy c of a table with layout l (a reader validates the read around it). */
void hm__table_info_from_copy(const struct hm__table_copy *c, const struct hm__table_layout *l,
			      uint64_t version, uint64_t file_id, struct hm_table_info *out);

/* Copies the named secret of c into out; its length, or HM_ENOSECRET. */
int hm__table_secret_read(const struct hm__table_copy *c, const char *name,
			  uint8_t out[HM_SECRET_MAX]);

static inline void hm__table_copy_view(struct hm__table_copy *c, uint8_t *file_base,
				       const struct hm__table_layout *l, unsigned which)
{
	uint8_t *b = file_base + l->copy_off[which & 1];

	c->base = b;
	c->lay = l;
	c->h = (struct hm__table_copy_hdr *)b;
	c->apps = (struct hm__table_rec_app *)(b + l->off_apps);
	c->app_hash = (struct hm__table_slot *)(b + l->off_app_hash);
	c->domains = (struct hm__table_rec_domain *)(b + l->off_domains);
	c->domain_hash = (struct hm__table_slot *)(b + l->off_domain_hash);
	c->dynos = (struct hm__table_rec_dyno *)(b + l->off_dynos);
	c->dyno_hash = (struct hm__table_slot *)(b + l->off_dyno_hash);
	c->heap = b + l->off_heap;
}

/* A table file is used only if this process's uid or root owns it and nobody else may write it
 * (filesec.h): a file someone else made could route anything anywhere. */
static inline int hm__table_fd_trusted(int fd)
{
	char why[160];

	return hm_file_trusted(fd, why, sizeof(why));
}

/* ---- Keys and lookups (readers and the writer; every read bounds-checked) -------------------- */

static inline bool hm__table_heap_ok(const struct hm__table_copy *c, uint64_t off, uint64_t len)
{
	return off >= HM__TABLE_HEAP_MIN && off <= c->lay->heap_bytes &&
	       len <= c->lay->heap_bytes - off;
}

/*
 * A copy may be rewritten under a slow reader (the writer reuses it two commits later; the
 * reader's version check then discards what it read). So a length a bound is checked with must
 * be the length used: a reader loads a record's name length once (HM__TABLE_ONCE) and passes
 * that value on, and the name's heap offset is loaded once here. NULL if out of bounds.
 */
#define HM__TABLE_ONCE(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

static inline const char *hm__table_domain_name(const struct hm__table_copy *c,
						const struct hm__table_rec_domain *d, size_t len)
{
	uint32_t off;

	if (len <= HM__TABLE_DOMAIN_INLINE)
		return d->name;
	off = HM__TABLE_ONCE(d->name_heap);
	return hm__table_heap_ok(c, off, len) ? (const char *)c->heap + off : NULL;
}

static inline const char *hm__table_dyno_name(const struct hm__table_copy *c,
					      const struct hm__table_rec_dyno *y, size_t len)
{
	uint32_t off;

	if (len <= HM__TABLE_DYNO_INLINE)
		return y->name;
	off = HM__TABLE_ONCE(y->name_heap);
	return hm__table_heap_ok(c, off, len) ? (const char *)c->heap + off : NULL;
}

static inline uint64_t hm__table_app_hash(const struct hm__table_layout *l, const char *name,
					  size_t n)
{
	return hm_hash64(name, n, l->seed);
}

static inline uint64_t hm__table_domain_hash(const struct hm__table_layout *l, const char *key,
					     size_t n, bool wild)
{
	return hm_hash64(key, n, l->seed ^ (wild ? HM__TABLE_WILD_SALT : 0));
}

static inline uint64_t hm__table_dyno_hash(const struct hm__table_layout *l, uint32_t app,
					   const char *name, size_t n)
{
	return hm_hash64(name, n, l->seed ^ HM__TABLE_DYNO_SALT ^ ((uint64_t)app << 32));
}

/* Each find returns the slot position holding the key, or -1; *idx gets the record index. */
static inline int64_t hm__table_find_app(const struct hm__table_copy *c, const char *name, size_t n,
					 uint32_t *idx)
{
	uint32_t mask = c->lay->app_mask, tag = (uint32_t)hm__table_app_hash(c->lay, name, n),
		 i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct hm__table_slot s = c->app_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_apps) {
			const struct hm__table_rec_app *a = &c->apps[s.idx - 1];

			if (a->name_len == n && n <= HM_APP_NAME_MAX &&
			    memcmp(a->name, name, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

static inline int64_t hm__table_find_domain(const struct hm__table_copy *c, const char *key,
					    size_t n, bool wild, uint32_t *idx)
{
	uint32_t mask = c->lay->domain_mask,
		 tag = (uint32_t)hm__table_domain_hash(c->lay, key, n, wild);
	uint32_t i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct hm__table_slot s = c->domain_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_domains) {
			const struct hm__table_rec_domain *d = &c->domains[s.idx - 1];
			const char *dn;

			if (d->name_len == n && d->wildcard == wild &&
			    (dn = hm__table_domain_name(c, d, n)) != NULL &&
			    memcmp(dn, key, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

static inline int64_t hm__table_find_dyno(const struct hm__table_copy *c, uint32_t app,
					  const char *name, size_t n, uint32_t *idx)
{
	uint32_t mask = c->lay->dyno_mask,
		 tag = (uint32_t)hm__table_dyno_hash(c->lay, app, name, n);
	uint32_t i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct hm__table_slot s = c->dyno_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_dynos) {
			const struct hm__table_rec_dyno *y = &c->dynos[s.idx - 1];
			const char *yn;

			if (y->app == app && y->name_len == n &&
			    (yn = hm__table_dyno_name(c, y, n)) != NULL &&
			    memcmp(yn, name, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

/* Host key -> app index: the exact domain, else the longest wildcard. -1 if none. */
static inline int64_t hm__table_resolve_app(const struct hm__table_copy *c, const char *key,
					    size_t n)
{
	uint32_t di, app;
	int64_t pos;

	if (n == 0 || n > HM_HOST_MAX)
		return -1;
	if ((pos = hm__table_find_domain(c, key, n, false, &di)) < 0) {
		const char *p = key, *end = key + n, *dot;

		if (c->h->n_wild == 0)
			return -1;
		for (;; p = dot + 1) {
			dot = memchr(p, '.', (size_t)(end - p));
			if (dot == NULL || dot + 1 >= end)
				return -1;
			if ((pos = hm__table_find_domain(c, dot + 1, (size_t)(end - dot - 1), true,
							 &di)) >= 0)
				break;
		}
	}
	app = c->domain_hash[pos].aux;
	return app < c->lay->cap_apps ? (int64_t)app : -1;
}

/*
 * The app's dyno array, valid for n entries, or NULL if n is 0 or the bounds are not sane (a
 * torn read). n is the dyno count as the caller read it, once: a reader must not check the
 * array with one read of a->n[0] and index it below another.
 */
static inline const uint32_t *hm__table_app_dynos(const struct hm__table_copy *c,
						  const struct hm__table_rec_app *a, uint32_t n)
{
	uint32_t off = a->dynos, cap = a->dyno_cap;

	if (n == 0)
		return NULL;
	if (off == 0)
		return n <= HM__TABLE_APP_INLINE_DYNOS ? a->inl : NULL;
	if (n > cap || !hm__table_heap_ok(c, off, (uint64_t)cap * 4))
		return NULL;
	return (const uint32_t *)(c->heap + off);
}

/* ---- The writer (table_write.c, table_apply.c) ----------------------------------------------- */

struct hm_table_writer {
	struct hm_pubfile_writer pw; /* the path (NULL: private memory) and its lock */
	char *tmp_path;		     /* the file's name until it is installed */
	uint8_t *base;
	size_t bytes;
	struct hm__table_hdr *hdr;
	struct hm__table_layout lay;
	bool installed;
	bool in_batch;
	uint64_t max_bytes;
	/* Lines of the batch copy written since begin: a bitmap to de-duplicate, a list to walk. */
	uint8_t *dirty_bits;
	uint32_t *dirty;
	size_t ndirty, dirty_cap;
	int full; /* which capacity ran out: 1 apps, 2 domains, 3 dynos, 4 heap */
};

/* The copy readers are directed to (the published one), and the one a batch writes. */
static inline unsigned hm__table_pub_copy(const struct hm_table_writer *w)
{
	uint64_t pub = atomic_load_explicit(&w->hdr->pub, memory_order_relaxed);

	return (unsigned)HM_PUBFILE_VERSION(pub) & 1;
}

static inline unsigned hm__table_batch_copy(const struct hm_table_writer *w)
{
	return hm__table_pub_copy(w) ^ 1;
}

/* Records that [p, p+len) of the batch copy is about to be written. */
static inline int hm__table_touch(struct hm_table_writer *w, const struct hm__table_copy *c,
				  const void *p, size_t len)
{
	uint64_t off = (uint64_t)((const uint8_t *)p - c->base);
	uint64_t first = off / HM__TABLE_LINE, last = (off + len - 1) / HM__TABLE_LINE;

	for (uint64_t l = first; l <= last; l++) {
		if (w->dirty_bits[l >> 3] & (1u << (l & 7)))
			continue;
		if (w->ndirty == w->dirty_cap) {
			size_t cap = w->dirty_cap ? w->dirty_cap * 2 : 4096;
			uint32_t *d = realloc(w->dirty, cap * sizeof(*d));

			if (d == NULL)
				return -ENOMEM;
			w->dirty = d;
			w->dirty_cap = cap;
		}
		w->dirty_bits[l >> 3] |= (uint8_t)(1u << (l & 7));
		w->dirty[w->ndirty++] = (uint32_t)l;
	}
	return 0;
}

/* Checks copy c of w's table from its records (hm_table_verify()): 0 or HM_EBADTABLE. */
int hm__table_verify_copy(const struct hm_table_writer *w, const struct hm__table_copy *c);

#endif
