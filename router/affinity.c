/*
 * HMAC-SHA256 session-affinity cookies (see affinity.h). mbedtls_md_hmac() would set up and free
 * a context per call (two allocations); one keyed context per worker, reset per use, does not.
 * An HMAC per request was ~18% of a request's CPU: verified values are cached (verify_cached).
 */
#include "router/affinity.h"

#include <errno.h>
#include <string.h>

#include "common/base64.h"
#include "common/hash.h"

#define MAC_LEN 32
#define MAC_B64 43 /* base64url of 32 bytes, unpadded */
#define DOMAIN	"hermod-affinity-v1"

/*
 * Empties the cache of verified cookies and derives its hash seed from the key in use (so
 * clients cannot aim at slots). Called whenever the key changes: a cookie verified under the old
 * key must not be taken as verified under the new one. The HMAC context must hold the key.
 */
static int cache_reset(struct hm__router_affinity *a)
{
	static const char label[] = "hermod-affinity-cache-seed";
	uint8_t m[MAC_LEN];

	memset(a->cache, 0, sizeof(a->cache));
	if (mbedtls_md_hmac_update(&a->md, (const unsigned char *)label, sizeof(label)) != 0 ||
	    mbedtls_md_hmac_finish(&a->md, m) != 0 || mbedtls_md_hmac_reset(&a->md) != 0)
		return -EINVAL;
	memcpy(&a->cache_seed, m, sizeof(a->cache_seed));
	return 0;
}

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
	if (cache_reset(a) != 0) {
		hm__router_affinity_fini(a);
		return -EINVAL;
	}
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
	/* Cookies verified under the old key must be verified again under the new one. */
	if (cache_reset(a) != 0)
		return -EINVAL;
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
	hm_b64_encode(m, MAC_LEN, out, HM_B64_URL | HM_B64_NOPAD);
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
		const char *semi, *eqp;
		size_t b, e, eq;

		while (i < len && (hdr[i] == ' ' || hdr[i] == '\t' || hdr[i] == ';'))
			i++;
		b = i;
		semi = memchr(hdr + i, ';', len - i);
		i = semi != NULL ? (size_t)(semi - hdr) : len;
		e = i;
		while (e > b && (hdr[e - 1] == ' ' || hdr[e - 1] == '\t'))
			e--;
		eqp = memchr(hdr + b, '=', e - b);
		eq = eqp != NULL ? (size_t)(eqp - hdr) : e;
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

static int verify_value(struct hm__router_affinity *a, const char *app, size_t app_len,
			const char *v, size_t vl, uint64_t now, char *dyno);

/* Equality in time that depends on n only, eight bytes at a time. */
static bool same_bytes(const char *a, const char *b, size_t n)
{
	uint64_t diff = 0, x, y;
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		diff |= x ^ y;
	}
	for (; i < n; i++)
		diff |= (uint64_t)(uint8_t)(a[i] ^ b[i]);
	return diff == 0;
}

/*
 * The cache slot for a value, and its hash (never 0). The last bytes of a value are its MAC's,
 * as good a spread as the whole (the full value and the app are compared on a hit); the seed
 * comes from the key, so that clients cannot aim at slots.
 */
static struct hm__router_affinity_hit *cache_slot(struct hm__router_affinity *a, const char *v,
						  size_t vl, uint64_t *hash)
{
	size_t tail = vl < 16 ? vl : 16;
	uint64_t h = hm_hash64(v + vl - tail, tail, a->cache_seed ^ vl);

	*hash = h | 1;
	return &a->cache[(h >> 1) & (HM__AFFINITY_CACHE_N - 1)];
}

static bool cache_match(const struct hm__router_affinity_hit *e, uint64_t hash, const char *app,
			size_t app_len, const char *v, size_t vl)
{
	return e->hash == hash && e->app_len == app_len && e->value_len == vl &&
	       memcmp(e->app, app, app_len) == 0 && same_bytes(e->value, v, vl);
}

int hm__router_affinity_verify(struct hm__router_affinity *a, const char *app, const char *cookie,
			       size_t len, uint64_t now, char *dyno)
{
	const char *v;
	size_t vl;

	if (!hm__router_cookie_find(cookie, len, HM__AFFINITY_COOKIE,
				    sizeof(HM__AFFINITY_COOKIE) - 1, &v, &vl))
		return -ENOENT;
	return hm__router_affinity_verify_value(a, app, v, vl, now, dyno);
}

int hm__router_affinity_verify_value(struct hm__router_affinity *a, const char *app, const char *v,
				     size_t vl, uint64_t now, char *dyno)
{
	struct hm__router_affinity_hit *e = NULL;
	uint64_t hash = 0;
	size_t app_len = strlen(app);
	int r;

	if (a->ready && vl <= HM__AFFINITY_VALUE_MAX && app_len <= HM_APP_NAME_MAX) {
		e = cache_slot(a, v, vl, &hash);
		if (cache_match(e, hash, app, app_len, v, vl)) {
			a->cache_hits++;
			if (e->expiry <= now)
				return -ETIMEDOUT;
			memcpy(dyno, e->value + e->dyno_off, e->dyno_len);
			dyno[e->dyno_len] = '\0';
			return e->dyno_len;
		}
	}
	r = verify_value(a, app, app_len, v, vl, now, dyno);
	if (r > 0 && e != NULL) {
		const char *dot1 = memchr(v, '.', vl);

		e->hash = hash;
		e->expiry = 0;
		for (const char *p = v; p < dot1; p++)
			e->expiry = e->expiry * 10 + (uint64_t)(*p - '0');
		e->app_len = (uint8_t)app_len;
		memcpy(e->app, app, app_len);
		e->value_len = (uint8_t)vl;
		memcpy(e->value, v, vl);
		e->dyno_off = (uint8_t)(dot1 + 1 - v);
		e->dyno_len = (uint8_t)r;
	}
	return r;
}

/* The HMAC check of a cookie value (see hm__router_affinity_verify). */
static int verify_value(struct hm__router_affinity *a, const char *app, size_t app_len,
			const char *v, size_t vl, uint64_t now, char *dyno)
{
	const char *dot1, *dot2;
	size_t el, dl;
	uint64_t exp = 0;
	char want[MAC_B64];

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
	if (mac(a, app, app_len, dot1 + 1, dl, v, el, want) != 0)
		return -EINVAL;
	if (!same_bytes(want, dot2 + 1, MAC_B64))
		return -EINVAL;
	if (exp <= now || exp > now + 2 * HM__AFFINITY_TTL)
		return -ETIMEDOUT;
	memcpy(dyno, dot1 + 1, dl);
	dyno[dl] = '\0';
	return (int)dl;
}
