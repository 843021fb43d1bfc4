/*
 * The journal writer and the journal's files.
 *
 * Group commit: the loop queues records; the writer thread wakes, takes everything queued,
 * writes it with writev() and calls fdatasync() once, then publishes the new durable seq and
 * calls cfg.durable. Records queued while an fsync runs form the next group. A failed write or
 * fsync is fatal: the process logs and exits, because the loop has already moved its in-memory
 * state past what is on disk, and only a restart (replaying the journal) makes them agree again.
 * (After a failed fsync the kernel may have dropped the dirty pages, so retrying would not be
 * safe either.)
 */
#include "syncd/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/hash.h"
#include "common/log.h"
#include "common/util.h"

#define SEG_MAGIC   "HMJRNL01"
#define SEG_VERSION 1u

struct jitem {
	struct jitem *next;
	struct hm__batch *b; /* NULL: a roll to segment `roll` */
	uint64_t roll;
};

struct hm__journal {
	char *dir;
	uint64_t epoch;
	uint64_t segment_bytes;
	void (*durable_cb)(void *ctx);
	void *ctx;

	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct jitem *head, *tail; /* queue, under mu */
	bool stopping;		   /* under mu */

	_Atomic uint64_t durable;
	_Atomic uint64_t fsyncs;

	/* loop side */
	uint64_t cur_seg, cur_size, bytes;

	/* writer side */
	int fd;
	int dirfd;
	uint64_t groups;	/* groups of records written */
	uint64_t kill_at_group; /* test builds: see test_kill_point() */
};

void hm__journal_path(const char *dir, uint64_t first, char *buf, size_t len)
{
	snprintf(buf, len, "%s/journal-%020" PRIu64 ".log", dir, first);
}

static _Noreturn void fatal(const char *what, const char *path, int err)
{
	hm_log(HM_LOG_ERR, "journal",
	       "%s %s failed: %s; exiting (a restart recovers from the journal)", what, path,
	       strerror(err));
	_exit(70);
}

static void seg_header(uint8_t h[HM__JSEG_HEAD], uint64_t epoch, uint64_t first)
{
	memset(h, 0, HM__JSEG_HEAD);
	memcpy(h, SEG_MAGIC, 8);
	hm__put_le32(h + 8, SEG_VERSION);
	hm__put_le32(h + 12, HM__JSEG_HEAD);
	hm__put_le64(h + 16, epoch);
	hm__put_le64(h + 24, first);
	hm__put_le64(h + 32, hm_wall_ms());
	hm__put_le32(h + 60, hm_crc32c(0, h, 60));
}

/* Creates segment first (an empty one of that name is replaced), header written and synced. */
static int seg_create(const char *dir, uint64_t epoch, uint64_t first, int *fd_out)
{
	char path[PATH_MAX];
	uint8_t h[HM__JSEG_HEAD];
	struct stat st;
	int fd, e;

	hm__journal_path(dir, first, path, sizeof(path));
	if (stat(path, &st) == 0) {
		if (st.st_size > (off_t)HM__JSEG_HEAD)
			return -EEXIST;
		unlink(path);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
		  0600); /* holds the cluster secret */
	if (fd < 0)
		return -errno;
	seg_header(h, epoch, first);
	if ((e = hm_write_all(fd, h, sizeof(h))) != 0 || (fdatasync(fd) != 0 && (e = -errno))) {
		close(fd);
		unlink(path);
		return e;
	}
	*fd_out = fd;
	return 0;
}

static void writev_all(struct hm__journal *j, struct iovec *iov, int n)
{
	char path[PATH_MAX];

	while (n > 0) {
		ssize_t w = writev(j->fd, iov, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			hm__journal_path(j->dir, j->cur_seg, path, sizeof(path));
			fatal("write to", path, errno);
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
}

#ifdef HM_TEST_HOOKS
/*
 * Test builds: HM_TEST_KILL_AT=journal-fsync:N makes the writer SIGKILL its own process just
 * before the fdatasync() of its Nth group of records (counted from 1): the records are written,
 * in the page cache, not yet on disk and not acknowledged (a crash at that exact point).
 */
static uint64_t test_kill_at_group(void)
{
	const char *v = getenv("HM_TEST_KILL_AT");
	unsigned long long n;

	if (v == NULL || sscanf(v, "journal-fsync:%llu", &n) != 1)
		return 0;
	return n;
}
#endif

static void *writer_main(void *arg)
{
	struct hm__journal *j = arg;
	struct iovec iov[64];

	for (;;) {
		struct jitem *list, *it, *next;
		uint64_t last = 0;
		bool wrote = false, dirsync = false, stop;
		int niov = 0;

		pthread_mutex_lock(&j->mu);
		while (j->head == NULL && !j->stopping)
			pthread_cond_wait(&j->cv, &j->mu);
		list = j->head;
		j->head = j->tail = NULL;
		stop = j->stopping;
		pthread_mutex_unlock(&j->mu);
		if (list == NULL && stop)
			break;

		for (it = list; it != NULL; it = it->next) {
			if (it->b == NULL) {
				char path[PATH_MAX];
				int e;

				writev_all(j, iov, niov);
				niov = 0;
				if (fdatasync(j->fd) != 0)
					fatal("fdatasync", "(journal segment)", errno);
				close(j->fd);
				if ((e = seg_create(j->dir, j->epoch, it->roll, &j->fd)) != 0) {
					hm__journal_path(j->dir, it->roll, path, sizeof(path));
					fatal("creating", path, -e);
				}
				dirsync = true;
				continue;
			}
			if (niov + 2 > (int)HM_ARRAY_SIZE(iov)) {
				writev_all(j, iov, niov);
				niov = 0;
			}
			iov[niov].iov_base = it->b->head;
			iov[niov].iov_len = it->b->head_len;
			iov[niov + 1].iov_base = it->b->data;
			iov[niov + 1].iov_len = it->b->data_len;
			niov += 2;
			last = it->b->seq;
			wrote = true;
		}
		writev_all(j, iov, niov);
#ifdef HM_TEST_HOOKS
		if (wrote && ++j->groups == j->kill_at_group)
			raise(SIGKILL);
#endif
		if (wrote && fdatasync(j->fd) != 0)
			fatal("fdatasync", "(journal segment)", errno);
		if (dirsync && fsync(j->dirfd) != 0)
			fatal("fsync of", j->dir, errno);
		for (it = list; it != NULL; it = next) {
			next = it->next;
			hm__batch_unref(it->b);
			free(it);
		}
		if (wrote) {
			atomic_fetch_add(&j->fsyncs, 1);
			atomic_store_explicit(&j->durable, last, memory_order_release);
			if (j->durable_cb != NULL)
				j->durable_cb(j->ctx);
		}
	}
	return NULL;
}

int hm__journal_start(struct hm__journal **out, const struct hm__journal_cfg *cfg,
		      uint64_t next_seq, char *err, size_t errlen)
{
	struct hm__journal *j = calloc(1, sizeof(*j));
	int e;

	if (j == NULL || (j->dir = strdup(cfg->dir)) == NULL) {
		free(j);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	j->epoch = cfg->epoch;
	j->segment_bytes = cfg->segment_bytes ? cfg->segment_bytes : HM__JSEG_DEFAULT_BYTES;
	j->durable_cb = cfg->durable;
	j->ctx = cfg->ctx;
	j->fd = -1;
#ifdef HM_TEST_HOOKS
	j->kill_at_group = test_kill_at_group();
#endif
	j->dirfd = open(cfg->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		e = -errno;
		snprintf(err, errlen, "cannot open %s: %s", cfg->dir, strerror(-e));
		goto fail;
	}
	if ((e = seg_create(j->dir, j->epoch, next_seq, &j->fd)) != 0) {
		char path[PATH_MAX];

		hm__journal_path(j->dir, next_seq, path, sizeof(path));
		snprintf(err, errlen, "cannot create %s: %s", path, strerror(-e));
		goto fail;
	}
	if (fsync(j->dirfd) != 0) {
		e = -errno;
		snprintf(err, errlen, "cannot fsync %s: %s", cfg->dir, strerror(-e));
		goto fail;
	}
	j->cur_seg = next_seq;
	j->cur_size = HM__JSEG_HEAD;
	atomic_init(&j->durable, next_seq - 1);
	pthread_mutex_init(&j->mu, NULL);
	pthread_cond_init(&j->cv, NULL);
	if ((e = pthread_create(&j->thread, NULL, writer_main, j)) != 0) {
		pthread_mutex_destroy(&j->mu);
		pthread_cond_destroy(&j->cv);
		snprintf(err, errlen, "cannot start the journal thread: %s", strerror(e));
		e = -e;
		goto fail;
	}
	*out = j;
	return 0;
fail:
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);
	free(j->dir);
	free(j);
	return e;
}

static void enqueue(struct hm__journal *j, struct jitem *it)
{
	pthread_mutex_lock(&j->mu);
	if (j->tail != NULL)
		j->tail->next = it;
	else
		j->head = it;
	j->tail = it;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
}

void hm__journal_roll(struct hm__journal *j, uint64_t next_seq)
{
	struct jitem *it;

	if (j->cur_seg == next_seq && j->cur_size == HM__JSEG_HEAD)
		return; /* already a fresh segment starting there */
	it = calloc(1, sizeof(*it));
	hm_require(it != NULL);
	it->roll = next_seq;
	enqueue(j, it);
	j->cur_seg = next_seq;
	j->cur_size = HM__JSEG_HEAD;
}

void hm__journal_append(struct hm__journal *j, struct hm__batch *b, struct hm__jpos *pos)
{
	struct jitem *it;

	if (j->cur_size > HM__JSEG_HEAD && j->cur_size + b->rec_len > j->segment_bytes)
		hm__journal_roll(j, b->seq);
	it = calloc(1, sizeof(*it));
	hm_require(it != NULL);
	hm__batch_ref(b);
	it->b = b;
	pos->seg = j->cur_seg;
	pos->off = j->cur_size;
	pos->len = b->rec_len;
	j->cur_size += b->rec_len;
	j->bytes += b->rec_len;
	enqueue(j, it);
}

uint64_t hm__journal_durable(const struct hm__journal *j)
{
	return atomic_load_explicit(&j->durable, memory_order_acquire);
}

uint64_t hm__journal_fsyncs(const struct hm__journal *j)
{
	return atomic_load_explicit(&j->fsyncs, memory_order_relaxed);
}

uint64_t hm__journal_bytes(const struct hm__journal *j)
{
	return j->bytes;
}

void hm__journal_stop(struct hm__journal *j)
{
	if (j == NULL)
		return;
	pthread_mutex_lock(&j->mu);
	j->stopping = true;
	pthread_cond_signal(&j->cv);
	pthread_mutex_unlock(&j->mu);
	pthread_join(j->thread, NULL);
	if (fdatasync(j->fd) != 0)
		hm_log(HM_LOG_ERR, "journal", "final fdatasync failed: %s", strerror(errno));
	close(j->fd);
	close(j->dirfd);
	pthread_mutex_destroy(&j->mu);
	pthread_cond_destroy(&j->cv);
	free(j->dir);
	free(j);
}

/* ---- Files -------------------------------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int hm__journal_list(const char *dir, uint64_t **firsts)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t *v = NULL;
	size_t n = 0, cap = 0;

	*firsts = NULL;
	if (d == NULL)
		return -errno;
	while ((de = readdir(d)) != NULL) {
		unsigned long long first;
		int used = 0;

		if (sscanf(de->d_name, "journal-%20llu.log%n", &first, &used) != 1 ||
		    used != (int)strlen(de->d_name) || strlen(de->d_name) != 32)
			continue;
		if (n == cap) {
			uint64_t *nv;

			cap = cap ? cap * 2 : 16;
			if ((nv = realloc(v, cap * sizeof(*v))) == NULL) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n++] = first;
	}
	closedir(d);
	if (n > 0)
		qsort(v, n, sizeof(*v), cmp_u64);
	*firsts = v;
	return (int)n;
}

/* Checks a segment header; 0 or HM_ECORRUPT. */
static int seg_check(const uint8_t *h, size_t len, uint64_t epoch, uint64_t first)
{
	if (len < HM__JSEG_HEAD || memcmp(h, SEG_MAGIC, 8) != 0 ||
	    hm__le32(h + 60) != hm_crc32c(0, h, 60) || hm__le32(h + 8) != SEG_VERSION ||
	    hm__le32(h + 12) != HM__JSEG_HEAD || hm__le64(h + 16) != epoch ||
	    hm__le64(h + 24) != first)
		return HM_ECORRUPT;
	return 0;
}

static int truncate_at(const char *path, uint64_t off)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC), e = 0;

	if (fd < 0)
		return -errno;
	if (ftruncate(fd, (off_t)off) != 0 || fsync(fd) != 0)
		e = -errno;
	close(fd);
	return e;
}

/* Replays one segment; last says whether a bad record may be a torn tail. */
static int recover_segment(const char *dir, uint64_t first, bool last, uint64_t *prev,
			   struct hm__jrecover *r)
{
	char path[PATH_MAX];
	struct stat st;
	const uint8_t *map = NULL;
	uint64_t off = HM__JSEG_HEAD, size;
	int fd, e = 0;

	hm__journal_path(dir, first, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0 || fstat(fd, &st) != 0) {
		e = -errno;
		snprintf(r->err, sizeof(r->err), "cannot read %s: %s", path, strerror(-e));
		if (fd >= 0)
			close(fd);
		return e;
	}
	size = (uint64_t)st.st_size;
	if (size > 0) {
		map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			e = -errno;
			close(fd);
			snprintf(r->err, sizeof(r->err), "cannot map %s: %s", path, strerror(-e));
			return e;
		}
	}
	close(fd);
	if (seg_check(map, size, r->epoch, first) != 0) {
		if (map != NULL)
			munmap((void *)map, size);
		if (last && size < 2 * HM__JSEG_HEAD) {
			/* Created, never written past its header: a crash while rolling. */
			r->truncated += size;
			unlink(path);
			return 0;
		}
		snprintf(r->err, sizeof(r->err), "%s: bad segment header (or another epoch)", path);
		return HM_ECORRUPT;
	}
	if (first != *prev + 1) {
		munmap((void *)map, size);
		snprintf(r->err, sizeof(r->err),
			 "%s starts at seq %" PRIu64 " but the seq before it is %" PRIu64, path,
			 first, *prev);
		return HM_ECORRUPT;
	}
	while (off < size) {
		size_t len = 0;
		int c = hm__jrec_check(map + off, size - off, HM__JREC_MAX_BODY, &len);
		struct hm__batch *b;
		char *copy;

		if (c == 1) {
			uint64_t seq = hm__le64(map + off + HM__JREC_HEAD);

			if (seq != *prev + 1) {
				snprintf(r->err, sizeof(r->err),
					 "%s at offset %" PRIu64 ": seq %" PRIu64
					 " follows seq %" PRIu64,
					 path, off, seq, *prev);
				e = HM_ECORRUPT;
				break;
			}
			*prev = seq;
			if (seq > r->after_seq) {
				if ((copy = malloc(len)) == NULL) {
					e = -ENOMEM;
					break;
				}
				memcpy(copy, map + off, len);
				if ((e = hm__batch_from_record(copy, len, &b)) != 0) {
					free(copy);
					snprintf(r->err, sizeof(r->err),
						 "%s at offset %" PRIu64 ": malformed record", path,
						 off);
					break;
				}
				struct hm__jpos pos = {.seg = first, .off = off, .len = len};

				r->bytes += len;
				r->records++;
				r->last_seq = seq;
				if ((e = r->batch(r->ctx, b, &pos)) != 0) {
					snprintf(r->err, sizeof(r->err),
						 "%s at offset %" PRIu64 " (seq %" PRIu64 "): %s",
						 path, off, seq, hm_strerror(e));
					break;
				}
			}
			off += len;
			continue;
		}
		if (!last) {
			snprintf(r->err, sizeof(r->err), "%s at offset %" PRIu64 ": %s record",
				 path, off, c == 0 ? "truncated" : "corrupt");
			e = HM_ECORRUPT;
			break;
		}
		/* The torn tail of the last segment: never acknowledged, cut it off. */
		hm_log(HM_LOG_WARNING, "journal",
		       "%s: %s record at offset %" PRIu64 " (%" PRIu64
		       " bytes to the end): truncating the torn tail",
		       path, c == 0 ? "incomplete" : "corrupt", off, size - off);
		r->truncated += size - off;
		munmap((void *)map, size);
		map = NULL;
		if ((e = truncate_at(path, off)) != 0)
			snprintf(r->err, sizeof(r->err), "cannot truncate %s: %s", path,
				 strerror(-e));
		break;
	}
	if (map != NULL)
		munmap((void *)map, size);
	return e;
}

/*
 * Makes what recovery found durable: the records a killed origin wrote but never fsynced are in
 * the page cache, where recovery reads them, and from here on they count as durable (answered,
 * published). So every remaining segment is fdatasynced (a no-op for those already synced) and
 * the directory fsynced (a segment created or a snapshot renamed in place just before the
 * crash, a truncation or an unlink of recovery's own), before anything is served.
 */
static int sync_recovered(const char *dir, const uint64_t *firsts, int from, int n,
			  struct hm__jrecover *r)
{
	char path[PATH_MAX];
	int e = 0;

	for (int i = from; i < n && e == 0; i++) {
		hm__journal_path(dir, firsts[i], path, sizeof(path));
		if ((e = hm_fsync_path(path, true)) == -ENOENT)
			e = 0; /* an empty segment recovery removed */
	}
	if (e == 0 && (e = hm_fsync_path(dir, false)) != 0)
		snprintf(path, sizeof(path), "%s", dir);
	if (e != 0)
		snprintf(r->err, sizeof(r->err), "cannot sync %s: %s", path, strerror(-e));
	return e;
}

int hm__journal_recover(const char *dir, struct hm__jrecover *r)
{
	uint64_t *firsts, prev;
	int n, e = 0, i = 0;

	r->last_seq = r->after_seq;
	r->bytes = r->truncated = r->records = 0;
	r->err[0] = '\0';
	if ((n = hm__journal_list(dir, &firsts)) < 0) {
		snprintf(r->err, sizeof(r->err), "cannot list %s: %s", dir, strerror(-n));
		return n;
	}
	/* Segments wholly covered by the snapshot are skipped (compaction may not have deleted
	 * them yet): segment i is covered when segment i + 1 starts at or before after_seq + 1. */
	while (i + 1 < n && firsts[i + 1] <= r->after_seq + 1)
		i++;
	if (i < n && firsts[i] > r->after_seq + 1) {
		snprintf(r->err, sizeof(r->err),
			 "the journal starts at seq %" PRIu64
			 " but the snapshot ends at seq %" PRIu64,
			 firsts[i], r->after_seq);
		free(firsts);
		return HM_ECORRUPT;
	}
	prev = i < n ? firsts[i] - 1 : r->after_seq;
	for (int k = i; k < n && e == 0; k++)
		e = recover_segment(dir, firsts[k], k == n - 1, &prev, r);
	if (e == 0)
		e = sync_recovered(dir, firsts, i, n, r);
	free(firsts);
	if (e == 0 && prev > r->last_seq)
		r->last_seq = prev;
	return e;
}

int hm__journal_read(const char *dir, const struct hm__jpos *pos, uint64_t seq,
		     struct hm__batch **out)
{
	char path[PATH_MAX];
	char *rec;
	size_t len = 0;
	ssize_t got;
	int fd, e;

	hm__journal_path(dir, pos->seg, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	if ((rec = malloc(pos->len)) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	got = pread(fd, rec, pos->len, (off_t)pos->off);
	e = got < 0 ? -errno : 0;
	close(fd);
	if (e == 0 && (got != (ssize_t)pos->len ||
		       hm__jrec_check(rec, pos->len, HM__JREC_MAX_BODY, &len) != 1 ||
		       len != pos->len || hm__le64(rec + HM__JREC_HEAD) != seq))
		e = HM_ECORRUPT;
	if (e == 0 && (e = hm__batch_from_record(rec, len, out)) == 0)
		return 0;
	free(rec);
	return e;
}

int hm__journal_drop_covered(const char *dir, uint64_t seq)
{
	char path[PATH_MAX];
	uint64_t *firsts;
	int n, dropped = 0;

	if ((n = hm__journal_list(dir, &firsts)) < 0)
		return n;
	for (int i = 0; i + 1 < n && firsts[i + 1] <= seq + 1; i++) {
		hm__journal_path(dir, firsts[i], path, sizeof(path));
		if (unlink(path) == 0)
			dropped++;
	}
	free(firsts);
	return dropped;
}
