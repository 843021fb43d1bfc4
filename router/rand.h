/*
 * Randomness for a worker. Two sources, for two needs:
 *
 *  - hm__router_rand_bytes(): kernel randomness (getrandom(2)) for X-Request-Id UUIDs and
 *    secrets, drawn from a 4 KiB pool refilled in one syscall, so a request costs no syscall.
 *    A forked worker must call hm__router_rand_reset() so it never reuses its parent's pool.
 *  - hm__router_rand_u64(): xoshiro256** seeded from the kernel, for picking dynos. Fast, not
 *    cryptographic; dyno choice needs spread, not secrecy.
 *
 * Process-global and single-threaded (a worker has one loop thread).
 */
#ifndef HM_ROUTER_RAND_H
#define HM_ROUTER_RAND_H

#include <stddef.h>
#include <stdint.h>

#define HM__ROUTER_UUID_LEN 36

/* Forgets any pooled bytes and reseeds the PRNG from the kernel. Returns 0 or a negative errno. */
int hm__router_rand_reset(void);

/* Fills buf with n bytes of kernel randomness (n <= 256). Returns 0 or a negative errno. */
int hm__router_rand_bytes(void *buf, size_t n);

/* 64 pseudo-random bits. */
uint64_t hm__router_rand_u64(void);

/* Formats 16 random bytes as a lowercase UUIDv4 (version and variant bits set) into out
 * (HM__ROUTER_UUID_LEN bytes, not NUL-terminated). */
void hm__router_uuid_format(const uint8_t rnd[16], char out[HM__ROUTER_UUID_LEN]);

/* A fresh UUIDv4 from kernel randomness. Returns 0 or a negative errno. */
int hm__router_uuid4(char out[HM__ROUTER_UUID_LEN]);

#endif
