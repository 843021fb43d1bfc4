/*
 * File trust checks (filesec.h). fstat on the descriptor already opened, so the file checked is
 * the file used: a path check followed by an open could be raced by a rename.
 */
#include "common/filesec.h"

#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"

int hm_stat_trusted(const struct stat *st, unsigned flags, char *err, size_t errlen)
{
	uid_t me = geteuid();
	char dummy[1];

	if (err == NULL) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	if (!S_ISREG(st->st_mode)) {
		snprintf(err, errlen, "not a regular file");
		return HM_EUNTRUSTED;
	}
	if (st->st_uid != me && st->st_uid != 0) {
		snprintf(err, errlen, "owned by uid %u, not by this user (uid %u) or root",
			 (unsigned)st->st_uid, (unsigned)me);
		return HM_EUNTRUSTED;
	}
	if (st->st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "writable by %s (mode %04o)",
			 (st->st_mode & S_IWOTH) ? "others" : "its group",
			 (unsigned)(st->st_mode & 07777));
		return HM_EUNTRUSTED;
	}
	if ((flags & HM_TRUST_PRIVATE) && (st->st_mode & 077)) {
		snprintf(err, errlen, "readable by others than its owner (mode %04o)",
			 (unsigned)(st->st_mode & 07777));
		return HM_EUNTRUSTED;
	}
	return 0;
}

int hm_file_trusted(int fd, char *err, size_t errlen)
{
	struct stat st;

	if (fstat(fd, &st) != 0)
		return -errno;
	return hm_stat_trusted(&st, 0, err, errlen);
}

int hm_path_trusted(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return -errno;
	return hm_stat_trusted(&st, 0, err, errlen);
}
