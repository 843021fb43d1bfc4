/*
 * Tests router/slab.c: classes round up, freed blocks come back without a heap call, each class
 * keeps at most its share of idle memory, large blocks bypass the lists, realloc keeps the bytes.
 */
#include <string.h>

#include "router/slab.h"
#include "tests/unit/hm_check.h"

START_TEST(test_classes_and_reuse)
{
	struct hm__router_slab s;
	void *a, *b, *c;

	hm__router_slab_init(&s, 1 << 20);
	a = hm__router_slab_alloc(&s, 1);
	ck_assert_uint_eq(hm__router_slab_usable(a), 32);
	b = hm__router_slab_alloc(&s, 33);
	ck_assert_uint_eq(hm__router_slab_usable(b), 48);
	c = hm__router_slab_alloc(&s, 65535);
	ck_assert_uint_eq(hm__router_slab_usable(c), 65536);
	ck_assert_uint_eq(((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) & 15, 0);
	ck_assert_uint_eq(s.heap_allocs, 3);
	ck_assert_uint_eq(s.live, 3);
	ck_assert_uint_eq(s.live_bytes, 32 + 48 + 65536);
	hm__router_slab_free(&s, b);
	/* Same class: the same block, no heap call. */
	ck_assert_ptr_eq(hm__router_slab_alloc(&s, 40), b);
	hm__router_slab_free(&s, a);
	hm__router_slab_free(&s, b);
	hm__router_slab_free(&s, c);
	ck_assert_uint_eq(s.live, 0);
	ck_assert_uint_eq(s.heap_frees, 0);
	hm__router_slab_fini(&s);
	ck_assert_uint_eq(s.heap_frees, 3);
}
END_TEST

/* Every size lands in the smallest class that holds it: not in one whose next smaller class
 * would do (3/4 of a power of two, 2/3 of a halfway class). */
START_TEST(test_every_size_in_its_class)
{
	struct hm__router_slab s;

	hm__router_slab_init(&s, 1 << 20);
	for (size_t n = 1; n <= 256 << 10; n += n / 7 + 1) {
		void *q = hm__router_slab_alloc(&s, n);
		size_t u = hm__router_slab_usable(q);

		ck_assert_uint_ge(u, n);
		ck_assert(u == 32 || (u & (u - 1)) != 0 || n > u / 4 * 3);
		ck_assert((u & (u - 1)) == 0 || n > u / 3 * 2);
		hm__router_slab_free(&s, q);
	}
	hm__router_slab_fini(&s);
}
END_TEST

START_TEST(test_keep_bound)
{
	struct hm__router_slab s;
	void *p[40];

	/* 64 KiB per class: sixteen idle 4 KiB blocks, and never fewer than four. */
	hm__router_slab_init(&s, 64 << 10);
	for (int i = 0; i < 40; i++)
		p[i] = hm__router_slab_alloc(&s, 4096);
	for (int i = 0; i < 40; i++)
		hm__router_slab_free(&s, p[i]);
	ck_assert_uint_eq(s.heap_frees, 24);
	for (int i = 0; i < 4; i++)
		p[i] = hm__router_slab_alloc(&s, 200 << 10);
	for (int i = 0; i < 4; i++)
		hm__router_slab_free(&s, p[i]);
	ck_assert_uint_eq(s.heap_frees, 24);
	hm__router_slab_fini(&s);
	ck_assert_uint_eq(s.heap_frees, s.heap_allocs);
}
END_TEST

START_TEST(test_large_and_realloc)
{
	struct hm__router_slab s;
	char *p, *q;

	hm__router_slab_init(&s, 1 << 20);
	p = hm__router_slab_alloc(&s, 300000);
	ck_assert_uint_eq(hm__router_slab_usable(p), 300000);
	hm__router_slab_free(&s, p);
	ck_assert_uint_eq(s.heap_frees, 1); /* large blocks are not kept */
	p = hm__router_slab_alloc(&s, 100);
	memcpy(p, "hello", 6);
	ck_assert_ptr_eq(hm__router_slab_realloc(&s, p, 120), p); /* still fits its class */
	q = hm__router_slab_realloc(&s, p, 5000);
	ck_assert_str_eq(q, "hello");
	ck_assert_uint_eq(hm__router_slab_usable(q), 6144);
	q = hm__router_slab_realloc(&s, q, 400000);
	ck_assert_str_eq(q, "hello");
	ck_assert_ptr_null(hm__router_slab_realloc(&s, q, 0));
	p = hm__router_slab_calloc(&s, 10, 10);
	for (int i = 0; i < 100; i++)
		ck_assert_int_eq(p[i], 0);
	ck_assert_ptr_null(hm__router_slab_calloc(&s, SIZE_MAX / 2, 4));
	hm__router_slab_free(&s, p);
	hm__router_slab_free(&s, NULL);
	ck_assert_uint_eq(s.live, 0);
	ck_assert_uint_eq(s.live_bytes, 0);
	hm__router_slab_fini(&s);
}
END_TEST

static Suite *slab_suite(void)
{
	Suite *s = suite_create("slab");
	TCase *tc = tcase_create("slab");

	tcase_add_test(tc, test_classes_and_reuse);
	tcase_add_test(tc, test_every_size_in_its_class);
	tcase_add_test(tc, test_keep_bound);
	tcase_add_test(tc, test_large_and_realloc);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(slab_suite)
