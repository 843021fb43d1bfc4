/*
 * The plain TCP client transport (see sock-t.h): a uv_tcp_t opened on the socket the worker
 * accepted, reads into the protocol's buffer, writes through hm__router_writev() (the socket
 * first, the rest queued). The peer's address is the one accept4 gave, as text.
 */
#include "router/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(offsetof(struct hm__router_sock, fl) == 0, "free-list link first");

static void tcp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct hm__router_sock *s = h->data;

	(void)suggested;
	s->cbs->alloc(s, b);
}

static void tcp_read(uv_stream_t *stream, ssize_t n, const uv_buf_t *b)
{
	struct hm__router_sock *s = stream->data;

	(void)b;
	if (n < 0 && n != UV_ENOBUFS) {
		uv_read_stop(stream);
		s->reading = false;
	}
	s->cbs->read(s, n == UV_ENOBUFS ? 0 : n);
}

static int tcp_read_start(struct hm__router_sock *s)
{
	int r;

	if (s->reading)
		return 0;
	r = uv_read_start((uv_stream_t *)&s->tcp, tcp_alloc, tcp_read);
	if (r == 0)
		s->reading = true;
	return r;
}

static void tcp_read_stop(struct hm__router_sock *s)
{
	if (!s->reading)
		return;
	uv_read_stop((uv_stream_t *)&s->tcp);
	s->reading = false;
}

static void tcp_written(void *owner, int status)
{
	struct hm__router_sock *s = owner;

	s->cbs->written(s, status);
}

static int tcp_writev(struct hm__router_sock *s, uv_buf_t *b, unsigned n)
{
	return hm__router_writev(&s->ctx->mem, (uv_stream_t *)&s->tcp, b, n, tcp_written, s);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct hm__router_sock *s = req->data;

	s->cbs->shutdown(s, status);
}

static int tcp_shutdown(struct hm__router_sock *s)
{
	s->sreq.data = s;
	return uv_shutdown(&s->sreq, (uv_stream_t *)&s->tcp, on_shutdown);
}

static void on_closed(uv_handle_t *h)
{
	struct hm__router_sock *s = h->data;
	struct hm__router_ctx *ctx = s->ctx;

	if (s->cbs != NULL)
		s->cbs->closed(s);
	hm__free_put(&ctx->free_socks, s);
}

static void tcp_close(struct hm__router_sock *s)
{
	uv_close((uv_handle_t *)&s->tcp, on_closed);
}

static const struct hm__router_sock_ops tcp_ops = {
    .read_start = tcp_read_start,
    .read_stop = tcp_read_stop,
    .writev = tcp_writev,
    .shutdown = tcp_shutdown,
    .close = tcp_close,
};

static void peer_text(struct hm__router_sock *s, const struct sockaddr *sa)
{
	char buf[INET6_ADDRSTRLEN] = "";

	if (sa->sa_family == AF_INET) {
		inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf, sizeof(buf));
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_V4MAPPED(a))
			inet_ntop(AF_INET, &a->s6_addr[12], buf, sizeof(buf));
		else
			inet_ntop(AF_INET6, a, buf, sizeof(buf));
	}
	s->peer_len = (uint8_t)strnlen(buf, sizeof(s->peer) - 1);
	memcpy(s->peer, buf, s->peer_len);
	s->peer[s->peer_len] = '\0';
}

int hm__router_sock_open_tcp(struct hm__router_ctx *ctx, int fd, const struct sockaddr *peer,
			     struct hm__router_sock **out)
{
	struct hm__router_sock *s = hm__free_get(&ctx->free_socks);
	int r;

	if (s == NULL && (s = malloc(sizeof(*s))) == NULL) {
		close(fd);
		return -ENOMEM;
	}
	memset(s, 0, sizeof(*s));
	s->ctx = ctx;
	s->ops = &tcp_ops;
	uv_tcp_init(ctx->loop, &s->tcp);
	s->tcp.data = s;
	r = uv_tcp_open(&s->tcp, fd);
	if (r != 0) {
		close(fd);
		uv_close((uv_handle_t *)&s->tcp, on_closed);
		return r;
	}
	hm__ctr_add(&ctx->slot->c.conns_total, 1);
	peer_text(s, peer);
	*out = s;
	return 0;
}
