/*
 * A request's certificate checks on libuv's thread pool (certjob.h says why). The job owns a
 * few slots, each a uv_work_t that checks one piece of consecutive certificates into the
 * job's records (each thread writes only its own piece's records). The loop hands out the next
 * piece when a slot comes back, so a job never holds more than HM__CERTJOB_SLOTS threads.
 *
 * A refused certificate does not need the ones after it checked: fail_at, the lowest refused
 * index so far, is shared (atomic) and a thread stops at the first index above it. Every index
 * below the final fail_at was checked, so the answer is the first refused change, as when the
 * loop checked them one by one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/util.h"
#include "syncd/certjob.h"

struct slot {
	uv_work_t w;
	struct hm__certjob *j;
	uint32_t from, to; /* the piece: records [from, to) */
	bool busy;
};

struct hm__certjob {
	struct hm__certputs *out; /* owned until taken */
	struct hm_change *in; /* n cert.put changes as the client sent them (strings borrowed) */
	uint64_t *at;	      /* each one's index among the request's changes */
	int *err;	      /* each one's result */
	uint32_t n, next;     /* next: the first record no piece has taken yet */
	int64_t now;
	atomic_uint_fast32_t fail_at; /* lowest refused record, or UINT32_MAX */
	atomic_bool cancel;
	struct slot slots[HM__CERTJOB_SLOTS];
	unsigned busy;
	hm__certjob_cb cb;
	void *arg;
	uv_loop_t *loop;
	uint32_t bad;
	char reason[HM_PROTO_MAX_REASON];
};

void hm__certputs_free(struct hm__certputs *cs)
{
	if (cs == NULL)
		return;
	for (uint32_t i = 0; i < cs->n; i++)
		hm__certput_fini(&cs->v[i]);
	free(cs->v);
	free(cs);
}

/* Appends the cert.put changes of m to j (j->in has room: counted before). */
static void collect(struct hm__certjob *j, const struct hm_msg *m, uint64_t *total)
{
	uint32_t nc;
	const struct hm_change *cs = hm__msg_changes(m, &nc);

	for (uint32_t k = 0; k < nc; k++, (*total)++) {
		if (cs[k].op != HM_OP_CERT_PUT)
			continue;
		j->in[j->n] = cs[k];
		j->at[j->n++] = *total;
	}
}

int hm__certjob_new(struct hm__certjob **out, struct hm_proto_decoder *dec,
		    const struct hm__request *r, const struct hm_msg *first, int64_t now)
{
	struct hm__certjob *j;
	uint64_t total = 0;
	uint32_t n = r->cert_puts;
	struct hm_msg dm;

	*out = NULL;
	if (n == 0)
		return 0; /* nothing to check: the messages are not decoded again */
	if ((j = calloc(1, sizeof(*j))) == NULL)
		return -ENOMEM;
	j->in = calloc(n, sizeof(*j->in));
	j->at = calloc(n, sizeof(*j->at));
	j->err = calloc(n, sizeof(*j->err));
	j->out = calloc(1, sizeof(*j->out));
	if (j->in == NULL || j->at == NULL || j->err == NULL || j->out == NULL ||
	    (j->out->v = calloc(n, sizeof(*j->out->v))) == NULL) {
		hm__certjob_free(j);
		return -ENOMEM;
	}
	j->out->n = n;
	j->now = now;
	atomic_init(&j->fail_at, UINT32_MAX);
	atomic_init(&j->cancel, false);
	/* A request is decoded where it arrived, so decoding it again cannot fail. */
	for (uint32_t i = 0; i < r->n; i++) {
		if (i == 0 && first != NULL && r->n == 1) {
			collect(j, first, &total);
			continue;
		}
		hm_require(hm_proto_decode(dec, nng_msg_body(r->msgs[i]), nng_msg_len(r->msgs[i]),
					   &dm) == 0);
		collect(j, &dm, &total);
	}
	hm_require(j->n == n);
	*out = j;
	return 0;
}

uint32_t hm__certjob_count(const struct hm__certjob *j)
{
	return j->n;
}

#ifdef HM_TEST_HOOKS
/*
 * Test builds: HM_TEST_CERTJOB_GATE=PATH holds every piece until the file PATH exists (or the
 * job is cancelled), so that a test can look at the origin while a check is in flight.
 */
static void test_gate(struct hm__certjob *j)
{
	const char *path = getenv("HM_TEST_CERTJOB_GATE");
	struct timespec ts = {.tv_nsec = 5000000};

	while (path != NULL && access(path, F_OK) != 0 && !atomic_load(&j->cancel))
		nanosleep(&ts, NULL);
}
#endif

/* Pool thread: checks the piece's records until the end, a cancel, or an earlier failure. */
static void run_piece(uv_work_t *w)
{
	struct slot *s = w->data;
	struct hm__certjob *j = s->j;

#ifdef HM_TEST_HOOKS
	test_gate(j);
#endif
	for (uint32_t i = s->from; i < s->to; i++) {
		if (atomic_load(&j->cancel) || i > atomic_load(&j->fail_at))
			return;
		j->err[i] = hm__certput_make(&j->out->v[i], &j->in[i], j->now);
		if (j->err[i] != 0) {
			uint_fast32_t f = atomic_load(&j->fail_at);

			while (i < f && !atomic_compare_exchange_weak(&j->fail_at, &f, i))
				;
			return;
		}
	}
}

static void piece_done(uv_work_t *w, int status);

/* Loop thread: gives slot s the next piece, if there is one worth checking. */
static int next_piece(struct hm__certjob *j, struct slot *s)
{
	int e;

	if (j->next >= j->n || atomic_load(&j->cancel) || j->next > atomic_load(&j->fail_at))
		return 0;
	s->from = j->next;
	s->to = j->n - j->next > HM__CERTJOB_PIECE ? j->next + HM__CERTJOB_PIECE : j->n;
	s->w.data = s;
	if ((e = uv_queue_work(j->loop, &s->w, run_piece, piece_done)) != 0)
		return e;
	j->next = s->to;
	s->busy = true;
	j->busy++;
	return 1;
}

/* Loop thread: the result, once every slot is back. */
static void finish(struct hm__certjob *j)
{
	uint32_t f = (uint32_t)atomic_load(&j->fail_at);
	size_t wl = 0;

	if (atomic_load(&j->cancel)) {
		j->cb(j, -ECANCELED, j->arg);
		return;
	}
	if (f != UINT32_MAX) {
		const struct hm_change *c = &j->in[f];
		const struct hm__certput *cp = &j->out->v[f];
		int e = j->err[f];

		j->bad = j->at[f] > UINT32_MAX - 1 ? UINT32_MAX : (uint32_t)j->at[f];
		snprintf(j->reason, sizeof(j->reason), "change %" PRIu64 " (cert.put %.*s): %s",
			 j->at[f], (int)c->name_len, c->name,
			 cp->chk.text[0] != '\0' ? cp->chk.text : hm_strerror(e));
		j->cb(j, e == -EINVAL ? HM_ECERTREFUSED : e, j->arg);
		return;
	}
	for (uint32_t i = 0; i < j->n; i++) {
		const struct hm__certput *cp = &j->out->v[i];
		char *warn = j->out->warn;
		size_t cap = sizeof(j->out->warn);

		if (cp->chk.warnings != 0 && wl < cap - 1) {
			int w = snprintf(warn + wl, cap - wl, "%scert %.*s: %s", wl > 0 ? "\n" : "",
					 (int)j->in[i].name_len, j->in[i].name, cp->chk.text);

			wl = w < 0 ? wl : HM_MIN(wl + (size_t)w, cap - 1);
		}
	}
	j->cb(j, 0, j->arg);
}

static void piece_done(uv_work_t *w, int status)
{
	struct slot *s = w->data;
	struct hm__certjob *j = s->j;
	int e;

	(void)status; /* UV_ECANCELED: the piece never ran; j->cancel is set */
	s->busy = false;
	j->busy--;
	if ((e = next_piece(j, s)) < 0) {
		/* The pool refused a piece (it never does once started): the request is not
		 * checked, so it is refused as if out of memory. */
		hm__certjob_cancel(j);
	}
	if (j->busy == 0)
		finish(j);
}

int hm__certjob_start(struct hm__certjob *j, uv_loop_t *loop, hm__certjob_cb cb, void *arg)
{
	int e = 0;

	j->loop = loop;
	j->cb = cb;
	j->arg = arg;
	for (unsigned i = 0; i < HM__CERTJOB_SLOTS; i++) {
		j->slots[i].j = j;
		if ((e = next_piece(j, &j->slots[i])) <= 0)
			break;
	}
	if (e < 0 && j->busy > 0) {
		/* Some pieces are out: they come back, and the callback with them. */
		hm__certjob_cancel(j);
		return 0;
	}
	return e < 0 ? e : 0;
}

void hm__certjob_cancel(struct hm__certjob *j)
{
	atomic_store(&j->cancel, true);
	for (unsigned i = 0; i < HM__CERTJOB_SLOTS; i++)
		if (j->slots[i].busy)
			uv_cancel((uv_req_t *)&j->slots[i].w);
}

uint32_t hm__certjob_error(const struct hm__certjob *j, const char **reason)
{
	*reason = j->reason;
	return j->bad;
}

struct hm__certputs *hm__certjob_take(struct hm__certjob *j)
{
	struct hm__certputs *cs = j->out;

	j->out = NULL;
	return cs;
}

void hm__certjob_free(struct hm__certjob *j)
{
	if (j == NULL)
		return;
	hm__certputs_free(j->out);
	free(j->in);
	free(j->at);
	free(j->err);
	free(j);
}
