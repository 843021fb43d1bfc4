/*
 * OpenSSL's memory in a worker (tls.h, hm_tls_mem_init): a recycling allocator in front of
 * malloc, so that a keep-alive TLS connection in its steady state costs no heap call per request,
 * like everything else on the router's hot path. OpenSSL 3.0 allocates on every record: a
 * 16.5 KiB read or write buffer each time one is needed again (SSL_MODE_RELEASE_BUFFERS, which
 * keeps an idle connection small), and a few small objects per record. Blocks of those sizes go
 * back to per-size free lists (bounded) instead of to malloc; everything else passes through.
 *
 * Not in a sanitizer build, so that AddressSanitizer sees OpenSSL's blocks come and go.
 *
 * Each block carries a 16-byte header (its class and requested size). The lists are per process
 * and unlocked: a worker is one thread, and the master never uses OpenSSL.
 */
#include "router/tls.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#define HDR	 16
#define NO_CLASS 0xffffffffu

struct mem_hdr {
	uint32_t cls;
	uint32_t pad_;
	uint64_t size;
};

_Static_assert(sizeof(struct mem_hdr) == HDR, "header size");

struct mem_class {
	size_t min, size; /* the requests it serves; usable bytes of a block */
	unsigned max;
	unsigned n;
	void *free; /* blocks, linked through their first bytes after the header */
};

/* Small objects, and the record buffers (16384 + overhead + alignment). */
static struct mem_class classes[] = {
    {1, 64, 4096, 0, NULL},
    {65, 256, 1024, 0, NULL},
    {16 * 1024, 17 * 1024 + 512, 128, 0, NULL},
};

#define NCLASSES (sizeof(classes) / sizeof(classes[0]))

static uint32_t class_of(size_t n)
{
	for (uint32_t i = 0; i < NCLASSES; i++)
		if (n >= classes[i].min && n <= classes[i].size)
			return i;
	return NO_CLASS;
}

static void *mem_malloc(size_t n, const char *file, int line)
{
	uint32_t c = class_of(n);
	struct mem_hdr *h;

	(void)file;
	(void)line;
	if (c != NO_CLASS && classes[c].free != NULL) {
		h = classes[c].free;
		memcpy(&classes[c].free, h + 1, sizeof(void *));
		classes[c].n--;
	} else {
		h = malloc(HDR + (c != NO_CLASS ? classes[c].size : n));
		if (h == NULL)
			return NULL;
	}
	h->cls = c;
	h->size = n;
	return h + 1;
}

static void mem_free(void *p, const char *file, int line)
{
	struct mem_hdr *h;

	(void)file;
	(void)line;
	if (p == NULL)
		return;
	h = (struct mem_hdr *)p - 1;
	if (h->cls < NCLASSES && classes[h->cls].n < classes[h->cls].max) {
		memcpy(p, &classes[h->cls].free, sizeof(void *));
		classes[h->cls].free = h;
		classes[h->cls].n++;
		return;
	}
	free(h);
}

static void *mem_realloc(void *p, size_t n, const char *file, int line)
{
	struct mem_hdr *h;
	void *q;

	if (p == NULL)
		return mem_malloc(n, file, line);
	h = (struct mem_hdr *)p - 1;
	if (h->cls < NCLASSES && n <= classes[h->cls].size) {
		h->size = n;
		return p;
	}
	if (h->cls == NO_CLASS && class_of(n) == NO_CLASS) {
		h = realloc(h, HDR + n);
		if (h == NULL)
			return NULL;
		h->size = n;
		return h + 1;
	}
	q = mem_malloc(n, file, line);
	if (q == NULL)
		return NULL;
	memcpy(q, p, h->size < n ? (size_t)h->size : n);
	mem_free(p, file, line);
	return q;
}

int hm_tls_mem_init(void)
{
#if defined(__SANITIZE_ADDRESS__)
	return -ENOTSUP; /* the sanitizer sees every block of OpenSSL's come and go */
#endif
	return CRYPTO_set_mem_functions(mem_malloc, mem_realloc, mem_free) == 1 ? 0 : -EBUSY;
}
