/*
 * The certificate checks of one control request, run on libuv's thread pool (docs/tls.md,
 * "Checks off the loop"). A check costs ~5 ms of CPU (PEM decoding, chain, key and SAN checks):
 * a request with thousands of cert.put changes would stop the origin's loop for seconds (no
 * heartbeats, no other request answered). The loop collects the request's cert.put changes
 * (their bytes stay in the request's messages), then hands them to the pool in pieces of
 * HM__CERTJOB_PIECE certificates, at most HM__CERTJOB_SLOTS pieces at a time, so that several
 * threads share a big request, other users of the pool and other requests' checks are not
 * queued behind all of it, and a failure stops the pieces after it. When every piece is back,
 * the loop gets one callback with the result: the checked records in request order (with the
 * warnings), or the first refused change and the reason, word for word what the origin answered
 * when it checked on its loop.
 */
#ifndef HM_SYNCD_CERTJOB_H
#define HM_SYNCD_CERTJOB_H

#include <stdint.h>
#include <uv.h>

#include "proto/proto.h"
#include "syncd/certput.h"
#include "syncd/staging.h"

#define HM__CERTJOB_PIECE 32 /* certificates a thread checks in one go */
#define HM__CERTJOB_SLOTS 4  /* pieces of one request on the pool at a time */

/* The checked cert.put changes of one request, in request order: what sequencing feeds into
 * the state in place of the client's changes (hm__request.certs). */
struct hm__certputs {
	struct hm__certput *v; /* n records; never moved (a record points into itself) */
	uint32_t n;
	char warn[HM_PROTO_MAX_REASON]; /* the warnings, one line each, or "" */
};

/* Frees cs and what it holds; NULL is fine. */
void hm__certputs_free(struct hm__certputs *cs);

struct hm__certjob;

/*
 * Loop thread: the job is over. err is 0 (j's records are ready: hm__certjob_take), -ECANCELED
 * (hm__certjob_cancel), or the code to answer the request with, with bad (the change's index
 * in the request) and reason, as hm__certjob_error() gives them. The callback owns j (free it
 * with hm__certjob_free, there or later).
 */
typedef void (*hm__certjob_cb)(struct hm__certjob *j, int err, void *arg);

/*
 * Loop thread. Collects the r->cert_puts cert.put changes of r (borrowed: its messages must
 * outlive the job; first, if not NULL, is r->msgs[0] decoded by dec; dec decodes the other
 * messages, which overwrites first) to be checked at Unix time now. Returns 0 with *out NULL
 * (r->cert_puts is 0: there is nothing to check, and nothing is decoded), 0 with *out a job not
 * yet started, or -ENOMEM.
 */
int hm__certjob_new(struct hm__certjob **out, struct hm_proto_decoder *dec,
		    const struct hm__request *r, const struct hm_msg *first, int64_t now);

/* The number of certificates the job checks. */
uint32_t hm__certjob_count(const struct hm__certjob *j);

/*
 * Loop thread. Queues j's pieces on loop's thread pool; cb(j, err, arg) is called once on the
 * loop when they are all back. Returns 0, or a libuv error (then cb is never called).
 */
int hm__certjob_start(struct hm__certjob *j, uv_loop_t *loop, hm__certjob_cb cb, void *arg);

/*
 * Loop thread. Pieces not started are dropped and the ones running stop after their current
 * certificate; the callback still comes (err -ECANCELED), once every thread has let go of j.
 */
void hm__certjob_cancel(struct hm__certjob *j);

/* After an error callback: the index of the refused change in the request and the reason
 * ("change 3 (cert.put a.example): certificate expired ..."). Borrowed from j. */
uint32_t hm__certjob_error(const struct hm__certjob *j, const char **reason);

/* After a callback with err 0: the checked records (owned by the caller from now on). */
struct hm__certputs *hm__certjob_take(struct hm__certjob *j);

/* Frees j (not started, or after its callback); NULL is fine. */
void hm__certjob_free(struct hm__certjob *j);

#endif
