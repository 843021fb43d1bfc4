/*
 * Buffers, their budget, and writes that try the socket first (see iobuf.h).
 *
 * Free lists only grow to what the busiest moment needed (bounded by the connections, at most a
 * few buffers each, and --max-connections); FREE_BUFS_MAX caps the buffers kept idle.
 */
#include "router/iobuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "router/list.h"

#define FREE_BUFS_MAX 512

struct hm__router_wreq {
	uv_write_t req;
	struct hm__router_wreq *next;
	struct hm__router_iomem *mem;
	hm__router_write_cb cb;
	void *owner;
};

void hm__router_iomem_init(struct hm__router_iomem *m, uint64_t budget)
{
	memset(m, 0, sizeof(*m));
	m->budget = budget;
}

void hm__router_iomem_fini(struct hm__router_iomem *m)
{
	while (m->free_bufs != NULL) {
		struct hm__router_buf *b = m->free_bufs;

		m->free_bufs = b->next;
		free(b);
	}
	m->nfree_bufs = 0;
	while (m->free_wreqs != NULL) {
		struct hm__router_wreq *r = m->free_wreqs;

		m->free_wreqs = r->next;
		free(r);
	}
}

struct hm__router_buf *hm__router_buf_get(struct hm__router_iomem *m, uint32_t min)
{
	struct hm__router_buf *b;
	uint32_t cap = min <= HM__BUF_SIZE ? HM__BUF_SIZE : min;

	if (cap == HM__BUF_SIZE && m->free_bufs != NULL) {
		b = m->free_bufs;
		m->free_bufs = b->next;
		m->nfree_bufs--;
		return b;
	}
	if (cap > HM__BUF_SIZE && m->big_bytes + cap > m->budget)
		return NULL;
	b = malloc(sizeof(*b) + cap);
	if (b == NULL)
		return NULL;
	b->cap = cap;
	if (cap > HM__BUF_SIZE)
		m->big_bytes += cap;
	return b;
}

void hm__router_buf_put(struct hm__router_iomem *m, struct hm__router_buf *b)
{
	if (b == NULL)
		return;
	if (b->cap == HM__BUF_SIZE && m->nfree_bufs < FREE_BUFS_MAX) {
		b->next = m->free_bufs;
		m->free_bufs = b;
		m->nfree_bufs++;
		return;
	}
	if (b->cap > HM__BUF_SIZE)
		m->big_bytes -= b->cap;
	free(b);
}

int hm__router_buf_grow(struct hm__router_iomem *m, struct hm__router_buf **bp, uint32_t len,
			uint32_t max)
{
	struct hm__router_buf *b = *bp, *nb;
	uint32_t cap = b->cap * 2;

	if (b->cap >= max)
		return -ENOBUFS;
	if (cap > max)
		cap = max;
	if (m->big_bytes + cap > m->budget)
		return -ENOSPC;
	nb = hm__router_buf_get(m, cap);
	if (nb == NULL)
		return -ENOMEM;
	memcpy(nb->data, b->data, len);
	hm__router_buf_put(m, b);
	*bp = nb;
	return 0;
}

static void on_write(uv_write_t *req, int status)
{
	struct hm__router_wreq *wr = hm__container_of(req, struct hm__router_wreq, req);
	hm__router_write_cb cb = wr->cb;
	void *owner = wr->owner;

	wr->next = wr->mem->free_wreqs;
	wr->mem->free_wreqs = wr;
	cb(owner, status);
}

int hm__router_writev(struct hm__router_iomem *m, uv_stream_t *s, uv_buf_t *bufs, unsigned n,
		      hm__router_write_cb cb, void *owner)
{
	struct hm__router_wreq *wr;
	size_t total = 0;
	int r;

	for (unsigned i = 0; i < n; i++)
		total += bufs[i].len;
	if (total == 0)
		return 0;
	r = uv_try_write(s, bufs, n);
	if (r >= 0 && (size_t)r == total)
		return 0;
	if (r < 0 && r != UV_EAGAIN)
		return r;
	if (r > 0) {
		size_t done = (size_t)r;

		while (done >= bufs->len) {
			done -= bufs->len;
			bufs++;
			n--;
		}
		bufs->base += done;
		bufs->len -= done;
	}
	wr = m->free_wreqs;
	if (wr != NULL)
		m->free_wreqs = wr->next;
	else if ((wr = malloc(sizeof(*wr))) == NULL)
		return UV_ENOMEM;
	wr->mem = m;
	wr->cb = cb;
	wr->owner = owner;
	r = uv_write(&wr->req, s, bufs, n, on_write);
	if (r != 0) {
		wr->next = m->free_wreqs;
		m->free_wreqs = wr;
		return r;
	}
	return 1;
}
