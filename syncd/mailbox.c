/*
 * The mailbox. uv_async_send() coalesces wake-ups, so the loop takes the whole queue on each
 * wake-up rather than one mail.
 */
#include "syncd/mailbox.h"

#include <stdlib.h>

#include "common/util.h"

static void on_async(uv_async_t *h)
{
	struct hm__mailbox *mb = h->data;
	struct hm__mail *list, *next;

	pthread_mutex_lock(&mb->mu);
	list = mb->head;
	mb->head = mb->tail = NULL;
	pthread_mutex_unlock(&mb->mu);
	for (; list != NULL; list = next) {
		next = list->next;
		list->next = NULL;
		mb->handle(mb->ctx, list);
	}
}

int hm__mailbox_init(struct hm__mailbox *mb, uv_loop_t *loop,
		     void (*handle)(void *ctx, struct hm__mail *m),
		     void (*discard)(struct hm__mail *m), void *ctx)
{
	int e;

	mb->head = mb->tail = NULL;
	mb->closed = false;
	mb->posted = 0;
	mb->handle = handle;
	mb->discard = discard;
	mb->ctx = ctx;
	pthread_mutex_init(&mb->mu, NULL);
	if ((e = uv_async_init(loop, &mb->async, on_async)) != 0) {
		pthread_mutex_destroy(&mb->mu);
		return e;
	}
	mb->async.data = mb;
	return 0;
}

void hm__mail_free(struct hm__mail *m)
{
	free(m);
}

bool hm__mailbox_post(struct hm__mailbox *mb, int kind, int rc, uint32_t idx, uint64_t u64,
		      void *ptr)
{
	struct hm__mail *m = malloc(sizeof(*m));

	if (m != NULL) {
		m->next = NULL;
		m->kind = kind;
		m->rc = rc;
		m->idx = idx;
		m->u64 = u64;
		m->ptr = ptr;
	}
	pthread_mutex_lock(&mb->mu);
	if (m == NULL || mb->closed) {
		pthread_mutex_unlock(&mb->mu);
		if (m == NULL) {
			struct hm__mail tmp = {
			    .kind = kind, .rc = rc, .idx = idx, .u64 = u64, .ptr = ptr};

			if (mb->discard != NULL)
				mb->discard(&tmp);
			return false;
		}
		if (mb->discard != NULL)
			mb->discard(m);
		free(m);
		return false;
	}
	if (mb->tail != NULL)
		mb->tail->next = m;
	else
		mb->head = m;
	mb->tail = m;
	mb->posted++;
	/* Under the mutex, so that it can never follow hm__mailbox_close()'s uv_close(). */
	uv_async_send(&mb->async);
	pthread_mutex_unlock(&mb->mu);
	return true;
}

void hm__mailbox_close(struct hm__mailbox *mb)
{
	struct hm__mail *list, *next;

	pthread_mutex_lock(&mb->mu);
	mb->closed = true;
	list = mb->head;
	mb->head = mb->tail = NULL;
	pthread_mutex_unlock(&mb->mu);
	for (; list != NULL; list = next) {
		next = list->next;
		if (mb->discard != NULL)
			mb->discard(list);
		free(list);
	}
	uv_close((uv_handle_t *)&mb->async, NULL);
}

void hm__mailbox_fini(struct hm__mailbox *mb)
{
	pthread_mutex_destroy(&mb->mu);
}
