/*
 * hermod-router's configuration: the options main.c parses (one table, common/opts.h) and what it
 * derives from them before forking (the listening socket, each worker's share of the connection
 * limit, the affinity secret). Workers and every layer below them read it; nobody writes it after
 * the fork.
 */
#ifndef HM_ROUTER_CONFIG_T_H
#define HM_ROUTER_CONFIG_T_H

#include <stddef.h>
#include <stdint.h>

struct hm__router_config {
	char *table;
	char *listen;
	int64_t workers;
	char *metrics;
	char *affinity_secret_file;
	char *access_log;
	char *log;
	int log_level;
	int64_t connect_timeout; /* all durations in ms */
	int64_t first_byte_timeout;
	int64_t idle_timeout;
	int64_t head_timeout;
	int64_t keepalive_timeout;
	int64_t boot_timeout;
	int64_t pool_idle_timeout;
	int64_t skip_time;
	int64_t drain_timeout;
	int64_t attempts;
	int64_t pool_max;
	int64_t max_head;
	int64_t max_response_head;
	int64_t backlog;
	int64_t max_connections; /* per router; 0: derived from the file-descriptor limit */
	int64_t head_budget;	 /* bytes per worker for buffers beyond the standard size */
	/* Derived by main.c before forking. */
	uint16_t port; /* the listening port (X-Forwarded-Port) */
	int listen_fd;
	uint32_t worker_max_clients; /* each worker's share of max_connections */
	/* affinity secret (owned): the file's, or a random one until the table's */
	uint8_t *secret;
	size_t secret_len;
	bool secret_from_file; /* --affinity-secret-file: the table's secret is not used */
};

#endif
