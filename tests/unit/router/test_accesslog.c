/*
 * Tests router/accesslog.c: Heroku's field order, empty unknown fields, the sock= prefix,
 * escaping, truncation, and the batching writer (one write for many lines, lines intact).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "router/accesslog.h"
#include "router/http.h"
#include "tests/unit/hm_check.h"

/* Allocation for test data: failing it ends the test. */
static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

static char line[HM__LOG_LINE_MAX];

static const char *fmt(const struct hm__router_logrec *r)
{
	size_t n = hm__router_log_format(r, line);

	ck_assert_uint_lt(n, sizeof(line));
	line[n] = '\0';
	return line;
}

START_TEST(success_line)
{
	struct hm__router_logrec r = {
	    .method = "GET",
	    .path = "/a?b=1",
	    .path_len = 6,
	    .host = "a.example.com",
	    .host_len = 13,
	    .request_id = "8601b555-6a76-4f2d-a2c8-5f4ff9f3e0a5",
	    .request_id_len = 36,
	    .fwd = "1.2.3.4",
	    .fwd_len = 7,
	    .dyno = "web.1",
	    .connect_ms = 1,
	    .service_ms = 4,
	    .status = 200,
	    .bytes = 13,
	};

	ck_assert_str_eq(fmt(&r), "at=info method=GET path=\"/a?b=1\" host=a.example.com "
				  "request_id=8601b555-6a76-4f2d-a2c8-5f4ff9f3e0a5 fwd=\"1.2.3.4\" "
				  "dyno=web.1 connect=1ms service=4ms status=200 bytes=13 "
				  "protocol=http\n");
}
END_TEST

START_TEST(error_lines)
{
	struct hm__router_logrec r = {
	    .error = true,
	    .code = "H14",
	    .desc = "No web processes running",
	    .method = "GET",
	    .path = "/",
	    .path_len = 1,
	    .host = "h.test",
	    .host_len = 6,
	    .request_id = "rid-0123456789abcdefghij",
	    .request_id_len = 24,
	    .fwd = "10.0.0.1",
	    .fwd_len = 8,
	    .connect_ms = -1,
	    .service_ms = -1,
	    .status = 503,
	    .bytes = -1,
	};

	ck_assert_str_eq(fmt(&r), "at=error code=H14 desc=\"No web processes running\" method=GET "
				  "path=\"/\" host=h.test request_id=rid-0123456789abcdefghij "
				  "fwd=\"10.0.0.1\" dyno= connect= service= status=503 bytes= "
				  "protocol=http\n");
	r.sock = "client";
	r.code = "H27";
	r.desc = "Client request interrupted";
	r.status = 499;
	ck_assert_int_eq(strncmp(fmt(&r),
				 "sock=client at=error code=H27 desc=\"Client request "
				 "interrupted\" method=GET",
				 71),
			 0);
	/* Nothing known at all (a head that never parsed). */
	memset(&r, 0, sizeof(r));
	r.error = true;
	r.code = "H26";
	r.desc = "Request error";
	r.connect_ms = r.service_ms = r.bytes = -1;
	r.status = 400;
	ck_assert_str_eq(fmt(&r), "at=error code=H26 desc=\"Request error\" method= path= host= "
				  "request_id= fwd= dyno= connect= service= status=400 bytes= "
				  "protocol=http\n");
}
END_TEST

START_TEST(escaping_and_truncation)
{
	struct hm__router_logrec r = {
	    .method = "GET",
	    .path = "/a\"b\\c\x01",
	    .path_len = 7,
	    .fwd = "x\"y",
	    .fwd_len = 3,
	    .connect_ms = 0,
	    .service_ms = 0,
	    .status = 200,
	    .bytes = 0,
	};
	char *longpath = xmalloc(HM__LOG_PATH_MAX * 2);
	const char *p;

	ck_assert_ptr_nonnull(strstr(fmt(&r), " path=\"/a\\\"b\\\\c?\" "));
	ck_assert_ptr_nonnull(strstr(line, " fwd=\"x\\\"y\" "));
	memset(longpath, '"', HM__LOG_PATH_MAX * 2);
	r.path = longpath;
	r.path_len = HM__LOG_PATH_MAX * 2;
	p = strstr(fmt(&r), "path=\"");
	ck_assert_ptr_nonnull(p);
	/* 4096 source bytes, each escaped to two. */
	ck_assert_int_eq(strstr(p, "\" host=") - (p + 6), 2 * HM__LOG_PATH_MAX);
	free(longpath);
}
END_TEST

START_TEST(batched_writes)
{
	struct hm__router_alog l;
	char path[] = "/tmp/hm-alog-XXXXXX", *buf;
	int fd = mkstemp(path);
	struct hm__router_logrec r = {.method = "GET",
				      .path = "/x",
				      .path_len = 2,
				      .connect_ms = 1,
				      .service_ms = 2,
				      .status = 200,
				      .bytes = 3};
	ssize_t n;
	int lines = 0;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(hm__router_alog_open(&l, path, 0), 0);
	for (int i = 0; i < 1000; i++)
		hm__router_alog_append(&l, &r);
	/* The buffer holds at least two maximal lines, and lines are only flushed when needed. */
	ck_assert_uint_gt(l.len, 0);
	ck_assert_int_eq(hm__router_alog_flush(&l), 0);
	ck_assert_uint_eq(l.len, 0);
	hm__router_alog_close(&l);
	buf = xmalloc(1 << 20);
	n = read(fd, buf, 1 << 20);
	ck_assert_int_gt(n, 0);
	for (ssize_t i = 0; i < n; i++)
		lines += buf[i] == '\n';
	ck_assert_int_eq(lines, 1000);
	ck_assert_int_eq(strncmp(buf, "at=info method=GET path=\"/x\"", 28), 0);
	free(buf);
	close(fd);
	unlink(path);
}
END_TEST

START_TEST(pipe_pieces_end_at_lines)
{
	struct hm__router_alog l;
	int p[2];
	char *buf = xmalloc(1 << 20), *at;
	struct hm__router_logrec r = {
	    .method = "GET", .connect_ms = 1, .service_ms = 2, .status = 200, .bytes = 3};
	char path[300];
	ssize_t n, total = 0;

	memset(path, 'p', sizeof(path));
	r.path = path;
	r.path_len = sizeof(path);
	ck_assert_int_eq(pipe(p), 0);
	fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
	ck_assert_int_eq(hm__router_alog_open(&l, NULL, 0), 0);
	/* Point the writer at the pipe as it would be at stdout. */
	l.fd = p[1];
	l.pipe = true;
	for (int i = 0; i < 100; i++)
		hm__router_alog_append(&l, &r);
	ck_assert_int_eq(hm__router_alog_flush(&l), 0);
	l.fd = -1;
	hm__router_alog_close(&l);
	close(p[1]);
	while ((n = read(p[0], buf + total, (1 << 20) - (size_t)total)) > 0)
		total += n;
	/* Every line whole, in order. */
	at = buf;
	for (int i = 0; i < 100; i++) {
		char *nl = memchr(at, '\n', (size_t)(buf + total - at));

		ck_assert_ptr_nonnull(nl);
		ck_assert_int_eq(strncmp(at, "at=info method=GET path=\"ppp", 28), 0);
		at = nl + 1;
	}
	ck_assert_ptr_eq(at, buf + total);
	close(p[0]);
	free(buf);
}
END_TEST

/* A request head parsed (and checked, when check) out of raw, for hm__router_log_capture. */
static void head_of(const char *raw, struct hm__router_msg *m, struct hm__router_req *rq,
		    struct hm__router_limits *lim, bool check)
{
	const char *why = NULL;
	uint32_t used;

	hm__router_limits_request(lim, 1 << 16);
	hm__router_msg_init(m, HTTP_REQUEST, lim);
	hm__router_msg_reset(m, (char *)raw, 0);
	hm__router_msg_execute(m, (char *)raw, 0, (uint32_t)strlen(raw), &used);
	if (check)
		ck_assert_int_eq(hm__router_req_check(m, rq, &why), 0);
}

/* The text fields of a line come from the head: the target sent on, the client's valid
 * X-Request-Id or a new UUID, the X-Forwarded-For values joined before the peer; a head cut short
 * gives what its request line gave. */
START_TEST(fields_from_the_head)
{
	static const char ok[] =
	    "GET http://app.test/p?q=1 HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 1.2.3.4\r\n"
	    "X-Request-Id: abcdefghijklmnopqrstu\r\nX-Forwarded-For: 5.6.7.8, 9.9.9.9\r\n\r\n";
	static const char cut[] = "POST /half/way HTTP/1.1\r\nHost: a";
	struct hm__router_limits lim;
	struct hm__router_msg m;
	struct hm__router_req rq;
	struct hm__router_logreq lr;

	head_of(ok, &m, &rq, &lim, true);
	hm__router_log_capture(&lr, &m, &rq, "10.0.0.1", 8);
	ck_assert_str_eq(lr.method, "GET");
	ck_assert(lr.path_len == 6 && memcmp(lr.path, "/p?q=1", 6) == 0);
	ck_assert(lr.request_id_len == 21 &&
		  memcmp(lr.request_id, "abcdefghijklmnopqrstu", 21) == 0);
	ck_assert(lr.fwd_len == 35 &&
		  memcmp(lr.fwd, "1.2.3.4, 5.6.7.8, 9.9.9.9, 10.0.0.1", 35) == 0);
	hm__router_msg_fini(&m);

	head_of(cut, &m, &rq, &lim, false);
	hm__router_log_capture(&lr, &m, NULL, "10.0.0.1", 8);
	ck_assert_str_eq(lr.method, "POST");
	ck_assert(lr.path_len == 9 && memcmp(lr.path, "/half/way", 9) == 0);
	ck_assert_uint_eq(lr.request_id_len, 36); /* a UUID */
	ck_assert(lr.fwd_len == 8 && memcmp(lr.fwd, "10.0.0.1", 8) == 0);
	hm__router_msg_fini(&m);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/accesslog");
	TCase *tc = tcase_create("accesslog");

	tcase_add_test(tc, success_line);
	tcase_add_test(tc, error_lines);
	tcase_add_test(tc, escaping_and_truncation);
	tcase_add_test(tc, batched_writes);
	tcase_add_test(tc, pipe_pieces_end_at_lines);
	tcase_add_test(tc, fields_from_the_head);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
