/*
 * The node's routing table in shared memory: one writer (hermod-syncd), many lock-free readers
 * (hermod-router workers), in one file. The design, layout and failure cases are in
 * docs/table.md; this header is the API.
 *
 * Readers:  hm_table_reader_new(path) -> hm_table_reader_map() -> hm_table_route(map, host, ...).
 * Writers:  hm_table_writer_open(path) -> hm_table_begin() -> hm_table_apply() x n ->
 *           hm_table_commit(epoch, seq) (or hm_table_abort()).
 *
 * Threads: a reader or a writer object belongs to one thread at a time. Any number of processes
 * may read one file while one process writes it.
 *
 * Linking: the reading half below is the library hm_table_read (table_read.c, table_fmt.c), all
 * hermod-router links; the writing half is hm_table_write (table_write.c, table_apply.c).
 */
#ifndef HM_COMMON_TABLE_H
#define HM_COMMON_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

#define HM_DIGEST_LEN 16

/* Capacities of one table file. A writer grows the file (doubling) when one is reached. */
struct hm_table_caps {
	uint32_t apps;
	uint32_t domains;
	uint32_t dynos;
	uint64_t heap; /* bytes for hostnames, dyno names and per-app dyno arrays */
};

/* What a table (the published version of a map, or a writer's) holds. */
struct hm_table_info {
	uint64_t version; /* publish counter: changes on every commit */
	uint64_t epoch;	  /* sync position of this version */
	uint64_t seq;
	uint64_t commit_ms; /* wall-clock ms of the commit that made this version */
	uint32_t apps, domains, dynos;
	uint32_t secrets; /* named secrets (never listed) */
	uint8_t digest[HM_DIGEST_LEN];
	struct hm_table_caps caps;
	uint64_t file_bytes;
	uint64_t file_id; /* random per file; changes when the file is replaced */
};

/* ---- Reading (router workers) ---------------------------------------------------------- */

struct hm_table_reader; /* follows the table file at a path */
struct hm_table_map;	/* one mapping of one file (refcounted within the process) */

/*
 * Creates a reader for the table at path. The file need not exist yet. Returns 0 or -ENOMEM.
 * The reader copies path. A file at path that is not owned by this uid or root, or that its
 * group or others may write, is never mapped (hm_table_reader_check() says HM_EUNTRUSTED).
 */
int hm_table_reader_new(struct hm_table_reader **out, const char *path);

/* Drops the reader's reference to its current map. Maps still referenced stay mapped. */
void hm_table_reader_free(struct hm_table_reader *r);

/*
 * The current map, borrowed (valid until the next call on r; hm_table_map_ref() to keep it), or
 * NULL if no valid table exists at the path. Costs one atomic load when nothing changed; when the
 * mapped file was retired (replaced by its writer) it re-opens the path. Call it per request.
 */
struct hm_table_map *hm_table_reader_map(struct hm_table_reader *r);

/*
 * Checks the path with stat(2): maps a table that appeared, and re-maps one whose inode changed
 * (a file replaced without being retired, e.g. by a writer that died); a file shorter than its
 * mapping (truncated in place) makes the map bad before a read faults on it. Call about once a
 * second, not per request. Returns 1 if the current map changed, 0 if not, or a negative error
 * (the old map, if any, stays current).
 */
int hm_table_reader_check(struct hm_table_reader *r);

/*
 * A file truncated under a map of this process: every map is guarded in common/pubfile.h's
 * fault registry, so a SIGBUS handler that calls hm_pubfile_fault() survives the read that
 * faults. The map is then zero pages and bad, the validated read it belongs to fails
 * (HM_EBADTABLE), and hm_table_reader_map() returns NULL until a valid file is at the path (the
 * same file written back in place counts). hm_table_bad_maps() counts the maps found bad so
 * far (by a fault, or by hm_table_reader_check() seeing the file shorter than its mapping).
 */
uint64_t hm_table_bad_maps(void);

/* Process-local references: a map stays mapped while referenced, even after it is replaced. */
void hm_table_map_ref(struct hm_table_map *m);
void hm_table_map_unref(struct hm_table_map *m);

/* Facts about the map's published version (one validated read). */
void hm_table_map_info(struct hm_table_map *m, struct hm_table_info *out);

/* The map's publish counter: one atomic load. Changes on every commit. */
uint64_t hm_table_map_version(const struct hm_table_map *m);

/*
 * How hm_table_route() chooses a dyno. All fields optional (zero = none).
 *  rnd       random bits from the caller (the table has no randomness of its own)
 *  affinity  a dyno name taken from a valid session-affinity cookie: chosen if that dyno exists
 *            in the app, is up, and is not skipped
 *  skip      returns true for a dyno the caller must not be given now (e.g. it refused a
 *            connection less than 5 s ago, or was already tried for this request). Called inside
 *            the read: must be fast and have no side effects; may be called more than once.
 */
struct hm_pick {
	uint64_t rnd;
	const char *affinity;
	size_t affinity_len;
	bool (*skip)(void *ctx, const struct hm_addr *addr, uint32_t slot);
	void *ctx;
};

/* The result of a routing query, copied out of shared memory. */
struct hm_route {
	uint64_t version; /* publish counter of the version this came from */
	char app[HM_APP_NAME_MAX + 1];
	bool maintenance;
	bool affinity;	  /* the app has session affinity on */
	uint8_t balance;  /* enum hm_balance */
	uint32_t n_dynos; /* all dynos of the app, by state: */
	uint32_t n_up, n_starting, n_crashed, n_down;
	bool has_dyno;	   /* a dyno was chosen (n_up > 0 and not every up dyno was skipped) */
	bool affinity_hit; /* the chosen dyno is the affinity dyno asked for */
	char dyno[HM_DYNO_NAME_MAX + 1];
	struct hm_addr addr;
	uint32_t slot; /* the dyno's slot: index of its in-flight counter in this map */
};

/*
 * Routes a lookup key (from hm_host_key(): lowercase, no port, no trailing dot) in m's current
 * version: the exact domain, else the longest wildcard; then the app, its dyno counts, and a
 * dyno chosen by the app's balance mode (random, or the less loaded of two random up dynos) or
 * by pick->affinity. Returns 0 (out filled; see out->has_dyno), HM_ENOHOST if no domain matches,
 * or HM_EBUSYTABLE if the writer kept changing the table through many retries (not seen in
 * practice; the caller may retry).
 */
int hm_table_route(struct hm_table_map *m, const char *key, size_t n, const struct hm_pick *pick,
		   struct hm_route *out);

/*
 * Copies the value of the named secret ("affinity") of m's published version into out; returns
 * its length (1..HM_SECRET_MAX), HM_ENOSECRET, or HM_EBUSYTABLE. One validated read: call it
 * when the map's version changes, not per request.
 */
int hm_table_secret(struct hm_table_map *m, const char *name, uint8_t out[HM_SECRET_MAX]);

/* In-flight counters of m (see docs/table.md): atomic, shared by every process mapping m. */
void hm_table_inflight_add(struct hm_table_map *m, uint32_t slot, int32_t delta);
int32_t hm_table_inflight_get(const struct hm_table_map *m, uint32_t slot);

/* ---- Writing (syncd) --------------------------------------------------------------------- */

struct hm_table_writer;

/* Open flags. */
#define HM_TABLE_RESUME 1u /* reuse a valid existing file at path (keeps its state) */

/* Defaults for a new file; it grows by doubling from there. */
#define HM_TABLE_CAPS_DEFAULT ((struct hm_table_caps){1024, 2048, 4096, 1u << 20})

/*
 * Opens a writer.
 *  path      the table file, or NULL for private memory (the origin's validation state).
 *  caps      capacities for a new file (NULL: HM_TABLE_CAPS_DEFAULT); a resumed file keeps its
 *            own (it grows as usual when they run out).
 *  flags     HM_TABLE_RESUME: if path holds a valid table, continue from its published version
 *            (its epoch and seq are in hm_table_info). Otherwise a new, empty table is prepared
 *            under a temporary name and appears at path (replacing and retiring any file there)
 *            with its first commit, so readers never see it half-loaded.
 *  max_bytes growth stops at this file size (0: no limit); hm_table_grow() then fails HM_EFULL.
 * Returns 0, HM_EBADTABLE (path exists but is not a table and RESUME was asked: it is not
 * touched; or caps are out of range), HM_EUNTRUSTED (the file at path, or PATH.lock, is not
 * owned by this uid or root, or its group or others may write it: common/filesec.h), -EBUSY
 * (another writer holds the path), or a negative errno. New files are created mode 0640. The
 * version counter (hm_table_info.version) starts again in every new file; file_id tells files
 * apart.
 */
int hm_table_writer_open(struct hm_table_writer **out, const char *path,
			 const struct hm_table_caps *caps, unsigned flags, uint64_t max_bytes);

/* Aborts an open batch, unmaps. The file stays for its readers. */
void hm_table_writer_close(struct hm_table_writer *w);

/* Starts a batch. Returns 0 or -EBUSY if one is open. */
int hm_table_begin(struct hm_table_writer *w);

/*
 * Applies one change to the open batch; the change is borrowed for the call only.
 * app.put creates or updates; app.rm removes the app, its domains and dynos; domain.put and
 * dyno.put create or update and need the app; the rm ops need the object to exist; secret.put
 * sets a named secret (16 at most), secret.rm removes one.
 * Returns 0, or an error after which the batch must be aborted: the hm_change_check() codes,
 * HM_ENOAPP, HM_ENODOMAIN, HM_ENODYNO, HM_ENOSECRET, HM_ESECRETS (16 secrets already), or
 * HM_EFULL (abort, hm_table_grow(), apply again).
 */
int hm_table_apply(struct hm_table_writer *w, const struct hm_change *c);

/*
 * Publishes the open batch as the version at sync position (epoch, seq): readers see all of it
 * or none of it. Returns 0 (the first commit of a new file also installs it at path), or a
 * negative errno if installing failed (the batch is then aborted).
 */
int hm_table_commit(struct hm_table_writer *w, uint64_t epoch, uint64_t seq);

/* Discards the open batch; the published version is unchanged. No-op if none is open. */
void hm_table_abort(struct hm_table_writer *w);

/*
 * Replaces the file by a larger one (every capacity at least doubled where more than half used,
 * and at least *min where given), built from the published version and installed as in
 * docs/table.md. No batch may be open. Returns 0, HM_EFULL (max_bytes), or a negative errno; on
 * failure the current file stays in use.
 */
int hm_table_grow(struct hm_table_writer *w, const struct hm_table_caps *min);

/* Facts about the writer's published version. */
void hm_table_writer_info(const struct hm_table_writer *w, struct hm_table_info *out);

/* Facts about the open batch as applied so far (digest and counts as they would be published:
 * the origin's etcd store numbers a batch before it may commit it). -EINVAL if none is open. */
int hm_table_batch_info(const struct hm_table_writer *w, struct hm_table_info *out);

/* hm_table_secret() on the writer's published version. */
int hm_table_writer_secret(const struct hm_table_writer *w, const char *name,
			   uint8_t out[HM_SECRET_MAX]);

/*
 * Calls cb once per object of the published version, as the put change that would create it:
 * every secret, every app, then every domain, then every dyno. Strings are borrowed for the
 * call. Stops and returns cb's value when it is non-zero; else returns 0. Used for snapshots
 * and growth, and (skipping secrets) dumps.
 */
int hm_table_foreach(const struct hm_table_writer *w,
		     int (*cb)(void *ctx, const struct hm_change *c), void *ctx);

/*
 * Resolves a lookup key as hm_table_route() does, in the writer's published version: *app gets
 * the app's put change (strings borrowed until the next write), then cb is called for each of
 * the app's dynos (as dyno.put changes). Returns 0, HM_ENOHOST, or cb's non-zero value.
 */
int hm_table_resolve(const struct hm_table_writer *w, const char *key, size_t n,
		     struct hm_change *app, int (*cb)(void *ctx, const struct hm_change *c),
		     void *ctx);

/*
 * Consistency check for tests and start-up: recomputes the digest and counts of the published
 * copy from its records, checks every index and hash chain, and (when no batch is open) that
 * both copies are byte-identical. Returns 0 or HM_EBADTABLE.
 */
int hm_table_verify(const struct hm_table_writer *w);

/* The digest as 32 lowercase hex digits and a NUL. */
void hm_digest_hex(const uint8_t digest[HM_DIGEST_LEN], char out[2 * HM_DIGEST_LEN + 1]);

#endif
