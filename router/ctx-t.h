/*
 * A worker's context: what every client connection, exchange and dyno connection of one worker
 * shares (h2o's h2o_context_t plays this part). The worker process (worker.c) owns it and fills
 * it; the layers below it (client transport and protocols, exchanges, upstreams, the pool) read
 * it and use its services (router/ctx.h). It also holds each layer's free list, so that nothing
 * is allocated per request once a worker is warm.
 *
 * Types only: the functions are in router/ctx.h.
 */
#ifndef HM_ROUTER_CTX_T_H
#define HM_ROUTER_CTX_T_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "common/model.h"
#include "common/table.h"
#include "router/accesslog.h"
#include "router/affinity.h"
#include "router/config-t.h"
#include "router/http-t.h"
#include "router/iobuf.h"
#include "router/list.h"
#include "router/pool.h"
#include "router/shm.h"

struct hm__router_conn;

/*
 * A free-list link. It is the first member of every object a layer keeps on a free list of the
 * context (checked where the object is defined), so that objects are recycled without knowing
 * each other and the context can free the lists without knowing the objects.
 */
struct hm__router_free {
	struct hm__router_free *next;
};

/* An object from a free list (NULL if empty). */
static inline void *hm__free_get(struct hm__router_free **list)
{
	struct hm__router_free *f = *list;

	if (f != NULL)
		*list = f->next;
	return f;
}

/* Puts an object (whose first member is its link) on a free list. */
static inline void hm__free_put(struct hm__router_free **list, void *obj)
{
	struct hm__router_free *f = obj;

	f->next = *list;
	*list = f;
}

/* What the worker does with a client connection, whatever its protocol. */
struct hm__router_conn_ops {
	/* Draining started: an idle connection closes after a short grace period. */
	void (*drain)(struct hm__router_conn *c);
	/* The drain deadline passed: close now (exchanges in flight are logged H24). */
	void (*abort)(struct hm__router_conn *c);
};

/* A client connection as the worker sees it (embedded in the protocol's connection object). */
struct hm__router_conn {
	struct hm__router_list link; /* ctx->conns */
	const struct hm__router_conn_ops *ops;
};

#define HM__SKIP_MAX 64

/* A dyno address this worker avoids until a time (it refused or timed out a connect). */
struct hm__router_skip {
	struct hm_addr addr;
	uint64_t until; /* loop ms */
};

struct hm__router_ctx {
	uv_loop_t *loop;		     /* borrowed */
	const struct hm__router_config *cfg; /* borrowed */
	struct hm__router_slot *slot;	     /* this worker's shared counters and ledger */
	struct hm__router_iomem mem;	     /* buffers and write requests */
	struct hm__router_limits req_lim, resp_lim;
	struct hm__router_affinity aff;
	uint64_t aff_version; /* the table version whose cluster secret aff was checked against */
	const struct hm_table_map *aff_map;
	struct hm__router_pool pool; /* idle dyno connections */
	struct hm__router_skip skip[HM__SKIP_MAX];
	uint32_t nskip;
	/* The table view (ctx.c). */
	struct hm_table_reader *reader;	 /* owned */
	struct hm_table_map *cached_map; /* referenced; cached_file_id is its */
	uint64_t cached_file_id;
	uint64_t table_checked; /* loop ms of the last look at the path */
	/* The access log (ctx.c): lines are batched and written by a timer or when it fills. */
	struct hm__router_alog alog;
	uv_timer_t log_timer;
	bool log_armed;
	/* Client connections. */
	struct hm__router_list conns;
	uint32_t nconns;
	bool draining; /* set by the owner: responses close their connections */
	/* Called after a client connection has closed (its handles too); set by the owner. */
	void (*conn_closed)(struct hm__router_ctx *ctx);
	/* Free lists, one per layer's object. */
	struct hm__router_free *free_socks;   /* struct hm__router_sock (sock.c) */
	struct hm__router_free *free_h1s;     /* HTTP/1 connections (h1.c) */
	struct hm__router_free *free_h1_reqs; /* HTTP/1 requests (h1.c) */
	struct hm__router_free *free_xchgs;   /* struct hm__router_xchg (xchg.c) */
	struct hm__router_free *free_dconns;  /* struct hm__router_dconn (upstream.c) */
};

#endif
