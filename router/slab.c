/*
 * Size-class free lists (see slab.h). A block is [16-byte header][usable bytes]; the header holds
 * the class, or for a large block the size asked for, so the usable size is always known.
 */
#include "router/slab.h"

#include <stdlib.h>
#include <string.h>

#define HDR	   16u
#define LARGE_MARK 0xffffffffu

struct blk {
	uint32_t cls; /* class index, or LARGE_MARK */
	uint32_t pad;
	uint64_t size; /* large blocks: usable size */
};

_Static_assert(sizeof(struct blk) == HDR, "block header is 16 bytes");

/* Class c holds 2^(5 + c/2) bytes, or one and a half times that for odd c. */
static size_t class_size(int c)
{
	return (size_t)(c & 1 ? 48 : 32) << (c >> 1);
}

/* The smallest class for n bytes, 0 < n <= 256 KiB. */
static int class_of(size_t n)
{
	int b;

	if (n <= 32)
		return 0;
	b = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^b < n <= 2^(b+1) */
	if (n <= (size_t)3 << (b - 1))
		return 2 * (b - HM__SLAB_MIN_SHIFT) + 1;
	return 2 * (b + 1 - HM__SLAB_MIN_SHIFT);
}

static struct blk *blk_of(const void *p)
{
	return (struct blk *)((char *)(uintptr_t)p - HDR);
}

void hm__router_slab_init(struct hm__router_slab *s, size_t keep_bytes)
{
	memset(s, 0, sizeof(*s));
	for (int c = 0; c < HM__SLAB_CLASSES; c++) {
		size_t k = keep_bytes / class_size(c);

		s->keep[c] = (uint32_t)(k < 4 ? 4 : k > UINT32_MAX ? UINT32_MAX : k);
	}
}

void hm__router_slab_fini(struct hm__router_slab *s)
{
	for (int c = 0; c < HM__SLAB_CLASSES; c++) {
		while (s->free[c] != NULL) {
			void *next = *(void **)s->free[c];

			free(blk_of(s->free[c]));
			s->heap_frees++;
			s->free[c] = next;
		}
		s->nfree[c] = 0;
	}
}

void *hm__router_slab_alloc(struct hm__router_slab *s, size_t n)
{
	struct blk *b;
	int c;

	if (n > class_size(HM__SLAB_CLASSES - 1)) {
		if (n > SIZE_MAX - HDR)
			return NULL;
		b = malloc(HDR + n);
		if (b == NULL)
			return NULL;
		s->heap_allocs++;
		b->cls = LARGE_MARK;
		b->size = n;
		s->live++;
		s->live_bytes += n;
		return (char *)b + HDR;
	}
	c = class_of(n);
	if (s->free[c] != NULL) {
		void *p = s->free[c];

		s->free[c] = *(void **)p;
		s->nfree[c]--;
		s->live++;
		s->live_bytes += class_size(c);
		return p;
	}
	b = malloc(HDR + class_size(c));
	if (b == NULL)
		return NULL;
	s->heap_allocs++;
	b->cls = (uint32_t)c;
	b->size = class_size(c);
	s->live++;
	s->live_bytes += b->size;
	return (char *)b + HDR;
}

void *hm__router_slab_calloc(struct hm__router_slab *s, size_t nmemb, size_t size)
{
	void *p;

	if (size != 0 && nmemb > SIZE_MAX / size)
		return NULL;
	p = hm__router_slab_alloc(s, nmemb * size);
	if (p != NULL)
		memset(p, 0, nmemb * size);
	return p;
}

void hm__router_slab_free(struct hm__router_slab *s, void *p)
{
	struct blk *b;

	if (p == NULL)
		return;
	b = blk_of(p);
	s->live--;
	s->live_bytes -= b->size;
	if (b->cls == LARGE_MARK || s->nfree[b->cls] >= s->keep[b->cls]) {
		free(b);
		s->heap_frees++;
		return;
	}
	*(void **)p = s->free[b->cls];
	s->free[b->cls] = p;
	s->nfree[b->cls]++;
}

size_t hm__router_slab_usable(const void *p)
{
	return (size_t)blk_of(p)->size;
}

void *hm__router_slab_realloc(struct hm__router_slab *s, void *p, size_t n)
{
	void *q;
	size_t have;

	if (p == NULL)
		return hm__router_slab_alloc(s, n);
	if (n == 0) {
		hm__router_slab_free(s, p);
		return NULL;
	}
	have = hm__router_slab_usable(p);
	if (n <= have && (blk_of(p)->cls != LARGE_MARK || n == have))
		return p;
	q = hm__router_slab_alloc(s, n);
	if (q == NULL)
		return NULL;
	memcpy(q, p, n < have ? n : have);
	hm__router_slab_free(s, p);
	return q;
}
