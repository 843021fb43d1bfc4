/*
 * The table's writer (table.h is the API, docs/table.md the design): its file, created under
 * a temporary name and installed at its first commit, or resumed from the path; batches,
 * published by incrementing the header's `pub` word, after which the lines the batch wrote
 * are copied onto the other copy (abort copies them back); growth into a new, larger file;
 * and the queries syncd makes on the published copy. Changes themselves are table_apply.c's.
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
#include "common/util.h"

/* ---- Dirty lines ----------------------------------------------------------------------------- */

/*
 * Copies every dirty line from copy `from` to copy `to`, and forgets them. A small batch walks
 * its list of lines; a large one (a snapshot load, a growth rebuild) scans the bitmap in address
 * order instead, so that neighbouring lines become one large memcpy rather than a million small
 * ones in the order they were written.
 */
static void sync_lines(struct hm_table_writer *w, unsigned from, unsigned to)
{
	uint8_t *src = w->base + w->lay.copy_off[from], *dst = w->base + w->lay.copy_off[to];
	uint64_t nlines = w->lay.copy_bytes / HM__TABLE_LINE;

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
				memcpy(dst + l * HM__TABLE_LINE, src + l * HM__TABLE_LINE,
				       run * HM__TABLE_LINE);
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
		memcpy(dst + l * HM__TABLE_LINE, src + l * HM__TABLE_LINE, run * HM__TABLE_LINE);
		i += run;
	}
	w->ndirty = 0;
}

/* ---- Files ----------------------------------------------------------------------------------- */

static int writer_map(struct hm_table_writer *w, int fd)
{
	int flags = fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;
	void *p = mmap(NULL, w->lay.file_bytes, PROT_READ | PROT_WRITE, flags, fd, 0);

	if (p == MAP_FAILED)
		return -errno;
	w->base = p;
	w->bytes = w->lay.file_bytes;
	w->hdr = (struct hm__table_hdr *)p;
	w->dirty_bits = calloc(w->lay.copy_bytes / HM__TABLE_LINE / 8 + 1, 1);
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

static void hdr_init(struct hm__table_hdr *h, const struct hm__table_layout *l)
{
	uint64_t id;

	hm_random_bytes(&id, sizeof(id));
	h->magic = HM__TABLE_MAGIC;
	h->layout = HM__TABLE_LAYOUT;
	h->hdr_bytes = HM__TABLE_HDR_BYTES;
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
	if ((e = hm__table_layout_compute(&w->lay, caps->apps, caps->domains, caps->dynos,
					  caps->heap, seed)) != 0)
		return e;
	if (w->max_bytes != 0 && w->lay.file_bytes > w->max_bytes)
		return HM_EFULL;
	if (w->pw.path != NULL) {
		free(w->tmp_path);
		w->tmp_path = NULL;
		/* Every block now: a sparse file on a full file system would make a later write
		 * through the mapping fault (SIGBUS) instead of this returning -ENOSPC. */
		fd = hm_pubfile_create(w->pw.path, HM_TABLE_MODE, w->lay.file_bytes,
				       w->lay.file_bytes, &w->tmp_path);
		if (fd < 0)
			return fd;
	}
	if ((e = writer_map(w, fd)) != 0)
		goto fail;
	if (fd >= 0)
		close(fd);
	hdr_init(w->hdr, &w->lay);
	w->installed = w->pw.path == NULL;
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
static int writer_resume(struct hm_table_writer *w)
{
	struct hm__table_copy c;
	struct hm__table_hdr hdr;
	struct stat st;
	int fd = open(w->pw.path, O_RDWR | O_CLOEXEC), e;

	if (fd < 0)
		return -errno;
	if ((e = hm__table_fd_trusted(fd)) != 0) {
		close(fd);
		return e;
	}
	if (fstat(fd, &st) != 0 || st.st_size < (off_t)HM__TABLE_HDR_BYTES ||
	    pread(fd, &hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
	    (atomic_load(&hdr.pub) & HM_PUBFILE_RETIRED) ||
	    hm__table_layout_from_hdr(&w->lay, &hdr, (uint64_t)st.st_size) != 0) {
		close(fd);
		return HM_EBADTABLE;
	}
	e = writer_map(w, fd);
	close(fd);
	if (e != 0)
		return e;
	w->installed = true;
	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	if ((e = hm__table_verify_copy(w, &c)) != 0) {
		writer_unmap(w);
		return e;
	}
	w->hdr->writer_pid = getpid();
	memcpy(w->base + w->lay.copy_off[hm__table_batch_copy(w)], c.base, w->lay.copy_bytes);
	return 0;
}

int hm_table_writer_open(struct hm_table_writer **out, const char *path,
			 const struct hm_table_caps *caps, unsigned flags, uint64_t max_bytes)
{
	struct hm_table_writer *w = calloc(1, sizeof(*w));
	struct hm_table_caps def = HM_TABLE_CAPS_DEFAULT;
	int e;

	if (w == NULL)
		return -ENOMEM;
	w->max_bytes = max_bytes;
	if ((e = hm_pubfile_writer_open(&w->pw, path)) < 0) {
		free(w);
		return e;
	}
	if (e == 1 && (flags & HM_TABLE_RESUME))
		e = writer_resume(w);
	else
		e = writer_create(w, caps != NULL ? caps : &def);
	if (e != 0) {
		hm_pubfile_writer_close(&w->pw);
		free(w->tmp_path);
		free(w);
		return e;
	}
	*out = w;
	return 0;
}

void hm_table_writer_close(struct hm_table_writer *w)
{
	if (w == NULL)
		return;
	hm_table_abort(w);
	if (!w->installed && w->tmp_path != NULL)
		unlink(w->tmp_path);
	writer_unmap(w);
	hm_pubfile_writer_close(&w->pw);
	free(w->dirty);
	free(w->tmp_path);
	free(w);
}

/* Renames the writer's file over path, then retires the file that was there. */
static int install(struct hm_table_writer *w)
{
	int e = hm_pubfile_install(w->tmp_path, w->pw.path, HM__TABLE_MAGIC,
				   offsetof(struct hm__table_hdr, pub));

	if (e == 0)
		w->installed = true;
	return e;
}

/* ---- Batches --------------------------------------------------------------------------------- */

int hm_table_begin(struct hm_table_writer *w)
{
	if (w->in_batch)
		return -EBUSY;
	w->in_batch = true;
	w->full = 0;
	return 0;
}

int hm_table_commit(struct hm_table_writer *w, uint64_t epoch, uint64_t seq)
{
	struct hm__table_copy c;
	unsigned from = hm__table_batch_copy(w);
	uint64_t v;
	int e;

	if (!w->in_batch)
		return -EINVAL;
	hm__table_copy_view(&c, w->base, &w->lay, from);
	if ((e = hm__table_touch(w, &c, c.h, sizeof(*c.h))) != 0) {
		hm_table_abort(w);
		return e;
	}
	c.h->epoch = epoch;
	c.h->seq = seq;
	c.h->commit_ms = hm_wall_ms();
	v = HM_PUBFILE_VERSION(atomic_load_explicit(&w->hdr->pub, memory_order_relaxed));
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
	sync_lines(w, hm__table_pub_copy(w), hm__table_batch_copy(w));
	w->in_batch = false;
}

/* ---- Queries on the published copy ----------------------------------------------------------- */

void hm_table_writer_info(const struct hm_table_writer *w, struct hm_table_info *out)
{
	struct hm__table_copy c;

	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	hm__table_info_from_copy(&c, &w->lay, HM_PUBFILE_VERSION(atomic_load(&w->hdr->pub)),
				 w->hdr->file_id, out);
}

int hm_table_batch_info(const struct hm_table_writer *w, struct hm_table_info *out)
{
	struct hm__table_copy c;

	if (!w->in_batch)
		return -EINVAL;
	hm__table_copy_view(&c, w->base, &w->lay, hm__table_batch_copy(w));
	hm__table_info_from_copy(&c, &w->lay, HM_PUBFILE_VERSION(atomic_load(&w->hdr->pub)) + 1,
				 w->hdr->file_id, out);
	return 0;
}

static void app_change(const struct hm__table_rec_app *a, struct hm_change *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_APP_PUT;
	ch->app = a->name;
	ch->app_len = a->name_len;
	ch->maintenance = a->maintenance;
	ch->affinity = a->affinity;
	ch->balance = a->balance;
}

static void dyno_change(const struct hm__table_copy *c, const struct hm__table_rec_dyno *y,
			struct hm_change *ch)
{
	const struct hm__table_rec_app *a = &c->apps[y->app];

	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_DYNO_PUT;
	ch->app = a->name;
	ch->app_len = a->name_len;
	ch->name = hm__table_dyno_name(c, y, y->name_len);
	ch->name_len = y->name_len;
	ch->state = y->state;
	ch->addr.family = y->family;
	ch->addr.port = y->port;
	memcpy(ch->addr.ip, y->ip, 16);
}

/* The put change that makes r (value borrowed from the table). */
static void secret_change(const struct hm__table_rec_secret *r, struct hm_change *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->op = HM_OP_SECRET_PUT;
	ch->name = r->name;
	ch->name_len = r->name_len;
	ch->value = r->value;
	ch->value_len = r->value_len;
}

int hm_table_foreach(const struct hm_table_writer *w,
		     int (*cb)(void *ctx, const struct hm_change *c), void *ctx)
{
	struct hm__table_copy c;
	struct hm_change ch;
	char host[HM_HOST_MAX + 3];
	int r;

	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	for (unsigned i = 0; i < HM__TABLE_SECRETS; i++) {
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
		const struct hm__table_rec_domain *d = &c.domains[i];
		const struct hm__table_rec_app *a = &c.apps[d->app];
		size_t n = 0;

		if (!d->used)
			continue;
		if (d->wildcard) {
			memcpy(host, "*.", 2);
			n = 2;
		}
		memcpy(host + n, hm__table_domain_name(&c, d, d->name_len), d->name_len);
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
	struct hm__table_copy c;
	const struct hm__table_rec_app *a;
	const uint32_t *arr;
	int64_t ai;
	int r;

	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	ai = hm__table_resolve_app(&c, key, n);
	if (ai < 0)
		return HM_ENOHOST;
	a = &c.apps[ai];
	app_change(a, app);
	arr = hm__table_app_dynos(&c, a, a->n[0]);
	for (uint32_t k = 0; arr != NULL && k < a->n[0]; k++) {
		struct hm_change ch;

		dyno_change(&c, &c.dynos[arr[k]], &ch);
		if (cb != NULL && (r = cb(ctx, &ch)) != 0)
			return r;
	}
	return 0;
}

int hm_table_writer_secret(const struct hm_table_writer *w, const char *name,
			   uint8_t out[HM_SECRET_MAX])
{
	struct hm__table_copy c;

	hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
	return hm__table_secret_read(&c, name, out);
}

/* ---- Growth ---------------------------------------------------------------------------------- */

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
		struct hm__table_copy c;

		hm__table_copy_view(&c, w->base, &w->lay, hm__table_pub_copy(w));
		if (w->full == 1 || info.apps * 2 > caps.apps)
			caps.apps = HM_MIN(caps.apps * 2, HM__TABLE_CAP_APPS_MAX);
		if (w->full == 2 || info.domains * 2 > caps.domains)
			caps.domains = HM_MIN(caps.domains * 2, HM__TABLE_CAP_DOMAINS_MAX);
		if (w->full == 3 || info.dynos * 2 > caps.dynos)
			caps.dynos = HM_MIN(caps.dynos * 2, HM__TABLE_CAP_DYNOS_MAX);
		if (w->full == 4 || c.h->heap_top * 2 > caps.heap)
			caps.heap = HM_MIN(caps.heap * 2, HM__TABLE_CAP_HEAP_MAX);
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
	nw.pw.lock_fd = -1; /* nw borrows w's path and never closes it */
	nw.pw.path = w->pw.path;
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
		struct hm__table_copy c;

		for (unsigned k = 0; k < 2; k++) {
			hm__table_copy_view(&c, nw.base, &nw.lay, k);
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
