/*
 * The exchange (types and the client protocol's side of the contract in router/xchg-t.h).
 *
 * A client protocol makes an exchange when a request head is complete and valid
 * (hm__router_xchg_new, then hm__router_xchg_start), tells it what happens on its side
 * (hm__router_xchg_more, _sent, _client_eof, _timeout) and hears back through its client ops,
 * the last call being one of error, abort or done. If the client side ends first (the
 * connection is closed under the exchange), hm__router_xchg_cancel() ends it without a call
 * back. A malformed request never becomes an exchange: hm__router_xchg_reject() logs it.
 *
 * Everything runs on the worker's loop thread. The ops may run inside any of these functions.
 */
#ifndef HM_ROUTER_XCHG_H
#define HM_ROUTER_XCHG_H

#include "router/codes.h"
#include "router/xchg-t.h"

/* An exchange from the free list (or the heap, while the worker warms up). NULL: no memory. */
struct hm__router_xchg *hm__router_xchg_new(struct hm__router_ctx *ctx);

/*
 * Starts x for a checked request: req and rq (rq as hm__router_req_check() filled it) and the
 * client facts in ci stay valid and unchanged until x ends, apart from the body bytes after the
 * head; cs is the protocol's object the ops are called with. Routing happens now: the exchange
 * may end before this returns (404, H14, ...), with one of the ending ops.
 */
void hm__router_xchg_start(struct hm__router_xchg *x, const struct hm__router_client_ops *ops,
			   void *cs, const struct hm__router_msg *req,
			   const struct hm__router_req *rq,
			   const struct hm__router_client_info *ci);

/*
 * Logs a request the client protocol refused itself, with no exchange (a malformed head, 400 to
 * 505 H26; a head not received in time, 408 H28): m is the head as far as it was parsed (its
 * method and target are logged if the request line was), peer the client's address; the client
 * protocol sends the answer.
 */
void hm__router_xchg_reject(struct hm__router_ctx *ctx, const struct hm__router_msg *m,
			    const char *peer, size_t peer_len, enum hm__router_code code,
			    int status);

/* Bytes came from the client (request body, or anything: it is progress): forwards what it can. */
void hm__router_xchg_more(struct hm__router_xchg *x);

/* Everything send() and end() queued has been written. */
void hm__router_xchg_sent(struct hm__router_xchg *x);

/* The client closed its side or its connection broke. The exchange ends (H27, unless its answer
 * is complete or it is a tunnel whose last bytes are on their way) or waits to. */
void hm__router_xchg_client_eof(struct hm__router_xchg *x);

/* The protocol's timer reached the deadline the exchange asked for with arm() (or a later one). */
void hm__router_xchg_timeout(struct hm__router_xchg *x);

/* The client side goes away under the exchange: it ends now, without calling back, logged with
 * code (H27 client gone, H24 forced close) unless its line is written already. */
void hm__router_xchg_cancel(struct hm__router_xchg *x, enum hm__router_code code);

#endif
