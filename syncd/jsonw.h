/*
 * A small JSON writer into an hm__buf: objects, arrays, keys, strings (escaped), numbers,
 * booleans, null. Commas are inserted automatically: each nesting level remembers whether it
 * has had an element. Used by the admin socket (one JSON object per line) and hermodctl --json.
 * Nesting is bounded (HM__JSONW_DEPTH); deeper writes are a programming error (hm_require).
 */
#ifndef HM_SYNCD_JSONW_H
#define HM_SYNCD_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "syncd/buf.h"

#define HM__JSONW_DEPTH 16

struct hm__jsonw {
	struct hm__buf *out; /* borrowed */
	int depth;
	bool has_elem[HM__JSONW_DEPTH];
	bool after_key;
};

/* Starts writing into out (appends; out is not reset). */
void hm__jw_init(struct hm__jsonw *w, struct hm__buf *out);

void hm__jw_obj(struct hm__jsonw *w);	  /* { */
void hm__jw_obj_end(struct hm__jsonw *w); /* } */
void hm__jw_arr(struct hm__jsonw *w);	  /* [ */
void hm__jw_arr_end(struct hm__jsonw *w); /* ] */
void hm__jw_key(struct hm__jsonw *w, const char *key);
void hm__jw_str(struct hm__jsonw *w, const char *s, size_t n);
void hm__jw_cstr(struct hm__jsonw *w, const char *s);
void hm__jw_u64(struct hm__jsonw *w, uint64_t v);
void hm__jw_i64(struct hm__jsonw *w, int64_t v);
void hm__jw_bool(struct hm__jsonw *w, bool v);
void hm__jw_null(struct hm__jsonw *w);
/* A value given as raw JSON text (the caller vouches for it). */
void hm__jw_raw(struct hm__jsonw *w, const char *json, size_t n);

/* Key-value shorthands. */
void hm__jw_kstr(struct hm__jsonw *w, const char *key, const char *s, size_t n);
void hm__jw_kcstr(struct hm__jsonw *w, const char *key, const char *s);
void hm__jw_ku64(struct hm__jsonw *w, const char *key, uint64_t v);
void hm__jw_kbool(struct hm__jsonw *w, const char *key, bool v);
/* key: s, or null when s is NULL (an optional status field: an error, a holder's name). */
void hm__jw_kcstr_or_null(struct hm__jsonw *w, const char *key, const char *s);
/* key: v when present, else null (a figure that does not exist yet, e.g. no heartbeat seen). */
void hm__jw_ku64_or_null(struct hm__jsonw *w, const char *key, bool present, uint64_t v);
/* 16 hex digits of v, as a string: epochs and ids are 64-bit, beyond JSON's exact integers. */
void hm__jw_khex64(struct hm__jsonw *w, const char *key, uint64_t v);

/* Appends s (n bytes) to out as a JSON string with quotes; bytes that are not valid UTF-8 are
 * written as \u00XX escapes of their Latin-1 reading, so the output is always valid JSON. */
void hm__json_escape(struct hm__buf *out, const char *s, size_t n);

#endif
