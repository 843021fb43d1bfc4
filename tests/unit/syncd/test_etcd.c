/*
 * Tests the parts of syncd/etcd.c that need no etcd: the conversion of etcd's errors,
 * configuration checks, and the client's contract on a loop (one callback per request, the
 * failover ending in the last transport error, close cancelling what is pending, a watch that
 * keeps resuming against an endpoint that refuses). tests/integration/test_etcd_client.py runs
 * it against a real etcd cluster.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "common/errors.h"
#include "syncd/etcd.h"
#include "tests/unit/hm_check.h"

START_TEST(grpc_errors)
{
	ck_assert_int_eq(hm__etcd_grpc_err(11, "etcdserver: mvcc: required revision has been "
					       "compacted"),
			 HM_ECOMPACTED);
	ck_assert_int_eq(hm__etcd_grpc_err(3, "etcdserver: too many operations in txn request"),
			 HM_ETOOBIG);
	ck_assert_int_eq(hm__etcd_grpc_err(3, "etcdserver: request is too large"), HM_ETOOBIG);
	ck_assert_int_eq(hm__etcd_grpc_err(3, "etcdserver: key is not provided"), -EINVAL);
	ck_assert_int_eq(hm__etcd_grpc_err(8, "etcdserver: mvcc: database space exceeded"),
			 -ENOSPC);
	ck_assert_int_eq(hm__etcd_grpc_err(8, "grpc: received message larger than max (1 vs. 0)"),
			 HM_ETOOBIG);
	ck_assert_int_eq(hm__etcd_grpc_err(5, "etcdserver: requested lease not found"), -ENOENT);
	ck_assert_int_eq(hm__etcd_grpc_err(14, "etcdserver: no leader"), -EAGAIN);
	ck_assert_int_eq(hm__etcd_grpc_err(4, "context deadline exceeded"), -ETIMEDOUT);
	ck_assert_int_eq(hm__etcd_grpc_err(16, "etcdserver: invalid auth token"), -EACCES);
	ck_assert_int_eq(hm__etcd_grpc_err(7, "etcdserver: permission denied"), -EPERM);
	ck_assert_int_eq(hm__etcd_grpc_err(11, "etcdserver: mvcc: required revision is a future "
					       "revision"),
			 -EINVAL);
	ck_assert_int_eq(hm__etcd_grpc_err(2, "something else"), HM_EETCD);
	ck_assert_int_eq(hm__etcd_grpc_err(9, NULL), HM_EETCD);
}
END_TEST

START_TEST(config_is_checked)
{
	static const char *bad[] = {
	    "", "ftp://h:1", "http://", "127.0.0.1:2379", "http://h:1,", "http://h:1,,http://h:2"};
	struct hm__etcd *c;
	char err[256];
	uv_loop_t loop;

	uv_loop_init(&loop);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct hm__etcd_cfg cfg = {.endpoints = bad[i]};

		err[0] = '\0';
		ck_assert_int_eq(hm__etcd_new(&c, &loop, &cfg, err, sizeof(err)), -EINVAL);
		ck_assert_msg(err[0] != '\0', "no reason for %s", bad[i]);
		ck_assert_ptr_null(c);
	}
	{
		struct hm__etcd_cfg cfg = {.endpoints = "http://127.0.0.1:1",
					   .ca = "/nonexistent/ca.pem"};

		ck_assert_int_eq(hm__etcd_new(&c, &loop, &cfg, err, sizeof(err)), -EINVAL);
		ck_assert(strstr(err, "/nonexistent/ca.pem") != NULL);
	}
	{
		struct hm__etcd_cfg cfg = {.endpoints = "http://127.0.0.1:1/,https://[::1]:2//"};

		ck_assert_int_eq(hm__etcd_new(&c, &loop, &cfg, err, sizeof(err)), 0);
		ck_assert_uint_eq(hm__etcd_nendpoints(c), 2);
		ck_assert_str_eq(hm__etcd_endpoint(c, 0), "http://127.0.0.1:1");
		ck_assert_str_eq(hm__etcd_endpoint(c, 1), "https://[::1]:2");
		hm__etcd_close(c);
	}
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* A loopback port that refuses connections (bound, never listened on, then closed). */
static int refusing_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	ck_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

struct outcome {
	int calls, err;
	char msg[256];
};

static void record(void *arg, int err, const struct hm__etcd_result *r)
{
	struct outcome *o = arg;

	o->calls++;
	o->err = err;
	snprintf(o->msg, sizeof(o->msg), "%s", r->message);
}

START_TEST(refused_everywhere_ends_in_refused)
{
	struct hm__etcd *c;
	struct outcome get = {0}, put = {0};
	char eps[128], err[256];
	uv_loop_t loop;
	struct hm__etcd_cfg cfg = {.endpoints = eps, .timeout_ms = 400};

	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d,http://127.0.0.1:%d", refusing_port(),
		 refusing_port());
	uv_loop_init(&loop);
	ck_assert_int_eq(hm__etcd_new(&c, &loop, &cfg, err, sizeof(err)), 0);
	ck_assert_int_eq(hm__etcd_range(c, "k", 1, NULL, record, &get), 0);
	ck_assert_int_eq(hm__etcd_put(c, "k", 1, "v", 1, 0, record, &put), 0);
	while (get.calls == 0 || put.calls == 0)
		uv_run(&loop, UV_RUN_ONCE);
	/* Both moved through both endpoints (never sent, so the put may move too) and report
	 * what the last attempt met. */
	ck_assert_int_eq(get.calls, 1);
	ck_assert_int_eq(get.err, -ECONNREFUSED);
	ck_assert_int_eq(put.calls, 1);
	ck_assert_int_eq(put.err, -ECONNREFUSED);
	ck_assert(put.msg[0] != '\0');
	hm__etcd_close(c);
	ck_assert_int_eq(get.calls, 1);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

struct closer {
	struct hm__etcd *c;
	struct outcome after;
	int start_rc;
};

static void close_now(uv_timer_t *t)
{
	struct closer *cl = t->data;

	hm__etcd_close(cl->c);
	cl->start_rc = hm__etcd_range(cl->c, "k", 1, NULL, record, &cl->after);
	uv_close((uv_handle_t *)t, NULL);
}

START_TEST(close_cancels_pending)
{
	struct hm__etcd *c;
	struct outcome put = {0};
	struct closer cl = {0};
	char eps[64], err[256];
	uv_loop_t loop;
	uv_timer_t t;
	struct hm__etcd_cfg cfg = {.endpoints = eps, .timeout_ms = 60000};

	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", refusing_port());
	uv_loop_init(&loop);
	ck_assert_int_eq(hm__etcd_new(&c, &loop, &cfg, err, sizeof(err)), 0);
	ck_assert_int_eq(hm__etcd_put(c, "k", 1, "v", 1, 0, record, &put), 0);
	cl.c = c;
	uv_timer_init(&loop, &t);
	t.data = &cl;
	uv_timer_start(&t, close_now, 300, 0);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	ck_assert_int_eq(put.calls, 1);
	ck_assert_int_eq(put.err, -ECANCELED);
	ck_assert_int_eq(cl.start_rc, -ECANCELED);
	ck_assert_int_eq(cl.after.calls, 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

struct watching {
	struct hm__etcd *c;
	struct hm__etcd_watch *w;
	int calls;
};

static void on_event(void *arg, int err, const struct hm__etcd_header *h,
		     const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev)
{
	struct watching *wt = arg;

	(void)err;
	(void)h;
	(void)ev;
	(void)nev;
	(void)compact_rev;
	wt->calls++;
}

static void check_resumes(uv_timer_t *t)
{
	struct watching *wt = t->data;

	if (hm__etcd_watch_resumes(wt->w) < 3)
		return;
	hm__etcd_watch_stop(wt->w);
	hm__etcd_close(wt->c);
	uv_close((uv_handle_t *)t, NULL);
}

START_TEST(watch_resumes_until_stopped)
{
	struct watching wt = {0};
	char eps[64], err[256];
	uv_loop_t loop;
	uv_timer_t t;
	struct hm__etcd_cfg cfg = {.endpoints = eps};

	snprintf(eps, sizeof(eps), "http://127.0.0.1:%d", refusing_port());
	uv_loop_init(&loop);
	ck_assert_int_eq(hm__etcd_new(&wt.c, &loop, &cfg, err, sizeof(err)), 0);
	ck_assert_int_eq(hm__etcd_watch_start(&wt.w, wt.c, "a", 1, "b", 1, 5, on_event, &wt), 0);
	uv_timer_init(&loop, &t);
	t.data = &wt;
	uv_timer_start(&t, check_resumes, 50, 50);
	ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
	/* A refused stream is not an error for the caller: it is resumed, quietly. */
	ck_assert_int_eq(wt.calls, 0);
	ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("etcd");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, grpc_errors);
	tcase_add_test(tc, config_is_checked);
	tcase_add_test(tc, refused_everywhere_ends_in_refused);
	tcase_add_test(tc, close_cancels_pending);
	tcase_add_test(tc, watch_resumes_until_stopped);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
