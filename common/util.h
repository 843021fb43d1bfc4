/*
 * Small helpers used everywhere: clocks, randomness from the kernel, hex.
 */
#ifndef HM_COMMON_UTIL_H
#define HM_COMMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define HM_MIN(a, b)	 ((a) < (b) ? (a) : (b))
#define HM_MAX(a, b)	 ((a) > (b) ? (a) : (b))

/* Aborts with a message in every build: for broken invariants, never for bad input. */
#define hm_require(cond)                                                                           \
	do {                                                                                       \
		if (!(cond))                                                                       \
			hm__require_failed(#cond, __FILE__, __LINE__);                             \
	} while (0)
_Noreturn void hm__require_failed(const char *expr, const char *file, int line);

/* Milliseconds and nanoseconds of CLOCK_MONOTONIC; wall-clock milliseconds since the epoch. */
uint64_t hm_mono_ms(void);
uint64_t hm_mono_ns(void);
uint64_t hm_wall_ms(void);

/* Writes all n bytes to fd (a blocking fd), retrying short writes and EINTR. Returns 0 or a
 * negative errno. */
int hm_write_all(int fd, const void *buf, size_t n);

/* Opens path (a file or a directory) and fsyncs it, or fdatasyncs it if data_only. Returns 0 or
 * a negative errno (of the open or of the sync). */
int hm_fsync_path(const char *path, bool data_only);

/* Fills buf with n bytes from getrandom(2). Returns 0 or a negative errno. */
int hm_random_bytes(void *buf, size_t n);

/* Writes 2n lowercase hex digits and a NUL to out. */
void hm_hex(const void *data, size_t n, char *out);

/* The value of one hex digit (either case), or -1. */
int hm_hexval(char c);

/* Parses exactly 2n hex digits from s into out. Returns 0 or -EINVAL. */
int hm_unhex(const char *s, size_t slen, void *out, size_t n);

#endif
