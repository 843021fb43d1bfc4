/*
 * What hermod-syncd's main.c shares with its two roles (folder-private).
 */
#ifndef HM_SYNCD_SYNCD_H
#define HM_SYNCD_SYNCD_H

#include <stdbool.h>
#include <stdint.h>

struct hm__tls;

struct hm__origin_cfg {
	char *control, *publish, *sync, *data, *admin, *node, *log_level;
	char *tls_cert, *tls_ca, *control_ca; /* NULL: not given */
	char *store;			      /* NULL: the journal in data; "etcd:URL,..." */
	char *etcd_ca, *etcd_cert;	      /* PEM files for etcd's TLS; NULL: not given */
	bool insecure_plaintext;
	struct hm__tls *tls;	 /* loaded by main from the files above; NULL without TLS */
	int64_t compact_after;	 /* bytes of journal since the last snapshot before compacting */
	int64_t ring;		 /* bytes of recent batches kept in memory for catch-up */
	int64_t heartbeat;	 /* ms */
	int64_t max_request;	 /* bytes of one multi-part control request */
	int64_t segment;	 /* bytes of a journal segment */
	int64_t admin_idle;	 /* ms an admin connection may stay silent */
	int64_t pub_queue;	 /* messages queued per subscriber (NNG_OPT_SENDBUF) */
	int64_t pub_stall;	 /* ms a subscriber may take no message before it is dropped */
	int64_t sync_rate;	 /* reply bytes per second per sync connection (0: unlimited) */
	bool no_watchdog;	 /* test hook: disable the #1518 listener watchdog */
	int64_t ticket_rotation; /* ms between TLS session ticket key rotations */
	/* etcd's upkeep (docs/store-etcd.md, "Keeping etcd bounded") */
	int64_t etcd_lease_ttl;	    /* ms: the compactor's lease */
	int64_t etcd_compact_every; /* ms between history compactions */
	int64_t etcd_defrag_every;  /* ms between defragmentation checks */
	int64_t etcd_defrag_min;    /* bytes: a member's file is defragmented from this size */
	int64_t etcd_quota;	    /* bytes: etcd's --quota-backend-bytes */
};

struct hm__edge_cfg {
	char *publish, *sync, *table, *admin, *node, *log_level; /* publish, sync: URL[,URL...] */
	/* The origins, split by main from publish and sync: origin i publishes on publish_urls[i]
	 * and answers on sync_urls[i] (borrowed; norigins each, 1 .. HM__URLS_MAX). */
	uint32_t norigins;
	char *const *publish_urls, *const *sync_urls;
	char *tls_cert, *tls_ca; /* NULL: not given */
	bool insecure_plaintext;
	struct hm__tls *tls; /* loaded by main; NULL without TLS */
	int64_t stale_after; /* ms without a heartbeat before status says stale */
	int64_t table_max;   /* bytes the table file may grow to (0: no limit) */
	int64_t timeout;     /* ms to wait for a sync reply */
	int64_t admin_idle;  /* ms an admin connection may stay silent */
};

/* Run a role until SIGTERM/SIGINT; return the process exit status. SIGHUP re-reads the TLS
 * files (cfg->tls is the role's until it returns). */
int hm__origin_run(const struct hm__origin_cfg *cfg);
int hm__edge_run(const struct hm__edge_cfg *cfg);

#endif
