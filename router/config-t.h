/*
 * hermod-router's configuration: the options main.c parses (one table, common/opts.h) and what it
 * derives from them before forking (the listening socket, each worker's share of the connection
 * limit, the affinity secret). Workers and every layer below them read it; nobody writes it after
 * the fork.
 */
#ifndef HM_ROUTER_CONFIG_T_H
#define HM_ROUTER_CONFIG_T_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct hm__router_config {
	char *table;
	char *listen; /* NULL: no plain listener (only --tls-listen) */
	char *tls_listen;
	char *cert_store; /* the node's certificate store (default: the table's path, .certs) */
	int64_t tls_handshake_timeout;
	int64_t tls_max_handshakes; /* TLS handshakes in progress per worker */
	int64_t tls_cert_cache;	    /* parsed certificates kept per worker */
	bool proxy_protocol;	    /* every connection starts with a PROXY v1/v2 header */
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
	bool h2c;		 /* prior-knowledge HTTP/2 on the plain listener, beside HTTP/1 */
	/* Derived by main.c before forking. */
	uint16_t port;		     /* the listening port (X-Forwarded-Port) */
	uint16_t tls_port;	     /* the TLS listening port */
	int listen_fd;		     /* -1: none */
	int tls_listen_fd;	     /* -1: none */
	uint32_t worker_max_clients; /* each worker's share of max_connections */
	/* affinity secret (owned): the file's, or a random one until the table's */
	uint8_t *secret;
	size_t secret_len;
	bool secret_from_file; /* --affinity-secret-file: the table's secret is not used */
};

#endif
