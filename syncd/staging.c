/*
 * Multi-part control requests held until complete (staging.h). A list, because requests in
 * progress are few (one per hermodctl sending a large batch) and each is found by its id once
 * per part. What a request holds is charged its parts' bytes plus a fixed cost per request and
 * per part (its struct and tables, nng's message headers): otherwise a peer sending many tiny
 * first parts would hold far more memory than --max-request allows. Measured at about half of
 * the costs charged.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "syncd/certjob.h"
#include "syncd/staging.h"

#define STAGED_REQUEST_COST 1024
#define STAGED_PART_COST    256

struct staged {
	struct staged *next;
	uint8_t req_id[16];
	uint32_t nparts, have, cap;
	nng_msg **msgs; /* owned, have entries (grown as parts come: nparts is the peer's word) */
	size_t bytes;
	uint64_t last_ms;
	struct hm__splitter split; /* how the changes so far are cut into published parts */
	struct hm__counts parts;
	uint32_t cert_puts;
};

struct hm__staging {
	struct staged *list;
	uint64_t bytes, max_bytes;
};

const struct hm_change *hm__msg_changes(const struct hm_msg *m, uint32_t *n)
{
	if (m->type == HM_MSG_BATCH) {
		*n = m->batch.b.nchanges;
		return m->batch.b.changes;
	}
	*n = m->ctl_req.nchanges;
	return m->ctl_req.changes;
}

static void counts_push(struct hm__counts *c, uint32_t first)
{
	if (c->n == c->cap) {
		uint32_t cap = c->cap ? c->cap * 2 : 16;
		uint32_t *v = realloc(c->v, cap * sizeof(*v));

		hm_require(v != NULL);
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n++] = first;
}

void hm__split_changes(struct hm__splitter *sp, struct hm__counts *parts, uint32_t *cert_puts,
		       const struct hm_msg *m)
{
	uint32_t n;
	const struct hm_change *cs = hm__msg_changes(m, &n);

	for (uint32_t k = 0; k < n; k++) {
		if (hm__split_add(sp, hm__wire_change_size(&cs[k])))
			counts_push(parts, 0);
		parts->v[parts->n - 1]++;
		*cert_puts += cs[k].op == HM_OP_CERT_PUT;
	}
}

void hm__request_fini(struct hm__request *r)
{
	for (uint32_t i = 0; i < r->n; i++)
		nng_msg_free(r->msgs[i]);
	free(r->msgs);
	free(r->parts.v);
	hm__certputs_free(r->certs);
	memset(r, 0, sizeof(*r));
}

int hm__staging_new(struct hm__staging **out, uint64_t max_bytes)
{
	if ((*out = calloc(1, sizeof(**out))) == NULL)
		return -ENOMEM;
	(*out)->max_bytes = max_bytes;
	return 0;
}

static void staged_drop(struct hm__staging *st, struct staged **link)
{
	struct staged *s = *link;

	*link = s->next;
	st->bytes -= s->bytes;
	for (uint32_t i = 0; i < s->have; i++)
		nng_msg_free(s->msgs[i]);
	free(s->msgs);
	free(s->parts.v);
	free(s);
}

void hm__staging_free(struct hm__staging *st)
{
	if (st == NULL)
		return;
	while (st->list != NULL)
		staged_drop(st, &st->list);
	free(st);
}

static struct staged *staged_find(struct hm__staging *st, const uint8_t id[16],
				  struct staged ***link)
{
	for (struct staged **pp = &st->list; *pp != NULL; pp = &(*pp)->next)
		if (memcmp((*pp)->req_id, id, 16) == 0) {
			*link = pp;
			return *pp;
		}
	return NULL;
}

enum hm__stage_result hm__staging_add(struct hm__staging *st, const struct hm_msg *m, nng_msg *msg,
				      struct hm__request *out, int *code, char *reason,
				      size_t reasonlen)
{
	const uint8_t *id = m->ctl_req.req_id;
	uint32_t part = m->ctl_req.part, nparts = m->ctl_req.nparts;
	struct staged *s, **link = NULL;
	uint64_t cost;

	s = staged_find(st, id, &link);
	if (s == NULL && part == 0) {
		s = calloc(1, sizeof(*s));
		hm_require(s != NULL);
		memcpy(s->req_id, id, 16);
		s->nparts = nparts;
		hm__split_init(&s->split, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
		s->next = st->list;
		st->list = s;
		link = &st->list;
	}
	*code = HM_EGAP;
	if (s == NULL) {
		snprintf(reason, reasonlen,
			 "part %u of %u arrived without the parts before it (the origin may "
			 "have restarted): send the request again from part 0",
			 part, nparts);
		nng_msg_free(msg);
		return HM__STAGE_REFUSED;
	}
	if (s->nparts != nparts || part > s->have) {
		snprintf(reason, reasonlen,
			 "part %u of %u does not follow the %u parts received: send the request "
			 "again from part 0",
			 part, nparts, s->have);
		staged_drop(st, link);
		nng_msg_free(msg);
		return HM__STAGE_REFUSED;
	}
	s->last_ms = hm_mono_ms();
	if (part < s->have) {
		/* A resend of a part already held. */
		nng_msg_free(msg);
		return HM__STAGE_HELD;
	}
	cost = nng_msg_len(msg) + STAGED_PART_COST + (s->have == 0 ? STAGED_REQUEST_COST : 0);
	if (st->bytes + cost > st->max_bytes) {
		*code = HM_ETOOBIG;
		snprintf(reason, reasonlen,
			 "multi-part requests in progress would exceed --max-request (%" PRIu64
			 " bytes)",
			 st->max_bytes);
		staged_drop(st, link);
		nng_msg_free(msg);
		return HM__STAGE_REFUSED;
	}
	if (s->have == s->cap) {
		uint32_t cap = s->cap ? HM_MIN(s->cap * 2, s->nparts) : HM_MIN(8u, s->nparts);
		nng_msg **msgs = realloc(s->msgs, cap * sizeof(*msgs));

		hm_require(msgs != NULL);
		s->msgs = msgs;
		s->cap = cap;
	}
	s->msgs[s->have++] = msg;
	s->bytes += cost;
	st->bytes += cost;
	hm__split_changes(&s->split, &s->parts, &s->cert_puts, m);
	if (s->have < s->nparts)
		return HM__STAGE_HELD;
	/* The last part: the whole request is handed over. */
	out->msgs = s->msgs;
	out->n = s->have;
	out->parts = s->parts;
	out->cert_puts = s->cert_puts;
	s->msgs = NULL;
	s->have = 0;
	s->parts.v = NULL;
	staged_drop(st, link);
	return HM__STAGE_COMPLETE;
}

int hm__staging_expire(struct hm__staging *st, uint64_t now_ms, uint64_t idle_ms)
{
	struct staged **pp = &st->list;
	int n = 0;

	while (*pp != NULL) {
		if (now_ms - (*pp)->last_ms >= idle_ms) {
			hm_log(HM_LOG_WARNING, "origin",
			       "dropping a multi-part request idle for %" PRIu64
			       " s (%u of %u parts)",
			       idle_ms / 1000, (*pp)->have, (*pp)->nparts);
			staged_drop(st, pp);
			n++;
		} else {
			pp = &(*pp)->next;
		}
	}
	return n;
}

uint64_t hm__staging_bytes(const struct hm__staging *st)
{
	return st->bytes;
}
