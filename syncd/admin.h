/*
 * The admin socket of every syncd: a Unix stream socket, one request per line, one JSON object
 * per line back (`status`, `lookup HOST`, `dump`, `certs`; errors are {"error": "..."}).
 * Certificates are listed by name, not_after, the leaf's sha256 and SANs: never a key. The role
 * fills in `status` and the head of `dump`; lookups and dumps read the table the role hands out.
 *
 * `dump` never builds its JSON whole: the state is copied into a compact image (consistent at one
 * seq), and the JSON is generated from the image in slices, each written when the previous one
 * has been taken by the socket, so a slow reader holds memory for the image only and never
 * blocks the loop.
 */
#ifndef HM_SYNCD_ADMIN_H
#define HM_SYNCD_ADMIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/certstore.h"
#include "common/table.h"
#include "syncd/jsonw.h"

struct hm__admin_ops {
	/* Writes the status fields (keys and values) into the open object w. */
	void (*status)(void *ctx, struct hm__jsonw *w);
	/* Writes the fields that precede the state in a dump (role, node, epoch, seq, digest). */
	void (*dump_head)(void *ctx, struct hm__jsonw *w);
	/* The table to read, or NULL if there is none yet. Borrowed for the call. */
	const struct hm_table_writer *(*table)(void *ctx);
	/* The certificate store to read (`certs`, `lookup`'s cert, `dump`), or NULL. Borrowed. */
	const struct hm_certstore_writer *(*certs)(void *ctx);
};

struct hm__admin;

/*
 * Creates the socket at path (parent directories created with mode 0755; a stale socket file
 * replaced; a socket some process still listens on is an error), mode 0600, and serves it on
 * loop. A connection that neither sends nor takes anything for idle_ms is closed; answers wait
 * for at most 256 KiB of unsent earlier ones (the connection is not read meanwhile); 64
 * connections at most. ops and ctx are borrowed until hm__admin_stop(). Returns 0 or an error
 * with a reason.
 */
int hm__admin_start(struct hm__admin **out, uv_loop_t *loop, const char *path, uint64_t idle_ms,
		    const struct hm__admin_ops *ops, void *ctx, char *err, size_t errlen);

struct hm__tls_state;

/* Writes the status fields every role has about TLS: tls, tls_not_after (unix seconds or null),
 * tls_reloads, tls_reload_errors. */
void hm__admin_tls_status(struct hm__jsonw *w, const struct hm__tls_state *st);

/* Closes the socket and every connection, removes the socket file. The memory is freed once
 * libuv has closed the handles (run the loop). */
void hm__admin_stop(struct hm__admin *a);

#endif
