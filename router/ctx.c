/*
 * A worker's shared services (see ctx.h): the table view, the batched access log, connection
 * accounting, the skip list of dynos that failed to connect.
 *
 * The table view keeps the map it last returned referenced, so that its address cannot come
 * back as another map's and the file id can be cached: per request the view costs one atomic
 * load (hm_table_reader_map). The access log is written when 16 KiB are buffered or 50 ms after
 * the first unwritten line, never once per request.
 */
#include "router/ctx.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/model.h"
#include "router/http.h"

#define LOG_FLUSH_BYTES 16384
#define LOG_FLUSH_MS	50
#define TABLE_RETRY_MS	100
#define FD_LOG_EVERY_MS 1000

int hm__router_ctx_init(struct hm__router_ctx *ctx, uv_loop_t *loop,
			const struct hm__router_config *cfg, struct hm__router_slot *slot)
{
	const char *alog = cfg->access_log;
	int r;

	memset(ctx, 0, sizeof(*ctx));
	ctx->loop = loop;
	ctx->cfg = cfg;
	ctx->slot = slot;
	hm__list_init(&ctx->conns);
	hm__router_iomem_init(&ctx->mem, (uint64_t)cfg->head_budget);
	hm__router_limits_request(&ctx->req_lim, (uint32_t)cfg->max_head);
	hm__router_limits_response(&ctx->resp_lim, (uint32_t)cfg->max_response_head);
	r = hm__router_affinity_init(&ctx->aff, cfg->secret, cfg->secret_len);
	if (r != 0)
		return r;
	r = hm_table_reader_new(&ctx->reader, cfg->table);
	if (r != 0)
		goto fail_aff;
	hm_table_reader_check(ctx->reader);
	r = hm__router_alog_open(&ctx->alog, alog != NULL && strcmp(alog, "-") != 0 ? alog : NULL,
				 256 * 1024);
	if (r != 0)
		goto fail_reader;
	uv_timer_init(loop, &ctx->log_timer);
	return 0;
fail_reader:
	hm_table_reader_free(ctx->reader);
fail_aff:
	hm__router_affinity_fini(&ctx->aff);
	return r;
}

static void free_list(struct hm__router_free **list)
{
	void *o;

	while ((o = hm__free_get(list)) != NULL)
		free(o);
}

void hm__router_ctx_fini(struct hm__router_ctx *ctx)
{
	hm__router_ctx_log_flush(ctx);
	hm__router_alog_close(&ctx->alog);
	uv_close((uv_handle_t *)&ctx->log_timer, NULL);
	if (ctx->pool.buckets != NULL)
		hm__router_pool_fini(&ctx->pool);
	if (ctx->cached_map != NULL)
		hm_table_map_unref(ctx->cached_map);
	hm_table_reader_free(ctx->reader);
	hm__router_affinity_fini(&ctx->aff);
	hm__router_iomem_fini(&ctx->mem);
	free_list(&ctx->free_socks);
	free_list(&ctx->free_h1s);
	free_list(&ctx->free_h1_reqs);
	free_list(&ctx->free_xchgs);
	free_list(&ctx->free_dconns);
}

/*
 * Signs affinity cookies with the cluster's secret from the table (docs/security.md) once it is
 * there, and again if it changes; with --affinity-secret-file, never. Per request this is one
 * atomic load: the secret is read only when the table's version has changed.
 */
void hm__router_ctx_aff_refresh(struct hm__router_ctx *ctx, struct hm_table_map *m)
{
	uint8_t key[HM_SECRET_MAX];
	uint64_t v;
	int n;

	if (ctx->cfg->secret_from_file || m == NULL)
		return;
	v = hm_table_map_version(m);
	if (m == ctx->aff_map && v == ctx->aff_version)
		return;
	n = hm_table_secret(m, "affinity", key);
	if (n == HM_EBUSYTABLE)
		return; /* try again on the next request */
	ctx->aff_map = m;
	ctx->aff_version = v;
	/* None (an origin older than the secret): the master's random key until it comes. */
	if (n > 0 && hm__router_affinity_rekey(&ctx->aff, key, (size_t)n) == 1)
		hm_log(HM_LOG_DEBUG, "router", "affinity cookies: signed with the cluster secret");
	memset(key, 0, sizeof(key));
}

struct hm_table_map *hm__router_ctx_map(struct hm__router_ctx *ctx, uint64_t *file_id)
{
	struct hm_table_map *m = hm_table_reader_map(ctx->reader);

	if (m == NULL) {
		/* No table yet: look at the path again, but not for every request. */
		uint64_t now = uv_now(ctx->loop);

		if (now - ctx->table_checked < TABLE_RETRY_MS)
			return NULL;
		ctx->table_checked = now;
		hm_table_reader_check(ctx->reader);
		m = hm_table_reader_map(ctx->reader);
		if (m == NULL)
			return NULL;
	}
	if (m != ctx->cached_map) {
		struct hm_table_info info;

		hm_table_map_info(m, &info);
		hm_table_map_ref(m);
		if (ctx->cached_map != NULL)
			hm_table_map_unref(ctx->cached_map);
		ctx->cached_map = m;
		ctx->cached_file_id = info.file_id;
	}
	hm__router_ctx_aff_refresh(ctx, m);
	*file_id = ctx->cached_file_id;
	return m;
}

void hm__router_ctx_log_flush(struct hm__router_ctx *ctx)
{
	if (ctx->alog.len > 0)
		hm__router_alog_flush(&ctx->alog);
	__atomic_store_n(&ctx->slot->c.log_dropped, ctx->alog.dropped, __ATOMIC_RELAXED);
}

static void on_log_timer(uv_timer_t *t)
{
	struct hm__router_ctx *ctx = hm__container_of(t, struct hm__router_ctx, log_timer);

	ctx->log_armed = false;
	hm__router_ctx_log_flush(ctx);
}

void hm__router_ctx_log(struct hm__router_ctx *ctx, const struct hm__router_logrec *r)
{
	hm__router_alog_append(&ctx->alog, r);
	if (ctx->alog.len >= LOG_FLUSH_BYTES) {
		hm__router_ctx_log_flush(ctx);
	} else if (!ctx->log_armed) {
		ctx->log_armed = true;
		uv_timer_start(&ctx->log_timer, on_log_timer, LOG_FLUSH_MS, 0);
	}
}

void hm__router_ctx_conn_add(struct hm__router_ctx *ctx, struct hm__router_conn *c,
			     const struct hm__router_conn_ops *ops)
{
	c->ops = ops;
	hm__list_push(&ctx->conns, &c->link);
	ctx->nconns++;
	hm__gauge_add(&ctx->slot->c.conns_open, 1);
}

void hm__router_ctx_conn_del(struct hm__router_ctx *ctx, struct hm__router_conn *c)
{
	hm__list_del(&c->link);
	ctx->nconns--;
	hm__gauge_add(&ctx->slot->c.conns_open, -1);
	if (ctx->conn_closed != NULL)
		ctx->conn_closed(ctx);
}

void hm__router_ctx_fd_exhausted(struct hm__router_ctx *ctx, const char *what, int err)
{
	static uint64_t last_log;
	uint64_t now = uv_now(ctx->loop);

	hm__ctr_add(&ctx->slot->c.fd_exhausted, 1);
	if (last_log == 0 || now - last_log >= FD_LOG_EVERY_MS) {
		last_log = now;
		hm_log(HM_LOG_ERR, "router", "%s: %s (%u client connections open)", what,
		       hm_strerror(err), ctx->nconns);
	}
}

void hm__router_ctx_skip(struct hm__router_ctx *ctx, const struct hm_addr *addr)
{
	uint64_t now = uv_now(ctx->loop), until = now + (uint64_t)ctx->cfg->skip_time;
	uint32_t i, oldest = 0;

	/* Drop expired entries while looking. */
	for (i = 0; i < ctx->nskip;) {
		if (ctx->skip[i].until <= now) {
			ctx->skip[i] = ctx->skip[--ctx->nskip];
			continue;
		}
		if (hm__router_addr_eq(&ctx->skip[i].addr, addr)) {
			ctx->skip[i].until = until;
			return;
		}
		if (ctx->skip[i].until < ctx->skip[oldest].until)
			oldest = i;
		i++;
	}
	if (ctx->nskip == HM__SKIP_MAX)
		i = oldest;
	else
		i = ctx->nskip++;
	ctx->skip[i].addr = *addr;
	ctx->skip[i].until = until;
}

bool hm__router_ctx_skipped(const struct hm__router_ctx *ctx, const struct hm_addr *addr)
{
	uint64_t now;

	if (ctx->nskip == 0)
		return false;
	now = uv_now(ctx->loop);
	for (uint32_t i = 0; i < ctx->nskip; i++)
		if (ctx->skip[i].until > now && hm__router_addr_eq(&ctx->skip[i].addr, addr))
			return true;
	return false;
}
