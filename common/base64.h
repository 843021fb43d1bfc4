/*
 * Base64 (RFC 4648) in the two forms hermod meets: the standard alphabet with padding (etcd's
 * JSON gateway carries keys and values in it) and the URL-safe alphabet without padding
 * (session-affinity cookies). Decoding takes the standard, padded form only, and only in its
 * canonical spelling, so that one byte string has exactly one encoding.
 */
#ifndef HM_COMMON_BASE64_H
#define HM_COMMON_BASE64_H

#include <stddef.h>
#include <stdint.h>

#define HM_B64_URL   1u /* '-' and '_' for '+' and '/' */
#define HM_B64_NOPAD 2u /* no trailing '=' */

/* Bytes that hm_b64_encode() writes for n input bytes. */
size_t hm_b64_encoded_len(size_t n, unsigned flags);

/* Encodes n bytes into dst (hm_b64_encoded_len() bytes, no NUL). Returns that length. */
size_t hm_b64_encode(const void *src, size_t n, char *dst, unsigned flags);

/* Decodes standard, padded base64 of n characters into dst (at most n / 4 * 3 bytes). Returns
 * the decoded length, or -EINVAL for a bad length, a character outside the alphabet, padding
 * anywhere but the end, or bits set past the last byte (a non-canonical spelling). */
int hm_b64_decode(const char *src, size_t n, uint8_t *dst);

#endif
