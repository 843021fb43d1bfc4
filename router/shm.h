/*
 * Memory the master shares with its workers, mapped once (MAP_SHARED | MAP_ANONYMOUS) before the
 * first fork: one slot per worker process, holding
 *
 *  - its counters, which the master sums when /metrics is scraped (and folds into its retired
 *    totals when the worker dies, so counters never go backwards);
 *  - its in-flight ledger: what it has added to the table's in-flight counters, by (table file,
 *    counter slot), so that what a killed worker leaves behind can be subtracted again;
 *  - what it knows of the routing table (present, version, commit time), for /metrics;
 *  - its pid and a ready flag (set once it accepts), which SIGUSR2's rolling restart waits for.
 *
 * The master never touches the routing table (a truncated or corrupt file must not be able to
 * kill it): it reads the workers' figures, and a dead worker's ledger is subtracted from the
 * table by a live worker. When the master reaps a worker whose ledger still counts something,
 * the slot becomes an orphan; a live worker claims it (HM__LEDGER_ORPHAN -> DRAINING, a
 * compare-and-swap), subtracts it from its current map, clears it and hands the slot back
 * (OWNED). If no slot is free, the master may give an orphan slot to a new worker, which then
 * drains its own slot before it accepts.
 *
 * Each slot has one writer (its worker); the master only reads, except when the slot is free.
 * Counter updates are relaxed atomic loads and stores: no locked instructions per request.
 */
#ifndef HM_ROUTER_SHM_H
#define HM_ROUTER_SHM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "router/codes.h"
#include "router/h2.h"
#include "router/tls.h"

/* Histogram bucket upper bounds, microseconds (plus +Inf). */
#define HM__HIST_BOUNDS_US                                                                         \
	{                                                                                          \
		1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000, 2500000,   \
		    5000000, 10000000, 30000000                                                    \
	}
#define HM__HIST_N 14

struct hm__router_hist {
	uint64_t bucket[HM__HIST_N + 1]; /* non-cumulative; the last is +Inf */
	uint64_t sum_us;
	uint64_t count;
};

struct hm__router_counters {
	uint64_t requests[6];		/* by status class: [1..5] = 1xx..5xx, [0] other */
	uint64_t codes[HM__CODE_COUNT]; /* by H-code */
	struct hm__router_hist connect;
	struct hm__router_hist service;
	uint64_t pool_reused;
	uint64_t pool_new;
	uint64_t conns_total;
	uint64_t log_dropped;
	uint64_t accept_paused; /* times accepting paused at the worker's connection limit */
	uint64_t fd_exhausted;	/* accept or connect failures for lack of descriptors */
	uint64_t head_refused;	/* heads refused because the head memory budget was spent */
	uint64_t max_conns;	/* the worker's connection limit (a constant, summed) */
	uint64_t table_bad;	/* table maps found truncated under the worker (zero pages now) */
	/* TLS (--tls-listen): handshakes completed and failed by reason (enum hm_tls_fail),
	 * times the TLS listener paused at the bound on handshakes in progress. */
	uint64_t tls_full, tls_resumed;
	uint64_t tls_fast; /* of tls_resumed, those done by the fast path (tls13.h) */
	uint64_t tls_fail[HM_TLS_FAIL_COUNT];
	uint64_t tls_accept_paused;
	/* The worker's cache of parsed certificates (--tls-cert-cache): lookups that found one,
	 * lookups that parsed one, entries evicted for room. */
	uint64_t tls_cache_hits, tls_cache_misses, tls_cache_evictions;
	uint64_t cert_store_bad; /* store maps found truncated under the worker (zero pages now) */
	uint64_t proxy_refused;	 /* connections closed for a missing or invalid PROXY header */
	/* The worker's HTTP/2 engine counts here (hm__router_h2_ctx_count_into); heap_allocs and
	 * bytes are the worker's own figures, not summed. */
	struct hm__router_h2_stats h2;
	int64_t inflight;	 /* gauge */
	int64_t conns_open;	 /* gauge */
	int64_t tls_handshaking; /* gauge */
	int64_t tls_cached;	 /* gauge: certificates parsed and kept */
};

#define HM__LEDGER_N 4096 /* power of two */

struct hm__router_ledger_entry {
	uint64_t file_id;
	uint32_t slot1; /* counter slot + 1; 0: never used */
	int32_t count;
};

enum hm__router_ledger_state {
	HM__LEDGER_OWNED = 0, /* its worker's (or, with pid 0, a free slot's: empty) */
	HM__LEDGER_ORPHAN,    /* its worker died; the entries still count in the table */
	HM__LEDGER_DRAINING,  /* a live worker is subtracting them */
};

/* The routing table as a worker sees it (written by the worker, read by the master). */
struct hm__router_table_seen {
	uint64_t version;
	uint64_t commit_ms;
	uint32_t present;
	uint32_t pad_;
};

struct hm__router_slot {
	int32_t pid; /* 0: free */
	uint32_t ready;
	uint32_t ledger_state; /* enum hm__router_ledger_state */
	uint32_t pad_;
	uint64_t ledger_lost; /* adds the ledger had no room for */
	struct hm__router_table_seen table;
	/* The certificate store as the worker sees it: its soonest not_after (Unix seconds; 0: no
	 * store or no certificate) and its certificate count. */
	int64_t cert_soonest;
	uint64_t certs;
	struct hm__router_counters c;
	struct hm__router_ledger_entry ledger[HM__LEDGER_N];
};

struct hm__router_shm {
	uint32_t nslots;
	struct hm__router_slot slot[];
};

/* Slots of a router: two per worker (a rolling restart overlaps them) plus two; --workers is
 * at most 256. */
#define HM__ROUTER_MAX_SLOTS (2 * 256 + 2)

/* Maps a region with nslots slots. Returns 0 or a negative errno. */
int hm__router_shm_new(struct hm__router_shm **out, uint32_t nslots);
void hm__router_shm_free(struct hm__router_shm *s);

static inline void hm__ctr_add(uint64_t *c, uint64_t v)
{
	__atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

static inline void hm__gauge_add(int64_t *g, int64_t v)
{
	__atomic_store_n(g, __atomic_load_n(g, __ATOMIC_RELAXED) + v, __ATOMIC_RELAXED);
}

void hm__router_hist_observe(struct hm__router_hist *h, uint64_t us);

/* Worker side: records delta on (file_id, slot) in the slot's ledger. */
void hm__router_ledger_add(struct hm__router_slot *s, uint64_t file_id, uint32_t slot,
			   int32_t delta);

/*
 * Calls cb for every non-zero entry of a dead worker's ledger, then clears it. Called by the
 * worker that claimed the slot (hm__router_ledger_claim) or was given it.
 */
void hm__router_ledger_drain(struct hm__router_slot *s,
			     void (*cb)(void *ctx, uint64_t file_id, uint32_t slot, int32_t count),
			     void *ctx);

/* True if the ledger still counts something in the table. */
bool hm__router_ledger_pending(const struct hm__router_slot *s);

/* Claims an orphan slot's ledger for draining (ORPHAN -> DRAINING). Returns true if this
 * caller got it; it then drains and calls hm__router_ledger_release(). */
bool hm__router_ledger_claim(struct hm__router_slot *s);
void hm__router_ledger_release(struct hm__router_slot *s);

/* acc += c (counters and histograms; gauges too if with_gauges). Reads c with relaxed loads. */
void hm__router_counters_add(struct hm__router_counters *acc, const struct hm__router_counters *c,
			     bool with_gauges);

/* What the master knows besides the counters (the table's figures come from the workers). */
struct hm__router_metrics_extra {
	bool table_present;
	uint64_t table_version;
	double table_age_s;
	uint32_t workers;
	uint64_t worker_restarts;
	bool tls;	      /* a TLS listener: its families are rendered */
	bool proxy_protocol;  /* --proxy-protocol */
	bool h2;	      /* HTTP/2 is served (--h2c, or ALPN on the TLS listener) */
	int64_t cert_soonest; /* soonest certificate expiry, Unix seconds (0: none) */
	uint64_t certs;	      /* certificates in the store */
};

/* Of the live workers' views of the table (borrowed), the most recent. */
void hm__router_table_newest(const struct hm__router_table_seen *const *seen, size_t n,
			     struct hm__router_table_seen *out);

/* Renders Prometheus text exposition format (0.0.4) into out. Returns the length, or 0 if cap
 * is too small (64 KiB is enough). */
size_t hm__router_metrics_render(const struct hm__router_counters *c,
				 const struct hm__router_metrics_extra *x, char *out, size_t cap);

#endif
