/*
 * A control client's cert.put made into the record the origin journals and every edge stores
 * (docs/tls.md, section 1): the checks of syncd/certcheck, then the canonical chain and key, the
 * entry id, not_after, and the metadata the admin `certs` command lists (the leaf's SHA-256 and
 * DNS SANs, msgpack [bin32, [str...]]). Also reads that metadata back.
 */
#ifndef HM_SYNCD_CERTPUT_H
#define HM_SYNCD_CERTPUT_H

#include <stddef.h>
#include <stdint.h>

#include "common/model.h"
#include "syncd/certcheck.h"

struct hm__certput {
	struct hm_certcheck chk; /* chk.text: the reason (refused) or the warnings */
	uint8_t *meta;		 /* owned */
	size_t meta_len;
	struct hm_change c; /* the canonical record; borrows chk (c.id points into it: cp must not
			       move), meta and the name */
};

/*
 * Checks the cert.put c (name, cert, key; borrowed: the name must outlive cp) at Unix time now.
 * Returns 0 (cp->c is the canonical record; cp->chk.warnings/text may say more), -EINVAL (refused:
 * cp->chk.text says why, in one line that never holds key material), or -ENOMEM. Call
 * hm__certput_fini() in every case.
 */
int hm__certput_make(struct hm__certput *cp, const struct hm_change *c, int64_t now);
void hm__certput_fini(struct hm__certput *cp);

/*
 * Reads a record's metadata: the leaf's SHA-256 into sha256, and calls san() for each DNS SAN
 * (bytes borrowed from meta, unchecked: escape to print). Returns 0 or HM_ECORRUPT.
 */
int hm__certmeta_read(const uint8_t *meta, size_t n, uint8_t sha256[32],
		      void (*san)(void *ctx, const char *s, size_t n), void *ctx);

#endif
