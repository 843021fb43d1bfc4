/*
 * Shared slots, the in-flight ledger, counters and their Prometheus rendering (see shm.h).
 */
#include "router/shm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "common/util.h"

const struct hm__router_code_info hm__router_codes[HM__CODE_COUNT] = {
    [HM__CODE_NONE] = {NULL, NULL, 0, false, NULL},
#define HM__CODE_INFO(name, desc, status, error, sock)                                             \
	[HM__CODE_##name] = {#name, desc, status, error, sock},
    HM__ROUTER_CODES(HM__CODE_INFO)
#undef HM__CODE_INFO
};

static size_t shm_bytes(uint32_t nslots)
{
	return sizeof(struct hm__router_shm) + (size_t)nslots * sizeof(struct hm__router_slot);
}

int hm__router_shm_new(struct hm__router_shm **out, uint32_t nslots)
{
	struct hm__router_shm *s = mmap(NULL, shm_bytes(nslots), PROT_READ | PROT_WRITE,
					MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (s == MAP_FAILED)
		return -errno;
	s->nslots = nslots;
	*out = s;
	return 0;
}

void hm__router_shm_free(struct hm__router_shm *s)
{
	if (s != NULL)
		munmap(s, shm_bytes(s->nslots));
}

void hm__router_hist_observe(struct hm__router_hist *h, uint64_t us)
{
	static const uint64_t bounds[HM__HIST_N] = HM__HIST_BOUNDS_US;
	size_t i = 0;

	while (i < HM__HIST_N && us > bounds[i])
		i++;
	hm__ctr_add(&h->bucket[i], 1);
	hm__ctr_add(&h->sum_us, us);
	hm__ctr_add(&h->count, 1);
}

static uint32_t ledger_hash(uint64_t file_id, uint32_t slot)
{
	uint64_t x = file_id ^ ((uint64_t)slot * 0x9E3779B97F4A7C15ull);

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	return (uint32_t)x & (HM__LEDGER_N - 1);
}

void hm__router_ledger_add(struct hm__router_slot *s, uint64_t file_id, uint32_t slot,
			   int32_t delta)
{
	uint32_t i = ledger_hash(file_id, slot), key = slot + 1;
	struct hm__router_ledger_entry *reuse = NULL, *e;

	/* Linear probing; an entry whose count fell to zero may be taken over by another key. A
	 * key is looked for up to the first never-used entry. */
	for (uint32_t n = 0; n < HM__LEDGER_N; n++, i = (i + 1) & (HM__LEDGER_N - 1)) {
		e = &s->ledger[i];
		if (e->slot1 == key && e->file_id == file_id) {
			__atomic_store_n(&e->count, e->count + delta, __ATOMIC_RELAXED);
			return;
		}
		if (e->slot1 == 0)
			break;
		if (reuse == NULL && e->count == 0)
			reuse = e;
	}
	if (reuse == NULL && s->ledger[i].slot1 == 0)
		reuse = &s->ledger[i];
	if (reuse == NULL) {
		s->ledger_lost++;
		return;
	}
	/* Count first at zero, then the key: a reader of a dead worker sees whole entries either
	 * way, since a worker dies between instructions, not inside a store. */
	__atomic_store_n(&reuse->count, 0, __ATOMIC_RELAXED);
	reuse->file_id = file_id;
	reuse->slot1 = key;
	__atomic_store_n(&reuse->count, delta, __ATOMIC_RELAXED);
}

void hm__router_ledger_drain(struct hm__router_slot *s,
			     void (*cb)(void *ctx, uint64_t file_id, uint32_t slot, int32_t count),
			     void *ctx)
{
	for (uint32_t i = 0; i < HM__LEDGER_N; i++) {
		struct hm__router_ledger_entry *e = &s->ledger[i];

		if (e->slot1 != 0 && e->count != 0)
			cb(ctx, e->file_id, e->slot1 - 1, e->count);
	}
	memset(s->ledger, 0, sizeof(s->ledger));
	s->ledger_lost = 0;
}

bool hm__router_ledger_pending(const struct hm__router_slot *s)
{
	for (uint32_t i = 0; i < HM__LEDGER_N; i++)
		if (s->ledger[i].slot1 != 0 &&
		    __atomic_load_n(&s->ledger[i].count, __ATOMIC_RELAXED) != 0)
			return true;
	return false;
}

bool hm__router_ledger_claim(struct hm__router_slot *s)
{
	uint32_t want = HM__LEDGER_ORPHAN;

	return __atomic_compare_exchange_n(&s->ledger_state, &want, HM__LEDGER_DRAINING, false,
					   __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

void hm__router_ledger_release(struct hm__router_slot *s)
{
	__atomic_store_n(&s->ledger_state, HM__LEDGER_OWNED, __ATOMIC_RELEASE);
}

void hm__router_table_newest(const struct hm__router_table_seen *const *seen, size_t n,
			     struct hm__router_table_seen *out)
{
	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n; i++) {
		struct hm__router_table_seen t = {
		    .version = __atomic_load_n(&seen[i]->version, __ATOMIC_RELAXED),
		    .commit_ms = __atomic_load_n(&seen[i]->commit_ms, __ATOMIC_RELAXED),
		    .present = __atomic_load_n(&seen[i]->present, __ATOMIC_RELAXED),
		};

		if (t.present && (!out->present || t.commit_ms > out->commit_ms ||
				  (t.commit_ms == out->commit_ms && t.version > out->version)))
			*out = t;
	}
}

static uint64_t ld(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void hist_add(struct hm__router_hist *a, const struct hm__router_hist *h)
{
	for (size_t i = 0; i <= HM__HIST_N; i++)
		a->bucket[i] += ld(&h->bucket[i]);
	a->sum_us += ld(&h->sum_us);
	a->count += ld(&h->count);
}

static void h2_add(struct hm__router_h2_stats *a, const struct hm__router_h2_stats *h)
{
	a->conns += ld(&h->conns);
	a->streams += ld(&h->streams);
	a->refused += ld(&h->refused);
	a->glitches += ld(&h->glitches);
	a->stream_errors += ld(&h->stream_errors);
	a->resets += ld(&h->resets);
	for (size_t i = 0; i < HM_ARRAY_SIZE(h->goaway_sent); i++)
		a->goaway_sent[i] += ld(&h->goaway_sent[i]);
	for (size_t i = 0; i < HM_ARRAY_SIZE(h->goaway_recv); i++)
		a->goaway_recv[i] += ld(&h->goaway_recv[i]);
	a->timeouts += ld(&h->timeouts);
}

void hm__router_counters_add(struct hm__router_counters *acc, const struct hm__router_counters *c,
			     bool with_gauges)
{
	for (size_t i = 0; i < HM_ARRAY_SIZE(c->requests); i++)
		acc->requests[i] += ld(&c->requests[i]);
	for (size_t i = 0; i < HM__CODE_COUNT; i++)
		acc->codes[i] += ld(&c->codes[i]);
	hist_add(&acc->connect, &c->connect);
	hist_add(&acc->service, &c->service);
	acc->pool_reused += ld(&c->pool_reused);
	acc->pool_new += ld(&c->pool_new);
	acc->conns_total += ld(&c->conns_total);
	acc->log_dropped += ld(&c->log_dropped);
	acc->accept_paused += ld(&c->accept_paused);
	acc->fd_exhausted += ld(&c->fd_exhausted);
	acc->head_refused += ld(&c->head_refused);
	acc->table_bad += ld(&c->table_bad);
	acc->tls_full += ld(&c->tls_full);
	acc->tls_resumed += ld(&c->tls_resumed);
	acc->tls_fast += ld(&c->tls_fast);
	for (size_t i = 0; i < HM_TLS_FAIL_COUNT; i++)
		acc->tls_fail[i] += ld(&c->tls_fail[i]);
	acc->tls_accept_paused += ld(&c->tls_accept_paused);
	acc->tls_cache_hits += ld(&c->tls_cache_hits);
	acc->tls_cache_misses += ld(&c->tls_cache_misses);
	acc->tls_cache_evictions += ld(&c->tls_cache_evictions);
	acc->cert_store_bad += ld(&c->cert_store_bad);
	acc->proxy_refused += ld(&c->proxy_refused);
	h2_add(&acc->h2, &c->h2);
	if (with_gauges) {
		acc->tls_handshaking += __atomic_load_n(&c->tls_handshaking, __ATOMIC_RELAXED);
		acc->tls_cached += __atomic_load_n(&c->tls_cached, __ATOMIC_RELAXED);
		acc->inflight += __atomic_load_n(&c->inflight, __ATOMIC_RELAXED);
		acc->conns_open += __atomic_load_n(&c->conns_open, __ATOMIC_RELAXED);
		acc->max_conns += ld(&c->max_conns);
	}
}

struct out {
	char *p;
	size_t len, cap;
	bool full;
};

static void outf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void outf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->cap - o->len) {
		o->full = true;
		return;
	}
	o->len += (size_t)n;
}

static void hist_render(struct out *o, const char *name, const char *help,
			const struct hm__router_hist *h)
{
	static const uint64_t bounds[HM__HIST_N] = HM__HIST_BOUNDS_US;
	uint64_t cum = 0;

	outf(o, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (size_t i = 0; i < HM__HIST_N; i++) {
		cum += h->bucket[i];
		outf(o, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds[i] / 1e6,
		     (unsigned long long)cum);
	}
	cum += h->bucket[HM__HIST_N];
	outf(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
	outf(o, "%s_sum %.6f\n%s_count %llu\n", name, (double)h->sum_us / 1e6, name,
	     (unsigned long long)h->count);
}

/* One metric family with a single sample. */
static void single(struct out *o, const char *type, const char *name, const char *help,
		   unsigned long long v)
{
	outf(o, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name, v);
}

/* A counter family with two samples, told apart by one label. */
static void pair(struct out *o, const char *name, const char *help, const char *label,
		 const char *a, unsigned long long va, const char *b, unsigned long long vb)
{
	outf(o, "# HELP %s %s\n# TYPE %s counter\n%s{%s=\"%s\"} %llu\n%s{%s=\"%s\"} %llu\n", name,
	     help, name, name, label, a, va, name, label, b, vb);
}

/* The TLS listener's families. */
static void tls_render(struct out *o, const struct hm__router_counters *c,
		       const struct hm__router_metrics_extra *x)
{
	pair(o, "hermod_tls_handshakes_total",
	     "TLS handshakes completed, full or resumed by a session ticket.", "kind", "full",
	     c->tls_full, "resumed", c->tls_resumed);
	single(o, "counter", "hermod_tls_fast_path_handshakes_total",
	       "Resumed TLS 1.3 handshakes done by the router's own handshake code instead of "
	       "libssl (a part of hermod_tls_handshakes_total{kind=\"resumed\"}).",
	       c->tls_fast);
	outf(o,
	     "# HELP hermod_tls_handshake_failures_total TLS handshakes that failed, by reason.\n"
	     "# TYPE hermod_tls_handshake_failures_total counter\n");
	for (unsigned i = 1; i < HM_TLS_FAIL_COUNT; i++)
		outf(o, "hermod_tls_handshake_failures_total{reason=\"%s\"} %llu\n",
		     hm_tls_fail_name(i), (unsigned long long)c->tls_fail[i]);
	single(o, "gauge", "hermod_tls_handshakes_in_progress", "TLS handshakes in progress.",
	       (unsigned long long)(c->tls_handshaking > 0 ? c->tls_handshaking : 0));
	single(o, "counter", "hermod_tls_accept_paused_total",
	       "Times a worker paused accepting TLS connections at its bound on handshakes in "
	       "progress (--tls-max-handshakes).",
	       c->tls_accept_paused);
	pair(o, "hermod_tls_cert_cache_lookups_total",
	     "Certificate choices by the workers' caches of parsed certificates: found in the "
	     "cache (hit; a certificate that failed to load is cached too) or not (miss: "
	     "loaded now).",
	     "result", "hit", c->tls_cache_hits, "miss", c->tls_cache_misses);
	single(o, "counter", "hermod_tls_cert_cache_evictions_total",
	       "Parsed certificates a worker dropped to make room (--tls-cert-cache).",
	       c->tls_cache_evictions);
	single(o, "gauge", "hermod_tls_cert_cache_entries",
	       "Parsed certificates the workers keep (at most --tls-cert-cache each).",
	       (unsigned long long)(c->tls_cached > 0 ? c->tls_cached : 0));
	single(o, "counter", "hermod_tls_cert_store_faults_total",
	       "Certificate store mappings found truncated in place under a worker (the worker "
	       "lives on, failing handshakes unrecognized_name, until a valid store is at the "
	       "path).",
	       c->cert_store_bad);
	single(o, "gauge", "hermod_tls_certificates", "Certificates in the node's store.",
	       x->certs);
	if (x->cert_soonest > 0)
		single(o, "gauge", "hermod_tls_certificate_soonest_expiry_seconds",
		       "When the first certificate of the node's store expires (Unix time).",
		       (unsigned long long)x->cert_soonest);
}

/* The HTTP/2 engine's families (docs/h2.md, "Metrics"). */
static void h2_render(struct out *o, const struct hm__router_h2_stats *h)
{
	single(o, "counter", "hermod_h2_connections_total", "HTTP/2 connections opened.", h->conns);
	single(o, "counter", "hermod_h2_streams_total",
	       "HTTP/2 requests handed to the router (a stream each).", h->streams);
	single(o, "counter", "hermod_h2_streams_refused_total",
	       "HTTP/2 streams refused (REFUSED_STREAM) because the connection's streams were all "
	       "taken, reset ones included.",
	       h->refused);
	single(o, "counter", "hermod_h2_stream_errors_total",
	       "HTTP/2 streams reset by the router for a protocol error.", h->stream_errors);
	single(o, "counter", "hermod_h2_resets_received_total",
	       "RST_STREAM frames received from HTTP/2 clients.", h->resets);
	single(o, "counter", "hermod_h2_glitches_total",
	       "Frames and streams of HTTP/2 clients that cost the server without serving a "
	       "request (resets, refused streams, floods); a connection out of budget gets GOAWAY "
	       "ENHANCE_YOUR_CALM.",
	       h->glitches);
	single(o, "counter", "hermod_h2_timeouts_total",
	       "HTTP/2 connections ended by the send or header timeout.", h->timeouts);
	outf(o, "# HELP hermod_h2_goaways_total HTTP/2 GOAWAY frames, by direction and error "
		"code.\n# TYPE hermod_h2_goaways_total counter\n");
	for (uint32_t i = 0; i < HM__H2_ERROR_CODES; i++)
		outf(o, "hermod_h2_goaways_total{direction=\"sent\",code=\"%s\"} %llu\n",
		     hm__router_h2_code_name(i), (unsigned long long)h->goaway_sent[i]);
	for (uint32_t i = 0; i <= HM__H2_ERROR_CODES; i++)
		outf(o, "hermod_h2_goaways_total{direction=\"received\",code=\"%s\"} %llu\n",
		     hm__router_h2_code_name(i), (unsigned long long)h->goaway_recv[i]);
}

size_t hm__router_metrics_render(const struct hm__router_counters *c,
				 const struct hm__router_metrics_extra *x, char *out, size_t cap)
{
	static const char *const classes[6] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
	struct out o = {out, 0, cap, false};

	outf(&o, "# HELP hermod_requests_total Requests answered, by status class.\n"
		 "# TYPE hermod_requests_total counter\n");
	for (size_t i = 1; i <= 6; i++)
		outf(&o, "hermod_requests_total{class=\"%s\"} %llu\n", classes[i % 6],
		     (unsigned long long)c->requests[i % 6]);
	outf(&o, "# HELP hermod_errors_total Requests that ended with a router error code.\n"
		 "# TYPE hermod_errors_total counter\n");
	for (size_t i = 1; i < HM__CODE_COUNT; i++)
		outf(&o, "hermod_errors_total{code=\"%s\"} %llu\n", hm__router_codes[i].name,
		     (unsigned long long)c->codes[i]);
	outf(&o,
	     "# HELP hermod_requests_in_flight Requests being routed or proxied now.\n"
	     "# TYPE hermod_requests_in_flight gauge\nhermod_requests_in_flight %lld\n",
	     (long long)c->inflight);
	outf(&o,
	     "# HELP hermod_client_connections Open client connections.\n"
	     "# TYPE hermod_client_connections gauge\nhermod_client_connections %lld\n",
	     (long long)c->conns_open);
	single(&o, "gauge", "hermod_max_client_connections",
	       "The workers' connection limits, summed.", c->max_conns);
	single(&o, "counter", "hermod_accept_paused_total",
	       "Times a worker stopped accepting at its connection limit.", c->accept_paused);
	single(&o, "counter", "hermod_fd_exhausted_total",
	       "Accepts and dyno connects that failed for lack of file descriptors (the dyno is "
	       "not blamed).",
	       c->fd_exhausted);
	single(&o, "counter", "hermod_head_budget_refused_total",
	       "Request heads refused (400) because the worker's head memory budget was spent.",
	       c->head_refused);
	single(&o, "counter", "hermod_client_connections_total", "Client connections accepted.",
	       c->conns_total);
	hist_render(&o, "hermod_dyno_connect_seconds", "Time to connect to a dyno.", &c->connect);
	hist_render(&o, "hermod_dyno_service_seconds",
		    "Time from sending a request to a dyno to the end of its response.",
		    &c->service);
	outf(&o,
	     "# HELP hermod_pool_connections_total Dyno connections used, reused from the "
	     "keep-alive pool or newly made.\n# TYPE hermod_pool_connections_total counter\n"
	     "hermod_pool_connections_total{result=\"reused\"} %llu\n"
	     "hermod_pool_connections_total{result=\"new\"} %llu\n",
	     (unsigned long long)c->pool_reused, (unsigned long long)c->pool_new);
	single(&o, "gauge", "hermod_table_present", "Whether a routing table is mapped.",
	       x->table_present ? 1 : 0);
	single(&o, "gauge", "hermod_table_version", "Publish counter of the routing table.",
	       x->table_version);
	outf(&o,
	     "# HELP hermod_table_age_seconds Time since the routing table last changed.\n"
	     "# TYPE hermod_table_age_seconds gauge\nhermod_table_age_seconds %.3f\n",
	     x->table_age_s);
	single(&o, "counter", "hermod_table_faults_total",
	       "Table mappings found truncated in place under a worker (the worker lives on, "
	       "answering 503 H99, until a valid table is at the path).",
	       c->table_bad);
	single(&o, "gauge", "hermod_workers", "Worker processes running.", x->workers);
	single(&o, "counter", "hermod_worker_restarts_total", "Workers replaced after exiting.",
	       x->worker_restarts);
	single(&o, "counter", "hermod_access_log_dropped_lines_total",
	       "Access-log lines lost to write errors.", c->log_dropped);
	if (x->tls)
		tls_render(&o, c, x);
	if (x->proxy_protocol)
		single(&o, "counter", "hermod_proxy_protocol_refused_total",
		       "Client connections closed because they did not start with a valid PROXY "
		       "protocol header.",
		       c->proxy_refused);
	if (x->h2)
		h2_render(&o, &c->h2);
	return o.full ? 0 : o.len;
}
