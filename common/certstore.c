/*
 * The node's certificate store (docs/tls.md, section 2, is the design; certstore.h the API).
 *
 * A file holds a header, two copies of a small index (entries and a hash of their names) and a
 * heap of blobs (name | chain | key | meta). The writer changes the copy readers are not directed
 * to, publishes it by incrementing the header's `pub` word, then copies the regions it wrote onto
 * the other copy. Blobs are written only into heap space that no published entry refers to, and
 * space freed by a batch is reused only after that batch is published, so a reader whose read of
 * the index and the bytes it reaches is bracketed by one unchanged `pub` read complete bytes.
 * Readers never write; the writer never waits.
 *
 * The heap's free space is known only to the writer, in its own memory, and rebuilt from the live
 * entries when a writer resumes a file: nothing about allocation has to survive a crash.
 */
#include "common/certstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "common/hash.h"
#include "common/pubfile.h"
#include "common/util.h"

#define STORE_MAGIC    0x3153545243444d48ull /* "HMDCRTS1" little-endian */
#define STORE_LAYOUT   1u
#define HDR_BYTES      4096u
#define PAGE	       4096u
#define UNIT	       64u /* heap allocation unit */
#define PUB_OFF	       256
#define PUB_VERSION(p) HM_PUBFILE_VERSION(p)

#define NAME_INLINE  40
#define READ_RETRIES 1000
#define RESERVE_STEP (1u << 20) /* heap space is fallocated in steps of this */

#define CAP_CERTS_MAX (1u << 24)
#define CAP_HEAP_MIN  4096ull
#define CAP_HEAP_MAX  (1ull << 40)

/* Largest blob: a name, a chain, a key and metadata at their bounds. */
#define BLOB_MAX ((uint64_t)HM_HOST_MAX + HM_CERT_CHAIN_MAX + HM_CERT_KEY_MAX + HM_CERT_META_MAX)

/* Size classes in heap units: 1..64 units exactly, then 8 classes per doubling. */
#define EXACT_CLASSES 64u
#define NCLASSES      (EXACT_CLASSES + 8u * 12u)

/* Fixed seeds: the digest must be equal on every node for equal state. */
#define DIGEST_SEED0 0x63657274646d6f64ull
#define DIGEST_SEED1 0x2545f4914f6cdd1dull
#define WILD_SALT    0x9e3779b97f4a7c15ull

struct file_hdr {
	uint64_t magic;
	uint32_t layout;
	uint32_t hdr_bytes;
	uint64_t file_bytes;
	uint64_t file_id;
	uint64_t seed;
	uint32_t cap_certs, slots;
	uint64_t copy_off[2];
	uint64_t copy_bytes;
	uint64_t heap_off;
	uint64_t heap_bytes;
	uint64_t created_ms;
	int64_t writer_pid;
	uint8_t pad1[256 - 104];
	_Atomic uint64_t pub; /* at offset 256, alone on its cache line */
	uint8_t pad2[HDR_BYTES - 264];
};
_Static_assert(sizeof(struct file_hdr) == HDR_BYTES, "file header is one page");
_Static_assert(offsetof(struct file_hdr, pub) == PUB_OFF, "pub is on its own line");

struct copy_hdr {
	uint64_t epoch, seq, commit_ms;
	uint64_t digest[2];
	uint64_t gen;	   /* last generation given to a put */
	uint64_t keys_gen; /* incremented by every set_ticket_keys */
	int64_t soonest;   /* smallest not_after of all entries; INT64_MAX if none */
	uint64_t heap_used;
	uint32_t n_certs, n_wild;
	uint32_t top;	      /* entries [0, top) have been used at some point */
	uint32_t free_head;   /* first free entry below top (index + 1); 0 = none */
	uint32_t default_idx; /* the "default" entry (index + 1); 0 = none */
	uint32_t n_keys;
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
};

struct rec_cert {
	uint8_t used;
	uint8_t kind;	   /* enum hm_cert_kind */
	uint16_t name_len; /* bytes of the lookup key (a wildcard's is the part after "*.") */
	uint32_t next_free;
	uint64_t blob; /* heap offset of name | cert | key | meta */
	uint32_t blob_cap;
	uint32_t crc; /* CRC-32C of cert | key */
	uint32_t cert_len, key_len;
	uint32_t meta_len, pad;
	uint64_t gen;
	int64_t not_after;
	uint8_t id[HM_CERT_ID_LEN];
	char name[NAME_INLINE]; /* the lookup key when name_len <= NAME_INLINE */
};
_Static_assert(sizeof(struct rec_cert) == 128, "an entry is two cache lines");

struct slot {
	uint32_t tag; /* low 32 bits of the key's hash; its home is tag & mask */
	uint32_t idx; /* entry index + 1; 0 = empty */
};

struct layout {
	uint32_t cap_certs, mask;
	uint64_t off_entries, off_slots; /* within a copy */
	uint64_t copy_bytes, copy_off[2];
	uint64_t heap_off, heap_bytes, file_bytes;
	uint64_t seed;
};

struct copy {
	uint8_t *base;
	const struct layout *lay;
	struct copy_hdr *h;
	struct rec_cert *e;
	struct slot *s;
	uint8_t *heap;
};

struct hm_certstore_map {
	int refs;
	struct hm_pubfile_guard guard; /* the whole file; bad: now zero pages */
	struct file_hdr *hdr;
	uint8_t *base;
	size_t bytes;
	struct layout lay;
};

struct hm_certstore_reader {
	struct hm_pubfile_follower f;
};

struct region {
	uint64_t off; /* from the copy's base */
	uint64_t len;
};

struct block {
	uint64_t off;
	uint32_t cap;
};

struct vec {
	void *v;
	size_t n, cap;
};

/* One store file (or private mapping) as the writer holds it; grow swaps one for another. */
struct sfile {
	int fd; /* -1 for private memory */
	char *tmp_path;
	uint8_t *base;
	size_t bytes;
	struct file_hdr *hdr;
	struct layout lay;
	uint64_t reserved; /* bytes of the file backed by fallocate (heap offsets beyond are not) */
	bool installed;
};

struct hm_certstore_writer {
	struct hm_pubfile_writer pw; /* the path (NULL: private memory) and its lock */
	uint64_t max_bytes;
	struct sfile f;
	bool in_batch;
	bool rescan_soonest;
	/* Regions of the batch copy written since begin; dirty_all once there are too many. */
	struct vec dirty;
	bool dirty_all;
	/* Heap: the writer's own map of free space. */
	uint64_t top;		   /* first never-used heap offset */
	struct vec free[NCLASSES]; /* struct block per class */
	struct vec batch_alloc;	   /* blocks taken by the open batch (returned on abort) */
	struct vec pending_free;   /* blocks the open batch stopped using (freed at commit) */
};

/* ---- Small helpers --------------------------------------------------------------------------- */

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static int vec_push(struct vec *v, const void *item, size_t size)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? v->cap * 2 : 16;
		void *p = realloc(v->v, cap * size);

		if (p == NULL)
			return -ENOMEM;
		v->v = p;
		v->cap = cap;
	}
	memcpy((uint8_t *)v->v + v->n * size, item, size);
	v->n++;
	return 0;
}

static void vec_free(struct vec *v)
{
	free(v->v);
	memset(v, 0, sizeof(*v));
}

int hm_cert_name_canon(const char *name, size_t n, char *out, uint8_t *kind)
{
	if (n > 0 && name[n - 1] == '.')
		n--;
	if (n == 7 && strncasecmp(name, "default", 7) == 0) {
		memcpy(out, "default", 8);
		*kind = HM_CERT_DEFAULT;
		return 7;
	}
	if (hm_hostname_check(name, n, true) != 0)
		return HM_EHOSTNAME;
	*kind = n >= 2 && name[0] == '*' && name[1] == '.' ? HM_CERT_WILDCARD : HM_CERT_EXACT;
	return (int)hm_host_canon(name, n, out);
}

/* The lookup key of a canonical name: a wildcard's is what follows "*.". */
static void name_key(const char *canon, size_t n, uint8_t kind, const char **key, size_t *kn)
{
	*key = kind == HM_CERT_WILDCARD ? canon + 2 : canon;
	*kn = kind == HM_CERT_WILDCARD ? n - 2 : kind == HM_CERT_DEFAULT ? 0 : n;
}

/* ---- Layout ---------------------------------------------------------------------------------- */

static int layout_compute(struct layout *l, uint32_t certs, uint64_t heap, uint64_t seed)
{
	uint64_t o;
	uint32_t slots = 16;

	if (certs == 0 || certs > CAP_CERTS_MAX || heap < CAP_HEAP_MIN || heap > CAP_HEAP_MAX)
		return -EUCLEAN;
	while (slots < 2 * (uint64_t)certs)
		slots *= 2;
	memset(l, 0, sizeof(*l));
	l->cap_certs = certs;
	l->mask = slots - 1;
	l->seed = seed;
	o = align_up(sizeof(struct copy_hdr), 64);
	l->off_entries = o;
	o = align_up(o + (uint64_t)certs * sizeof(struct rec_cert), 64);
	l->off_slots = o;
	o += (uint64_t)slots * sizeof(struct slot);
	l->copy_bytes = align_up(o, PAGE);
	l->copy_off[0] = HDR_BYTES;
	l->copy_off[1] = HDR_BYTES + l->copy_bytes;
	l->heap_off = HDR_BYTES + 2 * l->copy_bytes;
	l->heap_bytes = align_up(heap, PAGE);
	l->file_bytes = l->heap_off + l->heap_bytes;
	return 0;
}

static int layout_from_hdr(struct layout *l, const struct file_hdr *h, uint64_t file_size)
{
	if (h->magic != STORE_MAGIC || h->layout != STORE_LAYOUT || h->hdr_bytes != HDR_BYTES)
		return -EUCLEAN;
	if (layout_compute(l, h->cap_certs, h->heap_bytes, h->seed) != 0)
		return -EUCLEAN;
	if (l->file_bytes != h->file_bytes || l->file_bytes != file_size ||
	    l->mask + 1 != h->slots || l->copy_off[0] != h->copy_off[0] ||
	    l->copy_off[1] != h->copy_off[1] || l->copy_bytes != h->copy_bytes ||
	    l->heap_off != h->heap_off)
		return -EUCLEAN;
	return 0;
}

static void copy_view(struct copy *c, uint8_t *file_base, const struct layout *l, unsigned which)
{
	uint8_t *b = file_base + l->copy_off[which & 1];

	c->base = b;
	c->lay = l;
	c->h = (struct copy_hdr *)b;
	c->e = (struct rec_cert *)(b + l->off_entries);
	c->s = (struct slot *)(b + l->off_slots);
	c->heap = file_base + l->heap_off;
}

/* ---- Lookups (shared by readers and the writer; every read bounds-checked) ------------------- */

static bool blob_ok(const struct copy *c, const struct rec_cert *e)
{
	uint64_t need = (uint64_t)e->name_len + e->cert_len + e->key_len + e->meta_len;

	return e->blob >= UNIT && e->blob_cap >= need && e->blob <= c->lay->heap_bytes &&
	       e->blob_cap <= c->lay->heap_bytes - e->blob;
}

/*
 * A stable copy of what a reader is about to check and use (an entry, a slot, a count), for
 * reads of an index another process may be changing (the writer on the copy it is bringing up
 * to date, or anyone with write access to the file): every check and every use reads the copy,
 * never the file twice, so a bound checked on one load is the bound of the value used (two
 * loads could pair one entry's offset with another's lengths and read past the heap, or a
 * checked count with an unchecked one). The compiler barrier keeps the compiler from loading
 * the file again in place of the copy.
 */
static void load_once(void *dst, const void *src, size_t n)
{
	memcpy(dst, src, n);
	atomic_signal_fence(memory_order_seq_cst);
}

/* The entry's lookup key, or NULL when its bounds are not sane (a torn or corrupt read). A
 * reader passes a stable copy (load_once): an inline key then points into the copy. */
static const char *entry_key(const struct copy *c, const struct rec_cert *e)
{
	if (e->name_len > HM_HOST_MAX)
		return NULL;
	if (e->name_len <= NAME_INLINE)
		return e->name;
	return blob_ok(c, e) ? (const char *)c->heap + e->blob : NULL;
}

static uint64_t key_hash(const struct layout *l, const char *key, size_t n, bool wild)
{
	return hm_hash64(key, n, l->seed ^ (wild ? WILD_SALT : 0));
}

/* The slot position holding (key, wild), or -1; *idx gets the entry index. */
static int64_t find(const struct copy *c, const char *key, size_t n, bool wild, uint32_t *idx)
{
	uint32_t mask = c->lay->mask, tag = (uint32_t)key_hash(c->lay, key, n, wild);
	uint32_t i = tag & mask;
	uint8_t kind = wild ? HM_CERT_WILDCARD : HM_CERT_EXACT;

	for (uint32_t probes = 0; probes <= mask; probes++, i = (i + 1) & mask) {
		struct slot s;

		load_once(&s, &c->s[i], sizeof(s));
		if (s.idx == 0)
			return -1;
		if (s.tag == tag && s.idx <= c->lay->cap_certs) {
			const struct rec_cert *f = &c->e[s.idx - 1];
			struct rec_cert e;
			const char *k;

			/* What bounds the key (the lengths and the blob) once; an inline key is
			 * read in place, within its field (n <= NAME_INLINE then). */
			load_once(&e, f, offsetof(struct rec_cert, gen));
			if (e.used && e.kind == kind && e.name_len == n &&
			    (k = n <= NAME_INLINE ? f->name : entry_key(c, &e)) != NULL &&
			    memcmp(k, key, n) == 0) {
				*idx = s.idx - 1;
				return i;
			}
		}
	}
	return -1;
}

/* SNI selection: exact, the wildcard one label above, default. Entry index + kind, or -1. */
static int64_t select_entry(const struct copy *c, const char *key, size_t n, uint8_t *match)
{
	uint32_t idx, d;

	if (n > 0 && n <= HM_HOST_MAX) {
		const char *dot;

		if (find(c, key, n, false, &idx) >= 0) {
			*match = HM_CERT_EXACT;
			return idx;
		}
		dot = memchr(key, '.', n);
		if (c->h->n_wild > 0 && dot != NULL && dot > key && dot + 1 < key + n &&
		    find(c, dot + 1, (size_t)(key + n - dot - 1), true, &idx) >= 0) {
			*match = HM_CERT_WILDCARD;
			return idx;
		}
	}
	load_once(&d, &c->h->default_idx, sizeof(d));
	if (d == 0 || d > c->lay->cap_certs || !c->e[d - 1].used)
		return -1;
	*match = HM_CERT_DEFAULT;
	return d - 1;
}

/* ---- Digest ---------------------------------------------------------------------------------- */

struct dsum {
	uint64_t lane[2];
};

static struct dsum entry_digest(uint8_t kind, const char *key, size_t n, const uint8_t *id)
{
	uint8_t buf[4 + HM_HOST_MAX + HM_CERT_ID_LEN];
	size_t k = 0;
	struct dsum d;

	buf[k++] = 'C';
	buf[k++] = kind;
	buf[k++] = (uint8_t)(n & 0xff);
	buf[k++] = (uint8_t)(n >> 8);
	memcpy(buf + k, key, n);
	k += n;
	memcpy(buf + k, id, HM_CERT_ID_LEN);
	k += HM_CERT_ID_LEN;
	d.lane[0] = hm_hash64(buf, k, DIGEST_SEED0);
	d.lane[1] = hm_hash64(buf, k, DIGEST_SEED1);
	return d;
}

static void digest_bytes(const uint64_t lanes[2], uint8_t out[HM_CERTSTORE_DIGEST_LEN])
{
	for (int lane = 0; lane < 2; lane++)
		for (int i = 0; i < 8; i++)
			out[lane * 8 + i] = (uint8_t)(lanes[lane] >> (8 * i));
}

void hm_certstore_digest_add(uint8_t out[HM_CERTSTORE_DIGEST_LEN],
			     const uint8_t a[HM_CERTSTORE_DIGEST_LEN],
			     const uint8_t b[HM_CERTSTORE_DIGEST_LEN])
{
	for (int lane = 0; lane < 2; lane++) {
		uint64_t x = 0, y = 0, s;

		for (int i = 0; i < 8; i++) {
			x |= (uint64_t)a[lane * 8 + i] << (8 * i);
			y |= (uint64_t)b[lane * 8 + i] << (8 * i);
		}
		s = x + y;
		for (int i = 0; i < 8; i++)
			out[lane * 8 + i] = (uint8_t)(s >> (8 * i));
	}
}

int hm_certstore_path(const char *table, char *out, size_t n)
{
	size_t tl = strlen(table), base = tl;
	int w;

	if (tl >= 6 && strcmp(table + tl - 6, ".table") == 0)
		base = tl - 6;
	w = snprintf(out, n, "%.*s.certs", (int)base, table);
	return w < 0 || (size_t)w >= n ? -ENAMETOOLONG : 0;
}

/* ---- Reading --------------------------------------------------------------------------------- */

/* The file's owner must be us or root, and nobody else may have any access: it holds keys
 * (common/filesec: the one trust check of the table and the store). */
static int file_acceptable(const struct stat *st)
{
	if (!S_ISREG(st->st_mode))
		return -EUCLEAN;
	return hm_stat_trusted(st, HM_TRUST_PRIVATE, NULL, 0) != 0 ? -EPERM : 0;
}

/* Maps of this process found bad (common/pubfile.h's fault registry counts them here). */
static volatile uint64_t bad_maps;

uint64_t hm_certstore_bad_maps(void)
{
	return __atomic_load_n(&bad_maps, __ATOMIC_RELAXED);
}

static void map_free(struct hm_certstore_map *m)
{
	hm_pubfile_guard_del(&m->guard);
	if (m->base != NULL)
		munmap(m->base, m->bytes);
	free(m);
}

/* The follower's open callback: maps the store at path if it is acceptable and valid. */
static int map_open(const char *path, struct hm_pubfile_mapped *out)
{
	struct hm_certstore_map *m;
	struct file_hdr hdr;
	int fd, r;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		close(fd);
		return -ENOMEM;
	}
	m->guard.slot = -1;
	if (fstat(fd, &out->st) != 0) {
		r = -errno;
		goto fail;
	}
	if ((r = file_acceptable(&out->st)) != 0)
		goto fail;
	if (out->st.st_size < (off_t)HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
		r = -EUCLEAN;
		goto fail;
	}
	if ((r = layout_from_hdr(&m->lay, &hdr, (uint64_t)out->st.st_size)) != 0)
		goto fail;
	m->bytes = m->lay.file_bytes;
	m->base = mmap(NULL, m->bytes, PROT_READ, MAP_SHARED, fd, 0);
	if (m->base == MAP_FAILED) {
		m->base = NULL;
		r = -errno;
		goto fail;
	}
	/* The index is read on every handshake; the heap only on cache misses. */
	madvise(m->base, m->lay.heap_off, MADV_WILLNEED);
	close(fd);
	m->hdr = (struct file_hdr *)m->base;
	m->refs = 1;
	m->guard.range[0].base = m->base;
	m->guard.range[0].bytes = m->bytes;
	m->guard.range[0].prot = PROT_READ;
	m->guard.faults = &bad_maps;
	hm_pubfile_guard_add(&m->guard); /* -ENOSPC: unguarded, the registry is full */
	out->map = m;
	out->pub = &m->hdr->pub;
	out->guard = &m->guard;
	return 0;
fail:
	close(fd);
	map_free(m);
	return r;
}

void hm_certstore_map_ref(struct hm_certstore_map *m)
{
	m->refs++;
}

void hm_certstore_map_unref(struct hm_certstore_map *m)
{
	if (--m->refs == 0)
		map_free(m);
}

static void map_unref_cb(void *m)
{
	hm_certstore_map_unref(m);
}

static const struct hm_pubfile_ops follow_ops = {.open = map_open, .unref = map_unref_cb};

int hm_certstore_reader_new(struct hm_certstore_reader **out, const char *path)
{
	struct hm_certstore_reader *r = calloc(1, sizeof(*r));

	if (r == NULL || hm_pubfile_follower_init(&r->f, path, &follow_ops) != 0) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void hm_certstore_reader_free(struct hm_certstore_reader *r)
{
	if (r == NULL)
		return;
	hm_pubfile_follower_fini(&r->f);
	free(r);
}

struct hm_certstore_map *hm_certstore_reader_map(struct hm_certstore_reader *r)
{
	return hm_pubfile_follower_map(&r->f);
}

int hm_certstore_reader_check(struct hm_certstore_reader *r)
{
	return hm_pubfile_follower_check(&r->f);
}

uint64_t hm_certstore_map_version(const struct hm_certstore_map *m)
{
	return PUB_VERSION(atomic_load_explicit(&m->hdr->pub, memory_order_acquire));
}

/*
 * Runs fn on the published copy until one run starts and ends under the same version (a latch:
 * the writer may be changing the copy the reader looks at only after it has moved `pub`).
 * Returns fn's result, -ESTALE if the map went bad meanwhile (its file was truncated under it:
 * what fn read came from zero pages, and must not be taken for damage in the file), or -EAGAIN
 * after READ_RETRIES versions.
 */
static int validated(struct hm_certstore_map *m, int (*fn)(const struct copy *c, void *arg),
		     void *arg, uint64_t *version)
{
	for (int tries = 0; tries < READ_RETRIES; tries++) {
		uint64_t v = PUB_VERSION(atomic_load_explicit(&m->hdr->pub, memory_order_acquire));
		struct copy c;
		int r;

		copy_view(&c, m->base, &m->lay, (unsigned)v);
		r = fn(&c, arg);
		atomic_thread_fence(memory_order_acquire);
		if (m->guard.bad)
			return -ESTALE;
		if (PUB_VERSION(atomic_load_explicit(&m->hdr->pub, memory_order_relaxed)) == v) {
			if (version != NULL)
				*version = v;
			return r;
		}
	}
	return -EAGAIN;
}

static void info_from_copy(const struct copy *c, struct hm_certstore_info *out)
{
	out->epoch = c->h->epoch;
	out->seq = c->h->seq;
	out->commit_ms = c->h->commit_ms;
	out->certs = c->h->n_certs;
	out->ticket_keys = c->h->n_keys;
	out->ticket_keys_gen = c->h->keys_gen;
	out->soonest_not_after = c->h->soonest;
	digest_bytes(c->h->digest, out->digest);
	out->caps.certs = c->lay->cap_certs;
	out->caps.heap = c->lay->heap_bytes;
	out->heap_used = c->h->heap_used;
	out->file_bytes = c->lay->file_bytes;
}

static int info_fn(const struct copy *c, void *arg)
{
	info_from_copy(c, arg);
	return 0;
}

void hm_certstore_map_info(struct hm_certstore_map *m, struct hm_certstore_info *out)
{
	uint64_t v;

	memset(out, 0, sizeof(*out));
	if (validated(m, info_fn, out, &v) != 0) {
		memset(out, 0, sizeof(*out));
		return;
	}
	out->version = v;
	out->file_id = m->hdr->file_id;
}

struct lookup_arg {
	const char *key;
	size_t n;
	struct hm_cert_ref *out;
};

static int lookup_fn(const struct copy *c, void *arg)
{
	struct lookup_arg *a = arg;
	uint8_t match;
	int64_t i = select_entry(c, a->key, a->n, &match);
	struct rec_cert e;

	if (i < 0)
		return -ENOENT;
	load_once(&e, &c->e[i], sizeof(e));
	/* The caller sizes its buffer by these: never more than an entry can hold. */
	if (e.cert_len == 0 || e.cert_len > HM_CERT_CHAIN_MAX || e.key_len == 0 ||
	    e.key_len > HM_CERT_KEY_MAX)
		return -EUCLEAN;
	a->out->entry = (uint32_t)i;
	a->out->match = match;
	a->out->gen = e.gen;
	memcpy(a->out->id, e.id, HM_CERT_ID_LEN);
	a->out->not_after = e.not_after;
	a->out->cert_len = e.cert_len;
	a->out->key_len = e.key_len;
	return 0;
}

int hm_certstore_lookup(struct hm_certstore_map *m, const char *key, size_t n,
			struct hm_cert_ref *out)
{
	struct lookup_arg a = {key, n, out};

	return validated(m, lookup_fn, &a, &out->version);
}

struct fetch_arg {
	const struct hm_cert_ref *ref;
	uint8_t *buf;
	size_t cap;
	uint32_t crc, cert_len, key_len;
};

static int fetch_fn(const struct copy *c, void *arg)
{
	struct fetch_arg *a = arg;
	struct rec_cert e;
	uint64_t n;

	if (a->ref->entry >= c->lay->cap_certs)
		return -ESTALE;
	load_once(&e, &c->e[a->ref->entry], sizeof(e));
	if (!e.used || e.gen != a->ref->gen)
		return -ESTALE;
	if (!blob_ok(c, &e) || e.cert_len > HM_CERT_CHAIN_MAX || e.key_len > HM_CERT_KEY_MAX)
		return -EUCLEAN;
	n = (uint64_t)e.cert_len + e.key_len;
	if (n > a->cap)
		return -ENOBUFS;
	memcpy(a->buf, c->heap + e.blob + e.name_len, n);
	a->crc = e.crc;
	a->cert_len = e.cert_len;
	a->key_len = e.key_len;
	return 0;
}

int hm_certstore_fetch(struct hm_certstore_map *m, const struct hm_cert_ref *ref, void *buf,
		       size_t cap, struct hm_cert_bytes *out)
{
	struct fetch_arg a = {ref, buf, cap, 0, 0, 0};
	int r = validated(m, fetch_fn, &a, NULL);

	if (r != 0)
		return r;
	/* The copy was made under one version, so a mismatch is damage, not a race. */
	if (hm_crc32c(0, buf, (size_t)a.cert_len + a.key_len) != a.crc)
		return -EUCLEAN;
	out->cert = buf;
	out->cert_len = a.cert_len;
	out->key = (const uint8_t *)buf + a.cert_len;
	out->key_len = a.key_len;
	return 0;
}

struct keys_arg {
	struct hm_ticket_key *keys;
	uint64_t gen;
	unsigned n;
};

static int keys_fn(const struct copy *c, void *arg)
{
	struct keys_arg *a = arg;
	uint32_t n;

	load_once(&n, &c->h->n_keys, sizeof(n));
	a->n = HM_MIN(n, HM_TICKET_KEYS_MAX);
	a->gen = c->h->keys_gen;
	memcpy(a->keys, c->h->keys, a->n * sizeof(struct hm_ticket_key));
	return 0;
}

int hm_certstore_ticket_keys(struct hm_certstore_map *m, struct hm_ticket_key *keys, uint64_t *gen)
{
	struct keys_arg a = {keys, 0, 0};
	int r = validated(m, keys_fn, &a, NULL);

	if (r != 0)
		return r;
	*gen = a.gen;
	return (int)a.n;
}

/* ---- Writing: regions of the batch copy ------------------------------------------------------ */

static unsigned pub_copy(const struct hm_certstore_writer *w)
{
	return (unsigned)PUB_VERSION(atomic_load_explicit(&w->f.hdr->pub, memory_order_relaxed)) &
	       1;
}

static unsigned batch_copy(const struct hm_certstore_writer *w)
{
	return pub_copy(w) ^ 1;
}

/* Records that [p, p+len) of the batch copy is about to be written. */
static int touch(struct hm_certstore_writer *w, const struct copy *c, const void *p, size_t len)
{
	struct region r = {(uint64_t)((const uint8_t *)p - c->base), len};

	if (w->dirty_all)
		return 0;
	/* Past this many regions one copy of the whole index is cheaper (a snapshot load). */
	if (w->dirty.n >= c->lay->copy_bytes / 256) {
		w->dirty_all = true;
		return 0;
	}
	return vec_push(&w->dirty, &r, sizeof(r));
}

#define TOUCH(w, c, p, len)                                                                        \
	do {                                                                                       \
		int e_ = touch((w), (c), (p), (len));                                              \
		if (e_ != 0)                                                                       \
			return e_;                                                                 \
	} while (0)

/* Copies the batch's regions from copy `from` to copy `to`, and forgets them. */
static void sync_regions(struct hm_certstore_writer *w, unsigned from, unsigned to)
{
	uint8_t *src = w->f.base + w->f.lay.copy_off[from],
		*dst = w->f.base + w->f.lay.copy_off[to];
	const struct region *r = w->dirty.v;

	if (w->dirty_all)
		memcpy(dst, src, w->f.lay.copy_bytes);
	else
		for (size_t i = 0; i < w->dirty.n; i++)
			memcpy(dst + r[i].off, src + r[i].off, r[i].len);
	w->dirty.n = 0;
	w->dirty_all = false;
}

/* ---- Writing: the heap ----------------------------------------------------------------------- */

/* Units of the class that holds `units` (rounded up), and the class index. */
static unsigned class_up(uint64_t units, uint64_t *size)
{
	unsigned k = 6;

	if (units <= EXACT_CLASSES) {
		*size = units == 0 ? 1 : units;
		return (unsigned)*size - 1;
	}
	while ((2ull << k) < units)
		k++;
	{
		uint64_t step = 1ull << (k - 3), sub = (units - (1ull << k) + step - 1) / step;

		*size = (1ull << k) + sub * step;
		return EXACT_CLASSES + (k - 6) * 8 + (unsigned)sub - 1;
	}
}

/* The largest class whose size is at most `units`, and its size (for free gaps of any size). */
static unsigned class_down(uint64_t units, uint64_t *size)
{
	uint64_t s;
	unsigned c = class_up(units, &s);

	if (s > units)
		c--;
	if (c < EXACT_CLASSES)
		*size = c + 1;
	else {
		unsigned k = 6 + (c - EXACT_CLASSES) / 8, sub = (c - EXACT_CLASSES) % 8 + 1;

		*size = (1ull << k) + (uint64_t)sub * (1ull << (k - 3));
	}
	return c;
}

/* Backs the file with real pages up to heap offset `end`, so that writing there cannot fault. */
static int reserve(struct hm_certstore_writer *w, uint64_t end)
{
	uint64_t want = w->f.lay.heap_off + end, to;
	int e;

	if (w->f.fd < 0 || want <= w->f.reserved)
		return 0;
	to = HM_MIN(align_up(want, RESERVE_STEP), w->f.lay.file_bytes);
	e = posix_fallocate(w->f.fd, (off_t)w->f.reserved, (off_t)(to - w->f.reserved));
	if (e != 0)
		return e == ENOSPC ? -ENOSPC : -e;
	w->f.reserved = to;
	return 0;
}

static int heap_alloc(struct hm_certstore_writer *w, uint64_t bytes, struct block *out)
{
	uint64_t size, units = (bytes + UNIT - 1) / UNIT;
	unsigned c = class_up(units, &size);
	struct block b = {0, 0};
	int e;

	if (c >= NCLASSES)
		return -EINVAL;
	if (w->free[c].n > 0) {
		b = ((struct block *)w->free[c].v)[--w->free[c].n];
	} else if (w->top + size * UNIT <= w->f.lay.heap_bytes) {
		b.off = w->top;
		b.cap = (uint32_t)(size * UNIT);
		if ((e = reserve(w, b.off + b.cap)) != 0)
			return e;
		w->top += b.cap;
	} else {
		/* Out of fresh space: any larger free block will do, whole. */
		for (unsigned k = c + 1; k < NCLASSES && b.cap == 0; k++)
			if (w->free[k].n > 0)
				b = ((struct block *)w->free[k].v)[--w->free[k].n];
		if (b.cap == 0)
			return -ENOSPC;
	}
	if ((e = vec_push(&w->batch_alloc, &b, sizeof(b))) != 0) {
		vec_push(&w->free[class_down(b.cap / UNIT, &size)], &b, sizeof(b));
		return e;
	}
	*out = b;
	return 0;
}

/* Returns a block to its free list (the list of the largest class it can serve). */
static void heap_release(struct hm_certstore_writer *w, struct block b)
{
	uint64_t size;

	/* A push can only fail for memory; the block is then lost until the next resume or grow,
	 * which rebuild the free space from the live entries. */
	(void)vec_push(&w->free[class_down(b.cap / UNIT, &size)], &b, sizeof(b));
}

/* ---- Writing: entries ------------------------------------------------------------------------ */

static int set_default(struct hm_certstore_writer *w, struct copy *c, uint32_t v)
{
	TOUCH(w, c, c->h, sizeof(*c->h));
	c->h->default_idx = v;
	return 0;
}

static int slot_insert(struct hm_certstore_writer *w, struct copy *c, uint32_t tag, uint32_t idx)
{
	uint32_t mask = c->lay->mask, i = tag & mask;

	while (c->s[i].idx != 0)
		i = (i + 1) & mask;
	TOUCH(w, c, &c->s[i], sizeof(c->s[i]));
	c->s[i].tag = tag;
	c->s[i].idx = idx + 1;
	return 0;
}

/* Deletes the slot at pos by backward shift, so that probe sequences never hold holes. */
static int slot_delete(struct hm_certstore_writer *w, struct copy *c, uint32_t pos)
{
	uint32_t mask = c->lay->mask, i = pos, j = pos;

	for (;;) {
		j = (j + 1) & mask;
		if (c->s[j].idx == 0)
			break;
		uint32_t home = c->s[j].tag & mask;

		/* The entry at j may move to i if i lies on its probe path [home, j). */
		if (((j - home) & mask) >= ((j - i) & mask)) {
			TOUCH(w, c, &c->s[i], sizeof(c->s[i]));
			c->s[i] = c->s[j];
			i = j;
		}
	}
	TOUCH(w, c, &c->s[i], sizeof(c->s[i]));
	c->s[i].tag = 0;
	c->s[i].idx = 0;
	return 0;
}

static void digest_update(struct copy *c, struct dsum d, int sign)
{
	c->h->digest[0] += sign > 0 ? d.lane[0] : -d.lane[0];
	c->h->digest[1] += sign > 0 ? d.lane[1] : -d.lane[1];
}

static struct dsum rec_digest(const struct copy *c, const struct rec_cert *e)
{
	return entry_digest(e->kind, entry_key(c, e), e->name_len, e->id);
}

/* Takes entry i out of use: digest, counts, slot (slot_pos, or -1 for the default), free list,
 * and its blob to the pending list. Header already touched by the caller. */
static int entry_remove(struct hm_certstore_writer *w, struct copy *c, uint32_t i, int64_t slot_pos)
{
	struct rec_cert *e = &c->e[i];
	struct block b = {e->blob, e->blob_cap};
	int r;

	digest_update(c, rec_digest(c, e), -1);
	if (e->not_after <= c->h->soonest)
		w->rescan_soonest = true;
	c->h->n_certs--;
	c->h->heap_used -= e->blob_cap;
	if (e->kind == HM_CERT_WILDCARD)
		c->h->n_wild--;
	if (slot_pos >= 0 && (r = slot_delete(w, c, (uint32_t)slot_pos)) != 0)
		return r;
	if (e->kind == HM_CERT_DEFAULT && (r = set_default(w, c, 0)) != 0)
		return r;
	if ((r = vec_push(&w->pending_free, &b, sizeof(b))) != 0)
		return r;
	TOUCH(w, c, e, sizeof(*e));
	memset(e, 0, sizeof(*e));
	e->next_free = c->h->free_head;
	c->h->free_head = i + 1;
	return 0;
}

/* Where an existing entry named (kind, key) is: its index and slot position (-1: default). */
static bool entry_find(const struct copy *c, uint8_t kind, const char *key, size_t n, uint32_t *idx,
		       int64_t *pos)
{
	if (kind == HM_CERT_DEFAULT) {
		uint32_t d = c->h->default_idx;

		*pos = -1;
		*idx = d - 1;
		return d != 0;
	}
	*pos = find(c, key, n, kind == HM_CERT_WILDCARD, idx);
	return *pos >= 0;
}

/* The batch copy's view. */
static void batch_view(struct hm_certstore_writer *w, struct copy *c)
{
	copy_view(c, w->f.base, &w->f.lay, batch_copy(w));
}

/*
 * Writes one entry into the open batch: the canonical key, its bytes, and (gen != 0) the
 * generation to keep, for a growth rebuild; else a new one.
 */
static int entry_put(struct hm_certstore_writer *w, uint8_t kind, const char *key, size_t kn,
		     const struct hm_cert_put *p, uint64_t gen)
{
	struct copy c;
	struct block b;
	struct rec_cert *e;
	uint32_t old, idx;
	int64_t pos;
	uint64_t need = kn + p->cert_len + p->key_len + p->meta_len;
	uint8_t *dst;
	int r;

	batch_view(w, &c);
	TOUCH(w, &c, c.h, sizeof(*c.h));
	if (entry_find(&c, kind, key, kn, &old, &pos) && (r = entry_remove(w, &c, old, pos)) != 0)
		return r;
	/* An entry: a free one below top, or the next one. */
	if (c.h->free_head != 0) {
		idx = c.h->free_head - 1;
		c.h->free_head = c.e[idx].next_free;
	} else if (c.h->top < c.lay->cap_certs) {
		idx = c.h->top++;
	} else {
		return -ENOSPC;
	}
	if ((r = heap_alloc(w, need, &b)) != 0)
		return r;
	dst = c.heap + b.off;
	memcpy(dst, key, kn);
	memcpy(dst + kn, p->cert, p->cert_len);
	memcpy(dst + kn + p->cert_len, p->key, p->key_len);
	if (p->meta_len > 0)
		memcpy(dst + kn + p->cert_len + p->key_len, p->meta, p->meta_len);
	e = &c.e[idx];
	TOUCH(w, &c, e, sizeof(*e));
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->name_len = (uint16_t)kn;
	e->blob = b.off;
	e->blob_cap = b.cap;
	e->crc = hm_crc32c(hm_crc32c(0, p->cert, p->cert_len), p->key, p->key_len);
	e->cert_len = (uint32_t)p->cert_len;
	e->key_len = (uint32_t)p->key_len;
	e->meta_len = (uint32_t)p->meta_len;
	e->gen = gen != 0 ? gen : ++c.h->gen;
	e->not_after = p->not_after;
	memcpy(e->id, p->id, HM_CERT_ID_LEN);
	if (kn <= NAME_INLINE)
		memcpy(e->name, key, kn);
	e->used = 1;
	if (kind == HM_CERT_DEFAULT)
		r = set_default(w, &c, idx + 1);
	else
		r = slot_insert(
		    w, &c, (uint32_t)key_hash(&w->f.lay, key, kn, kind == HM_CERT_WILDCARD), idx);
	if (r != 0)
		return r;
	c.h->n_certs++;
	c.h->heap_used += b.cap;
	if (kind == HM_CERT_WILDCARD)
		c.h->n_wild++;
	if (p->not_after < c.h->soonest)
		c.h->soonest = p->not_after;
	digest_update(&c, entry_digest(kind, key, kn, p->id), +1);
	return 0;
}

int hm_certstore_put(struct hm_certstore_writer *w, const struct hm_cert_put *p)
{
	char canon[HM_CERT_NAME_MAX + 1];
	const char *key;
	size_t kn;
	uint8_t kind;
	int n;

	if (!w->in_batch)
		return -EINVAL;
	if ((n = hm_cert_name_canon(p->name, p->name_len, canon, &kind)) < 0)
		return n;
	if (p->cert_len == 0 || p->cert_len > HM_CERT_CHAIN_MAX || p->key_len == 0 ||
	    p->key_len > HM_CERT_KEY_MAX || p->meta_len > HM_CERT_META_MAX)
		return -EINVAL;
	name_key(canon, (size_t)n, kind, &key, &kn);
	return entry_put(w, kind, key, kn, p, 0);
}

int hm_certstore_rm(struct hm_certstore_writer *w, const char *name, size_t n)
{
	char canon[HM_CERT_NAME_MAX + 1];
	const char *key;
	struct copy c;
	uint32_t idx;
	int64_t pos;
	size_t kn;
	uint8_t kind;
	int cn;

	if (!w->in_batch)
		return -EINVAL;
	if ((cn = hm_cert_name_canon(name, n, canon, &kind)) < 0)
		return cn;
	name_key(canon, (size_t)cn, kind, &key, &kn);
	batch_view(w, &c);
	if (!entry_find(&c, kind, key, kn, &idx, &pos))
		return -ENOENT;
	TOUCH(w, &c, c.h, sizeof(*c.h));
	return entry_remove(w, &c, idx, pos);
}

int hm_certstore_set_ticket_keys(struct hm_certstore_writer *w, const struct hm_ticket_key *keys,
				 unsigned n)
{
	struct copy c;

	if (!w->in_batch || n > HM_TICKET_KEYS_MAX)
		return -EINVAL;
	batch_view(w, &c);
	TOUCH(w, &c, c.h, sizeof(*c.h));
	memset(c.h->keys, 0, sizeof(c.h->keys));
	if (n > 0)
		memcpy(c.h->keys, keys, n * sizeof(*keys));
	c.h->n_keys = n;
	c.h->keys_gen++;
	return 0;
}

/* ---- Writing: batches ------------------------------------------------------------------------ */

int hm_certstore_begin(struct hm_certstore_writer *w)
{
	if (w->in_batch)
		return -EBUSY;
	w->in_batch = true;
	w->rescan_soonest = false;
	return 0;
}

static void rescan_soonest(struct copy *c)
{
	int64_t s = INT64_MAX;

	for (uint32_t i = 0; i < c->h->top; i++)
		if (c->e[i].used && c->e[i].not_after < s)
			s = c->e[i].not_after;
	c->h->soonest = s;
}

static int install(struct hm_certstore_writer *w)
{
	int e = hm_pubfile_install(w->f.tmp_path, w->pw.path, STORE_MAGIC, PUB_OFF);

	if (e == 0)
		w->f.installed = true;
	return e;
}

int hm_certstore_commit(struct hm_certstore_writer *w, uint64_t epoch, uint64_t seq)
{
	struct copy c;
	unsigned from;
	uint64_t v;
	int e;

	if (!w->in_batch)
		return -EINVAL;
	from = batch_copy(w);
	batch_view(w, &c);
	if ((e = touch(w, &c, c.h, sizeof(*c.h))) != 0) {
		hm_certstore_abort(w);
		return e;
	}
	if (w->rescan_soonest)
		rescan_soonest(&c);
	c.h->epoch = epoch;
	c.h->seq = seq;
	c.h->commit_ms = hm_wall_ms();
	v = PUB_VERSION(atomic_load_explicit(&w->f.hdr->pub, memory_order_relaxed));
	atomic_store_explicit(&w->f.hdr->pub, v + 1, memory_order_release);
	/* A new file is installed before the other copy is brought up to date: if rename(2)
	 * fails, no reader can have seen the file, so the version is taken back. */
	if (!w->f.installed && (e = install(w)) != 0) {
		atomic_store_explicit(&w->f.hdr->pub, v, memory_order_relaxed);
		hm_certstore_abort(w);
		return e;
	}
	/* Readers still on the old copy must see the new pub before any byte below changes. */
	atomic_thread_fence(memory_order_release);
	sync_regions(w, from, from ^ 1);
	for (size_t i = 0; i < w->pending_free.n; i++)
		heap_release(w, ((struct block *)w->pending_free.v)[i]);
	w->pending_free.n = 0;
	w->batch_alloc.n = 0;
	w->in_batch = false;
	return 0;
}

void hm_certstore_abort(struct hm_certstore_writer *w)
{
	if (!w->in_batch)
		return;
	sync_regions(w, pub_copy(w), batch_copy(w));
	for (size_t i = 0; i < w->batch_alloc.n; i++)
		heap_release(w, ((struct block *)w->batch_alloc.v)[i]);
	w->batch_alloc.n = 0;
	w->pending_free.n = 0;
	w->in_batch = false;
}

/* ---- Writing: files -------------------------------------------------------------------------- */

static void sfile_unmap(struct sfile *f)
{
	if (f->base != NULL)
		munmap(f->base, f->bytes);
	if (f->fd >= 0)
		close(f->fd);
	if (!f->installed && f->tmp_path != NULL)
		unlink(f->tmp_path);
	free(f->tmp_path);
	memset(f, 0, sizeof(*f));
	f->fd = -1;
}

static void hdr_init(struct file_hdr *h, const struct layout *l)
{
	uint64_t id;

	hm_random_bytes(&id, sizeof(id));
	h->magic = STORE_MAGIC;
	h->layout = STORE_LAYOUT;
	h->hdr_bytes = HDR_BYTES;
	h->file_bytes = l->file_bytes;
	h->file_id = id;
	h->seed = l->seed;
	h->cap_certs = l->cap_certs;
	h->slots = l->mask + 1;
	h->copy_off[0] = l->copy_off[0];
	h->copy_off[1] = l->copy_off[1];
	h->copy_bytes = l->copy_bytes;
	h->heap_off = l->heap_off;
	h->heap_bytes = l->heap_bytes;
	h->created_ms = hm_wall_ms();
	h->writer_pid = getpid();
	atomic_store_explicit(&h->pub, 0, memory_order_release);
}

/* An empty store: a temporary file next to path (installed at its first commit), or private
 * memory when path is NULL. Both copies start equal (empty, no default, soonest = INT64_MAX). */
static int sfile_create(struct sfile *f, const char *path, const struct hm_certstore_caps *caps,
			uint64_t max_bytes)
{
	uint64_t seed;
	void *p;
	int e;

	memset(f, 0, sizeof(*f));
	f->fd = -1;
	hm_random_bytes(&seed, sizeof(seed));
	if ((e = layout_compute(&f->lay, caps->certs, caps->heap, seed)) != 0)
		return -EINVAL;
	if (max_bytes != 0 && f->lay.file_bytes > max_bytes)
		return -ENOSPC;
	if (path != NULL) {
		/* The index is reserved now, the heap as it fills (reserve()). */
		f->fd = hm_pubfile_create(path, HM_STORE_MODE, f->lay.file_bytes, f->lay.heap_off,
					  &f->tmp_path);
		if (f->fd < 0) {
			e = f->fd;
			f->fd = -1;
			return e;
		}
		f->reserved = f->lay.heap_off;
		p = mmap(NULL, f->lay.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
	} else {
		f->installed = true;
		p = mmap(NULL, f->lay.file_bytes, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	if (p == MAP_FAILED) {
		e = -errno;
		goto fail;
	}
	f->base = p;
	f->bytes = f->lay.file_bytes;
	f->hdr = p;
	hdr_init(f->hdr, &f->lay);
	for (unsigned i = 0; i < 2; i++) {
		struct copy c;

		copy_view(&c, f->base, &f->lay, i);
		c.h->soonest = INT64_MAX;
	}
	return 0;
fail:
	sfile_unmap(f);
	return e;
}

static void writer_reset_heap(struct hm_certstore_writer *w)
{
	for (unsigned k = 0; k < NCLASSES; k++)
		w->free[k].n = 0;
	w->batch_alloc.n = 0;
	w->pending_free.n = 0;
	w->top = UNIT;
}

static int block_cmp(const void *a, const void *b)
{
	const struct block *x = a, *y = b;

	return x->off < y->off ? -1 : x->off > y->off;
}

/* Rebuilds the writer's free space from the live entries of the published copy: every gap
 * between live blobs (including orphans of a batch that never committed) is free. */
static int rebuild_heap(struct hm_certstore_writer *w)
{
	struct copy c;
	struct vec live = {0};
	uint64_t at = UNIT;
	int e = 0;

	writer_reset_heap(w);
	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	for (uint32_t i = 0; i < c.h->top && i < c.lay->cap_certs; i++) {
		struct block b = {c.e[i].blob, c.e[i].blob_cap};

		if (c.e[i].used && (e = vec_push(&live, &b, sizeof(b))) != 0)
			goto out;
	}
	if (live.n > 1)
		qsort(live.v, live.n, sizeof(struct block), block_cmp);
	for (size_t i = 0; i < live.n; i++) {
		uint64_t end = ((struct block *)live.v)[i].off;

		if (end > at) {
			/* A gap: free blocks of the largest classes that fit, from its start. */
			while (end - at >= UNIT) {
				uint64_t size;
				unsigned k =
				    class_down(HM_MIN((end - at) / UNIT, BLOB_MAX / UNIT), &size);
				struct block b = {at, (uint32_t)(size * UNIT)};

				if ((e = vec_push(&w->free[k], &b, sizeof(b))) != 0)
					goto out;
				at += size * UNIT;
			}
		}
		at = HM_MAX(at, end + ((struct block *)live.v)[i].cap);
	}
	w->top = at;
out:
	vec_free(&live);
	return e;
}

static int verify_copy(const struct hm_certstore_writer *w, const struct copy *c, bool blobs);

/* Continues from a valid store at path: the published copy is checked, copied over the other
 * one (a writer killed mid-batch may have left it half-written), and the free space rebuilt. */
static int writer_resume(struct hm_certstore_writer *w)
{
	struct file_hdr hdr;
	struct copy c;
	struct stat st;
	void *p;
	int fd = open(w->pw.path, O_RDWR | O_CLOEXEC | O_NOFOLLOW), e;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) != 0) {
		e = -errno;
		close(fd);
		return e;
	}
	if ((e = file_acceptable(&st)) != 0) {
		close(fd);
		return e;
	}
	if (st.st_size < (off_t)HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    (atomic_load(&hdr.pub) & HM_PUBFILE_RETIRED) ||
	    layout_from_hdr(&w->f.lay, &hdr, (uint64_t)st.st_size) != 0) {
		close(fd);
		return -EUCLEAN;
	}
	p = mmap(NULL, w->f.lay.file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		e = -errno;
		close(fd);
		return e;
	}
	w->f.fd = fd;
	w->f.base = p;
	w->f.bytes = w->f.lay.file_bytes;
	w->f.hdr = p;
	w->f.installed = true;
	/* The heap beyond what fallocate reserved is unknown: reserve all of what is in use below
	 * as it is found, and the rest as it fills. */
	w->f.reserved = w->f.lay.heap_off;
	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	if ((e = verify_copy(w, &c, false)) != 0 || (e = rebuild_heap(w)) != 0 ||
	    (e = reserve(w, w->top)) != 0) {
		sfile_unmap(&w->f);
		return e;
	}
	w->f.hdr->writer_pid = getpid();
	memcpy(w->f.base + w->f.lay.copy_off[batch_copy(w)], c.base, w->f.lay.copy_bytes);
	return 0;
}

int hm_certstore_writer_open(struct hm_certstore_writer **out, const char *path,
			     const struct hm_certstore_caps *caps, unsigned flags,
			     uint64_t max_bytes)
{
	struct hm_certstore_writer *w = calloc(1, sizeof(*w));
	struct hm_certstore_caps def = HM_CERTSTORE_CAPS_DEFAULT;
	int e;

	if (w == NULL)
		return -ENOMEM;
	w->f.fd = -1;
	w->max_bytes = max_bytes;
	writer_reset_heap(w);
	if ((e = hm_pubfile_writer_open(&w->pw, path)) < 0) {
		free(w);
		return e;
	}
	if (e == 1 && (flags & HM_CERTSTORE_RESUME))
		e = writer_resume(w);
	else
		e = sfile_create(&w->f, path, caps != NULL ? caps : &def, max_bytes);
	if (e != 0) {
		hm_pubfile_writer_close(&w->pw);
		free(w);
		return e;
	}
	*out = w;
	return 0;
}

void hm_certstore_writer_close(struct hm_certstore_writer *w)
{
	if (w == NULL)
		return;
	hm_certstore_abort(w);
	sfile_unmap(&w->f);
	hm_pubfile_writer_close(&w->pw);
	vec_free(&w->dirty);
	vec_free(&w->batch_alloc);
	vec_free(&w->pending_free);
	for (unsigned k = 0; k < NCLASSES; k++)
		vec_free(&w->free[k]);
	free(w);
}

/* ---- Writing: growth ------------------------------------------------------------------------- */

struct grow_arg {
	struct hm_certstore_writer *w;
	const struct copy *from;
};

int hm_certstore_grow(struct hm_certstore_writer *w, const struct hm_certstore_caps *min)
{
	struct hm_certstore_writer tmp;
	struct hm_certstore_caps caps;
	struct copy from, to;
	struct sfile old;
	uint64_t epoch, seq;
	int e;

	if (w->in_batch)
		return -EBUSY;
	copy_view(&from, w->f.base, &w->f.lay, pub_copy(w));
	caps.certs = w->f.lay.cap_certs;
	if (from.h->n_certs > caps.certs / 2 && caps.certs <= CAP_CERTS_MAX / 2)
		caps.certs *= 2;
	caps.heap = HM_MAX(w->f.lay.heap_bytes, 2 * (from.h->heap_used + BLOB_MAX));
	if (min != NULL) {
		caps.certs = HM_MAX(caps.certs, min->certs);
		caps.heap = HM_MAX(caps.heap, min->heap);
	}
	/* Build the new file with a scratch writer that shares nothing with w but its path. */
	memset(&tmp, 0, sizeof(tmp));
	tmp.pw.path = w->pw.path; /* borrowed: tmp is never closed */
	tmp.pw.lock_fd = -1;
	writer_reset_heap(&tmp);
	if ((e = sfile_create(&tmp.f, w->pw.path, &caps, w->max_bytes)) != 0)
		goto out;
	tmp.in_batch = true;
	tmp.dirty_all = true;
	for (uint32_t i = 0; i < from.h->top; i++) {
		const struct rec_cert *r = &from.e[i];
		const uint8_t *b = from.heap + r->blob;
		struct hm_cert_put p = {
		    .cert = b + r->name_len,
		    .cert_len = r->cert_len,
		    .key = b + r->name_len + r->cert_len,
		    .key_len = r->key_len,
		    .meta = b + r->name_len + r->cert_len + r->key_len,
		    .meta_len = r->meta_len,
		    .not_after = r->not_after,
		};

		if (!r->used)
			continue;
		memcpy(p.id, r->id, HM_CERT_ID_LEN);
		if ((e = entry_put(&tmp, r->kind, (const char *)b, r->name_len, &p, r->gen)) != 0)
			goto out;
	}
	batch_view(&tmp, &to);
	to.h->gen = from.h->gen;
	to.h->keys_gen = from.h->keys_gen;
	to.h->n_keys = from.h->n_keys;
	memcpy(to.h->keys, from.h->keys, sizeof(to.h->keys));
	epoch = from.h->epoch;
	seq = from.h->seq;
	tmp.batch_alloc.n = 0;
	if ((e = hm_certstore_commit(&tmp, epoch, seq)) != 0)
		goto out;
	/* Swap: w continues with the new file and its heap map; the old file is retired (a path)
	 * or just unmapped (private memory). */
	old = w->f;
	w->f = tmp.f;
	tmp.f = old;
	sfile_unmap(&tmp.f);
	for (unsigned k = 0; k < NCLASSES; k++) {
		vec_free(&w->free[k]);
		w->free[k] = tmp.free[k];
		memset(&tmp.free[k], 0, sizeof(tmp.free[k]));
	}
	w->top = tmp.top;
out:
	if (e != 0) {
		tmp.f.installed = tmp.f.installed && w->pw.path == NULL;
		sfile_unmap(&tmp.f);
	}
	for (unsigned k = 0; k < NCLASSES; k++)
		vec_free(&tmp.free[k]);
	vec_free(&tmp.dirty);
	vec_free(&tmp.batch_alloc);
	vec_free(&tmp.pending_free);
	return e;
}

/* ---- Writer views ---------------------------------------------------------------------------- */

void hm_certstore_writer_info(const struct hm_certstore_writer *w, struct hm_certstore_info *out)
{
	struct copy c;

	memset(out, 0, sizeof(*out));
	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	info_from_copy(&c, out);
	out->version = PUB_VERSION(atomic_load_explicit(&w->f.hdr->pub, memory_order_relaxed));
	out->file_id = w->f.hdr->file_id;
}

int hm_certstore_batch_info(const struct hm_certstore_writer *w, struct hm_certstore_info *out)
{
	struct copy c;

	if (!w->in_batch)
		return -EINVAL;
	hm_certstore_writer_info(w, out);
	copy_view(&c, w->f.base, &w->f.lay, batch_copy(w));
	info_from_copy(&c, out);
	return 0;
}

int hm_certstore_writer_ticket_keys(const struct hm_certstore_writer *w,
				    struct hm_ticket_key keys[HM_TICKET_KEYS_MAX])
{
	struct keys_arg a = {keys, 0, 0};
	struct copy c;

	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	keys_fn(&c, &a);
	return (int)a.n;
}

static void entry_view(const struct copy *c, const struct rec_cert *r, struct hm_cert_entry *out)
{
	const uint8_t *b = c->heap + r->blob;
	size_t n = 0;

	if (r->kind == HM_CERT_WILDCARD) {
		memcpy(out->name, "*.", 2);
		n = 2;
	}
	if (r->kind == HM_CERT_DEFAULT) {
		memcpy(out->name, "default", 7);
		n = 7;
	} else {
		memcpy(out->name + n, b, r->name_len);
		n += r->name_len;
	}
	out->name[n] = '\0';
	out->name_len = n;
	out->kind = r->kind;
	out->cert = b + r->name_len;
	out->cert_len = r->cert_len;
	out->key = out->cert + r->cert_len;
	out->key_len = r->key_len;
	out->meta = out->key + r->key_len;
	out->meta_len = r->meta_len;
	memcpy(out->id, r->id, HM_CERT_ID_LEN);
	out->not_after = r->not_after;
}

int hm_certstore_foreach(const struct hm_certstore_writer *w,
			 int (*cb)(void *ctx, const struct hm_cert_entry *e), void *ctx)
{
	struct hm_certstore_cursor cur;

	hm_certstore_cursor_init(&cur, w);
	return hm_certstore_list(w, &cur, cb, ctx);
}

/* The identity of the published set of entries a cursor lists: see certstore.h. */
static void cursor_mark(const struct hm_certstore_writer *w, const struct copy *c,
			struct hm_certstore_cursor *cur)
{
	cur->file_id = w->f.hdr->file_id;
	cur->gen = c->h->gen;
	digest_bytes(c->h->digest, cur->digest);
}

void hm_certstore_cursor_init(struct hm_certstore_cursor *cur, const struct hm_certstore_writer *w)
{
	struct copy c;

	memset(cur, 0, sizeof(*cur));
	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	cursor_mark(w, &c, cur);
}

int hm_certstore_list(const struct hm_certstore_writer *w, struct hm_certstore_cursor *cur,
		      int (*cb)(void *ctx, const struct hm_cert_entry *e), void *ctx)
{
	struct hm_certstore_cursor now;
	struct hm_cert_entry ent;
	struct copy c;
	uint32_t d, top;
	int r;

	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	cursor_mark(w, &c, &now);
	if (now.file_id != cur->file_id || now.gen != cur->gen ||
	    memcmp(now.digest, cur->digest, sizeof(now.digest)) != 0)
		return -ESTALE;
	/* The index bounds every position: a cursor never reads past the entries. */
	top = HM_MIN(c.h->top, c.lay->cap_certs);
	d = c.h->default_idx;
	if (cur->next == 0) {
		cur->next = 1;
		if (d != 0 && d <= c.lay->cap_certs) {
			entry_view(&c, &c.e[d - 1], &ent);
			if ((r = cb(ctx, &ent)) != 0)
				return r;
		}
	}
	while (cur->next - 1 < top) {
		uint32_t i = cur->next++ - 1;

		if (!c.e[i].used || c.e[i].kind == HM_CERT_DEFAULT)
			continue;
		entry_view(&c, &c.e[i], &ent);
		if ((r = cb(ctx, &ent)) != 0)
			return r;
	}
	return 0;
}

int hm_certstore_resolve(const struct hm_certstore_writer *w, const char *key, size_t n,
			 struct hm_cert_entry *out)
{
	struct copy c;
	uint8_t match;
	int64_t i;

	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	if ((i = select_entry(&c, key, n, &match)) < 0)
		return -ENOENT;
	entry_view(&c, &c.e[i], out);
	return 0;
}

/* ---- Verification ---------------------------------------------------------------------------- */

static int verify_copy(const struct hm_certstore_writer *w, const struct copy *c, bool blobs)
{
	const struct layout *l = c->lay;
	uint64_t lanes[2] = {0, 0}, heap_used = 0;
	uint32_t n = 0, nwild = 0, nfree = 0, slots_used = 0, ndefault = 0;
	int64_t soonest = INT64_MAX;
	struct vec live = {0};
	int e = -EUCLEAN;

	(void)w;
	if (c->h->top > l->cap_certs || c->h->n_keys > HM_TICKET_KEYS_MAX ||
	    c->h->default_idx > c->h->top)
		return -EUCLEAN;
	for (uint32_t i = 0; i < c->h->top; i++) {
		const struct rec_cert *r = &c->e[i];
		const char *key;
		uint32_t idx;
		uint64_t size;
		struct block b = {r->blob, r->blob_cap};
		struct dsum d;

		if (!r->used)
			continue;
		if (r->kind < HM_CERT_EXACT || r->kind > HM_CERT_DEFAULT || !blob_ok(c, r) ||
		    r->blob_cap % UNIT != 0 || class_up(r->blob_cap / UNIT, &size) >= NCLASSES ||
		    r->cert_len == 0 || r->cert_len > HM_CERT_CHAIN_MAX || r->key_len == 0 ||
		    r->key_len > HM_CERT_KEY_MAX || r->meta_len > HM_CERT_META_MAX ||
		    (key = entry_key(c, r)) == NULL)
			goto out;
		if (r->name_len <= NAME_INLINE &&
		    memcmp(r->name, c->heap + r->blob, r->name_len) != 0)
			goto out;
		if (r->kind == HM_CERT_DEFAULT) {
			if (c->h->default_idx != i + 1 || r->name_len != 0)
				goto out;
			ndefault++;
		} else if (find(c, key, r->name_len, r->kind == HM_CERT_WILDCARD, &idx) < 0 ||
			   idx != i) {
			goto out;
		}
		if (blobs &&
		    hm_crc32c(hm_crc32c(0, c->heap + r->blob + r->name_len, r->cert_len),
			      c->heap + r->blob + r->name_len + r->cert_len, r->key_len) != r->crc)
			goto out;
		if (r->gen == 0 || r->gen > c->h->gen)
			goto out;
		d = rec_digest(c, r);
		lanes[0] += d.lane[0];
		lanes[1] += d.lane[1];
		n++;
		nwild += r->kind == HM_CERT_WILDCARD;
		heap_used += r->blob_cap;
		if (r->not_after < soonest)
			soonest = r->not_after;
		if (vec_push(&live, &b, sizeof(b)) != 0) {
			e = -ENOMEM;
			goto out;
		}
	}
	/* Blobs do not overlap. */
	if (live.n > 1)
		qsort(live.v, live.n, sizeof(struct block), block_cmp);
	for (size_t i = 1; i < live.n; i++) {
		const struct block *b = live.v;

		if (b[i - 1].off + b[i - 1].cap > b[i].off)
			goto out;
	}
	/* Every occupied slot points at a used, non-default entry; the free list is the rest. */
	for (uint32_t i = 0; i <= l->mask; i++) {
		const struct slot *s = &c->s[i];

		if (s->idx == 0)
			continue;
		if (s->idx > c->h->top || !c->e[s->idx - 1].used ||
		    c->e[s->idx - 1].kind == HM_CERT_DEFAULT)
			goto out;
		slots_used++;
	}
	for (uint32_t f = c->h->free_head; f != 0; f = c->e[f - 1].next_free) {
		if (f > c->h->top || c->e[f - 1].used || ++nfree > c->h->top)
			goto out;
	}
	if (n != c->h->n_certs || nwild != c->h->n_wild || slots_used + ndefault != n ||
	    nfree + n != c->h->top || heap_used != c->h->heap_used || soonest != c->h->soonest ||
	    lanes[0] != c->h->digest[0] || lanes[1] != c->h->digest[1] ||
	    (c->h->default_idx != 0 && ndefault != 1))
		goto out;
	e = 0;
out:
	vec_free(&live);
	return e;
}

int hm_certstore_verify(const struct hm_certstore_writer *w)
{
	struct copy c;
	int e;

	copy_view(&c, w->f.base, &w->f.lay, pub_copy(w));
	if ((e = verify_copy(w, &c, true)) != 0)
		return e;
	if (!w->in_batch && memcmp(w->f.base + w->f.lay.copy_off[0],
				   w->f.base + w->f.lay.copy_off[1], w->f.lay.copy_bytes) != 0)
		return -EUCLEAN;
	return 0;
}
