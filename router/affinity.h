/*
 * Session-affinity cookies: "hermod-session-affinity=<expiry>.<dyno>.<mac>", where expiry is unix
 * seconds and mac = base64url(HMAC-SHA256(secret, "hermod-affinity-v1" 0 app 0 dyno 0 expiry)).
 * Nothing in it is node-local, so every router holding the same secret accepts every other's
 * cookies: the cluster secret, which the origin makes and every node's table holds
 * (docs/security.md), unless --affinity-secret-file gives one. The HMAC context is keyed once
 * (and again when the cluster secret changes); signing and verifying reset it, so neither
 * allocates.
 *
 * One struct per worker (the context is not thread-safe).
 */
#ifndef HM_ROUTER_AFFINITY_H
#define HM_ROUTER_AFFINITY_H

#include <mbedtls/md.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"

#define HM__AFFINITY_COOKIE "hermod-session-affinity"
#define HM__AFFINITY_TTL    86400
/* "hermod-session-affinity=" + 20 digits + "." + dyno + "." + 43 + attributes */
#define HM__AFFINITY_SET_COOKIE_MAX 192

/* The longest cookie value a verify accepts: expiry (19 digits), '.', dyno, '.', MAC. */
#define HM__AFFINITY_VALUE_MAX (19 + 1 + HM_DYNO_NAME_MAX + 1 + 43)
#define HM__AFFINITY_CACHE_N   256 /* power of two */

/* A cookie value verified for an app with the current key (affinity.c). */
struct hm__router_affinity_hit {
	uint64_t hash; /* 0: empty */
	uint64_t expiry;
	uint8_t app_len, value_len, dyno_off, dyno_len;
	char app[HM_APP_NAME_MAX + 1];
	char value[HM__AFFINITY_VALUE_MAX];
};

struct hm__router_affinity {
	mbedtls_md_context_t md;
	bool ready;
	uint64_t cache_seed; /* derived from the key: clients cannot aim at cache slots */
	uint64_t cache_hits; /* verifies answered from the cache */
	struct hm__router_affinity_hit cache[HM__AFFINITY_CACHE_N];
	uint8_t key[HM_SECRET_MAX]; /* the key in use, when it fits (to tell a new one apart) */
	size_t key_len;		    /* 0: the key did not fit */
};

/* Keys the context with secret (borrowed for the call) and empties the verify cache: a value
 * verified with another key proves nothing. Returns 0 or -ENOMEM / -EINVAL. */
int hm__router_affinity_init(struct hm__router_affinity *a, const void *secret, size_t len);
void hm__router_affinity_fini(struct hm__router_affinity *a);

/*
 * Keys an initialised context with secret (borrowed) if it is not the key in use: the cluster
 * secret read from the table, when it first appears or changes. Allocates nothing. Returns 1
 * if the key changed, 0 if it was the same, -EINVAL if it cannot be used (the old key stays).
 */
int hm__router_affinity_rekey(struct hm__router_affinity *a, const void *secret, size_t len);

/*
 * Writes the value of a Set-Cookie header pinning app's client to dyno until expiry (unix
 * seconds): the cookie and "; Max-Age=86400; Path=/; HttpOnly". out has room for
 * HM__AFFINITY_SET_COOKIE_MAX bytes. Returns the length written (no NUL).
 */
size_t hm__router_affinity_set_cookie(struct hm__router_affinity *a, const char *app,
				      const char *dyno, uint64_t expiry, char *out);

/*
 * Looks for the affinity cookie in a Cookie header value (any of its cookies) and verifies it
 * for app at time now (unix seconds). On success copies the dyno name, NUL-terminated, to dyno
 * (HM_DYNO_NAME_MAX + 1 bytes) and returns its length. Returns -ENOENT (no cookie), -EINVAL
 * (malformed or bad signature) or -ETIMEDOUT (expired).
 *
 * A browser sends the same cookie with every request, so values verified recently are kept
 * (HM__AFFINITY_CACHE_N, by a hash keyed from the secret): a value found there, byte for byte
 * (compared in constant time) and for the same app, is as good as its HMAC, and its expiry is
 * checked against now all the same. Failures are not kept.
 */
int hm__router_affinity_verify(struct hm__router_affinity *a, const char *app, const char *cookie,
			       size_t len, uint64_t now, char *dyno);

/* The same for the cookie's value alone (its "<expiry>.<dyno>.<mac>", found already). */
int hm__router_affinity_verify_value(struct hm__router_affinity *a, const char *app,
				     const char *value, size_t len, uint64_t now, char *dyno);

/* Finds cookie name=value in a Cookie header value. Returns true and the value span if found. */
bool hm__router_cookie_find(const char *hdr, size_t len, const char *name, size_t name_len,
			    const char **value, size_t *value_len);

#endif
