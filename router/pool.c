/*
 * The dyno connection pool of a worker: idle keep-alive connections, found by address.
 *
 * Buckets of a fixed-size hash table (chained through the connection) give O(1) lookup; one LRU
 * list of every idle connection gives eviction when the pool is full (the least recently used
 * goes) and expiry (one timer for the whole pool, armed for the oldest connection's deadline).
 * Idle connections keep reading, so a dyno closing one is noticed and it is dropped; they hold
 * no buffer while idle. Most recently parked connections are taken first: they are the ones
 * least likely to have been closed by the dyno.
 */
#include <stdlib.h>
#include <string.h>

#include "router/router.h"

#define BUCKETS 1024

uint32_t hm__router_addr_hash(const struct hm_addr *a)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < (a->family == 6 ? 16u : 4u); i++)
		h = (h ^ a->ip[i]) * 0x100000001b3ull;
	h = (h ^ a->port) * 0x100000001b3ull;
	return (uint32_t)(h ^ (h >> 32));
}

bool hm__router_addr_eq(const struct hm_addr *a, const struct hm_addr *b)
{
	return a->family == b->family && a->port == b->port &&
	       memcmp(a->ip, b->ip, a->family == 6 ? 16u : 4u) == 0;
}

static void sweep(uv_timer_t *t);

int hm__router_pool_init(struct hm__router_worker *w)
{
	struct hm__router_pool *p = &w->pool;

	p->buckets = malloc(BUCKETS * sizeof(*p->buckets));
	if (p->buckets == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < BUCKETS; i++)
		hm__list_init(&p->buckets[i]);
	p->mask = BUCKETS - 1;
	p->count = 0;
	p->max = (uint32_t)w->cfg->pool_max;
	p->idle_ms = (uint64_t)w->cfg->pool_idle_timeout;
	hm__list_init(&p->lru);
	uv_timer_init(&w->loop, &p->timer);
	return 0;
}

static void unlink_conn(struct hm__router_pool *p, struct hm__router_upstream *u)
{
	hm__list_del(&u->bucket);
	hm__list_del(&u->lru);
	u->pooled = false;
	p->count--;
}

struct hm__router_upstream *hm__router_pool_take(struct hm__router_worker *w,
						 const struct hm_addr *addr)
{
	struct hm__router_pool *p = &w->pool;
	struct hm__router_list *head = &p->buckets[hm__router_addr_hash(addr) & p->mask], *n;

	if (p->count == 0)
		return NULL;
	for (n = head->next; n != head; n = n->next) {
		struct hm__router_upstream *u =
		    hm__container_of(n, struct hm__router_upstream, bucket);

		if (hm__router_addr_eq(&u->addr, addr)) {
			unlink_conn(p, u);
			return u;
		}
	}
	return NULL;
}

static void arm(struct hm__router_worker *w)
{
	struct hm__router_pool *p = &w->pool;
	struct hm__router_upstream *oldest;
	uint64_t now = uv_now(&w->loop), due;

	if (hm__list_empty(&p->lru)) {
		uv_timer_stop(&p->timer);
		return;
	}
	oldest = hm__container_of(p->lru.prev, struct hm__router_upstream, lru);
	due = oldest->idle_since + p->idle_ms;
	/* A little slack so that a burst of parked connections expires in one sweep. */
	uv_timer_start(&p->timer, sweep, (due > now ? due - now : 0) + 10, 0);
}

static void sweep(uv_timer_t *t)
{
	struct hm__router_worker *w = hm__container_of(t, struct hm__router_worker, pool.timer);
	struct hm__router_pool *p = &w->pool;
	uint64_t now = uv_now(&w->loop);

	while (!hm__list_empty(&p->lru)) {
		struct hm__router_upstream *u =
		    hm__container_of(p->lru.prev, struct hm__router_upstream, lru);

		if (u->idle_since + p->idle_ms > now)
			break;
		unlink_conn(p, u);
		hm__router_upstream_close(u);
	}
	arm(w);
}

void hm__router_pool_put(struct hm__router_worker *w, struct hm__router_upstream *u)
{
	struct hm__router_pool *p = &w->pool;
	bool was_empty = hm__list_empty(&p->lru);

	if (p->max == 0) {
		hm__router_upstream_close(u);
		return;
	}
	if (p->count >= p->max) {
		struct hm__router_upstream *old =
		    hm__container_of(p->lru.prev, struct hm__router_upstream, lru);

		unlink_conn(p, old);
		hm__router_upstream_close(old);
	}
	u->x = NULL;
	u->pooled = true;
	u->idle_since = uv_now(&w->loop);
	hm__list_push(&p->buckets[hm__router_addr_hash(&u->addr) & p->mask], &u->bucket);
	hm__list_push(&p->lru, &u->lru);
	p->count++;
	if (was_empty || !uv_is_active((uv_handle_t *)&p->timer))
		arm(w);
}

void hm__router_pool_remove(struct hm__router_worker *w, struct hm__router_upstream *u)
{
	if (u->pooled)
		unlink_conn(&w->pool, u);
}

bool hm__router_pool_evict(struct hm__router_worker *w)
{
	struct hm__router_pool *p = &w->pool;
	struct hm__router_upstream *u;

	if (hm__list_empty(&p->lru))
		return false;
	u = hm__container_of(p->lru.prev, struct hm__router_upstream, lru);
	unlink_conn(p, u);
	hm__router_upstream_close(u);
	return true;
}

void hm__router_pool_close_all(struct hm__router_worker *w)
{
	struct hm__router_pool *p = &w->pool;

	while (!hm__list_empty(&p->lru)) {
		struct hm__router_upstream *u =
		    hm__container_of(p->lru.next, struct hm__router_upstream, lru);

		unlink_conn(p, u);
		hm__router_upstream_close(u);
	}
	uv_timer_stop(&p->timer);
}
