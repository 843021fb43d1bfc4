/*
 * The sync server. Sixteen REP contexts receive requests; their aio callbacks (nng's threads)
 * queue them for the sync threads, which build the answer and send it on the same context.
 *
 * Shared with the loop, under mu: the ring (batches by seq, newest ring_bytes), the journal
 * index (file position of every published batch since the current snapshot), the snapshots.
 * A request holds mu only to take references and copy positions.
 *
 * Per connection (pipe), under wmu with the work queue: whether a request of it is in progress
 * (a second one is dropped) and a byte bucket (replies are paid after they are built; a request
 * arriving in debt gets a not_before time, and the threads take the first request whose time
 * has come). So no connection can take more than its rate, whatever it asks, while the threads
 * stay free for the others.
 */
#include "syncd/syncsrv.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/nngx.h"

#define NCTX	     16
#define MAX_THREADS  4
#define PEER_IDLE_MS 60000
#define BURST	     4 /* the bucket holds this many seconds of the rate */
#define SNAP_IDLE_MS 60000
#define REPLY_BUDGET (HM_PROTO_MAX_MSG - 4096)

struct sctx {
	struct hm__syncsrv *ss;
	nng_ctx ctx;
	nng_aio *aio;
	nng_pipe pipe; /* the request's connection */
	bool open;
	bool sending;
};

struct work {
	struct work *next;
	struct sctx *c;
	nng_msg *msg;
	uint32_t pipe;
	uint64_t not_before; /* mono ms: the connection's bucket is in debt until then */
};

/* A connection's limits. */
struct peer {
	uint32_t pipe;
	bool busy;	/* a request of it is queued or being answered */
	double tokens;	/* bytes it may still take; negative: debt */
	uint64_t stamp; /* mono ms of the last refill */
};

struct snapref {
	struct snapref *next;
	struct hm__snapfile *f;
	int refs;
	uint64_t last_used;
};

struct hm__syncsrv {
	char *dir;
	uint64_t epoch;
	uint64_t ring_limit;

	pthread_mutex_t mu;
	/* ring: batches ring_first .. ring_first + ring_n - 1, circular in ring[] */
	struct hm__batch **ring;
	uint64_t ring_first, ring_cap, ring_head, ring_n, ring_bytes;
	/* index: positions of index_first .. index_first + index_n - 1 */
	struct hm__jpos *index;
	uint64_t index_first, index_n, index_cap, index_skip;
	uint64_t published;
	struct snapref *current;
	struct snapref *retired;

	/* work queue */
	pthread_mutex_t wmu;
	pthread_cond_t wcv;
	struct work *whead, *wtail;
	bool stopping;
	pthread_t threads[MAX_THREADS];
	int nthreads;

	struct sctx ctxs[NCTX];
	atomic_bool closing; /* no new receives */

	/* per-connection limits, under wmu */
	uint64_t rate; /* bytes per second; 0: unlimited */
	struct peer *peers;
	size_t npeers, peers_cap;

	_Atomic uint64_t catchups, catchup_parts, snapshots_sent, chunks, bad, journal_reads;
	_Atomic uint64_t dropped, delayed;
};

int hm__syncsrv_new(struct hm__syncsrv **out, const char *dir, uint64_t epoch, uint64_t ring_bytes)
{
	struct hm__syncsrv *ss = calloc(1, sizeof(*ss));

	if (ss == NULL || (ss->dir = strdup(dir)) == NULL) {
		free(ss);
		return -ENOMEM;
	}
	ss->epoch = epoch;
	ss->ring_limit = ring_bytes;
	pthread_mutex_init(&ss->mu, NULL);
	pthread_mutex_init(&ss->wmu, NULL);
	pthread_cond_init(&ss->wcv, NULL);
	*out = ss;
	return 0;
}

static struct hm__batch *ring_at(const struct hm__syncsrv *ss, uint64_t seq)
{
	return ss->ring[(ss->ring_head + (seq - ss->ring_first)) % ss->ring_cap];
}

void hm__syncsrv_publish(struct hm__syncsrv *ss, struct hm__batch *b, const struct hm__jpos *pos)
{
	struct hm__batch *drop[16];
	int ndrop = 0;

	pthread_mutex_lock(&ss->mu);
	/* index */
	if (ss->index_n == 0)
		ss->index_first = b->seq;
	if (ss->index_skip + ss->index_n == ss->index_cap) {
		/* Reclaim the slots of pruned entries before growing. */
		if (ss->index_skip > 0) {
			memmove(ss->index, ss->index + ss->index_skip,
				ss->index_n * sizeof(*ss->index));
			ss->index_skip = 0;
		}
		if (ss->index_n == ss->index_cap) {
			uint64_t cap = ss->index_cap ? ss->index_cap * 2 : 1024;
			struct hm__jpos *n = realloc(ss->index, cap * sizeof(*n));

			hm_require(n != NULL);
			ss->index = n;
			ss->index_cap = cap;
		}
	}
	ss->index[ss->index_skip + ss->index_n++] = *pos;
	/* ring */
	if (ss->ring_n == ss->ring_cap) {
		uint64_t cap = ss->ring_cap ? ss->ring_cap * 2 : 256;
		struct hm__batch **n = malloc(cap * sizeof(*n));

		hm_require(n != NULL);
		for (uint64_t i = 0; i < ss->ring_n; i++)
			n[i] = ss->ring[(ss->ring_head + i) % ss->ring_cap];
		free(ss->ring);
		ss->ring = n;
		ss->ring_cap = cap;
		ss->ring_head = 0;
	}
	if (ss->ring_n == 0)
		ss->ring_first = b->seq;
	hm__batch_ref(b);
	ss->ring[(ss->ring_head + ss->ring_n) % ss->ring_cap] = b;
	ss->ring_n++;
	ss->ring_bytes += b->rec_len;
	while (ss->ring_n > 1 && ss->ring_bytes > ss->ring_limit && ndrop < 16) {
		struct hm__batch *old = ss->ring[ss->ring_head];

		ss->ring_head = (ss->ring_head + 1) % ss->ring_cap;
		ss->ring_n--;
		ss->ring_first++;
		ss->ring_bytes -= old->rec_len;
		drop[ndrop++] = old;
	}
	ss->published = b->seq;
	pthread_mutex_unlock(&ss->mu);
	for (int i = 0; i < ndrop; i++)
		hm__batch_unref(drop[i]);
}

void hm__syncsrv_snapshot(struct hm__syncsrv *ss, struct hm__snapfile *s)
{
	struct snapref *r = calloc(1, sizeof(*r));
	uint64_t seq = hm__snap_info(s)->seq;

	hm_require(r != NULL);
	r->f = s;
	r->last_used = hm_mono_ms();
	pthread_mutex_lock(&ss->mu);
	if (ss->current != NULL) {
		ss->current->last_used = hm_mono_ms();
		ss->current->next = ss->retired;
		ss->retired = ss->current;
	}
	ss->current = r;
	/* Nothing published through us yet (a restart that found no journal record after its
	 * snapshot): the snapshot is the head. Left at 0, every edge at that seq would be told
	 * SNAPSHOT, load it, ask again and be told SNAPSHOT again, without end. */
	if (ss->ring_n == 0 && ss->index_n == 0 && seq > ss->published)
		ss->published = seq;
	/* Positions at or before the snapshot are never needed again. */
	while (ss->index_n > 0 && ss->index_first <= seq) {
		ss->index_first++;
		ss->index_skip++;
		ss->index_n--;
	}
	pthread_mutex_unlock(&ss->mu);
}

void hm__syncsrv_tick(struct hm__syncsrv *ss)
{
	struct snapref **pp, *close_list = NULL;
	uint64_t now = hm_mono_ms();

	pthread_mutex_lock(&ss->wmu);
	for (size_t i = 0; i < ss->npeers;) {
		/* Idle that long, a connection's bucket is full again: forget it (it is gone, or
		 * starts afresh, which is the same). */
		if (!ss->peers[i].busy && now - ss->peers[i].stamp >= PEER_IDLE_MS)
			ss->peers[i] = ss->peers[--ss->npeers];
		else
			i++;
	}
	pthread_mutex_unlock(&ss->wmu);

	pthread_mutex_lock(&ss->mu);
	pp = &ss->retired;
	while (*pp != NULL) {
		struct snapref *r = *pp;

		if (r->refs == 0 && now - r->last_used >= SNAP_IDLE_MS) {
			*pp = r->next;
			r->next = close_list;
			close_list = r;
		} else {
			pp = &r->next;
		}
	}
	pthread_mutex_unlock(&ss->mu);
	while (close_list != NULL) {
		struct snapref *r = close_list;

		close_list = r->next;
		hm__snap_close(r->f);
		free(r);
	}
}

/* ---- Answering ------------------------------------------------------------------------------ */

static nng_msg *msg_of(const struct hm_pbuf *pb)
{
	nng_msg *m;

	if (nng_msg_alloc(&m, pb->len) != 0)
		return NULL;
	memcpy(nng_msg_body(m), pb->data, pb->len);
	return m;
}

static nng_msg *catchup_status(struct hm__syncsrv *ss, uint8_t status, uint64_t head)
{
	struct hm_pbuf pb = {0};
	nng_msg *m = NULL;

	if (hm_proto_begin_catchup_rep(&pb, ss->epoch, head, status, false, 0) == 0)
		m = msg_of(&pb);
	hm_pbuf_fini(&pb);
	return m;
}

struct item {
	uint64_t seq;
	struct hm__batch *b; /* a reference, or NULL until read from the journal */
	struct hm__jpos pos;
};

static nng_msg *answer_catchup(struct hm__syncsrv *ss, const struct hm_msg *req)
{
	uint64_t after = req->catchup_req.after_seq, head, avail_from, est = 0;
	struct item *items;
	uint32_t nitems = 0, nparts = 0, from_part = req->catchup_req.from_part;
	struct hm_pbuf pb = {0};
	bool more = false;
	nng_msg *m = NULL;
	int e;

	atomic_fetch_add(&ss->catchups, 1);
	if (req->catchup_req.epoch != ss->epoch)
		return catchup_status(ss, HM_CATCHUP_EPOCH, ss->published);
	if ((items = malloc(HM_PROTO_MAX_BATCHES * sizeof(*items))) == NULL)
		return NULL;
	pthread_mutex_lock(&ss->mu);
	head = ss->published;
	avail_from = ss->ring_n > 0 ? ss->ring_first : head + 1;
	if (ss->index_n > 0 && ss->index_first < avail_from)
		avail_from = ss->index_first;
	if (after > head || (after < head && after + 1 < avail_from)) {
		pthread_mutex_unlock(&ss->mu);
		free(items);
		return catchup_status(ss, HM_CATCHUP_SNAPSHOT, head);
	}
	for (uint64_t seq = after + 1; seq <= head && nitems < HM_PROTO_MAX_BATCHES; seq++) {
		struct item *it = &items[nitems];

		it->seq = seq;
		it->b = NULL;
		if (ss->ring_n > 0 && seq >= ss->ring_first) {
			it->b = ring_at(ss, seq);
			hm__batch_ref(it->b);
			est += it->b->rec_len;
		} else if (ss->index_n > 0 && seq >= ss->index_first) {
			it->pos = ss->index[ss->index_skip + (seq - ss->index_first)];
			est += it->pos.len;
		} else {
			break;
		}
		nitems++;
		if (est >= REPLY_BUDGET)
			break;
	}
	pthread_mutex_unlock(&ss->mu);

	/* Batches older than the ring come from the journal, read outside the lock. */
	for (uint32_t i = 0; i < nitems; i++) {
		if (items[i].b != NULL)
			continue;
		atomic_fetch_add(&ss->journal_reads, 1);
		if ((e = hm__journal_read(ss->dir, &items[i].pos, items[i].seq, &items[i].b)) !=
		    0) {
			if (i == 0) {
				/* Compacted away meanwhile: only a snapshot helps now. */
				for (uint32_t k = 0; k < nitems; k++)
					hm__batch_unref(items[k].b);
				free(items);
				return catchup_status(ss, HM_CATCHUP_SNAPSHOT, head);
			}
			for (uint32_t k = i; k < nitems; k++)
				hm__batch_unref(items[k].b);
			nitems = i;
			break;
		}
	}
	if (nitems > 0 && from_part >= items[0].b->nparts)
		from_part = 0;

	/* Decide which parts fit, then encode them. */
	{
		uint64_t total = 64;
		uint32_t last_i = 0, last_p = 0;

		for (uint32_t i = 0; i < nitems && !more; i++) {
			for (uint32_t p = i == 0 ? from_part : 0; p < items[i].b->nparts; p++) {
				uint64_t need = (uint64_t)items[i].b->part_len[p] + 16;

				if (nparts == HM_PROTO_MAX_BATCHES || total + need > REPLY_BUDGET) {
					more = true;
					break;
				}
				total += need;
				nparts++;
				last_i = i;
				last_p = p;
			}
		}
		if (!more && nitems > 0)
			more = items[last_i].seq < head || last_p + 1 < items[last_i].b->nparts;
		if (nitems == 0)
			more = after < head;
		e = hm_proto_begin_catchup_rep(&pb, ss->epoch, head, HM_CATCHUP_OK, more, nparts);
		for (uint32_t i = 0, added = 0; e == 0 && added < nparts; i++) {
			for (uint32_t p = i == 0 ? from_part : 0;
			     e == 0 && p < items[i].b->nparts && added < nparts; p++, added++)
				e = hm_proto_add_catchup_raw(&pb, hm__batch_part(items[i].b, p),
							     items[i].b->part_len[p]);
		}
	}
	if (e == 0)
		m = msg_of(&pb);
	else
		hm_log(HM_LOG_ERR, "sync",
		       "cannot encode a catch-up reply after seq %" PRIu64 ": %s", after,
		       hm_strerror(e));
	atomic_fetch_add(&ss->catchup_parts, nparts);
	hm_pbuf_fini(&pb);
	for (uint32_t i = 0; i < nitems; i++)
		hm__batch_unref(items[i].b);
	free(items);
	return m;
}

static nng_msg *answer_snapshot(struct hm__syncsrv *ss, const struct hm_msg *req)
{
	struct snapref *r = NULL;
	uint32_t chunk = req->snapshot_req.chunk, len;
	nng_msg *m = NULL;

	pthread_mutex_lock(&ss->mu);
	if (req->snapshot_req.snap_id != 0) {
		if (ss->current != NULL &&
		    hm__snap_info(ss->current->f)->snap_id == req->snapshot_req.snap_id)
			r = ss->current;
		for (struct snapref *o = ss->retired; r == NULL && o != NULL; o = o->next)
			if (hm__snap_info(o->f)->snap_id == req->snapshot_req.snap_id)
				r = o;
	}
	if (r == NULL) {
		/* The latest, or the one asked for is gone: chunk 0 of the current one tells the
		 * edge (by its other snap_id) to start over. */
		r = ss->current;
		chunk = 0;
	}
	if (r != NULL) {
		r->refs++;
		r->last_used = hm_mono_ms();
	}
	pthread_mutex_unlock(&ss->mu);
	if (r == NULL)
		return NULL;
	len = hm__snap_chunk_len(r->f, chunk);
	if (len > 0 && nng_msg_alloc(&m, len) == 0) {
		int e = hm__snap_chunk_read(r->f, chunk, nng_msg_body(m));

		if (e != 0) {
			hm_log(HM_LOG_ERR, "sync", "reading snapshot chunk %u: %s", chunk,
			       hm_strerror(e));
			nng_msg_free(m);
			m = NULL;
		}
	}
	if (m != NULL) {
		atomic_fetch_add(&ss->chunks, 1);
		if (chunk == 0)
			atomic_fetch_add(&ss->snapshots_sent, 1);
	} else if (len == 0) {
		atomic_fetch_add(&ss->bad, 1); /* a chunk that does not exist */
	}
	pthread_mutex_lock(&ss->mu);
	r->refs--;
	r->last_used = hm_mono_ms();
	pthread_mutex_unlock(&ss->mu);
	return m;
}

/* Not a sync request: counted and dropped (no reply). */
static void count_bad(struct hm__syncsrv *ss, size_t len, const char *why)
{
	uint64_t n = atomic_fetch_add(&ss->bad, 1);

	if (n < 10 || n % 1000 == 0)
		hm_log(HM_LOG_WARNING, "sync", "dropped an invalid sync request (%zu bytes): %s",
		       len, why);
}

nng_msg *hm__syncsrv_answer(struct hm__syncsrv *ss, struct hm_proto_decoder *d, nng_msg *req)
{
	struct hm_msg m;
	int e = hm_proto_decode(d, nng_msg_body(req), nng_msg_len(req), &m);

	if (e != 0 || (m.type != HM_MSG_CATCHUP_REQ && m.type != HM_MSG_SNAPSHOT_REQ)) {
		count_bad(ss, nng_msg_len(req), e != 0 ? hm_strerror(e) : "not a sync request");
		return NULL;
	}
	return m.type == HM_MSG_CATCHUP_REQ ? answer_catchup(ss, &m) : answer_snapshot(ss, &m);
}

/* ---- Per-connection limits (under wmu) ------------------------------------------------------ */

static struct peer *peer_get(struct hm__syncsrv *ss, uint32_t pipe)
{
	for (size_t i = 0; i < ss->npeers; i++)
		if (ss->peers[i].pipe == pipe)
			return &ss->peers[i];
	if (ss->npeers == ss->peers_cap) {
		size_t cap = ss->peers_cap ? ss->peers_cap * 2 : 32;
		struct peer *v = realloc(ss->peers, cap * sizeof(*v));

		if (v == NULL)
			return NULL;
		ss->peers = v;
		ss->peers_cap = cap;
	}
	ss->peers[ss->npeers] =
	    (struct peer){.pipe = pipe, .tokens = (double)ss->rate * BURST, .stamp = hm_mono_ms()};
	return &ss->peers[ss->npeers++];
}

static void peer_refill(const struct hm__syncsrv *ss, struct peer *p, uint64_t now)
{
	p->tokens += (double)ss->rate * (double)(now - p->stamp) / 1000.0;
	if (p->tokens > (double)ss->rate * BURST)
		p->tokens = (double)ss->rate * BURST;
	p->stamp = now;
}

/* The first queued request whose time has come, unlinked; else NULL and *wake (0: none). */
static struct work *take_ready(struct hm__syncsrv *ss, uint64_t now, uint64_t *wake)
{
	struct work **pp = &ss->whead, *prev = NULL;

	*wake = 0;
	for (; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		struct work *w = *pp;

		if (w->not_before > now) {
			if (*wake == 0 || w->not_before < *wake)
				*wake = w->not_before;
			continue;
		}
		*pp = w->next;
		if (ss->wtail == w)
			ss->wtail = prev;
		return w;
	}
	return NULL;
}

static void *worker_main(void *arg)
{
	struct hm__syncsrv *ss = arg;
	struct hm_proto_decoder *d = NULL;

	hm_require(hm_proto_decoder_new(&d) == 0);
	for (;;) {
		struct work *w;
		struct peer *p;
		nng_msg *rep;
		uint64_t wake;

		pthread_mutex_lock(&ss->wmu);
		while ((w = take_ready(ss, hm_mono_ms(), &wake)) == NULL && !ss->stopping) {
			if (wake == 0) {
				pthread_cond_wait(&ss->wcv, &ss->wmu);
			} else {
				struct timespec ts;
				uint64_t ms = wake - HM_MIN(wake, hm_mono_ms());

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_sec += (time_t)(ms / 1000);
				ts.tv_nsec += (long)(ms % 1000) * 1000000L;
				if (ts.tv_nsec >= 1000000000L) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000L;
				}
				pthread_cond_timedwait(&ss->wcv, &ss->wmu, &ts);
			}
		}
		if (w == NULL) {
			pthread_mutex_unlock(&ss->wmu);
			break;
		}
		pthread_mutex_unlock(&ss->wmu);

		rep = hm__syncsrv_answer(ss, d, w->msg);
		nng_msg_free(w->msg);
		pthread_mutex_lock(&ss->wmu);
		if ((p = peer_get(ss, w->pipe)) != NULL) {
			p->busy = false;
			if (rep != NULL)
				p->tokens -= (double)nng_msg_len(rep);
		}
		pthread_mutex_unlock(&ss->wmu);
		if (rep != NULL) {
			w->c->sending = true;
			hm__rep_send(w->c->ctx, w->c->aio, rep);
		} else if (!atomic_load(&ss->closing)) {
			hm__rep_recv(w->c->ctx, w->c->aio);
		}
		free(w);
	}
	hm_proto_decoder_free(d);
	return NULL;
}

/*
 * A first look, on nng's thread, before a request counts against its connection: a sync request
 * is a few bytes of type CATCHUP_REQ or SNAPSHOT_REQ at a version this build reads. Anything
 * else is counted and dropped here, as hm__syncsrv_answer would, so that garbage never makes a
 * connection look busy.
 */
static bool looks_like_sync_request(struct hm__syncsrv *ss, nng_msg *m)
{
	uint8_t type = 0;
	uint32_t version = 0;

	if (nng_msg_len(m) <= 64 &&
	    hm_proto_peek(nng_msg_body(m), nng_msg_len(m), &type, &version) == 0 &&
	    (type == HM_MSG_CATCHUP_REQ || type == HM_MSG_SNAPSHOT_REQ) && version >= 1 &&
	    version <= hm_proto_version(type))
		return true;
	count_bad(ss, nng_msg_len(m), "not a sync request of a version this build reads");
	return false;
}

static void ctx_cb(void *arg)
{
	struct sctx *c = arg;
	struct hm__syncsrv *ss = c->ss;
	int rv = nng_aio_result(c->aio);
	struct work *w;

	if (c->sending) {
		c->sending = false;
		hm__rep_sent(c->aio, rv, c->pipe, "sync");
		if (rv == NNG_ECLOSED || atomic_load(&ss->closing))
			return;
		hm__rep_recv(c->ctx, c->aio);
		return;
	}
	if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
		return;
	if (rv != 0) {
		if (!atomic_load(&ss->closing))
			hm__rep_recv(c->ctx, c->aio);
		return;
	}
	if (!looks_like_sync_request(ss, nng_aio_get_msg(c->aio)) ||
	    (w = malloc(sizeof(*w))) == NULL) {
		nng_msg_free(nng_aio_get_msg(c->aio));
		hm__rep_recv(c->ctx, c->aio);
		return;
	}
	w->next = NULL;
	w->c = c;
	w->msg = nng_aio_get_msg(c->aio);
	w->not_before = 0;
	c->pipe = nng_msg_get_pipe(w->msg);
	w->pipe = (uint32_t)nng_pipe_id(c->pipe);
	pthread_mutex_lock(&ss->wmu);
	if (ss->rate > 0) {
		struct peer *p = peer_get(ss, w->pipe);
		uint64_t now = hm_mono_ms();

		if (p != NULL && p->busy) {
			/* Pipelined: a REQ peer never has two requests out. Unanswered, it costs
			 * nothing; the context takes the next request. */
			pthread_mutex_unlock(&ss->wmu);
			atomic_fetch_add(&ss->dropped, 1);
			nng_msg_free(w->msg);
			free(w);
			hm__rep_recv(c->ctx, c->aio);
			return;
		}
		if (p != NULL) {
			p->busy = true;
			peer_refill(ss, p, now);
			if (p->tokens < 0) {
				w->not_before =
				    now + (uint64_t)(-p->tokens * 1000.0 / (double)ss->rate) + 1;
				atomic_fetch_add(&ss->delayed, 1);
			}
		}
	}
	if (ss->wtail != NULL)
		ss->wtail->next = w;
	else
		ss->whead = w;
	ss->wtail = w;
	pthread_cond_signal(&ss->wcv);
	pthread_mutex_unlock(&ss->wmu);
}

void hm__syncsrv_limit(struct hm__syncsrv *ss, uint64_t rate)
{
	pthread_mutex_lock(&ss->wmu);
	ss->rate = rate;
	pthread_mutex_unlock(&ss->wmu);
}

int hm__syncsrv_start(struct hm__syncsrv *ss, nng_socket sock, int nthreads)
{
	int rv;

	for (int i = 0; i < NCTX; i++) {
		struct sctx *c = &ss->ctxs[i];

		c->ss = ss;
		if ((rv = nng_aio_alloc(&c->aio, ctx_cb, c)) != 0)
			return hm__nng_err(rv);
		if ((rv = nng_ctx_open(&c->ctx, sock)) != 0)
			return hm__nng_err(rv);
		c->open = true;
	}
	ss->nthreads = HM_MIN(HM_MAX(nthreads, 1), MAX_THREADS);
	for (int i = 0; i < ss->nthreads; i++)
		if ((rv = pthread_create(&ss->threads[i], NULL, worker_main, ss)) != 0) {
			ss->nthreads = i;
			return -rv;
		}
	for (int i = 0; i < NCTX; i++)
		hm__rep_recv(ss->ctxs[i].ctx, ss->ctxs[i].aio);
	return 0;
}

void hm__syncsrv_stats(struct hm__syncsrv *ss, struct hm__syncsrv_stats *out)
{
	out->catchups = atomic_load(&ss->catchups);
	out->catchup_parts = atomic_load(&ss->catchup_parts);
	out->snapshots_sent = atomic_load(&ss->snapshots_sent);
	out->chunks = atomic_load(&ss->chunks);
	out->bad_requests = atomic_load(&ss->bad);
	out->journal_reads = atomic_load(&ss->journal_reads);
	out->dropped = atomic_load(&ss->dropped);
	out->delayed = atomic_load(&ss->delayed);
	pthread_mutex_lock(&ss->mu);
	out->ring_batches = ss->ring_n;
	out->ring_bytes = ss->ring_bytes;
	out->index_batches = ss->index_n;
	out->snapshot_seq = ss->current != NULL ? hm__snap_info(ss->current->f)->seq : 0;
	pthread_mutex_unlock(&ss->mu);
}

void hm__syncsrv_stop(struct hm__syncsrv *ss)
{
	atomic_store(&ss->closing, true);
	pthread_mutex_lock(&ss->wmu);
	ss->stopping = true;
	pthread_cond_broadcast(&ss->wcv);
	pthread_mutex_unlock(&ss->wmu);
	for (int i = 0; i < ss->nthreads; i++)
		pthread_join(ss->threads[i], NULL);
	ss->nthreads = 0;
	for (int i = 0; i < NCTX; i++) {
		struct sctx *c = &ss->ctxs[i];

		if (c->aio != NULL)
			nng_aio_stop(c->aio);
	}
	for (int i = 0; i < NCTX; i++)
		if (ss->ctxs[i].open) {
			nng_ctx_close(ss->ctxs[i].ctx);
			ss->ctxs[i].open = false;
		}
}

void hm__syncsrv_free(struct hm__syncsrv *ss)
{
	struct snapref *r, *next;

	if (ss == NULL)
		return;
	for (int i = 0; i < NCTX; i++)
		if (ss->ctxs[i].aio != NULL)
			nng_aio_free(ss->ctxs[i].aio);
	while (ss->whead != NULL) {
		struct work *w = ss->whead;

		ss->whead = w->next;
		nng_msg_free(w->msg);
		free(w);
	}
	for (uint64_t i = 0; i < ss->ring_n; i++)
		hm__batch_unref(ss->ring[(ss->ring_head + i) % ss->ring_cap]);
	free(ss->ring);
	free(ss->index);
	free(ss->peers);
	if (ss->current != NULL) {
		hm__snap_close(ss->current->f);
		free(ss->current);
	}
	for (r = ss->retired; r != NULL; r = next) {
		next = r->next;
		hm__snap_close(r->f);
		free(r);
	}
	pthread_mutex_destroy(&ss->mu);
	pthread_mutex_destroy(&ss->wmu);
	pthread_cond_destroy(&ss->wcv);
	free(ss->dir);
	free(ss);
}
