/*
 * hm_log(): format into a stack buffer, then one write(2). No locks and no allocation, so it is
 * safe from any thread; a line longer than the buffer is cut and marked with "...".
 */
#include "common/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *log_ident = "hermod";
static atomic_int log_level = HM_LOG_INFO;
static atomic_int log_fd = 2;

static const char *const level_names[] = {
    [HM_LOG_ERR] = "err",   [HM_LOG_WARNING] = "warning", [HM_LOG_NOTICE] = "notice",
    [HM_LOG_INFO] = "info", [HM_LOG_DEBUG] = "debug",
};

void hm_log_set_ident(const char *ident)
{
	log_ident = ident;
}

void hm_log_set_level(enum hm_log_level level)
{
	atomic_store(&log_level, (int)level);
}

bool hm_log_enabled(enum hm_log_level level)
{
	return (int)level <= atomic_load_explicit(&log_level, memory_order_relaxed);
}

int hm_log_level_parse(const char *s, enum hm_log_level *out)
{
	for (int l = HM_LOG_ERR; l <= HM_LOG_DEBUG; l++) {
		if (strcmp(s, level_names[l]) == 0) {
			*out = (enum hm_log_level)l;
			return 0;
		}
	}
	return -EINVAL;
}

void hm_log_set_fd(int fd)
{
	atomic_store(&log_fd, fd);
}

void hm_log(enum hm_log_level level, const char *group, const char *fmt, ...)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	size_t n;
	int r, saved = errno;

	if (!hm_log_enabled(level))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	r = snprintf(line, sizeof(line),
		     "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld] %s %s: ", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		     ts.tv_nsec / 1000000, log_ident, (long)getpid(), group,
		     level >= HM_LOG_ERR && level <= HM_LOG_DEBUG ? level_names[level] : "?");
	n = r > 0 ? (size_t)r : 0;
	if (n < sizeof(line)) {
		va_start(ap, fmt);
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		va_end(ap);
		n += r > 0 ? (size_t)r : 0;
	}
	if (n >= sizeof(line) - 1) {
		n = sizeof(line) - 1;
		memcpy(line + n - 3, "...", 3);
	}
	line[n++] = '\n';
	if (write(atomic_load_explicit(&log_fd, memory_order_relaxed), line, n) < 0) {
		/* Nowhere left to report it. */
	}
	errno = saved;
}
