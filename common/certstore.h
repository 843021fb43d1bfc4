/*
 * The node's certificate store: TLS certificates and keys by name, and the cluster's session
 * ticket keys, in one file with one writer (the node's hermod-syncd edge, or the origin in
 * private memory) and lock-free readers (hermod-router workers, which pick a certificate per TLS
 * handshake by SNI). The design, layout and failure cases are in docs/tls.md, section 2.
 *
 * Readers:  hm_certstore_reader_new(path) -> hm_certstore_reader_map() per handshake ->
 *           hm_certstore_lookup(map, sni) -> (cache miss only) hm_certstore_fetch(map, ref).
 * Writers:  hm_certstore_writer_open(path) -> hm_certstore_begin() -> put/rm/set_ticket_keys x n
 *           -> hm_certstore_commit(epoch, seq) (or hm_certstore_abort()).
 *
 * The store treats certificates and keys as opaque bytes (syncd validates them; the router
 * parses them). Errors are negative errno values: -ENOENT (no such name), -ENOSPC (a capacity is
 * full: grow), -EUCLEAN (the file or an entry is invalid), -EPERM (the file's owner or mode is
 * not acceptable), -EBUSY (another writer), -ESTALE (a reference outlived its entry, or a map
 * its file: truncated in place under it), -EAGAIN (the writer kept changing the store through
 * many retries).
 *
 * Threads: a reader or writer object belongs to one thread at a time. Any number of processes
 * may read one file while one process writes it.
 */
#ifndef HM_COMMON_CERTSTORE_H
#define HM_COMMON_CERTSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

#define HM_CERT_NAME_MAX (HM_HOST_MAX + 2) /* "*." + a hostname */
/* HM_CERT_ID_LEN, HM_CERT_CHAIN_MAX, HM_CERT_KEY_MAX, HM_CERT_META_MAX: common/model.h */
#define HM_CERTSTORE_DIGEST_LEN 16 /* as the routing table's (HM_DIGEST_LEN) */
#define HM_TICKET_KEYS_MAX	4

/* How a lookup matched (and what kind of name an entry has). */
enum hm_cert_kind {
	HM_CERT_EXACT = 1,    /* a host name */
	HM_CERT_WILDCARD = 2, /* "*.domain": covers one label below domain */
	HM_CERT_DEFAULT = 3,  /* "default": any name no other entry covers */
};

/* A put, borrowed for the call. */
struct hm_cert_put {
	const char *name; /* a hostname, "*.domain" or "default"; any case, one trailing dot ok */
	size_t name_len;
	const void *cert; /* certificate chain (PEM), 1..HM_CERT_CHAIN_MAX bytes */
	size_t cert_len;
	const void *key; /* private key (PEM), 1..HM_CERT_KEY_MAX bytes */
	size_t key_len;
	const void *meta; /* opaque to the store, 0..HM_CERT_META_MAX bytes (syncd: SANs, leaf
			     fingerprint) */
	size_t meta_len;
	uint8_t id[HM_CERT_ID_LEN]; /* SHA-256 of le32(cert_len) | cert | key; the caller's duty
				       (hm_certcheck_entry_id()): readers cache by it */
	int64_t not_after;	    /* Unix seconds */
};

/* An entry of the writer's published version, for hm_certstore_foreach(). Bytes are borrowed
 * until the next write. name is canonical ("*.example.com", "default", "a.example.com"). */
struct hm_cert_entry {
	char name[HM_CERT_NAME_MAX + 1];
	size_t name_len;
	uint8_t kind; /* enum hm_cert_kind */
	const uint8_t *cert, *key, *meta;
	size_t cert_len, key_len, meta_len;
	uint8_t id[HM_CERT_ID_LEN];
	int64_t not_after;
};

/* A session ticket key (the 80-byte format of nginx and HAProxy). */
struct hm_ticket_key {
	uint8_t name[16];
	uint8_t aes_key[32];
	uint8_t hmac_key[32];
};

/* Capacities of one store file; the writer grows the file when one is reached. */
struct hm_certstore_caps {
	uint32_t certs;
	uint64_t heap; /* bytes for names, chains, keys and metadata */
};

#define HM_CERTSTORE_CAPS_DEFAULT ((struct hm_certstore_caps){256, 1u << 20})

/* What a store version holds. */
struct hm_certstore_info {
	uint64_t version; /* publish counter: changes on every commit */
	uint64_t epoch, seq;
	uint64_t commit_ms;
	uint32_t certs;
	uint32_t ticket_keys;
	uint64_t ticket_keys_gen;  /* changes whenever the ticket keys are set */
	int64_t soonest_not_after; /* INT64_MAX when there is no certificate */
	uint8_t digest[HM_CERTSTORE_DIGEST_LEN];
	struct hm_certstore_caps caps;
	uint64_t heap_used; /* bytes of heap holding live entries (allocation classes included) */
	uint64_t file_bytes;
	uint64_t file_id;
};

/* Canonicalises a certificate name: writes "default", "*.domain" or a host (lowercase, no
 * trailing dot) and a NUL to out (HM_CERT_NAME_MAX + 1 bytes). Returns its length, or
 * HM_EHOSTNAME. */
int hm_cert_name_canon(const char *name, size_t n, char *out, uint8_t *kind);

/*
 * The node's store path for a routing table path (docs/tls.md, section 2: no flag of its own): a
 * ".table" suffix replaced by ".certs", else ".certs" appended ("/run/hermod/hermod.table" ->
 * "/run/hermod/hermod.certs"). Returns 0, or -ENAMETOOLONG if it does not fit n bytes.
 */
int hm_certstore_path(const char *table, char *out, size_t n);

/* ---- Reading (router workers) ---------------------------------------------------------- */

struct hm_certstore_reader; /* follows the store file at a path */
struct hm_certstore_map;    /* one mapping of one file (refcounted within the process) */

/* Creates a reader for the store at path (copied). The file need not exist yet. 0 or -ENOMEM. */
int hm_certstore_reader_new(struct hm_certstore_reader **out, const char *path);

/* Drops the reader's reference to its current map. Maps still referenced stay mapped. */
void hm_certstore_reader_free(struct hm_certstore_reader *r);

/*
 * The current map, borrowed (valid until the next call on r; hm_certstore_map_ref() keeps it),
 * or NULL if no acceptable store exists at the path. One atomic load when nothing changed; when
 * the mapped file was retired it re-opens the path (after a failure, at most every 50 ms). Call
 * it per handshake.
 */
struct hm_certstore_map *hm_certstore_reader_map(struct hm_certstore_reader *r);

/*
 * Checks the path with stat(2): maps a store that appeared, re-maps one whose inode changed; a
 * file now shorter than its mapping (truncated in place) makes the map bad before a read faults
 * on it. Call about once a second. Returns 1 if the current map changed, 0 if not, or the
 * negative error of the file at the path (-EPERM: wrong owner or mode; -EUCLEAN: not a valid
 * store); the old map, if any, stays current unless it went bad.
 */
int hm_certstore_reader_check(struct hm_certstore_reader *r);

/*
 * A store truncated in place under a map of this process: every map is guarded in
 * common/pubfile.h's fault registry (the routing table's too), so a SIGBUS handler that calls
 * hm_pubfile_fault() survives the read that faults. The map is then zero pages and bad: its
 * reads fail -ESTALE, and hm_certstore_reader_map() returns NULL until a valid store is at the
 * path (the same file written back in place counts). hm_certstore_bad_maps() counts the maps
 * found bad so far (by a fault, or by hm_certstore_reader_check() seeing the file shorter than
 * its mapping).
 */
uint64_t hm_certstore_bad_maps(void);

/* Process-local references: a map stays mapped while referenced, even after it is replaced. */
void hm_certstore_map_ref(struct hm_certstore_map *m);
void hm_certstore_map_unref(struct hm_certstore_map *m);

/* The map's publish counter: one atomic load. Changes on every commit. */
uint64_t hm_certstore_map_version(const struct hm_certstore_map *m);

/* Facts about the map's published version (one validated read; zeroed if the writer kept
 * changing it). */
void hm_certstore_map_info(struct hm_certstore_map *m, struct hm_certstore_info *out);

/* The result of a lookup, copied out of shared memory. */
struct hm_cert_ref {
	uint64_t version; /* the store version the lookup read */
	uint64_t gen;	  /* the entry's generation: unique per put in this file */
	uint32_t entry;	  /* the entry's index (for hm_certstore_fetch) */
	uint8_t match;	  /* enum hm_cert_kind: how the name matched */
	uint8_t id[HM_CERT_ID_LEN];
	int64_t not_after;
	uint32_t cert_len, key_len;
};

/*
 * Picks the certificate for a TLS server name: the exact entry, else the wildcard one label
 * above, else "default" (docs/tls.md, section 3). key/n: the name as hm_host_key() gives it
 * (lowercase, no trailing dot); n = 0 means no SNI (default only). Returns 0 (out filled;
 * out->cert_len and key_len within HM_CERT_CHAIN_MAX and HM_CERT_KEY_MAX), -ENOENT (nothing
 * matches and there is no default), -EUCLEAN (the entry's lengths are out of bounds: a corrupt
 * file), -ESTALE (the map went bad: its file was truncated under it), or -EAGAIN (see the top).
 * No allocation, no copy of the entry's bytes.
 */
int hm_certstore_lookup(struct hm_certstore_map *m, const char *key, size_t n,
			struct hm_cert_ref *out);

/* The chain and key of an entry, in the caller's buffer. */
struct hm_cert_bytes {
	const uint8_t *cert; /* points into the caller's buffer */
	size_t cert_len;
	const uint8_t *key;
	size_t key_len;
};

/*
 * Copies the chain and key of ref's entry into buf (cap bytes; ref->cert_len + ref->key_len are
 * enough) and checks them. Returns 0 (out points into buf), -ENOBUFS (cap too small), -ESTALE
 * (the entry was replaced or removed since the lookup: look up again; or the map went bad, and
 * the lookup then fails too), -EUCLEAN (the bytes fail their checksum: a corrupt file), or
 * -EAGAIN.
 */
int hm_certstore_fetch(struct hm_certstore_map *m, const struct hm_cert_ref *ref, void *buf,
		       size_t cap, struct hm_cert_bytes *out);

/*
 * The session ticket keys: up to HM_TICKET_KEYS_MAX into keys (keys[0] encrypts, all decrypt),
 * and their generation into *gen (which changes whenever they are set). Returns the number of
 * keys (0: none, no tickets), -ESTALE (the map went bad), or -EAGAIN.
 */
int hm_certstore_ticket_keys(struct hm_certstore_map *m, struct hm_ticket_key *keys, uint64_t *gen);

/* ---- Writing (syncd) --------------------------------------------------------------------- */

struct hm_certstore_writer;

/* Open flags. */
#define HM_CERTSTORE_RESUME 1u /* continue from a valid existing file at path (keeps its state) */

/*
 * Opens a writer.
 *  path      the store file, or NULL for private memory (the origin's state).
 *  caps      capacities for a new file (NULL: HM_CERTSTORE_CAPS_DEFAULT); a resumed file keeps
 *            its own.
 *  flags     HM_CERTSTORE_RESUME: continue from the valid store at path (its epoch and seq are
 *            in hm_certstore_writer_info()). Otherwise a new, empty store is prepared under a
 *            temporary name (mode 0600) and appears at path with its first commit, replacing and
 *            retiring any file there.
 *  max_bytes growth stops at this file size (0: no limit): puts then fail -ENOSPC.
 * Returns 0, -EUCLEAN (RESUME asked and the file at path is not a valid store: it is not
 * touched), -EPERM (RESUME asked and the file is not owned by this uid or root, or has group or
 * other permissions), -EBUSY (another writer holds the path), or a negative errno.
 */
int hm_certstore_writer_open(struct hm_certstore_writer **out, const char *path,
			     const struct hm_certstore_caps *caps, unsigned flags,
			     uint64_t max_bytes);

/* Aborts an open batch and unmaps. The file stays for its readers. */
void hm_certstore_writer_close(struct hm_certstore_writer *w);

/* Starts a batch. 0 or -EBUSY if one is open. */
int hm_certstore_begin(struct hm_certstore_writer *w);

/*
 * Creates or replaces the entry named p->name in the open batch (p is borrowed for the call).
 * Returns 0, HM_EHOSTNAME (bad name), -EINVAL (an empty or oversized field), -ENOSPC (a capacity
 * or max_bytes is reached, or the file system is full: abort, hm_certstore_grow(), put again),
 * or -ENOMEM. After an error the batch must be aborted.
 */
int hm_certstore_put(struct hm_certstore_writer *w, const struct hm_cert_put *p);

/* Removes the entry name. 0, -ENOENT (no such entry), HM_EHOSTNAME. */
int hm_certstore_rm(struct hm_certstore_writer *w, const char *name, size_t n);

/* Replaces the ticket keys (n <= HM_TICKET_KEYS_MAX; keys[0] encrypts). 0 or -EINVAL. */
int hm_certstore_set_ticket_keys(struct hm_certstore_writer *w, const struct hm_ticket_key *keys,
				 unsigned n);

/*
 * Publishes the open batch as the version at sync position (epoch, seq): readers see all of it
 * or none of it. Returns 0 (the first commit of a new file also installs it at path), or a
 * negative errno if installing failed (the batch is then aborted).
 */
int hm_certstore_commit(struct hm_certstore_writer *w, uint64_t epoch, uint64_t seq);

/* Discards the open batch; the published version is unchanged. No-op if none is open. */
void hm_certstore_abort(struct hm_certstore_writer *w);

/*
 * Replaces the file by a larger one built from the published version (entry capacity doubled
 * where more than half is used, heap twice the live bytes, both at least *min where given),
 * installed as in docs/tls.md. No batch may be open. Returns 0, -ENOSPC (max_bytes), or a
 * negative errno; on failure the current file stays in use.
 */
int hm_certstore_grow(struct hm_certstore_writer *w, const struct hm_certstore_caps *min);

/* Facts about the writer's published version. */
void hm_certstore_writer_info(const struct hm_certstore_writer *w, struct hm_certstore_info *out);

/* Facts about the open batch as applied so far (what a commit would publish, but for the
 * version, epoch, seq and commit time, which stay the published ones). 0, or -EINVAL if no batch
 * is open. */
int hm_certstore_batch_info(const struct hm_certstore_writer *w, struct hm_certstore_info *out);

/* The ticket keys of the writer's published version into keys; returns how many. */
int hm_certstore_writer_ticket_keys(const struct hm_certstore_writer *w,
				    struct hm_ticket_key keys[HM_TICKET_KEYS_MAX]);

/*
 * Calls cb once per entry of the published version (the default entry, if any, first; then in
 * index order). Stops and returns cb's value when it is non-zero; else returns 0. Used for
 * snapshots and dump; a listing in parts uses a cursor (below).
 */
int hm_certstore_foreach(const struct hm_certstore_writer *w,
			 int (*cb)(void *ctx, const struct hm_cert_entry *e), void *ctx);

/*
 * A position in foreach's order of one published set of entries, so that a listing made in
 * parts (the admin certs command, one slice per write) resumes where it stopped: each part costs
 * what it lists, not what was listed before it. The fields are private to certstore.c; the
 * struct is public only so that a caller can hold one without an allocation.
 *
 * It remembers the file, the generation of the last put and the digest of the entries when it
 * started. While all three are unchanged no entry was put or removed, so every entry is still at
 * the index it had: a part continues the same listing. Anything else (a put, even of the same
 * bytes, a removal, a growth onto a new file) makes the cursor stale. Ticket keys do not count.
 */
struct hm_certstore_cursor {
	uint64_t file_id, gen;
	uint8_t digest[HM_CERTSTORE_DIGEST_LEN];
	uint32_t next; /* 0: the default entry is next; i + 1: entry index i */
};

/* Starts cur at the first entry of w's published version. */
void hm_certstore_cursor_init(struct hm_certstore_cursor *cur, const struct hm_certstore_writer *w);

/*
 * Calls cb once per entry from cur's position on, in foreach's order (e as foreach gives it: the
 * key among its bytes, which the admin certs command must never print), moving cur past each
 * entry cb is given (the one cb stops on included). Returns 0 when the last entry has been
 * listed (cur then stays at the end: a further call lists nothing and returns 0), cb's value when
 * it is non-zero (call again to go on), or -ESTALE when the entries changed since
 * hm_certstore_cursor_init(): nothing is listed, and the listing can only start again. The same
 * writer's thread, between its batches or during one (it reads the published version).
 */
int hm_certstore_list(const struct hm_certstore_writer *w, struct hm_certstore_cursor *cur,
		      int (*cb)(void *ctx, const struct hm_cert_entry *e), void *ctx);

/* The entry that would serve the TLS server name key (as hm_certstore_lookup() picks it), in the
 * writer's published version: 0 (out filled, bytes borrowed until the next write) or -ENOENT. */
int hm_certstore_resolve(const struct hm_certstore_writer *w, const char *key, size_t n,
			 struct hm_cert_entry *out);

/*
 * Consistency check for tests and start-up: the published copy's entries, hash chains, counts,
 * digest and blob checksums, and (no batch open) that both copies are byte-identical. 0 or
 * -EUCLEAN.
 */
int hm_certstore_verify(const struct hm_certstore_writer *w);

/* out = a + b, lane by lane (the digest of the union of two record sets; used to fold the
 * store's digest into the routing table's). out may alias a or b. */
void hm_certstore_digest_add(uint8_t out[HM_CERTSTORE_DIGEST_LEN],
			     const uint8_t a[HM_CERTSTORE_DIGEST_LEN],
			     const uint8_t b[HM_CERTSTORE_DIGEST_LEN]);

#endif
