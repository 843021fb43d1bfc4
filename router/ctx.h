/*
 * The services of a worker's context (router/ctx-t.h) that every layer uses: the routing table
 * as currently mapped, the access log, client connection accounting, and the report of a
 * descriptor shortage. Everything here runs on the worker's loop thread.
 */
#ifndef HM_ROUTER_CTX_H
#define HM_ROUTER_CTX_H

#include "router/ctx-t.h"

/*
 * Prepares ctx for a worker on loop with configuration cfg and shared slot (all borrowed): the
 * request and response limits, the buffers (--head-budget), the affinity key, the dyno pool,
 * the table reader (cfg->table, looked at once now) and the access log (cfg->access_log; "-" or
 * NULL: stdout). Returns 0, or a negative errno with nothing left to undo.
 */
int hm__router_ctx_init(struct hm__router_ctx *ctx, uv_loop_t *loop,
			const struct hm__router_config *cfg, struct hm__router_slot *slot);

/*
 * Undoes hm__router_ctx_init() once every connection has closed: flushes and closes the access
 * log, closes the pool and the timers (run the loop afterwards for their close callbacks), frees
 * the free lists. Tests use it; a worker simply exits.
 */
void hm__router_ctx_fini(struct hm__router_ctx *ctx);

/* The current table map (borrowed), looking at the path again at most every 100 ms while there
 * is none. Sets *file_id to the map's file id. NULL: no table. */
struct hm_table_map *hm__router_ctx_map(struct hm__router_ctx *ctx, uint64_t *file_id);

/*
 * Re-keys ctx->aff with the cluster's affinity secret from m when m or its version differs from
 * the last one looked at (hm__router_ctx_map does this for every map it hands out; the worker's
 * tick for a table no request has asked for). Allocates nothing; m may be NULL.
 */
void hm__router_ctx_aff_refresh(struct hm__router_ctx *ctx, struct hm_table_map *m);

/* Appends a line to the access log, scheduling a batched write. */
void hm__router_ctx_log(struct hm__router_ctx *ctx, const struct hm__router_logrec *r);
/* Writes the buffered lines now. */
void hm__router_ctx_log_flush(struct hm__router_ctx *ctx);

/* A client connection opened: linked into ctx->conns and counted. */
void hm__router_ctx_conn_add(struct hm__router_ctx *ctx, struct hm__router_conn *c,
			     const struct hm__router_conn_ops *ops);
/* A client connection closed (its handles are closed): unlinked, and ctx->conn_closed runs. */
void hm__router_ctx_conn_del(struct hm__router_ctx *ctx, struct hm__router_conn *c);

/* This worker avoids addr for --skip-time (a connect to it was refused or timed out). The list
 * holds HM__SKIP_MAX addresses; the one that expires first makes room. */
void hm__router_ctx_skip(struct hm__router_ctx *ctx, const struct hm_addr *addr);
/* addr is in the skip list and not expired. */
bool hm__router_ctx_skipped(const struct hm__router_ctx *ctx, const struct hm_addr *addr);

/* Counts a failure to get a descriptor (EMFILE, ENFILE...) in the metrics and logs it, at most
 * once a second. what says where ("accept", "connecting to a dyno"); err is a libuv or negative
 * errno. */
void hm__router_ctx_fd_exhausted(struct hm__router_ctx *ctx, const char *what, int err);

#endif
