/*
 * The router's error codes: Heroku's H-codes with REFERENCE.md's descriptions, the status sent
 * (or logged, when nothing can be sent any more), whether the line is at=error, and the sock=
 * prefix Heroku puts on H18 and H27 lines. One X-macro table feeds the log and the metrics.
 */
#ifndef HM_ROUTER_CODES_H
#define HM_ROUTER_CODES_H

#include <stdbool.h>

/* XX(name, desc, status, error, sock) */
#define HM__ROUTER_CODES(XX)                                                                       \
	XX(H10, "App crashed", 503, true, NULL)                                                    \
	XX(H12, "Request timeout", 503, true, NULL)                                                \
	XX(H13, "Connection closed without response", 503, true, NULL)                             \
	XX(H14, "No web processes running", 503, true, NULL)                                       \
	XX(H15, "Idle connection", 503, true, NULL)                                                \
	XX(H18, "Server request interrupted", 503, true, "backend")                                \
	XX(H19, "Backend connection timeout", 503, true, NULL)                                     \
	XX(H20, "App boot timeout", 503, true, NULL)                                               \
	XX(H21, "Backend connection refused", 503, true, NULL)                                     \
	XX(H24, "Forced close", 503, true, NULL)                                                   \
	XX(H25, "HTTP restriction", 502, true, NULL)                                               \
	XX(H26, "Request error", 400, true, NULL)                                                  \
	XX(H27, "Client request interrupted", 499, true, "client")                                 \
	XX(H28, "Client connection idle", 499, true, NULL)                                         \
	XX(H80, "Maintenance mode", 503, false, NULL)                                              \
	XX(H99, "Platform error", 503, true, NULL)

enum hm__router_code {
	HM__CODE_NONE = 0,
#define HM__CODE_ENUM(name, desc, status, error, sock) HM__CODE_##name,
	HM__ROUTER_CODES(HM__CODE_ENUM)
#undef HM__CODE_ENUM
	    HM__CODE_COUNT
};

struct hm__router_code_info {
	const char *name;
	const char *desc;
	int status;
	bool error;
	const char *sock;
};

/* Indexed by enum hm__router_code; entry 0 is empty. */
extern const struct hm__router_code_info hm__router_codes[HM__CODE_COUNT];

#endif
