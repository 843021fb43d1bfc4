/* Tests common/sdnotify.c against a real datagram socket, path and abstract forms. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/sdnotify.h"
#include "tests/unit/hm_check.h"

static void roundtrip(const char *name, bool abstract)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	char env[108], buf[64];
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	socklen_t len;
	ssize_t n;

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s%s", abstract ? "@" : "", name);
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa.sun_path));
	snprintf(env, sizeof(env), "%s", sa.sun_path);
	if (abstract)
		sa.sun_path[0] = '\0';
	else
		unlink(name);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
	setenv("NOTIFY_SOCKET", env, 1);
	ck_assert_int_eq(hm_sd_notify("READY=1\nSTATUS=up"), 1);
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_eq(n, 17);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "READY=1\nSTATUS=up");
	close(fd);
	if (!abstract)
		unlink(name);
}

START_TEST(notify)
{
	char name[64];

	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(hm_sd_notify("READY=1"), 0);
	snprintf(name, sizeof(name), "/tmp/hm-test-notify-%d", getpid());
	roundtrip(name, false);
	snprintf(name, sizeof(name), "hm-test-notify-%d", getpid());
	roundtrip(name, true);
	setenv("NOTIFY_SOCKET", "/nonexistent/socket", 1);
	ck_assert_int_lt(hm_sd_notify("READY=1"), 0);
	unsetenv("NOTIFY_SOCKET");
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("sdnotify");
	TCase *tc = tcase_create("sdnotify");

	tcase_add_test(tc, notify);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
