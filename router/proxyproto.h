/*
 * The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header an L4 load
 * balancer puts before a connection's first byte to say whose connection it is. With
 * --proxy-protocol every client connection must start with one; the transport (sock.c,
 * sock_tls.c) reads it before TLS or HTTP sees a byte and takes the client's address from it.
 * A pure parser: no I/O, no allocation, any split of the bytes gives the same result.
 */
#ifndef HM_ROUTER_PROXYPROTO_H
#define HM_ROUTER_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header accepted: v1's 107 bytes, v2's 16 plus its addresses and TLVs. */
#define HM__PROXY_MAX 4096

/*
 * Parses the header at the start of p[0..n).
 * Returns its length (> 0: the connection's own bytes follow it), 0 (a valid beginning: more
 * bytes needed), or -EPROTO (not a PROXY header, or a malformed one: close the connection).
 * On success *src is the client's address if *has_src, else the header carries none (v1
 * UNKNOWN, v2 LOCAL or a non-IP family): the peer is the socket's.
 */
int hm__router_proxy_parse(const uint8_t *p, size_t n, struct sockaddr_storage *src, bool *has_src);

#endif
