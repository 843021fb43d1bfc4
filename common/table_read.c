/*
 * The table's read side, the only part of it hermod-router links (table.h is the API,
 * docs/table.md the design). A reader follows the path; each map is one mapping of one file,
 * read-only except the in-flight counters. A read picks the copy from the header's `pub` word,
 * reads with every index and offset bounds-checked (table-t.h), and retries if `pub` changed
 * meanwhile, so the writer never waits for readers. A file truncated under a mapping raises
 * SIGBUS; every map is guarded in common/pubfile.h's fault registry, so the process's handler
 * (hm_pubfile_fault) swaps the mapping for zero pages and the read completes and fails its
 * validation instead.
 */
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
#include "common/table-t.h"

#define READ_RETRIES 1000 /* versions a reader tries before giving up (HM_EBUSYTABLE) */

struct hm_table_map {
	int refs;
	struct hm_pubfile_guard guard; /* the data and the counters; bad: now zero pages */
	struct hm__table_hdr *hdr;
	uint8_t *base;
	size_t data_bytes;
	_Atomic int32_t *counters; /* NULL if the file is not writable by this process */
	size_t counters_bytes;
	struct hm__table_layout lay;
};

/* A reader is a follower of the path (common/pubfile.h) whose maps are struct hm_table_map. */
struct hm_table_reader {
	struct hm_pubfile_follower f;
};

/* Maps of this process found bad (common/pubfile.h's fault registry counts them here). */
static volatile uint64_t bad_maps;

uint64_t hm_table_bad_maps(void)
{
	return __atomic_load_n(&bad_maps, __ATOMIC_RELAXED);
}

static void map_free(struct hm_table_map *m)
{
	hm_pubfile_guard_del(&m->guard);
	if (m->base != NULL)
		munmap(m->base, m->data_bytes);
	if (m->counters != NULL)
		munmap((void *)m->counters, m->counters_bytes);
	free(m);
}

/* ---- Maps and the reader --------------------------------------------------------------------- */

/* The follower's open callback: maps the table at path if it is trusted and valid. */
static int map_open(const char *path, struct hm_pubfile_mapped *out)
{
	struct hm_table_map *m;
	struct hm__table_hdr hdr;
	struct stat *st = &out->st;
	bool rw = true;
	int fd, r;

	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 && errno == EACCES) {
		rw = false;
		fd = open(path, O_RDONLY | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	if ((r = hm__table_fd_trusted(fd)) != 0) {
		close(fd);
		return r;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		close(fd);
		return -ENOMEM;
	}
	m->guard.slot = -1;
	if (fstat(fd, st) != 0 || st->st_size < (off_t)HM__TABLE_HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
		r = HM_EBADTABLE;
		goto fail;
	}
	if ((r = hm__table_layout_from_hdr(&m->lay, &hdr, (uint64_t)st->st_size)) != 0)
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
	m->hdr = (struct hm__table_hdr *)m->base;
	m->refs = 1;
	m->guard.range[0].base = m->base;
	m->guard.range[0].bytes = m->data_bytes;
	m->guard.range[0].prot = PROT_READ;
	m->guard.range[1].base = (void *)m->counters;
	m->guard.range[1].bytes = m->counters_bytes;
	m->guard.range[1].prot = PROT_READ | PROT_WRITE;
	m->guard.faults = &bad_maps;
	hm_pubfile_guard_add(&m->guard); /* -ENOSPC: unguarded, as before the registry existed */
	out->map = m;
	out->pub = &m->hdr->pub;
	out->guard = &m->guard;
	return 0;
fail:
	close(fd);
	map_free(m);
	return r;
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

static void map_unref_cb(void *m)
{
	hm_table_map_unref(m);
}

static const struct hm_pubfile_ops follow_ops = {.open = map_open, .unref = map_unref_cb};

int hm_table_reader_new(struct hm_table_reader **out, const char *path)
{
	struct hm_table_reader *r = calloc(1, sizeof(*r));

	if (r == NULL || hm_pubfile_follower_init(&r->f, path, &follow_ops) != 0) {
		free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void hm_table_reader_free(struct hm_table_reader *r)
{
	if (r == NULL)
		return;
	hm_pubfile_follower_fini(&r->f);
	free(r);
}

struct hm_table_map *hm_table_reader_map(struct hm_table_reader *r)
{
	return hm_pubfile_follower_map(&r->f);
}

int hm_table_reader_check(struct hm_table_reader *r)
{
	return hm_pubfile_follower_check(&r->f);
}

/* ---- Validated reads ------------------------------------------------------------------------- */

uint64_t hm_table_map_version(const struct hm_table_map *m)
{
	return HM_PUBFILE_VERSION(atomic_load_explicit(&m->hdr->pub, memory_order_acquire));
}

/* Runs fn on the published copy until it reads one version from start to end. */
#define VALIDATED_READ(m, c, v, body)                                                              \
	for (int tries_ = 0;; tries_++) {                                                          \
		if (tries_ == READ_RETRIES)                                                        \
			return HM_EBUSYTABLE;                                                      \
		v = HM_PUBFILE_VERSION(                                                            \
		    atomic_load_explicit(&(m)->hdr->pub, memory_order_acquire));                   \
		hm__table_copy_view(&c, (m)->base, &(m)->lay, (unsigned)v);                        \
		body;                                                                              \
		atomic_thread_fence(memory_order_acquire);                                         \
		if ((m)->guard.bad)                                                                \
			return HM_EBADTABLE; /* what was read came from zero pages */              \
		if (HM_PUBFILE_VERSION(                                                            \
			atomic_load_explicit(&(m)->hdr->pub, memory_order_relaxed)) == v)          \
			break;                                                                     \
	}

static int map_info(struct hm_table_map *m, struct hm_table_info *out)
{
	struct hm__table_copy c;
	uint64_t v;

	VALIDATED_READ(m, c, v, hm__table_info_from_copy(&c, &m->lay, v, m->hdr->file_id, out));
	return 0;
}

void hm_table_map_info(struct hm_table_map *m, struct hm_table_info *out)
{
	if (map_info(m, out) != 0)
		memset(out, 0, sizeof(*out));
}

/* ---- Routing --------------------------------------------------------------------------------- */

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

static bool skipped(const struct hm_pick *pick, const struct hm__table_rec_dyno *y, uint32_t slot)
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
static uint32_t pick_random(const struct hm__table_copy *c, const uint32_t *arr, uint32_t n_up,
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

static void route_out_dyno(const struct hm__table_copy *c, uint32_t y, struct hm_route *out)
{
	const struct hm__table_rec_dyno *d = &c->dynos[y];
	size_t n = HM__TABLE_ONCE(d->name_len);
	const char *name = hm__table_dyno_name(c, d, n);

	if (name == NULL || n > HM_DYNO_NAME_MAX)
		n = 0;

	out->has_dyno = true;
	out->slot = y;
	if (n > 0)
		memcpy(out->dyno, name, n);
	out->dyno[n] = '\0';
	out->addr.family = d->family;
	out->addr.port = d->port;
	memcpy(out->addr.ip, d->ip, 16);
}

static int route_copy(struct hm_table_map *m, const struct hm__table_copy *c, const char *key,
		      size_t n, const struct hm_pick *pick, struct hm_route *out)
{
	const struct hm__table_rec_app *a;
	const uint32_t *arr;
	int64_t ai = hm__table_resolve_app(c, key, n);
	uint64_t rnd = pick != NULL ? mix64(pick->rnd) : 0;
	uint32_t y = UINT32_MAX, yi;
	size_t an;

	memset(out, 0, sizeof(*out));
	if (ai < 0)
		return HM_ENOHOST;
	a = &c->apps[ai];
	an = HM__TABLE_ONCE(a->name_len);
	if (an > HM_APP_NAME_MAX)
		an = 0;
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
	arr = hm__table_app_dynos(c, a, out->n_dynos);
	if (arr == NULL || out->n_up == 0 || out->n_up > out->n_dynos)
		return 0;
	if (pick != NULL && pick->affinity != NULL && pick->affinity_len <= HM_DYNO_NAME_MAX &&
	    hm__table_find_dyno(c, (uint32_t)ai, pick->affinity, pick->affinity_len, &yi) >= 0 &&
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
	struct hm__table_copy c;
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

int hm_table_secret(struct hm_table_map *m, const char *name, uint8_t out[HM_SECRET_MAX])
{
	struct hm__table_copy c;
	uint64_t v;
	int n = 0;

	VALIDATED_READ(m, c, v, n = hm__table_secret_read(&c, name, out));
	(void)v;
	return n;
}
