/*
 * Folder-private declarations of hermod-router: the configuration, and the objects a worker
 * process is made of (the worker, client connections, exchanges, dyno connections, buffers).
 * docs/router.md describes how they fit together; proxy.c holds the state machine, pool.c the
 * idle dyno connections, worker.c the loop, main.c the master.
 */
#ifndef HM_ROUTER_ROUTER_H
#define HM_ROUTER_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "common/model.h"
#include "common/table.h"
#include "router/accesslog.h"
#include "router/affinity.h"
#include "router/codes.h"
#include "router/http.h"
#include "router/shm.h"

/* ---- configuration ---------------------------------------------------------------------- */

struct hm__router_config {
	char *table;
	char *listen;
	int64_t workers;
	char *metrics;
	char *affinity_secret_file;
	char *access_log;
	char *log;
	int log_level;
	int64_t connect_timeout; /* all durations in ms */
	int64_t first_byte_timeout;
	int64_t idle_timeout;
	int64_t head_timeout;
	int64_t keepalive_timeout;
	int64_t boot_timeout;
	int64_t pool_idle_timeout;
	int64_t skip_time;
	int64_t drain_timeout;
	int64_t attempts;
	int64_t pool_max;
	int64_t max_head;
	int64_t max_response_head;
	int64_t backlog;
	int64_t max_connections; /* per router; 0: derived from the file-descriptor limit */
	int64_t head_budget;	 /* bytes per worker for buffers beyond the standard size */
	/* Derived by main.c before forking. */
	uint16_t port; /* the listening port (X-Forwarded-Port) */
	int listen_fd;
	uint32_t worker_max_clients; /* each worker's share of max_connections */
	/* affinity secret (owned): the file's, or a random one until the table's */
	uint8_t *secret;
	size_t secret_len;
	bool secret_from_file; /* --affinity-secret-file: the table's secret is not used */
};

/* ---- intrusive lists ---------------------------------------------------------------------- */

struct hm__router_list {
	struct hm__router_list *prev, *next;
};

static inline void hm__list_init(struct hm__router_list *l)
{
	l->prev = l->next = l;
}

static inline bool hm__list_empty(const struct hm__router_list *l)
{
	return l->next == l;
}

static inline void hm__list_push(struct hm__router_list *head, struct hm__router_list *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

static inline void hm__list_del(struct hm__router_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#define hm__container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* ---- objects of a worker ------------------------------------------------------------------- */

#define HM__BUF_SIZE 16384

/* A byte buffer. Standard ones (cap == HM__BUF_SIZE) come from and return to a free list. */
struct hm__router_buf {
	struct hm__router_buf *next; /* free list */
	uint32_t cap;
	uint32_t pad_;
	char data[];
};

struct hm__router_worker;
struct hm__router_xchg;

/* A connection to a dyno: owned by an exchange, or idle in the pool, or closing. */
struct hm__router_upstream {
	uv_tcp_t tcp;
	uv_connect_t creq;
	struct hm__router_worker *w;
	struct hm__router_xchg *x; /* owner, or NULL */
	struct hm__router_upstream *next_free;
	struct hm__router_list bucket; /* pool: same-hash list */
	struct hm__router_list lru;    /* pool: all idle, most recent first */
	struct hm__router_buf *in;     /* response bytes */
	uint32_t in_len, in_off;
	uint32_t wpending; /* writes queued to the dyno */
	struct hm_addr addr;
	uint64_t idle_since; /* loop ms, while pooled */
	bool connected;
	bool reading;
	bool closing;
	bool pooled;
	bool reused;	/* taken from the pool for the current exchange */
	bool got_bytes; /* the current exchange read a byte from it */
	bool eof;	/* read EOF or an error: reading is over */
};

/* A client connection. */
struct hm__router_client {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_shutdown_t sreq;
	struct hm__router_worker *w;
	struct hm__router_client *next_free;
	struct hm__router_list link; /* worker's clients */
	struct hm__router_xchg *x;   /* the exchange in progress (owned), or NULL */
	struct hm__router_buf *in;   /* request bytes; NULL while idle and empty */
	uint32_t in_len, in_off;
	uint32_t wpending; /* writes queued to the client */
	uint8_t state;	   /* enum in proxy.c */
	uint8_t handles;   /* open uv handles */
	bool reading;
	bool eof;
	uint64_t idle_since; /* loop ms: when it last became idle */
	uint64_t timer_due;  /* loop ms the timer fires at, 0 if not armed */
	uint8_t peer_len;
	char peer[47]; /* client IP, text */
};

/* One request and its response. */
struct hm__router_xchg {
	struct hm__router_client *c;
	struct hm__router_upstream *u;
	struct hm__router_xchg *next_free;
	struct hm__router_msg req;
	struct hm__router_msg resp;
	struct hm__router_req rq;
	struct hm__router_resp rs;
	struct hm__router_resp_plan plan;
	uint8_t phase; /* enum in proxy.c */
	uint8_t attempts;
	uint8_t ntried;
	uint8_t last_fail; /* 0, FAIL_REFUSED or FAIL_TIMEOUT (proxy.c) */
	uint8_t code;	   /* enum hm__router_code of the outcome */
	bool use_skiplist;
	uint8_t upload;	   /* enum upload in proxy.c: where the request body stands */
	bool resp_started; /* a response byte came from the dyno */
	bool head_sent;	   /* a response head went to the client */
	bool resp_done;
	bool replay_ok; /* the whole request is still in our buffers */
	bool retried;
	bool got_continue;
	bool tunnel;
	bool counted;	/* holds +1 on an in-flight counter */
	bool aff_valid; /* the request had a valid affinity cookie */
	bool set_cookie;
	bool logged;
	bool u_eof;		      /* tunnel: the dyno closed; the client is being flushed */
	uint32_t body_start;	      /* offset in c->in of the request body (replay) */
	struct hm__router_buf *qhead; /* request head for the dyno */
	uint32_t qhead_len;
	struct hm__router_buf *rhead; /* response head for the client */
	struct hm__router_buf *cbuf;  /* chunked request body, re-encoded */
	char *hold_u, *hold_c;	      /* a head waiting to go out with the first body bytes */
	uint32_t hold_u_len, hold_c_len;
	struct hm_table_map *map; /* referenced while counted */
	uint64_t file_id;
	uint32_t slot;
	struct hm_route route;
	struct hm_addr tried[16];
	uint64_t t_first;      /* loop ms: first byte of the request */
	uint64_t t_head_ns;    /* head complete (monotonic ns) */
	uint64_t t_connect_ns; /* connect started (monotonic ns, for the histogram) */
	uint64_t t_connect;    /* connect started (loop ms, for the timer) */
	uint64_t t_send_ns;    /* dyno connection ready, request going out */
	uint64_t t_req_done;   /* loop ms: request fully sent */
	uint64_t last_io;      /* loop ms: last progress either way */
	uint64_t start_ms;     /* wall ms, X-Request-Start */
	int64_t connect_ms;    /* -1: none */
	int status;	       /* status sent or to log */
	const char *method;
	uint16_t path_len, fwd_len;
	uint8_t request_id_len;
	char request_id[201];
	char aff_dyno[HM_DYNO_NAME_MAX + 1];
	uint8_t aff_value_len;
	char tried_dyno[HM_DYNO_NAME_MAX + 1]; /* the last dyno a connect failed to */
	char path[HM__LOG_PATH_MAX];
	char fwd[HM__LOG_FWD_MAX];
	char aff_value[HM__AFFINITY_VALUE_MAX]; /* the affinity cookie's value, as sent */
};

/* Idle keep-alive connections to dynos, per worker (pool.c). */
struct hm__router_pool {
	struct hm__router_list *buckets; /* owned */
	uint32_t mask;
	uint32_t count;
	uint32_t max;
	uint64_t idle_ms;
	struct hm__router_list lru;
	uv_timer_t timer;
};

#define HM__SKIP_MAX 64

struct hm__router_skip {
	struct hm_addr addr;
	uint64_t until; /* loop ms */
};

struct hm__router_worker {
	uv_loop_t loop;
	uv_poll_t acceptor;	 /* the shared listening socket (worker.c accepts) */
	uv_timer_t accept_retry; /* out of descriptors: accepting resumes after a pause */
	int listen_fd;		 /* -1 once closed (draining) */
	uint8_t accept;		 /* enum accept_state in worker.c */
	uint32_t max_clients;	 /* this worker's share of --max-connections */
	uint64_t big_bytes;	 /* buffers beyond HM__BUF_SIZE, against cfg->head_budget */
	uv_timer_t tick;	 /* 1 s: table check */
	uv_timer_t log_timer;
	uv_timer_t drain_timer;
	uv_signal_t sig_term, sig_int, sig_hup;
	const struct hm__router_config *cfg;
	struct hm__router_shm *shm;   /* every worker's slot (orphaned ledgers are drained) */
	struct hm__router_slot *slot; /* this worker's: shared counters and ledger */
	uint64_t bad_maps_seen;	      /* hm_table_bad_maps() when last looked at */
	struct hm_table_reader *reader;
	struct hm_table_map *cached_map; /* referenced; file_id below is its */
	uint64_t cached_file_id;
	uint64_t table_checked; /* loop ms */
	struct hm__router_alog alog;
	bool log_armed;
	struct hm__router_affinity aff;
	uint64_t aff_version; /* the table version whose cluster secret aff was checked against */
	const struct hm_table_map *aff_map;
	struct hm__router_limits req_lim, resp_lim;
	struct hm__router_pool pool;
	struct hm__router_skip skip[HM__SKIP_MAX];
	uint32_t nskip;
	struct hm__router_list clients;
	uint32_t nclients;
	bool draining;
	bool stopping;
	/* free lists */
	struct hm__router_client *free_clients;
	struct hm__router_xchg *free_xchgs;
	struct hm__router_upstream *free_upstreams;
	struct hm__router_buf *free_bufs;
	struct hm__router_wreq *free_wreqs;
	uint32_t nfree_bufs;
};

/* ---- worker.c ------------------------------------------------------------------------------ */

/* Runs a worker in this (forked) process: never returns. It uses shm->slot[index]. */
_Noreturn void hm__router_worker_main(const struct hm__router_config *cfg,
				      struct hm__router_shm *shm, uint32_t index);

/* Appends a line to the access log, scheduling a batched write. */
void hm__router_worker_log(struct hm__router_worker *w, const struct hm__router_logrec *r);

/* The current table map (borrowed), checking the path at most every 100 ms while there is
 * none. Sets *file_id to the map's file id. NULL: no table. */
struct hm_table_map *hm__router_worker_map(struct hm__router_worker *w, uint64_t *file_id);

/* A client connection closed (its handles are closed): accepting resumes if it paused at the
 * limit; while draining, exits the loop when the last one is gone. */
void hm__router_worker_client_closed(struct hm__router_worker *w);

/* Counts a failure to get a descriptor (EMFILE, ENFILE...) in the metrics and logs it, at most
 * once a second. what says where ("accept", "connect"); err is a libuv or negative errno. */
void hm__router_worker_fd_exhausted(struct hm__router_worker *w, const char *what, int err);

/* ---- proxy.c ------------------------------------------------------------------------------- */

/*
 * Takes an accepted, non-blocking socket as a new client connection (peer: its address from
 * accept4). Returns 0, or a negative errno after which fd is closed.
 */
int hm__router_client_open(struct hm__router_worker *w, int fd, const struct sockaddr *peer,
			   socklen_t peer_len);

/* Draining started: idle clients get the short grace period. */
void hm__router_clients_drain(struct hm__router_worker *w);
/* The drain deadline passed: every client is closed now (in-flight requests logged H24). */
void hm__router_clients_abort(struct hm__router_worker *w);

/* A buffer of at least min bytes: a standard one (HM__BUF_SIZE) from the free list, or a
 * larger one counted against cfg->head_budget. NULL if there is no memory or no budget left. */
struct hm__router_buf *hm__router_buf_get(struct hm__router_worker *w, uint32_t min);
/* Gives a buffer back (NULL is fine). */
void hm__router_buf_put(struct hm__router_worker *w, struct hm__router_buf *b);

/* Closes a dyno connection (not pooled, not owned any more); freed in its close callback. */
void hm__router_upstream_close(struct hm__router_upstream *u);

/* ---- pool.c -------------------------------------------------------------------------------- */

int hm__router_pool_init(struct hm__router_worker *w);
/* An idle connection to addr, unlinked from the pool, or NULL. */
struct hm__router_upstream *hm__router_pool_take(struct hm__router_worker *w,
						 const struct hm_addr *addr);
/* Parks a connection (reading, no buffer, no owner); may evict the oldest. */
void hm__router_pool_put(struct hm__router_worker *w, struct hm__router_upstream *u);
/* Unlinks a pooled connection (it closed or sent bytes). */
void hm__router_pool_remove(struct hm__router_worker *w, struct hm__router_upstream *u);
/* Closes the least recently used idle connection (its descriptor is free at once). Returns
 * false if the pool is empty. */
bool hm__router_pool_evict(struct hm__router_worker *w);
/* Closes every pooled connection. */
void hm__router_pool_close_all(struct hm__router_worker *w);

uint32_t hm__router_addr_hash(const struct hm_addr *a);
bool hm__router_addr_eq(const struct hm_addr *a, const struct hm_addr *b);

#endif
