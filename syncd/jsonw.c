/*
 * The JSON writer. Separators are decided when a value starts: a value at a level that already
 * has an element gets a comma first, unless it directly follows its key.
 */
#include "syncd/jsonw.h"

#include <inttypes.h>
#include <stdio.h>

#include "common/util.h"

void hm__jw_init(struct hm__jsonw *w, struct hm__buf *out)
{
	memset(w, 0, sizeof(*w));
	w->out = out;
}

static void sep(struct hm__jsonw *w)
{
	if (w->after_key) {
		w->after_key = false;
		return;
	}
	if (w->has_elem[w->depth])
		hm__buf_add(w->out, ",", 1);
	w->has_elem[w->depth] = true;
}

static void open_level(struct hm__jsonw *w, char c)
{
	sep(w);
	hm__buf_add(w->out, &c, 1);
	hm_require(w->depth + 1 < HM__JSONW_DEPTH);
	w->depth++;
	w->has_elem[w->depth] = false;
}

static void close_level(struct hm__jsonw *w, char c)
{
	hm_require(w->depth > 0);
	w->depth--;
	hm__buf_add(w->out, &c, 1);
}

void hm__jw_obj(struct hm__jsonw *w)
{
	open_level(w, '{');
}

void hm__jw_obj_end(struct hm__jsonw *w)
{
	close_level(w, '}');
}

void hm__jw_arr(struct hm__jsonw *w)
{
	open_level(w, '[');
}

void hm__jw_arr_end(struct hm__jsonw *w)
{
	close_level(w, ']');
}

void hm__jw_key(struct hm__jsonw *w, const char *key)
{
	sep(w);
	hm__json_escape(w->out, key, strlen(key));
	hm__buf_add(w->out, ":", 1);
	w->after_key = true;
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	size_t len;
	uint32_t cp;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2;
		cp = s[0] & 0x1f;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3;
		cp = s[0] & 0x0f;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4;
		cp = s[0] & 0x07;
	} else {
		return 0;
	}
	if (len > n)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
	    cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

void hm__json_escape(struct hm__buf *out, const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0, run = 0;
	char esc[8];

	hm__buf_add(out, "\"", 1);
	while (i < n) {
		unsigned char c = p[i];
		size_t l = c >= 0x20 && c != '"' && c != '\\' ? utf8_len(p + i, n - i) : 0;

		if (l > 0) {
			i += l;
			run += l;
			continue;
		}
		hm__buf_add(out, p + i - run, run);
		run = 0;
		switch (c) {
		case '"':
			hm__buf_add(out, "\\\"", 2);
			break;
		case '\\':
			hm__buf_add(out, "\\\\", 2);
			break;
		case '\n':
			hm__buf_add(out, "\\n", 2);
			break;
		case '\r':
			hm__buf_add(out, "\\r", 2);
			break;
		case '\t':
			hm__buf_add(out, "\\t", 2);
			break;
		default:
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			hm__buf_add(out, esc, 6);
			break;
		}
		i++;
	}
	hm__buf_add(out, p + i - run, run);
	hm__buf_add(out, "\"", 1);
}

void hm__jw_str(struct hm__jsonw *w, const char *s, size_t n)
{
	sep(w);
	hm__json_escape(w->out, s, n);
}

void hm__jw_cstr(struct hm__jsonw *w, const char *s)
{
	hm__jw_str(w, s, strlen(s));
}

void hm__jw_u64(struct hm__jsonw *w, uint64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRIu64, v);

	sep(w);
	hm__buf_add(w->out, num, (size_t)n);
}

void hm__jw_i64(struct hm__jsonw *w, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, v);

	sep(w);
	hm__buf_add(w->out, num, (size_t)n);
}

void hm__jw_bool(struct hm__jsonw *w, bool v)
{
	sep(w);
	hm__buf_add(w->out, v ? "true" : "false", v ? 4 : 5);
}

void hm__jw_null(struct hm__jsonw *w)
{
	sep(w);
	hm__buf_add(w->out, "null", 4);
}

void hm__jw_raw(struct hm__jsonw *w, const char *json, size_t n)
{
	sep(w);
	hm__buf_add(w->out, json, n);
}

void hm__jw_kstr(struct hm__jsonw *w, const char *key, const char *s, size_t n)
{
	hm__jw_key(w, key);
	hm__jw_str(w, s, n);
}

void hm__jw_kcstr(struct hm__jsonw *w, const char *key, const char *s)
{
	hm__jw_key(w, key);
	hm__jw_cstr(w, s);
}

void hm__jw_ku64(struct hm__jsonw *w, const char *key, uint64_t v)
{
	hm__jw_key(w, key);
	hm__jw_u64(w, v);
}

void hm__jw_kbool(struct hm__jsonw *w, const char *key, bool v)
{
	hm__jw_key(w, key);
	hm__jw_bool(w, v);
}

void hm__jw_kcstr_or_null(struct hm__jsonw *w, const char *key, const char *s)
{
	hm__jw_key(w, key);
	if (s != NULL)
		hm__jw_cstr(w, s);
	else
		hm__jw_null(w);
}

void hm__jw_ku64_or_null(struct hm__jsonw *w, const char *key, bool present, uint64_t v)
{
	hm__jw_key(w, key);
	if (present)
		hm__jw_u64(w, v);
	else
		hm__jw_null(w);
}

void hm__jw_khex64(struct hm__jsonw *w, const char *key, uint64_t v)
{
	char hex[17];

	snprintf(hex, sizeof(hex), "%016" PRIx64, v);
	hm__jw_kstr(w, key, hex, 16);
}
