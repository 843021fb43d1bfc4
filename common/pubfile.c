/*
 * Published files: the writer's lock, temporary names, the sweep of dead writers' files, the
 * install-and-retire step, the registry of readers' maps that a SIGBUS handler consults, and
 * the reader's follower (pubfile.h says why each exists).
 */
#include "common/pubfile.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/filesec.h"
#include "common/util.h"

#define REOPEN_EVERY_NS 50000000ull

int hm_pubfile_lock(const char *path)
{
	size_t len = strlen(path) + 8;
	char *p = malloc(len), why[160];
	int fd, e;

	if (p == NULL)
		return -ENOMEM;
	snprintf(p, len, "%s.lock", path);
	fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, HM_LOCK_MODE);
	free(p);
	if (fd < 0)
		return -errno;
	if ((e = hm_file_trusted(fd, why, sizeof(why))) != 0) {
		close(fd);
		return e;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		e = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return e;
	}
	return fd;
}

int hm_pubfile_writer_open(struct hm_pubfile_writer *pw, const char *path)
{
	int e;

	pw->path = NULL;
	pw->lock_fd = -1;
	if (path == NULL)
		return 0;
	if ((pw->path = strdup(path)) == NULL)
		return -ENOMEM;
	if ((e = hm_pubfile_lock(path)) < 0) {
		free(pw->path);
		pw->path = NULL;
		return e;
	}
	pw->lock_fd = e;
	/* Files of writers of this path that died before installing them: on a tmpfs, garbage
	 * is memory. */
	hm_pubfile_sweep(path);
	return access(path, F_OK) == 0 ? 1 : 0;
}

void hm_pubfile_writer_close(struct hm_pubfile_writer *pw)
{
	if (pw->lock_fd >= 0)
		close(pw->lock_fd);
	free(pw->path);
	pw->path = NULL;
	pw->lock_fd = -1;
}

char *hm_pubfile_tmp_path(const char *path)
{
	size_t len = strlen(path) + 40;
	char *p = malloc(len);
	uint32_t rnd = 0;

	if (p == NULL)
		return NULL;
	hm_random_bytes(&rnd, sizeof(rnd));
	snprintf(p, len, "%s.new.%ld.%08x", path, (long)getpid(), rnd);
	return p;
}

int hm_pubfile_create(const char *path, mode_t mode, uint64_t bytes, uint64_t reserve, char **tmp)
{
	char *name = hm_pubfile_tmp_path(path);
	int fd, e;

	if (name == NULL)
		return -ENOMEM;
	fd = open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0) {
		e = -errno;
		free(name);
		return e;
	}
	if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)bytes) != 0)
		e = -errno;
	else
		e = reserve > 0 ? -posix_fallocate(fd, 0, (off_t)reserve) : 0;
	if (e != 0) {
		close(fd);
		unlink(name);
		free(name);
		return e;
	}
	*tmp = name;
	return fd;
}

void hm_pubfile_sweep(const char *path)
{
	const char *slash = strrchr(path, '/'), *base = slash != NULL ? slash + 1 : path;
	char dir[4096], prefix[512];
	size_t plen, dlen = slash != NULL ? (size_t)(slash - path) : 0;
	struct dirent *de;
	DIR *d;

	if (dlen >= sizeof(dir))
		return;
	if (slash == NULL)
		strcpy(dir, ".");
	else if (dlen == 0)
		strcpy(dir, "/");
	else {
		memcpy(dir, path, dlen);
		dir[dlen] = '\0';
	}
	plen = (size_t)snprintf(prefix, sizeof(prefix), "%s.new.", base);
	if (plen >= sizeof(prefix) || (d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char full[4600];
		long pid;

		if (strncmp(de->d_name, prefix, plen) != 0)
			continue;
		pid = strtol(de->d_name + plen, NULL, 10);
		if (pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 &&
		    errno == ESRCH) {
			snprintf(full, sizeof(full), "%s/%s", dir, de->d_name);
			unlink(full);
		}
	}
	closedir(d);
}

int hm_pubfile_install(const char *tmp, const char *path, uint64_t magic, size_t pub_off)
{
	int old = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	size_t len = pub_off + sizeof(uint64_t);
	char why[160];
	struct stat st;

	if (rename(tmp, path) != 0) {
		int e = -errno;

		if (old >= 0)
			close(old);
		return e;
	}
	if (old < 0)
		return 0;
	if (hm_file_trusted(old, why, sizeof(why)) == 0 && fstat(old, &st) == 0 &&
	    st.st_size >= (off_t)len) {
		uint8_t *h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, old, 0);

		if (h != MAP_FAILED) {
			uint64_t m;

			memcpy(&m, h, sizeof(m));
			if (m == magic)
				atomic_fetch_or_explicit((_Atomic uint64_t *)(h + pub_off),
							 HM_PUBFILE_RETIRED, memory_order_release);
			munmap(h, len);
		}
	}
	close(old);
	return 0;
}

/* ---- Faults ---------------------------------------------------------------------------------- */

/*
 * The registry: written by guard_add and guard_del only, by the thread that reads the maps, so
 * never while one of its reads (the only place a fault comes from) is in progress; read by the
 * SIGBUS handler. A slot holds a pointer to a guard whose fields were set before it was listed.
 */
#define GUARD_SLOTS 64

static struct hm_pubfile_guard *volatile guards[GUARD_SLOTS];

int hm_pubfile_guard_add(struct hm_pubfile_guard *g)
{
	g->slot = -1;
	for (int i = 0; i < GUARD_SLOTS; i++) {
		if (guards[i] == NULL) {
			__atomic_store_n(&guards[i], g, __ATOMIC_RELEASE);
			g->slot = i;
			return 0;
		}
	}
	return -ENOSPC;
}

void hm_pubfile_guard_del(struct hm_pubfile_guard *g)
{
	if (g->slot >= 0)
		__atomic_store_n(&guards[g->slot], NULL, __ATOMIC_RELEASE);
	g->slot = -1;
}

void hm_pubfile_guard_zero(struct hm_pubfile_guard *g)
{
	if (g->bad)
		return;
	g->bad = 1;
	for (int i = 0; i < HM_PUBFILE_GUARD_RANGES; i++)
		if (g->range[i].bytes > 0)
			mmap(g->range[i].base, g->range[i].bytes, g->range[i].prot,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	if (g->faults != NULL)
		__atomic_add_fetch(g->faults, 1, __ATOMIC_RELAXED);
}

static bool in_range(const void *a, const void *base, size_t n)
{
	return base != NULL && (const char *)a >= (const char *)base &&
	       (const char *)a < (const char *)base + n;
}

bool hm_pubfile_fault(const void *addr)
{
	for (int i = 0; i < GUARD_SLOTS; i++) {
		struct hm_pubfile_guard *g = __atomic_load_n(&guards[i], __ATOMIC_ACQUIRE);

		if (g == NULL)
			continue;
		for (int k = 0; k < HM_PUBFILE_GUARD_RANGES; k++) {
			if (in_range(addr, g->range[k].base, g->range[k].bytes)) {
				hm_pubfile_guard_zero(g);
				return true;
			}
		}
	}
	return false;
}

/* ---- Follower -------------------------------------------------------------------------------- */

static const volatile int never_bad;

int hm_pubfile_follower_init(struct hm_pubfile_follower *f, const char *path,
			     const struct hm_pubfile_ops *ops)
{
	memset(f, 0, sizeof(*f));
	if ((f->path = strdup(path)) == NULL)
		return -ENOMEM;
	f->ops = ops;
	f->bad = &never_bad;
	return 0;
}

static void follower_set(struct hm_pubfile_follower *f, const struct hm_pubfile_mapped *m)
{
	if (f->cur != NULL)
		f->ops->unref(f->cur);
	f->cur = m != NULL ? m->map : NULL;
	f->pub = m != NULL ? m->pub : NULL;
	f->guard = m != NULL ? m->guard : NULL;
	f->bad = f->guard != NULL ? &f->guard->bad : &never_bad;
	f->dev = m != NULL ? m->st.st_dev : 0;
	f->ino = m != NULL ? m->st.st_ino : 0;
	f->size = m != NULL ? m->st.st_size : 0;
}

void hm_pubfile_follower_fini(struct hm_pubfile_follower *f)
{
	follower_set(f, NULL);
	free(f->path);
	f->path = NULL;
}

/* Opens the path if it holds another file than the current map, or the current map went bad:
 * 1 if switched, 0, or error. */
static int reopen(struct hm_pubfile_follower *f)
{
	struct hm_pubfile_mapped m = {0};
	int e = f->ops->open(f->path, &m);

	f->last_error = e;
	if (e != 0)
		return e;
	if (f->cur != NULL && !*f->bad && f->dev == m.st.st_dev && f->ino == m.st.st_ino) {
		f->ops->unref(m.map);
		return 0;
	}
	follower_set(f, &m);
	f->next_try_ns = 0;
	return 1;
}

static uint64_t coarse_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void *hm__pubfile_follower_reopen(struct hm_pubfile_follower *f)
{
	if (f->next_try_ns == 0 || coarse_ns() >= f->next_try_ns) {
		if (reopen(f) != 1)
			f->next_try_ns = coarse_ns() + REOPEN_EVERY_NS;
	}
	return f->cur != NULL && !*f->bad ? f->cur : NULL;
}

int hm_pubfile_follower_check(struct hm_pubfile_follower *f)
{
	struct stat st;
	bool same;

	if (stat(f->path, &st) != 0)
		return errno == ENOENT ? 0 : -errno;
	same = f->cur != NULL && f->dev == st.st_dev && f->ino == st.st_ino;
	/* Truncated in place: let go of the pages before a read faults on them. */
	if (same && st.st_size < f->size && f->guard != NULL)
		hm_pubfile_guard_zero(f->guard);
	if (same && !*f->bad &&
	    !(atomic_load_explicit(f->pub, memory_order_relaxed) & HM_PUBFILE_RETIRED))
		return 0;
	return reopen(f);
}
