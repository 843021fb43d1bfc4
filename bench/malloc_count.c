/*
 * malloc_count: an LD_PRELOAD library that counts heap calls, to check that a program does not
 * allocate per request in its steady state.
 *
 *   LD_PRELOAD=build/bench/malloc_count.so hermod-router ...
 *   kill -URG <pid>     # each process writes "malloc_count pid=P malloc=M calloc=C realloc=R
 *                       #  free=F" to $MALLOC_COUNT_OUT (default: stderr), one line
 *
 * The counters are per process (a forked worker starts from its parent's counts and goes on by
 * itself) and relaxed atomics, so the cost is a few instructions per call. Allocations made
 * while dlsym() resolves the real functions come from a small static arena.
 * bench/router_allocs.sh drives it against hermod-router.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *(*real_malloc)(size_t);
static void *(*real_calloc)(size_t, size_t);
static void *(*real_realloc)(void *, size_t);
static void (*real_free)(void *);
static int (*real_posix_memalign)(void **, size_t, size_t);

static atomic_ulong n_malloc, n_calloc, n_realloc, n_free, n_memalign;

/* For calloc() calls made by dlsym() itself before the real functions are known. */
static _Alignas(16) char arena[8192];
static size_t arena_used;

static int in_arena(const void *p)
{
	return (const char *)p >= arena && (const char *)p < arena + sizeof(arena);
}

static void *arena_alloc(size_t n)
{
	void *p;

	n = (n + 15) & ~(size_t)15;
	if (arena_used + n > sizeof(arena))
		return NULL;
	p = arena + arena_used;
	arena_used += n;
	return p;
}

static void report(int sig)
{
	char line[256];
	const char *out = getenv("MALLOC_COUNT_OUT");
	int fd = 2, n;

	(void)sig;
	if (out != NULL) {
		fd = open(out, O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (fd < 0)
			return;
	}
	n = snprintf(
	    line, sizeof(line),
	    "malloc_count pid=%d malloc=%lu calloc=%lu realloc=%lu memalign=%lu free=%lu\n",
	    (int)getpid(), atomic_load(&n_malloc), atomic_load(&n_calloc), atomic_load(&n_realloc),
	    atomic_load(&n_memalign), atomic_load(&n_free));
	if (n > 0 && write(fd, line, (size_t)n) < 0) {
		/* nothing to do */
	}
	if (fd != 2)
		close(fd);
}

static int resolving;

#define sym(fp, name)                                                                              \
	do {                                                                                       \
		void *p_ = dlsym(RTLD_NEXT, name);                                                 \
		memcpy((fp), &p_, sizeof(p_));                                                     \
	} while (0)

static void resolve(void)
{
	if (real_malloc != NULL || resolving)
		return;
	resolving = 1;
	/* ISO C has no object-to-function pointer conversion; POSIX guarantees the bytes match. */
	sym(&real_calloc, "calloc");
	sym(&real_realloc, "realloc");
	sym(&real_free, "free");
	sym(&real_posix_memalign, "posix_memalign");
	sym(&real_malloc, "malloc");
	resolving = 0;
}

__attribute__((constructor)) static void init(void)
{
	struct sigaction sa;

	resolve();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = report;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGURG, &sa, NULL);
}

void *malloc(size_t n)
{
	resolve();
	if (real_malloc == NULL)
		return arena_alloc(n);
	atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
	return real_malloc(n);
}

void *calloc(size_t a, size_t b)
{
	resolve();
	if (real_calloc == NULL)
		return arena_alloc(a * b); /* the arena is zeroed */
	atomic_fetch_add_explicit(&n_calloc, 1, memory_order_relaxed);
	return real_calloc(a, b);
}

void *realloc(void *p, size_t n)
{
	resolve();
	if (in_arena(p)) {
		void *q = malloc(n);

		if (q != NULL)
			memcpy(q, p, n);
		return q;
	}
	atomic_fetch_add_explicit(&n_realloc, 1, memory_order_relaxed);
	return real_realloc(p, n);
}

void free(void *p)
{
	if (p == NULL || in_arena(p))
		return;
	resolve();
	atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
	real_free(p);
}

int posix_memalign(void **out, size_t align, size_t n)
{
	resolve();
	atomic_fetch_add_explicit(&n_memalign, 1, memory_order_relaxed);
	return real_posix_memalign(out, align, n);
}

void *aligned_alloc(size_t align, size_t n)
{
	void *p = NULL;

	return posix_memalign(&p, align, n) == 0 ? p : NULL;
}

void *memalign(size_t align, size_t n)
{
	return aligned_alloc(align, n);
}
