/*
 * The access log: one logfmt line per request in Heroku's field order, appended to a per-worker
 * buffer and written in batches (the worker decides when: see worker.c), never one write(2) per
 * request. Formatting is a pure function so tests can check every field.
 */
#ifndef HM_ROUTER_ACCESSLOG_H
#define HM_ROUTER_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "router/http-t.h"

/* Fields of one line. Strings are borrowed; NULL (or a negative number) means unknown: the
 * field is still written, empty. */
struct hm__router_logrec {
	const char *sock; /* "client" / "backend" (H27 / H18), or NULL: no sock field */
	bool error;	  /* at=error, else at=info */
	const char *code; /* "H12"; NULL: no code field */
	const char *desc; /* NULL: no desc field */
	const char *method;
	const char *path;
	size_t path_len;
	const char *host;
	size_t host_len;
	const char *request_id;
	size_t request_id_len;
	const char *fwd;
	size_t fwd_len;
	const char *dyno;
	int64_t connect_ms;
	int64_t service_ms;
	int status; /* 0: unknown */
	int64_t bytes;
};

#define HM__LOG_PATH_MAX 4096 /* bytes of path logged (escaped, the line holds at most twice) */
#define HM__LOG_FWD_MAX	 256
#define HM__LOG_LINE_MAX (2 * HM__LOG_PATH_MAX + 2 * HM__LOG_FWD_MAX + 1024)

/* The text fields of a request's line, as far as its head tells them. */
struct hm__router_logreq {
	const char *method; /* static, or NULL: no request line */
	uint16_t path_len;
	uint16_t fwd_len;
	uint8_t request_id_len;
	char request_id[201]; /* the client's valid X-Request-Id, else a new UUID */
	char path[HM__LOG_PATH_MAX];
	char fwd[HM__LOG_FWD_MAX]; /* the X-Forwarded-For the dyno sees */
};

/*
 * Fills lr from a request head m: with rq (the head checked by hm__router_req_check), the target
 * sent to the dyno, the client's X-Request-Id if valid and the X-Forwarded-For values joined
 * with the peer's address; without (a head refused or cut short), the target as far as parsed
 * and the peer alone. A new UUID is made when there is no valid X-Request-Id (one getrandom per
 * 256 of them). Everything is copied: lr outlives the head's buffer.
 */
void hm__router_log_capture(struct hm__router_logreq *lr, const struct hm__router_msg *m,
			    const struct hm__router_req *rq, const char *peer, size_t peer_len);

/* Formats r with a trailing newline into out (HM__LOG_LINE_MAX bytes). Returns the length. */
size_t hm__router_log_format(const struct hm__router_logrec *r, char *out);

/* A batching writer on one fd. */
struct hm__router_alog {
	int fd;	    /* owned unless it is 1 (stdout) */
	bool pipe;  /* write in pieces of at most PIPE_BUF, cut at line ends */
	char *path; /* owned; NULL: stdout */
	char *buf;  /* owned */
	size_t len, cap;
	uint64_t dropped; /* lines lost to write errors */
	uint64_t lines;
};

/* Opens path for appending ("-" or NULL: stdout) with a buffer of cap bytes (>= 2 lines).
 * Returns 0 or a negative errno. */
int hm__router_alog_open(struct hm__router_alog *l, const char *path, size_t cap);
/* Flushes, closes. */
void hm__router_alog_close(struct hm__router_alog *l);
/* Reopens the path (log rotation); stdout stays. Returns 0 or a negative errno (old fd kept). */
int hm__router_alog_reopen(struct hm__router_alog *l);

/* Formats and appends a line, flushing first if the buffer could not hold it. */
void hm__router_alog_append(struct hm__router_alog *l, const struct hm__router_logrec *r);
/* Writes what is buffered. Returns 0 or a negative errno (the buffered lines are dropped). */
int hm__router_alog_flush(struct hm__router_alog *l);

#endif
