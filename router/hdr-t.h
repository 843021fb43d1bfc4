/*
 * The HTTP vocabulary of the router as data: every header field it treats specially, with what
 * it does with that field (one X-macro table of flags, as h2o's lib/core/token_table.h keeps a
 * flags word per token), and the reason phrases of the statuses it knows (a second table).
 * Header policy lives here and nowhere else: the request and response writers (http_rewrite.c)
 * drop, keep or replace a field by its flags; the parser (http.c) filters trailers by them; the
 * HTTP/2 engine finds connection-specific fields by them. A field not in the table is
 * HM__HDR_OTHER and passes through untouched.
 *
 * Types only: the functions are in router/hdr.h.
 */
#ifndef HM_ROUTER_HDR_T_H
#define HM_ROUTER_HDR_T_H

#include <stdint.h>

/* What the router does with a header field. */
enum hm__router_hdr_flag {
	HM__HF_HOP = 1 << 0,	     /* hop-by-hop: never forwarded, either way */
	HM__HF_REQ_OWN = 1 << 1,     /* toward the dyno: answered or (re)written by the router */
	HM__HF_RESP_OWN = 1 << 2,    /* toward the client: (re)written by the router */
	HM__HF_NOT_TRAILER = 1 << 3, /* dropped from request trailers (RFC 9110, 6.5.1) */
	HM__HF_FRAMING = 1 << 4,     /* frames or routes the message: never dropped because a
				      * Connection header names it; the writers decide */
	HM__HF_H2_CONN = 1 << 5,     /* connection-specific: no HTTP/2 message carries it (RFC
				      * 9113, 8.2.2); the HTTP/2 engine drops it from responses */
};

#define HM__HF_HOP_ALL (HM__HF_HOP | HM__HF_NOT_TRAILER | HM__HF_H2_CONN)

/*
 * XX(id, lowercase name, flags). Order is free; the ids are the enum below. Hop-by-hop fields
 * (RFC 9110, 7.6.1) and the fields the contract makes the router's own are flagged here; Host,
 * Content-Length, Transfer-Encoding and Upgrade are written by rules that depend on the message
 * (an absolute-form target, chunked framing, de-chunking, a tunnel): see http_rewrite.c.
 */
#define HM__HDR_TABLE(XX)                                                                          \
	XX(HOST, "host", HM__HF_FRAMING | HM__HF_NOT_TRAILER)                                      \
	XX(CONTENT_LENGTH, "content-length", HM__HF_FRAMING | HM__HF_NOT_TRAILER)                  \
	XX(TRANSFER_ENCODING, "transfer-encoding",                                                 \
	   HM__HF_FRAMING | HM__HF_NOT_TRAILER | HM__HF_H2_CONN)                                   \
	XX(CONNECTION, "connection", HM__HF_HOP_ALL)                                               \
	XX(KEEP_ALIVE, "keep-alive", HM__HF_HOP_ALL)                                               \
	XX(PROXY_CONNECTION, "proxy-connection", HM__HF_HOP_ALL)                                   \
	XX(TE, "te", HM__HF_HOP_ALL)                                                               \
	XX(PROXY_AUTHORIZATION, "proxy-authorization", HM__HF_HOP | HM__HF_NOT_TRAILER)            \
	XX(UPGRADE, "upgrade", HM__HF_NOT_TRAILER | HM__HF_H2_CONN) /* kept only for a tunnel */   \
	XX(EXPECT, "expect", HM__HF_REQ_OWN) /* the router answers 100-continue itself */          \
	XX(X_FORWARDED_FOR, "x-forwarded-for", HM__HF_REQ_OWN)                                     \
	XX(X_FORWARDED_PROTO, "x-forwarded-proto", HM__HF_REQ_OWN)                                 \
	XX(X_FORWARDED_PORT, "x-forwarded-port", HM__HF_REQ_OWN)                                   \
	XX(X_REQUEST_ID, "x-request-id", HM__HF_REQ_OWN)                                           \
	XX(X_REQUEST_START, "x-request-start", HM__HF_REQ_OWN)                                     \
	XX(VIA, "via", HM__HF_REQ_OWN | HM__HF_RESP_OWN) /* appended to, both ways */              \
	XX(CONNECT_TIME, "connect-time", HM__HF_REQ_OWN)                                           \
	XX(TOTAL_ROUTE_TIME, "total-route-time", HM__HF_REQ_OWN)                                   \
	XX(COOKIE, "cookie", 0)		/* read for the affinity cookie */                         \
	XX(SET_COOKIE, "set-cookie", 0) /* its own length limit in responses */                    \
	XX(TRAILER, "trailer", HM__HF_NOT_TRAILER)

/* Header ids: the fields of HM__HDR_TABLE, after HM__HDR_OTHER (every other field). */
enum hm__router_hdr_id {
	HM__HDR_OTHER = 0,
#define HM__HDR_ENUM(id, name, flags) HM__HDR_##id,
	HM__HDR_TABLE(HM__HDR_ENUM)
#undef HM__HDR_ENUM
	    HM__HDR_COUNT
};

/*
 * XX(status, reason phrase): what the router writes after a status a dyno sent without a
 * reason phrase, and in its own responses. A status not listed gets an empty phrase (allowed
 * by RFC 9112, 4).
 */
#define HM__HTTP_REASONS(XX)                                                                       \
	XX(100, "Continue")                                                                        \
	XX(101, "Switching Protocols")                                                             \
	XX(200, "OK")                                                                              \
	XX(201, "Created")                                                                         \
	XX(202, "Accepted")                                                                        \
	XX(204, "No Content")                                                                      \
	XX(206, "Partial Content")                                                                 \
	XX(301, "Moved Permanently")                                                               \
	XX(302, "Found")                                                                           \
	XX(303, "See Other")                                                                       \
	XX(304, "Not Modified")                                                                    \
	XX(307, "Temporary Redirect")                                                              \
	XX(308, "Permanent Redirect")                                                              \
	XX(400, "Bad Request")                                                                     \
	XX(401, "Unauthorized")                                                                    \
	XX(403, "Forbidden")                                                                       \
	XX(404, "Not Found")                                                                       \
	XX(405, "Method Not Allowed")                                                              \
	XX(408, "Request Timeout")                                                                 \
	XX(409, "Conflict")                                                                        \
	XX(410, "Gone")                                                                            \
	XX(411, "Length Required")                                                                 \
	XX(412, "Precondition Failed")                                                             \
	XX(413, "Content Too Large")                                                               \
	XX(414, "URI Too Long")                                                                    \
	XX(415, "Unsupported Media Type")                                                          \
	XX(417, "Expectation Failed")                                                              \
	XX(422, "Unprocessable Content")                                                           \
	XX(426, "Upgrade Required")                                                                \
	XX(429, "Too Many Requests")                                                               \
	XX(431, "Request Header Fields Too Large")                                                 \
	XX(499, "Client Closed Request")                                                           \
	XX(500, "Internal Server Error")                                                           \
	XX(501, "Not Implemented")                                                                 \
	XX(502, "Bad Gateway")                                                                     \
	XX(503, "Service Unavailable")                                                             \
	XX(504, "Gateway Timeout")                                                                 \
	XX(505, "HTTP Version Not Supported")

#endif
