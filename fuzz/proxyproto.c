/*
 * Fuzz target: the PROXY protocol reader (router/proxyproto.c), which sees a connection's first
 * bytes before TLS or HTTP when --proxy-protocol is on. Its contract says any split of the bytes
 * gives the same result: every prefix of the input must be "more needed" or the same verdict as
 * the whole, a header's length never exceeds what was given, and a refused header is refused
 * the same way whatever follows it. Properties broken abort.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "router/proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
	struct sockaddr_storage whole, part;
	bool has_whole = false, has_part = false;
	int r;

	memset(&whole, 0, sizeof(whole));
	r = hm__router_proxy_parse(d, n, &whole, &has_whole);

	if (r != -EPROTO && (r < 0 || (size_t)r > n || (size_t)r > HM__PROXY_MAX))
		abort();
	for (size_t i = 0; i < n; i++) {
		int q;

		memset(&part, 0, sizeof(part));
		q = hm__router_proxy_parse(d, i, &part, &has_part);

		if (q == 0)
			continue; /* a valid beginning */
		if (q != r)
			abort(); /* a verdict on a prefix is the whole's verdict */
		if (q > 0 && (has_part != has_whole ||
			      (has_part && memcmp(&part, &whole, sizeof(part)) != 0)))
			abort();
	}
	return 0;
}
