/*
 * HMAC-SHA256 session-affinity cookies (see affinity.h). mbedtls_md_hmac() would set up and free
 * a context per call (two allocations); one keyed context per worker, reset per use, does not.
 */
#include "router/affinity.h"

#include <errno.h>
#include <string.h>

#define MAC_LEN 32
#define MAC_B64 43 /* base64url of 32 bytes, unpadded */
#define DOMAIN	"hermod-affinity-v1"

int hm__router_affinity_init(struct hm__router_affinity *a, const void *secret, size_t len)
{
	const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);

	memset(a, 0, sizeof(*a));
	if (info == NULL || len == 0)
		return -EINVAL;
	mbedtls_md_init(&a->md);
	if (mbedtls_md_setup(&a->md, info, 1) != 0) {
		mbedtls_md_free(&a->md);
		return -ENOMEM;
	}
	if (mbedtls_md_hmac_starts(&a->md, secret, len) != 0) {
		mbedtls_md_free(&a->md);
		return -EINVAL;
	}
	a->ready = true;
	a->key_len = len <= sizeof(a->key) ? len : 0;
	memcpy(a->key, secret, a->key_len);
	return 0;
}

int hm__router_affinity_rekey(struct hm__router_affinity *a, const void *secret, size_t len)
{
	if (!a->ready || len == 0 || len > sizeof(a->key))
		return -EINVAL;
	if (len == a->key_len && memcmp(a->key, secret, len) == 0)
		return 0;
	if (mbedtls_md_hmac_starts(&a->md, secret, len) != 0)
		return -EINVAL;
	memcpy(a->key, secret, len);
	a->key_len = len;
	return 1;
}

void hm__router_affinity_fini(struct hm__router_affinity *a)
{
	if (a->ready)
		mbedtls_md_free(&a->md);
	a->ready = false;
	memset(a->key, 0, sizeof(a->key));
}

static size_t put_u64(char *o, uint64_t v)
{
	char tmp[20];
	size_t n = 0, k = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	while (n > 0)
		o[k++] = tmp[--n];
	return k;
}

static void b64url(const uint8_t *in, size_t n, char *out)
{
	static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = t[v >> 18];
		out[o++] = t[(v >> 12) & 63];
		out[o++] = t[(v >> 6) & 63];
		out[o++] = t[v & 63];
	}
	if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		out[o++] = t[v >> 18];
		out[o++] = t[(v >> 12) & 63];
		out[o++] = t[(v >> 6) & 63];
	} else if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		out[o++] = t[v >> 18];
		out[o++] = t[(v >> 12) & 63];
	}
}

/* mac over the canonical message; expiry as the decimal digits that appear in the cookie. */
static int mac(struct hm__router_affinity *a, const char *app, size_t app_len, const char *dyno,
	       size_t dyno_len, const char *exp, size_t exp_len, char out[MAC_B64])
{
	static const unsigned char zero = 0;
	uint8_t m[MAC_LEN];

	if (!a->ready || mbedtls_md_hmac_reset(&a->md) != 0 ||
	    mbedtls_md_hmac_update(&a->md, (const unsigned char *)DOMAIN, sizeof(DOMAIN) - 1) ||
	    mbedtls_md_hmac_update(&a->md, &zero, 1) ||
	    mbedtls_md_hmac_update(&a->md, (const unsigned char *)app, app_len) ||
	    mbedtls_md_hmac_update(&a->md, &zero, 1) ||
	    mbedtls_md_hmac_update(&a->md, (const unsigned char *)dyno, dyno_len) ||
	    mbedtls_md_hmac_update(&a->md, &zero, 1) ||
	    mbedtls_md_hmac_update(&a->md, (const unsigned char *)exp, exp_len) ||
	    mbedtls_md_hmac_finish(&a->md, m) != 0)
		return -EINVAL;
	b64url(m, MAC_LEN, out);
	return 0;
}

size_t hm__router_affinity_set_cookie(struct hm__router_affinity *a, const char *app,
				      const char *dyno, uint64_t expiry, char *out)
{
	static const char attrs[] = "; Max-Age=86400; Path=/; HttpOnly";
	size_t o = 0, dl = strnlen(dyno, HM_DYNO_NAME_MAX), el;
	char *exp;

	memcpy(out, HM__AFFINITY_COOKIE "=", sizeof(HM__AFFINITY_COOKIE));
	o = sizeof(HM__AFFINITY_COOKIE);
	exp = out + o;
	el = put_u64(exp, expiry);
	o += el;
	out[o++] = '.';
	memcpy(out + o, dyno, dl);
	o += dl;
	out[o++] = '.';
	if (mac(a, app, strlen(app), dyno, dl, exp, el, out + o) != 0)
		return 0;
	o += MAC_B64;
	memcpy(out + o, attrs, sizeof(attrs) - 1);
	return o + sizeof(attrs) - 1;
}

bool hm__router_cookie_find(const char *hdr, size_t len, const char *name, size_t name_len,
			    const char **value, size_t *value_len)
{
	size_t i = 0;

	while (i < len) {
		size_t b, e, eq;

		while (i < len && (hdr[i] == ' ' || hdr[i] == '\t' || hdr[i] == ';'))
			i++;
		b = i;
		while (i < len && hdr[i] != ';')
			i++;
		e = i;
		while (e > b && (hdr[e - 1] == ' ' || hdr[e - 1] == '\t'))
			e--;
		for (eq = b; eq < e && hdr[eq] != '='; eq++)
			;
		if (eq < e && eq - b == name_len && memcmp(hdr + b, name, name_len) == 0) {
			const char *v = hdr + eq + 1;
			size_t vl = e - eq - 1;

			if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"') {
				v++;
				vl -= 2;
			}
			*value = v;
			*value_len = vl;
			return true;
		}
	}
	return false;
}

int hm__router_affinity_verify(struct hm__router_affinity *a, const char *app, const char *cookie,
			       size_t len, uint64_t now, char *dyno)
{
	const char *v, *dot1, *dot2;
	size_t vl, el, dl;
	uint64_t exp = 0;
	char want[MAC_B64];
	unsigned diff = 0;

	if (!hm__router_cookie_find(cookie, len, HM__AFFINITY_COOKIE,
				    sizeof(HM__AFFINITY_COOKIE) - 1, &v, &vl))
		return -ENOENT;
	dot1 = memchr(v, '.', vl);
	if (dot1 == NULL || vl < MAC_B64 + 2)
		return -EINVAL;
	dot2 = v + vl - MAC_B64 - 1;
	if (dot2 <= dot1 || *dot2 != '.')
		return -EINVAL;
	el = (size_t)(dot1 - v);
	dl = (size_t)(dot2 - dot1 - 1);
	if (el == 0 || el > 19 || dl == 0 || dl > HM_DYNO_NAME_MAX ||
	    hm_dyno_name_check(dot1 + 1, dl) != 0)
		return -EINVAL;
	for (size_t i = 0; i < el; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -EINVAL;
		exp = exp * 10 + (uint64_t)(v[i] - '0');
	}
	if (mac(a, app, strlen(app), dot1 + 1, dl, v, el, want) != 0)
		return -EINVAL;
	for (size_t i = 0; i < MAC_B64; i++)
		diff |= (unsigned)(want[i] ^ dot2[1 + i]); /* constant time */
	if (diff != 0)
		return -EINVAL;
	if (exp <= now || exp > now + 2 * HM__AFFINITY_TTL)
		return -ETIMEDOUT;
	memcpy(dyno, dot1 + 1, dl);
	dyno[dl] = '\0';
	return (int)dl;
}
