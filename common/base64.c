/*
 * Base64, both alphabets, one table each; three input bytes make four characters.
 */
#include "common/base64.h"

#include <errno.h>
#include <stdbool.h>

static const char std_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t hm_b64_encoded_len(size_t n, unsigned flags)
{
	if (flags & HM_B64_NOPAD)
		return n / 3 * 4 + (n % 3 == 0 ? 0 : n % 3 + 1);
	return (n + 2) / 3 * 4;
}

size_t hm_b64_encode(const void *src, size_t n, char *dst, unsigned flags)
{
	const char *t = (flags & HM_B64_URL) ? url_chars : std_chars;
	const uint8_t *s = src;
	size_t o = 0, i = 0;

	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];

		dst[o++] = t[v >> 18];
		dst[o++] = t[(v >> 12) & 63];
		dst[o++] = t[(v >> 6) & 63];
		dst[o++] = t[v & 63];
	}
	if (n - i > 0) {
		uint32_t v = (uint32_t)s[i] << 16 | (n - i == 2 ? (uint32_t)s[i + 1] << 8 : 0);

		dst[o++] = t[v >> 18];
		dst[o++] = t[(v >> 12) & 63];
		if (n - i == 2)
			dst[o++] = t[(v >> 6) & 63];
		if (!(flags & HM_B64_NOPAD)) {
			if (n - i == 1)
				dst[o++] = '=';
			dst[o++] = '=';
		}
	}
	return o;
}

static int val(char ch)
{
	if (ch >= 'A' && ch <= 'Z')
		return ch - 'A';
	if (ch >= 'a' && ch <= 'z')
		return ch - 'a' + 26;
	if (ch >= '0' && ch <= '9')
		return ch - '0' + 52;
	if (ch == '+')
		return 62;
	if (ch == '/')
		return 63;
	return -1;
}

int hm_b64_decode(const char *src, size_t n, uint8_t *dst)
{
	size_t o = 0;

	if (n % 4 != 0)
		return -EINVAL;
	for (size_t i = 0; i < n; i += 4) {
		int a = val(src[i]), b = val(src[i + 1]), c = -1, d = -1;
		bool last = i + 4 == n;

		if (a < 0 || b < 0)
			return -EINVAL;
		if (last && src[i + 2] == '=' && src[i + 3] == '=') {
			if (b & 15) /* bits no byte holds must be zero */
				return -EINVAL;
			dst[o++] = (uint8_t)(a << 2 | b >> 4);
			break;
		}
		if ((c = val(src[i + 2])) < 0)
			return -EINVAL;
		if (last && src[i + 3] == '=') {
			if (c & 3)
				return -EINVAL;
			dst[o++] = (uint8_t)(a << 2 | b >> 4);
			dst[o++] = (uint8_t)((b & 15) << 4 | c >> 2);
			break;
		}
		if ((d = val(src[i + 3])) < 0)
			return -EINVAL;
		dst[o++] = (uint8_t)(a << 2 | b >> 4);
		dst[o++] = (uint8_t)((b & 15) << 4 | c >> 2);
		dst[o++] = (uint8_t)((c & 3) << 6 | d);
	}
	return (int)o;
}
