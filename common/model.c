/*
 * Validation, canonicalisation and formatting of the routing model's names and addresses.
 * Everything here runs on untrusted input (the control socket, batch files, Host headers), so
 * each function checks lengths before it reads and never allocates.
 */
#include "common/model.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "common/errors.h"

static bool is_lower(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static char to_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + ('a' - 'A')) : c;
}

long hm_ctl_scan(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return (long)i;
		if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
		    (unsigned char)s[i + 1] <= 0x9f)
			return (long)i;
	}
	return -1;
}

int hm_app_name_check(const char *s, size_t n)
{
	if (n == 0 || n > HM_APP_NAME_MAX || !is_lower(s[0]))
		return HM_EAPPNAME;
	for (size_t i = 1; i < n; i++)
		if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '-')
			return HM_EAPPNAME;
	return 0;
}

int hm_dyno_name_check(const char *s, size_t n)
{
	size_t dot;

	if (n < 3 || n > HM_DYNO_NAME_MAX || !is_lower(s[0]))
		return HM_EDYNONAME;
	/* [a-z][a-z0-9_-]* then '.' then [0-9]+: the last dot splits the two parts. */
	for (dot = n - 1; dot > 0 && s[dot] != '.'; dot--)
		if (!is_digit(s[dot]))
			return HM_EDYNONAME;
	if (dot == 0 || dot == n - 1)
		return HM_EDYNONAME;
	for (size_t i = 1; i < dot; i++)
		if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '_' && s[i] != '-')
			return HM_EDYNONAME;
	return 0;
}

int hm_secret_name_check(const char *s, size_t n)
{
	if (n == 0 || n > HM_SECRET_NAME_MAX || !is_lower(s[0]))
		return HM_ESECRET;
	for (size_t i = 1; i < n; i++)
		if (!is_lower(s[i]) && !is_digit(s[i]) && s[i] != '-')
			return HM_ESECRET;
	return 0;
}

static bool is_label_char(char c)
{
	c = to_lower(c);
	return is_lower(c) || is_digit(c) || c == '-' || c == '_';
}

int hm_hostname_check(const char *s, size_t n, bool wildcard_ok)
{
	size_t label = 0;

	if (n > 0 && s[n - 1] == '.')
		n--;
	if (wildcard_ok && n >= 2 && s[0] == '*' && s[1] == '.') {
		s += 2;
		n -= 2;
	}
	if (n == 0 || n > HM_HOST_MAX)
		return HM_EHOSTNAME;
	for (size_t i = 0; i <= n; i++) {
		if (i == n || s[i] == '.') {
			if (label == 0 || label > 63 || s[i - 1] == '-')
				return HM_EHOSTNAME;
			label = 0;
			continue;
		}
		if (!is_label_char(s[i]) || (label == 0 && s[i] == '-'))
			return HM_EHOSTNAME;
		label++;
	}
	return 0;
}

size_t hm_host_canon(const char *s, size_t n, char *out)
{
	if (n > 0 && s[n - 1] == '.')
		n--;
	if (n > HM_HOST_MAX + 2)
		n = HM_HOST_MAX + 2;
	for (size_t i = 0; i < n; i++)
		out[i] = to_lower(s[i]);
	out[n] = '\0';
	return n;
}

int hm_host_key(const char *s, size_t n, char *out)
{
	size_t end = n;

	if (n == 0)
		return -EINVAL;
	if (s[0] == '[') {
		/* IPv6 literal: the key is what is inside the brackets. */
		const char *close = memchr(s, ']', n);

		if (close == NULL)
			return -EINVAL;
		s++;
		end = (size_t)(close - s);
	} else {
		const char *colon = memchr(s, ':', n);

		if (colon != NULL)
			end = (size_t)(colon - s);
	}
	if (end > 0 && s[end - 1] == '.')
		end--;
	if (end == 0 || end > HM_HOST_MAX)
		return -EINVAL;
	for (size_t i = 0; i < end; i++) {
		char c = to_lower(s[i]);

		if (!is_lower(c) && !is_digit(c) && c != '-' && c != '_' && c != '.' && c != ':')
			return -EINVAL;
		out[i] = c;
	}
	out[end] = '\0';
	return (int)end;
}

static int parse_port(const char *s, size_t n, uint16_t *out)
{
	unsigned v = 0;

	if (n == 0 || n > 5)
		return HM_EADDR;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return HM_EADDR;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v == 0 || v > 65535 || (n > 1 && s[0] == '0'))
		return HM_EADDR;
	*out = (uint16_t)v;
	return 0;
}

int hm_addr_parse(const char *s, size_t n, struct hm_addr *out)
{
	char host[INET6_ADDRSTRLEN];
	const char *colon;
	size_t hlen;

	memset(out, 0, sizeof(*out));
	if (n < 3 || n >= HM_ADDR_STR_MAX)
		return HM_EADDR;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);

		if (close == NULL || (size_t)(close - s) + 1 >= n || close[1] != ':')
			return HM_EADDR;
		hlen = (size_t)(close - s) - 1;
		colon = close + 1;
		if (hlen == 0 || hlen >= sizeof(host))
			return HM_EADDR;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET6, host, out->ip) != 1)
			return HM_EADDR;
		out->family = 6;
	} else {
		colon = memrchr(s, ':', n);
		if (colon == NULL)
			return HM_EADDR;
		hlen = (size_t)(colon - s);
		if (hlen == 0 || hlen >= INET_ADDRSTRLEN)
			return HM_EADDR;
		memcpy(host, s, hlen);
		host[hlen] = '\0';
		if (inet_pton(AF_INET, host, out->ip) != 1)
			return HM_EADDR;
		out->family = 4;
	}
	return parse_port(colon + 1, n - (size_t)(colon + 1 - s), &out->port);
}

size_t hm_addr_format(const struct hm_addr *addr, char *out)
{
	char host[INET6_ADDRSTRLEN] = "?";
	int r;

	if (addr->family == 6) {
		inet_ntop(AF_INET6, addr->ip, host, sizeof(host));
		r = snprintf(out, HM_ADDR_STR_MAX, "[%s]:%u", host, addr->port);
	} else {
		inet_ntop(AF_INET, addr->ip, host, sizeof(host));
		r = snprintf(out, HM_ADDR_STR_MAX, "%s:%u", host, addr->port);
	}
	return r > 0 ? (size_t)r : 0;
}

int hm_cert_name_check(const char *s, size_t n)
{
	if (n == 7 && strncasecmp(s, "default", 7) == 0)
		return 0;
	return hm_hostname_check(s, n, true);
}

long hm_pem_scan(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((ch < 0x20 && ch != '\n' && ch != '\r') || ch > 0x7e)
			return (long)i;
	}
	return -1;
}

static const char *const state_names[] = {
    [HM_DYNO_UP] = "up",
    [HM_DYNO_STARTING] = "starting",
    [HM_DYNO_CRASHED] = "crashed",
    [HM_DYNO_DOWN] = "down",
};

static const char *const balance_names[] = {
    [HM_BALANCE_RANDOM] = "random",
    [HM_BALANCE_LEAST_CONN] = "least-conn",
};

static const char *const op_names[] = {
    [HM_OP_APP_PUT] = "app.put",       [HM_OP_APP_RM] = "app.rm",
    [HM_OP_DOMAIN_PUT] = "domain.put", [HM_OP_DOMAIN_RM] = "domain.rm",
    [HM_OP_DYNO_PUT] = "dyno.put",     [HM_OP_DYNO_RM] = "dyno.rm",
    [HM_OP_SECRET_PUT] = "secret.put", [HM_OP_SECRET_RM] = "secret.rm",
    [HM_OP_CERT_PUT] = "cert.put",     [HM_OP_CERT_RM] = "cert.rm",
};

static int name_index(const char *const *names, unsigned first, unsigned last, const char *s,
		      size_t n)
{
	for (unsigned i = first; i <= last; i++)
		if (strlen(names[i]) == n && memcmp(names[i], s, n) == 0)
			return (int)i;
	return -1;
}

const char *hm_dyno_state_name(unsigned state)
{
	return state >= HM_DYNO_UP && state <= HM_DYNO_STATE_MAX ? state_names[state] : "unknown";
}

int hm_dyno_state_parse(const char *s, size_t n, uint8_t *out)
{
	int i = name_index(state_names, HM_DYNO_UP, HM_DYNO_STATE_MAX, s, n);

	if (i < 0)
		return HM_ESTATE;
	*out = (uint8_t)i;
	return 0;
}

const char *hm_balance_name(unsigned balance)
{
	return balance <= HM_BALANCE_MAX ? balance_names[balance] : "unknown";
}

int hm_balance_parse(const char *s, size_t n, uint8_t *out)
{
	int i = name_index(balance_names, HM_BALANCE_RANDOM, HM_BALANCE_MAX, s, n);

	if (i < 0)
		return HM_EBALANCE;
	*out = (uint8_t)i;
	return 0;
}

const char *hm_op_name(unsigned op)
{
	return op >= HM_OP_APP_PUT && op <= HM_OP_MAX ? op_names[op] : NULL;
}

int hm_op_parse(const char *s, size_t n, uint8_t *out)
{
	int i = name_index(op_names, HM_OP_APP_PUT, HM_OP_MAX, s, n);

	if (i < 0)
		return HM_EOP;
	*out = (uint8_t)i;
	return 0;
}

int hm_change_check(const struct hm_change *c)
{
	int r;

	/* Before the grammar, so that the reason names what is wrong with the string. */
	if ((c->app != NULL && hm_ctl_scan(c->app, c->app_len) >= 0) ||
	    (c->name != NULL && hm_ctl_scan(c->name, c->name_len) >= 0))
		return HM_ECONTROL;
	switch (c->op) {
	case HM_OP_APP_PUT:
		if (c->balance > HM_BALANCE_MAX)
			return HM_EBALANCE;
		/* fall through */
	case HM_OP_APP_RM:
		return hm_app_name_check(c->app, c->app_len);
	case HM_OP_DOMAIN_PUT:
		r = hm_app_name_check(c->app, c->app_len);
		return r != 0 ? r : hm_hostname_check(c->name, c->name_len, true);
	case HM_OP_DOMAIN_RM:
		return hm_hostname_check(c->name, c->name_len, true);
	case HM_OP_DYNO_PUT:
		if (c->state < HM_DYNO_UP || c->state > HM_DYNO_STATE_MAX)
			return HM_ESTATE;
		if ((c->addr.family != 4 && c->addr.family != 6) || c->addr.port == 0)
			return HM_EADDR;
		/* fall through */
	case HM_OP_DYNO_RM:
		r = hm_app_name_check(c->app, c->app_len);
		return r != 0 ? r : hm_dyno_name_check(c->name, c->name_len);
	case HM_OP_SECRET_PUT:
		if (c->value_len == 0 || c->value_len > HM_SECRET_MAX || c->value == NULL)
			return HM_ESECRET;
		/* fall through */
	case HM_OP_SECRET_RM:
		return hm_secret_name_check(c->name, c->name_len);
	case HM_OP_CERT_PUT:
		if (c->cert == NULL || c->cert_len == 0 || c->cert_len > HM_CERT_CHAIN_MAX ||
		    c->key == NULL || c->key_len == 0 || c->key_len > HM_CERT_KEY_MAX ||
		    c->meta_len > HM_CERT_META_MAX || (c->meta_len > 0 && c->meta == NULL))
			return HM_ECERT;
		if (hm_pem_scan(c->cert, c->cert_len) >= 0 || hm_pem_scan(c->key, c->key_len) >= 0)
			return HM_ECONTROL;
		/* fall through */
	case HM_OP_CERT_RM:
		return hm_cert_name_check(c->name, c->name_len);
	default:
		return HM_EOP;
	}
}
