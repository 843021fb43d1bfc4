/*
 * Multi-part control requests on the origin: parts held until the last one arrives, so that
 * the whole request is validated and numbered as one batch (docs/protocol.md, "Control").
 * Moved out of origin.c, which keeps sequencing.
 *
 * A request's parts must arrive in order (a resend of a part already held is accepted again);
 * what all requests in progress hold is bounded by --max-request, counting what each part costs
 * besides its bytes, and a request idle for a minute is dropped. Loop thread only.
 */
#ifndef HM_SYNCD_STAGING_H
#define HM_SYNCD_STAGING_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/proto.h"
#include "syncd/wire.h"

/* How many changes each published part of a batch holds. */
struct hm__counts {
	uint32_t *v; /* owned */
	uint32_t n, cap;
};

/* The changes a decoded message holds: a control request's part, or a BATCH message (the
 * origin's own batches, which may hold secret ops). */
const struct hm_change *hm__msg_changes(const struct hm_msg *m, uint32_t *n);

/* Cuts m's changes into published parts, continuing what sp and parts hold, and adds the number
 * of its cert.put changes to *cert_puts. */
void hm__split_changes(struct hm__splitter *sp, struct hm__counts *parts, uint32_t *cert_puts,
		       const struct hm_msg *m);

struct hm__certputs;

/* A whole request, ready to be validated (everything owned). */
struct hm__request {
	nng_msg **msgs; /* malloc'd array of n messages */
	uint32_t n;
	struct hm__counts parts;
	uint32_t cert_puts;	    /* its cert.put changes (counted by hm__split_changes) */
	struct hm__certputs *certs; /* its cert.put changes checked (syncd/certjob.h), or NULL */
};

/* Frees what r holds. */
void hm__request_fini(struct hm__request *r);

struct hm__staging;

/* max_bytes: what all requests in progress may hold. Returns 0 or -ENOMEM. */
int hm__staging_new(struct hm__staging **out, uint64_t max_bytes);
void hm__staging_free(struct hm__staging *st);

enum hm__stage_result {
	HM__STAGE_HELD,	    /* the part is held: answer "staged" */
	HM__STAGE_COMPLETE, /* the last part: *out holds the whole request */
	HM__STAGE_REFUSED,  /* code and reason say why (the request is forgotten) */
};

/*
 * Takes one part of a multi-part request (msg is taken whatever the result; m is its decoded
 * form, borrowed). On HM__STAGE_REFUSED, *code is HM_EGAP or HM_ETOOBIG and reason (reasonlen
 * bytes) says what to do.
 */
enum hm__stage_result hm__staging_add(struct hm__staging *st, const struct hm_msg *m, nng_msg *msg,
				      struct hm__request *out, int *code, char *reason,
				      size_t reasonlen);

/* Drops requests idle for idle_ms or more (logged). Returns how many. */
int hm__staging_expire(struct hm__staging *st, uint64_t now_ms, uint64_t idle_ms);

/* Bytes held by requests in progress (status "staged_bytes"). */
uint64_t hm__staging_bytes(const struct hm__staging *st);

#endif
