/* Tests syncd/wire.c: the size bound really bounds the encoding, and the splitter's cuts. */
#include <string.h>

#include "proto/proto.h"
#include "syncd/wire.h"
#include "tests/unit/hm_check.h"

static char long_app[HM_APP_NAME_MAX + 1];
static char long_host[HM_HOST_MAX + 1];
static char long_dyno[HM_DYNO_NAME_MAX + 1];

static void make_names(void)
{
	memset(long_app, 'a', HM_APP_NAME_MAX);
	long_app[HM_APP_NAME_MAX] = '\0';
	/* 63-byte labels joined by dots: 63*4 + 3 = 255 > 253; use 3 labels and a shorter one. */
	memset(long_host, 'h', HM_HOST_MAX);
	for (int i = 63; i < HM_HOST_MAX; i += 64)
		long_host[i] = '.';
	long_host[HM_HOST_MAX] = '\0';
	memset(long_dyno, 'd', HM_DYNO_NAME_MAX);
	long_dyno[HM_DYNO_NAME_MAX - 2] = '.';
	long_dyno[HM_DYNO_NAME_MAX - 1] = '9';
	long_dyno[HM_DYNO_NAME_MAX] = '\0';
}

START_TEST(bound_is_an_upper_bound)
{
	struct hm_change cs[4];
	struct hm_pbuf pb = {0};

	make_names();
	memset(cs, 0, sizeof(cs));
	cs[0].op = HM_OP_APP_PUT;
	cs[0].app = long_app;
	cs[0].app_len = HM_APP_NAME_MAX;
	cs[0].balance = HM_BALANCE_LEAST_CONN;
	cs[1].op = HM_OP_DOMAIN_PUT;
	cs[1].app = long_app;
	cs[1].app_len = HM_APP_NAME_MAX;
	cs[1].name = long_host;
	cs[1].name_len = HM_HOST_MAX;
	cs[2].op = HM_OP_DYNO_PUT;
	cs[2].app = long_app;
	cs[2].app_len = HM_APP_NAME_MAX;
	cs[2].name = long_dyno;
	cs[2].name_len = HM_DYNO_NAME_MAX;
	cs[2].state = HM_DYNO_CRASHED;
	ck_assert_int_eq(
	    hm_addr_parse("[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535", 47, &cs[2].addr), 0);
	cs[3] = cs[2];
	cs[3].op = HM_OP_DYNO_RM;
	for (int i = 0; i < 4; i++) {
		size_t before;

		ck_assert_int_eq(hm_change_check(&cs[i]), 0);
		hm_pbuf_reset(&pb);
		ck_assert_int_eq(hm_proto_begin_batch(&pb, 1, 1, 0, 0, 1, 1), 0);
		before = pb.len;
		ck_assert_int_eq(hm_proto_add_change(&pb, &cs[i]), 0);
		ck_assert_uint_le(pb.len - before, hm__wire_change_size(&cs[i]));
	}
	hm_pbuf_fini(&pb);
}
END_TEST

START_TEST(splitter_cuts)
{
	struct hm__splitter s;

	hm__split_init(&s, 100, 3);
	ck_assert(hm__split_add(&s, 10)); /* first part */
	ck_assert(!hm__split_add(&s, 10));
	ck_assert(!hm__split_add(&s, 10));
	ck_assert(hm__split_add(&s, 10));  /* 3 changes: new part */
	ck_assert(!hm__split_add(&s, 80)); /* 90 bytes */
	ck_assert(hm__split_add(&s, 20));  /* would be 110 */
	ck_assert_uint_eq(s.nparts, 3);
}
END_TEST

START_TEST(full_parts_encode)
{
	/* A part cut at the byte budget with the largest changes still encodes. */
	struct hm__splitter s;
	struct hm_change c;
	struct hm_pbuf pb = {0};
	uint32_t n = 0;

	make_names();
	memset(&c, 0, sizeof(c));
	c.op = HM_OP_DOMAIN_PUT;
	c.app = long_app;
	c.app_len = HM_APP_NAME_MAX;
	c.name = long_host;
	c.name_len = HM_HOST_MAX;
	hm__split_init(&s, HM__PUB_PART_BYTES, HM_PROTO_MAX_CHANGES);
	while (!hm__split_add(&s, hm__wire_change_size(&c)) || n == 0)
		n++;
	ck_assert_int_eq(hm_proto_begin_batch(&pb, 1, 1, 0, 0, 1, n), 0);
	for (uint32_t i = 0; i < n; i++)
		ck_assert_int_eq(hm_proto_add_change(&pb, &c), 0);
	ck_assert_uint_le(pb.len, HM__PUB_PART_BYTES + 64);
	hm_pbuf_fini(&pb);
}
END_TEST

static Suite *make_suite(void)
{
	Suite *s = suite_create("wire");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, bound_is_an_upper_bound);
	tcase_add_test(tc, splitter_cuts);
	tcase_add_test(tc, full_parts_encode);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
