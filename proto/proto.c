/* Wire protocol encoding and decoding: being written (see proto.h and docs/protocol.md). */
#include "proto/proto.h"

#include <stdlib.h>

void hm_pbuf_reset(struct hm_pbuf *b)
{
	b->len = 0;
}

void hm_pbuf_fini(struct hm_pbuf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
