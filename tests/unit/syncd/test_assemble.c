/* Tests syncd/assemble.c: the edge's part reassembly, every verdict. */
#include <stdlib.h>

#include "syncd/assemble.h"
#include "tests/unit/hm_check.h"

static int freed;

static void free_part(void *p)
{
	freed++;
	free(p);
}

static void *obj(void)
{
	return malloc(1);
}

START_TEST(single_part)
{
	struct hm__asm a;
	void *o = obj();

	freed = 0;
	hm__asm_init(&a, free_part);
	ck_assert_int_eq(hm__asm_offer(&a, 10, 11, 0, 1, o), HM__ASM_COMPLETE);
	ck_assert_uint_eq(a.seq, 11);
	ck_assert_ptr_eq(a.parts[0], o);
	hm__asm_reset(&a);
	ck_assert_int_eq(freed, 1);
	hm__asm_fini(&a);
}
END_TEST

START_TEST(old_and_gap)
{
	struct hm__asm a;
	void *o = obj();

	hm__asm_init(&a, free_part);
	ck_assert_int_eq(hm__asm_offer(&a, 10, 10, 0, 1, o), HM__ASM_OLD);
	ck_assert_int_eq(hm__asm_offer(&a, 10, 9, 0, 1, o), HM__ASM_OLD);
	ck_assert_int_eq(hm__asm_offer(&a, 10, 12, 0, 1, o), HM__ASM_GAP);
	ck_assert_int_eq(hm__asm_offer(&a, 10, 11, 1, 2, o), HM__ASM_GAP); /* part 0 missing */
	ck_assert_int_eq(hm__asm_offer(&a, 10, 11, 2, 2, o), HM__ASM_GAP); /* part >= nparts */
	ck_assert_int_eq(hm__asm_offer(&a, 10, 11, 0, 0, o), HM__ASM_GAP);
	ck_assert_uint_eq(a.have, 0);
	free(o);
	hm__asm_fini(&a);
}
END_TEST

START_TEST(multi_part_in_order_with_duplicates)
{
	struct hm__asm a;

	freed = 0;
	hm__asm_init(&a, free_part);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 0, 3, obj()), HM__ASM_HELD);
	void *dup = obj();

	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 0, 3, dup), HM__ASM_OLD); /* resent part */
	free(dup);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 1, 3, obj()), HM__ASM_HELD);
	void *skip = obj();

	ck_assert_int_eq(hm__asm_offer(&a, 4, 6, 0, 1, skip), HM__ASM_GAP); /* batch 5 unfinished */
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 2, 4, skip), HM__ASM_GAP); /* nparts disagrees */
	ck_assert_uint_eq(a.have, 0);					    /* ... resets */
	ck_assert_int_eq(freed, 2);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 0, 3, obj()), HM__ASM_HELD);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 1, 3, obj()), HM__ASM_HELD);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 2, 3, skip), HM__ASM_COMPLETE);
	ck_assert_uint_eq(a.have, 3);
	hm__asm_fini(&a);
	ck_assert_int_eq(freed, 5);
}
END_TEST

START_TEST(stale_parts_dropped_when_applied_elsewhere)
{
	struct hm__asm a;

	freed = 0;
	hm__asm_init(&a, free_part);
	ck_assert_int_eq(hm__asm_offer(&a, 4, 5, 0, 2, obj()), HM__ASM_HELD);
	/* Batch 5 arrived complete through a catch-up: applied is now 5. */
	ck_assert_int_eq(hm__asm_offer(&a, 5, 6, 0, 1, obj()), HM__ASM_COMPLETE);
	ck_assert_int_eq(freed, 1);
	ck_assert_uint_eq(a.seq, 6);
	hm__asm_fini(&a);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("assemble");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, single_part);
	tcase_add_test(tc, old_and_gap);
	tcase_add_test(tc, multi_part_in_order_with_duplicates);
	tcase_add_test(tc, stale_parts_dropped_when_applied_elsewhere);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
