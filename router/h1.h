/*
 * HTTP/1.x toward clients: the protocol of a client connection that speaks HTTP/1.0 or 1.1
 * (router/h1.c says how). It reads requests from its transport, validates their heads, hands
 * each valid one to an exchange (router/xchg.h) and writes what the exchange answers.
 */
#ifndef HM_ROUTER_H1_H
#define HM_ROUTER_H1_H

#include "router/ctx-t.h"
#include "router/sock-t.h"

/*
 * Serves HTTP/1.x on transport s (attached to it from now on; closed with the connection).
 * Registers the connection in ctx->conns. Returns 0, or -ENOMEM after which s is closed.
 * Runs on the worker's loop thread.
 */
int hm__router_h1_open(struct hm__router_ctx *ctx, struct hm__router_sock *s);

#endif
