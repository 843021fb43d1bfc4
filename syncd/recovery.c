/*
 * Start-up recovery, shared by the origin's stores: the epoch file, the newest snapshot, and one
 * batch record applied to the validation state the way a replay applies it (recovery.h).
 *
 * A batch is applied whole or not at all, through common/state (which grows whichever file is
 * full and applies it again); the digest and counts the record carries are then checked against
 * the state's, so a record that does not reproduce the state it was made from is refused rather
 * than served.
 */
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
#include "common/log.h"
#include "common/util.h"
#include "syncd/journal.h"
#include "syncd/recovery.h"
#include "syncd/snapfile.h"

int hm__mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) != 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Reads DIR/epoch, or creates it for a fresh directory. */

int hm__write_epoch(const char *dir, uint64_t epoch)
{
	char path[PATH_MAX], tmp[PATH_MAX], text[64];
	int fd, n;

	snprintf(path, sizeof(path), "%s/epoch", dir);
	n = snprintf(text, sizeof(text), "%016" PRIx64 "\n", epoch);
	snprintf(tmp, sizeof(tmp), "%s/epoch.tmp", dir);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0 ||
	    write(fd, text, (size_t)n) != n || fsync(fd) != 0 || close(fd) != 0 ||
	    rename(tmp, path) != 0 || hm_fsync_path(dir, false) != 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot create %s: %s", path, strerror(errno));
		return -EIO;
	}
	return 0;
}

int hm__recover_epoch(const char *dir, uint64_t *epoch)
{
	char path[PATH_MAX], text[64];
	uint64_t *a = NULL, *b = NULL, *c = NULL;
	int fd, nj, ns, e;
	ssize_t r;

	*epoch = 0;
	snprintf(path, sizeof(path), "%s/epoch", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		uint8_t be[8];

		r = read(fd, text, sizeof(text) - 1);
		close(fd);
		if (r < 16 || hm_unhex(text, 16, be, 8) != 0) {
			hm_log(HM_LOG_ERR, "origin", "%s is not 16 hex digits", path);
			return HM_ECORRUPT;
		}
		for (int i = 0; i < 8; i++)
			*epoch = *epoch << 8 | be[i];
		if (*epoch == 0) {
			hm_log(HM_LOG_ERR, "origin", "%s holds epoch 0", path);
			return HM_ECORRUPT;
		}
		return 0;
	}
	if (errno != ENOENT) {
		hm_log(HM_LOG_ERR, "origin", "cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	nj = hm__journal_list(dir, &a);
	ns = hm__snap_list(dir, &b, &c);
	free(a);
	free(b);
	free(c);
	if (nj > 0 || ns > 0) {
		hm_log(HM_LOG_ERR, "origin", "%s has a journal or snapshots but no epoch file",
		       dir);
		return HM_ECORRUPT;
	}
	while (*epoch == 0)
		hm_random_bytes(epoch, sizeof(*epoch));
	if ((e = hm__write_epoch(dir, *epoch)) != 0)
		return e;
	hm_log(HM_LOG_NOTICE, "origin", "new data directory %s: epoch %016" PRIx64, dir, *epoch);
	return 0;
}

int hm__recover_state_open(struct hm_state *st)
{
	int e;

	if ((e = hm_table_writer_open(&st->table, NULL, NULL, 0, 0)) != 0)
		return e;
	if ((e = hm_certstore_writer_open(&st->certs, NULL, NULL, 0, 0)) != 0) {
		hm_table_writer_close(st->table);
		st->table = NULL;
	}
	return e;
}

void hm__recover_state_close(struct hm_state *st)
{
	if (st->table != NULL)
		hm_table_writer_close(st->table);
	if (st->certs != NULL)
		hm_certstore_writer_close(st->certs);
	st->table = NULL;
	st->certs = NULL;
}

static void reqs_from_snapshot(void *ctx, const uint8_t id[16], uint64_t seq)
{
	hm__reqcache_put(ctx, id, seq);
}

int hm__recover_snapshot(const struct hm__recover_ctx *rc, bool *loaded, uint64_t *seq)
{
	uint64_t *seqs, *ids;
	int n = hm__snap_list(rc->dir, &seqs, &ids), e = 0;
	char path[PATH_MAX];

	*seq = 0;
	*loaded = false;
	if (n < 0) {
		hm_log(HM_LOG_ERR, "origin", "cannot list %s: %s", rc->dir, strerror(-n));
		return n;
	}
	for (int i = 0; i < n; i++) {
		struct hm__snapfile *s;

		hm__snap_path(rc->dir, seqs[i], ids[i], path, sizeof(path));
		if ((e = hm__snap_open(&s, path, true)) != 0) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: %s", path,
			       hm_strerror(e));
			continue;
		}
		if (hm__snap_info(s)->epoch != rc->epoch) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: another epoch",
			       path);
			hm__snap_close(s);
			continue;
		}
		e = hm__snap_load(s, rc->st, rc->dec);
		if (e != 0) {
			hm_log(HM_LOG_WARNING, "origin", "skipping snapshot %s: %s", path,
			       hm_strerror(e));
			hm__snap_close(s);
			hm__recover_state_close(rc->st);
			if ((e = hm__recover_state_open(rc->st)) != 0)
				break;
			continue;
		}
		hm__snap_reqs(s, reqs_from_snapshot, rc->reqs);
		*loaded = true;
		*seq = hm__snap_info(s)->seq;
		hm__syncsrv_snapshot(rc->ss, s);
		hm_log(HM_LOG_INFO, "origin", "loaded snapshot %s (seq %" PRIu64 ")", path, *seq);
		break;
	}
	free(seqs);
	free(ids);
	if (e != 0 && rc->st->table == NULL)
		return e;
	if (!*loaded) {
		/* No snapshot: the empty state, stamped with the epoch. */
		hm_require(hm_state_begin(rc->st, rc->epoch, 0) == 0);
		if ((e = hm_state_commit(rc->st, rc->epoch, 0)) != 0)
			return e;
	}
	return 0;
}

int hm__recover_feed(struct hm_state *st, struct hm_proto_decoder *dec, uint64_t epoch,
		     const struct hm__batch *b)
{
	int e = 0;

	for (uint32_t i = 0; i < b->nparts && e == 0; i++) {
		struct hm_msg m;

		e = hm_proto_decode(dec, hm__batch_part(b, i), b->part_len[i], &m);
		if (e == 0 &&
		    (m.type != HM_MSG_BATCH || m.batch.epoch != epoch || m.batch.b.seq != b->seq ||
		     m.batch.b.part != i || m.batch.b.nparts != b->nparts))
			e = HM_ECORRUPT;
		for (uint32_t k = 0; e == 0 && k < m.batch.b.nchanges; k++)
			e = hm_state_change(st, &m.batch.b.changes[k]);
	}
	return e;
}

/* What hm__recover_apply feeds into the state: b's changes, part by part. */
struct apply_feed {
	const struct hm__recover_ctx *rc;
	const struct hm__batch *b;
};

static int apply_parts(struct hm_state *st, void *arg)
{
	const struct apply_feed *f = arg;

	return hm__recover_feed(st, f->rc->dec, f->rc->epoch, f->b);
}

int hm__recover_apply(const struct hm__recover_ctx *rc, const struct hm__batch *b)
{
	struct apply_feed f = {rc, b};
	struct hm_table_info info;
	uint8_t digest[HM_DIGEST_LEN];
	int e;

	if ((e = hm_state_apply(rc->st, apply_parts, &f, rc->epoch, b->seq)) != 0)
		return e;
	hm_table_writer_info(rc->st->table, &info);
	hm_state_digest(rc->st, digest);
	if (memcmp(digest, b->digest, 16) != 0 || info.apps != b->apps ||
	    info.domains != b->domains || info.dynos != b->dynos)
		return HM_EDIGEST;
	hm__reqcache_put(rc->reqs, b->req_id, b->seq);
	return 0;
}
