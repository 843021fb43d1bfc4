/* Tests common/opts.c: defaults, environment, JSON config, flags winning, bad values. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/opts.h"
#include "tests/unit/hm_check.h"

struct cfg {
	char *listen;
	int64_t workers;
	bool json;
	int64_t timeout_ms;
	int64_t buf;
	int balance;
};

static const char *const balances[] = {"random", "least-conn", NULL};

static const struct hm_opt table[] = {
    {.name = "listen",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, listen),
     .def = "0.0.0.0:8080",
     .arg = "HOST:PORT",
     .help = "where to listen",
     .check = hm_opt_check_hostport,
     .env = "HM_TEST_LISTEN"},
    {.name = "workers",
     .type = HM_OPT_INT,
     .offset = offsetof(struct cfg, workers),
     .def = "2",
     .min = 1,
     .max = 64,
     .arg = "N",
     .help = "worker processes"},
    {.name = "json", .type = HM_OPT_BOOL, .offset = offsetof(struct cfg, json), .help = "JSON"},
    {.name = "timeout",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct cfg, timeout_ms),
     .def = "5s",
     .min = 1,
     .max = 3600000,
     .arg = "DURATION",
     .help = "timeout"},
    {.name = "buf",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct cfg, buf),
     .def = "64KiB",
     .min = 1024,
     .max = 1 << 30,
     .arg = "SIZE",
     .help = "buffer"},
    {.name = "balance",
     .type = HM_OPT_ENUM,
     .offset = offsetof(struct cfg, balance),
     .def = "random",
     .choices = balances,
     .arg = "MODE",
     .help = "balance"},
    HM_OPT_END,
};

static int parse(struct cfg *c, char **pos, int *npos, char *err, int argc, char **argv)
{
	memset(c, 0, sizeof(*c));
	return hm_opts_parse(table, c, argc, argv, pos, npos, err, 256);
}

START_TEST(defaults_and_flags)
{
	struct cfg c;
	char err[256], *pos[16];
	int npos;
	char *argv[] = {"prog",	 "edge", "--workers", "4",	    "--json", "--timeout=250ms",
			"--buf", "8MiB", "--balance", "least-conn", "extra",  NULL};

	unsetenv("HM_TEST_LISTEN");
	ck_assert_int_eq(parse(&c, pos, &npos, err, 11, argv), 0);
	ck_assert_str_eq(c.listen, "0.0.0.0:8080");
	ck_assert_int_eq(c.workers, 4);
	ck_assert(c.json);
	ck_assert_int_eq(c.timeout_ms, 250);
	ck_assert_int_eq(c.buf, 8 << 20);
	ck_assert_int_eq(c.balance, 1);
	ck_assert_int_eq(npos, 2);
	ck_assert_str_eq(pos[0], "edge");
	ck_assert_str_eq(pos[1], "extra");
	hm_opts_free(table, &c);
}
END_TEST

START_TEST(bool_forms)
{
	struct cfg c;
	char err[256], *pos[16];
	int npos;
	char *a1[] = {"prog", "--json", "off", "x", NULL};
	char *a2[] = {"prog", "--json", "x", NULL};

	ck_assert_int_eq(parse(&c, pos, &npos, err, 4, a1), 0);
	ck_assert(!c.json);
	ck_assert_int_eq(npos, 1);
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a2), 0);
	ck_assert(c.json);
	ck_assert_str_eq(pos[0], "x");
	hm_opts_free(table, &c);
}
END_TEST

START_TEST(bad_values)
{
	struct cfg c;
	char err[256], *pos[16];
	int npos;
	char *a1[] = {"prog", "--workers", "0", NULL};
	char *a2[] = {"prog", "--workers", "abc", NULL};
	char *a3[] = {"prog", "--nope", NULL};
	char *a4[] = {"prog", "--listen", "nowhere", NULL};
	char *a5[] = {"prog", "--timeout", "5 parsecs", NULL};
	char *a6[] = {"prog", "--balance", "round-robin", NULL};
	char *a7[] = {"prog", "--workers", NULL};
	char *a8[] = {"prog", "-x", NULL};

	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a1), HM_EOPTION);
	ck_assert_ptr_nonnull(strstr(err, "out of range"));
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a2), HM_EOPTION);
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 2, a3), HM_EOPTION);
	ck_assert_ptr_nonnull(strstr(err, "--nope"));
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a4), HM_EOPTION);
	ck_assert_ptr_nonnull(strstr(err, "HOST:PORT"));
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a5), HM_EOPTION);
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, a6), HM_EOPTION);
	ck_assert_ptr_nonnull(strstr(err, "least-conn"));
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 2, a7), HM_EOPTION);
	hm_opts_free(table, &c);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 2, a8), HM_EOPTION);
	hm_opts_free(table, &c);
}
END_TEST

static const char *write_tmp(const char *text)
{
	static char path[] = "/tmp/hm-test-opts-XXXXXX";
	int fd;

	strcpy(path, "/tmp/hm-test-opts-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return path;
}

START_TEST(config_file)
{
	struct cfg c;
	char err[256], *pos[16], cfgarg[64];
	int npos;
	const char *p = write_tmp("{\"workers\": 8, \"json\": true, \"timeout\": \"2s\", "
				  "\"listen\": \"127.0.0.1:9000\", \"buf\": 4096}");
	char *argv[] = {"prog", "--workers", "3", "--config", cfgarg, NULL};

	snprintf(cfgarg, sizeof(cfgarg), "%s", p);
	setenv("HM_TEST_LISTEN", "127.0.0.2:1", 1);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 5, argv), 0);
	ck_assert_int_eq(c.workers, 3); /* the flag wins although it comes first */
	ck_assert(c.json);
	ck_assert_int_eq(c.timeout_ms, 2000);
	ck_assert_int_eq(c.buf, 4096);
	ck_assert_str_eq(c.listen, "127.0.0.1:9000"); /* the file wins over the environment */
	hm_opts_free(table, &c);
	unlink(p);
	unsetenv("HM_TEST_LISTEN");
}
END_TEST

START_TEST(config_errors)
{
	struct cfg c;
	char err[256], *pos[16], cfgarg[64];
	int npos;
	char *argv[] = {"prog", "--config", cfgarg, NULL};
	const char *bad[] = {"{\"unknown\": 1}", "{\"workers\": \"many\"}", "[1,2]",
			     "{\"json\": 1}",	 "{\"workers\": 1.5}",	    "not json"};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *p = write_tmp(bad[i]);

		snprintf(cfgarg, sizeof(cfgarg), "%s", p);
		ck_assert_int_eq(parse(&c, pos, &npos, err, 3, argv), HM_EOPTION);
		ck_assert_ptr_nonnull(strstr(err, "config"));
		hm_opts_free(table, &c);
		unlink(p);
	}
	snprintf(cfgarg, sizeof(cfgarg), "/nonexistent/file.json");
	ck_assert_int_eq(parse(&c, pos, &npos, err, 3, argv), HM_EOPTION);
	hm_opts_free(table, &c);
}
END_TEST

START_TEST(env_default)
{
	struct cfg c;
	char err[256], *pos[16];
	int npos;
	char *argv[] = {"prog", NULL};

	setenv("HM_TEST_LISTEN", "127.0.0.3:7", 1);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 1, argv), 0);
	ck_assert_str_eq(c.listen, "127.0.0.3:7");
	hm_opts_free(table, &c);
	setenv("HM_TEST_LISTEN", "bad", 1);
	ck_assert_int_eq(parse(&c, pos, &npos, err, 1, argv), HM_EOPTION);
	ck_assert_ptr_nonnull(strstr(err, "HM_TEST_LISTEN"));
	hm_opts_free(table, &c);
	unsetenv("HM_TEST_LISTEN");
}
END_TEST

START_TEST(help_and_usage)
{
	struct cfg c;
	char err[256], *pos[16], *text = NULL;
	size_t len = 0;
	int npos;
	char *argv[] = {"prog", "--help", NULL};
	FILE *f;

	ck_assert_int_eq(parse(&c, pos, &npos, err, 2, argv), HM_OPTS_HELP);
	hm_opts_free(table, &c);
	f = open_memstream(&text, &len);
	hm_opts_usage(f, "prog [options]", table);
	fclose(f);
	ck_assert_ptr_nonnull(strstr(text, "--listen HOST:PORT"));
	ck_assert_ptr_nonnull(strstr(text, "[default: 5s]"));
	ck_assert_ptr_nonnull(strstr(text, "random|least-conn"));
	free(text);
}
END_TEST

START_TEST(hostport)
{
	char host[64];
	uint16_t port;

	ck_assert_int_eq(hm_split_hostport("0.0.0.0:8080", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "0.0.0.0");
	ck_assert_uint_eq(port, 8080);
	ck_assert_int_eq(hm_split_hostport("[::1]:80", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(hm_split_hostport(":80", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "");
	ck_assert_int_eq(hm_split_hostport("::1:80", host, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(hm_split_hostport("h:0", host, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(hm_split_hostport("h:", host, sizeof(host), &port), -EINVAL);
	ck_assert_int_eq(hm_split_hostport("h", host, sizeof(host), &port), -EINVAL);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("opts");
	TCase *tc = tcase_create("opts");

	tcase_add_test(tc, defaults_and_flags);
	tcase_add_test(tc, bool_forms);
	tcase_add_test(tc, bad_values);
	tcase_add_test(tc, config_file);
	tcase_add_test(tc, config_errors);
	tcase_add_test(tc, env_default);
	tcase_add_test(tc, help_and_usage);
	tcase_add_test(tc, hostport);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
