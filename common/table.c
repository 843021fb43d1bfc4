/*
 * The shared-memory routing table (docs/table.md is the design; table.h the API).
 *
 * A file holds a header, two copies of the routing state and the in-flight counters. The writer
 * applies a batch to the copy readers are not directed to, publishes it by incrementing the
 * header's `pub` word, then copies the 64-byte lines it wrote onto the other copy. Readers pick
 * the copy from `pub`, read with every index and offset bounds-checked, and retry if `pub`
 * changed meanwhile. The writer never waits for readers; readers never write to the copies.
 *
 * Within a copy everything is addressed by index or offset from the copy's base, so the copies
 * are interchangeable. The file header is immutable once the file is installed, except `pub`;
 * readers recompute the layout from the header's capacities and reject a header whose stored
 * layout disagrees, so a bad file cannot make them read outside the mapping.
 */
#include "common/table.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <mbedtls/sha256.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "common/hash.h"
#include "common/util.h"

#define TABLE_MAGIC    0x31454c4254444d48ull /* "HMDTBLE1" little-endian */
#define TABLE_LAYOUT   2u		     /* 2: the named secrets in each copy's header */
#define HDR_BYTES      4096u
#define PAGE	       4096u
#define LINE	       64u
#define PUB_RETIRED    (1ull << 63)
#define PUB_VERSION(p) ((p) & ~PUB_RETIRED)

#define DOMAIN_INLINE	44
#define DYNO_INLINE	28
#define HEAP_MIN	16u  /* smallest heap block; offsets below it mean "none" */
#define HEAP_CLASSES	29   /* 16 B << 0 .. 16 B << 28 (4 GiB) */
#define READ_RETRIES	1000 /* versions a reader tries before giving up (HM_EBUSYTABLE) */
#define REOPEN_EVERY_NS 50000000ull

/* Capacity limits keep every index in 32 bits and every size computation in 64. */
#define CAP_APPS_MAX	(1u << 24)
#define CAP_DOMAINS_MAX (1u << 26)
#define CAP_DYNOS_MAX	(1u << 27)
#define CAP_HEAP_MAX	0xfffff000ull

/* Fixed seeds: the digest must be equal on every node for equal state. */
#define DIGEST_SEED0 0x68657264676d6f64ull
#define DIGEST_SEED1 0x1f83d9abfb41bd6bull
#define WILD_SALT    0x9e3779b97f4a7c15ull
#define DYNO_SALT    0xc2b2ae3d27d4eb4full

struct file_hdr {
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
	uint8_t pad2[HDR_BYTES - 264];
};
_Static_assert(sizeof(struct file_hdr) == HDR_BYTES, "file header is one page");
_Static_assert(offsetof(struct file_hdr, pub) == 256, "pub is on its own line");

/*
 * A named secret of the cluster (docs/security.md: the affinity key; later TLS ticket keys),
 * replicated like routing state but never listed. A handful, in the copy's header.
 */
struct rec_secret {
	uint8_t used, name_len;
	uint16_t value_len;
	char name[HM_SECRET_NAME_MAX + 1];
	uint8_t value[HM_SECRET_MAX];
	uint8_t pad[28];
};
_Static_assert(sizeof(struct rec_secret) == 192, "a secret is three lines");
#define TABLE_SECRETS 16

struct copy_hdr {
	uint64_t epoch, seq, commit_ms;
	uint64_t digest[2];
	uint32_t n_apps, n_domains, n_dynos, n_wild;
	uint32_t top_apps, top_domains, top_dynos;
	uint32_t free_apps, free_domains, free_dynos; /* index + 1; 0 = empty */
	uint64_t heap_top;
	uint32_t heap_free[HEAP_CLASSES]; /* heap offset of the first free block; 0 = none */
	uint32_t n_secrets, pad_secrets;
	struct rec_secret secrets[TABLE_SECRETS];
};

#define APP_INLINE_DYNOS 7

/*
 * An app: the first line holds everything a lookup needs, including the dyno array itself
 * while the app has at most APP_INLINE_DYNOS dynos, so a lookup of a small app touches the
 * hash slot, the domain, this line and the chosen dyno (the domain and this line in parallel:
 * the slot carries the app index). The name is on the second line, writer-only links on the
 * third.
 */
struct rec_app {
	uint8_t used, name_len, maintenance, affinity;
	uint8_t balance, pad[3];
	uint32_t dynos; /* heap offset of uint32[dyno_cap], or 0: the array is inl[] */
	uint32_t dyno_cap;
	uint32_t n[5];			/* [0] all dynos, [state] dynos in that state */
	uint32_t inl[APP_INLINE_DYNOS]; /* the dyno array: [up | starting | crashed | down] */
	char name[HM_APP_NAME_MAX + 1];
	uint32_t domain_head; /* first domain (index + 1); free-list link when unused */
	uint8_t pad2[60];
};
_Static_assert(sizeof(struct rec_app) == 192, "app record is three lines");
_Static_assert(offsetof(struct rec_app, name) == 64, "the lookup fields fill the first line");

struct rec_domain {
	uint32_t app;
	uint32_t prev, next; /* app's domain list (index + 1); next is the free-list link */
	uint32_t name_heap;  /* heap offset when name_len > DOMAIN_INLINE */
	uint16_t name_len;
	uint8_t used, wildcard;
	char name[DOMAIN_INLINE]; /* canonical; a wildcard's key is the part after "*." */
};
_Static_assert(sizeof(struct rec_domain) == 64, "domain record is one line");

struct rec_dyno {
	uint32_t app;
	uint32_t pos; /* index in the app's dyno array; free-list link when unused */
	uint8_t used, state, family, name_len;
	uint16_t port, pad;
	uint8_t ip[16];
	uint32_t name_heap; /* heap offset when name_len > DYNO_INLINE */
	char name[DYNO_INLINE];
};
_Static_assert(sizeof(struct rec_dyno) == 64, "dyno record is one line");

struct slot {
	uint32_t tag; /* low 32 bits of the key's hash; its home is tag & mask */
	uint32_t idx; /* record index + 1; 0 = empty */
	uint32_t aux; /* domain slots: the app index, so the app loads while the name is checked */
};

/* Where everything is, computed from the capacities alone. */
struct layout {
	uint32_t cap_apps, cap_domains, cap_dynos;
	uint32_t app_mask, domain_mask, dyno_mask; /* slots - 1 */
	uint64_t heap_bytes;
	uint64_t off_apps, off_app_hash, off_domains, off_domain_hash, off_dynos, off_dyno_hash;
	uint64_t off_heap;
	uint64_t copy_bytes, copy_off[2], counters_off, counters_bytes, file_bytes;
	uint64_t seed;
};

/* A view of one copy. */
struct copy {
	uint8_t *base;
	const struct layout *lay;
	struct copy_hdr *h;
	struct rec_app *apps;
	struct slot *app_hash;
	struct rec_domain *domains;
	struct slot *domain_hash;
	struct rec_dyno *dynos;
	struct slot *dyno_hash;
	uint8_t *heap;
};

struct hm_table_map {
	int refs;
	bool current;	  /* still the reader's current map */
	volatile int bad; /* the file shrank under the mapping: now zero pages (map_fault) */
	int fault_slot;	  /* index in the fault registry, -1 if not registered */
	struct file_hdr *hdr;
	uint8_t *base;
	size_t data_bytes;
	_Atomic int32_t *counters; /* NULL if the file is not writable by this process */
	size_t counters_bytes;
	dev_t dev;
	ino_t ino;
	struct layout lay;
};

struct hm_table_reader {
	char *path;
	struct hm_table_map *cur;
	uint64_t next_try_ns; /* when to try opening the path again while it fails */
};

struct hm_table_writer {
	char *path;	/* NULL: private memory */
	char *tmp_path; /* the file's name until it is installed */
	int lock_fd;
	uint8_t *base;
	size_t bytes;
	struct file_hdr *hdr;
	struct layout lay;
	bool installed;
	bool in_batch;
	uint64_t max_bytes;
	/* Lines of the batch copy written since begin: a bitmap to de-duplicate, a list to walk. */
	uint8_t *dirty_bits;
	uint32_t *dirty;
	size_t ndirty, dirty_cap;
	int full; /* which capacity ran out: 1 apps, 2 domains, 3 dynos, 4 heap */
};

/* ---- Layout ---------------------------------------------------------------------------- */

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

static int layout_compute(struct layout *l, uint32_t apps, uint32_t domains, uint32_t dynos,
			  uint64_t heap, uint64_t seed)
{
	uint64_t o;

	if (apps == 0 || apps > CAP_APPS_MAX || domains == 0 || domains > CAP_DOMAINS_MAX ||
	    dynos == 0 || dynos > CAP_DYNOS_MAX || heap < 4096 || heap > CAP_HEAP_MAX)
		return HM_EBADTABLE;
	memset(l, 0, sizeof(*l));
	l->cap_apps = apps;
	l->cap_domains = domains;
	l->cap_dynos = dynos;
	l->app_mask = slots_for(apps) - 1;
	l->domain_mask = slots_for(domains) - 1;
	l->dyno_mask = slots_for(dynos) - 1;
	l->heap_bytes = align_up(heap, LINE);
	l->seed = seed;
	o = align_up(sizeof(struct copy_hdr), LINE);
	l->off_apps = o;
	o = align_up(o + (uint64_t)apps * sizeof(struct rec_app), LINE);
	l->off_app_hash = o;
	o = align_up(o + ((uint64_t)l->app_mask + 1) * sizeof(struct slot), LINE);
	l->off_domains = o;
	o = align_up(o + (uint64_t)domains * sizeof(struct rec_domain), LINE);
	l->off_domain_hash = o;
	o = align_up(o + ((uint64_t)l->domain_mask + 1) * sizeof(struct slot), LINE);
	l->off_dynos = o;
	o = align_up(o + (uint64_t)dynos * sizeof(struct rec_dyno), LINE);
	l->off_dyno_hash = o;
	o = align_up(o + ((uint64_t)l->dyno_mask + 1) * sizeof(struct slot), LINE);
	l->off_heap = o;
	o += l->heap_bytes;
	l->copy_bytes = align_up(o, PAGE);
	l->copy_off[0] = HDR_BYTES;
	l->copy_off[1] = HDR_BYTES + l->copy_bytes;
	l->counters_off = HDR_BYTES + 2 * l->copy_bytes;
	l->counters_bytes = align_up((uint64_t)dynos * sizeof(int32_t), PAGE);
	l->file_bytes = l->counters_off + l->counters_bytes;
	return 0;
}

/* Checks a header read from a file and derives its layout. */
static int layout_from_hdr(struct layout *l, const struct file_hdr *h, uint64_t file_size)
{
	if (h->magic != TABLE_MAGIC || h->layout != TABLE_LAYOUT || h->hdr_bytes != HDR_BYTES)
		return HM_EBADTABLE;
	if (layout_compute(l, h->cap_apps, h->cap_domains, h->cap_dynos, h->cap_heap, h->seed) != 0)
		return HM_EBADTABLE;
	if (l->file_bytes != h->file_bytes || l->file_bytes != file_size ||
	    l->copy_off[0] != h->copy_off[0] || l->copy_off[1] != h->copy_off[1] ||
	    l->copy_bytes != h->copy_bytes || l->counters_off != h->counters_off ||
	    l->counters_bytes != h->counters_bytes)
		return HM_EBADTABLE;
	return 0;
}

static void copy_view(struct copy *c, uint8_t *file_base, const struct layout *l, unsigned which)
{
	uint8_t *b = file_base + l->copy_off[which & 1];

	c->base = b;
	c->lay = l;
	c->h = (struct copy_hdr *)b;
	c->apps = (struct rec_app *)(b + l->off_apps);
	c->app_hash = (struct slot *)(b + l->off_app_hash);
	c->domains = (struct rec_domain *)(b + l->off_domains);
	c->domain_hash = (struct slot *)(b + l->off_domain_hash);
	c->dynos = (struct rec_dyno *)(b + l->off_dynos);
	c->dyno_hash = (struct slot *)(b + l->off_dyno_hash);
	c->heap = b + l->off_heap;
}

/* ---- Keys and lookups (shared by readers and the writer; all reads bounds-checked) ---------- */

static bool heap_ok(const struct copy *c, uint64_t off, uint64_t len)
{
	return off >= HEAP_MIN && off <= c->lay->heap_bytes && len <= c->lay->heap_bytes - off;
}

static const char *domain_name(const struct copy *c, const struct rec_domain *d)
{
	if (d->name_len <= DOMAIN_INLINE)
		return d->name;
	return heap_ok(c, d->name_heap, d->name_len) ? (const char *)c->heap + d->name_heap : NULL;
}

static const char *dyno_name(const struct copy *c, const struct rec_dyno *y)
{
	if (y->name_len <= DYNO_INLINE)
		return y->name;
	return heap_ok(c, y->name_heap, y->name_len) ? (const char *)c->heap + y->name_heap : NULL;
}

static uint64_t app_hash(const struct layout *l, const char *name, size_t n)
{
	return hm_hash64(name, n, l->seed);
}

static uint64_t domain_hash(const struct layout *l, const char *key, size_t n, bool wild)
{
	return hm_hash64(key, n, l->seed ^ (wild ? WILD_SALT : 0));
}

static uint64_t dyno_hash(const struct layout *l, uint32_t app, const char *name, size_t n)
{
	return hm_hash64(name, n, l->seed ^ DYNO_SALT ^ ((uint64_t)app << 32));
}

/* Each find returns the slot position holding the key, or -1; *idx gets the record index. */
static int64_t find_app(const struct copy *c, const char *name, size_t n, uint32_t *idx)
{
	uint32_t mask = c->lay->app_mask, tag = (uint32_t)app_hash(c->lay, name, n), i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct slot s = c->app_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_apps) {
			const struct rec_app *a = &c->apps[s.idx - 1];

			if (a->name_len == n && n <= HM_APP_NAME_MAX &&
			    memcmp(a->name, name, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

static int64_t find_domain(const struct copy *c, const char *key, size_t n, bool wild,
			   uint32_t *idx)
{
	uint32_t mask = c->lay->domain_mask, tag = (uint32_t)domain_hash(c->lay, key, n, wild);
	uint32_t i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct slot s = c->domain_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_domains) {
			const struct rec_domain *d = &c->domains[s.idx - 1];
			const char *dn;

			if (d->name_len == n && d->wildcard == wild &&
			    (dn = domain_name(c, d)) != NULL && memcmp(dn, key, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

static int64_t find_dyno(const struct copy *c, uint32_t app, const char *name, size_t n,
			 uint32_t *idx)
{
	uint32_t mask = c->lay->dyno_mask, tag = (uint32_t)dyno_hash(c->lay, app, name, n);
	uint32_t i = tag & mask;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct slot s = c->dyno_hash[i];

		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_dynos) {
			const struct rec_dyno *y = &c->dynos[s.idx - 1];
			const char *yn;

			if (y->app == app && y->name_len == n && (yn = dyno_name(c, y)) != NULL &&
			    memcmp(yn, name, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

/* Host key -> app index: the exact domain, else the longest wildcard. -1 if none. */
static int64_t resolve_app(const struct copy *c, const char *key, size_t n)
{
	uint32_t di, app;
	int64_t pos;

	if (n == 0 || n > HM_HOST_MAX)
		return -1;
	if ((pos = find_domain(c, key, n, false, &di)) < 0) {
		const char *p = key, *end = key + n, *dot;

		if (c->h->n_wild == 0)
			return -1;
		for (;; p = dot + 1) {
			dot = memchr(p, '.', (size_t)(end - p));
			if (dot == NULL || dot + 1 >= end)
				return -1;
			if ((pos = find_domain(c, dot + 1, (size_t)(end - dot - 1), true, &di)) >=
			    0)
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
static const uint32_t *app_dynos(const struct copy *c, const struct rec_app *a, uint32_t n)
{
	uint32_t off = a->dynos, cap = a->dyno_cap;

	if (n == 0)
		return NULL;
	if (off == 0)
		return n <= APP_INLINE_DYNOS ? a->inl : NULL;
	if (n > cap || !heap_ok(c, off, (uint64_t)cap * 4))
		return NULL;
	return (const uint32_t *)(c->heap + off);
}

/* The writer's view of the same array (trusted). */
static uint32_t *arr_of(struct copy *c, struct rec_app *a)
{
	return a->dynos != 0 ? (uint32_t *)(c->heap + a->dynos) : a->inl;
}

/* ---- Digest ------------------------------------------------------------------------------ */

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

static struct dsum digest_app(const char *name, size_t n, const struct rec_app *a)
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
			       const struct rec_dyno *y)
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
static struct dsum digest_secret(const struct rec_secret *r)
{
	uint8_t buf[2 + HM_SECRET_NAME_MAX + 32];
	size_t k = 0;

	buf[k++] = 'S';
	k += put_str(buf + k, r->name, r->name_len);
	mbedtls_sha256_ret(r->value, r->value_len, buf + k, 0);
	k += 32;
	return rec_digest(buf, k);
}

static void digest_bytes(const struct copy_hdr *h, uint8_t out[HM_DIGEST_LEN])
{
	for (int lane = 0; lane < 2; lane++)
		for (int i = 0; i < 8; i++)
			out[lane * 8 + i] = (uint8_t)(h->digest[lane] >> (8 * i));
}

void hm_digest_hex(const uint8_t digest[HM_DIGEST_LEN], char out[2 * HM_DIGEST_LEN + 1])
{
	hm_hex(digest, HM_DIGEST_LEN, out);
}

/* ---- Files and trust ------------------------------------------------------------------- */

/* A table file is used only if this process's uid or root owns it and nobody else may write it
 * (filesec.h): a file someone else made could route anything anywhere. */
static int table_fd_trusted(int fd)
{
	char why[160];

	return hm_file_trusted(fd, why, sizeof(why));
}

/* Files this writer creates get their mode whatever the umask. */
static int table_fd_own(int fd, mode_t mode)
{
	return fchmod(fd, mode) == 0 ? 0 : -errno;
}

/* ---- Reading ----------------------------------------------------------------------------- */

/*
 * A file truncated in place (same inode) leaves its mappings pointing past its end: a read
 * there raises SIGBUS. Every map of this process is listed here so that the process's SIGBUS
 * handler can find the one a fault is in (hm_table_fault) and replace it with zero pages; the
 * read then completes, the map is bad, and validated reads fail instead of the process dying.
 * The registry is written by map_open and map_free only, never while a table read (the only
 * place a fault comes from) is in progress on the same thread.
 */
#define FAULT_SLOTS 64

static struct {
	struct hm_table_map *volatile m;
} fault_reg[FAULT_SLOTS];
static volatile uint64_t bad_maps;

/* Replaces m's mappings with anonymous zero pages (async-signal-safe). */
static void map_zero(struct hm_table_map *m)
{
	if (m->bad)
		return;
	m->bad = 1;
	if (m->base != NULL)
		mmap(m->base, m->data_bytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1,
		     0);
	if (m->counters != NULL)
		mmap((void *)m->counters, m->counters_bytes, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	__atomic_add_fetch(&bad_maps, 1, __ATOMIC_RELAXED);
}

static bool in_range(const void *a, const void *base, size_t n)
{
	return base != NULL && (const char *)a >= (const char *)base &&
	       (const char *)a < (const char *)base + n;
}

bool hm_table_fault(const void *addr)
{
	for (int i = 0; i < FAULT_SLOTS; i++) {
		struct hm_table_map *m = fault_reg[i].m;

		if (m != NULL && (in_range(addr, m->base, m->data_bytes) ||
				  in_range(addr, (const void *)m->counters, m->counters_bytes))) {
			map_zero(m);
			return true;
		}
	}
	return false;
}

uint64_t hm_table_bad_maps(void)
{
	return __atomic_load_n(&bad_maps, __ATOMIC_RELAXED);
}

static void fault_register(struct hm_table_map *m)
{
	m->fault_slot = -1;
	for (int i = 0; i < FAULT_SLOTS; i++) {
		if (fault_reg[i].m == NULL) {
			fault_reg[i].m = m;
			m->fault_slot = i;
			return;
		}
	}
}

static void map_free(struct hm_table_map *m)
{
	if (m->fault_slot >= 0)
		fault_reg[m->fault_slot].m = NULL;
	if (m->base != NULL)
		munmap(m->base, m->data_bytes);
	if (m->counters != NULL)
		munmap((void *)m->counters, m->counters_bytes);
	free(m);
}

static int map_open(const char *path, struct hm_table_map **out)
{
	struct hm_table_map *m;
	struct file_hdr hdr;
	struct stat st;
	bool rw = true;
	int fd, r;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EACCES) {
		rw = false;
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	if ((r = table_fd_trusted(fd)) != 0) {
		close(fd);
		return r;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		close(fd);
		return -ENOMEM;
	}
	m->fault_slot = -1;
	if (fstat(fd, &st) != 0 || st.st_size < (off_t)HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
		r = HM_EBADTABLE;
		goto fail;
	}
	if ((r = layout_from_hdr(&m->lay, &hdr, (uint64_t)st.st_size)) != 0)
		goto fail;
	m->data_bytes = m->lay.counters_off;
	m->base = mmap(NULL, m->data_bytes, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		r = -errno;
		goto fail;
	}
	if (rw) {
		void *p = mmap(NULL, m->lay.counters_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			       (off_t)m->lay.counters_off);

		if (p != MAP_FAILED) {
			m->counters = p;
			m->counters_bytes = m->lay.counters_bytes;
		}
	}
	close(fd);
	m->hdr = (struct file_hdr *)m->base;
	m->dev = st.st_dev;
	m->ino = st.st_ino;
	m->refs = 1;
	m->current = true;
	fault_register(m);
	*out = m;
	return 0;
fail:
	close(fd);
	map_free(m);
	return r;
}

int hm_table_reader_new(struct hm_table_reader **out, const char *path)
{
	struct hm_table_reader *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->path = strdup(path)) == NULL) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void hm_table_map_ref(struct hm_table_map *m)
{
	m->refs++;
}

void hm_table_map_unref(struct hm_table_map *m)
{
	if (--m->refs == 0)
		map_free(m);
}

static void reader_set(struct hm_table_reader *r, struct hm_table_map *m)
{
	if (r->cur != NULL) {
		r->cur->current = false;
		hm_table_map_unref(r->cur);
	}
	r->cur = m;
}

void hm_table_reader_free(struct hm_table_reader *r)
{
	if (r == NULL)
		return;
	reader_set(r, NULL);
	free(r->path);
	free(r);
}

/* Opens the path if it holds a different file than the current map. Returns 1 if switched. */
static int reader_reopen(struct hm_table_reader *r)
{
	struct hm_table_map *m;
	int e = map_open(r->path, &m);

	if (e != 0)
		return e;
	/* The same file: nothing new, unless the current map went bad (a file truncated and
	 * written again in place is valid again, and mapped afresh). */
	if (r->cur != NULL && !r->cur->bad && r->cur->dev == m->dev && r->cur->ino == m->ino) {
		map_free(m);
		return 0;
	}
	reader_set(r, m);
	r->next_try_ns = 0;
	return 1;
}

static uint64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct hm_table_map *hm_table_reader_map(struct hm_table_reader *r)
{
	struct hm_table_map *m = r->cur;

	if (m != NULL && !m->bad &&
	    !(atomic_load_explicit(&m->hdr->pub, memory_order_relaxed) & PUB_RETIRED))
		return m;
	/* No table yet, or ours was replaced or went bad: open the path now, and after a failure
	 * at most every 50 ms (no syscall per request). Until a replacement opens, a retired map
	 * is still the last good version; a bad one is none. */
	if (r->next_try_ns == 0 || coarse_ns() >= r->next_try_ns) {
		if (reader_reopen(r) != 1)
			r->next_try_ns = coarse_ns() + REOPEN_EVERY_NS;
	}
	return r->cur != NULL && !r->cur->bad ? r->cur : NULL;
}

int hm_table_reader_check(struct hm_table_reader *r)
{
	struct stat st;

	if (stat(r->path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	/* Truncated in place: let go of the pages before a read faults on them. */
	if (r->cur != NULL && r->cur->dev == st.st_dev && r->cur->ino == st.st_ino &&
	    (uint64_t)st.st_size < r->cur->lay.file_bytes)
		map_zero(r->cur);
	if (r->cur != NULL && !r->cur->bad && r->cur->dev == st.st_dev &&
	    r->cur->ino == st.st_ino &&
	    !(atomic_load_explicit(&r->cur->hdr->pub, memory_order_relaxed) & PUB_RETIRED))
		return 0;
	return reader_reopen(r);
}

uint64_t hm_table_map_version(const struct hm_table_map *m)
{
	return PUB_VERSION(atomic_load_explicit(&m->hdr->pub, memory_order_acquire));
}

/* Runs fn on the published copy until it reads one version from start to end. */
#define VALIDATED_READ(m, c, v, body)                                                              \
	for (int tries_ = 0;; tries_++) {                                                          \
		if (tries_ == READ_RETRIES)                                                        \
			return HM_EBUSYTABLE;                                                      \
		v = PUB_VERSION(atomic_load_explicit(&(m)->hdr->pub, memory_order_acquire));       \
		copy_view(&c, (m)->base, &(m)->lay, (unsigned)v);                                  \
		body;                                                                              \
		atomic_thread_fence(memory_order_acquire);                                         \
		if ((m)->bad)                                                                      \
			return HM_EBADTABLE; /* what was read came from zero pages */              \
		if (PUB_VERSION(atomic_load_explicit(&(m)->hdr->pub, memory_order_relaxed)) == v)  \
			break;                                                                     \
	}

static void info_from_copy(const struct copy *c, const struct layout *l, uint64_t version,
			   uint64_t file_id, struct hm_table_info *out)
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

static int map_info(struct hm_table_map *m, struct hm_table_info *out)
{
	struct copy c;
	uint64_t v;

	VALIDATED_READ(m, c, v, info_from_copy(&c, &m->lay, v, m->hdr->file_id, out));
	return 0;
}

void hm_table_map_info(struct hm_table_map *m, struct hm_table_info *out)
{
	if (map_info(m, out) != 0)
		memset(out, 0, sizeof(*out));
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return x;
}

static int32_t inflight(const struct hm_table_map *m, uint32_t slot)
{
	int32_t v;

	if (m->counters == NULL || slot >= m->lay.cap_dynos)
		return 0;
	v = atomic_load_explicit(&m->counters[slot], memory_order_relaxed);
	return v > 0 ? v : 0;
}

static bool skipped(const struct hm_pick *pick, const struct rec_dyno *y, uint32_t slot)
{
	struct hm_addr a;

	if (pick == NULL || pick->skip == NULL)
		return false;
	a.family = y->family;
	a.port = y->port;
	memcpy(a.ip, y->ip, 16);
	return pick->skip(pick->ctx, &a, slot);
}

/* One random up, not skipped dyno index other than `not`, or UINT32_MAX. */
static uint32_t pick_random(const struct copy *c, const uint32_t *arr, uint32_t n_up,
			    const struct hm_pick *pick, uint64_t *rnd, uint32_t not )
{
	uint32_t start;

	for (int tries = 0; tries < 4; tries++) {
		uint32_t y = arr[*rnd % n_up];

		*rnd = mix64(*rnd + 0x9e3779b97f4a7c15ull);
		if (y != not &&y < c->lay->cap_dynos && !skipped(pick, &c->dynos[y], y))
			return y;
	}
	/* Most are skipped (or there are few): scan once from a random start. */
	start = (uint32_t)(*rnd % n_up);
	for (uint32_t k = 0; k < n_up; k++) {
		uint32_t y = arr[(start + k) % n_up];

		if (y != not &&y < c->lay->cap_dynos && !skipped(pick, &c->dynos[y], y))
			return y;
	}
	return UINT32_MAX;
}

static void route_out_dyno(const struct copy *c, uint32_t y, struct hm_route *out)
{
	const struct rec_dyno *d = &c->dynos[y];
	const char *name = dyno_name(c, d);
	size_t n = name != NULL && d->name_len <= HM_DYNO_NAME_MAX ? d->name_len : 0;

	out->has_dyno = true;
	out->slot = y;
	if (n > 0)
		memcpy(out->dyno, name, n);
	out->dyno[n] = '\0';
	out->addr.family = d->family;
	out->addr.port = d->port;
	memcpy(out->addr.ip, d->ip, 16);
}

static int route_copy(struct hm_table_map *m, const struct copy *c, const char *key, size_t n,
		      const struct hm_pick *pick, struct hm_route *out)
{
	const struct rec_app *a;
	const uint32_t *arr;
	int64_t ai = resolve_app(c, key, n);
	uint64_t rnd = pick != NULL ? mix64(pick->rnd) : 0;
	uint32_t y = UINT32_MAX, yi;
	size_t an;

	memset(out, 0, sizeof(*out));
	if (ai < 0)
		return HM_ENOHOST;
	a = &c->apps[ai];
	an = a->name_len <= HM_APP_NAME_MAX ? a->name_len : 0;
	memcpy(out->app, a->name, an);
	out->app[an] = '\0';
	out->maintenance = a->maintenance;
	out->affinity = a->affinity;
	out->balance = a->balance;
	out->n_dynos = a->n[0];
	out->n_up = a->n[HM_DYNO_UP];
	out->n_starting = a->n[HM_DYNO_STARTING];
	out->n_crashed = a->n[HM_DYNO_CRASHED];
	out->n_down = a->n[HM_DYNO_DOWN];
	arr = app_dynos(c, a, out->n_dynos);
	if (arr == NULL || out->n_up == 0 || out->n_up > out->n_dynos)
		return 0;
	if (pick != NULL && pick->affinity != NULL && pick->affinity_len <= HM_DYNO_NAME_MAX &&
	    find_dyno(c, (uint32_t)ai, pick->affinity, pick->affinity_len, &yi) >= 0 &&
	    c->dynos[yi].state == HM_DYNO_UP && !skipped(pick, &c->dynos[yi], yi)) {
		route_out_dyno(c, yi, out);
		out->affinity_hit = true;
		return 0;
	}
	y = pick_random(c, arr, out->n_up, pick, &rnd, UINT32_MAX);
	if (y != UINT32_MAX && a->balance == HM_BALANCE_LEAST_CONN && out->n_up > 1 && m != NULL &&
	    m->counters != NULL) {
		/* Power of two choices: the less loaded of two different random up dynos. */
		uint32_t y2 = pick_random(c, arr, out->n_up, pick, &rnd, y);

		if (y2 != UINT32_MAX && inflight(m, y2) < inflight(m, y))
			y = y2;
	}
	if (y != UINT32_MAX)
		route_out_dyno(c, y, out);
	return 0;
}

int hm_table_route(struct hm_table_map *m, const char *key, size_t n, const struct hm_pick *pick,
		   struct hm_route *out)
{
	struct copy c;
	uint64_t v;
	int r = 0;

	VALIDATED_READ(m, c, v, r = route_copy(m, &c, key, n, pick, out));
	out->version = v;
	return r;
}

void hm_table_inflight_add(struct hm_table_map *m, uint32_t slot, int32_t delta)
{
	if (m->counters != NULL && slot < m->lay.cap_dynos)
		atomic_fetch_add_explicit(&m->counters[slot], delta, memory_order_relaxed);
}

int32_t hm_table_inflight_get(const struct hm_table_map *m, uint32_t slot)
{
	return inflight(m, slot);
}

/* ---- Writing: dirty-line tracking --------------------------------------------------------- */

static unsigned batch_copy(const struct hm_table_writer *w)
{
	return (unsigned)(PUB_VERSION(atomic_load_explicit(&w->hdr->pub, memory_order_relaxed)) +
			  1) &
	       1;
}

static unsigned pub_copy(const struct hm_table_writer *w)
{
	return (unsigned)PUB_VERSION(atomic_load_explicit(&w->hdr->pub, memory_order_relaxed)) & 1;
}

/* Records that [p, p+len) of the batch copy is about to be written. */
static int touch(struct hm_table_writer *w, const struct copy *c, const void *p, size_t len)
{
	uint64_t off = (uint64_t)((const uint8_t *)p - c->base);
	uint64_t first = off / LINE, last = (off + len - 1) / LINE;

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

#define TOUCH(w, c, p, len)                                                                        \
	do {                                                                                       \
		int e_ = touch((w), (c), (p), (len));                                              \
		if (e_ != 0)                                                                       \
			return e_;                                                                 \
	} while (0)

/*
 * Copies every dirty line from copy `from` to copy `to`, and forgets them. A small batch walks
 * its list of lines; a large one (a snapshot load, a growth rebuild) scans the bitmap in address
 * order instead, so that neighbouring lines become one large memcpy rather than a million small
 * ones in the order they were written.
 */
static void sync_lines(struct hm_table_writer *w, unsigned from, unsigned to)
{
	uint8_t *src = w->base + w->lay.copy_off[from], *dst = w->base + w->lay.copy_off[to];
	uint64_t nlines = w->lay.copy_bytes / LINE;

	if (w->ndirty > nlines / 32) {
		for (uint64_t l = 0; l < nlines;) {
			uint64_t run = 0;

			if (w->dirty_bits[l >> 3] == 0 && (l & 7) == 0) {
				l += 8;
				continue;
			}
			while (l + run < nlines &&
			       (w->dirty_bits[(l + run) >> 3] & (1u << ((l + run) & 7)))) {
				w->dirty_bits[(l + run) >> 3] &= (uint8_t) ~(1u << ((l + run) & 7));
				run++;
			}
			if (run > 0)
				memcpy(dst + l * LINE, src + l * LINE, run * LINE);
			l += run + 1;
		}
		w->ndirty = 0;
		return;
	}
	for (size_t i = 0; i < w->ndirty;) {
		uint64_t l = w->dirty[i], run = 1;

		w->dirty_bits[l >> 3] &= (uint8_t) ~(1u << (l & 7));
		while (i + run < w->ndirty && w->dirty[i + run] == l + run) {
			uint64_t k = l + run;

			w->dirty_bits[k >> 3] &= (uint8_t) ~(1u << (k & 7));
			run++;
		}
		memcpy(dst + l * LINE, src + l * LINE, run * LINE);
		i += run;
	}
	w->ndirty = 0;
}

/* ---- Writing: heap -------------------------------------------------------------------------- */

static unsigned heap_class(uint64_t size)
{
	unsigned k = 0;

	while (((uint64_t)HEAP_MIN << k) < size)
		k++;
	return k;
}

static int64_t heap_alloc(struct hm_table_writer *w, struct copy *c, uint64_t size)
{
	unsigned k = heap_class(size);
	uint64_t bytes = (uint64_t)HEAP_MIN << k, off;

	if (k >= HEAP_CLASSES)
		return HM_EFULL;
	TOUCH(w, c, c->h, sizeof(*c->h));
	off = c->h->heap_free[k];
	if (off != 0) {
		uint32_t next;

		memcpy(&next, c->heap + off, 4);
		c->h->heap_free[k] = next;
		return (int64_t)off;
	}
	off = c->h->heap_top < HEAP_MIN ? HEAP_MIN : c->h->heap_top;
	if (off + bytes > w->lay.heap_bytes) {
		w->full = 4;
		return HM_EFULL;
	}
	c->h->heap_top = off + bytes;
	return (int64_t)off;
}

static int heap_free(struct hm_table_writer *w, struct copy *c, uint64_t off, uint64_t size)
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
static int name_store(struct hm_table_writer *w, struct copy *c, char *inl, size_t inl_cap,
		      uint32_t *heap_off, const char *s, size_t n)
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

/* ---- Writing: hash tables ----------------------------------------------------------------- */

static int slot_insert(struct hm_table_writer *w, struct copy *c, struct slot *tab, uint32_t mask,
		       uint64_t hash, uint32_t idx, uint32_t aux)
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
static int slot_delete(struct hm_table_writer *w, struct copy *c, struct slot *tab, uint32_t mask,
		       uint32_t i)
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

/* ---- Writing: records --------------------------------------------------------------------- */

static void digest_add(struct copy *c, struct dsum d, int sign)
{
	for (int i = 0; i < 2; i++)
		c->h->digest[i] += sign > 0 ? d.lane[i] : (uint64_t)0 - d.lane[i];
}

static int64_t rec_alloc(struct hm_table_writer *w, struct copy *c, uint32_t *freelist,
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

static int rec_free(struct hm_table_writer *w, struct copy *c, uint32_t *freelist, void *records,
		    size_t rec_size, size_t link_off, uint32_t idx)
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
		  sizeof(struct rec_app), offsetof(struct rec_app, domain_head), 1)
#define DOMAIN_ALLOC(w, c)                                                                         \
	rec_alloc(w, c, &(c)->h->free_domains, &(c)->h->top_domains, (w)->lay.cap_domains,         \
		  (c)->domains, sizeof(struct rec_domain), offsetof(struct rec_domain, next), 2)
#define DYNO_ALLOC(w, c)                                                                           \
	rec_alloc(w, c, &(c)->h->free_dynos, &(c)->h->top_dynos, (w)->lay.cap_dynos, (c)->dynos,   \
		  sizeof(struct rec_dyno), offsetof(struct rec_dyno, pos), 3)

/* Domain list of an app: doubly linked by index + 1. */
static int domain_unlink(struct hm_table_writer *w, struct copy *c, uint32_t di)
{
	struct rec_domain *d = &c->domains[di];
	struct rec_app *a = &c->apps[d->app];

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

static int domain_link(struct hm_table_writer *w, struct copy *c, uint32_t di, uint32_t ai)
{
	struct rec_domain *d = &c->domains[di];
	struct rec_app *a = &c->apps[ai];

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
static uint32_t part_start(const struct rec_app *a, unsigned state)
{
	uint32_t s = 0;

	for (unsigned k = HM_DYNO_UP; k < state; k++)
		s += a->n[k];
	return s;
}

static int arr_swap(struct hm_table_writer *w, struct copy *c, struct rec_app *a, uint32_t i,
		    uint32_t j)
{
	uint32_t *arr = arr_of(c, a), t;

	if (i == j)
		return 0;
	TOUCH(w, c, &arr[i], 4);
	TOUCH(w, c, &arr[j], 4);
	t = arr[i];
	arr[i] = arr[j];
	arr[j] = t;
	TOUCH(w, c, &c->dynos[arr[i]], sizeof(struct rec_dyno));
	TOUCH(w, c, &c->dynos[arr[j]], sizeof(struct rec_dyno));
	c->dynos[arr[i]].pos = i;
	c->dynos[arr[j]].pos = j;
	return 0;
}

/* Moves the dyno at *pos from partition `from` to partition `to`, updating the counts. */
static int arr_move(struct hm_table_writer *w, struct copy *c, struct rec_app *a, uint32_t pos,
		    unsigned from, unsigned to)
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

static int arr_reserve(struct hm_table_writer *w, struct copy *c, struct rec_app *a)
{
	uint32_t cap;
	int64_t off;

	if (a->dynos == 0 ? a->n[0] < APP_INLINE_DYNOS : a->n[0] < a->dyno_cap)
		return 0;
	cap = a->dynos == 0 ? 4 * APP_INLINE_DYNOS : a->dyno_cap * 2;
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

static struct dsum app_digest(const struct rec_app *a)
{
	return digest_app(a->name, a->name_len, a);
}

static struct dsum domain_digest(const struct copy *c, const struct rec_domain *d)
{
	const struct rec_app *a = &c->apps[d->app];

	return digest_domain(domain_name(c, d), d->name_len, d->wildcard, a->name, a->name_len);
}

static struct dsum dyno_digest(const struct copy *c, const struct rec_dyno *y)
{
	const struct rec_app *a = &c->apps[y->app];

	return digest_dyno(a->name, a->name_len, dyno_name(c, y), y->name_len, y);
}

static int domain_remove(struct hm_table_writer *w, struct copy *c, uint32_t di, uint32_t slot_pos)
{
	struct rec_domain *d = &c->domains[di];
	int e;

	TOUCH(w, c, c->h, sizeof(*c->h));
	digest_add(c, domain_digest(c, d), -1);
	c->h->n_domains--;
	c->h->n_wild -= d->wildcard;
	if ((e = domain_unlink(w, c, di)) != 0 ||
	    (e = slot_delete(w, c, c->domain_hash, w->lay.domain_mask, slot_pos)) != 0)
		return e;
	if (d->name_len > DOMAIN_INLINE && (e = heap_free(w, c, d->name_heap, d->name_len)) != 0)
		return e;
	return rec_free(w, c, &c->h->free_domains, c->domains, sizeof(*d),
			offsetof(struct rec_domain, next), di);
}

static int dyno_remove(struct hm_table_writer *w, struct copy *c, uint32_t yi, uint32_t slot_pos)
{
	struct rec_dyno *y = &c->dynos[yi];
	struct rec_app *a = &c->apps[y->app];
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
	if (y->name_len > DYNO_INLINE && (e = heap_free(w, c, y->name_heap, y->name_len)) != 0)
		return e;
	return rec_free(w, c, &c->h->free_dynos, c->dynos, sizeof(*y),
			offsetof(struct rec_dyno, pos), yi);
}

static int op_app_put(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	struct rec_app *a;
	uint32_t ai;
	int64_t r;
	int e;

	if (find_app(c, ch->app, ch->app_len, &ai) >= 0) {
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
				     app_hash(&w->lay, ch->app, ch->app_len), ai, 0)) != 0)
			return e;
		c->h->n_apps++;
	}
	a->maintenance = ch->maintenance;
	a->affinity = ch->affinity;
	a->balance = ch->balance;
	digest_add(c, app_digest(a), +1);
	return 0;
}

static int op_app_rm(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	struct rec_app *a;
	uint32_t ai, idx;
	int64_t pos = find_app(c, ch->app, ch->app_len, &ai);
	int e;

	if (pos < 0)
		return HM_ENOAPP;
	a = &c->apps[ai];
	while (a->domain_head != 0) {
		struct rec_domain *d = &c->domains[a->domain_head - 1];
		int64_t sp = find_domain(c, domain_name(c, d), d->name_len, d->wildcard, &idx);

		if (sp < 0 || (e = domain_remove(w, c, idx, (uint32_t)sp)) != 0)
			return sp < 0 ? HM_EBADTABLE : e;
	}
	while (a->n[0] > 0) {
		struct rec_dyno *y = &c->dynos[arr_of(c, a)[a->n[0] - 1]];
		int64_t sp = find_dyno(c, ai, dyno_name(c, y), y->name_len, &idx);

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
			offsetof(struct rec_app, domain_head), ai);
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

static int op_domain_put(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	char key[HM_HOST_MAX + 3];
	bool wild;
	size_t n = domain_key(ch, key, &wild);
	uint32_t ai, di;
	struct rec_domain *d;
	int64_t r, pos;
	int e;

	if (find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	if ((pos = find_domain(c, key, n, wild, &di)) >= 0) {
		d = &c->domains[di];
		if (d->app == ai)
			return 0;
		TOUCH(w, c, &c->domain_hash[pos], sizeof(struct slot));
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
	if ((e = name_store(w, c, d->name, DOMAIN_INLINE, &d->name_heap, key, n)) != 0 ||
	    (e = slot_insert(w, c, c->domain_hash, w->lay.domain_mask,
			     domain_hash(&w->lay, key, n, wild), di, ai)) != 0 ||
	    (e = domain_link(w, c, di, ai)) != 0)
		return e;
	c->h->n_domains++;
	c->h->n_wild += wild;
	digest_add(c, domain_digest(c, d), +1);
	return 0;
}

static int op_domain_rm(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	char key[HM_HOST_MAX + 3];
	bool wild;
	size_t n = domain_key(ch, key, &wild);
	uint32_t di;
	int64_t pos = find_domain(c, key, n, wild, &di);

	if (pos < 0)
		return HM_ENODOMAIN;
	return domain_remove(w, c, di, (uint32_t)pos);
}

static int op_dyno_put(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	struct rec_app *a;
	struct rec_dyno *y;
	uint32_t ai, yi;
	int64_t r = 0;
	int e;

	if (find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	a = &c->apps[ai];
	if (find_dyno(c, ai, ch->name, ch->name_len, &yi) >= 0) {
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
		if ((e = name_store(w, c, y->name, DYNO_INLINE, &y->name_heap, ch->name,
				    ch->name_len)) != 0 ||
		    (e = slot_insert(w, c, c->dyno_hash, w->lay.dyno_mask,
				     dyno_hash(&w->lay, ai, ch->name, ch->name_len), yi, 0)) != 0)
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

static int op_dyno_rm(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	uint32_t ai, yi;
	int64_t pos;

	if (find_app(c, ch->app, ch->app_len, &ai) < 0)
		return HM_ENOAPP;
	pos = find_dyno(c, ai, ch->name, ch->name_len, &yi);
	if (pos < 0)
		return HM_ENODYNO;
	return dyno_remove(w, c, yi, (uint32_t)pos);
}

/* ---- Writing: files ----------------------------------------------------------------------- */

static int writer_map(struct hm_table_writer *w, int fd)
{
	int flags = fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p = mmap(NULL, w->lay.file_bytes, PROT_READ | PROT_WRITE, flags, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	w->base = p;
	w->bytes = w->lay.file_bytes;
	w->hdr = (struct file_hdr *)p;
	w->dirty_bits = calloc(w->lay.copy_bytes / LINE / 8 + 1, 1);
	return w->dirty_bits != NULL ? 0 : -ENOMEM;
}

static void writer_unmap(struct hm_table_writer *w)
{
	if (w->base != NULL)
		munmap(w->base, w->bytes);
	w->base = NULL;
	w->hdr = NULL;
	free(w->dirty_bits);
	w->dirty_bits = NULL;
	w->ndirty = 0;
}

static void hdr_init(struct file_hdr *h, const struct layout *l)
{
	uint64_t id;

	hm_random_bytes(&id, sizeof(id));
	h->magic = TABLE_MAGIC;
	h->layout = TABLE_LAYOUT;
	h->hdr_bytes = HDR_BYTES;
	h->file_bytes = l->file_bytes;
	h->file_id = id;
	h->seed = l->seed;
	h->cap_apps = l->cap_apps;
	h->cap_domains = l->cap_domains;
	h->cap_dynos = l->cap_dynos;
	h->cap_heap = l->heap_bytes;
	h->copy_off[0] = l->copy_off[0];
	h->copy_off[1] = l->copy_off[1];
	h->copy_bytes = l->copy_bytes;
	h->counters_off = l->counters_off;
	h->counters_bytes = l->counters_bytes;
	h->created_ms = hm_wall_ms();
	h->writer_pid = getpid();
	atomic_store_explicit(&h->pub, 0, memory_order_release);
}

/* A new, empty table: a temporary file next to path (installed at the first commit), or
 * private memory when path is NULL. */
static int writer_create(struct hm_table_writer *w, const struct hm_table_caps *caps)
{
	uint64_t seed;
	int fd = -1, e;

	hm_random_bytes(&seed, sizeof(seed));
	if ((e = layout_compute(&w->lay, caps->apps, caps->domains, caps->dynos, caps->heap,
				seed)) != 0)
		return e;
	if (w->max_bytes != 0 && w->lay.file_bytes > w->max_bytes)
		return HM_EFULL;
	if (w->path != NULL) {
		uint32_t rnd;
		size_t len = strlen(w->path) + 32;

		hm_random_bytes(&rnd, sizeof(rnd));
		free(w->tmp_path);
		if ((w->tmp_path = malloc(len)) == NULL)
			return -ENOMEM;
		snprintf(w->tmp_path, len, "%s.new.%ld.%08x", w->path, (long)getpid(), rnd);
		fd = open(w->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, HM_TABLE_MODE);
		if (fd < 0)
			return -errno;
		if ((e = table_fd_own(fd, HM_TABLE_MODE)) != 0)
			goto fail;
		/* Every block now: a sparse file on a full file system would make a later write
		 * through the mapping fault (SIGBUS) instead of this returning -ENOSPC. */
		if ((e = posix_fallocate(fd, 0, (off_t)w->lay.file_bytes)) != 0) {
			e = -e;
			goto fail;
		}
	}
	if ((e = writer_map(w, fd)) != 0)
		goto fail;
	if (fd >= 0)
		close(fd);
	hdr_init(w->hdr, &w->lay);
	w->installed = w->path == NULL;
	return 0;
fail:
	writer_unmap(w);
	if (fd >= 0) {
		close(fd);
		unlink(w->tmp_path);
	}
	return e;
}

/* Continues from a valid table at path: the published copy is checked, then copied over the
 * other one (which a writer killed mid-batch may have left half-written). */
static int verify_copy(const struct hm_table_writer *w, const struct copy *c);

static int writer_resume(struct hm_table_writer *w)
{
	struct copy c;
	struct file_hdr hdr;
	struct stat st;
	int fd = open(w->path, O_RDWR | O_CLOEXEC), e;

	if (fd < 0)
		return -errno;
	if ((e = table_fd_trusted(fd)) != 0) {
		close(fd);
		return e;
	}
	if (fstat(fd, &st) != 0 || st.st_size < (off_t)HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    (atomic_load(&hdr.pub) & PUB_RETIRED) ||
	    layout_from_hdr(&w->lay, &hdr, (uint64_t)st.st_size) != 0) {
		close(fd);
		return HM_EBADTABLE;
	}
	e = writer_map(w, fd);
	close(fd);
	if (e != 0)
		return e;
	w->installed = true;
	copy_view(&c, w->base, &w->lay, pub_copy(w));
	if ((e = verify_copy(w, &c)) != 0) {
		writer_unmap(w);
		return e;
	}
	w->hdr->writer_pid = getpid();
	memcpy(w->base + w->lay.copy_off[batch_copy(w)], c.base, w->lay.copy_bytes);
	return 0;
}

static int lock_path(struct hm_table_writer *w)
{
	size_t len = strlen(w->path) + 8;
	char *p = malloc(len);
	int fd, e;

	if (p == NULL)
		return -ENOMEM;
	snprintf(p, len, "%s.lock", w->path);
	fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, HM_LOCK_MODE);
	free(p);
	if (fd < 0)
		return -errno;
	if ((e = table_fd_trusted(fd)) != 0) {
		close(fd); /* someone else's lock file could be held forever by its owner */
		return e;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno == EWOULDBLOCK ? -EBUSY : -errno;

		close(fd);
		return e;
	}
	w->lock_fd = fd;
	return 0;
}

/*
 * Removes "<path>.new.<pid>.<rand>" files of writers that died before their first commit (a
 * full resync interrupted by SIGKILL): under the lock no other writer of this path exists, so
 * every such file whose pid is gone is garbage, and in /dev/shm garbage is memory.
 */
static void sweep_tmp(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dirname[4096], prefix[512];
	size_t plen;
	struct dirent *de;
	DIR *d;

	if (slash == NULL || (size_t)(slash - path) >= sizeof(dirname))
		return;
	memcpy(dirname, path, (size_t)(slash - path));
	dirname[slash - path] = '\0';
	if (dirname[0] == '\0')
		strcpy(dirname, "/");
	plen = (size_t)snprintf(prefix, sizeof(prefix), "%s.new.", slash + 1);
	if (plen >= sizeof(prefix) || (d = opendir(dirname)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char full[4600];
		long pid;

		if (strncmp(de->d_name, prefix, plen) != 0)
			continue;
		pid = strtol(de->d_name + plen, NULL, 10);
		if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 &&
		    errno == ESRCH) {
			snprintf(full, sizeof(full), "%s/%s", dirname, de->d_name);
			unlink(full);
		}
	}
	closedir(d);
}

int hm_table_writer_open(struct hm_table_writer **out, const char *path,
			 const struct hm_table_caps *caps, unsigned flags, uint64_t max_bytes)
{
	struct hm_table_writer *w = calloc(1, sizeof(*w));
	struct hm_table_caps def = HM_TABLE_CAPS_DEFAULT;
	int e;

	if (w == NULL)
		return -ENOMEM;
	w->lock_fd = -1;
	w->max_bytes = max_bytes;
	if (path != NULL) {
		if ((w->path = strdup(path)) == NULL) {
			free(w);
			return -ENOMEM;
		}
		if ((e = lock_path(w)) != 0)
			goto fail;
		sweep_tmp(path);
	}
	if (path != NULL && (flags & HM_TABLE_RESUME) && access(path, F_OK) == 0)
		e = writer_resume(w);
	else
		e = writer_create(w, caps != NULL ? caps : &def);
	if (e != 0)
		goto fail;
	*out = w;
	return 0;
fail:
	if (w->lock_fd >= 0)
		close(w->lock_fd);
	free(w->path);
	free(w->tmp_path);
	free(w);
	return e;
}

void hm_table_writer_close(struct hm_table_writer *w)
{
	if (w == NULL)
		return;
	hm_table_abort(w);
	if (!w->installed && w->tmp_path != NULL)
		unlink(w->tmp_path);
	writer_unmap(w);
	if (w->lock_fd >= 0)
		close(w->lock_fd);
	free(w->dirty);
	free(w->path);
	free(w->tmp_path);
	free(w);
}

/* Renames the writer's file over path, then retires the file that was there. */
static int install(struct hm_table_writer *w)
{
	int old = open(w->path, O_RDWR | O_CLOEXEC);

	if (rename(w->tmp_path, w->path) != 0) {
		int e = -errno;

		if (old >= 0)
			close(old);
		return e;
	}
	w->installed = true;
	if (old >= 0) {
		struct file_hdr *h =
		    mmap(NULL, HDR_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, old, 0);
		struct stat st;

		if (h != MAP_FAILED) {
			if (fstat(old, &st) == 0 && st.st_size >= (off_t)HDR_BYTES &&
			    h->magic == TABLE_MAGIC)
				atomic_fetch_or_explicit(&h->pub, PUB_RETIRED,
							 memory_order_release);
			munmap(h, HDR_BYTES);
		}
		close(old);
	}
	return 0;
}

int hm_table_begin(struct hm_table_writer *w)
{
	if (w->in_batch)
		return -EBUSY;
	w->in_batch = true;
	w->full = 0;
	return 0;
}

/* ---- Writing: secrets ---------------------------------------------------------------------- */

static struct rec_secret *secret_find(struct copy *c, const char *name, size_t n)
{
	for (unsigned i = 0; i < TABLE_SECRETS; i++) {
		struct rec_secret *r = &c->h->secrets[i];

		if (r->used && r->name_len == n && memcmp(r->name, name, n) == 0)
			return r;
	}
	return NULL;
}

static int op_secret_put(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	struct rec_secret *r = secret_find(c, ch->name, ch->name_len);

	if (r != NULL) {
		TOUCH(w, c, r, sizeof(*r));
		digest_add(c, digest_secret(r), -1);
	} else {
		for (unsigned i = 0; i < TABLE_SECRETS && r == NULL; i++)
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

static int op_secret_rm(struct hm_table_writer *w, struct copy *c, const struct hm_change *ch)
{
	struct rec_secret *r = secret_find(c, ch->name, ch->name_len);

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

/* The put change that makes r (value borrowed from the table). */
static void secret_change(const struct rec_secret *r, struct hm_change *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_SECRET_PUT;
	ch->name = r->name;
	ch->name_len = r->name_len;
	ch->value = r->value;
	ch->value_len = r->value_len;
}

/* Copies secret name of c into out; its length, or HM_ENOSECRET. */
static int secret_read(const struct copy *c, const char *name, uint8_t out[HM_SECRET_MAX])
{
	size_t n = strlen(name);

	for (unsigned i = 0; i < TABLE_SECRETS; i++) {
		const struct rec_secret *r = &c->h->secrets[i];

		if (r->used && r->name_len == n && memcmp(r->name, name, n) == 0 &&
		    r->value_len <= HM_SECRET_MAX) {
			memcpy(out, r->value, r->value_len);
			return r->value_len;
		}
	}
	return HM_ENOSECRET;
}

int hm_table_secret(struct hm_table_map *m, const char *name, uint8_t out[HM_SECRET_MAX])
{
	struct copy c;
	uint64_t v;
	int n = 0;

	VALIDATED_READ(m, c, v, n = secret_read(&c, name, out));
	(void)v;
	return n;
}

int hm_table_writer_secret(const struct hm_table_writer *w, const char *name,
			   uint8_t out[HM_SECRET_MAX])
{
	struct copy c;

	copy_view(&c, w->base, &w->lay, pub_copy(w));
	return secret_read(&c, name, out);
}

/* verify_copy's part: names valid and unique, lengths in range, the count and digest. */
static int verify_secrets(const struct copy *c, uint64_t dig[2])
{
	uint32_t n = 0;

	for (unsigned i = 0; i < TABLE_SECRETS; i++) {
		const struct rec_secret *r = &c->h->secrets[i];
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

/* ---- Writing: the batch API ------------------------------------------------------------------ */

int hm_table_apply(struct hm_table_writer *w, const struct hm_change *ch)
{
	struct copy c;
	int e;

	if (!w->in_batch)
		return -EINVAL;
	if ((e = hm_change_check(ch)) != 0)
		return e;
	copy_view(&c, w->base, &w->lay, batch_copy(w));
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

int hm_table_commit(struct hm_table_writer *w, uint64_t epoch, uint64_t seq)
{
	struct copy c;
	unsigned from = batch_copy(w);
	uint64_t v;
	int e;

	if (!w->in_batch)
		return -EINVAL;
	copy_view(&c, w->base, &w->lay, from);
	if ((e = touch(w, &c, c.h, sizeof(*c.h))) != 0) {
		hm_table_abort(w);
		return e;
	}
	c.h->epoch = epoch;
	c.h->seq = seq;
	c.h->commit_ms = hm_wall_ms();
	v = PUB_VERSION(atomic_load_explicit(&w->hdr->pub, memory_order_relaxed));
	atomic_store_explicit(&w->hdr->pub, v + 1, memory_order_release);
	/* A new file is installed before the old copy is brought up to date: if rename(2) fails,
	 * no reader can have seen the file, so the version is taken back and the batch aborted. */
	if (!w->installed && (e = install(w)) != 0) {
		atomic_store_explicit(&w->hdr->pub, v, memory_order_relaxed);
		hm_table_abort(w);
		return e;
	}
	/* Readers that still read the old copy must see the new pub before any line below. */
	atomic_thread_fence(memory_order_release);
	sync_lines(w, from, from ^ 1);
	w->in_batch = false;
	return 0;
}

void hm_table_abort(struct hm_table_writer *w)
{
	if (!w->in_batch)
		return;
	sync_lines(w, pub_copy(w), batch_copy(w));
	w->in_batch = false;
}

/* ---- Writing: queries on the published copy ----------------------------------------------- */

void hm_table_writer_info(const struct hm_table_writer *w, struct hm_table_info *out)
{
	struct copy c;

	copy_view(&c, w->base, &w->lay, pub_copy(w));
	info_from_copy(&c, &w->lay, PUB_VERSION(atomic_load(&w->hdr->pub)), w->hdr->file_id, out);
}

int hm_table_batch_info(const struct hm_table_writer *w, struct hm_table_info *out)
{
	struct copy c;

	if (!w->in_batch)
		return -EINVAL;
	copy_view(&c, w->base, &w->lay, batch_copy(w));
	info_from_copy(&c, &w->lay, PUB_VERSION(atomic_load(&w->hdr->pub)) + 1, w->hdr->file_id,
		       out);
	return 0;
}

static void app_change(const struct rec_app *a, struct hm_change *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_APP_PUT;
	ch->app = a->name;
	ch->app_len = a->name_len;
	ch->maintenance = a->maintenance;
	ch->affinity = a->affinity;
	ch->balance = a->balance;
}

static void dyno_change(const struct copy *c, const struct rec_dyno *y, struct hm_change *ch)
{
	const struct rec_app *a = &c->apps[y->app];

	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_DYNO_PUT;
	ch->app = a->name;
	ch->app_len = a->name_len;
	ch->name = dyno_name(c, y);
	ch->name_len = y->name_len;
	ch->state = y->state;
	ch->addr.family = y->family;
	ch->addr.port = y->port;
	memcpy(ch->addr.ip, y->ip, 16);
}

int hm_table_foreach(const struct hm_table_writer *w,
		     int (*cb)(void *ctx, const struct hm_change *c), void *ctx)
{
	struct copy c;
	struct hm_change ch;
	char host[HM_HOST_MAX + 3];
	int r;

	copy_view(&c, w->base, &w->lay, pub_copy(w));
	for (unsigned i = 0; i < TABLE_SECRETS; i++) {
		if (!c.h->secrets[i].used)
			continue;
		secret_change(&c.h->secrets[i], &ch);
		if ((r = cb(ctx, &ch)) != 0)
			return r;
	}
	for (uint32_t i = 0; i < c.h->top_apps; i++) {
		if (!c.apps[i].used)
			continue;
		app_change(&c.apps[i], &ch);
		if ((r = cb(ctx, &ch)) != 0)
			return r;
	}
	for (uint32_t i = 0; i < c.h->top_domains; i++) {
		const struct rec_domain *d = &c.domains[i];
		const struct rec_app *a = &c.apps[d->app];
		size_t n = 0;

		if (!d->used)
			continue;
		if (d->wildcard) {
			memcpy(host, "*.", 2);
			n = 2;
		}
		memcpy(host + n, domain_name(&c, d), d->name_len);
		n += d->name_len;
		memset(&ch, 0, sizeof(ch));
		ch.op = HM_OP_DOMAIN_PUT;
		ch.app = a->name;
		ch.app_len = a->name_len;
		ch.name = host;
		ch.name_len = (uint16_t)n;
		if ((r = cb(ctx, &ch)) != 0)
			return r;
	}
	for (uint32_t i = 0; i < c.h->top_dynos; i++) {
		if (!c.dynos[i].used)
			continue;
		dyno_change(&c, &c.dynos[i], &ch);
		if ((r = cb(ctx, &ch)) != 0)
			return r;
	}
	return 0;
}

int hm_table_resolve(const struct hm_table_writer *w, const char *key, size_t n,
		     struct hm_change *app, int (*cb)(void *ctx, const struct hm_change *c),
		     void *ctx)
{
	struct copy c;
	const struct rec_app *a;
	const uint32_t *arr;
	int64_t ai;
	int r;

	copy_view(&c, w->base, &w->lay, pub_copy(w));
	ai = resolve_app(&c, key, n);
	if (ai < 0)
		return HM_ENOHOST;
	a = &c.apps[ai];
	app_change(a, app);
	arr = app_dynos(&c, a, a->n[0]);
	for (uint32_t k = 0; arr != NULL && k < a->n[0]; k++) {
		struct hm_change ch;

		dyno_change(&c, &c.dynos[arr[k]], &ch);
		if (cb != NULL && (r = cb(ctx, &ch)) != 0)
			return r;
	}
	return 0;
}

/* ---- Verification --------------------------------------------------------------------------- */

static int verify_copy(const struct hm_table_writer *w, const struct copy *c)
{
	const struct layout *l = &w->lay;
	uint64_t dig[2] = {0, 0};
	uint32_t napps = 0, ndomains = 0, ndynos = 0, nwild = 0, idx;
	int64_t pos;
	struct dsum d;

	if (c->h->top_apps > l->cap_apps || c->h->top_domains > l->cap_domains ||
	    c->h->top_dynos > l->cap_dynos || c->h->heap_top > l->heap_bytes)
		return HM_EBADTABLE;
	for (uint32_t i = 0; i < c->h->top_apps; i++) {
		const struct rec_app *a = &c->apps[i];
		uint64_t sum = 0; /* the writer adds these counts in 32 bits: they must not wrap */

		if (!a->used)
			continue;
		napps++;
		if (a->name_len == 0 || a->name_len > HM_APP_NAME_MAX ||
		    find_app(c, a->name, a->name_len, &idx) < 0 || idx != i)
			return HM_EBADTABLE;
		for (unsigned s = HM_DYNO_UP; s <= HM_DYNO_DOWN; s++)
			sum += a->n[s];
		if (sum != a->n[0] || (a->n[0] > 0 && app_dynos(c, a, a->n[0]) == NULL))
			return HM_EBADTABLE;
		d = app_digest(a);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	for (uint32_t i = 0; i < c->h->top_domains; i++) {
		const struct rec_domain *dm = &c->domains[i];
		const char *name;

		if (!dm->used)
			continue;
		ndomains++;
		nwild += dm->wildcard;
		name = domain_name(c, dm);
		/* lengths first: the digest hashes names through fixed-size buffers */
		if (name == NULL || dm->name_len > HM_HOST_MAX || dm->app >= c->h->top_apps ||
		    !c->apps[dm->app].used ||
		    (pos = find_domain(c, name, dm->name_len, dm->wildcard, &idx)) < 0 ||
		    idx != i || c->domain_hash[pos].aux != dm->app)
			return HM_EBADTABLE;
		d = domain_digest(c, dm);
		dig[0] += d.lane[0];
		dig[1] += d.lane[1];
	}
	for (uint32_t i = 0; i < c->h->top_dynos; i++) {
		const struct rec_dyno *y = &c->dynos[i];
		const struct rec_app *a;
		const uint32_t *arr;
		const char *name;

		if (!y->used)
			continue;
		ndynos++;
		name = dyno_name(c, y);
		if (name == NULL || y->name_len > HM_DYNO_NAME_MAX || y->app >= c->h->top_apps ||
		    !(a = &c->apps[y->app])->used ||
		    find_dyno(c, y->app, name, y->name_len, &idx) < 0 || idx != i ||
		    (arr = app_dynos(c, a, a->n[0])) == NULL || y->pos >= a->n[0] ||
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
	struct copy c;
	int e;

	copy_view(&c, w->base, &w->lay, pub_copy(w));
	if ((e = verify_copy(w, &c)) != 0)
		return e;
	if (!w->in_batch && memcmp(w->base + w->lay.copy_off[0], w->base + w->lay.copy_off[1],
				   w->lay.copy_bytes) != 0)
		return HM_EBADTABLE;
	return 0;
}

/* ---- Growth ------------------------------------------------------------------------------- */

static int grow_apply(void *ctx, const struct hm_change *ch)
{
	return hm_table_apply(ctx, ch);
}

int hm_table_grow(struct hm_table_writer *w, const struct hm_table_caps *min)
{
	struct hm_table_writer nw;
	struct hm_table_info info;
	struct hm_table_caps caps;
	int e;

	if (w->in_batch)
		return -EBUSY;
	hm_table_writer_info(w, &info);
	caps.apps = w->lay.cap_apps;
	caps.domains = w->lay.cap_domains;
	caps.dynos = w->lay.cap_dynos;
	caps.heap = w->lay.heap_bytes;
	{
		struct copy c;

		copy_view(&c, w->base, &w->lay, pub_copy(w));
		if (w->full == 1 || info.apps * 2 > caps.apps)
			caps.apps = HM_MIN(caps.apps * 2, CAP_APPS_MAX);
		if (w->full == 2 || info.domains * 2 > caps.domains)
			caps.domains = HM_MIN(caps.domains * 2, CAP_DOMAINS_MAX);
		if (w->full == 3 || info.dynos * 2 > caps.dynos)
			caps.dynos = HM_MIN(caps.dynos * 2, CAP_DYNOS_MAX);
		if (w->full == 4 || c.h->heap_top * 2 > caps.heap)
			caps.heap = HM_MIN(caps.heap * 2, CAP_HEAP_MAX);
	}
	if (min != NULL) {
		caps.apps = HM_MAX(caps.apps, min->apps);
		caps.domains = HM_MAX(caps.domains, min->domains);
		caps.dynos = HM_MAX(caps.dynos, min->dynos);
		caps.heap = HM_MAX(caps.heap, min->heap);
	}
	if (caps.apps == w->lay.cap_apps && caps.domains == w->lay.cap_domains &&
	    caps.dynos == w->lay.cap_dynos && caps.heap == w->lay.heap_bytes)
		return HM_EFULL;

	memset(&nw, 0, sizeof(nw));
	nw.lock_fd = -1;
	nw.path = w->path;
	nw.max_bytes = w->max_bytes;
	if ((e = writer_create(&nw, &caps)) != 0)
		goto fail;
	/* A file not installed yet (its writer's first batch did not fit) is replaced by one that
	 * is not installed either: the caller's first commit installs it, so readers keep the
	 * table at path until then. Marked installed, nw's commit below leaves the path alone. */
	if (!w->installed)
		nw.installed = true;
	if ((e = hm_table_begin(&nw)) != 0 || (e = hm_table_foreach(w, grow_apply, &nw)) != 0) {
		/* A capacity we did not double cannot run out: the new one holds the old state. */
		goto fail;
	}
	{
		/* Preserve the sync position and the commit time of the published version. */
		if ((e = hm_table_commit(&nw, info.epoch, info.seq)) != 0)
			goto fail;
		struct copy c;

		for (unsigned k = 0; k < 2; k++) {
			copy_view(&c, nw.base, &nw.lay, k);
			c.h->commit_ms = info.commit_ms;
		}
	}
	if (!w->installed) {
		unlink(w->tmp_path);
		nw.installed = false;
	}
	writer_unmap(w);
	w->base = nw.base;
	w->bytes = nw.bytes;
	w->hdr = nw.hdr;
	w->lay = nw.lay;
	w->dirty_bits = nw.dirty_bits;
	free(w->dirty);
	w->dirty = nw.dirty;
	w->dirty_cap = nw.dirty_cap;
	w->ndirty = 0;
	free(w->tmp_path);
	w->tmp_path = nw.tmp_path;
	w->installed = nw.installed;
	w->full = 0;
	return 0;
fail:
	if (!w->installed)
		nw.installed = false;
	hm_table_abort(&nw);
	if (nw.base != NULL && !nw.installed && nw.tmp_path != NULL)
		unlink(nw.tmp_path);
	writer_unmap(&nw);
	free(nw.dirty);
	free(nw.tmp_path);
	return e;
}
