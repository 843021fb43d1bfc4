/*
 * The I/O memory of a worker and the one way it writes to a socket.
 *
 * Buffers: bytes are read into a buffer and written to the other side from the same buffer, so
 * a buffer is the unit of memory of a connection. Standard ones (HM__BUF_SIZE) come from and go
 * back to a free list; larger ones, for heads that outgrow 16 KiB, are counted against the
 * worker's --head-budget, so that many slow large heads cannot take the worker's memory.
 *
 * Writes: hm__router_writev() gives the socket what it takes at once (uv_try_write) and queues
 * the rest with uv_write, from write requests kept on a free list: a request whose answer fits
 * the socket buffer costs one system call and no allocation.
 *
 * Everything here runs on the worker's loop thread.
 */
#ifndef HM_ROUTER_IOBUF_H
#define HM_ROUTER_IOBUF_H

#include <stdint.h>
#include <uv.h>

#define HM__BUF_SIZE 16384

/* A byte buffer. */
struct hm__router_buf {
	struct hm__router_buf *next; /* free list */
	uint32_t cap;
	uint32_t pad_;
	char data[];
};

struct hm__router_wreq;

/* A worker's buffers and write requests. */
struct hm__router_iomem {
	struct hm__router_buf *free_bufs;
	uint32_t nfree_bufs;
	uint64_t big_bytes; /* held in buffers larger than HM__BUF_SIZE */
	uint64_t budget;    /* their bound */
	struct hm__router_wreq *free_wreqs;
};

void hm__router_iomem_init(struct hm__router_iomem *m, uint64_t budget);
/* Frees the free lists (buffers and write requests in use are their holders' to give back). */
void hm__router_iomem_fini(struct hm__router_iomem *m);

/* A buffer of at least min bytes: a standard one from the free list, or a larger one counted
 * against the budget. NULL if there is no memory or no budget left. */
struct hm__router_buf *hm__router_buf_get(struct hm__router_iomem *m, uint32_t min);
/* Gives a buffer back (NULL is fine). */
void hm__router_buf_put(struct hm__router_iomem *m, struct hm__router_buf *b);

/*
 * Replaces a full buffer *bp holding len bytes by one twice its size (at most max), with the
 * bytes copied. Returns 0, -ENOBUFS (max reached), -ENOSPC (the budget is spent) or -ENOMEM;
 * *bp is unchanged on error.
 */
int hm__router_buf_grow(struct hm__router_iomem *m, struct hm__router_buf **bp, uint32_t len,
			uint32_t max);

/* Completion of a queued write: status 0 or a libuv error (UV_ECANCELED when the stream closed). */
typedef void (*hm__router_write_cb)(void *owner, int status);

/*
 * Writes bufs (n <= 4: libuv copies that many descriptors without allocating) to s: as much as
 * the socket takes now, the rest queued. The bytes must stay valid until cb runs. Returns 0 (all
 * written: cb is not called), 1 (queued: cb(owner, status) follows) or a negative libuv error
 * (cb is not called). bufs may be modified.
 */
int hm__router_writev(struct hm__router_iomem *m, uv_stream_t *s, uv_buf_t *bufs, unsigned n,
		      hm__router_write_cb cb, void *owner);

#endif
