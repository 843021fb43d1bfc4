/*
 * Size bounds for msgpack: a change is an array (1-byte header, up to 5 elements) of an op
 * (positive fixint), strings (at most 3 bytes of header each), booleans and small integers
 * (1 byte each, 2 for a uint8 over 127). An address is sent as text, at most
 * HM_ADDR_STR_MAX bytes; a secret's value as bin (3 bytes of header at most); a certificate's
 * PEM, id and metadata as below.
 */
#include "syncd/wire.h"

#include "proto/proto.h"

size_t hm__wire_change_size(const struct hm_change *c)
{
	size_t n = 16 + 3 + (size_t)c->app_len + 3 + (size_t)c->name_len + 3 + HM_ADDR_STR_MAX + 3 +
		   (size_t)c->value_len;

	if (c->op != HM_OP_CERT_PUT)
		return n;
	/* Two str 32 headers, an int64, a bin 8 of the id, a bin 32 header of the metadata. */
	n += (size_t)c->cert_len + c->key_len + c->meta_len + 5 + 5 + 9 + 2 + HM_CERT_ID_LEN + 5;
	if (c->id == NULL)
		/* A client's record, whose canonical form the origin makes: the chain re-encoded
		 * (lines of 64), the key as PKCS#8, and metadata whose SANs are inside the chain.
		 */
		n += (size_t)c->cert_len + c->key_len + 512;
	return n;
}

void hm__split_init(struct hm__splitter *s, size_t limit_bytes, uint32_t limit_changes)
{
	s->limit_bytes = limit_bytes;
	s->limit_changes = limit_changes;
	s->bytes = 0;
	s->n = 0;
	s->nparts = 0;
}

bool hm__split_add(struct hm__splitter *s, size_t bytes)
{
	bool start =
	    s->nparts == 0 || s->n >= s->limit_changes || s->bytes + bytes > s->limit_bytes;

	if (start) {
		s->nparts++;
		s->n = 0;
		s->bytes = 0;
	}
	s->n++;
	s->bytes += bytes;
	return start;
}
