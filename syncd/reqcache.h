/*
 * Recent control-request ids and the sequence number each was given, so that a request resent
 * by nng's REQ (after a reconnect, or its resend timer), or by hermodctl on a new connection or
 * to another origin (--control URL,URL), is answered with its original result instead of being
 * applied a second time. The id is CTL_REQ's req_id (docs/protocol.md), random per logical
 * request and the same in every part and every retry; a batch record carries it (batch.h).
 * Whoever applies a batch puts its id here before validating anything on top of it: the origin
 * for the batches it sequences and replays, and, with several origins on one store, for the
 * batches it learns from the others (docs/store-etcd.md), so a retry through any origin finds it.
 *
 * A fixed-capacity FIFO: the oldest entry is forgotten when a new one arrives at capacity.
 * Lookup is a hash table over the FIFO (open addressing, linear probing, deletion by backward
 * shift). Not thread-safe: the origin's loop owns it.
 */
#ifndef HM_SYNCD_REQCACHE_H
#define HM_SYNCD_REQCACHE_H

#include <stdbool.h>
#include <stdint.h>

#define HM__REQ_ID_LEN 16

struct hm__reqcache;

/* capacity is rounded up to a power of two (at least 16). Returns 0 or -ENOMEM. */
int hm__reqcache_new(struct hm__reqcache **out, uint32_t capacity);
void hm__reqcache_free(struct hm__reqcache *c);

/* Remembers id -> seq (replacing an existing entry's seq, which keeps its age). */
void hm__reqcache_put(struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN], uint64_t seq);

/* True (and *seq set) if id is remembered. */
bool hm__reqcache_get(const struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN],
		      uint64_t *seq);

uint32_t hm__reqcache_count(const struct hm__reqcache *c);
uint32_t hm__reqcache_capacity(const struct hm__reqcache *c);

/* Calls cb for each entry, oldest first; stops at and returns cb's first non-zero value. */
int hm__reqcache_foreach(const struct hm__reqcache *c,
			 int (*cb)(void *ctx, const uint8_t id[HM__REQ_ID_LEN], uint64_t seq),
			 void *ctx);

#endif
