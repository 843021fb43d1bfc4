/*
 * The origin's sync socket: catch-up and snapshot chunks for edges, answered on dedicated
 * threads so that serving them never delays the loop that sequences and publishes.
 *
 * The loop feeds it (hm__syncsrv_publish, hm__syncsrv_snapshot); the sync threads read what the
 * loop fed under a short lock — references to immutable batches (the ring), file positions (the
 * journal index), reference-counted snapshot files — and do their file reads and encoding
 * without it.
 */
#ifndef HM_SYNCD_SYNCSRV_H
#define HM_SYNCD_SYNCSRV_H

#include <nng/nng.h>
#include <stdint.h>

#include "syncd/batch.h"
#include "syncd/journal.h"
#include "syncd/snapfile.h"
#include "proto/proto.h"

struct hm__syncsrv;

struct hm__syncsrv_stats {
	uint64_t catchups, catchup_parts, snapshots_sent, chunks, bad_requests, journal_reads;
	uint64_t dropped, delayed; /* requests dropped (pipelined), delayed (over the rate) */
	uint64_t ring_batches, ring_bytes, index_batches;
	uint64_t snapshot_seq;
};

/* Loop thread. dir is the data directory (journal reads); ring_bytes bounds the ring. */
int hm__syncsrv_new(struct hm__syncsrv **out, const char *dir, uint64_t epoch, uint64_t ring_bytes);

/*
 * Loop thread: b (a reference is taken) is published, at journal position pos. Batches come in
 * seq order. The ring keeps the newest up to ring_bytes; older ones are read from the journal.
 */
void hm__syncsrv_publish(struct hm__syncsrv *ss, struct hm__batch *b, const struct hm__jpos *pos);

/*
 * Loop thread: s (taken) becomes the snapshot served. The previous one stays open while edges
 * are fetching it (hm__syncsrv_tick closes it once idle); journal positions it covers are
 * forgotten.
 */
void hm__syncsrv_snapshot(struct hm__syncsrv *ss, struct hm__snapfile *s);

/* Loop thread, about once a second: closes retired snapshots idle for 60 s, forgets the limits
 * of connections idle for 60 s. */
void hm__syncsrv_tick(struct hm__syncsrv *ss);

/*
 * The answer to one sync request (borrowed), or NULL if it gets none (not a valid sync request;
 * a snapshot chunk that cannot be read). What the sync threads run; any thread, with its own
 * decoder d.
 */
nng_msg *hm__syncsrv_answer(struct hm__syncsrv *ss, struct hm_proto_decoder *d, nng_msg *req);

/*
 * What one connection may cost (before hm__syncsrv_start; default: no rate limit). A connection
 * has one request answered at a time: a request it sends while another is in progress is
 * dropped, unanswered (a REQ peer never does that). Reply bytes are paid from a bucket of
 * 4 x rate bytes refilled at rate bytes per second: a request that finds it in debt waits (on
 * its context, not on a thread) until the debt is paid. 0: unlimited.
 */
void hm__syncsrv_limit(struct hm__syncsrv *ss, uint64_t rate);

/* Starts answering on sock (a REP socket, already listening) with nthreads threads. */
int hm__syncsrv_start(struct hm__syncsrv *ss, nng_socket sock, int nthreads);

void hm__syncsrv_stats(struct hm__syncsrv *ss, struct hm__syncsrv_stats *out);

/* Stops answering: no new receives, threads joined, pending receives stopped, contexts closed.
 * Then the socket can be closed. */
void hm__syncsrv_stop(struct hm__syncsrv *ss);
void hm__syncsrv_free(struct hm__syncsrv *ss);

#endif
