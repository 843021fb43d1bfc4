/*
 * hm-tablectl: writes and reads a routing table file directly, without syncd. For tests and
 * benchmarks of the router only; production state always flows through the origin.
 *
 *   hm-tablectl --table PATH apply FILE|-   apply a batch file as one batch (seq = last + 1)
 *   hm-tablectl --table PATH info           one JSON line: epoch, seq, counts, digest, caps
 *   hm-tablectl --table PATH dump           the state as a batch file
 *
 * apply holds the whole batch in memory (so that it can grow the table and retry): fine for a
 * test tool, not for a million-change production batch.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/batchfile.h"
#include "common/errors.h"
#include "common/opts.h"
#include "common/state.h"
#include "common/table.h"

struct cfg {
	char *table;
};

static const struct hm_opt options[] = {
    {.name = "table",
     .type = HM_OPT_STR,
     .offset = offsetof(struct cfg, table),
     .def = "/run/hermod/hermod.table",
     .arg = "PATH",
     .help = "the table file"},
    HM_OPT_END,
};

/* A change with its own copies of its strings. */
struct owned {
	struct hm_change c;
	char app[HM_APP_NAME_MAX + 1];
	char name[HM_HOST_MAX + 3];
};

struct feed {
	struct owned *cs;
	size_t n, at; /* at: the change being applied */
};

static int feed_all(struct hm_state *st, void *arg)
{
	struct feed *f = arg;
	int e;

	for (f->at = 0; f->at < f->n; f->at++) {
		struct owned *o = &f->cs[f->at];

		o->c.app = o->app;
		o->c.name = o->name;
		if ((e = hm_state_change(st, &o->c)) != 0)
			return e;
	}
	return 0;
}

static int apply(const char *path, const char *file)
{
	struct hm_table_writer *w;
	struct hm_batch_reader *br;
	struct hm_table_info info;
	struct owned *cs = NULL;
	size_t n = 0, cap = 0;
	struct hm_change c;
	FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
	int e;

	if (f == NULL) {
		fprintf(stderr, "hm-tablectl: %s: %s\n", file, strerror(errno));
		return 1;
	}
	if (hm_batch_reader_new(&br, f) != 0)
		return 1;
	while ((e = hm_batch_reader_next(br, &c)) == 1) {
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			cs = realloc(cs, cap * sizeof(*cs));
			if (cs == NULL)
				return 1;
		}
		cs[n].c = c;
		if (c.app_len > 0)
			memcpy(cs[n].app, c.app, c.app_len);
		if (c.name_len > 0)
			memcpy(cs[n].name, c.name, c.name_len);
		n++;
	}
	if (e != 0) {
		fprintf(stderr, "hm-tablectl: %s: %s\n", file, hm_batch_reader_error(br));
		return 1;
	}
	hm_batch_reader_free(br);
	if (f != stdin)
		fclose(f);
	if ((e = hm_table_writer_open(&w, path, NULL, HM_TABLE_RESUME, 0)) != 0) {
		fprintf(stderr, "hm-tablectl: %s: %s\n", path, hm_strerror(e));
		return 1;
	}
	{
		/* The one apply entry (common/state.h): grows the table when it is full. */
		struct hm_state st = {.table = w};
		struct feed fd = {cs, n, 0};

		hm_table_writer_info(w, &info);
		e = hm_state_apply(&st, feed_all, &fd, info.epoch ? info.epoch : 1, info.seq + 1);
		if (e != 0) {
			fprintf(stderr, "hm-tablectl: change %zu: %s\n", fd.at, hm_strerror(e));
			hm_table_writer_close(w);
			return 1;
		}
		printf("%llu\n", (unsigned long long)info.seq + 1);
	}
	hm_table_writer_close(w);
	free(cs);
	return e != 0;
}

static int dump_one(void *ctx, const struct hm_change *c)
{
	char addr[HM_ADDR_STR_MAX];
	int *first = ctx;

	if (c->op == HM_OP_SECRET_PUT)
		return 0; /* a batch file cannot hold one */
	printf("%s\n  {\"op\":\"%s\"", *first ? "" : ",", hm_op_name(c->op));
	*first = 0;
	switch (c->op) {
	case HM_OP_APP_PUT:
		printf(",\"app\":\"%.*s\",\"maintenance\":%s,\"affinity\":%s,\"balance\":\"%s\"}",
		       c->app_len, c->app, c->maintenance ? "true" : "false",
		       c->affinity ? "true" : "false", hm_balance_name(c->balance));
		break;
	case HM_OP_DOMAIN_PUT:
		printf(",\"domain\":\"%.*s\",\"app\":\"%.*s\"}", c->name_len, c->name, c->app_len,
		       c->app);
		break;
	default:
		hm_addr_format(&c->addr, addr);
		printf(",\"app\":\"%.*s\",\"dyno\":\"%.*s\",\"addr\":\"%s\",\"state\":\"%s\"}",
		       c->app_len, c->app, c->name_len, c->name, addr,
		       hm_dyno_state_name(c->state));
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct cfg cfg = {0};
	struct hm_table_writer *w;
	struct hm_table_info info;
	char err[256], *pos[16], hex[2 * HM_DIGEST_LEN + 1];
	int npos = 0, e, rc = 0, first = 1;

	e = hm_opts_parse(options, &cfg, argc, argv, pos, &npos, err, sizeof(err));
	if (e == HM_OPTS_HELP || e != 0 || npos < 1 || argc > 16) {
		if (e != 0 && e != HM_OPTS_HELP)
			fprintf(stderr, "hm-tablectl: %s\n", err);
		hm_opts_usage(e == HM_OPTS_HELP ? stdout : stderr,
			      "hm-tablectl [--table PATH] apply FILE|- | info | dump", options);
		return e == HM_OPTS_HELP ? 0 : 2;
	}
	if (strcmp(pos[0], "apply") == 0 && npos == 2) {
		rc = apply(cfg.table, pos[1]);
	} else if ((strcmp(pos[0], "info") == 0 || strcmp(pos[0], "dump") == 0) && npos == 1) {
		if ((e = hm_table_writer_open(&w, cfg.table, NULL, HM_TABLE_RESUME, 0)) != 0) {
			fprintf(stderr, "hm-tablectl: %s: %s\n", cfg.table, hm_strerror(e));
			rc = 1;
		} else if (pos[0][0] == 'i') {
			hm_table_writer_info(w, &info);
			hm_digest_hex(info.digest, hex);
			printf(
			    "{\"epoch\":%llu,\"seq\":%llu,\"apps\":%u,\"domains\":%u,\"dynos\":%u,"
			    "\"digest\":\"%s\",\"file_bytes\":%llu}\n",
			    (unsigned long long)info.epoch, (unsigned long long)info.seq, info.apps,
			    info.domains, info.dynos, hex, (unsigned long long)info.file_bytes);
			hm_table_writer_close(w);
		} else {
			printf("{\"changes\": [");
			hm_table_foreach(w, dump_one, &first);
			printf("\n]}\n");
			hm_table_writer_close(w);
		}
	} else {
		fprintf(stderr, "hm-tablectl: unknown command (apply FILE|-, info, dump)\n");
		rc = 2;
	}
	hm_opts_free(options, &cfg);
	return rc;
}
