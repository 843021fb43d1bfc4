/*
 * hm-tablepeek: prints what a router would see in a routing table file, as one JSON line:
 * {"epoch":"hex","seq":N,"apps":N,"domains":N,"dynos":N,"digest":"hex","version":N,
 * "inflight":N} (inflight: the sum of the in-flight counters of every dyno slot). It maps the
 * file read-only through the reader API (hm_table_reader_*), so it can look at a table an edge
 * is writing (hm-tablectl would need the writer's lock). Exit 1 if there is no valid table.
 *
 *   hm-tablepeek PATH
 */
#include <inttypes.h>
#include <stdio.h>

#include "common/table.h"

int main(int argc, char **argv)
{
	struct hm_table_reader *r;
	struct hm_table_map *m;
	struct hm_table_info info;
	char hex[2 * HM_DIGEST_LEN + 1];
	int64_t inflight = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: hm-tablepeek PATH\n");
		return 2;
	}
	if (hm_table_reader_new(&r, argv[1]) != 0)
		return 1;
	hm_table_reader_check(r);
	if ((m = hm_table_reader_map(r)) == NULL) {
		fprintf(stderr, "hm-tablepeek: no valid table at %s\n", argv[1]);
		hm_table_reader_free(r);
		return 1;
	}
	hm_table_map_info(m, &info);
	hm_digest_hex(info.digest, hex);
	for (uint32_t i = 0; i < info.caps.dynos; i++)
		inflight += hm_table_inflight_get(m, i);
	printf("{\"epoch\":\"%016" PRIx64 "\",\"seq\":%" PRIu64 ",\"apps\":%u,\"domains\":%u,"
	       "\"dynos\":%u,\"digest\":\"%s\",\"version\":%" PRIu64 ",\"inflight\":%" PRId64 "}\n",
	       info.epoch, info.seq, info.apps, info.domains, info.dynos, hex, info.version,
	       inflight);
	hm_table_reader_free(r);
	return 0;
}
