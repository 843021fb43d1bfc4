/*
 * Batched kernel randomness and a xoshiro256** PRNG (Blackman and Vigna), see rand.h.
 */
#include "router/rand.h"

#include <string.h>

#include "common/util.h"

#define POOL 4096

static uint8_t pool[POOL];
static size_t pool_left; /* unread bytes are pool[POOL - pool_left, POOL) */
static uint64_t xs[4];

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t hm__router_rand_u64(void)
{
	uint64_t r = rotl(xs[1] * 5, 7) * 9, t = xs[1] << 17;

	xs[2] ^= xs[0];
	xs[3] ^= xs[1];
	xs[1] ^= xs[2];
	xs[0] ^= xs[3];
	xs[2] ^= t;
	xs[3] = rotl(xs[3], 45);
	return r;
}

int hm__router_rand_reset(void)
{
	int r;

	memset(pool, 0, sizeof(pool));
	pool_left = 0;
	r = hm_random_bytes(xs, sizeof(xs));
	if (r != 0)
		return r;
	if ((xs[0] | xs[1] | xs[2] | xs[3]) == 0)
		xs[0] = 1; /* the one state xoshiro cannot leave */
	return 0;
}

int hm__router_rand_bytes(void *buf, size_t n)
{
	if (n > pool_left) {
		int r = hm_random_bytes(pool, POOL);

		if (r != 0)
			return r;
		pool_left = POOL;
	}
	memcpy(buf, pool + (POOL - pool_left), n);
	/* Used bytes are wiped so that a later fork or core dump cannot replay them. */
	memset(pool + (POOL - pool_left), 0, n);
	pool_left -= n;
	return 0;
}

void hm__router_uuid_format(const uint8_t rnd[16], char out[HM__ROUTER_UUID_LEN])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t b[16];
	size_t o = 0;

	memcpy(b, rnd, 16);
	b[6] = (uint8_t)((b[6] & 0x0f) | 0x40); /* version 4 */
	b[8] = (uint8_t)((b[8] & 0x3f) | 0x80); /* variant 10 */
	for (size_t i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = hex[b[i] >> 4];
		out[o++] = hex[b[i] & 15];
	}
}

int hm__router_uuid4(char out[HM__ROUTER_UUID_LEN])
{
	uint8_t b[16];
	int r = hm__router_rand_bytes(b, sizeof(b));

	if (r != 0)
		return r;
	hm__router_uuid_format(b, out);
	return 0;
}
