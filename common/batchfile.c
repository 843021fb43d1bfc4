/*
 * Streaming reader of batch files. The outer {"changes": [ ... ]} is scanned by hand from a
 * refillable buffer; each element's extent is found by tracking strings and nesting depth, and
 * only that slice is handed to cJSON. Memory is bounded by the largest single change (1 MiB),
 * not by the file.
 */
#include "common/batchfile.h"

#include <cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/util.h"

#define ELEMENT_MAX (1u << 20)
#define CHUNK	    65536

enum state { START, FIRST, MIDDLE, END, DONE, FAILED };

struct hm_batch_reader {
	FILE *f;
	char *buf;
	size_t len, pos, cap;
	bool eof;
	enum state state;
	cJSON *cur; /* the change returned last; its strings are borrowed by the caller */
	size_t count;
	char err[256];
};

int hm_batch_reader_new(struct hm_batch_reader **out, FILE *f)
{
	struct hm_batch_reader *r = calloc(1, sizeof(*r));

	if (r == NULL || (r->buf = malloc(CHUNK)) == NULL) {
		free(r);
		return -ENOMEM;
	}
	r->cap = CHUNK;
	r->f = f;
	*out = r;
	return 0;
}

void hm_batch_reader_free(struct hm_batch_reader *r)
{
	if (r == NULL)
		return;
	cJSON_Delete(r->cur);
	free(r->buf);
	free(r);
}

const char *hm_batch_reader_error(const struct hm_batch_reader *r)
{
	return r->err;
}

size_t hm_batch_reader_count(const struct hm_batch_reader *r)
{
	return r->count;
}

static int fail(struct hm_batch_reader *r, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(struct hm_batch_reader *r, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
	r->state = FAILED;
	return code;
}

/* Makes at least one more byte available after pos, keeping [keep, len). Returns false at EOF. */
static bool refill(struct hm_batch_reader *r, size_t *keep)
{
	size_t from = keep != NULL ? *keep : r->pos, n;

	if (r->eof)
		return false;
	if (from > 0) {
		memmove(r->buf, r->buf + from, r->len - from);
		r->len -= from;
		r->pos -= from;
		if (keep != NULL)
			*keep = 0;
	}
	if (r->cap - r->len < CHUNK) {
		size_t cap = r->cap * 2;
		char *b = cap <= 2 * ELEMENT_MAX + CHUNK ? realloc(r->buf, cap) : NULL;

		if (b == NULL)
			return false;
		r->buf = b;
		r->cap = cap;
	}
	n = fread(r->buf + r->len, 1, r->cap - r->len, r->f);
	if (n == 0)
		r->eof = true;
	r->len += n;
	return n > 0;
}

/* The next non-whitespace byte (not consumed), or -1 at EOF. */
static int peek(struct hm_batch_reader *r)
{
	for (;;) {
		while (r->pos < r->len) {
			char c = r->buf[r->pos];

			if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
				return (unsigned char)c;
			r->pos++;
		}
		if (!refill(r, NULL))
			return -1;
	}
}

static bool expect(struct hm_batch_reader *r, char want)
{
	if (peek(r) != (unsigned char)want)
		return false;
	r->pos++;
	return true;
}

/* Reads a JSON string token without escapes into out (up to outlen - 1 bytes). */
static bool simple_string(struct hm_batch_reader *r, char *out, size_t outlen)
{
	size_t n = 0;

	if (!expect(r, '"'))
		return false;
	for (;;) {
		if (r->pos == r->len && !refill(r, NULL))
			return false;
		char c = r->buf[r->pos++];

		if (c == '"')
			break;
		if (c == '\\' || n + 1 >= outlen)
			return false;
		out[n++] = c;
	}
	out[n] = '\0';
	return true;
}

bool hm_json_extent_feed(struct hm_json_extent *x, char c)
{
	if (x->in_str) {
		if (x->esc)
			x->esc = false;
		else if (c == '\\')
			x->esc = true;
		else if (c == '"')
			x->in_str = false;
	} else if (c == '"') {
		x->in_str = true;
	} else if (c == '{' || c == '[') {
		x->depth++;
	} else if (c == '}' || c == ']') {
		return --x->depth == 0;
	}
	return false;
}

/*
 * Looks for a control character (see hm_ctl_scan) in the strings of the JSON text s[0..n): as a
 * raw byte, or as an escape that stands for one (\b \f \n \r \t, \u0000-\u001f, \u007f,
 * \u0080-\u009f). It must run on the text: cJSON hands back a string holding an escaped NUL cut
 * short at the NUL ("victim.test\u0000.tenant.example" would be a valid "victim.test").
 * Returns the code point found, or -1. key gets the member it was found in (its key as written,
 * cut to keylen - 1 bytes), or "" if it is in a key.
 */
static long json_ctl_scan(const char *s, size_t n, char *key, size_t keylen)
{
	bool in_str = false, is_key = false;
	char last = 0; /* the last byte outside strings that is not whitespace */
	size_t kl = 0;

	key[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		long cp = -1;

		if (!in_str) {
			if (c == '"') {
				in_str = true;
				is_key = last != ':';
				if (is_key)
					kl = 0;
			} else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
				last = (char)c;
			}
			continue;
		}
		if (c == '"') {
			in_str = false;
			if (is_key)
				key[kl] = '\0';
			last = '"';
			continue;
		}
		if (c == '\\' && i + 1 < n) {
			char e = s[++i];

			if (e == 'b' || e == 'f' || e == 'n' || e == 'r' || e == 't') {
				static const char letters[] = "bfnrt", codes[] = "\b\f\n\r\t";

				cp = codes[strchr(letters, e) - letters];
			} else if (e == 'u' && i + 4 < n) {
				long v = 0;

				for (int k = 1; k <= 4 && v >= 0; k++) {
					int d = hm_hexval(s[i + (size_t)k]);

					v = d < 0 ? -1 : v << 4 | d;
				}
				if (v >= 0 && (v < 0x20 || (v >= 0x7f && v <= 0x9f)))
					cp = v;
				i += 4;
			}
		} else if (c < 0x20 || c == 0x7f) {
			cp = c;
		} else if (c == 0xc2 && i + 1 < n && (unsigned char)s[i + 1] >= 0x80 &&
			   (unsigned char)s[i + 1] <= 0x9f) {
			cp = (unsigned char)s[i + 1];
		} else if (is_key && kl + 1 < keylen) {
			key[kl++] = (char)c;
		}
		/* PEM's own line ends, in the two members that hold PEM. */
		if ((cp == '\n' || cp == '\r') && !is_key &&
		    (strcmp(key, "cert") == 0 || strcmp(key, "key") == 0))
			cp = -1;
		if (cp >= 0) {
			if (is_key)
				key[0] = '\0';
			return cp;
		}
	}
	return -1;
}

/* Finds the end of the JSON value starting at pos; parses it into r->cur. */
static int element(struct hm_batch_reader *r)
{
	size_t start = r->pos, i = r->pos;
	struct hm_json_extent x = {0};
	const char *end;
	char key[32];
	long cp;

	if (peek(r) != '{')
		return fail(r, HM_EJSON, "change %zu: not a JSON object", r->count);
	start = i = r->pos;
	for (;;) {
		if (i == r->len) {
			size_t off = i - start;

			if (off > ELEMENT_MAX || !refill(r, &start))
				return fail(r, HM_EJSON, "change %zu: %s", r->count,
					    off > ELEMENT_MAX ? "larger than 1 MiB"
							      : "the file ends inside it");
			i = start + off;
			continue;
		}
		if (hm_json_extent_feed(&x, r->buf[i++]))
			break;
	}
	if ((cp = json_ctl_scan(r->buf + start, i - start, key, sizeof(key))) >= 0) {
		if (key[0] == '\0')
			return fail(r, HM_ECONTROL,
				    "change %zu: a key holds a control character (U+%04lX)",
				    r->count, cp);
		return fail(r, HM_ECONTROL,
			    "change %zu: \"%s\": holds a control character (U+%04lX)", r->count,
			    key, cp);
	}
	cJSON_Delete(r->cur);
	r->cur = cJSON_ParseWithLengthOpts(r->buf + start, i - start, &end, 0);
	if (r->cur == NULL || end != r->buf + i)
		return fail(r, HM_EJSON, "change %zu: invalid JSON", r->count);
	r->pos = i;
	return 0;
}

enum field {
	F_OP = 1 << 0,
	F_APP = 1 << 1,
	F_DOMAIN = 1 << 2,
	F_DYNO = 1 << 3,
	F_ADDR = 1 << 4,
	F_STATE = 1 << 5,
	F_MAINT = 1 << 6,
	F_AFF = 1 << 7,
	F_BALANCE = 1 << 8,
	F_NAME = 1 << 9,
	F_CERT = 1 << 10,
	F_KEY = 1 << 11,
};

static const struct {
	const char *name;
	unsigned bit;
} fields[] = {
    {"op", F_OP},	    {"app", F_APP},	{"domain", F_DOMAIN},	  {"dyno", F_DYNO},
    {"addr", F_ADDR},	    {"state", F_STATE}, {"maintenance", F_MAINT}, {"affinity", F_AFF},
    {"balance", F_BALANCE}, {"name", F_NAME},	{"cert", F_CERT},	  {"key", F_KEY},
};

/* For each op: fields it takes, and fields it needs. */
static const unsigned allowed[] = {
    [HM_OP_APP_PUT] = F_OP | F_APP | F_MAINT | F_AFF | F_BALANCE,
    [HM_OP_APP_RM] = F_OP | F_APP,
    [HM_OP_DOMAIN_PUT] = F_OP | F_DOMAIN | F_APP,
    [HM_OP_DOMAIN_RM] = F_OP | F_DOMAIN,
    [HM_OP_DYNO_PUT] = F_OP | F_APP | F_DYNO | F_ADDR | F_STATE,
    [HM_OP_DYNO_RM] = F_OP | F_APP | F_DYNO,
    [HM_OP_CERT_PUT] = F_OP | F_NAME | F_CERT | F_KEY,
    [HM_OP_CERT_RM] = F_OP | F_NAME,
};
static const unsigned required[] = {
    [HM_OP_APP_PUT] = F_OP | F_APP,
    [HM_OP_APP_RM] = F_OP | F_APP,
    [HM_OP_DOMAIN_PUT] = F_OP | F_DOMAIN | F_APP,
    [HM_OP_DOMAIN_RM] = F_OP | F_DOMAIN,
    [HM_OP_DYNO_PUT] = F_OP | F_APP | F_DYNO | F_ADDR,
    [HM_OP_DYNO_RM] = F_OP | F_APP | F_DYNO,
    [HM_OP_CERT_PUT] = F_OP | F_NAME | F_CERT | F_KEY,
    [HM_OP_CERT_RM] = F_OP | F_NAME,
};

#define FAIL(code, ...)                                                                            \
	do {                                                                                       \
		snprintf(err, errlen, __VA_ARGS__);                                                \
		return (code);                                                                     \
	} while (0)

int hm_change_from_json(const void *object, struct hm_change *c, char *err, size_t errlen)
{
	const cJSON *o = object, *item, *op = NULL;
	unsigned seen = 0;
	int e;

	memset(c, 0, sizeof(*c));
	c->state = HM_DYNO_UP;
	if (!cJSON_IsObject(o))
		FAIL(HM_EJSON, "not a JSON object");
	op = cJSON_GetObjectItemCaseSensitive(o, "op");
	if (!cJSON_IsString(op))
		FAIL(HM_EJSON, "\"op\" is missing or not a string");
	if (hm_op_parse(op->valuestring, strlen(op->valuestring), &c->op) != 0 ||
	    (c->op > HM_OP_ROUTING_MAX && c->op != HM_OP_CERT_PUT && c->op != HM_OP_CERT_RM))
		FAIL(HM_EOP,
		     "\"op\": unknown operation \"%.40s\" (app.put, app.rm, domain.put, "
		     "domain.rm, dyno.put, dyno.rm, cert.put, cert.rm)",
		     op->valuestring);
	cJSON_ArrayForEach(item, o)
	{
		unsigned bit = 0;
		const char *k = item->string, *v;
		size_t n;

		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if (strcmp(fields[i].name, k) == 0)
				bit = fields[i].bit;
		if (bit == 0)
			FAIL(HM_EJSON, "unknown field \"%.40s\"", k);
		if (!(allowed[c->op] & bit))
			FAIL(HM_EJSON, "\"%s\" does not take \"%s\"", hm_op_name(c->op), k);
		if (seen & bit)
			FAIL(HM_EJSON, "\"%s\" given twice", k);
		seen |= bit;
		if (bit == F_OP)
			continue;
		if (bit == F_MAINT || bit == F_AFF) {
			if (!cJSON_IsBool(item))
				FAIL(HM_EJSON, "\"%s\" must be true or false", k);
			*(bit == F_MAINT ? &c->maintenance : &c->affinity) = cJSON_IsTrue(item);
			continue;
		}
		if (!cJSON_IsString(item))
			FAIL(HM_EJSON, "\"%s\" must be a string", k);
		v = item->valuestring;
		n = strlen(v);
		switch (bit) {
		case F_APP:
			if ((e = hm_app_name_check(v, n)) != 0)
				FAIL(e, "\"app\": %s: \"%.70s\"", hm_strerror(e), v);
			c->app = v;
			c->app_len = (uint8_t)n;
			break;
		case F_DOMAIN:
			if ((e = hm_hostname_check(v, n, true)) != 0)
				FAIL(e, "\"domain\": %s: \"%.70s\"", hm_strerror(e), v);
			c->name = v;
			c->name_len = (uint16_t)n;
			break;
		case F_DYNO:
			if ((e = hm_dyno_name_check(v, n)) != 0)
				FAIL(e, "\"dyno\": %s: \"%.70s\"", hm_strerror(e), v);
			c->name = v;
			c->name_len = (uint16_t)n;
			break;
		case F_ADDR:
			if ((e = hm_addr_parse(v, n, &c->addr)) != 0)
				FAIL(e, "\"addr\": %s: \"%.60s\"", hm_strerror(e), v);
			break;
		case F_STATE:
			if ((e = hm_dyno_state_parse(v, n, &c->state)) != 0)
				FAIL(e, "\"state\": \"%.40s\" is not up, starting, crashed or down",
				     v);
			break;
		case F_BALANCE:
			if ((e = hm_balance_parse(v, n, &c->balance)) != 0)
				FAIL(e, "\"balance\": \"%.40s\" is not random or least-conn", v);
			break;
		case F_NAME:
			if ((e = hm_cert_name_check(v, n)) != 0)
				FAIL(e, "\"name\": %s: \"%.70s\"", hm_strerror(e), v);
			c->name = v;
			c->name_len = (uint16_t)n;
			break;
		case F_CERT:
		case F_KEY:
			/* The text is never quoted back: a key must not reach an error message. */
			if (n == 0 || n > (bit == F_CERT ? HM_CERT_CHAIN_MAX : HM_CERT_KEY_MAX))
				FAIL(HM_ECERT, "\"%s\": empty or larger than %u bytes", k,
				     bit == F_CERT ? HM_CERT_CHAIN_MAX : HM_CERT_KEY_MAX);
			if (hm_pem_scan(v, n) >= 0)
				FAIL(HM_ECONTROL, "\"%s\": not PEM text (a byte at %ld)", k,
				     hm_pem_scan(v, n));
			if (bit == F_CERT) {
				c->cert = v;
				c->cert_len = (uint32_t)n;
			} else {
				c->key = v;
				c->key_len = (uint32_t)n;
			}
			break;
		}
	}
	if ((seen & required[c->op]) != required[c->op]) {
		for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
			if ((required[c->op] & fields[i].bit) && !(seen & fields[i].bit))
				FAIL(HM_EJSON, "\"%s\" needs \"%s\"", hm_op_name(c->op),
				     fields[i].name);
	}
	return hm_change_check(c);
}

int hm_batch_reader_next(struct hm_batch_reader *r, struct hm_change *c)
{
	char key[16], why[200];
	int e, ch;

	switch (r->state) {
	case START:
		if (!expect(r, '{') || !simple_string(r, key, sizeof(key)) ||
		    strcmp(key, "changes") != 0 || !expect(r, ':') || !expect(r, '['))
			return fail(r, HM_EJSON, "a batch file is {\"changes\": [...]}");
		r->state = FIRST;
		/* fall through */
	case FIRST:
	case MIDDLE:
		ch = peek(r);
		if (ch == ']') {
			r->pos++;
			r->state = END;
			return hm_batch_reader_next(r, c);
		}
		if (r->state == MIDDLE) {
			if (ch != ',')
				return fail(r, HM_EJSON, "after change %zu: expected ',' or ']'",
					    r->count - 1);
			r->pos++;
		}
		if ((e = element(r)) != 0)
			return e;
		if ((e = hm_change_from_json(r->cur, c, why, sizeof(why))) != 0)
			return fail(r, e, "change %zu: %s", r->count, why);
		r->state = MIDDLE;
		r->count++;
		return 1;
	case END:
		if (!expect(r, '}') || peek(r) != -1)
			return fail(r, HM_EJSON, "unexpected data after the changes array");
		r->state = DONE;
		return ferror(r->f) ? fail(r, -EIO, "read error") : 0;
	case DONE:
		return 0;
	case FAILED:
		break;
	}
	return HM_EJSON;
}
