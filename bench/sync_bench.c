/*
 * sync_bench: how fast changes travel from the control plane to the routing tables.
 *
 * It starts a real origin and edges (hermod-syncd from the build tree) on loopback in a temporary
 * directory, acts as the control client itself (the exact requests hermodctl sends: REQ,
 * CTL_REQ, wait for ACK), and watches the edges' table files the way routers do (the reader
 * API), so it measures what the issue asks for:
 *
 *   latency    from the client holding the ACK to the change being visible in an edge's table
 *              (single-change requests, one after another), p50/p99/max, with 1 and 3 edges
 *              (for 3: until visible in all of them); and from sending the request (which adds
 *              validation and the fsync). The origin publishes before it answers, so the change
 *              is often visible before the ACK arrives: those count as 0.
 *   throughput changes/s with 4 clients sending 1000-change batches (puts over a steady set of
 *              20 000 dynos per client) for a few seconds, counted end to end (until the last
 *              change is visible on the edge), and each request's ack latency under that load;
 *              --clients and --batch change the mix (with etcd, the origin's batches per
 *              transaction are printed: group commit)
 *   join       a new edge joining a state of 1 000 000 dynos: from its exec to its table file
 *              holding the origin's seq (snapshot download, load, install, catch-up)
 *
 *   sync_bench [--build DIR] [--quick] [--tls] [--store journal|etcd]
 *              [--only latency|throughput|join] [--clients N] [--batch CHANGES]
 *              (DIR: the meson build directory; default: ../ of this program's directory)
 *
 * --store etcd runs the origin on etcd (docs/store-etcd.md): each scenario starts one etcd member
 * (the etcd command from $PATH) with its data on $TMPDIR, and the origin commits every batch
 * there by compare-and-swap. The latency scenario then also prints the ack latency (send ->
 * ACK) beside the disk's own fsync latency (4 KiB pwrite + fdatasync in $TMPDIR), which is what
 * etcd's commit costs are to be read against.
 *
 * --tls runs every syncd socket and the client over mutual TLS, as a cluster spanning networks
 * does (docs/security.md), with certificates made by the openssl command in the temporary
 * directory: EC P-256, the origin dialed as localhost.
 *
 * Run it on a quiet machine; the figures depend on the CPU and, for fsync, on the storage under
 * the temporary directory ($TMPDIR, default /tmp; the origin's journal goes there, the edges'
 * tables to /dev/shm as in production).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/table.h"
#include "common/util.h"
#include "proto/proto.h"
#include "syncd/tlscfg.h"

extern char **environ;

/* Short enough that every path built from them fits PATH_MAX. */
static char build[1024], tmp[1024], dir[1200];
/* Edge tables live in shared memory, as in production (/dev/shm/hermod.table); the origin's
 * journal on $TMPDIR (a real disk, for real fsyncs). */
static char shm[1024], shmdir[1200];
static int port_base;
/* --tls: the certificates (made once, in tmp/pki) */
static bool tls;
static char pki[1200];
/* --store etcd: the member of the current scenario */
static bool use_etcd;
static pid_t etcd_pid;
static char etcd_url[96];
/* the throughput scenario's clients and changes per request */
static int nclients = 4;
static uint32_t batch_size = 1000;

struct proc {
	pid_t pid;
	char admin[PATH_MAX];
	char table[PATH_MAX];
	char url_ctl[64], url_pub[64], url_sync[64]; /* as dialed */
};

_Noreturn static void die(const char *what);

/* The certificates for --tls, by the openssl command (as docs/operations.md shows). */
static void make_pki(void)
{
	char cmd[4096];

	snprintf(pki, sizeof(pki), "%s/pki", tmp);
	snprintf(
	    cmd, sizeof(cmd),
	    "set -e; mkdir -m 700 %s; cd %s; "
	    "k() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $1.key; }; "
	    "k ca; openssl req -x509 -new -key ca.key -out ca.crt -days 2 -subj /CN=bench-ca "
	    "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign; "
	    "leaf() { k $1; openssl req -new -key $1.key -out $1.csr -subj /CN=$1; "
	    "printf "
	    "'basicConstraints=CA:FALSE\nextendedKeyUsage=%%s\nsubjectAltName=DNS:localhost\n' "
	    "$2 > $1.ext; openssl x509 -req -in $1.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
	    "-days 2 -extfile $1.ext -out $1.crt; cat $1.crt $1.key > $1.pem; }; "
	    "leaf origin serverAuth; leaf edge clientAuth; leaf ctl clientAuth",
	    pki, pki);
	if (system(cmd) != 0)
		die("cannot make certificates with openssl");
}

_Noreturn static void die(const char *what)
{
	fprintf(stderr, "sync_bench: %s\n", what);
	exit(1);
}

static void msleep(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static pid_t spawn(char *const argv[], const char *log)
{
	posix_spawn_file_actions_t fa;
	pid_t pid;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 2, log, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
		die("cannot start hermod-syncd");
	posix_spawn_file_actions_destroy(&fa);
	return pid;
}

/* Each scenario runs in its own directory (fresh data, fresh tables). */
static void start_etcd(void);
static void stop_etcd(void);

static void scenario(const char *name)
{
	snprintf(dir, sizeof(dir), "%s/%.100s", tmp, name);
	snprintf(shmdir, sizeof(shmdir), "%s/%.100s", shm, name);
	if (mkdir(dir, 0700) != 0 || mkdir(shmdir, 0700) != 0)
		die("mkdir");
	port_base += 10;
	if (use_etcd) {
		stop_etcd();
		start_etcd(); /* a fresh member per scenario: its state starts empty */
	}
}

/* One admin request; the answer line in out. */
static bool admin_ask(const char *path, const char *req, char *out, size_t len)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	size_t got = 0;
	ssize_t r;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return false;
	}
	while (got + 1 < len && (r = read(fd, out + got, len - 1 - got)) > 0) {
		got += (size_t)r;
		if (memchr(out, '\n', got) != NULL)
			break;
	}
	out[got] = '\0';
	close(fd);
	return got > 0;
}

static bool admin_up(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0), r;

	if (strlen(path) >= sizeof(sa.sun_path))
		die("socket path too long");
	memcpy(sa.sun_path, path, strlen(path) + 1);
	r = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	close(fd);
	return r == 0;
}

static void wait_admin(const char *path)
{
	for (int i = 0; i < 3000 && !admin_up(path); i++)
		msleep(5);
	if (!admin_up(path))
		die("a syncd did not come up (see the logs in the temporary directory)");
}

static void start_origin(struct proc *o, const char *extra)
{
	char exe[PATH_MAX], data[PATH_MAX], log[PATH_MAX], listen[3][64], cert[PATH_MAX],
	    ca[PATH_MAX];
	const char *scheme = tls ? "tls+tcp" : "tcp";
	char *argv[24];
	int n = 0;

	snprintf(exe, sizeof(exe), "%s/syncd/hermod-syncd", build);
	snprintf(data, sizeof(data), "%s/origin-data", dir);
	snprintf(o->admin, sizeof(o->admin), "%s/origin.sock", dir);
	snprintf(log, sizeof(log), "%s/origin.log", dir);

	for (int i = 0; i < 3; i++)
		snprintf(listen[i], sizeof(listen[i]), "%s://127.0.0.1:%d", scheme, port_base + i);
	/* Over TLS, peers name the origin as its certificate does. */
	snprintf(o->url_ctl, sizeof(o->url_ctl), "%s://%s:%d", scheme,
		 tls ? "localhost" : "127.0.0.1", port_base);
	snprintf(o->url_pub, sizeof(o->url_pub), "%s://%s:%d", scheme,
		 tls ? "localhost" : "127.0.0.1", port_base + 1);
	snprintf(o->url_sync, sizeof(o->url_sync), "%s://%s:%d", scheme,
		 tls ? "localhost" : "127.0.0.1", port_base + 2);
	argv[n++] = exe;
	argv[n++] = "origin";
	argv[n++] = "--control";
	argv[n++] = listen[0];
	argv[n++] = "--publish";
	argv[n++] = listen[1];
	argv[n++] = "--sync";
	argv[n++] = listen[2];
	argv[n++] = "--data";
	argv[n++] = data;
	argv[n++] = "--admin";
	argv[n++] = o->admin;
	if (tls) {
		snprintf(cert, sizeof(cert), "%s/origin.pem", pki);
		snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
		argv[n++] = "--tls-cert";
		argv[n++] = cert;
		argv[n++] = "--tls-ca";
		argv[n++] = ca;
	}
	if (extra != NULL) {
		argv[n++] = "--compact-after";
		argv[n++] = (char *)extra;
	}
	if (use_etcd) {
		argv[n++] = "--store";
		argv[n++] = etcd_url;
	}
	argv[n] = NULL;
	o->pid = spawn(argv, log);
	wait_admin(o->admin);
}

static void start_edge(struct proc *e, const struct proc *o, int i)
{
	char exe[PATH_MAX], log[PATH_MAX], node[32], cert[PATH_MAX], ca[PATH_MAX];
	char *argv[20];
	int n = 0;

	snprintf(exe, sizeof(exe), "%s/syncd/hermod-syncd", build);
	snprintf(e->admin, sizeof(e->admin), "%s/edge%d.sock", dir, i);
	snprintf(e->table, sizeof(e->table), "%s/edge%d.table", shmdir, i);
	snprintf(log, sizeof(log), "%s/edge%d.log", dir, i);
	snprintf(node, sizeof(node), "edge%d", i);
	argv[n++] = exe;
	argv[n++] = "edge";
	argv[n++] = "--publish";
	argv[n++] = (char *)o->url_pub;
	argv[n++] = "--sync";
	argv[n++] = (char *)o->url_sync;
	argv[n++] = "--table";
	argv[n++] = e->table;
	argv[n++] = "--admin";
	argv[n++] = e->admin;
	argv[n++] = "--node";
	argv[n++] = node;
	if (tls) {
		snprintf(cert, sizeof(cert), "%s/edge.pem", pki);
		snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
		argv[n++] = "--tls-cert";
		argv[n++] = cert;
		argv[n++] = "--tls-ca";
		argv[n++] = ca;
	}
	argv[n] = NULL;
	e->pid = spawn(argv, log);
}

static void stop(struct proc *p)
{
	int st;

	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	waitpid(p->pid, &st, 0);
	p->pid = 0;
}

static int cmp_u64(const void *a, const void *b);

/* One etcd member on port_base + 5 (client) and + 6 (peer), its data in the scenario's dir. */
static void start_etcd(void)
{
	char data[PATH_MAX], log[PATH_MAX], client[64], peer[64], cluster[96];
	char *argv[] = {"/usr/bin/etcd",
			"--name",
			"bench",
			"--data-dir",
			data,
			"--listen-client-urls",
			client,
			"--advertise-client-urls",
			client,
			"--listen-peer-urls",
			peer,
			"--initial-advertise-peer-urls",
			peer,
			"--initial-cluster",
			cluster,
			NULL};
	const char *path = getenv("HM_ETCD") != NULL ? getenv("HM_ETCD") : "/usr/bin/etcd";

	argv[0] = (char *)path;
	snprintf(data, sizeof(data), "%s/etcd", dir);
	snprintf(log, sizeof(log), "%s/etcd.log", dir);
	snprintf(client, sizeof(client), "http://127.0.0.1:%d", port_base + 5);
	snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", port_base + 6);
	snprintf(cluster, sizeof(cluster), "bench=%s", peer);
	snprintf(etcd_url, sizeof(etcd_url), "etcd:%s", client);
	etcd_pid = spawn(argv, log);
	/* The origin retries its first requests for 5 s; give the member a head start. */
	for (int i = 0; i < 100; i++) {
		struct sockaddr_in sa = {.sin_family = AF_INET,
					 .sin_port = htons((uint16_t)(port_base + 5)),
					 .sin_addr.s_addr = htonl(0x7f000001)};
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		bool up = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;

		close(fd);
		if (up)
			break;
		msleep(50);
	}
	msleep(500); /* a single member elects itself within its election timeout */
}

static void stop_etcd(void)
{
	int st;

	if (etcd_pid <= 0)
		return;
	kill(etcd_pid, SIGTERM);
	waitpid(etcd_pid, &st, 0);
	etcd_pid = 0;
}

/* The disk's own fsync latency under $TMPDIR: 4 KiB appended and fdatasync'ed, n times. */
static void disk_fsync(int n)
{
	char path[PATH_MAX], buf[4096] = {0};
	uint64_t *t = malloc((size_t)n * sizeof(*t));
	int fd;

	snprintf(path, sizeof(path), "%s/fsync-probe", dir);
	if (t == NULL || (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) < 0)
		die("fsync probe");
	for (int i = 0; i < n; i++) {
		uint64_t t0 = hm_mono_ns();

		if (pwrite(fd, buf, sizeof(buf), (off_t)i * (off_t)sizeof(buf)) !=
			(ssize_t)sizeof(buf) ||
		    fdatasync(fd) != 0)
			die("fsync probe");
		t[i] = hm_mono_ns() - t0;
	}
	close(fd);
	unlink(path);
	qsort(t, (size_t)n, sizeof(*t), cmp_u64);
	printf(
	    "  the disk's fsync (4 KiB pwrite + fdatasync in $TMPDIR): p50 %.3f ms  p99 %.3f ms\n",
	    t[n / 2] / 1e6, t[n * 99 / 100] / 1e6);
	printf("{\"bench\":\"disk_fsync\",\"n\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", n,
	       t[n / 2] / 1e6, t[n * 99 / 100] / 1e6);
	free(t);
}

/* ---- The control client (what hermodctl does) -------------------------------------------- */

struct client {
	nng_socket s;
	struct hm_proto_decoder *d;
	struct hm_pbuf pb;
};

static void client_open(struct client *c, const char *url)
{
	nng_tls_config *cfg = NULL;
	nng_dialer d;

	memset(c, 0, sizeof(*c));
	if (tls) {
		char cert[PATH_MAX], ca[PATH_MAX], err[512];
		struct hm__tls *t;
		bool named;

		snprintf(cert, sizeof(cert), "%s/ctl.pem", pki);
		snprintf(ca, sizeof(ca), "%s/ca.crt", pki);
		if (hm__tls_load(&t, cert, ca, NULL, err, sizeof(err)) != 0 ||
		    hm__tls_dialer_config(t, url, &cfg, &named) != 0)
			die("cannot load the client's certificate");
		hm__tls_unref(t);
	}
	if (nng_req0_open(&c->s) != 0 ||
	    nng_socket_set_size(c->s, NNG_OPT_RECVMAXSZ, HM_PROTO_MAX_MSG) != 0 ||
	    nng_socket_set_ms(c->s, NNG_OPT_RECVTIMEO, 120000) != 0 ||
	    nng_dialer_create(&d, c->s, url) != 0 ||
	    (cfg != NULL && nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg) != 0) ||
	    nng_dialer_start(d, NNG_FLAG_NONBLOCK) != 0 || hm_proto_decoder_new(&c->d) != 0)
		die("cannot connect to the origin");
	if (cfg != NULL)
		nng_tls_config_free(cfg);
}

static void client_close(struct client *c)
{
	nng_close(c->s);
	hm_proto_decoder_free(c->d);
	hm_pbuf_fini(&c->pb);
}

/* Sends changes as one request (in parts if needed); returns the seq acknowledged. */
static uint64_t request(struct client *c, const struct hm_change *ch, uint32_t n)
{
	uint8_t id[16];
	uint32_t nparts = (n + HM_PROTO_MAX_CHANGES - 1) / HM_PROTO_MAX_CHANGES;
	uint64_t seq = 0;

	hm_random_bytes(id, sizeof(id));
	for (uint32_t p = 0; p < nparts; p++) {
		uint32_t from = p * HM_PROTO_MAX_CHANGES,
			 k = HM_MIN(n - from, HM_PROTO_MAX_CHANGES);
		nng_msg *m, *rep;
		struct hm_msg r;

		hm_pbuf_reset(&c->pb);
		if (hm_proto_encode_ctl_req(&c->pb, id, p, nparts, ch + from, k) != 0 ||
		    nng_msg_alloc(&m, c->pb.len) != 0)
			die("cannot encode a request");
		memcpy(nng_msg_body(m), c->pb.data, c->pb.len);
		if (nng_sendmsg(c->s, m, 0) != 0 || nng_recvmsg(c->s, &rep, 0) != 0)
			die("no answer from the origin");
		if (hm_proto_decode(c->d, nng_msg_body(rep), nng_msg_len(rep), &r) != 0 ||
		    r.type != HM_MSG_CTL_REP || r.ctl_rep.status == HM_CTL_ERROR)
			die("the origin rejected a request");
		seq = r.ctl_rep.seq;
		nng_msg_free(rep);
	}
	return seq;
}

/* ---- Watching tables ---------------------------------------------------------------------- */

struct watch {
	struct hm_table_reader *r;
};

static void watch_open(struct watch *w, const char *path)
{
	if (hm_table_reader_new(&w->r, path) != 0)
		die("table reader");
}

/* The seq routers see in the table now (0 if none). */
static uint64_t watch_seq(struct watch *w)
{
	struct hm_table_map *m = hm_table_reader_map(w->r);
	struct hm_table_info info;

	if (m == NULL) {
		hm_table_reader_check(w->r);
		m = hm_table_reader_map(w->r);
		if (m == NULL)
			return 0;
	}
	hm_table_map_info(m, &info);
	return info.seq;
}

static void watch_until(struct watch *w, uint64_t seq, unsigned timeout_ms)
{
	uint64_t deadline = hm_mono_ms() + timeout_ms;
	struct timespec ts = {0, 10000};
	unsigned n = 0;

	while (watch_seq(w) < seq) {
		if (hm_mono_ms() > deadline)
			die("an edge did not get a change in time");
		if (++n % 64 == 0)
			hm_table_reader_check(w->r); /* a replaced file (growth, resync) */
		nanosleep(&ts, NULL);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void dyno(struct hm_change *c, char *name, size_t len, uint32_t i, const char *app)
{
	memset(c, 0, sizeof(*c));
	c->op = HM_OP_DYNO_PUT;
	c->app = app;
	c->app_len = (uint8_t)strlen(app);
	snprintf(name, len, "web.%u", i);
	c->name = name;
	c->name_len = (uint16_t)strlen(name);
	c->state = HM_DYNO_UP;
	c->addr.family = 4;
	c->addr.port = (uint16_t)(1024 + i % 60000);
	c->addr.ip[0] = 10;
	c->addr.ip[1] = (uint8_t)(i >> 16);
	c->addr.ip[2] = (uint8_t)(i >> 8);
	c->addr.ip[3] = (uint8_t)i;
}

static uint64_t app_put(struct client *c, const char *app)
{
	struct hm_change ch = {.op = HM_OP_APP_PUT, .app = app, .app_len = (uint8_t)strlen(app)};

	return request(c, &ch, 1);
}

/* ---- Scenarios ---------------------------------------------------------------------------- */

static void latency(int nedges, int n)
{
	struct proc o = {0}, e[3] = {{0}};
	struct watch w[3];
	struct client c;
	uint64_t *lat = malloc((size_t)n * sizeof(*lat)), *e2e = malloc((size_t)n * sizeof(*e2e)),
		 *ack = malloc((size_t)n * sizeof(*ack)), seq;
	char name[32];

	start_origin(&o, NULL);
	for (int i = 0; i < nedges; i++) {
		start_edge(&e[i], &o, i);
		wait_admin(e[i].admin);
		watch_open(&w[i], e[i].table);
	}
	client_open(&c, o.url_ctl);
	seq = app_put(&c, "lat");
	for (int i = 0; i < nedges; i++)
		watch_until(&w[i], seq, 10000);
	for (int k = 0; k < n; k++) {
		struct hm_change ch;
		uint64_t t_send, t_ack, worst = 0;

		dyno(&ch, name, sizeof(name), (uint32_t)k, "lat");
		t_send = hm_mono_ns();
		seq = request(&c, &ch, 1);
		t_ack = hm_mono_ns();
		for (int i = 0; i < nedges; i++) {
			uint64_t t;

			watch_until(&w[i], seq, 10000);
			t = hm_mono_ns();
			worst = HM_MAX(worst, t);
		}
		lat[k] = worst > t_ack ? worst - t_ack : 0;
		e2e[k] = worst - t_send;
		ack[k] = t_ack - t_send;
	}
	qsort(lat, (size_t)n, sizeof(*lat), cmp_u64);
	qsort(e2e, (size_t)n, sizeof(*e2e), cmp_u64);
	qsort(ack, (size_t)n, sizeof(*ack), cmp_u64);
	printf("latency, %d edge%s, %d single-change requests (ack -> visible in %s table%s): "
	       "p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
	       nedges, nedges > 1 ? "s" : "", n, nedges > 1 ? "every" : "the", nedges > 1 ? "" : "",
	       lat[n / 2] / 1e6, lat[n * 99 / 100] / 1e6, lat[n - 1] / 1e6);
	printf("  and from sending the request (validation, fsync, publish, apply): p50 %.3f ms  "
	       "p99 %.3f ms  max %.3f ms\n",
	       e2e[n / 2] / 1e6, e2e[n * 99 / 100] / 1e6, e2e[n - 1] / 1e6);
	printf("{\"bench\":\"latency\",\"edges\":%d,\"n\":%d,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
	       "\"max_ms\":%.3f,\"send_p50_ms\":%.3f,\"send_p99_ms\":%.3f}\n",
	       nedges, n, lat[n / 2] / 1e6, lat[n * 99 / 100] / 1e6, lat[n - 1] / 1e6,
	       e2e[n / 2] / 1e6, e2e[n * 99 / 100] / 1e6);
	printf(
	    "  ack latency (send -> ACK; the %s commit): p50 %.3f ms  p99 %.3f ms  max %.3f ms\n",
	    use_etcd ? "etcd" : "journal's", ack[n / 2] / 1e6, ack[n * 99 / 100] / 1e6,
	    ack[n - 1] / 1e6);
	printf("{\"bench\":\"ack\",\"store\":\"%s\",\"edges\":%d,\"n\":%d,\"p50_ms\":%.3f,"
	       "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
	       use_etcd ? "etcd" : "journal", nedges, n, ack[n / 2] / 1e6, ack[n * 99 / 100] / 1e6,
	       ack[n - 1] / 1e6);
	if (nedges == 1)
		disk_fsync(n);
	free(ack);
	client_close(&c);
	for (int i = 0; i < nedges; i++) {
		hm_table_reader_free(w[i].r);
		stop(&e[i]);
	}
	stop(&o);
	free(lat);
	free(e2e);
}

struct tput_arg {
	const char *url;
	int id;
	uint32_t batch;
	uint64_t until_ns;
	_Atomic uint64_t *changes;
	uint64_t last_seq;
	uint64_t *ack; /* ns from send to ACK, one per request */
	size_t nack, ack_cap;
};

static void *tput_client(void *p)
{
	struct tput_arg *a = p;
	struct client c;
	struct hm_change *ch = malloc(a->batch * sizeof(*ch));
	char(*names)[32] = malloc(a->batch * sizeof(*names));
	char app[16];
	uint32_t k = 0;

	snprintf(app, sizeof(app), "tp%d", a->id);
	client_open(&c, a->url);
	app_put(&c, app);
	while (hm_mono_ns() < a->until_ns) {
		uint64_t t0, dt;

		for (uint32_t i = 0; i < a->batch; i++)
			dyno(&ch[i], names[i], sizeof(names[i]), (k + i) % 20000, app);
		t0 = hm_mono_ns();
		a->last_seq = request(&c, ch, a->batch);
		dt = hm_mono_ns() - t0;
		if (a->nack == a->ack_cap) {
			a->ack_cap = a->ack_cap ? 2 * a->ack_cap : 1024;
			if ((a->ack = realloc(a->ack, a->ack_cap * sizeof(*a->ack))) == NULL)
				die("out of memory");
		}
		a->ack[a->nack++] = dt;
		atomic_fetch_add(a->changes, a->batch);
		k += a->batch;
	}
	client_close(&c);
	free(ch);
	free(names);
	return NULL;
}

static void throughput(unsigned seconds)
{
	struct proc o = {0}, e = {0};
	struct watch w;
	struct tput_arg args[64];
	pthread_t th[64];
	_Atomic uint64_t changes = 0;
	uint64_t t0, t_end, last = 0, *ack = NULL;
	size_t nack = 0;
	char so[8192];

	start_origin(&o, NULL);
	start_edge(&e, &o, 0);
	wait_admin(e.admin);
	watch_open(&w, e.table);
	t0 = hm_mono_ns();
	for (int i = 0; i < nclients; i++) {
		args[i] = (struct tput_arg){.url = o.url_ctl,
					    .id = i,
					    .batch = batch_size,
					    .until_ns = t0 + (uint64_t)seconds * 1000000000ull,
					    .changes = &changes};
		pthread_create(&th[i], NULL, tput_client, &args[i]);
	}
	for (int i = 0; i < nclients; i++) {
		pthread_join(th[i], NULL);
		last = HM_MAX(last, args[i].last_seq);
	}
	watch_until(&w, last, 60000);
	t_end = hm_mono_ns();
	{
		/* Nothing lost: the edge's digest at that seq is the origin's. */
		char se[8192];
		const char *a, *b;

		msleep(200);
		if (!admin_ask(o.admin, "status\n", so, sizeof(so)) ||
		    !admin_ask(e.admin, "status\n", se, sizeof(se)) ||
		    (a = strstr(so, "\"digest\":\"")) == NULL ||
		    (b = strstr(se, "\"digest\":\"")) == NULL || strncmp(a, b, 42) != 0)
			die("the edge's digest differs from the origin's after the throughput run");
	}
	for (int i = 0; i < nclients; i++) {
		if ((ack = realloc(ack, (nack + args[i].nack + 1) * sizeof(*ack))) == NULL)
			die("out of memory");
		memcpy(ack + nack, args[i].ack, args[i].nack * sizeof(*ack));
		nack += args[i].nack;
		free(args[i].ack);
	}
	qsort(ack, nack, sizeof(*ack), cmp_u64);
	printf("throughput, %d clients x %u-change batches for %us: %" PRIu64 " changes, "
	       "%.0f changes/s end to end (until visible on the edge), %" PRIu64 " batches\n",
	       nclients, batch_size, seconds, (uint64_t)changes, changes / ((t_end - t0) / 1e9),
	       last);
	printf("  ack latency under this load: p50 %.3f ms  p99 %.3f ms  (%zu requests)\n",
	       nack ? ack[nack / 2] / 1e6 : 0, nack ? ack[nack * 99 / 100] / 1e6 : 0, nack);
	if (use_etcd) {
		const char *c = strstr(so, "\"etcd_commits\":"),
			   *b = strstr(so, "\"etcd_batches\":");

		if (c != NULL && b != NULL) {
			unsigned long long nb = strtoull(b + 15, NULL, 10),
					   nc = strtoull(c + 15, NULL, 10);

			printf("  etcd: %llu batches in %llu transactions (%.1f per txn)\n", nb, nc,
			       (double)nb / (double)HM_MAX(1, nc));
		}
	}
	printf("{\"bench\":\"throughput\",\"store\":\"%s\",\"clients\":%d,\"batch\":%u,"
	       "\"changes\":%" PRIu64 ",\"per_s\":%.0f,\"ack_p50_ms\":%.3f,\"ack_p99_ms\":%.3f}\n",
	       use_etcd ? "etcd" : "journal", nclients, batch_size, (uint64_t)changes,
	       changes / ((t_end - t0) / 1e9), nack ? ack[nack / 2] / 1e6 : 0,
	       nack ? ack[nack * 99 / 100] / 1e6 : 0);
	free(ack);
	hm_table_reader_free(w.r);
	stop(&e);
	stop(&o);
}

static void join(uint32_t ndynos)
{
	struct proc o = {0}, e = {0};
	struct watch w;
	struct client c;
	struct hm_change *ch;
	char(*names)[32];
	uint64_t seq, t0;
	const uint32_t per = 100000;

	start_origin(&o, NULL);
	client_open(&c, o.url_ctl);
	app_put(&c, "big");
	ch = malloc(per * sizeof(*ch));
	names = malloc(per * sizeof(*names));
	for (uint32_t base = 0; base < ndynos; base += per) {
		for (uint32_t i = 0; i < per; i++)
			dyno(&ch[i], names[i], sizeof(names[i]), base + i, "big");
		request(&c, ch, HM_MIN(per, ndynos - base));
	}
	client_close(&c);
	/* Restart with a tiny compaction threshold: the snapshot then holds the whole state, as it
	 * would on a long-running origin. */
	stop(&o);
	start_origin(&o, "1");
	client_open(&c, o.url_ctl);
	seq = app_put(&c, "tick");
	msleep(1500); /* the maintenance timer starts the compaction within a second */
	for (int i = 0; i < 600; i++) {
		char st[8192];

		if (admin_ask(o.admin, "status\n", st, sizeof(st)) &&
		    strstr(st, "\"compacting\":false") != NULL &&
		    strstr(st, "\"snapshot_seq\":0,") == NULL)
			break;
		msleep(100);
	}
	start_edge(&e, &o, 9);
	t0 = hm_mono_ns();
	watch_open(&w, e.table);
	watch_until(&w, seq, 120000);
	printf("join: a new edge holds a state of %u dynos %.3f s after its exec (snapshot "
	       "download, load, install, catch-up)\n",
	       ndynos, (hm_mono_ns() - t0) / 1e9);
	printf("{\"bench\":\"join\",\"dynos\":%u,\"seconds\":%.3f}\n", ndynos,
	       (hm_mono_ns() - t0) / 1e9);
	client_close(&c);
	hm_table_reader_free(w.r);
	stop(&e);
	stop(&o);
	free(ch);
	free(names);
}

int main(int argc, char **argv)
{
	bool quick = false;
	const char *only = NULL;
	char self[1000], cmd[2200];
	ssize_t n;

	signal(SIGPIPE, SIG_IGN);
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		*strrchr(self, '/') = '\0';
		snprintf(build, sizeof(build), "%s/..", self);
	}
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--build") == 0 && i + 1 < argc)
			snprintf(build, sizeof(build), "%s", argv[++i]);
		else if (strcmp(argv[i], "--quick") == 0)
			quick = true;
		else if (strcmp(argv[i], "--tls") == 0)
			tls = true;
		else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
			only = argv[++i];
		else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc &&
			 atoi(argv[i + 1]) >= 1 && atoi(argv[i + 1]) <= 64)
			nclients = atoi(argv[++i]);
		else if (strcmp(argv[i], "--batch") == 0 && i + 1 < argc &&
			 atoi(argv[i + 1]) >= 1 && atoi(argv[i + 1]) <= 16384)
			batch_size = (uint32_t)atoi(argv[++i]);
		else if (strcmp(argv[i], "--store") == 0 && i + 1 < argc &&
			 (strcmp(argv[i + 1], "etcd") == 0 || strcmp(argv[i + 1], "journal") == 0))
			use_etcd = strcmp(argv[++i], "etcd") == 0;
		else {
			fprintf(stderr, "usage: sync_bench [--build DIR] [--quick] [--tls] "
					"[--store journal|etcd] [--only latency|throughput|join]\n"
					"       [--clients 1..64] [--batch 1..16384]\n");
			return 2;
		}
	}
	{
		const char *t = getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";

		if (strlen(t) > 900)
			t = "/tmp";
		snprintf(tmp, sizeof(tmp), "%s/hermod-sync-bench-XXXXXX", t);
	}
	if (mkdtemp(tmp) == NULL)
		die("mkdtemp");
	snprintf(shm, sizeof(shm), "/dev/shm/hermod-sync-bench-XXXXXX");
	if (mkdtemp(shm) == NULL)
		die("mkdtemp /dev/shm");
	srand((unsigned)getpid());
	/* Below Linux's ephemeral range (32768 up), so that no outgoing connection (the origin's
	 * to etcd, etcd's own) can hold a port a syncd is about to listen on. */
	port_base = 20000 + rand() % 10000;
	if (tls)
		make_pki();
	printf("# sync_bench: build %s, temporary directory %s, %s, store %s\n", build, tmp,
	       tls ? "mutual TLS on every syncd socket" : "plaintext on loopback",
	       use_etcd ? "etcd (one member)" : "journal");
	fflush(stdout);
	if (only == NULL || strcmp(only, "latency") == 0) {
		scenario("latency1");
		latency(1, quick ? 300 : 2000);
		scenario("latency3");
		latency(3, quick ? 300 : 2000);
	}
	if (only == NULL || strcmp(only, "throughput") == 0) {
		scenario("throughput");
		throughput(quick ? 2 : 5);
	}
	if (only == NULL || strcmp(only, "join") == 0) {
		scenario("join");
		join(quick ? 100000 : 1000000);
	}
	stop_etcd();
	snprintf(cmd, sizeof(cmd), getenv("HM_BENCH_KEEP") ? "true %s %s" : "rm -rf %s %s", tmp,
		 shm);
	if (system(cmd) != 0)
		fprintf(stderr, "sync_bench: could not remove %s\n", tmp);
	nng_fini();
	return 0;
}
