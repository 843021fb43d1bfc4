/*
 * Shared scaffolding for the Check unit tests: HM_CHECK_MAIN(make_suite) runs one suite in
 * fork mode (a crashing test fails alone) and exits non-zero on any failure.
 */
#ifndef HM_TESTS_UNIT_HM_CHECK_H
#define HM_TESTS_UNIT_HM_CHECK_H

#include <check.h>
#include <stdlib.h>

#define HM_CHECK_MAIN(make_suite)                                                                  \
	int main(void)                                                                             \
	{                                                                                          \
		SRunner *sr = srunner_create(make_suite());                                        \
		int failed;                                                                        \
		srunner_run_all(sr, CK_NORMAL);                                                    \
		failed = srunner_ntests_failed(sr);                                                \
		srunner_free(sr);                                                                  \
		return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;                                  \
	}

#endif
