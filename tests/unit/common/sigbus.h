/*
 * For unit tests that truncate a published file under its readers: the SIGBUS handler hermod's
 * router workers install (common/pubfile.h's fault registry survives a fault in a guarded map;
 * any other SIGBUS gets the default action, a crash the test reports).
 */
#ifndef HM_TESTS_UNIT_COMMON_SIGBUS_H
#define HM_TESTS_UNIT_COMMON_SIGBUS_H

#include <signal.h>

#include "common/pubfile.h"

static void hm_test_on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (!hm_pubfile_fault(si->si_addr)) {
		signal(sig, SIG_DFL);
		raise(sig);
	}
}

/* Installs hm_test_on_sigbus; the previous action goes to *old (restore it with sigaction).
 * Returns sigaction's result. */
static inline int hm_test_catch_sigbus(struct sigaction *old)
{
	struct sigaction sa = {0};

	sa.sa_sigaction = hm_test_on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	return sigaction(SIGBUS, &sa, old);
}

#endif
