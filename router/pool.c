/*
 * The dyno connection pool of a worker: idle keep-alive connections, found by address.
 *
 * Buckets of a fixed-size hash table (chained through the entry) give O(1) lookup; one LRU list
 * of every idle connection gives eviction when the pool is full (the least recently used goes)
 * and expiry (one timer for the whole pool, armed for the oldest connection's deadline). Idle
 * connections keep reading (upstream.c), so a dyno closing one is noticed and it is removed;
 * they hold no buffer while idle. Most recently parked connections are taken first: they are the
 * ones least likely to have been closed by the dyno.
 */
#include "router/pool.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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

int hm__router_pool_init(struct hm__router_pool *p, uv_loop_t *loop, uint32_t max, uint64_t idle_ms,
			 hm__router_pool_close_cb close)
{
	memset(p, 0, sizeof(*p));
	p->buckets = malloc(BUCKETS * sizeof(*p->buckets));
	if (p->buckets == NULL)
		return -ENOMEM;
	for (size_t i = 0; i < BUCKETS; i++)
		hm__list_init(&p->buckets[i]);
	p->mask = BUCKETS - 1;
	p->max = max;
	p->idle_ms = idle_ms;
	p->loop = loop;
	p->close = close;
	hm__list_init(&p->lru);
	uv_timer_init(loop, &p->timer);
	return 0;
}

void hm__router_pool_fini(struct hm__router_pool *p)
{
	hm__router_pool_close_all(p);
	uv_close((uv_handle_t *)&p->timer, NULL);
	free(p->buckets);
	p->buckets = NULL;
}

static void unlink_entry(struct hm__router_pool *p, struct hm__router_pool_entry *e)
{
	hm__list_del(&e->bucket);
	hm__list_del(&e->lru);
	e->pooled = false;
	p->count--;
}

static struct hm__router_pool_entry *oldest(struct hm__router_pool *p)
{
	return hm__container_of(p->lru.prev, struct hm__router_pool_entry, lru);
}

struct hm__router_pool_entry *hm__router_pool_take(struct hm__router_pool *p,
						   const struct hm_addr *addr)
{
	struct hm__router_list *head = &p->buckets[hm__router_addr_hash(addr) & p->mask], *n;

	if (p->count == 0)
		return NULL;
	for (n = head->next; n != head; n = n->next) {
		struct hm__router_pool_entry *e =
		    hm__container_of(n, struct hm__router_pool_entry, bucket);

		if (hm__router_addr_eq(&e->addr, addr)) {
			unlink_entry(p, e);
			return e;
		}
	}
	return NULL;
}

static void arm(struct hm__router_pool *p)
{
	uint64_t now = uv_now(p->loop), due;

	if (hm__list_empty(&p->lru)) {
		uv_timer_stop(&p->timer);
		return;
	}
	due = oldest(p)->idle_since + p->idle_ms;
	/* A little slack so that a burst of parked connections expires in one sweep. */
	uv_timer_start(&p->timer, sweep, (due > now ? due - now : 0) + 10, 0);
}

static void sweep(uv_timer_t *t)
{
	struct hm__router_pool *p = hm__container_of(t, struct hm__router_pool, timer);
	uint64_t now = uv_now(p->loop);

	while (!hm__list_empty(&p->lru)) {
		struct hm__router_pool_entry *e = oldest(p);

		if (e->idle_since + p->idle_ms > now)
			break;
		unlink_entry(p, e);
		p->close(e);
	}
	arm(p);
}

void hm__router_pool_put(struct hm__router_pool *p, struct hm__router_pool_entry *e)
{
	bool was_empty = hm__list_empty(&p->lru);

	if (p->max == 0) {
		p->close(e);
		return;
	}
	if (p->count >= p->max) {
		struct hm__router_pool_entry *old = oldest(p);

		unlink_entry(p, old);
		p->close(old);
	}
	e->pooled = true;
	e->idle_since = uv_now(p->loop);
	hm__list_push(&p->buckets[hm__router_addr_hash(&e->addr) & p->mask], &e->bucket);
	hm__list_push(&p->lru, &e->lru);
	p->count++;
	if (was_empty || !uv_is_active((uv_handle_t *)&p->timer))
		arm(p);
}

void hm__router_pool_remove(struct hm__router_pool *p, struct hm__router_pool_entry *e)
{
	if (e->pooled)
		unlink_entry(p, e);
}

bool hm__router_pool_evict(struct hm__router_pool *p)
{
	struct hm__router_pool_entry *e;

	if (hm__list_empty(&p->lru))
		return false;
	e = oldest(p);
	unlink_entry(p, e);
	p->close(e);
	return true;
}

void hm__router_pool_close_all(struct hm__router_pool *p)
{
	while (!hm__list_empty(&p->lru)) {
		struct hm__router_pool_entry *e =
		    hm__container_of(p->lru.next, struct hm__router_pool_entry, lru);

		unlink_entry(p, e);
		p->close(e);
	}
	uv_timer_stop(&p->timer);
}
