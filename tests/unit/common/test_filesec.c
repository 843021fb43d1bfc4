/* Tests common/filesec.c: which files a process trusts with routing state and keys. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/filesec.h"
#include "tests/unit/hm_check.h"

START_TEST(owner_and_mode)
{
	char path[] = "/tmp/hm-filesec-XXXXXX", why[160];
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fchmod(fd, 0640), 0);
	ck_assert_int_eq(hm_file_trusted(fd, why, sizeof(why)), 0);
	ck_assert_int_eq(hm_path_trusted(path, why, sizeof(why)), 0);
	ck_assert_int_eq(fchmod(fd, 0660), 0);
	ck_assert_int_eq(hm_file_trusted(fd, why, sizeof(why)), HM_EUNTRUSTED);
	ck_assert_str_eq(why, "writable by its group (mode 0660)");
	ck_assert_int_eq(fchmod(fd, 0602), 0);
	ck_assert_int_eq(hm_path_trusted(path, why, sizeof(why)), HM_EUNTRUSTED);
	ck_assert_str_eq(why, "writable by others (mode 0602)");
	ck_assert_int_eq(fchmod(fd, 0600), 0);
	if (geteuid() == 0) {
		/* Root may give the file away: then it is someone else's. */
		ck_assert_int_eq(fchown(fd, 65534, 65534), 0);
		ck_assert_int_eq(hm_file_trusted(fd, why, sizeof(why)), HM_EUNTRUSTED);
		ck_assert_str_eq(why, "owned by uid 65534, not by this user (uid 0) or root");
	}
	close(fd);
	unlink(path);
	ck_assert_int_eq(hm_path_trusted(path, why, sizeof(why)), -ENOENT);
	ck_assert_int_eq(hm_path_trusted("/tmp", why, sizeof(why)), HM_EUNTRUSTED);
	ck_assert_str_eq(why, "not a regular file");
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("filesec");
	TCase *tc = tcase_create("filesec");

	tcase_add_test(tc, owner_and_mode);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
