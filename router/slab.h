/*
 * Size-class free lists for one worker: the heap behind everything whose size is not known in
 * advance but whose churn must not reach malloc per request (nghttp2's sessions, streams, frames
 * and HPACK entries through nghttp2_mem; the HTTP/2 engine's stream objects and buffers).
 *
 * Blocks come in classes from 32 B to 256 KiB of usable space, powers of two and the halfway
 * points between them (32, 48, 64, 96, ...: a request is rounded up to its class, wasting at most
 * a third). A freed block goes onto its class's list and the next request of that class
 * takes it back; each class keeps at most `keep` bytes of idle blocks and hands the rest back to
 * malloc, so a burst does not pin its peak memory forever. Requests above 256 KiB go straight to
 * malloc. Every block carries a 16-byte header naming its class, so free() and realloc() need no
 * size and the usable memory stays 16-byte aligned.
 *
 * Not thread-safe: one slab per worker, used from its loop thread only.
 */
#ifndef HM_ROUTER_SLAB_H
#define HM_ROUTER_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define HM__SLAB_MIN_SHIFT 5  /* 32 B */
#define HM__SLAB_MAX_SHIFT 18 /* 256 KiB */
#define HM__SLAB_CLASSES   (2 * (HM__SLAB_MAX_SHIFT - HM__SLAB_MIN_SHIFT) + 1)

struct hm__router_slab {
	void *free[HM__SLAB_CLASSES]; /* idle blocks, linked through their first word */
	uint32_t nfree[HM__SLAB_CLASSES];
	uint32_t keep[HM__SLAB_CLASSES]; /* idle blocks kept at most, per class */
	uint64_t heap_allocs;		 /* calls that reached malloc or realloc */
	uint64_t heap_frees;		 /* calls that reached free */
	uint64_t live;			 /* blocks handed out and not freed */
	uint64_t live_bytes;		 /* their usable bytes */
};

/* Prepares an empty slab keeping up to keep_bytes of idle blocks per class (at least 4). */
void hm__router_slab_init(struct hm__router_slab *s, size_t keep_bytes);
/* Returns every idle block to malloc. Blocks still handed out stay valid and may be freed with
 * hm__router_slab_free() later (they then go back to malloc as the class lists are empty, or
 * onto them if the slab is used again). */
void hm__router_slab_fini(struct hm__router_slab *s);

/* malloc/calloc/realloc/free semantics (NULL on failure; free(NULL) and realloc(NULL, n) work;
 * realloc(p, 0) frees and returns NULL). */
void *hm__router_slab_alloc(struct hm__router_slab *s, size_t n);
void *hm__router_slab_calloc(struct hm__router_slab *s, size_t nmemb, size_t size);
void *hm__router_slab_realloc(struct hm__router_slab *s, void *p, size_t n);
void hm__router_slab_free(struct hm__router_slab *s, void *p);

/* The usable size of a block (its class size, or the size asked for above 256 KiB). */
size_t hm__router_slab_usable(const void *p);

#endif
