/*
 * A growable byte buffer for building records, file images and JSON in syncd. Inline helpers;
 * a failed allocation sets `oom` and makes every later append a no-op, so a builder checks once
 * at the end instead of after every append.
 */
#ifndef HM_SYNCD_BUF_H
#define HM_SYNCD_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct hm__buf {
	char *data; /* owned */
	size_t len;
	size_t cap;
	bool oom;
};

/* Makes room for n more bytes; false (and oom set) if memory ran out. */
static inline bool hm__buf_reserve(struct hm__buf *b, size_t n)
{
	size_t cap;
	char *p;

	if (b->oom)
		return false;
	if (b->cap - b->len >= n)
		return true;
	cap = b->cap ? b->cap : 256;
	while (cap - b->len < n) {
		if (cap > SIZE_MAX / 2) {
			b->oom = true;
			return false;
		}
		cap *= 2;
	}
	if ((p = realloc(b->data, cap)) == NULL) {
		b->oom = true;
		return false;
	}
	b->data = p;
	b->cap = cap;
	return true;
}

static inline void hm__buf_add(struct hm__buf *b, const void *p, size_t n)
{
	if (n > 0 && hm__buf_reserve(b, n)) {
		memcpy(b->data + b->len, p, n);
		b->len += n;
	}
}

static inline void hm__buf_add_u32(struct hm__buf *b, uint32_t v)
{
	uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	hm__buf_add(b, le, 4);
}

static inline void hm__buf_add_u64(struct hm__buf *b, uint64_t v)
{
	hm__buf_add_u32(b, (uint32_t)v);
	hm__buf_add_u32(b, (uint32_t)(v >> 32));
}

static inline void hm__buf_reset(struct hm__buf *b)
{
	b->len = 0;
	b->oom = false;
}

static inline void hm__buf_fini(struct hm__buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

/* Little-endian loads and stores for file formats. */
static inline uint32_t hm__le32(const void *p)
{
	const uint8_t *b = p;

	return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static inline uint64_t hm__le64(const void *p)
{
	return (uint64_t)hm__le32(p) | (uint64_t)hm__le32((const uint8_t *)p + 4) << 32;
}

static inline void hm__put_le32(void *p, uint32_t v)
{
	uint8_t *b = p;

	b[0] = (uint8_t)v;
	b[1] = (uint8_t)(v >> 8);
	b[2] = (uint8_t)(v >> 16);
	b[3] = (uint8_t)(v >> 24);
}

static inline void hm__put_le64(void *p, uint64_t v)
{
	hm__put_le32(p, (uint32_t)v);
	hm__put_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

#endif
