/*
 * What the origin's two stores share (store.h): choosing one by its spec, and the data
 * directory's lock. The journal is the default; "etcd:" names the etcd store.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "syncd/recovery.h"
#include "syncd/store.h"

struct hm__store *hm__store_alloc(size_t size, const struct hm__store_ops *ops, uv_loop_t *loop,
				  const struct hm__store_cfg *cfg,
				  const struct hm__store_events *ev, void *ctx)
{
	struct hm__store *s = calloc(1, size);

	if (s == NULL)
		return NULL;
	s->ops = ops;
	s->loop = loop;
	s->cfg = *cfg;
	s->ev = ev;
	s->ctx = ctx;
	return s;
}

int hm__store_new(struct hm__store **out, uv_loop_t *loop, const struct hm__store_cfg *cfg,
		  const struct hm__store_events *ev, void *ctx, char *err, size_t errlen)
{
	const struct hm__store_ops *ops;
	size_t size;

	*out = NULL;
	if (cfg->spec == NULL || strcmp(cfg->spec, "journal") == 0) {
		ops = &hm__store_journal_ops;
		size = hm__store_journal_size;
	} else if (strncmp(cfg->spec, "etcd:", 5) == 0) {
		ops = &hm__store_etcd_ops;
		size = hm__store_etcd_size;
	} else {
		snprintf(err, errlen, "--store %s: want journal or etcd:URL[,URL...]", cfg->spec);
		return -EINVAL;
	}
	if ((*out = hm__store_alloc(size, ops, loop, cfg, ev, ctx)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

int hm__store_lock_dir(const char *dir, int *lock_fd, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int e;

	*lock_fd = -1;
	if ((e = hm__mkdir_p(dir, 0700)) != 0) {
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(-e));
		return e;
	}
	snprintf(path, sizeof(path), "%s/lock", dir);
	if ((*lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		e = -errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return e;
	}
	if (flock(*lock_fd, LOCK_EX | LOCK_NB) != 0) {
		snprintf(err, errlen, "%s is in use by another origin", dir);
		return -EBUSY;
	}
	return 0;
}
