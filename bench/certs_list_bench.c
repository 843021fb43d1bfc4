/*
 * Benchmark of the admin socket's `certs` answer at 100,000 certificates (not a test: run it by
 * hand, on a quiet machine).
 *
 *   certs_list_bench [--n N] [--rounds R] [--dir DIR]
 *
 * The real admin server (syncd/admin.c) on a libuv loop in this process, serving a certificate
 * store in private memory of N entries (default 100,000; one name in ten a wildcard, plus the
 * default entry), each with the metadata the origin makes for it (a SHA-256 and one SAN), so the
 * answer is what an edge with that store sends: about 150 bytes of JSON per certificate, in
 * slices of 256 KiB. A client thread asks `certs` R times (default 5), reads each answer whole,
 * checks that it lists every certificate, and reports the median time from the request to the
 * last byte. The cost of the answer is the slices' walk of the store plus the JSON: run it
 * before and after a change to the walk (the certs cursor: docs/tls.md, "Listing in parts").
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/util.h"
#include "syncd/admin.h"

#define ROUNDS_MAX 64

static void die(const char *what, int e)
{
	fprintf(stderr, "certs_list_bench: %s: %s\n", what, hm_strerror(e));
	exit(1);
}

static struct hm_certstore_writer *store;
static char sock_path[100];
static uint32_t n_certs = 100000;
static int rounds = 5;
static double ms[ROUNDS_MAX];
static uv_async_t done_async;

static void no_fields(void *ctx, struct hm__jsonw *w)
{
	(void)ctx;
	(void)w;
}

static const struct hm_table_writer *no_table(void *ctx)
{
	(void)ctx;
	return NULL;
}

static const struct hm_certstore_writer *the_store(void *ctx)
{
	(void)ctx;
	return store;
}

static const struct hm__admin_ops ops = {
    .status = no_fields, .dump_head = no_fields, .table = no_table, .certs = the_store};

/* Entry i with the metadata syncd/certput.c makes: msgpack [bin8 sha256, [str SAN]]. */
static void put_entry(uint32_t i)
{
	static const char chain[] =
	    "-----BEGIN CERTIFICATE-----\nbench\n-----END CERTIFICATE-----\n";
	static const char key[] = "-----BEGIN PRIVATE KEY-----\nbench\n-----END PRIVATE KEY-----\n";
	char name[64];
	uint8_t meta[35 + 2 + 64];
	int nl = snprintf(name, sizeof(name),
			  i % 10 == 9 ? "*.app%u.example%u.com" : "app%u.example%u.com", i, i % 97);
	struct hm_cert_put p = {.name = name,
				.name_len = (size_t)nl,
				.cert = chain,
				.cert_len = sizeof(chain) - 1,
				.key = key,
				.key_len = sizeof(key) - 1,
				.meta = meta,
				.meta_len = 35 + 3 + (size_t)nl,
				.not_after = 1800000000 + i};
	int e;

	meta[0] = 0x92;
	meta[1] = 0xc4;
	meta[2] = 32;
	for (int k = 0; k < 32; k++)
		meta[3 + k] = (uint8_t)(i * 131u + (uint32_t)k);
	meta[35] = 0x91;
	meta[36] = 0xd9;
	meta[37] = (uint8_t)nl;
	memcpy(meta + 38, name, (size_t)nl);
	memcpy(p.id, &i, sizeof(i));
	if ((e = hm_certstore_put(store, &p)) != 0)
		die("put", e);
}

/* Asks `certs` once and reads the answer to its newline; returns the names it lists. */
static uint64_t ask(char *buf, size_t cap, size_t *len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	uint64_t names = 0;
	int fd;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock_path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		die("connect", -errno);
	if (write(fd, "certs\n", 6) != 6)
		die("write", -errno);
	*len = 0;
	for (;;) {
		ssize_t r = read(fd, buf + *len, cap - *len);

		if (r <= 0)
			die("read", r < 0 ? -errno : -EPROTO);
		*len += (size_t)r;
		if (buf[*len - 1] == '\n')
			break;
		if (*len == cap)
			die("answer too long", -ENOBUFS);
	}
	close(fd);
	for (const char *p = buf;
	     (p = memmem(p, (size_t)(buf + *len - p), "{\"name\":", 8)) != NULL; p += 8)
		names++;
	if (memmem(buf, *len, "\"error\"", 7) != NULL)
		die("the answer has an error", -EPROTO);
	return names;
}

static void *client(void *arg)
{
	size_t cap = (size_t)n_certs * 400 + (1u << 20), len = 0;
	char *buf = malloc(cap);

	(void)arg;
	if (buf == NULL)
		die("malloc", -ENOMEM);
	for (int k = 0; k < rounds; k++) {
		uint64_t t0 = hm_mono_ns(), names = ask(buf, cap, &len);

		ms[k] = (double)(hm_mono_ns() - t0) / 1e6;
		if (names != (uint64_t)n_certs + 1)
			die("not every certificate listed", -EPROTO);
	}
	printf("answer: %zu bytes, %u certificates\n", len, n_certs + 1);
	free(buf);
	uv_async_send(&done_async);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void on_done(uv_async_t *h)
{
	hm__admin_stop(h->data);
	uv_close((uv_handle_t *)h, NULL);
}

int main(int argc, char **argv)
{
	struct hm_certstore_caps caps;
	const char *base = "/tmp";
	char dir[64], err[256];
	struct hm__admin *admin;
	uv_loop_t loop;
	pthread_t th;
	int e;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--n") == 0 && i + 1 < argc)
			n_certs = (uint32_t)strtoul(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
			rounds = atoi(argv[++i]);
		else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
			base = argv[++i];
		else {
			fprintf(stderr,
				"usage: certs_list_bench [--n N] [--rounds R] [--dir DIR]\n");
			return 2;
		}
	}
	if (rounds < 1 || rounds > ROUNDS_MAX || n_certs < 1 || n_certs > 4000000) {
		fprintf(stderr, "certs_list_bench: --rounds 1..%d, --n 1..4000000\n", ROUNDS_MAX);
		return 2;
	}
	caps = (struct hm_certstore_caps){n_certs + n_certs / 4 + 1, (uint64_t)n_certs * 512};
	if ((e = hm_certstore_writer_open(&store, NULL, &caps, 0, 0)) != 0 ||
	    (e = hm_certstore_begin(store)) != 0)
		die("store", e);
	for (uint32_t i = 0; i < n_certs; i++)
		put_entry(i);
	{
		static const char pem[] = "-----BEGIN X-----\nbench\n-----END X-----\n";
		struct hm_cert_put d = {.name = "default",
					.name_len = 7,
					.cert = pem,
					.cert_len = sizeof(pem) - 1,
					.key = pem,
					.key_len = sizeof(pem) - 1,
					.not_after = 1800000000};

		if ((e = hm_certstore_put(store, &d)) != 0 ||
		    (e = hm_certstore_commit(store, 1, 1)) != 0)
			die("store", e);
	}
	snprintf(dir, sizeof(dir), "%s/hermod-certs-list-bench-XXXXXX", base);
	if (mkdtemp(dir) == NULL)
		die("mkdtemp", -errno);
	snprintf(sock_path, sizeof(sock_path), "%s/admin.sock", dir);
	uv_loop_init(&loop);
	if ((e = hm__admin_start(&admin, &loop, sock_path, 60000, &ops, NULL, err, sizeof(err))) !=
	    0) {
		fprintf(stderr, "certs_list_bench: %s\n", err);
		return 1;
	}
	uv_async_init(&loop, &done_async, on_done);
	done_async.data = admin;
	if ((e = pthread_create(&th, NULL, client, NULL)) != 0)
		die("pthread_create", -e);
	uv_run(&loop, UV_RUN_DEFAULT);
	pthread_join(th, NULL);
	uv_loop_close(&loop);
	hm_certstore_writer_close(store);
	rmdir(dir);
	qsort(ms, (size_t)rounds, sizeof(ms[0]), cmp_double);
	printf("certs of %u certificates: median %.1f ms (min %.1f, max %.1f; %d rounds)\n",
	       n_certs + 1, ms[rounds / 2], ms[0], ms[rounds - 1], rounds);
	return 0;
}
