/*
 * A TLS 1.3 server for the handshake that dominates a busy edge's new connections: a returning
 * client resuming with a ticket (pre-shared key with an X25519 key exchange, RFC 8446 2.2).
 * libssl 3.0 spends ~2x the arithmetic on its machinery around such a handshake (provider
 * fetches, name-map walks, session (de)serialisation: docs/tls13-fast-path.md); this does the
 * same handshake with libcrypto's primitives fetched once per worker.
 *
 * It is a *fast path* beside libssl, not a TLS stack: the TLS engine (tls.c) shows it each
 * complete ClientHello first, and it takes the connection only when the hello is squarely in its
 * scope (TLS 1.3, TLS_AES_128_GCM_SHA256 offered, an X25519 key share, psk_dhe_ke, a ticket that
 * decrypts under the cluster's keys and whose binder verifies, no early data, no cookie). Every
 * other hello, and every malformed one, goes to libssl unchanged, which answers it (including
 * with the right alert). Once taken, the connection's records are this module's for life: libssl
 * 3.0 cannot adopt a connection whose handshake it did not do.
 *
 * Tickets: it resumes libssl's (key name, IV, AES-256-CBC of the DER session, HMAC-SHA256, under
 * the origin-distributed keys) and issues its own (a name and an AES-256-GCM key derived from
 * the same keys, a key of its own per ticket; the session in 45 bytes), which libssl does not know:
 * a client that brings one where the fast path declines gets a full handshake.
 *
 *   per worker:      hm_tls13_ctx_new() ... hm_tls13_ctx_set_keys() on every key change ... _free()
 *   per connection:  hm_tls13_parse_hello() -> hm_tls13_accept() -> hm_tls13_open() on each
 *                    record, hm_tls13_seal() for output -> hm_tls13_free()
 *
 * Threads: a context and its connections belong to one thread. No function blocks.
 */
#ifndef HM_ROUTER_TLS13_H
#define HM_ROUTER_TLS13_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/certstore.h"

#define HM_TLS13_REC_HDR    5
#define HM_TLS13_PLAIN_MAX  16384			/* plaintext per record */
#define HM_TLS13_REC_MAX    (HM_TLS13_PLAIN_MAX + 256)	/* a record's body, at most */
#define HM_TLS13_SEAL_OVER  (HM_TLS13_REC_HDR + 1 + 16) /* what sealing adds */
#define HM_TLS13_FLIGHT_MAX 512				/* the server's first flight, at most */

/* Content types (RFC 8446 5.1). */
enum {
	HM_TLS13_CCS = 20,
	HM_TLS13_ALERT = 21,
	HM_TLS13_HANDSHAKE = 22,
	HM_TLS13_DATA = 23,
};

/* Alert descriptions this module sends (RFC 8446 6). */
enum {
	HM_TLS13_A_CLOSE_NOTIFY = 0,
	HM_TLS13_A_UNEXPECTED_MESSAGE = 10,
	HM_TLS13_A_BAD_RECORD_MAC = 20,
	HM_TLS13_A_RECORD_OVERFLOW = 22,
	HM_TLS13_A_ILLEGAL_PARAMETER = 47,
	HM_TLS13_A_DECODE_ERROR = 50,
	HM_TLS13_A_DECRYPT_ERROR = 51,
	HM_TLS13_A_INTERNAL_ERROR = 80,
	HM_TLS13_A_USER_CANCELED = 90,
};

/* What a ClientHello offers, as far as the fast path cares; pointers into the message. */
struct hm_tls13_hello {
	const uint8_t *msg; /* the handshake message, its 4-byte header included */
	size_t len;
	const uint8_t *sid; /* legacy_session_id, echoed */
	uint8_t sid_len;
	const uint8_t *share; /* the client's X25519 public key (32 bytes) */
	const uint8_t *sni;   /* the first host_name, as sent (NULL: none) */
	size_t sni_len;
	const uint8_t *alpn; /* protocol_name_list's contents (NULL: no ALPN) */
	size_t alpn_len;
	const uint8_t *ident; /* the first PSK identity (a ticket) */
	size_t ident_len;
	const uint8_t *binder; /* its binder */
	size_t binder_len;
	size_t truncated; /* bytes of msg the binders hash over (RFC 8446 4.2.11.2) */
};

struct hm_tls13_ctx;
struct hm_tls13;

/* A worker's context: its fetched algorithms. lifetime_s: tickets' lifetime (at most 7 days);
 * tickets: issue one after each handshake (false: none, as num_tickets 0 tells libssl). */
int hm_tls13_ctx_new(struct hm_tls13_ctx **out, unsigned lifetime_s, bool tickets);
void hm_tls13_ctx_free(struct hm_tls13_ctx *x);

/* The cluster's ticket keys, current first (copied; derived keys made here). */
void hm_tls13_ctx_set_keys(struct hm_tls13_ctx *x, const struct hm_ticket_key *keys, int n);

/*
 * Reads a ClientHello handshake message (msg, len: header included) with the strictness of a
 * bounded decoder: every length within its container, no extension twice, pre_shared_key last.
 * Returns true when it is in the fast path's scope (h filled), false otherwise: out of scope or
 * malformed alike, for libssl to answer.
 */
bool hm_tls13_parse_hello(const uint8_t *msg, size_t len, struct hm_tls13_hello *h);

/* hm_tls13_accept()'s choices and results. */
struct hm_tls13_accept {
	const uint8_t *alpn_pref; /* our protocols, ALPN wire format, in preference order */
	size_t alpn_pref_len;
	const uint8_t *alpn; /* out: the protocol agreed, inside alpn_pref (NULL: no ALPN) */
	uint8_t alpn_len;
	bool old_key; /* out: the ticket was under a previous key (the new one is not) */
};

/*
 * Takes the connection of a parsed hello if its ticket is good: decrypts it, checks its age and
 * the binder, agrees on ALPN, and writes
 * the server's flight (ServerHello, a middlebox-compatibility change_cipher_spec if the client
 * sent a session id, EncryptedExtensions and Finished) into out (room: HM_TLS13_FLIGHT_MAX).
 * Returns 1 (taken: *cp and *out_len set), 0 (not taken: nothing written, hand the hello to
 * libssl) or -ENOMEM.
 */
int hm_tls13_accept(struct hm_tls13_ctx *x, const struct hm_tls13_hello *h,
		    struct hm_tls13_accept *a, struct hm_tls13 **cp, uint8_t *out, size_t *out_len);

void hm_tls13_free(struct hm_tls13 *c);

/* hm_tls13_open() results beside content types (> 0). */
#define HM_TLS13_NOTHING 0 /* the record was the handshake's or a KeyUpdate: nothing to deliver */

/*
 * Opens one complete record (rec: header included, len bytes; at most HM_TLS13_REC_HDR +
 * HM_TLS13_REC_MAX) into dst (room: len - HM_TLS13_REC_HDR; dst may be rec + HM_TLS13_REC_HDR).
 * Returns HM_TLS13_DATA with *plain_len bytes of application data at dst, HM_TLS13_NOTHING (a
 * change_cipher_spec before the client's Finished, the Finished itself, a KeyUpdate: see
 * hm_tls13_pending()), HM_TLS13_ALERT with the alert's two bytes at dst (close_notify: the peer is
 * done), or -alert: the connection failed, send that alert (hm_tls13_alert()) and close.
 */
int hm_tls13_open(struct hm_tls13 *c, const uint8_t *rec, size_t len, uint8_t *dst,
		  size_t *plain_len);

/* Whether the client's Finished has been verified (application data may flow both ways). */
bool hm_tls13_established(const struct hm_tls13 *c);

/*
 * Bytes this side owes the peer that no caller asked for: a KeyUpdate (the client asked, or 2^24
 * records went out under our key), the NewSessionTicket after the client's Finished. Writes what
 * fits in cap into out (the KeyUpdate first; HM_TLS13_FLIGHT_MAX always holds both) and returns
 * how many bytes (0: nothing owed, or nothing fits), or -EPROTO.
 */
int hm_tls13_pending(struct hm_tls13 *c, uint8_t *out, size_t cap);

/* Whether a KeyUpdate is still owed: no application data may be sealed before it. */
bool hm_tls13_update_owed(const struct hm_tls13 *c);

/* Seals n <= HM_TLS13_PLAIN_MAX bytes of type into out (room: n + HM_TLS13_SEAL_OVER).
 * Returns the record's length, or -EPROTO. */
int hm_tls13_seal(struct hm_tls13 *c, uint8_t type, const void *plain, size_t n, uint8_t *out);

/* An alert record (level fatal unless close_notify) into out (room: HM_TLS13_SEAL_OVER + 2). */
int hm_tls13_alert(struct hm_tls13 *c, uint8_t desc, uint8_t *out);

/* The one cipher suite's name, as libssl names it. */
const char *hm_tls13_cipher_name(void);

#endif
