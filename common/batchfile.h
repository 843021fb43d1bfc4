/*
 * Reads the contract's batch file, {"changes": [ {...}, {...} ]}, one change at a time, so a
 * file of a million changes is never held in memory whole: the outer structure is scanned by
 * hand and each change object is parsed on its own with cJSON.
 *
 * Each change object is one of (optional fields take the defaults shown):
 *   {"op":"app.put","app":A,"maintenance":false,"affinity":false,"balance":"random"}
 *   {"op":"app.rm","app":A}
 *   {"op":"domain.put","domain":H,"app":A}          {"op":"domain.rm","domain":H}
 *   {"op":"dyno.put","app":A,"dyno":D,"addr":"HOST:PORT","state":"up"}
 *   {"op":"dyno.rm","app":A,"dyno":D}
 *   {"op":"cert.put","name":N,"cert":PEM,"key":PEM} {"op":"cert.rm","name":N}
 *     (N: a hostname, "*.domain" or "default"; PEM text, whose line ends are the only control
 *     characters allowed; no message ever quotes a "cert" or "key" value)
 * A field the op does not take, a missing required field, a wrong JSON type, or a value that
 * breaks the grammar is an error naming the change's index and the field.
 */
#ifndef HM_COMMON_BATCHFILE_H
#define HM_COMMON_BATCHFILE_H

#include <stdbool.h>
#include <stdio.h>

#include "common/model.h"

struct hm_batch_reader;

/* Reads from f (borrowed; not closed). Returns 0 or -ENOMEM. */
int hm_batch_reader_new(struct hm_batch_reader **out, FILE *f);
void hm_batch_reader_free(struct hm_batch_reader *r);

/*
 * The next change: returns 1 and fills *c (strings borrowed until the next call), 0 at the end
 * of a well-formed file, or HM_EJSON / a grammar code (HM_EAPPNAME, ...) / -EIO with a one-line
 * message in hm_batch_reader_error(). After an error, stop.
 */
int hm_batch_reader_next(struct hm_batch_reader *r, struct hm_change *c);

/* The message of the last error ("change 17: \"addr\": invalid dyno address ..."). */
const char *hm_batch_reader_error(const struct hm_batch_reader *r);

/* How many changes were returned so far. */
size_t hm_batch_reader_count(const struct hm_batch_reader *r);

/*
 * Converts one parsed change object (a cJSON object, passed as void * to keep cJSON out of this
 * header) into *c, strings borrowed from it. Returns 0, or an error with a message naming the
 * field in err. Used by hm_batch_reader_next and by programs that get change objects elsewhere.
 */
int hm_change_from_json(const void *object, struct hm_change *c, char *err, size_t errlen);

/*
 * Finds where a JSON value ends, one byte at a time, without parsing it: for readers that cut a
 * stream into values before handing each one to cJSON. Zero-initialise; feed every byte of the
 * value from its first; depth and in_str say where the scanner is.
 */
struct hm_json_extent {
	int depth;
	bool in_str;
	bool esc;
};

/* Feeds one byte; returns true when it closes the outermost object or array. */
bool hm_json_extent_feed(struct hm_json_extent *x, char c);

#endif
