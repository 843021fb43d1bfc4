/*
 * The types of the router's HTTP/1.x message layer (the functions are in router/http.h): a
 * message being parsed (struct hm__router_msg: llhttp's state and the head as offsets into the
 * caller's buffer), the facts a request or response check extracts from it, and what the
 * rewriting takes and decides. The same structures carry an HTTP/2 request once the HTTP/2 engine
 * has written it as an HTTP/1.1 head, so every layer above speaks these.
 */
#ifndef HM_ROUTER_HTTP_T_H
#define HM_ROUTER_HTTP_T_H

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/model.h"
#include "router/hdr-t.h"

/* One header line: offsets into the message's buffer. */
struct hm__router_hdr {
	uint32_t name_off;
	uint32_t value_off; /* leading whitespace already skipped by llhttp */
	uint32_t value_len; /* trailing whitespace included; see hm__router_trim() */
	uint16_t name_len;
	uint8_t id;   /* enum hm__router_hdr_id */
	uint8_t drop; /* named by a Connection header: not forwarded */
};

/* Limits, in bytes or lines. Zero means "no limit" for set_cookie and header_line. */
struct hm__router_limits {
	uint32_t line;	      /* request line or status line, without CRLF */
	uint32_t name;	      /* one header name */
	uint32_t value;	      /* one header value */
	uint32_t count;	      /* header lines */
	uint32_t header_line; /* name + value of one header */
	uint32_t set_cookie;  /* one Set-Cookie value */
	uint32_t head;	      /* the whole head, blank lines before it included */
	uint16_t status;      /* status to answer when a limit other than line is hit */
	uint16_t line_status; /* status to answer when the line is too long */
};

#define HM__ROUTER_HDR_INLINE 48
#define HM__RECHUNK_SLACK     32

enum hm__router_msg_state {
	HM__MSG_HEAD = 0, /* collecting the head */
	HM__MSG_BODY,	  /* head done, body being parsed */
	HM__MSG_DONE,	  /* message complete */
	HM__MSG_ERROR,
};

/* What hm__router_msg_execute() stopped at. */
enum hm__router_msg_event {
	HM__EV_MORE = 0, /* everything given was consumed; give more */
	HM__EV_HEAD,	 /* the head is complete (*used ends after its blank line) */
	HM__EV_DONE,	 /* the message is complete (*used ends after its last byte) */
	HM__EV_ERROR,	 /* malformed or over a limit: see status and why */
};

struct hm__router_msg {
	llhttp_t p;
	const struct hm__router_limits *lim; /* borrowed */
	char *base;			     /* the buffer the offsets refer to (borrowed) */
	uint32_t start;	   /* offset of the message's first byte (after skipped blank lines) */
	uint32_t head_end; /* offset after the blank line ending the head */
	uint32_t line_len; /* request/status line length, once known (else 0) */
	uint32_t url_off, url_len;
	uint32_t reason_off, reason_len;
	uint16_t nhdr, cap;
	struct hm__router_hdr *hdr; /* inline_hdr or heap (owned; see hm__router_msg_fini) */
	uint8_t state;		    /* enum hm__router_msg_state */
	uint8_t in;		    /* 0 between headers, 1 in a name, 2 in a value */
	uint8_t blank;		    /* blank lines skipped before the request line */
	bool line_done;
	bool version_seen;
	bool cl_seen;
	bool dechunk;	  /* body: compact chunk payloads in place (set by the caller) */
	bool rechunk;	  /* body: re-encode chunks into rbuf without extensions */
	bool keep_alive;  /* at DONE: llhttp's verdict on the connection */
	bool chunked;	  /* body: chunked, as the head said (a trailer can change llhttp's flag) */
	uint8_t ck;	  /* chunked body: where the line-end check is (http.c) */
	uint64_t ck_left; /* chunked body: data bytes left in the chunk, or its size so far */
	uint64_t cl_value;
	uint8_t tr;		   /* rechunk: where a trailer line is (http.c) */
	uint8_t tr_len;		   /* rechunk: bytes of the trailer name held in tr_name */
	char tr_name[20];	   /* rechunk: a trailer name's start, until it is known */
	uint64_t body_bytes;	   /* payload bytes parsed so far (after de-chunking) */
	uint32_t out_off, out_len; /* dechunk: payload compacted by the last execute */
	char *rbuf;		   /* rechunk: output buffer (borrowed) */
	uint32_t rcap, rlen;	   /* its size; bytes the last execute wrote there */
	char *tbuf;	     /* trailers collected as "name:value\n" lines (borrowed), or NULL */
	uint32_t tcap, tlen; /* its size; bytes collected */
	uint32_t tfield;     /* where the trailer field being collected starts in tbuf */
	bool tnew;	     /* the next trailer name span starts a field */
	bool tdrop;	     /* the field being collected did not fit: it is dropped */
	uint16_t status;     /* at ERROR: the HTTP status to answer (400, 414, 502, ...) */
	const char *why;     /* at ERROR: a short static reason */
	struct hm__router_hdr inline_hdr[HM__ROUTER_HDR_INLINE];
};

/* A header field as name and value spans (trailers handed on, borrowed). */
struct hm__router_field {
	const char *name;
	size_t name_len;
	const char *value;
	size_t value_len;
};

/* ---- requests ---------------------------------------------------------------------------- */

struct hm__router_req {
	uint8_t method;	 /* enum llhttp_method */
	uint8_t minor;	 /* HTTP/1.minor */
	bool keep_alive; /* the client wants the connection kept */
	bool expect_continue;
	bool upgrade; /* Connection: upgrade with a valid Upgrade, and no body */
	bool chunked; /* Transfer-Encoding: chunked (Content-Length not forwarded) */
	bool has_body;
	uint64_t content_length;
	int32_t host;			 /* index of the Host header */
	int32_t request_id;		 /* index of a valid X-Request-Id, or -1 */
	uint32_t target_off, target_len; /* what to send as request target (origin form) */
	uint32_t authority_off;		 /* absolute form: its authority, the Host to send */
	uint32_t authority_len;		 /* 0: origin form (the Host header is sent) */
	uint16_t key_len;
	char key[HM_HOST_MAX + 1]; /* lookup key from Host (hm_host_key) */
};

/* What the router adds to a request on its way to a dyno. Strings borrowed. */
struct hm__router_fwd {
	const char *peer; /* client IP, text */
	size_t peer_len;
	uint16_t port;		/* the port the client connected to */
	uint64_t start_ms;	/* X-Request-Start */
	const char *request_id; /* X-Request-Id to send */
	size_t request_id_len;
	uint64_t connect_ms; /* Connect-Time */
	uint64_t route_ms;   /* Total-Route-Time */
};

/* ---- responses --------------------------------------------------------------------------- */

struct hm__router_resp {
	uint16_t status;
	bool chunked;
	bool has_cl;
	bool dyno_close; /* the dyno will close after this response */
	bool upgrade;	 /* 101 with Upgrade */
	uint64_t content_length;
};

enum hm__router_body {
	HM__BODY_NONE = 0, /* no body follows the head */
	HM__BODY_RAW,	   /* relay the bytes as they come (Content-Length, chunked, until close) */
	HM__BODY_DECHUNK,  /* HTTP/1.0 client: relay chunk payloads only, close at the end */
};

struct hm__router_resp_ctx {
	uint8_t client_minor; /* the client's HTTP/1.minor */
	bool keep_alive;      /* the client connection may stay open after this response */
	bool head_request;
	bool upgrade_requested;
	const char *set_cookie; /* value of a Set-Cookie to add, or NULL (borrowed) */
	size_t set_cookie_len;
};

struct hm__router_resp_plan {
	uint8_t body;  /* enum hm__router_body */
	bool close;    /* close the client connection after this response */
	bool tunnel;   /* 101: the connections become a byte pipe */
	bool trailers; /* de-chunking: the client protocol takes the trailer fields apart */
};

#endif
