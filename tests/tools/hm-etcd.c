/*
 * hm-etcd: drives the origin's etcd client (syncd/etcd.h) for the integration tests and the
 * etcd measurements. It runs one client on a libuv loop, reads commands from stdin (one per
 * line, several may be in flight) and prints one JSON line per result on stdout, tagged with the
 * command's id, so that a test can keep a watch open while it kills etcd members.
 *
 *   hm-etcd --endpoints URL[,URL...] [--ca FILE] [--cert FILE] [--timeout MS]
 *           [--connect-timeout MS]
 *
 * Commands ("ID VERB ARGS"; KEY, END and VALUE are text, hex:HEX, or for a VALUE @N, N bytes):
 *   ID put KEY VALUE [LEASE]      ID get KEY [REV]        ID range KEY END [LIMIT]
 *   ID del KEY [END]              ID cas KEY MODREV VALUE (txn: compare mod_revision, put; else
 *                                                          range the key)
 *   ID ops N                      (a txn of N puts)
 *   ID compact REV                ID status EP            ID defrag EP
 *   ID alarms                     ID disarm MEMBER TYPE   (TYPE 1: NOSPACE)
 *   ID grant TTL                  ID keepalive LEASE      ID revoke LEASE
 *   ID watch KEY END REV          (events as {"id","ev":[...]}; then a final error, if any)
 *   ID unwatch WATCH-ID           ID resumes WATCH-ID     ID current
 *   ID bench N [KEY [VALUE]]      (N CAS txns, one after another, each putting VALUE (64
 *                                 bytes by default) to KEY: latency p50/p99/max in us)
 * Result: {"id":ID,"err":0|code,"errname":"...","msg":"...","rev":R,...}. EOF on stdin: stop
 * the watches, close the client (pending requests answer ECANCELED), exit 0.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/errors.h"
#include "common/util.h"
#include "syncd/etcd.h"

#define MAX_WORDS 8
#define MAX_WATCH 64

struct watch {
	char id[32];
	struct hm__etcd_watch *w;
};

static uv_loop_t *loop;
static struct hm__etcd *client;
static uv_pipe_t in;
static char line[1 << 16];
static size_t line_len;
static struct watch watches[MAX_WATCH];

/* A command's bytes: text, hex:..., or @N (N bytes of 'v'). Owned by the caller (free). */
static uint8_t *arg_bytes(const char *s, size_t *n)
{
	uint8_t *p;

	if (strncmp(s, "hex:", 4) == 0) {
		size_t len = strlen(s + 4) / 2;

		p = malloc(len + 1);
		if (p == NULL || hm_unhex(s + 4, len * 2, p, len) != 0) {
			free(p);
			return NULL;
		}
		*n = len;
		return p;
	}
	if (s[0] == '@') {
		*n = strtoull(s + 1, NULL, 10);
		if ((p = malloc(*n + 1)) != NULL)
			memset(p, 'v', *n);
		return p;
	}
	*n = strlen(s);
	p = malloc(*n + 1);
	if (p != NULL)
		memcpy(p, s, *n + 1);
	return p;
}

/* JSON string of bytes that are printable ASCII; anything else as hex:... */
static void print_bytes(const uint8_t *p, size_t n)
{
	bool text = true;

	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\')
			text = false;
	if (text) {
		printf("\"%.*s\"", (int)n, (const char *)p);
		return;
	}
	printf("\"hex:");
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
	printf("\"");
}

static void print_kv(const struct hm__etcd_kv *kv)
{
	printf("{\"key\":");
	print_bytes(kv->key, kv->key_len);
	printf(",\"value_len\":%zu", kv->value_len);
	if (kv->value_len <= 256) {
		printf(",\"value\":");
		print_bytes(kv->value, kv->value_len);
	}
	printf(",\"create\":%" PRId64 ",\"mod\":%" PRId64 ",\"version\":%" PRId64
	       ",\"lease\":%" PRId64 "}",
	       kv->create_revision, kv->mod_revision, kv->version, kv->lease);
}

static void print_kvs(const struct hm__etcd_op_result *op)
{
	printf(",\"kvs\":[");
	for (size_t i = 0; i < op->nkvs; i++) {
		if (i > 0)
			printf(",");
		print_kv(&op->kvs[i]);
	}
	printf("],\"count\":%" PRId64 ",\"more\":%s,\"deleted\":%" PRId64, op->count,
	       op->more ? "true" : "false", op->deleted);
}

static void print_head(const char *id, int err, const char *msg, uint32_t ep)
{
	printf("{\"id\":\"%s\",\"err\":%d,\"errname\":\"%s\",\"msg\":", id, err, hm_errname(err));
	print_bytes((const uint8_t *)msg, strlen(msg));
	printf(",\"endpoint\":%u", ep);
}

static void on_result(void *arg, int err, const struct hm__etcd_result *r)
{
	char *id = arg;

	print_head(id, err, r->message, r->endpoint);
	if (err == 0) {
		printf(",\"rev\":%" PRId64 ",\"member\":\"%" PRIu64 "\",\"succeeded\":%s",
		       r->header.revision, r->header.member_id, r->succeeded ? "true" : "false");
		print_kvs(&r->op);
		printf(",\"responses\":[");
		for (size_t i = 0; i < r->nresponses; i++) {
			printf("%s{\"kind\":%d", i > 0 ? "," : "", r->responses[i].kind);
			print_kvs(&r->responses[i]);
			printf("}");
		}
		printf("],\"lease\":%" PRId64 ",\"ttl\":%" PRId64 ",\"db_size\":%" PRId64
		       ",\"db_size_in_use\":%" PRId64 ",\"leader\":\"%" PRIu64
		       "\",\"version\":\"%s\"",
		       r->lease_id, r->ttl, r->db_size, r->db_size_in_use, r->leader, r->version);
		printf(",\"nospace\":%s,\"alarms\":[", r->nospace ? "true" : "false");
		for (size_t i = 0; i < r->nalarms; i++)
			printf("%s{\"member\":\"%" PRIu64 "\",\"type\":%d}", i > 0 ? "," : "",
			       r->alarms[i].member_id, (int)r->alarms[i].type);
		printf("]");
	}
	printf("}\n");
	fflush(stdout);
	free(id);
}

static void on_event(void *arg, int err, const struct hm__etcd_header *h,
		     const struct hm__etcd_event *ev, size_t nev, int64_t compact_rev)
{
	struct watch *w = arg;

	if (err != 0) {
		print_head(w->id, err, "", 0);
		printf(",\"final\":true,\"compact\":%" PRId64 "}\n", compact_rev);
		fflush(stdout);
		return;
	}
	printf("{\"id\":\"%s\",\"rev\":%" PRId64 ",\"resumes\":%" PRIu64 ",\"ev\":[", w->id,
	       h->revision, hm__etcd_watch_resumes(w->w));
	for (size_t i = 0; i < nev; i++) {
		printf("%s{\"type\":\"%s\",\"kv\":", i > 0 ? "," : "",
		       ev[i].type == HM__ETCD_EV_PUT ? "put" : "delete");
		print_kv(&ev[i].kv);
		printf("}");
	}
	printf("]}\n");
	fflush(stdout);
}

/* ---- bench: CAS txns one after another on one key -------------------------------------------- */

struct bench {
	char *id;
	uint8_t *key, *value;
	size_t key_len, value_len;
	uint32_t n, done;
	int64_t mod;
	uint64_t t0;
	uint64_t *lat;
};

static void bench_next(struct bench *b);

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void bench_end(struct bench *b, int err, const char *msg)
{
	print_head(b->id, err, msg, 0);
	if (b->done > 0) {
		qsort(b->lat, b->done, sizeof(*b->lat), cmp_u64);
		printf(",\"n\":%u,\"p50_us\":%" PRIu64 ",\"p99_us\":%" PRIu64
		       ",\"max_us\":%" PRIu64,
		       b->done, b->lat[b->done / 2] / 1000, b->lat[(b->done * 99) / 100] / 1000,
		       b->lat[b->done - 1] / 1000);
	}
	printf("}\n");
	fflush(stdout);
	free(b->id);
	free(b->key);
	free(b->value);
	free(b->lat);
	free(b);
}

static void bench_cb(void *arg, int err, const struct hm__etcd_result *r)
{
	struct bench *b = arg;

	if (err != 0 || !r->succeeded) {
		bench_end(b, err != 0 ? err : HM_EETCD, err != 0 ? r->message : "CAS failed");
		return;
	}
	b->lat[b->done++] = hm_mono_ns() - b->t0;
	b->mod = r->header.revision;
	if (b->done == b->n) {
		bench_end(b, 0, "");
		return;
	}
	bench_next(b);
}

static void bench_next(struct bench *b)
{
	struct hm__etcd_cmp cmp = {.key = b->key,
				   .key_len = b->key_len,
				   .target = HM__ETCD_MOD,
				   .result = HM__ETCD_EQUAL,
				   .number = b->mod};
	struct hm__etcd_op put = {.kind = HM__ETCD_PUT,
				  .key = b->key,
				  .key_len = b->key_len,
				  .value = b->value,
				  .value_len = b->value_len};
	struct hm__etcd_txn t = {.cmp = &cmp, .ncmp = 1, .success = &put, .nsuccess = 1};
	int e;

	b->t0 = hm_mono_ns();
	if ((e = hm__etcd_txn(client, &t, bench_cb, b)) != 0)
		bench_end(b, e, "cannot start");
}

static void bench_start(void *arg, int err, const struct hm__etcd_result *r)
{
	struct bench *b = arg;

	if (err != 0) {
		bench_end(b, err, r->message);
		return;
	}
	b->mod = r->op.nkvs > 0 ? r->op.kvs[0].mod_revision : 0;
	bench_next(b);
}

/* ---- Commands -------------------------------------------------------------------------------- */

static void fail_now(const char *id, int e, const char *msg)
{
	print_head(id, e, msg, 0);
	printf("}\n");
	fflush(stdout);
}

static void command(char *s)
{
	char *w[MAX_WORDS] = {0}, *save = NULL, *id;
	uint8_t *k = NULL, *v = NULL, *end = NULL;
	size_t kn = 0, vn = 0, en = 0;
	int n = 0, e = 0;

	for (char *t = strtok_r(s, " ", &save); t != NULL && n < MAX_WORDS;
	     t = strtok_r(NULL, " ", &save))
		w[n++] = t;
	if (n < 2)
		return;
	if ((id = strdup(w[0])) == NULL)
		return;
#define ARG(i) (n > (i) ? w[i] : NULL)
	if (ARG(2) != NULL && (k = arg_bytes(w[2], &kn)) == NULL) {
		fail_now(id, -EINVAL, "bad key");
		free(id);
		return;
	}
	if (strcmp(w[1], "put") == 0 && n >= 4 && (v = arg_bytes(w[3], &vn)) != NULL) {
		e = hm__etcd_put(client, k, kn, v, vn, n > 4 ? strtoll(w[4], NULL, 10) : 0,
				 on_result, id);
	} else if (strcmp(w[1], "get") == 0 && n >= 3) {
		struct hm__etcd_range_opts o = {.revision = n > 3 ? strtoll(w[3], NULL, 10) : 0};

		e = hm__etcd_range(client, k, kn, &o, on_result, id);
	} else if (strcmp(w[1], "range") == 0 && n >= 4 && (end = arg_bytes(w[3], &en)) != NULL) {
		struct hm__etcd_range_opts o = {.range_end = end,
						.range_end_len = en,
						.limit = n > 4 ? strtoll(w[4], NULL, 10) : 0};

		e = hm__etcd_range(client, k, kn, &o, on_result, id);
	} else if (strcmp(w[1], "del") == 0 && n >= 3) {
		if (n > 3)
			end = arg_bytes(w[3], &en);
		e = hm__etcd_delete(client, k, kn, end, en, on_result, id);
	} else if (strcmp(w[1], "cas") == 0 && n >= 5 && (v = arg_bytes(w[4], &vn)) != NULL) {
		struct hm__etcd_cmp cmp = {.key = k,
					   .key_len = kn,
					   .target = HM__ETCD_MOD,
					   .result = HM__ETCD_EQUAL,
					   .number = strtoll(w[3], NULL, 10)};
		struct hm__etcd_op put = {
		    .kind = HM__ETCD_PUT, .key = k, .key_len = kn, .value = v, .value_len = vn};
		struct hm__etcd_op get = {.kind = HM__ETCD_RANGE, .key = k, .key_len = kn};
		struct hm__etcd_txn t = {.cmp = &cmp,
					 .ncmp = 1,
					 .success = &put,
					 .nsuccess = 1,
					 .failure = &get,
					 .nfailure = 1};

		e = hm__etcd_txn(client, &t, on_result, id);
	} else if (strcmp(w[1], "ops") == 0 && n >= 3) {
		size_t nops = strtoull(w[2], NULL, 10);
		struct hm__etcd_op *ops = calloc(nops ? nops : 1, sizeof(*ops));
		char(*keys)[16] = calloc(nops ? nops : 1, 16);
		struct hm__etcd_txn t = {.success = ops, .nsuccess = nops};

		for (size_t i = 0; ops != NULL && keys != NULL && i < nops; i++) {
			snprintf(keys[i], 16, "ops/%u", (unsigned)(i % 100000000));
			ops[i] = (struct hm__etcd_op){.kind = HM__ETCD_PUT,
						      .key = keys[i],
						      .key_len = strlen(keys[i]),
						      .value = "v",
						      .value_len = 1};
		}
		e = ops != NULL && keys != NULL ? hm__etcd_txn(client, &t, on_result, id) : -ENOMEM;
		free(ops);
		free(keys);
	} else if (strcmp(w[1], "compact") == 0 && n >= 3) {
		e = hm__etcd_compact(client, strtoll(w[2], NULL, 10), false, on_result, id);
	} else if (strcmp(w[1], "status") == 0 && n >= 3) {
		e = hm__etcd_status(client, (uint32_t)strtoul(w[2], NULL, 10), on_result, id);
	} else if (strcmp(w[1], "defrag") == 0 && n >= 3) {
		e = hm__etcd_defragment(client, (uint32_t)strtoul(w[2], NULL, 10), on_result, id);
	} else if (strcmp(w[1], "alarms") == 0) {
		e = hm__etcd_alarm_list(client, on_result, id);
	} else if (strcmp(w[1], "disarm") == 0 && n >= 4) {
		e = hm__etcd_alarm_disarm(client, strtoull(w[2], NULL, 10),
					  (enum hm__etcd_alarm_type)atoi(w[3]), on_result, id);
	} else if (strcmp(w[1], "grant") == 0 && n >= 3) {
		e = hm__etcd_lease_grant(client, strtoll(w[2], NULL, 10), on_result, id);
	} else if (strcmp(w[1], "keepalive") == 0 && n >= 3) {
		e = hm__etcd_lease_keepalive(client, strtoll(w[2], NULL, 10), on_result, id);
	} else if (strcmp(w[1], "revoke") == 0 && n >= 3) {
		e = hm__etcd_lease_revoke(client, strtoll(w[2], NULL, 10), on_result, id);
	} else if (strcmp(w[1], "watch") == 0 && n >= 5) {
		struct watch *slot = NULL;

		for (int i = 0; i < MAX_WATCH && slot == NULL; i++)
			if (watches[i].w == NULL)
				slot = &watches[i];
		end = arg_bytes(w[3], &en);
		if (slot == NULL || end == NULL) {
			e = -ENOMEM;
		} else {
			snprintf(slot->id, sizeof(slot->id), "%s", id);
			e = hm__etcd_watch_start(&slot->w, client, k, kn, en ? end : NULL, en,
						 strtoll(w[4], NULL, 10), on_event, slot);
		}
		if (e == 0)
			fail_now(id, 0, "watching");
		else
			fail_now(id, e, "cannot watch");
		free(id);
		e = 0;
	} else if (strcmp(w[1], "unwatch") == 0 && n >= 3) {
		for (int i = 0; i < MAX_WATCH; i++)
			if (watches[i].w != NULL && strcmp(watches[i].id, w[2]) == 0) {
				hm__etcd_watch_stop(watches[i].w);
				watches[i].w = NULL;
			}
		fail_now(id, 0, "");
		free(id);
	} else if (strcmp(w[1], "resumes") == 0 && n >= 3) {
		uint64_t resumes = 0;

		for (int i = 0; i < MAX_WATCH; i++)
			if (watches[i].w != NULL && strcmp(watches[i].id, w[2]) == 0)
				resumes = hm__etcd_watch_resumes(watches[i].w);
		print_head(id, 0, "", 0);
		printf(",\"resumes\":%" PRIu64 "}\n", resumes);
		fflush(stdout);
		free(id);
	} else if (strcmp(w[1], "current") == 0) {
		print_head(id, 0, "", hm__etcd_current(client));
		printf("}\n");
		fflush(stdout);
		free(id);
	} else if (strcmp(w[1], "bench") == 0 && n >= 3) {
		struct bench *b = calloc(1, sizeof(*b));

		if (b == NULL) {
			e = -ENOMEM;
		} else {
			b->id = id;
			b->n = (uint32_t)strtoul(w[2], NULL, 10);
			b->lat = calloc(b->n ? b->n : 1, sizeof(*b->lat));
			b->key = arg_bytes(n > 3 ? w[3] : "bench", &b->key_len);
			b->value = arg_bytes(n > 4 ? w[4] : "@64", &b->value_len);
			e = hm__etcd_range(client, b->key, b->key_len, NULL, bench_start, b);
			if (e != 0) {
				b->id = NULL;
				free(b->lat);
				free(b->key);
				free(b->value);
				free(b);
			}
		}
	} else {
		fail_now(id, -EINVAL, "unknown command or missing arguments");
		free(id);
	}
	if (e != 0) {
		fail_now(id, e, "not started");
		free(id);
	}
	free(k);
	free(v);
	free(end);
#undef ARG
}

static void on_close(uv_handle_t *h)
{
	(void)h;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[65536];

	(void)h;
	(void)suggested;
	buf->base = chunk;
	buf->len = sizeof(chunk);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	if (nread < 0) {
		/* EOF: stop everything; the loop ends when the client's handles are closed. */
		for (int i = 0; i < MAX_WATCH; i++)
			if (watches[i].w != NULL) {
				hm__etcd_watch_stop(watches[i].w);
				watches[i].w = NULL;
			}
		hm__etcd_close(client);
		uv_close((uv_handle_t *)s, on_close);
		return;
	}
	for (ssize_t i = 0; i < nread; i++) {
		char ch = buf->base[i];

		if (ch == '\n') {
			line[line_len] = '\0';
			command(line);
			line_len = 0;
		} else if (line_len < sizeof(line) - 1) {
			line[line_len++] = ch;
		}
	}
}

int main(int argc, char **argv)
{
	struct hm__etcd_cfg cfg = {0};
	char err[512] = "";
	int e;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--endpoints") == 0)
			cfg.endpoints = argv[i + 1];
		else if (strcmp(argv[i], "--ca") == 0)
			cfg.ca = argv[i + 1];
		else if (strcmp(argv[i], "--cert") == 0)
			cfg.cert = argv[i + 1];
		else if (strcmp(argv[i], "--timeout") == 0)
			cfg.timeout_ms = strtoull(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--connect-timeout") == 0)
			cfg.connect_timeout_ms = strtoull(argv[i + 1], NULL, 10);
		else {
			fprintf(stderr, "hm-etcd: unknown option %s\n", argv[i]);
			return 2;
		}
	}
	loop = uv_default_loop();
	if ((e = hm__etcd_new(&client, loop, &cfg, err, sizeof(err))) != 0) {
		fprintf(stderr, "hm-etcd: %s\n", err);
		return 2;
	}
	uv_pipe_init(loop, &in, 0);
	if (uv_pipe_open(&in, 0) != 0 ||
	    uv_read_start((uv_stream_t *)&in, on_alloc, on_read) != 0) {
		fprintf(stderr, "hm-etcd: stdin must be a pipe\n");
		return 2;
	}
	printf("{\"id\":\"ready\",\"err\":0}\n");
	fflush(stdout);
	uv_run(loop, UV_RUN_DEFAULT);
	uv_loop_close(loop);
	return 0;
}
