/*
 * hermod-syncd: `hermod-syncd origin ...` or `hermod-syncd edge ...`. Each role has its own
 * option table; the role runs until SIGTERM/SIGINT and its return value is the exit status.
 * Bad usage exits 2 with a one-line reason (../shared/CONTRACT.md).
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/log.h"
#include "common/opts.h"
#include "syncd/nngx.h"
#include "syncd/syncd.h"
#include "syncd/tlscfg.h"

static const char *const log_levels[] = {"err", "warning", "notice", "info", "debug", NULL};

static int check_url(const char *value, char *err, size_t errlen)
{
	return hm__nng_url_check(value, err, errlen);
}

static int check_urls(const char *value, char *err, size_t errlen)
{
	return hm__nng_urls_check(value, err, errlen);
}

static int check_nonempty(const char *value, char *err, size_t errlen)
{
	if (value[0] == '\0') {
		snprintf(err, errlen, "must not be empty");
		return -1;
	}
	return 0;
}

/* "journal", or "etcd:" and a comma-separated list of http:// or https:// URLs. */
static int check_store(const char *value, char *err, size_t errlen)
{
	const char *p;

	if (strcmp(value, "journal") == 0)
		return 0;
	if (strncmp(value, "etcd:", 5) != 0) {
		snprintf(err, errlen, "want journal or etcd:URL[,URL...]");
		return -1;
	}
	for (p = value + 5;; p++) {
		size_t n = strcspn(p, ",");

		if ((n < 8 || strncmp(p, "http://", 7) != 0) &&
		    (n < 9 || strncmp(p, "https://", 8) != 0)) {
			snprintf(err, errlen,
				 "etcd endpoint '%.*s' is not an http:// or https:// URL", (int)n,
				 p);
			return -1;
		}
		p += n;
		if (*p == '\0')
			return 0;
	}
}

static const struct hm_opt origin_opts[] = {
    {.name = "control",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, control),
     .def = "ipc:///run/hermod/control.sock",
     .arg = "URL",
     .check = check_url,
     .help = "where hermodctl sends changes (nng REP, listened on; ipc:// is made mode 0660)"},
    {.name = "publish",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, publish),
     .def = "tcp://127.0.0.1:7401",
     .arg = "URL",
     .check = check_url,
     .help = "where batches and heartbeats are published (nng PUB, listened on)"},
    {.name = "sync",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, sync),
     .def = "tcp://127.0.0.1:7402",
     .arg = "URL",
     .check = check_url,
     .help = "where edges ask for catch-up and snapshots (nng REP, listened on)"},
    {.name = "data",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, data),
     .def = "/var/lib/hermod",
     .arg = "DIR",
     .check = check_nonempty,
     .help = "journal, snapshots and epoch (created if missing)"},
    {.name = "admin",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, admin),
     .def = "/run/hermod/origin.sock",
     .arg = "PATH",
     .check = check_nonempty,
     .help = "admin socket (status, lookup HOST, dump)"},
    {.name = "node",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, node),
     .arg = "NAME",
     .help = "name shown in status (default: the host name)"},
    {.name = "compact-after",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, compact_after),
     .def = "64MiB",
     .min = 1,
     .max = (int64_t)1 << 40,
     .arg = "SIZE",
     .help = "journal bytes since the last snapshot that start a compaction"},
    {.name = "ring",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, ring),
     .def = "64MiB",
     .min = 1,
     .max = (int64_t)1 << 40,
     .arg = "SIZE",
     .help = "recent batches kept in memory for catch-up (older ones are read from the journal)"},
    {.name = "segment",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, segment),
     .def = "64MiB",
     .min = 4096,
     .max = (int64_t)1 << 40,
     .arg = "SIZE",
     .help = "journal segment size"},
    {.name = "heartbeat",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, heartbeat),
     .def = "1s",
     .min = 50,
     .max = 60000,
     .arg = "DURATION",
     .help = "interval of heartbeats on the publish socket"},
    {.name = "ticket-key-rotation",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, ticket_rotation),
     .def = "24h",
     .min = 1000,
     .max = (int64_t)366 * 86400 * 1000,
     .arg = "DURATION",
     .help = "how long a TLS session ticket key encrypts before the next one takes over "
	     "(the previous one still decrypts for one more period)"},
    {.name = "max-request",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, max_request),
     .def = "1GiB",
     .min = 1 << 20,
     .max = (int64_t)1 << 40,
     .arg = "SIZE",
     .help = "bytes of multi-part control requests held at once"},
    {.name = "store",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, store),
     .arg = "SPEC",
     .check = check_store,
     .help = "journal (the default: --data alone) or etcd:URL[,URL...] (state shared by "
	     "several origins in etcd; --data is then a cache)"},
    {.name = "etcd-ca",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, etcd_ca),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: the CAs etcd's https:// endpoints chain to (default: the system's)"},
    {.name = "etcd-cert",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, etcd_cert),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: the client certificate chain and key this origin shows etcd"},
    {.name = "etcd-lease-ttl",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, etcd_lease_ttl),
     .def = "10s",
     .min = 2000,
     .max = 3600000,
     .arg = "DURATION",
     .help = "the compactor's etcd lease: another origin takes the role this long after the "
	     "holder dies"},
    {.name = "etcd-compact-every",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, etcd_compact_every),
     .def = "60s",
     .min = 1000,
     .max = 86400000,
     .arg = "DURATION",
     .help = "the compactor compacts etcd's history to the revision seen this long ago"},
    {.name = "etcd-defrag-every",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, etcd_defrag_every),
     .def = "10m",
     .min = 1000,
     .max = 86400000,
     .arg = "DURATION",
     .help = "how often the compactor checks whether a member's file needs defragmenting"},
    {.name = "etcd-defrag-min",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, etcd_defrag_min),
     .def = "256MiB",
     .min = 0,
     .max = (int64_t)1 << 42,
     .arg = "SIZE",
     .help = "a member's file is defragmented (one member at a time) once it is at least this "
	     "large and at most half of it is in use"},
    {.name = "etcd-quota",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, etcd_quota),
     .def = "2GiB",
     .min = 1 << 20,
     .max = (int64_t)1 << 42,
     .arg = "SIZE",
     .help = "etcd's --quota-backend-bytes: after NOSPACE, the alarm is disarmed once every "
	     "member's file is under 90% of it"},
    {.name = "tls-cert",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, tls_cert),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: this node's certificate chain and its private key (for tls+tcp://)"},
    {.name = "tls-ca",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, tls_ca),
     .arg = "FILE",
     .check = check_nonempty,
     .help =
	 "PEM: the CA edges' certificates (and control clients', without --control-ca) chain to"},
    {.name = "control-ca",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, control_ca),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: the CA control clients' certificates chain to (default: --tls-ca)"},
    {.name = "insecure-plaintext",
     .type = HM_OPT_BOOL,
     .offset = offsetof(struct hm__origin_cfg, insecure_plaintext),
     .def = "false",
     .help = "allow plaintext tcp:// on addresses that are not loopback"},
    {.name = "admin-idle",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, admin_idle),
     .def = "60s",
     .min = 100,
     .max = 86400000,
     .arg = "DURATION",
     .help = "an admin connection with no request and no answer taken for this long is closed"},
    {.name = "pub-queue",
     .type = HM_OPT_INT,
     .offset = offsetof(struct hm__origin_cfg, pub_queue),
     .def = "16",
     .min = 2,
     .max = 8192,
     .arg = "N",
     .help = "messages queued per subscriber; a slower one loses the oldest and catches up"},
    {.name = "sync-rate",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__origin_cfg, sync_rate),
     .def = "64MiB",
     .min = 0,
     .max = (int64_t)1 << 40,
     .arg = "SIZE",
     .help = "catch-up and snapshot bytes per second per edge connection, in bursts of 4 s "
	     "(0: no limit)"},
    {.name = "pub-stall",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__origin_cfg, pub_stall),
     .def = "10s",
     .min = 500,
     .max = 3600000,
     .arg = "DURATION",
     .help = "a subscriber that takes no message for this long is disconnected"},
    {.name = "log-level",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__origin_cfg, log_level),
     .def = "info",
     .arg = "LEVEL",
     .help = "err, warning, notice, info or debug"},
#ifdef HM_TEST_HOOKS
    {.name = "test-no-watchdog",
     .type = HM_OPT_BOOL,
     .offset = offsetof(struct hm__origin_cfg, no_watchdog),
     .def = "false",
     .help = "(test builds) disable the listener watchdog, to reproduce nng bug #1518"},
#endif
    HM_OPT_END,
};

static const struct hm_opt edge_opts[] = {
    {.name = "publish",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, publish),
     .arg = "URL[,URL...]",
     .check = check_urls,
     .help = "the origins' publish sockets, one per origin (dialed, all of them; required)"},
    {.name = "sync",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, sync),
     .arg = "URL[,URL...]",
     .check = check_urls,
     .help = "the origins' sync sockets, in the order of --publish (dialed; required)"},
    {.name = "table",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, table),
     .def = "/run/hermod/hermod.table",
     .arg = "PATH",
     .check = check_nonempty,
     .help = "the node's routing table file"},
    {.name = "admin",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, admin),
     .def = "/run/hermod/edge.sock",
     .arg = "PATH",
     .check = check_nonempty,
     .help = "admin socket (status, lookup HOST, dump)"},
    {.name = "node",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, node),
     .arg = "NAME",
     .help = "name shown in status (default: the host name)"},
    {.name = "stale-after",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__edge_cfg, stale_after),
     .def = "3s",
     .min = 100,
     .max = 3600000,
     .arg = "DURATION",
     .help = "no heartbeat for this long: status says stale"},
    {.name = "table-max",
     .type = HM_OPT_SIZE,
     .offset = offsetof(struct hm__edge_cfg, table_max),
     .def = "0",
     .min = 0,
     .max = (int64_t)1 << 42,
     .arg = "SIZE",
     .help = "the largest the table file may grow to (0: no limit)"},
    {.name = "timeout",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__edge_cfg, timeout),
     .def = "10s",
     .min = 100,
     .max = 600000,
     .arg = "DURATION",
     .help = "how long to wait for a catch-up or snapshot reply"},
    {.name = "tls-cert",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, tls_cert),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: this node's certificate chain and its private key (for tls+tcp://)"},
    {.name = "tls-ca",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, tls_ca),
     .arg = "FILE",
     .check = check_nonempty,
     .help = "PEM: the CA the origin's certificate chains to"},
    {.name = "insecure-plaintext",
     .type = HM_OPT_BOOL,
     .offset = offsetof(struct hm__edge_cfg, insecure_plaintext),
     .def = "false",
     .help = "allow plaintext tcp:// on addresses that are not loopback"},
    {.name = "admin-idle",
     .type = HM_OPT_DURATION,
     .offset = offsetof(struct hm__edge_cfg, admin_idle),
     .def = "60s",
     .min = 100,
     .max = 86400000,
     .arg = "DURATION",
     .help = "an admin connection with no request and no answer taken for this long is closed"},
    {.name = "log-level",
     .type = HM_OPT_STR,
     .offset = offsetof(struct hm__edge_cfg, log_level),
     .def = "info",
     .arg = "LEVEL",
     .help = "err, warning, notice, info or debug"},
    HM_OPT_END,
};

static void usage(FILE *f)
{
	fprintf(f, "usage: hermod-syncd origin [OPTIONS]   the sequencer (one per cluster)\n"
		   "       hermod-syncd edge --publish URL[,URL...] --sync URL[,URL...] [OPTIONS]  "
		   " one per "
		   "node\n"
		   "       hermod-syncd ROLE --help         options of a role\n");
}

static int usage_error(const char *fmt, const char *arg)
{
	fprintf(stderr, "hermod-syncd: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	return 2;
}

static int setup_log(const char *level)
{
	enum hm_log_level l;

	if (hm_log_level_parse(level, &l) != 0)
		return usage_error("--log-level: '%s' is not err, warning, notice, info or debug",
				   level);
	hm_log_set_level(l);
	return 0;
}

/*
 * The contract's TLS rules for one role's URLs (urls[0] is the control socket where there is
 * one), then its certificates loaded: 0 (*tls set when TLS is configured) or exit status 2 with
 * the reason printed.
 */
static int setup_tls(const char *cert, const char *ca, const char *control_ca, bool insecure,
		     const char *const *names, const char *const *urls, int nurls,
		     struct hm__tls **tls)
{
	char err[512];
	bool any_tls = false;

	if ((cert == NULL) != (ca == NULL))
		return usage_error("%s", "--tls-cert and --tls-ca go together");
	for (int i = 0; i < nurls; i++) {
		if (hm__nng_url_policy(names[i], urls[i], cert != NULL, insecure, err,
				       sizeof(err)) != 0)
			return usage_error("%s", err);
		any_tls = any_tls || hm__tls_url(urls[i]);
	}
	if (control_ca != NULL && !hm__tls_url(urls[0]))
		return usage_error("%s", "--control-ca is for a tls+tcp:// control socket");
	if (cert == NULL)
		return 0;
	if (!any_tls)
		return usage_error("%s", "--tls-cert and --tls-ca are for tls+tcp:// URLs");
	if (hm__tls_load(tls, cert, ca, control_ca, err, sizeof(err)) != 0)
		return usage_error("%s", err);
	return 0;
}

/* The edge's origins: --publish and --sync split into lists of the same length (origin i is
 * publish_urls[i] and sync_urls[i]). 0 or exit status 2 with the reason printed. */
static int split_origins(struct hm__edge_cfg *cfg, struct hm__urls *pub, struct hm__urls *syn)
{
	char err[512];

	if (hm__nng_urls_parse(cfg->publish, pub, err, sizeof(err)) != 0)
		return usage_error("--publish: %s", err);
	if (hm__nng_urls_parse(cfg->sync, syn, err, sizeof(err)) != 0)
		return usage_error("--sync: %s", err);
	if (pub->n != syn->n) {
		snprintf(err, sizeof(err),
			 "--publish has %u URL(s) and --sync %u: give each origin's publish and "
			 "sync URL, in the same order",
			 pub->n, syn->n);
		return usage_error("%s", err);
	}
	cfg->norigins = pub->n;
	cfg->publish_urls = pub->v;
	cfg->sync_urls = syn->v;
	return 0;
}

/* setup_tls over every origin's URLs. */
static int edge_tls(struct hm__edge_cfg *cfg)
{
	const char *names[2 * HM__URLS_MAX], *urls[2 * HM__URLS_MAX];
	int n = 0;

	for (uint32_t i = 0; i < cfg->norigins; i++) {
		names[n] = "publish";
		urls[n++] = cfg->publish_urls[i];
		names[n] = "sync";
		urls[n++] = cfg->sync_urls[i];
	}
	return setup_tls(cfg->tls_cert, cfg->tls_ca, NULL, cfg->insecure_plaintext, names, urls, n,
			 &cfg->tls);
}

static char *default_node(char *node)
{
	char host[256];

	if (node != NULL && node[0] != '\0')
		return node;
	free(node);
	if (gethostname(host, sizeof(host)) != 0)
		snprintf(host, sizeof(host), "unknown");
	host[sizeof(host) - 1] = '\0';
	return strdup(host);
}

int main(int argc, char **argv)
{
	char err[512], **pos;
	int npos = 0, r, code;

	(void)log_levels;
	hm_log_set_ident("hermod-syncd");
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if ((pos = calloc((size_t)argc, sizeof(*pos))) == NULL)
		return 1;
	if (strcmp(argv[1], "origin") == 0) {
		struct hm__origin_cfg cfg;

		memset(&cfg, 0, sizeof(cfg));
		r = hm_opts_parse(origin_opts, &cfg, argc - 1, argv + 1, pos, &npos, err,
				  sizeof(err));
		if (r == HM_OPTS_HELP) {
			hm_opts_usage(stdout, "hermod-syncd origin [OPTIONS]", origin_opts);
			code = 0;
		} else if (r != 0) {
			code = usage_error("%s", err);
		} else if (npos > 0) {
			code = usage_error("unexpected argument '%s'", pos[0]);
		} else if ((code = setup_log(cfg.log_level)) == 0 &&
			   (code = setup_tls(
				cfg.tls_cert, cfg.tls_ca, cfg.control_ca, cfg.insecure_plaintext,
				(const char *const[]){"control", "publish", "sync"},
				(const char *const[]){cfg.control, cfg.publish, cfg.sync}, 3,
				&cfg.tls)) == 0) {
			cfg.node = default_node(cfg.node);
			code = hm__origin_run(&cfg);
		}
		hm__tls_unref(cfg.tls);
		hm_opts_free(origin_opts, &cfg);
	} else if (strcmp(argv[1], "edge") == 0) {
		struct hm__urls pub = {0}, syn = {0};
		struct hm__edge_cfg cfg;

		memset(&cfg, 0, sizeof(cfg));
		r = hm_opts_parse(edge_opts, &cfg, argc - 1, argv + 1, pos, &npos, err,
				  sizeof(err));
		if (r == HM_OPTS_HELP) {
			hm_opts_usage(stdout,
				      "hermod-syncd edge --publish URL[,URL...] --sync "
				      "URL[,URL...] [OPTIONS]",
				      edge_opts);
			code = 0;
		} else if (r != 0) {
			code = usage_error("%s", err);
		} else if (npos > 0) {
			code = usage_error("unexpected argument '%s'", pos[0]);
		} else if (cfg.publish == NULL) {
			code = usage_error(
			    "%s", "edge needs --publish URL (the origin's publish socket)");
		} else if (cfg.sync == NULL) {
			code =
			    usage_error("%s", "edge needs --sync URL (the origin's sync socket)");
		} else if ((code = split_origins(&cfg, &pub, &syn)) == 0 &&
			   (code = setup_log(cfg.log_level)) == 0 && (code = edge_tls(&cfg)) == 0) {
			cfg.node = default_node(cfg.node);
			code = hm__edge_run(&cfg);
		}
		hm__tls_unref(cfg.tls);
		hm__nng_urls_free(&pub);
		hm__nng_urls_free(&syn);
		hm_opts_free(edge_opts, &cfg);
	} else {
		code = usage_error("unknown role '%s' (origin or edge; see --help)", argv[1]);
	}
	free(pos);
	return code;
}
