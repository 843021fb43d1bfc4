/*
 * Which files a hermod process may trust. The routing table (and the certificate store) decide
 * where traffic goes and hold the cluster's secrets; a file that another local user could have
 * created or could still change — say one created first in a world-writable directory — could
 * hold anybody's routes. So a process trusts such a file only if its own effective uid or root
 * owns it and neither its group nor others may write it; and it creates them with a fixed mode,
 * whatever the umask.
 */
#ifndef HM_COMMON_FILESEC_H
#define HM_COMMON_FILESEC_H

#include <stddef.h>
#include <sys/stat.h>

/* Modes hermod creates these files with. */
#define HM_TABLE_MODE 0640 /* the routing table: the router's group may read it */
#define HM_STORE_MODE 0600 /* the certificate store: keys */
#define HM_LOCK_MODE  0600

/*
 * Checks the file open on fd: a regular file, owned by geteuid() or root, not writable by its
 * group or by others. Returns 0, or HM_EUNTRUSTED with a reason in err ("owned by uid 1000, not
 * by this user (uid 0) or root", "writable by its group (mode 0664)"); a negative errno if fstat
 * fails. Any thread.
 */
int hm_file_trusted(int fd, char *err, size_t errlen);

/*
 * The check itself, on what fstat/stat returned. flags: HM_TRUST_PRIVATE also refuses any
 * permission bit for the group or others (the certificate store holds private keys: what
 * OpenSSH does with a key file). err may be NULL.
 */
#define HM_TRUST_PRIVATE 1u
int hm_stat_trusted(const struct stat *st, unsigned flags, char *err, size_t errlen);

/* The same check on a path (stat, following symbolic links as open would). */
int hm_path_trusted(const char *path, char *err, size_t errlen);

#endif
