/*
 * Fuzz target: the TLS 1.3 fast path's ClientHello reader and its accept step (router/tls13.c),
 * the first code of the router to see a TLS client's bytes. Any input is a handshake message;
 * the reader must either decline it or describe it with spans inside it, and accept must decline
 * whatever ticket it carries (the keys here are fixed and no input is made under them) without
 * reading out of bounds. Properties broken abort.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/tls13.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

static struct hm_tls13_ctx *x;
static const uint8_t pref[] = "\x02h2\x08http/1.1\x08http/1.0";

/* p[0..len) lies within d[0..n) (an absent span, NULL, is fine). */
static void inside(const uint8_t *d, size_t n, const uint8_t *p, size_t len)
{
	if (p != NULL && (p < d || p > d + n || len > (size_t)(d + n - p)))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct hm_tls13_hello h;
	struct hm_tls13_accept a = {.alpn_pref = pref, .alpn_pref_len = sizeof(pref) - 1};
	struct hm_tls13 *c = NULL;
	uint8_t out[HM_TLS13_FLIGHT_MAX];
	size_t on = 0;

	if (x == NULL) {
		struct hm_ticket_key k[2];

		memset(k, 7, sizeof(k));
		memset(k[1].name, 9, sizeof(k[1].name));
		if (hm_tls13_ctx_new(&x, 7200, true) != 0)
			abort();
		hm_tls13_ctx_set_keys(x, k, 2);
	}
	if (!hm_tls13_parse_hello(d, n, &h))
		return 0;
	if (h.msg != d || h.len != n || h.share == NULL || h.ident == NULL || h.binder == NULL ||
	    h.truncated > n)
		abort();
	inside(d, n, h.sid, h.sid_len);
	inside(d, n, h.share, 32);
	inside(d, n, h.sni, h.sni_len);
	inside(d, n, h.alpn, h.alpn_len);
	inside(d, n, h.ident, h.ident_len);
	inside(d, n, h.binder, h.binder_len);
	if (h.sid_len > 32)
		abort();
	if (hm_tls13_accept(x, &h, &a, &c, out, &on) != 0 || c != NULL)
		abort(); /* no ticket here opens under the keys */
	return 0;
}
