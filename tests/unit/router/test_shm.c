/*
 * Tests router/shm.c: the in-flight ledger (what a dead worker held is given back exactly, even
 * after entries were reused), counter folding, histogram buckets, and the Prometheus text.
 */
#include <stdlib.h>
#include <string.h>

#include "router/shm.h"
#include "tests/unit/hm_check.h"

/* Allocation for test data: failing it ends the test. */
static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (p == NULL)
		abort();
	return p;
}

struct seen {
	int64_t total;
	int entries;
	int32_t by_slot[8];
};

static void collect(void *ctx, uint64_t file_id, uint32_t slot, int32_t count)
{
	struct seen *s = ctx;

	ck_assert_uint_eq(file_id, 0xF11E);
	ck_assert_uint_lt(slot, 8);
	s->total += count;
	s->by_slot[slot] += count;
	s->entries++;
}

START_TEST(ledger_returns_what_is_held)
{
	struct hm__router_shm *shm;
	struct hm__router_slot *s;
	struct seen seen = {0};

	ck_assert_int_eq(hm__router_shm_new(&shm, 2), 0);
	s = &shm->slot[0];
	/* Requests come and go; at the end slot 3 holds 2 and slot 5 holds 1. */
	for (int i = 0; i < 100; i++) {
		hm__router_ledger_add(s, 0xF11E, (uint32_t)(i % 8), 1);
		hm__router_ledger_add(s, 0xF11E, (uint32_t)(i % 8), -1);
	}
	hm__router_ledger_add(s, 0xF11E, 3, 1);
	hm__router_ledger_add(s, 0xF11E, 5, 1);
	hm__router_ledger_add(s, 0xF11E, 3, 1);
	hm__router_ledger_drain(s, collect, &seen);
	ck_assert_int_eq(seen.total, 3);
	ck_assert_int_eq(seen.by_slot[3], 2);
	ck_assert_int_eq(seen.by_slot[5], 1);
	ck_assert_int_eq(seen.entries, 2);
	/* Drained means empty. */
	memset(&seen, 0, sizeof(seen));
	hm__router_ledger_drain(s, collect, &seen);
	ck_assert_int_eq(seen.entries, 0);
	hm__router_shm_free(shm);
}
END_TEST

static void count_only(void *ctx, uint64_t file_id, uint32_t slot, int32_t count)
{
	(void)file_id;
	(void)slot;
	*(int64_t *)ctx += count;
}

START_TEST(ledger_many_keys)
{
	struct hm__router_shm *shm;
	struct hm__router_slot *s;
	int64_t total = 0;

	ck_assert_int_eq(hm__router_shm_new(&shm, 1), 0);
	s = &shm->slot[0];
	/* Far more distinct keys over time than entries: zero entries are taken over. */
	for (uint32_t i = 0; i < 5 * HM__LEDGER_N; i++) {
		hm__router_ledger_add(s, 1 + i / 1000, i, 1);
		if (i % 10 != 0)
			hm__router_ledger_add(s, 1 + i / 1000, i, -1);
	}
	ck_assert_uint_eq(s->ledger_lost, 0);
	hm__router_ledger_drain(s, count_only, &total);
	ck_assert_int_eq(total, 5 * HM__LEDGER_N / 10);
	hm__router_shm_free(shm);
}
END_TEST

START_TEST(counters_and_histograms)
{
	struct hm__router_counters a = {0}, b = {0}, sum = {0};

	hm__router_hist_observe(&a.connect, 0);	       /* le 1ms */
	hm__router_hist_observe(&a.connect, 1000);     /* le 1ms, inclusive */
	hm__router_hist_observe(&a.connect, 1001);     /* le 2.5ms */
	hm__router_hist_observe(&a.connect, 99999999); /* +Inf */
	ck_assert_uint_eq(a.connect.bucket[0], 2);
	ck_assert_uint_eq(a.connect.bucket[1], 1);
	ck_assert_uint_eq(a.connect.bucket[HM__HIST_N], 1);
	ck_assert_uint_eq(a.connect.count, 4);
	hm__ctr_add(&a.requests[2], 5);
	hm__ctr_add(&b.requests[2], 7);
	hm__ctr_add(&b.codes[HM__CODE_H14], 1);
	hm__ctr_add(&a.h2.glitches, 500);
	hm__ctr_add(&b.h2.glitches, 1);
	hm__ctr_add(&b.h2.goaway_sent[HM__H2_ENHANCE_YOUR_CALM], 1);
	hm__ctr_add(&a.h2.goaway_recv[HM__H2_ERROR_CODES], 2);
	hm__gauge_add(&a.inflight, 3);
	hm__router_counters_add(&sum, &a, true);
	hm__router_counters_add(&sum, &b, false);
	hm__gauge_add(&b.inflight, 100); /* not folded: gauges of dead workers are gone */
	ck_assert_uint_eq(sum.requests[2], 12);
	ck_assert_uint_eq(sum.codes[HM__CODE_H14], 1);
	ck_assert_uint_eq(sum.h2.glitches, 501);
	ck_assert_uint_eq(sum.h2.goaway_sent[HM__H2_ENHANCE_YOUR_CALM], 1);
	ck_assert_uint_eq(sum.h2.goaway_recv[HM__H2_ERROR_CODES], 2);
	ck_assert_int_eq(sum.inflight, 3);
	ck_assert_uint_eq(sum.connect.count, 4);
}
END_TEST

START_TEST(prometheus_text)
{
	struct hm__router_counters c = {0};
	struct hm__router_metrics_extra x = {.table_present = true,
					     .table_version = 42,
					     .table_age_s = 1.5,
					     .workers = 2,
					     .worker_restarts = 3};
	char *out = xmalloc(65536);
	size_t n;

	c.requests[2] = 10;
	c.codes[HM__CODE_H12] = 2;
	c.pool_reused = 9;
	hm__router_hist_observe(&c.service, 3000);
	n = hm__router_metrics_render(&c, &x, out, 65536);
	ck_assert_uint_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_requests_total{class=\"2xx\"} 10\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_errors_total{code=\"H12\"} 2\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_errors_total{code=\"H99\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(out, "# TYPE hermod_dyno_service_seconds histogram\n"));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nhermod_dyno_service_seconds_bucket{le=\"0.0025\"} 0\n"));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nhermod_dyno_service_seconds_bucket{le=\"0.005\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_dyno_service_seconds_bucket{le=\"+Inf\"} 1\n"));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nhermod_pool_connections_total{result=\"reused\"} 9\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_table_version 42\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_worker_restarts_total 3\n"));
	/* HTTP/2's families only where it is served. */
	ck_assert_ptr_null(strstr(out, "hermod_h2_"));
	x.h2 = true;
	c.h2.refused = 4;
	c.h2.goaway_sent[HM__H2_ENHANCE_YOUR_CALM] = 2;
	c.h2.goaway_recv[HM__H2_ERROR_CODES] = 1;
	n = hm__router_metrics_render(&c, &x, out, 65536);
	ck_assert_uint_gt(n, 0);
	out[n] = '\0';
	ck_assert_ptr_nonnull(strstr(out, "# TYPE hermod_h2_goaways_total counter\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_h2_streams_refused_total 4\n"));
	ck_assert_ptr_nonnull(strstr(out, "\nhermod_h2_glitches_total 0\n"));
	ck_assert_ptr_nonnull(strstr(
	    out, "\nhermod_h2_goaways_total{direction=\"sent\",code=\"ENHANCE_YOUR_CALM\"} 2\n"));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nhermod_h2_goaways_total{direction=\"received\",code=\"unknown\"} 1\n"));
	ck_assert_ptr_nonnull(
	    strstr(out, "\nhermod_h2_goaways_total{direction=\"received\",code=\"NO_ERROR\"} 0\n"));
	ck_assert_ptr_null(strstr(out, "{direction=\"sent\",code=\"unknown\"}"));
	/* Too small a buffer is refused, not truncated. */
	ck_assert_uint_eq(hm__router_metrics_render(&c, &x, out, 100), 0);
	free(out);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/shm");
	TCase *tc = tcase_create("shm");

	tcase_add_test(tc, ledger_returns_what_is_held);
	tcase_add_test(tc, ledger_many_keys);
	tcase_add_test(tc, counters_and_histograms);
	tcase_add_test(tc, prometheus_text);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
