/*
 * An asynchronous etcd v3 client for the origin's libuv loop, over etcd's JSON gateway
 * (/v3/kv/range, put, txn, deleterange, compaction; /v3/watch; /v3/lease/grant, keepalive, revoke;
 * /v3/maintenance/status, defragment, alarm). Keys and values are bytes; the client does the base64
 * (common/base64.h). docs/store-etcd.md says what the origin builds on it.
 *
 * Why libcurl (its multi-socket interface driven by the caller's loop: one uv_poll_t per socket,
 * one uv_timer_t) and not a small HTTP client on libuv + llhttp: TLS with a CA and a client
 * certificate, certificate verification, connection reuse and chunked streams are what libcurl
 * does every day; on libuv + llhttp they would need a TLS layer of our own under the loop. The
 * cost is one Debian package and a few allocations per request, which is fine: the client is
 * on the control path, never on the router's.
 *
 * Endpoints and failover. The client sends every request to its current endpoint and moves to
 * the next one when a request fails for a reason that says nothing about etcd's data:
 *  - a request that never reached a member (connect refused or timed out, TLS failure) is sent
 *    again to the next endpoint at once, as long as its deadline allows;
 *  - a read (range, status, lease keep-alive) that failed after it was sent, or that a member
 *    answered "unavailable" (no leader), is retried the same way;
 *  - a write (put, delete, txn, compaction, lease grant and revoke, defragment) that failed after
 *    it was sent is NOT retried: its outcome is unknown, and only the caller knows how to find
 *    out (docs/store-etcd.md: a CAS txn is sent again and its compare tells). The endpoint moves
 *    all the same, so the caller's retry goes elsewhere. So a write that ends in -ETIMEDOUT,
 *    -ECONNRESET, -EAGAIN (etcd's "request timed out", "leader changed") or HM_EETCD may have
 *    been applied; one that ends in any other code was not. (Disarming an alarm is a write too.)
 * After every endpoint has failed once, attempts wait 100 ms, doubling to 2 s. Requests to one
 * given member (status, defragment) never move.
 *
 * Errors are converted once, here: libcurl's transport codes (-ECONNREFUSED, -ETIMEDOUT,
 * -ECONNRESET, HM_EETCDTLS, -EHOSTUNREACH) and etcd's gRPC codes: a compacted revision is
 * HM_ECOMPACTED; "too many operations" and "request is too large" HM_ETOOBIG; the db quota
 * -ENOSPC; "lease not found" -ENOENT; unavailable / no leader / leader changed -EAGAIN; deadline
 * -ETIMEDOUT; auth -EACCES / -EPERM; a bad argument -EINVAL; anything else HM_EETCD. etcd's own
 * message is passed to the callback for the log.
 *
 * Threads: everything here runs on the loop given to hm__etcd_new(), and every callback is
 * called on it. A function that returns an error never calls its callback; one that returns 0
 * calls it exactly once (with -ECANCELED if the client is closed first). Results passed to a
 * callback are borrowed for the call.
 */
#ifndef HM_SYNCD_ETCD_H
#define HM_SYNCD_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct hm__etcd_cfg {
	const char *endpoints; /* "http://h1:2379,https://h2:2379" (copied) */
	const char *ca;	       /* PEM file of CAs for https endpoints; NULL: the system's */
	const char *cert;      /* PEM file with a client certificate chain and its key; or NULL */
	uint64_t timeout_ms;   /* one request's deadline, every attempt included (0: 5000) */
	uint64_t connect_timeout_ms; /* one attempt's connect (0: 1000) */
	size_t max_response; /* bytes of one response, or of one watch message (0: 256 MiB) */
};

/* The header of every response. */
struct hm__etcd_header {
	uint64_t cluster_id, member_id;
	int64_t revision, raft_term;
};

/* One key-value (borrowed: valid during the callback). */
struct hm__etcd_kv {
	const uint8_t *key, *value;
	size_t key_len, value_len;
	int64_t create_revision, mod_revision, version, lease;
};

enum hm__etcd_op_kind { HM__ETCD_RANGE = 1, HM__ETCD_PUT = 2, HM__ETCD_DELETE = 3 };

/* A range, put or delete inside a txn (all pointers borrowed for the call that takes it). */
struct hm__etcd_op {
	enum hm__etcd_op_kind kind;
	const void *key, *range_end; /* range_end NULL: the key alone */
	size_t key_len, range_end_len;
	const void *value; /* put */
	size_t value_len;
	int64_t lease; /* put: 0 for none */
	int64_t limit; /* range: 0 for none */
	bool keys_only;
};

enum hm__etcd_target {
	HM__ETCD_VERSION,
	HM__ETCD_CREATE, /* create_revision */
	HM__ETCD_MOD,	 /* mod_revision */
	HM__ETCD_VALUE,
	HM__ETCD_LEASE,
};

enum hm__etcd_cmp_result { HM__ETCD_EQUAL, HM__ETCD_GREATER, HM__ETCD_LESS, HM__ETCD_NOT_EQUAL };

/* A compare of a txn: target(key) result number (or value). A missing key has version,
 * create_revision and mod_revision 0. */
struct hm__etcd_cmp {
	const void *key;
	size_t key_len;
	enum hm__etcd_target target;
	enum hm__etcd_cmp_result result;
	int64_t number; /* VERSION, CREATE, MOD, LEASE */
	const void *value;
	size_t value_len; /* VALUE */
};

struct hm__etcd_txn {
	const struct hm__etcd_cmp *cmp;
	const struct hm__etcd_op *success, *failure;
	size_t ncmp, nsuccess, nfailure;
};

/* What one op of a txn (or a plain range or delete) returned. */
struct hm__etcd_op_result {
	enum hm__etcd_op_kind kind;
	struct hm__etcd_kv *kvs; /* range */
	size_t nkvs;
	int64_t count; /* range: keys in the range (more than nkvs if limited) */
	bool more;     /* range: limited, more keys follow */
	int64_t deleted;
};

struct hm__etcd_result {
	struct hm__etcd_header header;
	struct hm__etcd_op_result op; /* range, put, delete */
	bool succeeded;		      /* txn: the compares held */
	struct hm__etcd_op_result *responses;
	size_t nresponses;		 /* txn: one per op of the branch taken */
	int64_t lease_id, ttl;		 /* lease grant, keep-alive (ttl 0: expired) */
	int64_t db_size, db_size_in_use; /* status */
	uint64_t leader;		 /* status */
	int64_t raft_index;		 /* status */
	bool nospace;			 /* status: some member has raised the NOSPACE alarm */
	struct hm__etcd_alarm *alarms;	 /* alarm: the alarms raised (GET), or disarmed */
	size_t nalarms;
	char version[32];    /* status: etcd's version */
	const char *message; /* on error: etcd's or libcurl's words, or "" */
	uint32_t endpoint;   /* which endpoint answered (or failed last) */
};

/* err is 0 or as the file comment says; r is never NULL (on error only message and endpoint
 * mean anything). */
typedef void (*hm__etcd_cb)(void *arg, int err, const struct hm__etcd_result *r);

struct hm__etcd;

/*
 * Loop thread. Checks cfg (endpoint URLs must be http:// or https://, files must exist) and
 * makes a client; connections are made by the first requests. Returns 0, -EINVAL with a reason
 * in err, or -ENOMEM.
 */
int hm__etcd_new(struct hm__etcd **out, uv_loop_t *loop, const struct hm__etcd_cfg *cfg, char *err,
		 size_t errlen);

/*
 * Loop thread. Every pending request's callback is called with -ECANCELED before this returns
 * (requests started from those callbacks fail with -ECANCELED); every watch must have been
 * stopped. The memory is released once the loop has closed the client's handles. May be called
 * from a callback.
 */
void hm__etcd_close(struct hm__etcd *c);

uint32_t hm__etcd_nendpoints(const struct hm__etcd *c);
const char *hm__etcd_endpoint(const struct hm__etcd *c, uint32_t i);
/* The endpoint the next request goes to. */
uint32_t hm__etcd_current(const struct hm__etcd *c);

/*
 * Requests. Each returns 0 (cb will be called once) or -ECANCELED (closed), -ENOMEM, HM_ETOOBIG
 * (the request would exceed what the client sends: 64 MiB). Keys, values and option structs are
 * copied or encoded before the call returns.
 */
struct hm__etcd_range_opts {
	const void *range_end; /* NULL: the key alone; "\0" (1 byte): every key >= key */
	size_t range_end_len;
	int64_t revision; /* 0: the latest */
	int64_t limit;	  /* 0: no limit */
	bool keys_only, count_only;
	bool serializable; /* answered by the member alone, maybe stale */
};

/* The range_end of every key under the n-byte prefix key (key's last byte plus one, which must
 * not be 0xff), written into end (n bytes); returns n. */
size_t hm__etcd_prefix_end(const void *key, size_t n, void *end);

/* r->op: kvs, count, more. */
int hm__etcd_range(struct hm__etcd *c, const void *key, size_t key_len,
		   const struct hm__etcd_range_opts *o, hm__etcd_cb cb, void *arg);
int hm__etcd_put(struct hm__etcd *c, const void *key, size_t key_len, const void *value,
		 size_t value_len, int64_t lease, hm__etcd_cb cb, void *arg);
/* r->op.deleted. range_end as for range. */
int hm__etcd_delete(struct hm__etcd *c, const void *key, size_t key_len, const void *range_end,
		    size_t range_end_len, hm__etcd_cb cb, void *arg);
/* r->succeeded and r->responses (the branch taken). */
int hm__etcd_txn(struct hm__etcd *c, const struct hm__etcd_txn *t, hm__etcd_cb cb, void *arg);
/* Forgets every revision before rev (HM_ECOMPACTED if rev is already compacted). */
int hm__etcd_compact(struct hm__etcd *c, int64_t rev, bool physical, hm__etcd_cb cb, void *arg);
/* One member's status and defragmentation (endpoint < hm__etcd_nendpoints; never moves). */
int hm__etcd_status(struct hm__etcd *c, uint32_t endpoint, hm__etcd_cb cb, void *arg);
int hm__etcd_defragment(struct hm__etcd *c, uint32_t endpoint, hm__etcd_cb cb, void *arg);

enum hm__etcd_alarm_type {
	HM__ETCD_ALARM_NONE = 0,
	HM__ETCD_ALARM_NOSPACE = 1,
	HM__ETCD_ALARM_CORRUPT = 2
};

/* One alarm: which member raised it, and what. */
struct hm__etcd_alarm {
	uint64_t member_id;
	enum hm__etcd_alarm_type type;
};

/* The cluster's alarms (r->alarms: every one raised). Through Raft, so also while NOSPACE. */
int hm__etcd_alarm_list(struct hm__etcd *c, hm__etcd_cb cb, void *arg);
/* Disarms one member's alarm (r->alarms: what was disarmed; none if it was not raised). A
 * write: after -ETIMEDOUT and the like, list again to know. etcd raises NOSPACE again at the
 * next write that does not fit its quota. */
int hm__etcd_alarm_disarm(struct hm__etcd *c, uint64_t member_id, enum hm__etcd_alarm_type type,
			  hm__etcd_cb cb, void *arg);
/* r->lease_id, r->ttl. */
int hm__etcd_lease_grant(struct hm__etcd *c, int64_t ttl_s, hm__etcd_cb cb, void *arg);
/* One keep-alive: r->ttl is the lease's new TTL, 0 if it has expired. */
int hm__etcd_lease_keepalive(struct hm__etcd *c, int64_t id, hm__etcd_cb cb, void *arg);
int hm__etcd_lease_revoke(struct hm__etcd *c, int64_t id, hm__etcd_cb cb, void *arg);

/* ---- Watch ----------------------------------------------------------------------------------- */

enum hm__etcd_event_type { HM__ETCD_EV_PUT = 0, HM__ETCD_EV_DELETE = 1 };

struct hm__etcd_event {
	enum hm__etcd_event_type type;
	struct hm__etcd_kv kv; /* DELETE: key and mod_revision only */
};

/*
 * Events of one watch response, in revision order (the events of one revision always arrive
 * together), err 0. A broken stream is resumed by the client, from the revision after the last
 * event delivered, on the next endpoint. err non-zero is final and no callback follows:
 * HM_ECOMPACTED (compact_rev: the oldest revision still held; watch again from there after
 * reading the current state) or an error etcd gave when the watch was created.
 */
typedef void (*hm__etcd_watch_cb)(void *arg, int err, const struct hm__etcd_header *h,
				  const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev);

struct hm__etcd_watch;

/*
 * Watches [key, range_end) (range_end as for range) from start_rev (0: from now). Every watch
 * asks for a member with a leader ("require leader"): a member that loses its quorum ends the
 * stream and the watch moves on. Returns 0, -ECANCELED or -ENOMEM.
 */
int hm__etcd_watch_start(struct hm__etcd_watch **out, struct hm__etcd *c, const void *key,
			 size_t key_len, const void *range_end, size_t range_end_len,
			 int64_t start_rev, hm__etcd_watch_cb cb, void *arg);
/* Stops and frees the watch: no callback after this returns. Also after a final error. */
void hm__etcd_watch_stop(struct hm__etcd_watch *w);
/* How many times the stream was resumed (broken streams, moved endpoints). */
uint64_t hm__etcd_watch_resumes(const struct hm__etcd_watch *w);

/* ---- Exposed for unit tests ------------------------------------------------------------------ */

/* An etcd gateway error (gRPC code and message) as a hermod error code. */
int hm__etcd_grpc_err(int code, const char *message);

#endif
