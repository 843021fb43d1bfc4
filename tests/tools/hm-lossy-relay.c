/*
 * hm-lossy-relay: a test-only relay between an origin's PUB socket and edges, dropping a share of
 * the messages, so tests can check that edges repair feed loss (docs/sync.md).
 *
 *   hm-lossy-relay --from URL --listen URL [--drop PERCENT] [--seed N]
 *
 * It subscribes to --from and republishes every message it keeps on --listen. SIGUSR1 stops the
 * loss (every message is relayed from then on), SIGUSR2 starts it again; SIGTERM exits 0. On
 * stdout it prints "ready" once listening, and at exit "relayed N dropped M".
 */
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pubsub0/pub.h>
#include <nng/protocol/pubsub0/sub.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/opts.h"
#include "proto/proto.h"

struct cfg {
	char *from;
	char *listen;
	int64_t drop;
	int64_t seed;
};

static const struct hm_opt options[] = {
    {.name = "from",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, from),
     .arg = "URL",
     .help = "the origin's publish socket"},
    {.name = "listen",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, listen),
     .arg = "URL",
     .help = "where edges subscribe"},
    {.name = "drop",
     .type = HM_OPT_INT,
     .offset = offsetof(struct cfg, drop),
     .def = "5",
     .min = 0,
     .max = 100,
     .arg = "PERCENT",
     .help = "share of messages dropped"},
    {.name = "seed",
     .type = HM_OPT_INT,
     .offset = offsetof(struct cfg, seed),
     .def = "1",
     .min = 0,
     .max = INT32_MAX,
     .arg = "N",
     .help = "random seed"},
    HM_OPT_END,
};

static atomic_bool lossy = true;
static nng_socket sub, pub;

static void *signals_main(void *arg)
{
	sigset_t *set = arg;
	int sig;

	for (;;) {
		if (sigwait(set, &sig) != 0)
			continue;
		if (sig == SIGUSR1) {
			atomic_store(&lossy, false);
		} else if (sig == SIGUSR2) {
			atomic_store(&lossy, true);
		} else {
			nng_close(sub); /* ends the receive loop */
			return NULL;
		}
	}
}

int main(int argc, char **argv)
{
	struct cfg cfg;
	char err[256], **pos;
	int npos, r;
	sigset_t set;
	pthread_t th;
	unsigned long relayed = 0, dropped = 0;
	unsigned seed;

	memset(&cfg, 0, sizeof(cfg));
	if ((pos = calloc((size_t)argc + 1, sizeof(*pos))) == NULL)
		return 1;
	r = hm_opts_parse(options, &cfg, argc, argv, pos, &npos, err, sizeof(err));
	if (r == HM_OPTS_HELP) {
		hm_opts_usage(stdout, "hm-lossy-relay --from URL --listen URL [--drop PERCENT]",
			      options);
		return 0;
	}
	if (r != 0 || cfg.from == NULL || cfg.listen == NULL || npos != 0) {
		fprintf(stderr, "hm-lossy-relay: %s\n",
			r != 0 ? err : "--from and --listen needed");
		return 2;
	}
	seed = (unsigned)cfg.seed;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	if (nng_sub0_open(&sub) != 0 || nng_pub0_open(&pub) != 0 ||
	    nng_socket_set(sub, NNG_OPT_SUB_SUBSCRIBE, "", 0) != 0 ||
	    nng_socket_set_size(sub, NNG_OPT_RECVMAXSZ, HM_PROTO_MAX_MSG) != 0 ||
	    nng_socket_set_int(sub, NNG_OPT_RECVBUF, 8192) != 0 ||
	    nng_socket_set_int(pub, NNG_OPT_SENDBUF, 8192) != 0 ||
	    nng_listen(pub, cfg.listen, NULL, 0) != 0 ||
	    nng_dial(sub, cfg.from, NULL, NNG_FLAG_NONBLOCK) != 0) {
		fprintf(stderr, "hm-lossy-relay: cannot set up %s -> %s\n", cfg.from, cfg.listen);
		return 1;
	}
	pthread_create(&th, NULL, signals_main, &set);
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		nng_msg *m;

		if ((r = nng_recvmsg(sub, &m, 0)) != 0) {
			if (r == NNG_ECLOSED)
				break;
			continue;
		}
		if (atomic_load(&lossy) && (unsigned)(rand_r(&seed) % 100) < (unsigned)cfg.drop) {
			nng_msg_free(m);
			dropped++;
			continue;
		}
		if (nng_sendmsg(pub, m, 0) != 0)
			nng_msg_free(m);
		relayed++;
	}
	pthread_join(th, NULL);
	nng_close(pub);
	printf("relayed %lu dropped %lu\n", relayed, dropped);
	hm_opts_free(options, &cfg);
	free(pos);
	nng_fini();
	return 0;
}
