/*
 * Hand-off from other threads (nng's aio callbacks, the journal and fetch threads) to the libuv
 * loop that owns a syncd's state: a mutex-protected FIFO of small "mail" records and a uv_async_t
 * to wake the loop. Posting never blocks on the loop; the loop takes everything posted so far in
 * one swap and handles it in order.
 */
#ifndef HM_SYNCD_MAILBOX_H
#define HM_SYNCD_MAILBOX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct hm__mail {
	struct hm__mail *next;
	int kind;     /* the owner's event kind */
	int rc;	      /* a result code, already converted (0 or a negative errno / hm code) */
	uint32_t idx; /* e.g. which context */
	uint64_t u64; /* e.g. a pipe id */
	void *ptr;    /* e.g. an nng_msg * (owned by the mail until handled) */
};

struct hm__mailbox {
	uv_async_t async;
	pthread_mutex_t mu;
	struct hm__mail *head, *tail;
	bool closed;
	uint64_t posted;
	/* Loop thread: called once per mail, in order; owns the mail (hm__mail_free it). */
	void (*handle)(void *ctx, struct hm__mail *m);
	void *ctx;
	/* Releases a mail's ptr when the mailbox is closed with mail still in it. */
	void (*discard)(struct hm__mail *m);
};

/* Loop thread. Returns 0 or a libuv error. */
int hm__mailbox_init(struct hm__mailbox *mb, uv_loop_t *loop,
		     void (*handle)(void *ctx, struct hm__mail *m),
		     void (*discard)(struct hm__mail *m), void *ctx);

/* Any thread: posts a copy of the fields given. After close, the mail is discarded at once.
 * Returns false if it could not be posted (closed or out of memory; ptr was discarded). */
bool hm__mailbox_post(struct hm__mailbox *mb, int kind, int rc, uint32_t idx, uint64_t u64,
		      void *ptr);

void hm__mail_free(struct hm__mail *m);

/* Loop thread: stops accepting mail, discards what is queued, closes the async handle (the
 * mailbox must stay allocated until the loop has run its close callbacks). */
void hm__mailbox_close(struct hm__mailbox *mb);
/* After the loop has finished with the handle: frees the mutex. */
void hm__mailbox_fini(struct hm__mailbox *mb);

#endif
