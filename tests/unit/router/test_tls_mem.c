/*
 * Tests router/tls_mem.c: once installed (before OpenSSL's first allocation), blocks of the
 * recycled sizes come back from the free lists (the same block, no malloc), realloc keeps the
 * bytes within and across classes, and other sizes pass through. In a sanitizer build the allocator
 * is not installed (AddressSanitizer must see every block).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "router/tls.h"
#include "tests/unit/hm_check.h"

static int installed;

START_TEST(recycles_record_buffers_and_small_objects)
{
	size_t sizes[] = {40, 200, 16712, 16584};

	if (installed != 0)
		return; /* sanitizer build */
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		void *a = OPENSSL_malloc(sizes[i]), *b;

		ck_assert_ptr_nonnull(a);
		memset(a, 0x5a, sizes[i]);
		OPENSSL_free(a);
		b = OPENSSL_malloc(sizes[i]);
		ck_assert_ptr_eq(a, b); /* from the free list */
		OPENSSL_free(b);
	}
}
END_TEST

START_TEST(realloc_keeps_bytes)
{
	unsigned char *p = OPENSSL_malloc(30);

	ck_assert_ptr_nonnull(p);
	for (int i = 0; i < 30; i++)
		p[i] = (unsigned char)i;
	p = OPENSSL_realloc(p, 60); /* same class */
	ck_assert_ptr_nonnull(p);
	p = OPENSSL_realloc(p, 5000); /* no class */
	ck_assert_ptr_nonnull(p);
	memset(p + 30, 0xee, 5000 - 30);
	p = OPENSSL_realloc(p, 17000); /* the big class */
	ck_assert_ptr_nonnull(p);
	for (int i = 0; i < 30; i++)
		ck_assert_uint_eq(p[i], (unsigned char)i);
	ck_assert_uint_eq(p[4999], 0xee);
	p = OPENSSL_realloc(p, 100000); /* beyond every class */
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(p[29], 29);
	OPENSSL_free(p);
	OPENSSL_free(NULL);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("router/tls_mem");
	TCase *tc = tcase_create("tls_mem");

	installed = hm_tls_mem_init(); /* first: before OpenSSL allocates anything */
	if (installed != 0 && installed != -ENOTSUP)
		abort();
	tcase_add_test(tc, recycles_record_buffers_and_small_objects);
	tcase_add_test(tc, realloc_keeps_bytes);
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(suite)
