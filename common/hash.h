/*
 * Non-cryptographic hashing: hm_hash64() for hash tables and the routing-state digest, and
 * hm_crc32c() for journal and table records. Both are deterministic across processes, nodes and
 * builds (little-endian reads, no platform-dependent seeds), which the digest relies on: equal
 * state must hash equal on every node.
 */
#ifndef HM_COMMON_HASH_H
#define HM_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

/* A fast 64-bit hash of n bytes, seeded. Good avalanche; not collision-resistant to an attacker
 * who knows the seed (hash tables are seeded per file, and their keys are not client-chosen). */
uint64_t hm_hash64(const void *data, size_t n, uint64_t seed);

/* CRC-32C (Castagnoli) of n bytes, continuing from crc (start with 0). */
uint32_t hm_crc32c(uint32_t crc, const void *data, size_t n);

#endif
