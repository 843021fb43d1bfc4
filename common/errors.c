/*
 * Names and messages for hermod's error codes: the project table first, then errno through
 * strerrordesc_np()/strerrorname_np(), which return static strings and so are thread-safe.
 */
#include "common/errors.h"

#include <string.h>

const char *hm_strerror(int err)
{
	const char *s;

	if (err == 0)
		return "ok";
	switch (err) {
#define HM_ERRNO_MSG(name, value, msg)                                                             \
	case value:                                                                                \
		return msg;
		HM_ERRNO_MAP(HM_ERRNO_MSG)
#undef HM_ERRNO_MSG
	default:
		break;
	}
	if (err < 0 && err > -4096) {
		s = strerrordesc_np(-err);
		if (s != NULL)
			return s;
	}
	return "unknown error";
}

const char *hm_errname(int err)
{
	const char *s;

	switch (err) {
#define HM_ERRNO_NAME(name, value, msg)                                                            \
	case value:                                                                                \
		return #name;
		HM_ERRNO_MAP(HM_ERRNO_NAME)
#undef HM_ERRNO_NAME
	default:
		break;
	}
	if (err < 0 && err > -4096) {
		s = strerrorname_np(-err);
		if (s != NULL)
			return s;
	}
	return "EUNKNOWN_CODE";
}
