/*
 * The etcd client: libcurl's multi-socket interface on a libuv loop, JSON in and out.
 *
 * A request is one POST to the gateway, built as JSON into a buffer (keys and values base64) and
 * kept until the request ends, so that a failed attempt can be sent again to another endpoint
 * (etcd.h says which failures move and which are final). libcurl tells us which sockets to watch
 * (one uv_poll_t each) and when to wake it (one uv_timer_t); we call it back, then collect what
 * finished. Callbacks into the caller are made only from that collection step, from the retry
 * timer and from close, never from inside a libcurl callback, so a callback may start or stop
 * anything. A watch is a request whose response never ends: its bytes are cut into lines (one
 * JSON message each) and handled after libcurl returns; when the stream breaks, the same request
 * is sent again from the revision after the last event delivered.
 *
 * libcurl itself sends a request again, on a new connection, when a reused connection dies before
 * any byte of the answer (a member that applied a txn and died, or a lost answer): for a write
 * that would be a resend the caller never hears of. So a write's body is given through a read
 * callback that cannot be rewound once read: libcurl's own resend then fails
 * (CURLE_SEND_FAIL_REWIND) and the write ends with its outcome unknown, as etcd.h promises.
 */
#include "syncd/etcd.h"

#include <cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/base64.h"
#include "common/errors.h"
#include "common/util.h"
#include "syncd/buf.h"

#define DEFAULT_TIMEOUT_MS	   5000
#define DEFAULT_CONNECT_TIMEOUT_MS 1000
#define DEFAULT_MAX_RESPONSE	   (256u << 20)
#define MAX_REQUEST		   (64u << 20)
#define BACKOFF_FIRST_MS	   100
#define BACKOFF_MAX_MS		   2000

enum req_kind {
	RQ_RANGE,
	RQ_PUT,
	RQ_DELETE,
	RQ_TXN,
	RQ_COMPACT,
	RQ_STATUS,
	RQ_DEFRAG,
	RQ_GRANT,
	RQ_KEEPALIVE,
	RQ_REVOKE,
	RQ_WATCH,
	RQ_ALARM_GET,
	RQ_ALARM_DISARM,
};

static const struct {
	const char *path;
	bool write; /* not retried once sent */
} kinds[] = {
    [RQ_RANGE] = {"/v3/kv/range", false},
    [RQ_PUT] = {"/v3/kv/put", true},
    [RQ_DELETE] = {"/v3/kv/deleterange", true},
    [RQ_TXN] = {"/v3/kv/txn", true},
    [RQ_COMPACT] = {"/v3/kv/compaction", true},
    [RQ_STATUS] = {"/v3/maintenance/status", false},
    [RQ_DEFRAG] = {"/v3/maintenance/defragment", true},
    [RQ_GRANT] = {"/v3/lease/grant", true},
    [RQ_KEEPALIVE] = {"/v3/lease/keepalive", false},
    [RQ_REVOKE] = {"/v3/lease/revoke", true},
    [RQ_WATCH] = {"/v3/watch", false},
    [RQ_ALARM_GET] = {"/v3/maintenance/alarm", false},
    [RQ_ALARM_DISARM] = {"/v3/maintenance/alarm", true},
};

struct sock {
	uv_poll_t h;
	curl_socket_t fd;
	struct hm__etcd *c;
	struct sock *next, *prev;
};

struct req {
	struct req *next, *prev; /* c->reqs: every live request, in flight or parked */
	struct hm__etcd *c;
	enum req_kind kind;
	CURL *easy;
	struct hm__buf body; /* owned: the JSON sent */
	size_t body_read;    /* a write: how much of body libcurl has read in this attempt */
	struct hm__buf resp; /* owned: what came back (a watch: the unparsed tail) */
	uint32_t ep;	     /* endpoint of the current attempt */
	uint32_t fails;	     /* failed attempts in a row */
	bool pinned;	     /* one member only */
	bool in_multi, parked, too_big;
	uint64_t deadline; /* mono ms; 0 for a watch */
	uint64_t due;	   /* parked: when to try again */
	char errbuf[CURL_ERROR_SIZE];
	hm__etcd_cb cb;
	void *arg;
	struct hm__etcd_watch *w; /* RQ_WATCH */
};

struct hm__etcd_watch {
	struct hm__etcd *c;
	struct req *r;	 /* the stream (owned); NULL once the watch has ended */
	char *key, *end; /* base64, owned; end may be NULL */
	int64_t next_rev;
	hm__etcd_watch_cb cb;
	void *arg;
	uint64_t resumes;
	bool dirty;   /* bytes wait in r->resp */
	bool in_cb;   /* a callback is running: stop() defers the free */
	bool stopped; /* stop() was called */
	struct hm__etcd_watch *next_dirty;
};

struct hm__etcd {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer; /* libcurl's */
	uv_timer_t retry; /* parked requests */
	char **eps;
	uint32_t neps, cur;
	char *ca, *cert;
	uint64_t timeout_ms, connect_timeout_ms;
	size_t max_response;
	struct curl_slist *headers;
	struct req *reqs;
	struct sock *socks;
	struct hm__etcd_watch *dirty;
	uint32_t nwatches;
	int dispatching; /* > 0 while callbacks into the caller may run */
	bool closed, cleaned;
	int handles; /* open libuv handles; the struct is freed when the last one closes */
};

/* ---- Error conversion ------------------------------------------------------------------------ */

int hm__etcd_grpc_err(int code, const char *message)
{
	const char *m = message != NULL ? message : "";

	switch (code) {
	case 1: /* CANCELED */
		return -ECANCELED;
	case 3: /* INVALID_ARGUMENT */
		if (strstr(m, "too many operations") != NULL || strstr(m, "too large") != NULL)
			return HM_ETOOBIG;
		return -EINVAL;
	case 4: /* DEADLINE_EXCEEDED */
		return -ETIMEDOUT;
	case 5: /* NOT_FOUND: a lease */
		return -ENOENT;
	case 7: /* PERMISSION_DENIED */
		return -EPERM;
	case 8: /* RESOURCE_EXHAUSTED */
		if (strstr(m, "space exceeded") != NULL)
			return -ENOSPC;
		if (strstr(m, "larger than max") != NULL)
			return HM_ETOOBIG;
		return -EAGAIN; /* too many requests */
	case 11:		/* OUT_OF_RANGE */
		if (strstr(m, "compacted") != NULL)
			return HM_ECOMPACTED;
		return -EINVAL; /* e.g. a future revision */
	case 14:		/* UNAVAILABLE: no leader, leader changed, timed out */
		return -EAGAIN;
	case 16: /* UNAUTHENTICATED */
		return -EACCES;
	default:
		return HM_EETCD;
	}
}

static int curl_err(CURLcode rc)
{
	switch (rc) {
	case CURLE_OK:
		return 0;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
		return HM_EETCDTLS;
	case CURLE_SEND_ERROR:
	case CURLE_SEND_FAIL_REWIND: /* a write libcurl would have sent again */
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
		return -ECONNRESET;
	case CURLE_WRITE_ERROR:
		return HM_ETOOBIG; /* only our write callback refuses: the response is too big */
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	default:
		return HM_EETCD;
	}
}

/* ---- JSON: building requests ----------------------------------------------------------------- */

static void j_raw(struct hm__buf *b, const char *s)
{
	hm__buf_add(b, s, strlen(s));
}

/* "name":"<base64>" */
static void j_b64(struct hm__buf *b, const char *name, const void *p, size_t n)
{
	size_t enc = hm_b64_encoded_len(n, 0);

	hm__buf_add(b, "\"", 1);
	j_raw(b, name);
	hm__buf_add(b, "\":\"", 3);
	if (hm__buf_reserve(b, enc + 1)) {
		b->len += hm_b64_encode(p, n, b->data + b->len, 0);
		hm__buf_add(b, "\"", 1);
	}
}

/* "name":"<int64>" (the gateway takes 64-bit integers as strings) */
static void j_int(struct hm__buf *b, const char *name, int64_t v)
{
	char tmp[64];

	snprintf(tmp, sizeof(tmp), "\"%s\":\"%" PRId64 "\"", name, v);
	j_raw(b, tmp);
}

static void j_range(struct hm__buf *b, const void *key, size_t klen, const void *end, size_t elen,
		    int64_t limit, int64_t revision, bool keys_only, bool count_only,
		    bool serializable)
{
	hm__buf_add(b, "{", 1);
	j_b64(b, "key", key, klen);
	if (end != NULL) {
		hm__buf_add(b, ",", 1);
		j_b64(b, "range_end", end, elen);
	}
	if (limit > 0) {
		hm__buf_add(b, ",", 1);
		j_int(b, "limit", limit);
	}
	if (revision > 0) {
		hm__buf_add(b, ",", 1);
		j_int(b, "revision", revision);
	}
	if (keys_only)
		j_raw(b, ",\"keys_only\":true");
	if (count_only)
		j_raw(b, ",\"count_only\":true");
	if (serializable)
		j_raw(b, ",\"serializable\":true");
	hm__buf_add(b, "}", 1);
}

static void j_put(struct hm__buf *b, const void *key, size_t klen, const void *value, size_t vlen,
		  int64_t lease)
{
	hm__buf_add(b, "{", 1);
	j_b64(b, "key", key, klen);
	hm__buf_add(b, ",", 1);
	j_b64(b, "value", value, vlen);
	if (lease != 0) {
		hm__buf_add(b, ",", 1);
		j_int(b, "lease", lease);
	}
	hm__buf_add(b, "}", 1);
}

static void j_delete(struct hm__buf *b, const void *key, size_t klen, const void *end, size_t elen)
{
	hm__buf_add(b, "{", 1);
	j_b64(b, "key", key, klen);
	if (end != NULL) {
		hm__buf_add(b, ",", 1);
		j_b64(b, "range_end", end, elen);
	}
	hm__buf_add(b, "}", 1);
}

static void j_ops(struct hm__buf *b, const char *name, const struct hm__etcd_op *ops, size_t n)
{
	hm__buf_add(b, ",\"", 2);
	j_raw(b, name);
	hm__buf_add(b, "\":[", 3);
	for (size_t i = 0; i < n; i++) {
		const struct hm__etcd_op *op = &ops[i];

		if (i > 0)
			hm__buf_add(b, ",", 1);
		switch (op->kind) {
		case HM__ETCD_RANGE:
			j_raw(b, "{\"request_range\":");
			j_range(b, op->key, op->key_len, op->range_end, op->range_end_len,
				op->limit, 0, op->keys_only, false, false);
			break;
		case HM__ETCD_PUT:
			j_raw(b, "{\"request_put\":");
			j_put(b, op->key, op->key_len, op->value, op->value_len, op->lease);
			break;
		case HM__ETCD_DELETE:
			j_raw(b, "{\"request_delete_range\":");
			j_delete(b, op->key, op->key_len, op->range_end, op->range_end_len);
			break;
		}
		hm__buf_add(b, "}", 1);
	}
	hm__buf_add(b, "]", 1);
}

static const char *const targets[] = {"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
static const char *const cmp_results[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
static const char *const target_fields[] = {"version", "create_revision", "mod_revision", "value",
					    "lease"};

static int j_txn(struct hm__buf *b, const struct hm__etcd_txn *t)
{
	j_raw(b, "{\"compare\":[");
	for (size_t i = 0; i < t->ncmp; i++) {
		const struct hm__etcd_cmp *c = &t->cmp[i];

		if ((unsigned)c->target >= HM_ARRAY_SIZE(targets) ||
		    (unsigned)c->result >= HM_ARRAY_SIZE(cmp_results))
			return -EINVAL;
		if (i > 0)
			hm__buf_add(b, ",", 1);
		hm__buf_add(b, "{", 1);
		j_b64(b, "key", c->key, c->key_len);
		j_raw(b, ",\"target\":\"");
		j_raw(b, targets[c->target]);
		j_raw(b, "\",\"result\":\"");
		j_raw(b, cmp_results[c->result]);
		j_raw(b, "\",");
		if (c->target == HM__ETCD_VALUE)
			j_b64(b, "value", c->value, c->value_len);
		else
			j_int(b, target_fields[c->target], c->number);
		hm__buf_add(b, "}", 1);
	}
	hm__buf_add(b, "]", 1);
	for (int side = 0; side < 2; side++) {
		const struct hm__etcd_op *ops = side == 0 ? t->success : t->failure;
		size_t n = side == 0 ? t->nsuccess : t->nfailure;

		for (size_t i = 0; i < n; i++)
			if (ops[i].kind < HM__ETCD_RANGE || ops[i].kind > HM__ETCD_DELETE)
				return -EINVAL;
		j_ops(b, side == 0 ? "success" : "failure", ops, n);
	}
	hm__buf_add(b, "}", 1);
	return 0;
}

/* ---- JSON: reading responses ----------------------------------------------------------------- */

/* A 64-bit integer the gateway wrote as a string (or a number); 0 when absent. */
static int64_t jnum(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (cJSON_IsString(v))
		return (int64_t)strtoll(v->valuestring, NULL, 10);
	if (cJSON_IsNumber(v))
		return (int64_t)v->valuedouble;
	return 0;
}

static uint64_t jnumu(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	if (cJSON_IsString(v))
		return (uint64_t)strtoull(v->valuestring, NULL, 10);
	if (cJSON_IsNumber(v))
		return (uint64_t)v->valuedouble;
	return 0;
}

static bool jbool(const cJSON *o, const char *name)
{
	return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static void parse_header(const cJSON *o, struct hm__etcd_header *h)
{
	const cJSON *hd = cJSON_GetObjectItemCaseSensitive(o, "header");

	h->cluster_id = jnumu(hd, "cluster_id");
	h->member_id = jnumu(hd, "member_id");
	h->revision = jnum(hd, "revision");
	h->raft_term = jnum(hd, "raft_term");
}

static size_t b64_bound(const cJSON *o, const char *name)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

	return cJSON_IsString(v) ? strlen(v->valuestring) / 4 * 3 : 0;
}

/*
 * Decoded responses: every kv of a response in one array and every byte in one buffer, sized by
 * a first pass over the JSON, so a response costs three allocations whatever its size.
 */
struct arena {
	struct hm__etcd_kv *kvs;
	size_t nkv, kvcap;
	uint8_t *bytes;
	size_t used, cap;
};

static void arena_count(const cJSON *kvs, size_t *nkv, size_t *nbytes)
{
	const cJSON *kv;

	cJSON_ArrayForEach(kv, kvs)
	{
		(*nkv)++;
		*nbytes += b64_bound(kv, "key") + b64_bound(kv, "value");
	}
}

static int arena_alloc(struct arena *a, size_t nkv, size_t nbytes)
{
	a->kvs = calloc(nkv ? nkv : 1, sizeof(*a->kvs));
	a->bytes = malloc(nbytes ? nbytes : 1);
	a->kvcap = nkv;
	a->cap = nbytes;
	return a->kvs != NULL && a->bytes != NULL ? 0 : -ENOMEM;
}

static void arena_free(struct arena *a)
{
	free(a->kvs);
	free(a->bytes);
	memset(a, 0, sizeof(*a));
}

static int arena_b64(struct arena *a, const cJSON *o, const char *name, const uint8_t **p,
		     size_t *n)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
	int len;

	*p = a->bytes + a->used;
	*n = 0;
	if (v == NULL)
		return 0;
	if (!cJSON_IsString(v))
		return -EPROTO;
	if (strlen(v->valuestring) / 4 * 3 > a->cap - a->used)
		return -EPROTO;
	len = hm_b64_decode(v->valuestring, strlen(v->valuestring), a->bytes + a->used);
	if (len < 0)
		return -EPROTO;
	a->used += (size_t)len;
	*n = (size_t)len;
	return 0;
}

static int arena_kv(struct arena *a, const cJSON *kv, struct hm__etcd_kv *out)
{
	int e;

	if ((e = arena_b64(a, kv, "key", &out->key, &out->key_len)) != 0 ||
	    (e = arena_b64(a, kv, "value", &out->value, &out->value_len)) != 0)
		return e;
	out->create_revision = jnum(kv, "create_revision");
	out->mod_revision = jnum(kv, "mod_revision");
	out->version = jnum(kv, "version");
	out->lease = jnum(kv, "lease");
	return 0;
}

/* A RangeResponse or DeleteRangeResponse body into op. */
static int parse_op(struct arena *a, const cJSON *o, enum hm__etcd_op_kind kind,
		    struct hm__etcd_op_result *op)
{
	const cJSON *kvs = cJSON_GetObjectItemCaseSensitive(o, "kvs"), *kv;
	int e;

	op->kind = kind;
	op->count = jnum(o, "count");
	op->more = jbool(o, "more");
	op->deleted = jnum(o, "deleted");
	op->kvs = a->kvs + a->nkv;
	op->nkvs = 0;
	cJSON_ArrayForEach(kv, kvs)
	{
		if (a->nkv >= a->kvcap)
			return -EPROTO;
		if ((e = arena_kv(a, kv, &a->kvs[a->nkv])) != 0)
			return e;
		a->nkv++;
		op->nkvs++;
	}
	return 0;
}

/* What a successful response says, for its kind. result borrows from a and ops. */
struct parsed {
	struct hm__etcd_result r;
	struct arena a;
	struct hm__etcd_op_result *ops;
	struct hm__etcd_alarm *alarms;
};

static void parsed_free(struct parsed *p)
{
	arena_free(&p->a);
	free(p->ops);
	p->ops = NULL;
	free(p->alarms);
	p->alarms = NULL;
}

static const char *const alarm_names[] = {"NONE", "NOSPACE", "CORRUPT"};

/* {"alarms": [{"memberID": "1", "alarm": "NOSPACE"}, ...]} (absent: none). */
static int parse_alarms(const cJSON *j, struct parsed *p)
{
	const cJSON *list = cJSON_GetObjectItemCaseSensitive(j, "alarms"), *it;
	size_t n = 0;

	if (cJSON_GetArraySize(list) == 0)
		return 0;
	if ((p->alarms = calloc((size_t)cJSON_GetArraySize(list), sizeof(*p->alarms))) == NULL)
		return -ENOMEM;
	cJSON_ArrayForEach(it, list)
	{
		const cJSON *name = cJSON_GetObjectItemCaseSensitive(it, "alarm");
		struct hm__etcd_alarm *a = &p->alarms[n++];

		a->member_id = jnumu(it, "memberID");
		a->type = HM__ETCD_ALARM_NONE;
		for (int t = HM__ETCD_ALARM_NOSPACE; t <= HM__ETCD_ALARM_CORRUPT; t++)
			if (cJSON_IsString(name) && strcmp(name->valuestring, alarm_names[t]) == 0)
				a->type = (enum hm__etcd_alarm_type)t;
	}
	p->r.alarms = p->alarms;
	p->r.nalarms = n;
	return 0;
}

/* etcd 3.4's status lists the cluster's alarms in "errors", as "memberID:N alarm:NOSPACE ". */
static bool lists_nospace(const cJSON *j)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "errors"))
	{
		if (cJSON_IsString(it) && strstr(it->valuestring, "alarm:NOSPACE") != NULL)
			return true;
	}
	return false;
}

static const char *const txn_fields[] = {NULL, "response_range", "response_put",
					 "response_delete_range"};

static int parse_ok(enum req_kind kind, const cJSON *j, struct parsed *p)
{
	struct hm__etcd_result *r = &p->r;
	size_t nkv = 0, nbytes = 0, n = 0;
	const cJSON *it;
	int e;

	if (kind == RQ_KEEPALIVE) /* a stream of one message: {"result": {...}} */
		j = cJSON_GetObjectItemCaseSensitive(j, "result");
	if (!cJSON_IsObject(j))
		return -EPROTO;
	parse_header(j, &r->header);
	switch (kind) {
	case RQ_RANGE:
	case RQ_DELETE:
		arena_count(cJSON_GetObjectItemCaseSensitive(j, "kvs"), &nkv, &nbytes);
		if ((e = arena_alloc(&p->a, nkv, nbytes)) != 0)
			return e;
		return parse_op(&p->a, j, kind == RQ_RANGE ? HM__ETCD_RANGE : HM__ETCD_DELETE,
				&r->op);
	case RQ_PUT:
		r->op.kind = HM__ETCD_PUT;
		return 0;
	case RQ_TXN:
		r->succeeded = jbool(j, "succeeded");
		it = cJSON_GetObjectItemCaseSensitive(j, "responses");
		n = (size_t)cJSON_GetArraySize(it);
		{
			const cJSON *resp;

			cJSON_ArrayForEach(resp, it) arena_count(
			    cJSON_GetObjectItemCaseSensitive(
				cJSON_GetObjectItemCaseSensitive(resp, "response_range"), "kvs"),
			    &nkv, &nbytes);
		}
		if ((e = arena_alloc(&p->a, nkv, nbytes)) != 0)
			return e;
		if ((p->ops = calloc(n ? n : 1, sizeof(*p->ops))) == NULL)
			return -ENOMEM;
		r->responses = p->ops;
		r->nresponses = n;
		n = 0;
		{
			const cJSON *resp;

			cJSON_ArrayForEach(resp, it)
			{
				enum hm__etcd_op_kind k = 0;
				const cJSON *body = NULL;

				for (int f = HM__ETCD_RANGE; f <= HM__ETCD_DELETE && body == NULL;
				     f++)
					if ((body = cJSON_GetObjectItemCaseSensitive(
						 resp, txn_fields[f])) != NULL)
						k = (enum hm__etcd_op_kind)f;
				if (body == NULL)
					return -EPROTO; /* a nested txn: never sent */
				if ((e = parse_op(&p->a, body, k, &p->ops[n++])) != 0)
					return e;
			}
		}
		return 0;
	case RQ_STATUS:
		r->db_size = jnum(j, "dbSize");
		r->db_size_in_use = jnum(j, "dbSizeInUse");
		r->leader = jnumu(j, "leader");
		r->raft_index = jnum(j, "raftIndex");
		it = cJSON_GetObjectItemCaseSensitive(j, "version");
		if (cJSON_IsString(it))
			snprintf(r->version, sizeof(r->version), "%s", it->valuestring);
		r->nospace = lists_nospace(j);
		return 0;
	case RQ_ALARM_GET:
	case RQ_ALARM_DISARM:
		return parse_alarms(j, p);
	case RQ_GRANT:
	case RQ_KEEPALIVE:
		r->lease_id = jnum(j, "ID");
		r->ttl = jnum(j, "TTL");
		return 0;
	default:
		return 0;
	}
}

/* ---- libcurl on libuv ------------------------------------------------------------------------ */

static void dispatch(struct hm__etcd *c);
static void finish_close(struct hm__etcd *c);

static void handle_closed(uv_handle_t *h)
{
	struct hm__etcd *c = h->data;

	if (h->type == UV_POLL)
		free((struct sock *)(void *)h); /* the poll handle is the sock's first member */
	if (--c->handles > 0)
		return;
	for (uint32_t i = 0; i < c->neps; i++)
		free(c->eps[i]);
	free(c->eps);
	free(c->ca);
	free(c->cert);
	curl_slist_free_all(c->headers);
	free(c);
}

static void sock_close(struct hm__etcd *c, struct sock *k)
{
	if (k->prev != NULL)
		k->prev->next = k->next;
	else
		c->socks = k->next;
	if (k->next != NULL)
		k->next->prev = k->prev;
	uv_poll_stop(&k->h);
	uv_close((uv_handle_t *)&k->h, handle_closed);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
	struct sock *k = (struct sock *)(void *)h;
	struct hm__etcd *c = k->c;
	int flags = 0, running;

	if (status < 0) {
		flags = CURL_CSELECT_ERR;
	} else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	curl_multi_socket_action(c->multi, k->fd, flags, &running);
	dispatch(c);
}

/* libcurl: start, change or stop watching a socket. */
static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct hm__etcd *c = userp;
	struct sock *k = socketp;
	int events = 0;

	(void)easy;
	if (c->cleaned)
		return 0;
	if (what == CURL_POLL_REMOVE) {
		if (k != NULL) {
			sock_close(c, k);
			curl_multi_assign(c->multi, fd, NULL);
		}
		return 0;
	}
	if (k == NULL) {
		if ((k = calloc(1, sizeof(*k))) == NULL)
			return -1;
		if (uv_poll_init_socket(c->loop, &k->h, fd) != 0) {
			free(k);
			return -1;
		}
		k->fd = fd;
		k->c = c;
		k->h.data = c;
		c->handles++;
		k->next = c->socks;
		if (c->socks != NULL)
			c->socks->prev = k;
		c->socks = k;
		curl_multi_assign(c->multi, fd, k);
	}
	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&k->h, events, on_poll);
	return 0;
}

static void on_timer(uv_timer_t *t)
{
	struct hm__etcd *c = t->data;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	dispatch(c);
}

/* libcurl: when to call it back without socket activity. */
static int on_curl_timer(CURLM *multi, long ms, void *userp)
{
	struct hm__etcd *c = userp;

	(void)multi;
	if (c->cleaned)
		return 0;
	if (ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
	return 0;
}

/* ---- Requests -------------------------------------------------------------------------------- */

static void req_unlink(struct hm__etcd *c, struct req *r)
{
	if (r->prev != NULL)
		r->prev->next = r->next;
	else if (c->reqs == r)
		c->reqs = r->next;
	if (r->next != NULL)
		r->next->prev = r->prev;
	r->next = r->prev = NULL;
}

static void req_free(struct req *r)
{
	if (r->in_multi)
		curl_multi_remove_handle(r->c->multi, r->easy);
	if (r->easy != NULL)
		curl_easy_cleanup(r->easy);
	hm__buf_fini(&r->body);
	hm__buf_fini(&r->resp);
	free(r);
}

static size_t on_write(char *p, size_t size, size_t n, void *arg)
{
	struct req *r = arg;
	struct hm__etcd *c = r->c;
	size_t len = size * n;

	if (r->resp.len + len > c->max_response) {
		r->too_big = true;
		return 0;
	}
	hm__buf_add(&r->resp, p, len);
	if (r->resp.oom)
		return 0;
	/* A watch's lines are handled once libcurl has returned (dispatch). */
	if (r->w != NULL && !r->w->dirty) {
		r->w->dirty = true;
		r->w->next_dirty = c->dirty;
		c->dirty = r->w;
	}
	return len;
}

/* A write's body, for libcurl (never rewound: see the top of the file). */
static size_t on_read(char *p, size_t size, size_t n, void *arg)
{
	struct req *r = arg;
	size_t len = HM_MIN(size * n, r->body.len - r->body_read);

	memcpy(p, r->body.data + r->body_read, len);
	r->body_read += len;
	return len;
}

/* libcurl rewinds before its own resend: allowed only while nothing of the write was read. */
static int on_seek(void *arg, curl_off_t off, int origin)
{
	struct req *r = arg;

	return origin == SEEK_SET && off == 0 && r->body_read == 0 ? CURL_SEEKFUNC_OK
								   : CURL_SEEKFUNC_CANTSEEK;
}

static struct req *req_new(struct hm__etcd *c, enum req_kind kind, hm__etcd_cb cb, void *arg)
{
	struct req *r = calloc(1, sizeof(*r));
	CURL *e;

	if (r == NULL)
		return NULL;
	if ((r->easy = e = curl_easy_init()) == NULL) {
		free(r);
		return NULL;
	}
	r->c = c;
	r->kind = kind;
	r->cb = cb;
	r->arg = arg;
	curl_easy_setopt(e, CURLOPT_PRIVATE, r);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	if (kinds[kind].write) {
		curl_easy_setopt(e, CURLOPT_READFUNCTION, on_read);
		curl_easy_setopt(e, CURLOPT_READDATA, r);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, on_seek);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, r);
	}
	/* A member that vanishes without a FIN (a partition) is noticed in seconds. */
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 2L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 1L);
	if (c->ca != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, c->ca);
	if (c->cert != NULL) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, c->cert);
	}
	return r;
}

/* Sends the request (again) to r->ep. Returns 0 or -ENOMEM. */
static int attempt(struct req *r)
{
	struct hm__etcd *c = r->c;
	char url[1200];

	snprintf(url, sizeof(url), "%s%s", c->eps[r->ep], kinds[r->kind].path);
	curl_easy_setopt(r->easy, CURLOPT_URL, url);
	if (kinds[r->kind].write)
		r->body_read = 0;
	else
		curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body.data);
	curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body.len);
	if (r->kind == RQ_WATCH) {
		curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	} else {
		uint64_t now = hm_mono_ms(), left = r->deadline > now ? r->deadline - now : 1, t;

		/* A read keeps half of what is left for another member; a write that was sent is
		 * never sent again, so it may use all of it. */
		t = kinds[r->kind].write || r->pinned
			? left
			: HM_MAX(left / 2, HM_MIN(c->connect_timeout_ms, left));
		curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)t);
		curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
				 (long)HM_MIN(c->connect_timeout_ms, left));
	}
	hm__buf_reset(&r->resp);
	r->too_big = false;
	r->errbuf[0] = '\0';
	if (curl_multi_add_handle(c->multi, r->easy) != CURLM_OK)
		return -ENOMEM;
	r->in_multi = true;
	return 0;
}

static void on_retry(uv_timer_t *t);

/* Endpoint ep just failed: the next requests start at the one after it. */
static void move_on(struct hm__etcd *c, uint32_t ep)
{
	if (c->cur == ep)
		c->cur = (ep + 1) % c->neps;
}

static void schedule_retry(struct hm__etcd *c)
{
	uint64_t due = UINT64_MAX, now = hm_mono_ms();

	for (struct req *r = c->reqs; r != NULL; r = r->next)
		if (r->parked && r->due < due)
			due = r->due;
	if (due == UINT64_MAX)
		uv_timer_stop(&c->retry);
	else
		uv_timer_start(&c->retry, on_retry, due > now ? due - now : 0, 0);
}

/*
 * After a failed attempt: the next endpoint, at once while this round has endpoints left, then
 * with backoff. Returns false if the request must end instead (pinned, no time left, closed).
 */
static bool retry(struct req *r)
{
	struct hm__etcd *c = r->c;
	uint64_t now = hm_mono_ms(), delay = 0;
	uint32_t fails = r->fails + 1;

	if (r->pinned || c->closed)
		return false;
	if (fails >= c->neps)
		delay = HM_MIN((uint64_t)BACKOFF_FIRST_MS << HM_MIN(fails / c->neps - 1, 5u),
			       (uint64_t)BACKOFF_MAX_MS);
	if (r->kind != RQ_WATCH && now + delay >= r->deadline)
		return false; /* r->ep stays the endpoint that failed last */
	r->fails = fails;
	move_on(c, r->ep);
	r->ep = (r->ep + 1) % c->neps;
	if (delay == 0 && attempt(r) == 0)
		return true;
	r->parked = true;
	r->due = now + delay;
	schedule_retry(c);
	return true;
}

/* Ends a request: its callback, then its memory. msg may point into r. */
static void deliver(struct req *r, int err, struct hm__etcd_result *res, const char *msg)
{
	struct hm__etcd *c = r->c;

	req_unlink(c, r);
	if (r->in_multi) {
		curl_multi_remove_handle(c->multi, r->easy);
		r->in_multi = false;
	}
	res->message = msg != NULL ? msg : "";
	res->endpoint = r->ep;
	c->dispatching++;
	r->cb(r->arg, err, res);
	c->dispatching--;
	req_free(r);
}

static void watch_fail(struct hm__etcd_watch *w, int err, int64_t compact_rev);
static void watch_ended(struct hm__etcd_watch *w, CURLcode rc);

static void req_fail(struct req *r, int err, const char *msg)
{
	struct hm__etcd_result res = {0};

	if (r->kind == RQ_WATCH)
		watch_fail(r->w, err, 0);
	else
		deliver(r, err, &res, msg);
}

/* An etcd error body: {"error": "...", "message": "...", "code": N}. */
static int error_body(const cJSON *j, const char **msg)
{
	const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
	const cJSON *code = cJSON_GetObjectItemCaseSensitive(j, "code");

	if (cJSON_IsString(m))
		*msg = m->valuestring;
	if (!cJSON_IsNumber(code))
		return HM_EETCD;
	return hm__etcd_grpc_err(code->valueint, *msg);
}

static void on_response(struct req *r)
{
	struct parsed p = {0};
	const char *msg = "";
	char text[64];
	cJSON *j = NULL;
	long status = 0;
	int err;

	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (r->resp.oom) {
		err = -ENOMEM;
	} else if (r->resp.len == 0 ||
		   (j = cJSON_ParseWithLength(r->resp.data, r->resp.len)) == NULL) {
		snprintf(text, sizeof(text), "HTTP %ld and no JSON from etcd", status);
		msg = text;
		err = status == 200 ? -EPROTO : status >= 500 ? -EAGAIN : HM_EETCD;
	} else if (status != 200) {
		err = error_body(j, &msg);
	} else {
		err = parse_ok(r->kind, j, &p);
		if (err == -EPROTO)
			msg = "unexpected response from etcd";
	}
	/* Unavailable (no leader, a member starting or stopping): a read goes elsewhere; a write
	 * only if it was refused before it was proposed (every request asks for a leader). */
	if (err == -EAGAIN && (!kinds[r->kind].write || strstr(msg, "no leader") != NULL) &&
	    retry(r)) {
		parsed_free(&p);
		cJSON_Delete(j);
		return;
	}
	if (err == -EAGAIN && !r->pinned)
		move_on(r->c, r->ep);
	deliver(r, err, &p.r, msg);
	parsed_free(&p);
	cJSON_Delete(j);
}

static void on_done(struct req *r, CURLcode rc)
{
	struct hm__etcd *c = r->c;
	long sent = 0;
	int err;

	curl_multi_remove_handle(c->multi, r->easy);
	r->in_multi = false;
	if (r->kind == RQ_WATCH) {
		watch_ended(r->w, rc);
		return;
	}
	if (rc == CURLE_OK) {
		on_response(r);
		return;
	}
	err = r->too_big ? HM_ETOOBIG : curl_err(rc);
	curl_easy_getinfo(r->easy, CURLINFO_REQUEST_SIZE, &sent);
	if (kinds[r->kind].write && r->body_read > 0)
		sent = 1; /* read is as good as sent: it may have been */
	if (err != HM_ETOOBIG && err != -ENOMEM && (sent == 0 || !kinds[r->kind].write) && retry(r))
		return;
	/* Not sent again (a write whose outcome is unknown, or no time left): the caller's next
	 * request goes elsewhere all the same. */
	if (err != HM_ETOOBIG && err != -ENOMEM && !r->pinned)
		move_on(c, r->ep);
	req_fail(r, err, r->errbuf[0] != '\0' ? r->errbuf : curl_easy_strerror(rc));
}

static void on_retry(uv_timer_t *t)
{
	struct hm__etcd *c = t->data;

	c->dispatching++;
	/* From the head each time: a callback may end other requests. */
	while (!c->closed) {
		uint64_t now = hm_mono_ms();
		struct req *r;

		for (r = c->reqs; r != NULL; r = r->next)
			if (r->parked && r->due <= now)
				break;
		if (r == NULL)
			break;
		r->parked = false;
		if (attempt(r) != 0)
			req_fail(r, -ENOMEM, "out of memory");
	}
	c->dispatching--;
	if (c->closed) {
		if (c->dispatching == 0)
			finish_close(c);
		return;
	}
	schedule_retry(c);
}

/* ---- Watches --------------------------------------------------------------------------------- */

enum { W_CONTINUE, W_RESUMED, W_ENDED, W_FREED };

static void watch_free(struct hm__etcd_watch *w)
{
	free(w->key);
	free(w->end);
	free(w);
}

/* The stream's body for the watch's current position. */
static void watch_body(struct hm__etcd_watch *w)
{
	struct hm__buf *b = &w->r->body;
	char tmp[64];

	hm__buf_reset(b);
	j_raw(b, "{\"create_request\":{\"key\":\"");
	j_raw(b, w->key);
	hm__buf_add(b, "\"", 1);
	if (w->end != NULL) {
		j_raw(b, ",\"range_end\":\"");
		j_raw(b, w->end);
		hm__buf_add(b, "\"", 1);
	}
	if (w->next_rev > 0) {
		snprintf(tmp, sizeof(tmp), ",\"start_revision\":\"%" PRId64 "\"", w->next_rev);
		j_raw(b, tmp);
	}
	j_raw(b, "}}");
}

/* Calls the watch's callback; returns W_FREED if the watch was stopped in it (and is freed). */
static int watch_call(struct hm__etcd_watch *w, int err, const struct hm__etcd_header *h,
		      const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev)
{
	struct hm__etcd *c = w->c;
	struct hm__etcd_header none = {0};

	w->in_cb = true;
	c->dispatching++;
	w->cb(w->arg, err, h != NULL ? h : &none, ev, nev, compact_rev);
	c->dispatching--;
	w->in_cb = false;
	if (w->stopped) {
		watch_free(w);
		return W_FREED;
	}
	return W_CONTINUE;
}

/* The watch ends for good: the stream goes, the callback hears why. */
static void watch_fail(struct hm__etcd_watch *w, int err, int64_t compact_rev)
{
	struct req *r = w->r;

	if (r != NULL) {
		req_unlink(w->c, r);
		req_free(r);
		w->r = NULL;
	}
	watch_call(w, err, NULL, NULL, 0, compact_rev);
}

/* The stream broke or etcd ended it without a reason that is final: send it again. */
static int watch_resume(struct hm__etcd_watch *w)
{
	struct req *r = w->r;

	if (r->in_multi) {
		curl_multi_remove_handle(w->c->multi, r->easy);
		r->in_multi = false;
	}
	w->resumes++;
	hm__buf_reset(&r->resp); /* what is left of the broken stream */
	watch_body(w);
	if (r->body.oom) {
		watch_fail(w, -ENOMEM, 0);
		return W_ENDED;
	}
	if (!retry(r)) {
		watch_fail(w, -ECANCELED, 0);
		return W_ENDED;
	}
	return W_RESUMED;
}

static int watch_events(struct hm__etcd_watch *w, const struct hm__etcd_header *h,
			const cJSON *events)
{
	struct arena a = {0};
	struct hm__etcd_event *ev;
	size_t nkv = 0, nbytes = 0, n = 0;
	const cJSON *e;
	int rc;

	cJSON_ArrayForEach(e, events)
	{
		const cJSON *kv = cJSON_GetObjectItemCaseSensitive(e, "kv");

		nkv++;
		nbytes += b64_bound(kv, "key") + b64_bound(kv, "value");
	}
	if (nkv == 0)
		return W_CONTINUE;
	ev = calloc(nkv, sizeof(*ev));
	if (ev == NULL || arena_alloc(&a, 0, nbytes) != 0) {
		free(ev);
		arena_free(&a);
		watch_fail(w, -ENOMEM, 0);
		return W_ENDED;
	}
	cJSON_ArrayForEach(e, events)
	{
		const cJSON *type = cJSON_GetObjectItemCaseSensitive(e, "type");

		ev[n].type = cJSON_IsString(type) && strcmp(type->valuestring, "DELETE") == 0
				 ? HM__ETCD_EV_DELETE
				 : HM__ETCD_EV_PUT;
		if (arena_kv(&a, cJSON_GetObjectItemCaseSensitive(e, "kv"), &ev[n].kv) != 0) {
			free(ev);
			arena_free(&a);
			return watch_resume(w); /* garbage on the stream: start it again */
		}
		n++;
	}
	/* Before the callback: a resume from inside it must not deliver these again. */
	w->next_rev = ev[n - 1].kv.mod_revision + 1;
	rc = watch_call(w, 0, h, ev, n, 0);
	free(ev);
	arena_free(&a);
	return rc;
}

/* One message of the stream. */
static int watch_message(struct hm__etcd_watch *w, const cJSON *j)
{
	const cJSON *res, *err;
	struct hm__etcd_header h = {0};
	int64_t compact;

	if (j == NULL)
		return watch_resume(w);
	if ((err = cJSON_GetObjectItemCaseSensitive(j, "error")) != NULL) {
		/* {"error": {"grpc_code": N, "message": "..."}} ends a stream */
		const cJSON *m = cJSON_GetObjectItemCaseSensitive(err, "message");
		int e = hm__etcd_grpc_err((int)jnum(err, "grpc_code"),
					  cJSON_IsString(m) ? m->valuestring : "");

		if (e == -EAGAIN || e == -ECANCELED || e == HM_EETCD)
			return watch_resume(w);
		watch_fail(w, e, 0);
		return W_ENDED;
	}
	res = cJSON_GetObjectItemCaseSensitive(j, "result");
	if (!cJSON_IsObject(res))
		return watch_resume(w);
	parse_header(res, &h);
	if (jbool(res, "created")) {
		w->r->fails = 0;
		if (w->next_rev == 0)
			w->next_rev = h.revision + 1;
	}
	if (jbool(res, "canceled")) {
		if ((compact = jnum(res, "compact_revision")) > 0) {
			watch_fail(w, HM_ECOMPACTED, compact);
			return W_ENDED;
		}
		return watch_resume(w); /* e.g. the member lost its leader */
	}
	return watch_events(w, &h, cJSON_GetObjectItemCaseSensitive(res, "events"));
}

/* Handles the complete lines received. Returns false if the watch was freed. */
static bool watch_lines(struct hm__etcd_watch *w)
{
	for (;;) {
		struct req *r = w->r;
		cJSON *j;
		char *nl;
		size_t len;
		int act;

		if (r == NULL || r->resp.len == 0 ||
		    (nl = memchr(r->resp.data, '\n', r->resp.len)) == NULL)
			return true;
		len = (size_t)(nl - r->resp.data);
		j = cJSON_ParseWithLength(r->resp.data, len);
		memmove(r->resp.data, nl + 1, r->resp.len - len - 1);
		r->resp.len -= len + 1;
		act = watch_message(w, j);
		cJSON_Delete(j);
		if (act == W_FREED)
			return false;
		if (act != W_CONTINUE)
			return true;
	}
}

static void watch_ended(struct hm__etcd_watch *w, CURLcode rc)
{
	struct req *r;
	long status = 0;

	if (!watch_lines(w))
		return;
	r = w->r;
	if (r == NULL || r->in_multi || r->parked)
		return; /* ended or already resumed by a message */
	curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	if (rc == CURLE_OK && status != 200) {
		cJSON *j = cJSON_ParseWithLength(r->resp.data, r->resp.len);
		const char *msg = "";
		int e = j != NULL ? error_body(j, &msg) : HM_EETCD;

		cJSON_Delete(j);
		if (e != -EAGAIN && status < 500) {
			watch_fail(w, e, 0);
			return;
		}
	}
	if (rc != CURLE_OK && r->too_big) {
		watch_fail(w, HM_ETOOBIG, 0);
		return;
	}
	watch_resume(w);
}

static void drain_watches(struct hm__etcd *c)
{
	struct hm__etcd_watch *w;

	while (!c->closed && (w = c->dirty) != NULL) {
		c->dirty = w->next_dirty;
		w->dirty = false;
		w->next_dirty = NULL;
		watch_lines(w);
	}
}

/* ---- Collecting what libcurl finished -------------------------------------------------------- */

static void dispatch(struct hm__etcd *c)
{
	CURLMsg *m;
	int left;

	c->dispatching++;
	drain_watches(c);
	while (!c->closed && (m = curl_multi_info_read(c->multi, &left)) != NULL) {
		struct req *r = NULL;
		CURLcode rc = m->data.result;

		if (m->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		on_done(r, rc);
		drain_watches(c);
	}
	c->dispatching--;
	if (c->closed && c->dispatching == 0)
		finish_close(c);
}

static void finish_close(struct hm__etcd *c)
{
	if (c->cleaned)
		return;
	c->cleaned = true;
	while (c->socks != NULL)
		sock_close(c, c->socks);
	curl_multi_cleanup(c->multi);
	c->multi = NULL;
	uv_close((uv_handle_t *)&c->timer, handle_closed);
	uv_close((uv_handle_t *)&c->retry, handle_closed);
}

/* ---- The client ------------------------------------------------------------------------------ */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int parse_endpoints(struct hm__etcd *c, const char *list, char *err, size_t errlen)
{
	const char *p = list;

	if (list == NULL || *list == '\0') {
		snprintf(err, errlen, "no etcd endpoint given");
		return -EINVAL;
	}
	while (*p != '\0') {
		const char *end = strchr(p, ',');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p), n = len;
		size_t scheme = strncmp(p, "http://", 7) == 0	 ? 7
				: strncmp(p, "https://", 8) == 0 ? 8
								 : 0;
		char **eps;

		while (n > scheme && p[n - 1] == '/')
			n--;
		if (scheme == 0 || n == scheme || n > 1000) {
			snprintf(
			    err, errlen,
			    "etcd endpoint \"%.*s\": want http://HOST:PORT or https://HOST:PORT",
			    (int)HM_MIN(n, 200u), p);
			return -EINVAL;
		}
		if ((eps = realloc(c->eps, (c->neps + 1) * sizeof(*eps))) == NULL)
			return -ENOMEM;
		c->eps = eps;
		if ((c->eps[c->neps] = strndup(p, n)) == NULL)
			return -ENOMEM;
		c->neps++;
		p += end != NULL ? len + 1 : len;
		if (end != NULL && *p == '\0') {
			snprintf(err, errlen, "etcd endpoint list ends with a comma");
			return -EINVAL;
		}
	}
	return 0;
}

static int readable(const char *what, const char *path, char **copy, char *err, size_t errlen)
{
	if (path == NULL || *path == '\0')
		return 0;
	if (access(path, R_OK) != 0) {
		snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
		return -EINVAL;
	}
	return (*copy = strdup(path)) != NULL ? 0 : -ENOMEM;
}

int hm__etcd_new(struct hm__etcd **out, uv_loop_t *loop, const struct hm__etcd_cfg *cfg, char *err,
		 size_t errlen)
{
	struct hm__etcd *c = calloc(1, sizeof(*c));
	struct curl_slist *h = NULL;
	int e;

	*out = NULL;
	if (errlen > 0)
		err[0] = '\0';
	if (c == NULL)
		return -ENOMEM;
	c->loop = loop;
	c->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS;
	c->connect_timeout_ms =
	    cfg->connect_timeout_ms ? cfg->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
	c->max_response = cfg->max_response ? cfg->max_response : DEFAULT_MAX_RESPONSE;
	if ((e = parse_endpoints(c, cfg->endpoints, err, errlen)) != 0 ||
	    (e = readable("etcd CA file", cfg->ca, &c->ca, err, errlen)) != 0 ||
	    (e = readable("etcd certificate file", cfg->cert, &c->cert, err, errlen)) != 0)
		goto fail;
	pthread_once(&curl_once, curl_init);
	e = -ENOMEM;
	if (curl_init_rc != CURLE_OK || (c->multi = curl_multi_init()) == NULL) {
		snprintf(err, errlen, "cannot initialise libcurl");
		goto fail;
	}
	/* "Expect:" off: no 100-continue round trip before large bodies. Every request asks for
	 * a member with a leader, so one without refuses at once ("no leader") instead of
	 * waiting for its own timeout: such a write was never proposed and may go elsewhere. */
	if ((h = curl_slist_append(h, "Content-Type: application/json")) == NULL ||
	    (c->headers = h, h = curl_slist_append(h, "Expect:")) == NULL ||
	    (c->headers = h, h = curl_slist_append(h, "Grpc-Metadata-hasleader: true")) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	c->headers = h;
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	uv_timer_init(loop, &c->timer);
	uv_timer_init(loop, &c->retry);
	c->timer.data = c->retry.data = c;
	c->handles = 2;
	*out = c;
	return 0;
fail:
	if (e == -ENOMEM && err[0] == '\0')
		snprintf(err, errlen, "out of memory");
	if (c->multi != NULL)
		curl_multi_cleanup(c->multi);
	curl_slist_free_all(c->headers);
	for (uint32_t i = 0; i < c->neps; i++)
		free(c->eps[i]);
	free(c->eps);
	free(c->ca);
	free(c->cert);
	free(c);
	return e;
}

void hm__etcd_close(struct hm__etcd *c)
{
	struct req *r;

	if (c == NULL || c->closed)
		return;
	hm_require(c->nwatches == 0);
	c->closed = true;
	c->dispatching++;
	while ((r = c->reqs) != NULL) {
		struct hm__etcd_result res = {0};

		r->parked = false;
		deliver(r, -ECANCELED, &res, "the etcd client was closed");
	}
	c->dispatching--;
	if (c->dispatching == 0)
		finish_close(c);
}

uint32_t hm__etcd_nendpoints(const struct hm__etcd *c)
{
	return c->neps;
}

size_t hm__etcd_prefix_end(const void *key, size_t n, void *end)
{
	memcpy(end, key, n);
	((uint8_t *)end)[n - 1]++;
	return n;
}

const char *hm__etcd_endpoint(const struct hm__etcd *c, uint32_t i)
{
	return i < c->neps ? c->eps[i] : NULL;
}

uint32_t hm__etcd_current(const struct hm__etcd *c)
{
	return c->cur;
}

/* Sends a request whose body is built. Returns 0 or an error (r freed, cb not called). */
static int submit(struct req *r, int64_t pin)
{
	struct hm__etcd *c = r->c;
	int e;

	if (r->body.oom) {
		req_free(r);
		return -ENOMEM;
	}
	if (r->body.len > MAX_REQUEST) {
		req_free(r);
		return HM_ETOOBIG;
	}
	r->pinned = pin >= 0;
	r->ep = pin >= 0 ? (uint32_t)pin : c->cur;
	r->deadline = hm_mono_ms() + c->timeout_ms;
	if ((e = attempt(r)) != 0) {
		req_free(r);
		return e;
	}
	r->next = c->reqs;
	if (c->reqs != NULL)
		c->reqs->prev = r;
	c->reqs = r;
	return 0;
}

static struct req *start(struct hm__etcd *c, enum req_kind kind, hm__etcd_cb cb, void *arg, int *e)
{
	struct req *r;

	*e = 0;
	if (c->closed) {
		*e = -ECANCELED;
		return NULL;
	}
	if ((r = req_new(c, kind, cb, arg)) == NULL)
		*e = -ENOMEM;
	return r;
}

int hm__etcd_range(struct hm__etcd *c, const void *key, size_t key_len,
		   const struct hm__etcd_range_opts *o, hm__etcd_cb cb, void *arg)
{
	static const struct hm__etcd_range_opts none = {0};
	struct req *r;
	int e;

	if ((r = start(c, RQ_RANGE, cb, arg, &e)) == NULL)
		return e;
	if (o == NULL)
		o = &none;
	j_range(&r->body, key, key_len, o->range_end, o->range_end_len, o->limit, o->revision,
		o->keys_only, o->count_only, o->serializable);
	return submit(r, -1);
}

int hm__etcd_put(struct hm__etcd *c, const void *key, size_t key_len, const void *value,
		 size_t value_len, int64_t lease, hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, RQ_PUT, cb, arg, &e)) == NULL)
		return e;
	j_put(&r->body, key, key_len, value, value_len, lease);
	return submit(r, -1);
}

int hm__etcd_delete(struct hm__etcd *c, const void *key, size_t key_len, const void *range_end,
		    size_t range_end_len, hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, RQ_DELETE, cb, arg, &e)) == NULL)
		return e;
	j_delete(&r->body, key, key_len, range_end, range_end_len);
	return submit(r, -1);
}

int hm__etcd_txn(struct hm__etcd *c, const struct hm__etcd_txn *t, hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, RQ_TXN, cb, arg, &e)) == NULL)
		return e;
	if ((e = j_txn(&r->body, t)) != 0) {
		req_free(r);
		return e;
	}
	return submit(r, -1);
}

int hm__etcd_compact(struct hm__etcd *c, int64_t rev, bool physical, hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, RQ_COMPACT, cb, arg, &e)) == NULL)
		return e;
	hm__buf_add(&r->body, "{", 1);
	j_int(&r->body, "revision", rev);
	if (physical)
		j_raw(&r->body, ",\"physical\":true");
	hm__buf_add(&r->body, "}", 1);
	return submit(r, -1);
}

static int member_request(struct hm__etcd *c, enum req_kind kind, uint32_t endpoint, hm__etcd_cb cb,
			  void *arg)
{
	struct req *r;
	int e;

	if (endpoint >= c->neps)
		return -EINVAL;
	if ((r = start(c, kind, cb, arg, &e)) == NULL)
		return e;
	j_raw(&r->body, "{}");
	return submit(r, endpoint);
}

int hm__etcd_status(struct hm__etcd *c, uint32_t endpoint, hm__etcd_cb cb, void *arg)
{
	return member_request(c, RQ_STATUS, endpoint, cb, arg);
}

int hm__etcd_defragment(struct hm__etcd *c, uint32_t endpoint, hm__etcd_cb cb, void *arg)
{
	return member_request(c, RQ_DEFRAG, endpoint, cb, arg);
}

int hm__etcd_alarm_list(struct hm__etcd *c, hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, RQ_ALARM_GET, cb, arg, &e)) == NULL)
		return e;
	j_raw(&r->body, "{\"action\":\"GET\"}");
	return submit(r, -1);
}

int hm__etcd_alarm_disarm(struct hm__etcd *c, uint64_t member_id, enum hm__etcd_alarm_type type,
			  hm__etcd_cb cb, void *arg)
{
	struct req *r;
	char body[128];
	int e;

	if (type <= HM__ETCD_ALARM_NONE || type > HM__ETCD_ALARM_CORRUPT)
		return -EINVAL;
	if ((r = start(c, RQ_ALARM_DISARM, cb, arg, &e)) == NULL)
		return e;
	snprintf(body, sizeof(body),
		 "{\"action\":\"DEACTIVATE\",\"memberID\":\"%" PRIu64 "\",\"alarm\":\"%s\"}",
		 member_id, alarm_names[type]);
	j_raw(&r->body, body);
	return submit(r, -1);
}

static int lease_request(struct hm__etcd *c, enum req_kind kind, const char *name, int64_t v,
			 hm__etcd_cb cb, void *arg)
{
	struct req *r;
	int e;

	if ((r = start(c, kind, cb, arg, &e)) == NULL)
		return e;
	hm__buf_add(&r->body, "{", 1);
	j_int(&r->body, name, v);
	hm__buf_add(&r->body, "}", 1);
	return submit(r, -1);
}

int hm__etcd_lease_grant(struct hm__etcd *c, int64_t ttl_s, hm__etcd_cb cb, void *arg)
{
	return lease_request(c, RQ_GRANT, "TTL", ttl_s, cb, arg);
}

int hm__etcd_lease_keepalive(struct hm__etcd *c, int64_t id, hm__etcd_cb cb, void *arg)
{
	return lease_request(c, RQ_KEEPALIVE, "ID", id, cb, arg);
}

int hm__etcd_lease_revoke(struct hm__etcd *c, int64_t id, hm__etcd_cb cb, void *arg)
{
	return lease_request(c, RQ_REVOKE, "ID", id, cb, arg);
}

static char *b64_string(const void *p, size_t n)
{
	char *s = malloc(hm_b64_encoded_len(n, 0) + 1);

	if (s != NULL)
		s[hm_b64_encode(p, n, s, 0)] = '\0';
	return s;
}

int hm__etcd_watch_start(struct hm__etcd_watch **out, struct hm__etcd *c, const void *key,
			 size_t key_len, const void *range_end, size_t range_end_len,
			 int64_t start_rev, hm__etcd_watch_cb cb, void *arg)
{
	struct hm__etcd_watch *w;
	struct req *r;
	int e;

	*out = NULL;
	if ((r = start(c, RQ_WATCH, NULL, NULL, &e)) == NULL)
		return e;
	if ((w = calloc(1, sizeof(*w))) == NULL || (w->key = b64_string(key, key_len)) == NULL ||
	    (range_end != NULL && (w->end = b64_string(range_end, range_end_len)) == NULL)) {
		if (w != NULL)
			watch_free(w);
		req_free(r);
		return -ENOMEM;
	}
	w->c = c;
	w->r = r;
	w->cb = cb;
	w->arg = arg;
	w->next_rev = start_rev > 0 ? start_rev : 0;
	r->w = w;
	watch_body(w);
	if ((e = submit(r, -1)) != 0) {
		watch_free(w);
		return e;
	}
	c->nwatches++;
	*out = w;
	return 0;
}

void hm__etcd_watch_stop(struct hm__etcd_watch *w)
{
	struct hm__etcd *c;

	if (w == NULL)
		return;
	c = w->c;
	if (w->dirty) {
		struct hm__etcd_watch **pp = &c->dirty;

		while (*pp != w)
			pp = &(*pp)->next_dirty;
		*pp = w->next_dirty;
		w->dirty = false;
	}
	if (w->r != NULL) {
		req_unlink(c, w->r);
		req_free(w->r);
		w->r = NULL;
	}
	c->nwatches--;
	w->stopped = true;
	if (!w->in_cb)
		watch_free(w);
}

uint64_t hm__etcd_watch_resumes(const struct hm__etcd_watch *w)
{
	return w->resumes;
}
