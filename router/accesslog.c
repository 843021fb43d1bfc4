/*
 * Access-log lines and their batched writer (see accesslog.h).
 */
#include "router/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "router/http.h"
#include "router/rand.h"

static char *put(char *o, const char *s, size_t n)
{
	memcpy(o, s, n);
	return o + n;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static char *put_i64(char *o, int64_t v)
{
	char tmp[24];
	size_t n = 0;
	uint64_t u;

	if (v < 0) {
		*o++ = '-';
		u = (uint64_t)(-(v + 1)) + 1;
	} else {
		u = (uint64_t)v;
	}
	do {
		tmp[n++] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0);
	while (n > 0)
		*o++ = tmp[--n];
	return o;
}

/* Quoted value: '"' and '\' escaped, control bytes shown as '?', cut at max source bytes. */
static char *put_quoted(char *o, const char *s, size_t n, size_t max)
{
	*o++ = '"';
	if (s != NULL) {
		if (n > max)
			n = max;
		for (size_t i = 0; i < n; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c == '"' || c == '\\') {
				*o++ = '\\';
				*o++ = (char)c;
			} else if (c < 0x20 || c == 0x7f) {
				*o++ = '?';
			} else {
				*o++ = (char)c;
			}
		}
	}
	*o++ = '"';
	return o;
}

/* Bare value (already restricted to safe bytes by whoever validated it). */
static char *put_bare(char *o, const char *s, size_t n, size_t max)
{
	if (s == NULL)
		return o;
	if (n > max)
		n = max;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		*o++ = c <= 0x20 || c == '"' || c == 0x7f ? '?' : (char)c;
	}
	return o;
}

static char *put_ms(char *o, int64_t ms)
{
	if (ms < 0)
		return o;
	o = put_i64(o, ms);
	return PUT_LIT(o, "ms");
}

size_t hm__router_log_format(const struct hm__router_logrec *r, char *out)
{
	char *o = out;

	if (r->sock != NULL) {
		o = PUT_LIT(o, "sock=");
		o = put_bare(o, r->sock, strlen(r->sock), 16);
		*o++ = ' ';
	}
	o = r->error ? PUT_LIT(o, "at=error") : PUT_LIT(o, "at=info");
	if (r->code != NULL) {
		o = PUT_LIT(o, " code=");
		o = put_bare(o, r->code, strlen(r->code), 8);
	}
	if (r->desc != NULL) {
		o = PUT_LIT(o, " desc=");
		o = put_quoted(o, r->desc, strlen(r->desc), 128);
	}
	o = PUT_LIT(o, " method=");
	if (r->method != NULL)
		o = put_bare(o, r->method, strlen(r->method), 32);
	o = PUT_LIT(o, " path=");
	if (r->path != NULL)
		o = put_quoted(o, r->path, r->path_len, HM__LOG_PATH_MAX);
	o = PUT_LIT(o, " host=");
	o = put_bare(o, r->host, r->host_len, 260);
	o = PUT_LIT(o, " request_id=");
	o = put_bare(o, r->request_id, r->request_id_len, 200);
	o = PUT_LIT(o, " fwd=");
	if (r->fwd != NULL)
		o = put_quoted(o, r->fwd, r->fwd_len, HM__LOG_FWD_MAX);
	o = PUT_LIT(o, " dyno=");
	if (r->dyno != NULL)
		o = put_bare(o, r->dyno, strlen(r->dyno), 64);
	o = PUT_LIT(o, " connect=");
	o = put_ms(o, r->connect_ms);
	o = PUT_LIT(o, " service=");
	o = put_ms(o, r->service_ms);
	o = PUT_LIT(o, " status=");
	if (r->status > 0)
		o = put_i64(o, r->status);
	o = PUT_LIT(o, " bytes=");
	if (r->bytes >= 0)
		o = put_i64(o, r->bytes);
	o = PUT_LIT(o, " protocol=http\n");
	return (size_t)(o - out);
}

static int open_path(const char *path, int *fd, bool *pipe)
{
	struct stat st;
	int f = 1;

	if (path != NULL) {
		f = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (f < 0)
			return -errno;
	}
	*pipe = fstat(f, &st) == 0 && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
	*fd = f;
	return 0;
}

int hm__router_alog_open(struct hm__router_alog *l, const char *path, size_t cap)
{
	int r;

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	if (cap < 2 * HM__LOG_LINE_MAX)
		cap = 2 * HM__LOG_LINE_MAX;
	if (path != NULL && strcmp(path, "-") != 0 && (l->path = strdup(path)) == NULL)
		return -ENOMEM;
	l->buf = malloc(cap);
	if (l->buf == NULL) {
		free(l->path);
		return -ENOMEM;
	}
	l->cap = cap;
	r = open_path(l->path, &l->fd, &l->pipe);
	if (r != 0) {
		free(l->buf);
		free(l->path);
		l->buf = l->path = NULL;
	}
	return r;
}

void hm__router_alog_close(struct hm__router_alog *l)
{
	if (l->buf == NULL)
		return;
	hm__router_alog_flush(l);
	if (l->fd > 2)
		close(l->fd);
	free(l->buf);
	free(l->path);
	memset(l, 0, sizeof(*l));
	l->fd = -1;
}

int hm__router_alog_reopen(struct hm__router_alog *l)
{
	int fd, r;
	bool pipe;

	hm__router_alog_flush(l);
	if (l->path == NULL)
		return 0;
	r = open_path(l->path, &fd, &pipe);
	if (r != 0)
		return r;
	if (l->fd > 2)
		close(l->fd);
	l->fd = fd;
	l->pipe = pipe;
	return 0;
}

int hm__router_alog_flush(struct hm__router_alog *l)
{
	const char *p = l->buf, *end = l->buf + l->len;
	int r = 0;

	if (p == NULL)
		return 0;
	while (p < end) {
		size_t n = (size_t)(end - p);

		if (l->pipe && n > PIPE_BUF) {
			/* Cut after the last newline within PIPE_BUF: such writes are atomic, so
			 * lines from several workers sharing the pipe never interleave. A line
			 * longer than PIPE_BUF goes alone. */
			size_t k = PIPE_BUF;

			while (k > 0 && p[k - 1] != '\n')
				k--;
			if (k == 0) {
				const char *nl = memchr(p, '\n', n);

				k = nl != NULL ? (size_t)(nl - p) + 1 : n;
			}
			n = k;
		}
		r = hm_write_all(l->fd, p, n);
		if (r != 0)
			break;
		p += n;
	}
	for (; p < end; p++)
		l->dropped += *p == '\n';
	l->len = 0;
	return r;
}

void hm__router_alog_append(struct hm__router_alog *l, const struct hm__router_logrec *r)
{
	if (l->buf == NULL)
		return;
	if (l->cap - l->len < HM__LOG_LINE_MAX)
		hm__router_alog_flush(l);
	l->len += hm__router_log_format(r, l->buf + l->len);
	l->lines++;
}

void hm__router_log_capture(struct hm__router_logreq *lr, const struct hm__router_msg *m,
			    const struct hm__router_req *rq, const char *peer, size_t peer_len)
{
	const char *path = m->base + (rq != NULL ? rq->target_off : m->url_off);
	size_t n = rq != NULL ? rq->target_len : m->url_len, fl = 0;
	bool any = false;

	lr->method = NULL;
	if (m->url_len > 0 || m->line_done)
		lr->method = llhttp_method_name((llhttp_method_t)m->p.method);
	n = HM_MIN(n, (size_t)HM__LOG_PATH_MAX);
	if (n > 0)
		memcpy(lr->path, path, n);
	lr->path_len = (uint16_t)n;
	lr->request_id_len = 0;
	if (rq != NULL && rq->request_id >= 0) {
		const struct hm__router_hdr *h = &m->hdr[rq->request_id];
		size_t l = hm__router_trim(m->base + h->value_off, h->value_len);

		memcpy(lr->request_id, m->base + h->value_off, l);
		lr->request_id_len = (uint8_t)l;
	} else if (hm__router_uuid4(lr->request_id) == 0) {
		lr->request_id_len = HM__ROUTER_UUID_LEN;
	}
	for (uint16_t i = 0; rq != NULL && i < m->nhdr && fl < HM__LOG_FWD_MAX; i++) {
		const struct hm__router_hdr *h = &m->hdr[i];
		size_t l;

		if (h->id != HM__HDR_X_FORWARDED_FOR || h->drop)
			continue;
		l = hm__router_trim(m->base + h->value_off, h->value_len);
		if (l == 0)
			continue;
		if (any && fl + 2 <= HM__LOG_FWD_MAX) {
			memcpy(lr->fwd + fl, ", ", 2);
			fl += 2;
		}
		l = HM_MIN(l, HM__LOG_FWD_MAX - fl);
		memcpy(lr->fwd + fl, m->base + h->value_off, l);
		fl += l;
		any = true;
	}
	if (any && fl + 2 <= HM__LOG_FWD_MAX) {
		memcpy(lr->fwd + fl, ", ", 2);
		fl += 2;
	}
	n = HM_MIN(peer_len, HM__LOG_FWD_MAX - fl);
	memcpy(lr->fwd + fl, peer, n);
	lr->fwd_len = (uint16_t)(fl + n);
}
