/*
 * Snapshot files. Writing makes two passes over the table: the first decides how the puts are
 * cut into chunks (each chunk announces its count before its changes), the second encodes and
 * writes them. The index and the request ids go after the chunks, and the header, which points
 * at them, is written last, before the fsync and the rename.
 */
#include "syncd/snapfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/hash.h"
#include "common/util.h"
#include "syncd/buf.h"
#include "syncd/wire.h"

#define SNAP_MAGIC   "HMSNAP01"
#define SNAP_VERSION 1u
#define SNAP_HEAD    128u

struct hm__snapfile {
	int fd;
	struct hm__snap_info info;
	uint64_t *off;
	uint32_t *len, *crc;
	uint8_t *reqs; /* nreq x 24 bytes */
};

void hm__snap_path(const char *dir, uint64_t seq, uint64_t snap_id, char *buf, size_t len)
{
	snprintf(buf, len, "%s/snapshot-%020" PRIu64 "-%016" PRIx64 ".snap", dir, seq, snap_id);
}

/* ---- Writing ------------------------------------------------------------------------------ */

struct writer {
	int fd;
	uint64_t pos;
	struct hm__splitter split;
	uint32_t *counts; /* changes per chunk */
	uint32_t ncounts, cap;
	struct hm_snapshot_head head;
	struct hm_pbuf pb;
	uint32_t chunk, left;
	struct hm__buf index;
	int err;
};

static int count_cb(void *ctx, const struct hm_change *c)
{
	struct writer *wr = ctx;

	if (hm__split_add(&wr->split, hm__wire_change_size(c))) {
		if (wr->ncounts == wr->cap) {
			uint32_t *n;

			wr->cap = wr->cap ? wr->cap * 2 : 64;
			if ((n = realloc(wr->counts, wr->cap * sizeof(*n))) == NULL)
				return -ENOMEM;
			wr->counts = n;
		}
		wr->counts[wr->ncounts++] = 0;
	}
	wr->counts[wr->ncounts - 1]++;
	return 0;
}

static int flush_chunk(struct writer *wr)
{
	int e = hm_write_all(wr->fd, wr->pb.data, wr->pb.len);

	if (e != 0)
		return e;
	hm__buf_add_u64(&wr->index, wr->pos);
	hm__buf_add_u32(&wr->index, (uint32_t)wr->pb.len);
	hm__buf_add_u32(&wr->index, hm_crc32c(0, wr->pb.data, wr->pb.len));
	if (wr->index.oom)
		return -ENOMEM;
	wr->pos += wr->pb.len;
	hm_pbuf_reset(&wr->pb);
	wr->chunk++;
	return 0;
}

static int encode_cb(void *ctx, const struct hm_change *c)
{
	struct writer *wr = ctx;
	int e;

	if (wr->left == 0) {
		wr->head.chunk = wr->chunk;
		if ((e = hm_proto_begin_snapshot_rep(&wr->pb, &wr->head, wr->counts[wr->chunk])) !=
		    0)
			return e;
		wr->left = wr->counts[wr->chunk];
	}
	if ((e = hm_proto_add_change(&wr->pb, c)) != 0)
		return e;
	if (--wr->left == 0)
		return flush_chunk(wr);
	return 0;
}

static int req_cb(void *ctx, const uint8_t id[16], uint64_t seq)
{
	struct hm__buf *b = ctx;

	hm__buf_add(b, id, 16);
	hm__buf_add_u64(b, seq);
	return b->oom ? -ENOMEM : 0;
}

int hm__snap_write(const char *dir, const struct hm_state *st, uint64_t snap_id,
		   const struct hm__reqcache *rc, char *path, size_t pathlen, char *err,
		   size_t errlen)
{
	char tmp[PATH_MAX];
	struct hm_table_info info;
	struct writer wr;
	struct hm__buf reqs = {0};
	uint8_t h[SNAP_HEAD];
	uint64_t index_off, req_off;
	uint32_t nreq = rc != NULL ? hm__reqcache_count(rc) : 0;
	int e;

	memset(&wr, 0, sizeof(wr));
	hm_table_writer_info(st->table, &info);
	hm_state_digest(st, info.digest);
	hm__snap_path(dir, info.seq, snap_id, path, pathlen);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	wr.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
		     0600); /* holds the cluster secret */
	if (wr.fd < 0) {
		e = -errno;
		snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(-e));
		return e;
	}
	hm__split_init(&wr.split, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
	if ((e = hm_state_foreach(st, count_cb, &wr)) != 0) {
		snprintf(err, errlen, "counting: %s", hm_strerror(e));
		goto fail;
	}
	wr.head.epoch = info.epoch;
	wr.head.seq = info.seq;
	wr.head.snap_id = snap_id;
	wr.head.nchunks = wr.ncounts > 0 ? wr.ncounts : 1;
	wr.head.apps = info.apps;
	wr.head.domains = info.domains;
	wr.head.dynos = info.dynos;
	memcpy(wr.head.digest, info.digest, 16);
	if (st->certs != NULL) {
		struct hm_certstore_info ci;

		hm_certstore_writer_info(st->certs, &ci);
		wr.head.certs = ci.certs;
		wr.head.cert_heap = ci.heap_used;
	}
#ifdef HM_TEST_HOOKS
	{
		/* Test builds: HM_TEST_SNAP_VERSION=3 writes a file as the builds before the
		 * certificate count did (chunks of SNAPSHOT_REP version 3, no count in the header).
		 */
		const char *v = getenv("HM_TEST_SNAP_VERSION");

		if (v != NULL && strcmp(v, "3") == 0) {
			wr.head.version = 3;
			wr.head.certs = 0;
			wr.head.cert_heap = 0;
		}
	}
#endif
	wr.pos = SNAP_HEAD;
	memset(h, 0, sizeof(h));
	if ((e = hm_write_all(wr.fd, h, sizeof(h))) != 0) {
		snprintf(err, errlen, "writing %s: %s", tmp, strerror(-e));
		goto fail;
	}
	if (wr.ncounts == 0) {
		wr.head.chunk = 0;
		e = hm_proto_begin_snapshot_rep(&wr.pb, &wr.head, 0);
		if (e == 0)
			e = flush_chunk(&wr);
	} else {
		e = hm_state_foreach(st, encode_cb, &wr);
	}
	if (e == 0 && wr.chunk != wr.head.nchunks)
		e = HM_EARITY;
	if (e != 0) {
		snprintf(err, errlen, "encoding chunk %u: %s", wr.chunk, hm_strerror(e));
		goto fail;
	}
	index_off = wr.pos;
	hm__buf_add_u32(&wr.index, hm_crc32c(0, wr.index.data, wr.index.len));
	if (nreq > 0)
		hm__reqcache_foreach(rc, req_cb, &reqs);
	hm__buf_add_u32(&reqs, hm_crc32c(0, reqs.data, reqs.len));
	if (wr.index.oom || reqs.oom) {
		e = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	req_off = index_off + wr.index.len;
	memcpy(h, SNAP_MAGIC, 8);
	hm__put_le32(h + 8, SNAP_VERSION);
	hm__put_le32(h + 12, SNAP_HEAD);
	hm__put_le64(h + 16, info.epoch);
	hm__put_le64(h + 24, info.seq);
	hm__put_le64(h + 32, snap_id);
	hm__put_le64(h + 40, hm_wall_ms());
	hm__put_le32(h + 48, wr.head.nchunks);
	hm__put_le32(h + 52, info.apps);
	hm__put_le32(h + 56, info.domains);
	hm__put_le32(h + 60, info.dynos);
	memcpy(h + 64, info.digest, 16);
	hm__put_le32(h + 80, nreq);
	hm__put_le64(h + 88, index_off);
	hm__put_le64(h + 96, req_off);
	hm__put_le32(h + 104, wr.head.certs);
	hm__put_le64(h + 112, wr.head.cert_heap);
	hm__put_le32(h + 124, hm_crc32c(0, h, 124));
	if ((e = hm_write_all(wr.fd, wr.index.data, wr.index.len)) != 0 ||
	    (e = hm_write_all(wr.fd, reqs.data, reqs.len)) != 0 ||
	    (pwrite(wr.fd, h, sizeof(h), 0) != (ssize_t)sizeof(h) && (e = errno ? -errno : -EIO)) ||
	    (fsync(wr.fd) != 0 && (e = -errno))) {
		snprintf(err, errlen, "writing %s: %s", tmp, strerror(-e));
		goto fail;
	}
	close(wr.fd);
	wr.fd = -1;
	if (rename(tmp, path) != 0) {
		e = -errno;
		snprintf(err, errlen, "renaming %s: %s", tmp, strerror(-e));
		goto fail;
	}
	if ((e = hm_fsync_path(dir, false)) != 0) {
		snprintf(err, errlen, "fsync of %s: %s", dir, strerror(-e));
		goto fail;
	}
	hm_pbuf_fini(&wr.pb);
	hm__buf_fini(&wr.index);
	hm__buf_fini(&reqs);
	free(wr.counts);
	return 0;
fail:
	if (wr.fd >= 0)
		close(wr.fd);
	unlink(tmp);
	hm_pbuf_fini(&wr.pb);
	hm__buf_fini(&wr.index);
	hm__buf_fini(&reqs);
	free(wr.counts);
	return e;
}

/* ---- Listing ------------------------------------------------------------------------------ */

int hm__snap_list(const char *dir, uint64_t **seqs, uint64_t **ids)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t *s = NULL, *id = NULL;
	size_t n = 0, cap = 0;

	*seqs = *ids = NULL;
	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		unsigned long long seq, sid;
		int used = 0;
		size_t l = strlen(de->d_name);

		if (l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0 &&
		    strncmp(de->d_name, "snapshot-", 9) == 0) {
			char p[PATH_MAX];

			snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
			unlink(p); /* a compaction that did not finish */
			continue;
		}
		if (sscanf(de->d_name, "snapshot-%20llu-%16llx.snap%n", &seq, &sid, &used) != 2 ||
		    used != (int)l || l != 51)
			continue;
		if (n == cap) {
			uint64_t *ns, *ni;

			cap = cap ? cap * 2 : 8;
			ns = realloc(s, cap * sizeof(*s));
			if (ns != NULL)
				s = ns;
			ni = ns != NULL ? realloc(id, cap * sizeof(*id)) : NULL;
			if (ni == NULL) {
				free(s);
				free(id);
				closedir(d);
				return -ENOMEM;
			}
			id = ni;
		}
		s[n] = seq;
		id[n] = sid;
		n++;
	}
	closedir(d);
	/* Newest first (insertion sort: there are a handful). */
	for (size_t i = 1; i < n; i++)
		for (size_t k = i; k > 0 && s[k - 1] < s[k]; k--) {
			uint64_t t = s[k];

			s[k] = s[k - 1];
			s[k - 1] = t;
			t = id[k];
			id[k] = id[k - 1];
			id[k - 1] = t;
		}
	*seqs = s;
	*ids = id;
	return (int)n;
}

/* ---- Reading ------------------------------------------------------------------------------ */

static int pread_all(int fd, void *p, size_t n, uint64_t off)
{
	char *c = p;

	while (n > 0) {
		ssize_t r = pread(fd, c, n, (off_t)off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return HM_ECORRUPT;
		c += r;
		n -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

void hm__snap_close(struct hm__snapfile *s)
{
	if (s == NULL)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->off);
	free(s->len);
	free(s->crc);
	free(s->reqs);
	free(s);
}

int hm__snap_open(struct hm__snapfile **out, const char *path, bool verify)
{
	struct hm__snapfile *s = calloc(1, sizeof(*s));
	uint8_t h[SNAP_HEAD];
	uint8_t *idx = NULL;
	struct stat st;
	uint64_t index_off, req_off, size;
	size_t idx_len, req_len;
	int e;

	if (s == NULL)
		return -ENOMEM;
	if ((s->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(s->fd, &st) != 0) {
		e = -errno;
		goto fail;
	}
	size = (uint64_t)st.st_size;
	if ((e = pread_all(s->fd, h, sizeof(h), 0)) != 0)
		goto fail;
	e = HM_ECORRUPT;
	if (memcmp(h, SNAP_MAGIC, 8) != 0 || hm__le32(h + 124) != hm_crc32c(0, h, 124) ||
	    hm__le32(h + 8) != SNAP_VERSION || hm__le32(h + 12) != SNAP_HEAD)
		goto fail;
	s->info.epoch = hm__le64(h + 16);
	s->info.seq = hm__le64(h + 24);
	s->info.snap_id = hm__le64(h + 32);
	s->info.created_ms = hm__le64(h + 40);
	s->info.nchunks = hm__le32(h + 48);
	s->info.apps = hm__le32(h + 52);
	s->info.domains = hm__le32(h + 56);
	s->info.dynos = hm__le32(h + 60);
	memcpy(s->info.digest, h + 64, 16);
	s->info.nreq = hm__le32(h + 80);
	s->info.certs = hm__le32(h + 104);
	s->info.cert_heap = hm__le64(h + 112);
	s->info.file_bytes = size;
	index_off = hm__le64(h + 88);
	req_off = hm__le64(h + 96);
	if (s->info.nchunks == 0 || s->info.nchunks > (1u << 24) || s->info.nreq > (1u << 24))
		goto fail;
	idx_len = (size_t)s->info.nchunks * 16 + 4;
	req_len = (size_t)s->info.nreq * 24 + 4;
	if (index_off < SNAP_HEAD || index_off > size || size - index_off < idx_len ||
	    req_off != index_off + idx_len || size - req_off != req_len)
		goto fail;
	if ((idx = malloc(idx_len)) == NULL || (s->reqs = malloc(req_len)) == NULL ||
	    (s->off = malloc(s->info.nchunks * sizeof(*s->off))) == NULL ||
	    (s->len = malloc(s->info.nchunks * sizeof(*s->len))) == NULL ||
	    (s->crc = malloc(s->info.nchunks * sizeof(*s->crc))) == NULL) {
		e = -ENOMEM;
		goto fail;
	}
	if ((e = pread_all(s->fd, idx, idx_len, index_off)) != 0 ||
	    (e = pread_all(s->fd, s->reqs, req_len, req_off)) != 0)
		goto fail;
	e = HM_ECORRUPT;
	if (hm__le32(idx + idx_len - 4) != hm_crc32c(0, idx, idx_len - 4) ||
	    hm__le32(s->reqs + req_len - 4) != hm_crc32c(0, s->reqs, req_len - 4))
		goto fail;
	for (uint32_t i = 0; i < s->info.nchunks; i++) {
		s->off[i] = hm__le64(idx + 16 * (size_t)i);
		s->len[i] = hm__le32(idx + 16 * (size_t)i + 8);
		s->crc[i] = hm__le32(idx + 16 * (size_t)i + 12);
		if (s->off[i] < SNAP_HEAD || s->off[i] > index_off ||
		    s->len[i] > index_off - s->off[i] || s->len[i] == 0 ||
		    s->len[i] > HM_PROTO_MAX_MSG)
			goto fail;
	}
	free(idx);
	idx = NULL;
	if (verify) {
		for (uint32_t i = 0; i < s->info.nchunks; i++) {
			char *buf = malloc(s->len[i]);

			if (buf == NULL) {
				e = -ENOMEM;
				goto fail;
			}
			e = hm__snap_chunk_read(s, i, buf);
			free(buf);
			if (e != 0)
				goto fail;
		}
	}
	*out = s;
	return 0;
fail:
	free(idx);
	hm__snap_close(s);
	return e;
}

const struct hm__snap_info *hm__snap_info(const struct hm__snapfile *s)
{
	return &s->info;
}

uint32_t hm__snap_chunk_len(const struct hm__snapfile *s, uint32_t i)
{
	return i < s->info.nchunks ? s->len[i] : 0;
}

int hm__snap_chunk_read(const struct hm__snapfile *s, uint32_t i, void *dst)
{
	int e;

	if (i >= s->info.nchunks)
		return -ERANGE;
	if ((e = pread_all(s->fd, dst, s->len[i], s->off[i])) != 0)
		return e;
	return hm_crc32c(0, dst, s->len[i]) == s->crc[i] ? 0 : HM_ECORRUPT;
}

void hm__snap_reqs(const struct hm__snapfile *s,
		   void (*cb)(void *ctx, const uint8_t id[16], uint64_t seq), void *ctx)
{
	for (uint32_t i = 0; i < s->info.nreq; i++)
		cb(ctx, s->reqs + 24 * (size_t)i, hm__le64(s->reqs + 24 * (size_t)i + 16));
}

/* Applies every chunk into the open batch of st (an hm_state_feed_fn). */
struct load_ctx {
	const struct hm__snapfile *s;
	struct hm_proto_decoder *d;
};

static int load_chunks(struct hm_state *st, void *arg)
{
	const struct load_ctx *lc = arg;
	const struct hm__snapfile *s = lc->s;
	const struct hm__snap_info *si = &s->info;
	char *buf = NULL;
	size_t cap = 0;
	int e = 0;

	for (uint32_t i = 0; i < si->nchunks && e == 0; i++) {
		struct hm_msg m;

		if (s->len[i] > cap) {
			char *nb = realloc(buf, s->len[i]);

			if (nb == NULL) {
				e = -ENOMEM;
				break;
			}
			buf = nb;
			cap = s->len[i];
		}
		if ((e = hm__snap_chunk_read(s, i, buf)) != 0 ||
		    (e = hm_proto_decode(lc->d, buf, s->len[i], &m)) != 0)
			break;
		if (m.type != HM_MSG_SNAPSHOT_REP || m.snapshot_rep.epoch != si->epoch ||
		    m.snapshot_rep.seq != si->seq || m.snapshot_rep.snap_id != si->snap_id ||
		    m.snapshot_rep.chunk != i || m.snapshot_rep.nchunks != si->nchunks) {
			e = HM_ECORRUPT;
			break;
		}
		for (uint32_t k = 0; k < m.snapshot_rep.nchanges && e == 0; k++)
			e = hm_state_change(st, &m.snapshot_rep.changes[k]);
	}
	free(buf);
	return e;
}

int hm__snap_load(const struct hm__snapfile *s, struct hm_state *st, struct hm_proto_decoder *d)
{
	const struct hm__snap_info *si = &s->info;
	struct load_ctx lc = {s, d};
	struct hm_table_info info;
	uint8_t digest[HM_DIGEST_LEN];
	int e;

	/* Sized for the whole table at once (growing by doubling would reload it many times). */
	hm_table_writer_info(st->table, &info);
	if (info.caps.apps < si->apps || info.caps.domains < si->domains ||
	    info.caps.dynos < si->dynos) {
		struct hm_table_caps min = {.apps = si->apps,
					    .domains = si->domains,
					    .dynos = si->dynos,
					    .heap = info.caps.heap + 256ull * si->apps +
						    64ull * si->domains + 24ull * si->dynos};

		if (min.heap > 0xfffff000ull)
			min.heap = 0xfffff000ull;
		if ((e = hm_table_grow(st->table, &min)) != 0 && e != HM_EFULL)
			return e;
	}
	/* The store too, when the file says how much it holds (0 in files written before). */
	if (st->certs != NULL && si->certs > 0) {
		struct hm_certstore_info ci;

		hm_certstore_writer_info(st->certs, &ci);
		if (ci.caps.certs < si->certs || ci.caps.heap < si->cert_heap) {
			struct hm_certstore_caps min = {.certs = si->certs, .heap = si->cert_heap};

			if ((e = hm_certstore_grow(st->certs, &min)) != 0 && e != -ENOSPC)
				return e;
		}
	}
	if ((e = hm_state_apply(st, load_chunks, &lc, si->epoch, si->seq)) != 0)
		return e;
	hm_table_writer_info(st->table, &info);
	hm_state_digest(st, digest);
	if (memcmp(digest, si->digest, 16) != 0 || info.apps != si->apps ||
	    info.domains != si->domains || info.dynos != si->dynos)
		return HM_EDIGEST;
	return 0;
}
