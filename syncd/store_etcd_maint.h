/*
 * The etcd store's upkeep (docs/store-etcd.md, "Keeping etcd bounded"): one origin at a time
 * (the compactor: it holds P/compactor, a key attached to its lease) uploads the snapshots,
 * compacts etcd's history and defragments the members, one member at a time; every origin
 * watches for etcd's NOSPACE alarm, reports it, and the compactor recovers from it (compact to
 * now, defragment every member, disarm once the members are back under the quota).
 *
 * Threads: everything runs on the store's loop, through the store's etcd client. Callbacks are
 * never called from inside a call into this module.
 */
#ifndef HM_SYNCD_STORE_ETCD_MAINT_H
#define HM_SYNCD_STORE_ETCD_MAINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "syncd/etcd.h"
#include "syncd/jsonw.h"

/* What this module and store_etcd.c both read and write: keys are at most HM__ETCD_KEY_MAX
 * bytes; P/stage/<id>/meta holds HM__ETCD_STAGE_MAGIC, then the stage's seq (8 bytes,
 * little-endian). */
#define HM__ETCD_KEY_MAX     256
#define HM__ETCD_STAGE_MAGIC "HMSTAGE1"

/* Writes P/log/<seq> (prefix P; seq in 20 digits, so that the keys sort by seq) into buf
 * (HM__ETCD_KEY_MAX bytes); returns its length. */
size_t hm__etcd_log_key(char *buf, const char *prefix, uint64_t seq);

struct hm__etcd_maint_cfg {
	const char *prefix;	   /* "/hermod/" (copied) */
	const char *node;	   /* this origin's name, the value of P/compactor (copied) */
	uint64_t lease_ttl_ms;	   /* the compactor's lease (0: 10 s; etcd rounds it up to 2 s) */
	uint64_t compact_every_ms; /* history compaction period (0: 60 s) */
	uint64_t defrag_every_ms;  /* defragmentation check period (0: 10 min) */
	uint64_t defrag_min;	   /* a member's db file is defragmented from this size (bytes) */
	uint64_t quota;		   /* etcd's --quota-backend-bytes (0: etcd's default, 2 GiB) */
};

/* NOSPACE raised (nospace true, why says what etcd refuses and what happens next) or cleared. */
typedef void (*hm__etcd_maint_alarm_cb)(void *arg, bool nospace, const char *why);

struct hm__etcd_maint;

/* Loop thread. etcd is borrowed and must outlive the module's requests (hm__etcd_close() ends
 * them). Returns 0 or -ENOMEM. */
int hm__etcd_maint_new(struct hm__etcd_maint **out, struct hm__etcd *etcd,
		       const struct hm__etcd_maint_cfg *cfg, hm__etcd_maint_alarm_cb cb, void *arg);
/* Call after hm__etcd_close() (which ends every pending request), or without any pending. */
void hm__etcd_maint_free(struct hm__etcd_maint *m);

/* About once a second: seen_rev is the latest revision the store has seen (0: none yet). */
void hm__etcd_maint_tick(struct hm__etcd_maint *m, int64_t seen_rev);

/*
 * Test builds: the number in the file the environment variable env names (0 if it holds none),
 * or -1 without the file (and always in other builds). HM_TEST_ETCD_STAGE_LIMIT: a staged
 * member's chunks from that number on wait; HM_TEST_ETCD_GC_LIMIT: no more garbage collections
 * start than that number (counted since this origin started), so tests decide what is written
 * between two of them. Any thread; reads the file at each call.
 */
long hm__etcd_test_limit(const char *env);

/* Whether this origin is the compactor now, and its lease (0 if not): a snapshot install
 * compares P/compactor's lease with it, so a holder whose lease expired installs nothing. */
bool hm__etcd_maint_holder(const struct hm__etcd_maint *m);
int64_t hm__etcd_maint_lease(const struct hm__etcd_maint *m);
/* Writes P/compactor's key into buf (KEY_MAX bytes); returns its length. */
size_t hm__etcd_maint_key(const struct hm__etcd_maint *m, char *buf, size_t size);

/* Status fields: etcd_compactor (the holder's name or null), etcd_compactor_self,
 * etcd_defrags, etcd_disarms, etcd_stage_scans (garbage collections started),
 * etcd_stages_collected (stages deleted), etcd_alarm ("NOSPACE" or null), etcd_db_size,
 * etcd_db_size_in_use (of the member last asked). */
void hm__etcd_maint_status(const struct hm__etcd_maint *m, struct hm__jsonw *w);

/* For the store's compaction counter (the history compactions this origin did). */
uint64_t hm__etcd_maint_compactions(const struct hm__etcd_maint *m);

#endif
