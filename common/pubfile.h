/*
 * Files that one process publishes and many processes map: the life-cycle the node's
 * certificate store uses (docs/tls.md, section 2), the one docs/table.md describes for the
 * routing table. A writer holds an flock on PATH.lock, builds a new file under a temporary name
 * next to PATH, installs it with rename(2) and then sets a RETIRED bit in the old file's
 * publish word; readers follow the path: one atomic load of their file's publish word while
 * nothing changed, a re-open when it is retired, and (a stat(2) about once a second) a re-open
 * when the path's inode changed under them (a writer that died before retiring).
 *
 * A file truncated in place (same inode) leaves its readers' mappings pointing past its end,
 * and a read there raises SIGBUS. Every reader's map of every such file is listed in one
 * registry of guarded ranges (hm_pubfile_guard); the process's SIGBUS handler hands the address
 * to hm_pubfile_fault(), which replaces the map it is in with zero pages, so that the read
 * completes and the caller's validation fails instead of the process dying.
 *
 * The file format is the caller's, except two things every such file has: a 64-bit magic at
 * offset 0 and the publish word (version in bits 0..62, RETIRED in bit 63) at a fixed offset.
 *
 * Threads: a follower belongs to one thread at a time; the writer functions are thread-safe.
 * Guards are added and removed by the thread that reads their maps (the registry is one per
 * process: a process whose several threads map such files serialises that themselves).
 */
#ifndef HM_COMMON_PUBFILE_H
#define HM_COMMON_PUBFILE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#define HM_PUBFILE_RETIRED    (1ull << 63)
#define HM_PUBFILE_VERSION(p) ((p) & ~HM_PUBFILE_RETIRED)

/* ---- Writer side ---- */

/*
 * Takes the exclusive lock of path: PATH.lock, created mode HM_LOCK_MODE, never followed if it
 * is a symbolic link. Returns the lock's descriptor (close it to release; it dies with the
 * process), -EBUSY if another process holds it, HM_EUNTRUSTED if the lock file is not one this
 * process may trust (common/filesec.h: another user's lock file could be held by its owner for
 * good), or a negative errno.
 */
int hm_pubfile_lock(const char *path);

/* What a writer of a published file holds for its whole life. */
struct hm_pubfile_writer {
	char *path;  /* owned; NULL: private memory (no file, no lock) */
	int lock_fd; /* hm_pubfile_lock()'s descriptor, or -1 */
};

/*
 * What every writer of path does before it creates or resumes its file: copies path, takes its
 * lock (hm_pubfile_lock) and removes the temporary files its dead predecessors left
 * (hm_pubfile_sweep). path NULL (private memory): nothing to hold, *pw is { NULL, -1 }.
 * Returns 1 if a file is at path now (one the caller may resume), 0 if none (or path is NULL),
 * or a negative errno (hm_pubfile_lock's, or -ENOMEM) with nothing held.
 */
int hm_pubfile_writer_open(struct hm_pubfile_writer *pw, const char *path);

/* Releases the lock and the path (the file stays for its readers). No-op on { NULL, -1 }. */
void hm_pubfile_writer_close(struct hm_pubfile_writer *pw);

/* A fresh temporary name next to path, "PATH.new.<pid>.<random>" (malloc'd; NULL: no memory). */
char *hm_pubfile_tmp_path(const char *path);

/*
 * Creates a new file for path under a fresh temporary name (hm_pubfile_tmp_path), mode `mode`
 * whatever the umask, `bytes` long, of which the first `reserve` bytes get their blocks now
 * (posix_fallocate: a full file system fails here with -ENOSPC rather than with SIGBUS when a
 * mapping is first written). Returns the descriptor (read-write) and the name in *tmp
 * (malloc'd; the caller installs or unlinks the file and frees the name), or a negative errno
 * with nothing left behind.
 */
int hm_pubfile_create(const char *path, mode_t mode, uint64_t bytes, uint64_t reserve, char **tmp);

/* Removes the temporary files of writers of path that died before installing them (their pid
 * is gone). Call with the lock held: no other writer of path runs then. */
void hm_pubfile_sweep(const char *path);

/*
 * Renames tmp over path, then retires the file that was at path: if it starts with magic, its
 * publish word at pub_off gets HM_PUBFILE_RETIRED (release), so its readers re-open the path.
 * An old file this process does not trust (common/filesec.h; a file someone else planted
 * there) is replaced, never written to. Returns 0 or the negative errno of the rename (nothing
 * changed).
 */
int hm_pubfile_install(const char *tmp, const char *path, uint64_t magic, size_t pub_off);

/* ---- Faults: a file truncated under its readers' maps ---- */

#define HM_PUBFILE_GUARD_RANGES 2

/*
 * One map of a published file, as the fault registry knows it: up to two mapped ranges (a
 * range with bytes 0 is unused) with the protection each was mapped with, and the map's bad
 * flag. Embedded in the caller's map object; the caller fills range[] and faults, then calls
 * hm_pubfile_guard_add().
 */
struct hm_pubfile_guard {
	struct {
		void *base;
		size_t bytes;
		int prot; /* PROT_READ, or PROT_READ | PROT_WRITE: what the zero pages get */
	} range[HM_PUBFILE_GUARD_RANGES];
	volatile uint64_t *faults; /* borrowed (the caller's static counter): +1 when bad */
	volatile int bad;	   /* set once the ranges are zero pages; never cleared */
	int slot;		   /* in the registry, or -1 */
};

/*
 * Lists g in the process's registry, so that a fault in its ranges is survived. Returns 0, or
 * -ENOSPC when the registry (64 maps) is full: g then stays unguarded (a fault in it kills the
 * process, as it would without the registry) and hm_pubfile_guard_del() is still safe.
 */
int hm_pubfile_guard_add(struct hm_pubfile_guard *g);

/* Takes g out of the registry (before its ranges are unmapped). */
void hm_pubfile_guard_del(struct hm_pubfile_guard *g);

/*
 * Makes g bad: its ranges become anonymous zero pages (same addresses, same protection), its
 * bad flag is set and *faults counted. Reads of the map then see zeros and fail their
 * validation (the caller checks g->bad after a read). Async-signal-safe; a second call is a
 * no-op.
 */
void hm_pubfile_guard_zero(struct hm_pubfile_guard *g);

/*
 * For the process's SIGBUS handler (async-signal-safe): if addr lies in a guarded range, that
 * map's file was truncated under it: hm_pubfile_guard_zero() on it, so the faulting read
 * completes. Returns false if addr is in no guarded range (a real crash: the handler should
 * restore the default action and raise the signal again).
 */
bool hm_pubfile_fault(const void *addr);

/* ---- Reader side ---- */

/* What an open callback hands its follower about the file it opened and mapped. */
struct hm_pubfile_mapped {
	void *map; /* the caller's map object: one reference, now the follower's */
	const _Atomic uint64_t *pub;	/* its publish word */
	struct hm_pubfile_guard *guard; /* NULL, or the map's guard (registered or not): the
					 * follower makes it bad when it finds the file shorter
					 * than the map, and maps the path again once it is */
	struct stat st;			/* the file's fstat */
};

/*
 * What a follower calls (an ops table, one per kind of file, static):
 *  open    opens the file at path and maps it if it is acceptable and valid; fills *out.
 *          Returns 0 or a negative error.
 *  unref   drops the follower's reference to a map made by open.
 */
struct hm_pubfile_ops {
	int (*open)(const char *path, struct hm_pubfile_mapped *out);
	void (*unref)(void *map);
};

struct hm_pubfile_follower {
	char *path;			/* owned */
	void *cur;			/* the current map (the caller's type), or NULL */
	const _Atomic uint64_t *pub;	/* cur's publish word */
	struct hm_pubfile_guard *guard; /* cur's guard, or NULL */
	const volatile int *bad;	/* cur's bad flag (a constant 0 if it has no guard) */
	dev_t dev;			/* cur's file, and its size when it was mapped */
	ino_t ino;
	off_t size;
	uint64_t next_try_ns;		  /* when to try the path again after a failure */
	int last_error;			  /* of the last failed open, 0 if none */
	const struct hm_pubfile_ops *ops; /* borrowed */
};

/* Follows path (copied) with ops (borrowed: static). The file need not exist yet. Returns 0 or
 * -ENOMEM. */
int hm_pubfile_follower_init(struct hm_pubfile_follower *f, const char *path,
			     const struct hm_pubfile_ops *ops);

/* Drops the current map. */
void hm_pubfile_follower_fini(struct hm_pubfile_follower *f);

/* The slow path of hm_pubfile_follower_map(). */
void *hm__pubfile_follower_reopen(struct hm_pubfile_follower *f);

/*
 * The current map (borrowed: valid until the next call on f), or NULL if no acceptable file
 * exists at the path or the current map went bad. One atomic load while the file is not
 * retired; when it is (or there is none, or it went bad) the path is opened again at once, and
 * after a failure at most every 50 ms, so no syscall is made per call. Until a replacement
 * opens, a retired map stays the last good one; a bad one is none, and any valid file at the
 * path replaces it, the same file written back in place included.
 */
static inline void *hm_pubfile_follower_map(struct hm_pubfile_follower *f)
{
	if (f->cur != NULL && !*f->bad &&
	    !(atomic_load_explicit(f->pub, memory_order_relaxed) & HM_PUBFILE_RETIRED))
		return f->cur;
	return hm__pubfile_follower_reopen(f);
}

/*
 * Compares the path with the current map by stat(2): maps a file that appeared, re-maps one
 * whose inode changed or that was retired or went bad, and makes the current map bad
 * (hm_pubfile_guard_zero) when its file is now shorter than the map, before a read faults. Call
 * about once a second. Returns 1 if the current map changed, 0 if not, or the negative error of
 * opening the file at the path (the current map, if any, stays).
 */
int hm_pubfile_follower_check(struct hm_pubfile_follower *f);

#endif
