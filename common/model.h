/*
 * The routing model shared by every part of hermod: apps, domains, dynos, and the change records
 * that create and remove them. proto/ decodes wire messages into struct hm_change, syncd applies
 * them to the table, hermodctl builds them from the command line and batch files.
 *
 * The grammar of names is the contract's (../shared/CONTRACT.md), with explicit length bounds:
 *   app       [a-z][a-z0-9-]{0,62}
 *   dyno      [a-z][a-z0-9_-]*\.[0-9]+, at most 63 bytes
 *   hostname  labels of [A-Za-z0-9_-] (1..63 bytes, no leading or trailing '-'), joined by '.',
 *             at most 253 bytes, an optional trailing '.'; a domain may be a wildcard "*.NAME".
 *             Hostnames are case-insensitive: the canonical form is lowercase, no trailing dot.
 *   address   IPv4:PORT or [IPv6]:PORT, port 1..65535. Dyno addresses are IP literals so that
 *             routing never waits for DNS.
 */
#ifndef HM_COMMON_MODEL_H
#define HM_COMMON_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HM_APP_NAME_MAX	   63
#define HM_DYNO_NAME_MAX   63
#define HM_HOST_MAX	   253
#define HM_SECRET_NAME_MAX 31
#define HM_SECRET_MAX	   128 /* bytes of one secret's value */
/* Certificates (docs/tls.md): bytes of a chain's PEM, a key's PEM, the origin's metadata. */
#define HM_CERT_CHAIN_MAX (64u * 1024)
#define HM_CERT_KEY_MAX	  (16u * 1024)
#define HM_CERT_META_MAX  (16u * 1024)
#define HM_CERT_ID_LEN	  32 /* SHA-256 of an entry's content */
/* "[" 39 "]:" 5 */
#define HM_ADDR_STR_MAX 48

enum hm_op {
	HM_OP_APP_PUT = 1,
	HM_OP_APP_RM = 2,
	HM_OP_DOMAIN_PUT = 3,
	HM_OP_DOMAIN_RM = 4,
	HM_OP_DYNO_PUT = 5,
	HM_OP_DYNO_RM = 6,
	/* Secret-bearing replicated state (docs/security.md): made by the origin only, never
	 * accepted from a control client or a batch file, never shown. */
	HM_OP_SECRET_PUT = 7,
	HM_OP_SECRET_RM = 8,
	/* TLS certificates (docs/tls.md): a control client sends name, cert and key; the origin
	 * publishes the canonical record with not_after, id and meta. */
	HM_OP_CERT_PUT = 9,
	HM_OP_CERT_RM = 10,
};
#define HM_OP_MAX	  HM_OP_CERT_RM
#define HM_OP_ROUTING_MAX HM_OP_DYNO_RM /* routing ops (a control client may also send certs) */

enum hm_dyno_state {
	HM_DYNO_UP = 1,
	HM_DYNO_STARTING = 2,
	HM_DYNO_CRASHED = 3,
	HM_DYNO_DOWN = 4,
};
#define HM_DYNO_STATE_MAX HM_DYNO_DOWN

enum hm_balance {
	HM_BALANCE_RANDOM = 0,
	HM_BALANCE_LEAST_CONN = 1,
};
#define HM_BALANCE_MAX HM_BALANCE_LEAST_CONN

/* A dyno's network address, in binary. family is 4 or 6; ip holds 4 or 16 bytes. */
struct hm_addr {
	uint8_t family;
	uint16_t port;
	uint8_t ip[16];
};

/*
 * One change. Strings are borrowed (not NUL-terminated; pointer and length) and must outlive the
 * change's use: for a decoded message that is the receive buffer, for hermodctl its own storage.
 * Fields an op does not use are ignored and should be zero.
 *
 *   op               app       name               other
 *   HM_OP_APP_PUT    app name  -                  maintenance, affinity, balance
 *   HM_OP_APP_RM     app name  -                  -  (cascades to the app's domains and dynos)
 *   HM_OP_DOMAIN_PUT app name  hostname or *.host -
 *   HM_OP_DOMAIN_RM  -         hostname or *.host -
 *   HM_OP_DYNO_PUT   app name  dyno name          addr, state
 *   HM_OP_DYNO_RM    app name  dyno name          -
 *   HM_OP_SECRET_PUT -         secret name        value (1..HM_SECRET_MAX bytes)
 *   HM_OP_SECRET_RM  -         secret name        -
 *   HM_OP_CERT_PUT   -         cert name          cert, key (PEM); from the origin also
 *                                                 not_after, id, meta (id NULL from a client)
 *   HM_OP_CERT_RM    -         cert name          -
 *
 * Secret names are [a-z][a-z0-9-]{0,30} ("affinity", "tls-ticket-0", ...). Certificate names are
 * a hostname, "*.hostname" or "default" (hm_cert_name_check).
 */
struct hm_change {
	uint8_t op;	 /* enum hm_op */
	uint8_t state;	 /* enum hm_dyno_state */
	uint8_t balance; /* enum hm_balance */
	bool maintenance;
	bool affinity;
	uint8_t app_len;
	uint16_t name_len;
	uint16_t value_len;
	const char *app;      /* borrowed */
	const char *name;     /* borrowed */
	const uint8_t *value; /* borrowed; secret.put only */
	struct hm_addr addr;
	/* cert.put only (borrowed). */
	uint32_t cert_len, key_len, meta_len;
	const char *cert;    /* chain PEM */
	const char *key;     /* private key PEM: never logged, listed or printed */
	const uint8_t *meta; /* origin's metadata: msgpack [leaf sha256 bin32, [san str...]] */
	const uint8_t *id;   /* HM_CERT_ID_LEN bytes; NULL in a control request */
	int64_t not_after;   /* Unix seconds; 0 in a control request */
};

/*
 * Index of the first control character in s[0..n): a C0 control (U+0000-U+001F, NUL included),
 * DEL, or a C1 control encoded in UTF-8 (U+0080-U+009F, bytes C2 80..C2 9F); -1 if none.
 * Terminals act on these and a NUL cuts a C string, so no name may hold one (HM_ECONTROL).
 */
long hm_ctl_scan(const char *s, size_t n);

/* Name checks: 0 if valid, else HM_EAPPNAME / HM_EDYNONAME / HM_EHOSTNAME. */
int hm_app_name_check(const char *s, size_t n);
int hm_dyno_name_check(const char *s, size_t n);
/* wildcard_ok: accept "*.NAME". Mixed case and one trailing dot are accepted (see hm_host_canon).
 */
int hm_hostname_check(const char *s, size_t n, bool wildcard_ok);
/* A secret's name: 0 or HM_ESECRET. */
int hm_secret_name_check(const char *s, size_t n);
/* A certificate's name: a hostname, "*.hostname" or "default" (any case, one trailing dot).
 * 0 or HM_EHOSTNAME. */
int hm_cert_name_check(const char *s, size_t n);

/*
 * Index of the first byte of PEM text s[0..n) that PEM does not allow: a control character other
 * than its own line ends ('\n', '\r'), or a byte over 0x7e. -1 if none. PEM is ASCII; a NUL
 * would cut it and anything else is not PEM.
 */
long hm_pem_scan(const char *s, size_t n);

/*
 * Writes the canonical form of a valid hostname (lowercase, no trailing dot) to out, which has
 * room for HM_HOST_MAX + 3 bytes (a wildcard's "*." comes on top of the 253); NUL-terminates
 * it. Returns its length.
 */
size_t hm_host_canon(const char *s, size_t n, char *out);

/*
 * Reduces a Host header value to a lookup key: strips a ":port" (and the brackets of an IPv6
 * literal), one trailing dot, and lowercases. Writes at most HM_HOST_MAX bytes plus a NUL to out.
 * Returns the key's length, or -EINVAL if the value is empty, too long, or holds bytes no
 * hostname has (whitespace, controls, '/', '@', ...). Used on every request: no allocation.
 */
int hm_host_key(const char *s, size_t n, char *out);

/* Parses "IPv4:PORT" or "[IPv6]:PORT". Returns 0 or HM_EADDR. */
int hm_addr_parse(const char *s, size_t n, struct hm_addr *out);

/* Formats addr as "IPv4:PORT" or "[IPv6]:PORT" into out (HM_ADDR_STR_MAX bytes). Returns length. */
size_t hm_addr_format(const struct hm_addr *addr, char *out);

/* Names of states and balance modes, and their parsers (0 or HM_ESTATE / HM_EBALANCE). */
const char *hm_dyno_state_name(unsigned state);
int hm_dyno_state_parse(const char *s, size_t n, uint8_t *out);
const char *hm_balance_name(unsigned balance);
int hm_balance_parse(const char *s, size_t n, uint8_t *out);
const char *hm_op_name(unsigned op); /* "app.put", ...; NULL if unknown */
int hm_op_parse(const char *s, size_t n, uint8_t *out);

/*
 * Checks every field an op uses: the op itself, names, state, balance, address family and port.
 * Returns 0 or the first error found (HM_EOP, HM_ECONTROL for a control character in any name,
 * HM_EAPPNAME, ...). Does not check that referenced
 * objects exist: that is the table's job.
 */
int hm_change_check(const struct hm_change *c);

#endif
