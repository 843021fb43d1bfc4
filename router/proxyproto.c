/*
 * PROXY protocol headers, v1 (text) and v2 (binary), as HAProxy's proxy-protocol.txt defines
 * them (see proxyproto.h). Strict where the specification is: v1 is one line of at most 107
 * bytes with single spaces, addresses of the family it names and decimal ports; v2 has version
 * 2, a known command and an address block at least as long as its family needs. TLVs after the
 * addresses are skipped (nothing here needs them).
 */
#include "router/proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>

#define V1_MAX 107

static const uint8_t v2_sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
				   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* The next space-delimited field of a v1 line: [*pos, end) up to a space or the end. Returns its
 * length (0: empty, which is an error everywhere). */
static size_t field(const char *line, size_t len, size_t *pos, const char **f)
{
	size_t s = *pos, e = s;

	while (e < len && line[e] != ' ')
		e++;
	*f = line + s;
	*pos = e < len ? e + 1 : e;
	return e - s;
}

static int port_parse(const char *f, size_t n, uint16_t *out)
{
	uint32_t v = 0;

	if (n == 0 || n > 5 || (n > 1 && f[0] == '0'))
		return -EPROTO;
	for (size_t i = 0; i < n; i++) {
		if (f[i] < '0' || f[i] > '9')
			return -EPROTO;
		v = v * 10 + (uint32_t)(f[i] - '0');
	}
	if (v > 65535)
		return -EPROTO;
	*out = (uint16_t)v;
	return 0;
}

static int addr_parse(int family, const char *f, size_t n, void *out)
{
	char buf[INET6_ADDRSTRLEN];

	if (n == 0 || n >= sizeof(buf))
		return -EPROTO;
	memcpy(buf, f, n);
	buf[n] = '\0';
	return inet_pton(family, buf, out) == 1 ? 0 : -EPROTO;
}

static int v1(const uint8_t *p, size_t n, struct sockaddr_storage *src, bool *has_src)
{
	const char *line = (const char *)p, *f;
	size_t len, pos = 6, fl;
	int family;
	uint16_t sport, dport;
	union {
		struct in_addr a4;
		struct in6_addr a6;
	} sa, da;

	size_t lim = n < V1_MAX ? n : V1_MAX;

	for (len = 0; len < lim; len++) {
		if (p[len] == '\r')
			break;
		if (p[len] < 0x20 || p[len] > 0x7e)
			return -EPROTO;
	}
	if (len + 1 >= lim)
		return n >= V1_MAX ? -EPROTO : 0; /* the line's end not in sight */
	if (p[len + 1] != '\n')
		return -EPROTO;
	fl = field(line, len, &pos, &f);
	if (fl == 7 && memcmp(f, "UNKNOWN", 7) == 0) {
		*has_src = false; /* the rest of the line is to be ignored */
		return (int)(len + 2);
	}
	if (fl == 4 && memcmp(f, "TCP4", 4) == 0)
		family = AF_INET;
	else if (fl == 4 && memcmp(f, "TCP6", 4) == 0)
		family = AF_INET6;
	else
		return -EPROTO;
	fl = field(line, len, &pos, &f);
	if (addr_parse(family, f, fl, &sa) != 0)
		return -EPROTO;
	fl = field(line, len, &pos, &f);
	if (addr_parse(family, f, fl, &da) != 0)
		return -EPROTO;
	fl = field(line, len, &pos, &f);
	if (port_parse(f, fl, &sport) != 0)
		return -EPROTO;
	fl = field(line, len, &pos, &f);
	if (port_parse(f, fl, &dport) != 0 || pos != len || f + fl != line + len)
		return -EPROTO;
	memset(src, 0, sizeof(*src));
	if (family == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)src;

		s->sin_family = AF_INET;
		s->sin_addr = sa.a4;
		s->sin_port = htons(sport);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)src;

		s->sin6_family = AF_INET6;
		s->sin6_addr = sa.a6;
		s->sin6_port = htons(sport);
	}
	*has_src = true;
	return (int)(len + 2);
}

static int v2(const uint8_t *p, size_t n, struct sockaddr_storage *src, bool *has_src)
{
	size_t total;
	uint8_t cmd, fam;

	if (n < 16)
		return 0;
	cmd = p[12];
	fam = p[13];
	total = 16 + ((size_t)p[14] << 8 | p[15]);
	if ((cmd >> 4) != 2 || (cmd & 15) > 1 || total > HM__PROXY_MAX)
		return -EPROTO;
	if (n < total)
		return 0;
	*has_src = false;
	if ((cmd & 15) == 0)
		return (int)total; /* LOCAL: the balancer's own connection (a health check) */
	if ((fam & 15) > 2)
		return -EPROTO; /* transport: UNSPEC, STREAM, DGRAM */
	memset(src, 0, sizeof(*src));
	switch (fam >> 4) {
	case 0: /* AF_UNSPEC */
		break;
	case 1: { /* AF_INET: src, dst (4 each), ports */
		struct sockaddr_in *s = (struct sockaddr_in *)src;

		if (total - 16 < 12)
			return -EPROTO;
		s->sin_family = AF_INET;
		memcpy(&s->sin_addr, p + 16, 4);
		memcpy(&s->sin_port, p + 24, 2);
		*has_src = true;
		break;
	}
	case 2: { /* AF_INET6: src, dst (16 each), ports */
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)src;

		if (total - 16 < 36)
			return -EPROTO;
		s->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, p + 16, 16);
		memcpy(&s->sin6_port, p + 48, 2);
		*has_src = true;
		break;
	}
	case 3: /* AF_UNIX: no IP to log */
		break;
	default:
		return -EPROTO;
	}
	return (int)total;
}

int hm__router_proxy_parse(const uint8_t *p, size_t n, struct sockaddr_storage *src, bool *has_src)
{
	size_t k;

	*has_src = false;
	k = n < 6 ? n : 6;
	if (memcmp(p, "PROXY ", k) == 0)
		return k == 6 ? v1(p, n, src, has_src) : 0;
	k = n < sizeof(v2_sig) ? n : sizeof(v2_sig);
	if (memcmp(p, v2_sig, k) == 0)
		return k == sizeof(v2_sig) ? v2(p, n, src, has_src) : 0;
	return -EPROTO;
}
