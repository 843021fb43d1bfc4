/*
 * The request-id cache: a ring of entries in arrival order plus a hash index of ring positions.
 * Positions are absolute counters (entry i lives at ring[i & mask]); the index stores
 * position + 1 so that 0 means an empty slot. The index has twice as many slots as the ring,
 * so probes stay short; removal shifts later entries of a probe run back, so there are no
 * tombstones.
 */
#include "syncd/reqcache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/util.h"

struct entry {
	uint8_t id[HM__REQ_ID_LEN];
	uint64_t seq;
};

struct hm__reqcache {
	struct entry *ring;
	uint32_t cap, mask; /* ring capacity, cap - 1 */
	uint64_t head;	    /* position of the oldest entry */
	uint64_t tail;	    /* position after the newest */
	uint64_t *index;    /* position + 1, or 0 */
	uint32_t imask;	    /* index slots - 1 */
	uint64_t seed;
};

int hm__reqcache_new(struct hm__reqcache **out, uint32_t capacity)
{
	struct hm__reqcache *c = calloc(1, sizeof(*c));
	uint32_t cap = 16;

	if (c == NULL)
		return -ENOMEM;
	while (cap < capacity && cap < (1u << 30))
		cap <<= 1;
	c->cap = cap;
	c->mask = cap - 1;
	c->imask = 2 * cap - 1;
	c->ring = calloc(cap, sizeof(*c->ring));
	c->index = calloc(2 * (size_t)cap, sizeof(*c->index));
	if (c->ring == NULL || c->index == NULL) {
		hm__reqcache_free(c);
		return -ENOMEM;
	}
	hm_random_bytes(&c->seed, sizeof(c->seed));
	*out = c;
	return 0;
}

void hm__reqcache_free(struct hm__reqcache *c)
{
	if (c == NULL)
		return;
	free(c->ring);
	free(c->index);
	free(c);
}

static uint32_t slot_of(const struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN])
{
	return (uint32_t)hm_hash64(id, HM__REQ_ID_LEN, c->seed) & c->imask;
}

/* The index slot holding id, or the empty slot where it would go. */
static uint32_t find(const struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN])
{
	uint32_t s = slot_of(c, id);

	while (c->index[s] != 0 &&
	       memcmp(c->ring[(c->index[s] - 1) & c->mask].id, id, HM__REQ_ID_LEN) != 0)
		s = (s + 1) & c->imask;
	return s;
}

static void index_remove(struct hm__reqcache *c, uint32_t s)
{
	uint32_t j = s;

	c->index[s] = 0;
	for (;;) {
		uint32_t home;

		j = (j + 1) & c->imask;
		if (c->index[j] == 0)
			return;
		home = slot_of(c, c->ring[(c->index[j] - 1) & c->mask].id);
		/* Move j back to s if its home is not cyclically within (s, j]. */
		if (((j - home) & c->imask) >= ((j - s) & c->imask)) {
			c->index[s] = c->index[j];
			c->index[j] = 0;
			s = j;
		}
	}
}

void hm__reqcache_put(struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN], uint64_t seq)
{
	uint32_t s = find(c, id);
	struct entry *e;

	if (c->index[s] != 0) {
		c->ring[(c->index[s] - 1) & c->mask].seq = seq;
		return;
	}
	if (c->tail - c->head == c->cap) {
		index_remove(c, find(c, c->ring[c->head & c->mask].id));
		c->head++;
		s = find(c, id); /* the removal may have shifted the run id probes */
	}
	e = &c->ring[c->tail & c->mask];
	memcpy(e->id, id, HM__REQ_ID_LEN);
	e->seq = seq;
	c->index[s] = c->tail + 1;
	c->tail++;
}

bool hm__reqcache_get(const struct hm__reqcache *c, const uint8_t id[HM__REQ_ID_LEN], uint64_t *seq)
{
	uint32_t s = find(c, id);

	if (c->index[s] == 0)
		return false;
	*seq = c->ring[(c->index[s] - 1) & c->mask].seq;
	return true;
}

uint32_t hm__reqcache_count(const struct hm__reqcache *c)
{
	return (uint32_t)(c->tail - c->head);
}

uint32_t hm__reqcache_capacity(const struct hm__reqcache *c)
{
	return c->cap;
}

int hm__reqcache_foreach(const struct hm__reqcache *c,
			 int (*cb)(void *ctx, const uint8_t id[HM__REQ_ID_LEN], uint64_t seq),
			 void *ctx)
{
	for (uint64_t p = c->head; p < c->tail; p++) {
		const struct entry *e = &c->ring[p & c->mask];
		int r = cb(ctx, e->id, e->seq);

		if (r != 0)
			return r;
	}
	return 0;
}
