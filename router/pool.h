/*
 * The idle keep-alive connections to dynos of a worker, found by address.
 *
 * The pool holds entries (struct hm__router_pool_entry, embedded in the connection object of
 * router/upstream.c) and knows nothing else of them: when it has to drop one (full, expired,
 * evicted, closing all) it unlinks it and hands it to the close callback its owner registered.
 * So the pool depends on nothing above it.
 *
 * Everything here runs on the worker's loop thread.
 */
#ifndef HM_ROUTER_POOL_H
#define HM_ROUTER_POOL_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/model.h"
#include "router/list.h"

/* A connection's place in the pool. */
struct hm__router_pool_entry {
	struct hm__router_list bucket; /* same-hash list */
	struct hm__router_list lru;    /* all idle, most recent first */
	struct hm_addr addr;	       /* the dyno's (set by the owner) */
	uint64_t idle_since;	       /* loop ms, while pooled */
	bool pooled;
};

/* Drops an entry the pool unlinked: the connection is to be closed. */
typedef void (*hm__router_pool_close_cb)(struct hm__router_pool_entry *e);

struct hm__router_pool {
	struct hm__router_list *buckets; /* owned */
	uint32_t mask;
	uint32_t count;
	uint32_t max;
	uint64_t idle_ms;
	struct hm__router_list lru;
	uv_timer_t timer; /* one for every idle connection: the oldest one's expiry */
	uv_loop_t *loop;
	hm__router_pool_close_cb close;
};

/* Prepares an empty pool of at most max connections, each kept idle_ms. Returns 0 or -ENOMEM. */
int hm__router_pool_init(struct hm__router_pool *p, uv_loop_t *loop, uint32_t max, uint64_t idle_ms,
			 hm__router_pool_close_cb close);
/* Drops every entry and closes the timer (the loop must run for its close callback); the
 * buckets are freed. */
void hm__router_pool_fini(struct hm__router_pool *p);

/* An idle connection to addr, unlinked from the pool (most recently parked first), or NULL. */
struct hm__router_pool_entry *hm__router_pool_take(struct hm__router_pool *p,
						   const struct hm_addr *addr);
/* Parks a connection (e->addr set); may drop the oldest to make room, or e itself if the pool
 * holds none. */
void hm__router_pool_put(struct hm__router_pool *p, struct hm__router_pool_entry *e);
/* Unlinks a pooled entry (its dyno closed it or sent bytes); no callback. Harmless if not
 * pooled. */
void hm__router_pool_remove(struct hm__router_pool *p, struct hm__router_pool_entry *e);
/* Drops the least recently used entry (its descriptor is free at once). False if empty. */
bool hm__router_pool_evict(struct hm__router_pool *p);
/* Drops every entry. */
void hm__router_pool_close_all(struct hm__router_pool *p);

uint32_t hm__router_addr_hash(const struct hm_addr *a);
bool hm__router_addr_eq(const struct hm_addr *a, const struct hm_addr *b);

#endif
