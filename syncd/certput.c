/*
 * The canonical cert.put record. The metadata is written and read by hand (a fixed, tiny
 * msgpack shape) so that reading it back is total over any bytes: a record's metadata came
 * through the sync channel and is printed by the admin socket.
 */
#include "syncd/certput.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"

static size_t meta_size(const struct hm_certcheck *k)
{
	size_t n = 1 + 2 + 32 + 3;

	for (size_t i = 0; i < k->n_sans; i++)
		n += 3 + strlen(k->sans[i]);
	return n;
}

static uint8_t *put_str(uint8_t *p, const char *s, size_t n)
{
	if (n < 32) {
		*p++ = (uint8_t)(0xa0 | n);
	} else if (n < 256) {
		*p++ = 0xd9;
		*p++ = (uint8_t)n;
	} else {
		*p++ = 0xda;
		*p++ = (uint8_t)(n >> 8);
		*p++ = (uint8_t)n;
	}
	memcpy(p, s, n);
	return p + n;
}

int hm__certput_make(struct hm__certput *cp, const struct hm_change *c, int64_t now)
{
	const struct hm_certcheck *k = &cp->chk;
	size_t nsans;
	uint8_t *p;
	int e;

	memset(cp, 0, sizeof(*cp));
	if ((e = hm_certcheck_run(&cp->chk, c->name, c->name_len, c->cert, c->cert_len, c->key,
				  c->key_len, now)) != 0)
		return e;
	if (k->cert_len > HM_CERT_CHAIN_MAX || k->key_len > HM_CERT_KEY_MAX)
		return -EINVAL; /* certcheck's bounds are these; a canonical form never grows past
				 */
	nsans = k->n_sans > 0xffff ? 0xffff : k->n_sans;
	if ((cp->meta = malloc(meta_size(k))) == NULL)
		return -ENOMEM;
	p = cp->meta;
	*p++ = 0x92;
	*p++ = 0xc4;
	*p++ = 32;
	memcpy(p, k->leaf_sha256, 32);
	p += 32;
	*p++ = 0xdc;
	*p++ = (uint8_t)(nsans >> 8);
	*p++ = (uint8_t)nsans;
	for (size_t i = 0; i < nsans; i++)
		p = put_str(p, k->sans[i],
			    strlen(k->sans[i]) > 0xffff ? 0xffff : strlen(k->sans[i]));
	cp->meta_len = (size_t)(p - cp->meta);
	if (cp->meta_len > HM_CERT_META_MAX)
		return -EINVAL;
	cp->c = (struct hm_change){.op = HM_OP_CERT_PUT,
				   .name = c->name,
				   .name_len = c->name_len,
				   .cert = k->cert,
				   .cert_len = (uint32_t)k->cert_len,
				   .key = k->key,
				   .key_len = (uint32_t)k->key_len,
				   .meta = cp->meta,
				   .meta_len = (uint32_t)cp->meta_len,
				   .id = k->id,
				   .not_after = k->not_after};
	return 0;
}

void hm__certput_fini(struct hm__certput *cp)
{
	hm_certcheck_fini(&cp->chk);
	free(cp->meta);
	memset(cp, 0, sizeof(*cp));
}

/* Reads a msgpack length header: a str (fixstr, str 8, str 16) or an array (fixarray,
 * array 16); -1 if it is not one. */
static long rd_len(const uint8_t **p, const uint8_t *end, bool str)
{
	uint8_t m;
	long v;

	if (*p >= end)
		return -1;
	m = *(*p)++;
	if (str && m >= 0xa0 && m <= 0xbf)
		return m & 0x1f;
	if (!str && m >= 0x90 && m <= 0x9f)
		return m & 0x0f;
	if (str && m == 0xd9)
		return *p < end ? *(*p)++ : -1;
	if (m != (str ? 0xda : 0xdc) || end - *p < 2)
		return -1;
	v = (long)(*p)[0] << 8 | (*p)[1];
	*p += 2;
	return v;
}

int hm__certmeta_read(const uint8_t *meta, size_t n, uint8_t sha256[32],
		      void (*san)(void *ctx, const char *s, size_t n), void *ctx)
{
	const uint8_t *p = meta, *end = meta + n;
	long count;

	if (n < 35 + 1 || p[0] != 0x92 || p[1] != 0xc4 || p[2] != 32)
		return HM_ECORRUPT;
	memcpy(sha256, p + 3, 32);
	p += 35;
	if ((count = rd_len(&p, end, false)) < 0)
		return HM_ECORRUPT;
	for (long i = 0; i < count; i++) {
		long len = rd_len(&p, end, true);

		if (len < 0 || len > end - p)
			return HM_ECORRUPT;
		if (san != NULL)
			san(ctx, (const char *)p, (size_t)len);
		p += len;
	}
	return p == end ? 0 : HM_ECORRUPT;
}
