/*
 * Diagnostic logging: hm_log(level, group, fmt, ...), printf-checked, one line per call written
 * with a single write(2) to stderr (or the fd given to hm_log_set_fd), so lines from threads and
 * processes sharing the fd never interleave. Levels are syslog's; groups name the subsystem
 * ("edge", "origin", "router", "table"). Per-request access logs are not this: the router writes
 * those itself, batched.
 *
 * common/ and proto/ never log: they return errors and let the caller decide.
 */
#ifndef HM_COMMON_LOG_H
#define HM_COMMON_LOG_H

#include <stdbool.h>

enum hm_log_level {
	HM_LOG_ERR = 3,
	HM_LOG_WARNING = 4,
	HM_LOG_NOTICE = 5,
	HM_LOG_INFO = 6,
	HM_LOG_DEBUG = 7,
};

/* Program name shown in every line ("hermod-syncd"); borrowed, must outlive logging. */
void hm_log_set_ident(const char *ident);

/* Lines above this level are dropped. Default HM_LOG_INFO. */
void hm_log_set_level(enum hm_log_level level);
bool hm_log_enabled(enum hm_log_level level);

/* Parses "err", "warning", "notice", "info" or "debug". Returns 0 or -EINVAL. */
int hm_log_level_parse(const char *s, enum hm_log_level *out);

/* Where lines go; default 2 (stderr). The fd is borrowed. */
void hm_log_set_fd(int fd);

/* Writes one line: "2026-11-27T03:18:06.123Z hermod-syncd[42] edge info: message". */
void hm_log(enum hm_log_level level, const char *group, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
