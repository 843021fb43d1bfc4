/*
 * Tests common/pubfile.c: the published-file life-cycle the routing table and the certificate
 * store share (lock, temporary file, install and retire, follow). The two stores' own tests
 * cover it through them; these pin what each step promises on its own, above all the cases
 * where a file is not ours.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "common/pubfile.h"
#include "tests/unit/common/sigbus.h"
#include "tests/unit/hm_check.h"

#define MAGIC	0x4c49464255424d48ull /* "HMBUPFIL" */
#define PUB_OFF 64
#define BYTES	4096

static char dir[64];

static void mkdir_tmp(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hm-pubfile-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void in_dir(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

/* A published file at path (through create and install), its publish word = v. */
static void publish(const char *path, uint64_t magic, uint64_t v)
{
	char *tmp = NULL;
	int fd = hm_pubfile_create(path, 0640, BYTES, BYTES, &tmp);
	uint8_t hdr[PUB_OFF + 8] = {0};

	ck_assert_int_ge(fd, 0);
	memcpy(hdr, &magic, 8);
	memcpy(hdr + PUB_OFF, &v, 8);
	ck_assert_int_eq(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);
	ck_assert_int_eq(hm_pubfile_install(tmp, path, MAGIC, PUB_OFF), 0);
	free(tmp);
}

static uint64_t pub_of_fd(int fd)
{
	uint64_t v = 0;

	ck_assert_int_eq(pread(fd, &v, 8, PUB_OFF), 8);
	return v;
}

START_TEST(lock_is_exclusive_and_trusted)
{
	char path[128], lock[160], other[160];
	int a, b;

	mkdir_tmp();
	in_dir(path, sizeof(path), "f");
	snprintf(lock, sizeof(lock), "%s.lock", path);
	a = hm_pubfile_lock(path);
	ck_assert_int_ge(a, 0);
	ck_assert_int_eq(hm_pubfile_lock(path), -EBUSY);
	close(a);
	b = hm_pubfile_lock(path);
	ck_assert_int_ge(b, 0);
	close(b);
	/* A lock file that others may write could be held by them for good. */
	ck_assert_int_eq(chmod(lock, 0666), 0);
	ck_assert_int_eq(hm_pubfile_lock(path), HM_EUNTRUSTED);
	ck_assert_int_eq(chmod(lock, 0600), 0);
	if (geteuid() == 0) {
		ck_assert_int_eq(chown(lock, 65534, 65534), 0);
		ck_assert_int_eq(hm_pubfile_lock(path), HM_EUNTRUSTED);
	}
	/* A symbolic link at PATH.lock is not followed. */
	unlink(lock);
	in_dir(other, sizeof(other), "elsewhere");
	ck_assert_int_eq(symlink(other, lock), 0);
	ck_assert_int_eq(hm_pubfile_lock(path), -ELOOP);
	ck_assert_int_eq(access(other, F_OK), -1);
	unlink(lock);
	rmdir(dir);
}
END_TEST

START_TEST(create_sets_mode_size_and_blocks)
{
	char path[128], prefix[160];
	char *tmp = NULL;
	struct stat st;
	mode_t old = umask(0077);
	int fd;

	mkdir_tmp();
	in_dir(path, sizeof(path), "f");
	fd = hm_pubfile_create(path, 0640, 1 << 20, 1 << 20, &tmp);
	umask(old);
	ck_assert_int_ge(fd, 0);
	snprintf(prefix, sizeof(prefix), "%s.new.%ld.", path, (long)getpid());
	ck_assert_int_eq(strncmp(tmp, prefix, strlen(prefix)), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0640); /* the caller's mode, not the umask's */
	ck_assert_int_eq(st.st_size, 1 << 20);
	ck_assert_int_ge((long long)st.st_blocks * 512, 1 << 20); /* not sparse */
	close(fd);
	unlink(tmp);
	free(tmp);
	/* Only what is asked for is reserved up front. */
	fd = hm_pubfile_create(path, 0600, 1 << 20, 4096, &tmp);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_int_eq(st.st_size, 1 << 20);
	ck_assert_int_lt((long long)st.st_blocks * 512, 1 << 20);
	close(fd);
	unlink(tmp);
	free(tmp);
	/* A directory that is not there: an error and nothing to free. */
	tmp = NULL;
	ck_assert_int_eq(hm_pubfile_create("/nonexistent-hm/f", 0600, 4096, 4096, &tmp), -ENOENT);
	ck_assert_ptr_null(tmp);
	rmdir(dir);
}
END_TEST

START_TEST(install_retires_only_our_own_file)
{
	char path[128];
	int old;

	mkdir_tmp();
	in_dir(path, sizeof(path), "f");
	publish(path, MAGIC, 7);
	old = open(path, O_RDONLY);
	ck_assert_int_ge(old, 0);
	publish(path, MAGIC, 1);
	ck_assert_uint_eq(pub_of_fd(old), 7 | HM_PUBFILE_RETIRED);
	close(old);
	/* Another format's file at the path is replaced, not written to. */
	publish(path, MAGIC ^ 1, 5);
	old = open(path, O_RDONLY);
	publish(path, MAGIC, 1);
	ck_assert_uint_eq(pub_of_fd(old), 5);
	close(old);
	/* Nor is a file we would not trust (others may write it: someone else's to change). */
	old = open(path, O_RDONLY);
	ck_assert_int_eq(chmod(path, 0666), 0);
	publish(path, MAGIC, 1);
	ck_assert_uint_eq(pub_of_fd(old), 1);
	close(old);
	if (geteuid() == 0) {
		old = open(path, O_RDONLY);
		ck_assert_int_eq(chown(path, 65534, 65534), 0);
		publish(path, MAGIC, 1);
		ck_assert_uint_eq(pub_of_fd(old), 1);
		close(old);
	}
	unlink(path);
	rmdir(dir);
}
END_TEST

/* A toy map for the follower: the file's header mapped, guarded, and counters. */
struct toy {
	uint8_t *base;
	struct hm_pubfile_guard guard;
	int refs;
};

static int toy_opens, toy_frees;
static volatile uint64_t toy_bad; /* the toy maps' fault counter */

static int toy_open(const char *path, struct hm_pubfile_mapped *out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct toy *t;
	uint64_t magic = 0;

	toy_opens++;
	if (fd < 0)
		return -errno;
	if (fstat(fd, &out->st) != 0 || out->st.st_size < BYTES || pread(fd, &magic, 8, 0) != 8 ||
	    magic != MAGIC) {
		close(fd);
		return -EUCLEAN;
	}
	t = calloc(1, sizeof(*t));
	t->base = mmap(NULL, BYTES, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	ck_assert_ptr_ne(t->base, MAP_FAILED);
	t->refs = 1;
	t->guard.range[0].base = t->base;
	t->guard.range[0].bytes = BYTES;
	t->guard.range[0].prot = PROT_READ;
	t->guard.faults = &toy_bad;
	ck_assert_int_eq(hm_pubfile_guard_add(&t->guard), 0);
	out->map = t;
	out->pub = (const _Atomic uint64_t *)(t->base + PUB_OFF);
	out->guard = &t->guard;
	return 0;
}

static void toy_unref(void *m)
{
	struct toy *t = m;

	if (--t->refs == 0) {
		hm_pubfile_guard_del(&t->guard);
		munmap(t->base, BYTES);
		free(t);
		toy_frees++;
	}
}

static const struct hm_pubfile_ops toy_ops = {toy_open, toy_unref};

START_TEST(follower_follows_replacements_and_bad_maps)
{
	struct hm_pubfile_follower f;
	char path[128];
	struct toy *a, *b;
	int fd;

	mkdir_tmp();
	in_dir(path, sizeof(path), "f");
	ck_assert_int_eq(hm_pubfile_follower_init(&f, path, &toy_ops), 0);
	ck_assert_ptr_null(hm_pubfile_follower_map(&f)); /* nothing there yet */
	ck_assert_int_eq(f.last_error, -ENOENT);
	publish(path, MAGIC, 1);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), 1);
	a = hm_pubfile_follower_map(&f);
	ck_assert_ptr_nonnull(a);
	/* Nothing changed: no syscall, the same map. */
	toy_opens = 0;
	ck_assert_ptr_eq(hm_pubfile_follower_map(&f), a);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), 0);
	ck_assert_int_eq(toy_opens, 0);
	/* Replaced and retired: the next call maps the new file and drops the old one. */
	publish(path, MAGIC, 1);
	b = hm_pubfile_follower_map(&f);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(b, a);
	ck_assert_int_eq(toy_frees, 1);
	/* Garbage installed over it: the retired map stays the last good one. */
	publish(path, MAGIC ^ 1, 1);
	ck_assert_ptr_eq(hm_pubfile_follower_map(&f), b);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), -EUCLEAN);
	ck_assert_ptr_eq(hm_pubfile_follower_map(&f), b);
	publish(path, MAGIC, 1);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), 1);
	a = hm_pubfile_follower_map(&f);
	ck_assert_ptr_ne(a, b);
	/* Truncated in place: check sees it before a read faults, and the map is bad: none. */
	toy_bad = 0;
	ck_assert_int_eq(truncate(path, 100), 0);
	ck_assert_int_lt(hm_pubfile_follower_check(&f), 0);
	ck_assert_int_eq(toy_bad, 1);
	ck_assert_int_eq(a->guard.bad, 1);
	ck_assert_int_eq(a->base[0], 0); /* zero pages, not a fault */
	ck_assert_ptr_null(hm_pubfile_follower_map(&f));
	/* The same file written back in place is valid again, and mapped afresh. */
	fd = open(path, O_RDWR);
	ck_assert_int_eq(ftruncate(fd, BYTES), 0);
	{
		uint8_t hdr[PUB_OFF + 8] = {0};
		uint64_t magic = MAGIC, v = 2;

		memcpy(hdr, &magic, 8);
		memcpy(hdr + PUB_OFF, &v, 8);
		ck_assert_int_eq(pwrite(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	}
	close(fd);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), 1);
	b = hm_pubfile_follower_map(&f);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_ne(b, a);
	ck_assert_int_eq(hm_pubfile_follower_check(&f), 0);
	hm_pubfile_follower_fini(&f);
	ck_assert_int_eq(toy_frees, 4); /* a, b and the two after them */
	unlink(path);
	rmdir(dir);
}
END_TEST

/* ---- the fault registry: one for every kind of published file ---- */

/* A file of `pages` pages mapped at *base (shared, prot), guarded by g counting into faults. */
static void guarded_map(const char *path, int pages, int prot, struct hm_pubfile_guard *g,
			volatile uint64_t *faults, uint8_t **base)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)pages * BYTES), 0);
	ck_assert_int_eq(pwrite(fd, "x", 1, 0), 1);
	*base = mmap(NULL, (size_t)pages * BYTES, prot, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(*base, MAP_FAILED);
	close(fd);
	memset(g, 0, sizeof(*g));
	g->range[0].base = *base;
	g->range[0].bytes = (size_t)pages * BYTES;
	g->range[0].prot = prot;
	g->faults = faults;
	ck_assert_int_eq(hm_pubfile_guard_add(g), 0);
}

START_TEST(fault_registry_guards_every_kind)
{
	static volatile uint64_t faults_a, faults_b;
	struct sigaction old;
	struct hm_pubfile_guard ga, gb, many[80];
	char pa[128], pb[128];
	uint8_t *a, *b;
	volatile uint8_t sink;
	int added = 0;

	mkdir_tmp();
	in_dir(pa, sizeof(pa), "a");
	in_dir(pb, sizeof(pb), "b");
	ck_assert_int_eq(hm_test_catch_sigbus(&old), 0);
	guarded_map(pa, 2, PROT_READ, &ga, &faults_a, &a);
	guarded_map(pb, 2, PROT_READ | PROT_WRITE, &gb, &faults_b, &b);

	/* b truncated in place: its second page faults; the read completes on zero pages, b alone
	 * is bad and counted in its own counter, and its writable range stays writable. */
	ck_assert_int_eq(truncate(pb, BYTES), 0);
	sink = b[BYTES + 7];
	ck_assert_int_eq(sink, 0);
	ck_assert_int_eq(gb.bad, 1);
	ck_assert_int_eq(b[0], 0); /* the whole map, not only the page that faulted */
	b[5] = 1;
	ck_assert_uint_eq(faults_b, 1);
	ck_assert_uint_eq(faults_a, 0);
	ck_assert_int_eq(ga.bad, 0);
	ck_assert_int_eq(a[0], 'x');

	/* An address in no guarded range is not the registry's; nor is a guard taken out. */
	ck_assert(!hm_pubfile_fault((const void *)&added));
	hm_pubfile_guard_del(&ga);
	ck_assert(!hm_pubfile_fault(a));
	ck_assert_int_eq(ga.bad, 0);
	hm_pubfile_guard_del(&gb);

	/* A full registry says so, and the guard stays out of it (deleting it is harmless). */
	memset(many, 0, sizeof(many));
	for (int i = 0; i < 80; i++) {
		int e = hm_pubfile_guard_add(&many[i]);

		if (e == 0)
			added++;
		else {
			ck_assert_int_eq(e, -ENOSPC);
			ck_assert_int_eq(many[i].slot, -1);
		}
	}
	ck_assert_int_le(added, 64); /* others of this process may hold slots */
	ck_assert_int_gt(added, 0);
	for (int i = 0; i < 80; i++)
		hm_pubfile_guard_del(&many[i]);
	ck_assert_int_eq(hm_pubfile_guard_add(&ga), 0);
	hm_pubfile_guard_del(&ga);

	munmap(a, 2 * BYTES);
	munmap(b, 2 * BYTES);
	unlink(pa);
	unlink(pb);
	rmdir(dir);
	sigaction(SIGBUS, &old, NULL);
}
END_TEST

/* The writer's prologue: the path copied, the lock held (a second writer: -EBUSY), dead
 * writers' files swept, and whether a file is there to resume. */
START_TEST(writer_open_locks_sweeps_and_says_what_is_there)
{
	struct hm_pubfile_writer w1, w2;
	char path[128], dead[160];
	int fd;

	mkdir_tmp();
	in_dir(path, sizeof(path), "w");
	/* A temporary file of a writer that died (pid 2^22 + 1 is above pid_max's default). */
	snprintf(dead, sizeof(dead), "%s.new.%d.0000abcd", path, (1 << 22) + 1);
	fd = open(dead, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(hm_pubfile_writer_open(&w1, path), 0); /* nothing at path */
	ck_assert_str_eq(w1.path, path);
	ck_assert_int_ge(w1.lock_fd, 0);
	ck_assert_int_eq(access(dead, F_OK), -1);
	ck_assert_int_eq(hm_pubfile_writer_open(&w2, path), -EBUSY);
	ck_assert_ptr_null(w2.path);
	ck_assert_int_eq(w2.lock_fd, -1);
	hm_pubfile_writer_close(&w2); /* nothing held: harmless */
	publish(path, MAGIC, 1);
	hm_pubfile_writer_close(&w1);
	ck_assert_ptr_null(w1.path);
	ck_assert_int_eq(hm_pubfile_writer_open(&w1, path), 1); /* a file to resume */
	hm_pubfile_writer_close(&w1);
	/* Private memory: nothing to hold. */
	ck_assert_int_eq(hm_pubfile_writer_open(&w1, NULL), 0);
	ck_assert_ptr_null(w1.path);
	ck_assert_int_eq(w1.lock_fd, -1);
	hm_pubfile_writer_close(&w1);
	unlink(path);
	in_dir(dead, sizeof(dead), "w.lock");
	unlink(dead);
	rmdir(dir);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("pubfile");
	TCase *tc = tcase_create("pubfile");

	tcase_add_test(tc, lock_is_exclusive_and_trusted);
	tcase_add_test(tc, create_sets_mode_size_and_blocks);
	tcase_add_test(tc, install_retires_only_our_own_file);
	tcase_add_test(tc, follower_follows_replacements_and_bad_maps);
	tcase_add_test(tc, fault_registry_guards_every_kind);
	tcase_add_test(tc, writer_open_locks_sweeps_and_says_what_is_there);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
