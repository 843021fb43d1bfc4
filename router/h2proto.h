/*
 * HTTP/2 toward clients as a client protocol of the router (router/h2proto.c says how): a client
 * connection that speaks HTTP/2 over a transport, each request stream served by an exchange
 * (router/xchg.h), the same way router/h1.h serves HTTP/1.x. The engine underneath (framing,
 * the request as HTTP/1.1, defences, timeouts) is router/h2.h; docs/h2.md is the design.
 */
#ifndef HM_ROUTER_H2PROTO_H
#define HM_ROUTER_H2PROTO_H

#include "router/ctx-t.h"
#include "router/sock-t.h"

/*
 * Serves HTTP/2 on transport s (attached to it from now on; closed with the connection): the
 * entry point for a transport that knows the protocol already (ALPN "h2" on TLS). The client's
 * connection preface is expected as the first bytes read. Registers the connection in
 * ctx->conns. Returns 0, or -ENOMEM after which s is closed. Runs on the worker's loop thread.
 */
int hm__router_h2p_open(struct hm__router_ctx *ctx, struct hm__router_sock *s);

/*
 * --h2c: serves whatever the client speaks on a plain listener. The first bytes decide: the
 * HTTP/2 connection preface makes it an HTTP/2 connection (prior knowledge), anything else is
 * handed, bytes and all, to HTTP/1.x (router/h1.h). A client that sends nothing within
 * --keepalive-timeout is closed, as an idle HTTP/1 connection is. Returns as hm__router_h2p_open.
 */
int hm__router_h2p_sniff(struct hm__router_ctx *ctx, struct hm__router_sock *s);

#endif
