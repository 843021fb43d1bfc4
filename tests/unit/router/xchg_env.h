/*
 * A harness for the router's exchange (router/xchg.c) on one libuv loop: a worker context with
 * a routing table of its own, scripted dynos listening on loopback, and client drivers that
 * send a request the way one client protocol does and record what the client gets back. The
 * cases in test_xchg.c are data; each runs against every driver that can express it.
 *
 * Drivers: "fake" (xchg_fake.c) is a client protocol written in the test that speaks to the
 * exchange directly, with the shape HTTP/2 has (payload without framing, trailers apart, no
 * tunnel, a protocol that may refuse bytes for now); "h1" (xchg_h1.c) is the real HTTP/1
 * protocol (router/h1.c) over a socketpair whose other end the test writes and reads; "h2"
 * (xchg_h2.c) is the real HTTP/2 protocol (router/h2proto.c and the engine) with nghttp2's client
 * session on the other end.
 */
#ifndef HM_TESTS_UNIT_ROUTER_XCHG_ENV_H
#define HM_TESTS_UNIT_ROUTER_XCHG_ENV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "common/table.h"
#include "router/ctx.h"
#include "router/http.h"
#include "router/shm.h"

/* What a dyno does with a connection. */
enum dyno_beh {
	D_ANSWER = 0,  /* after each whole request, writes resp (keep-alive unless it says) */
	D_EARLY,       /* writes resp as soon as the request head is in, then closes */
	D_SILENT,      /* reads, never answers */
	D_CLOSE,       /* closes once the request head is in, without a byte */
	D_STALL,       /* writes resp (a head and part of a body), then nothing */
	D_CLOSE_MID,   /* writes resp (a head and part of a body), then closes */
	D_NO_READ,     /* accepts and never reads */
	D_BIG,	       /* writes resp, then big body bytes (the head announces them) */
	D_CLOSE_LATER, /* answers, then closes the connection on the next loop turn */
	D_ECHO,	       /* answers resp (a 101), then echoes every byte */
	D_REFUSE,      /* nothing listens on its port */
	D_BLACKHOLE,   /* a listener whose accept queue is full: connects time out */
};

struct dyno_spec {
	const char *name; /* "web.1" */
	uint8_t state;	  /* enum hm_dyno_state; 0: up */
	enum dyno_beh beh;
	const char *resp; /* raw response bytes */
	size_t big;	  /* D_BIG: body bytes after resp (0: env_beyond_buffers(), resp NULL: a
			   * head announcing them) */
};

/* What a client got back for one request. */
struct outcome {
	bool finished;	    /* the response ended (complete, refused or cut) */
	int status;	    /* the final status the client saw; 0 if none */
	bool cut;	    /* the response was broken off (no complete body) */
	int continues;	    /* interim 100 Continue responses seen */
	bool set_cookie;    /* the response carried the affinity cookie */
	size_t body_len;    /* payload bytes received */
	char body[256];	    /* their first bytes */
	char trailers[256]; /* trailer fields received, "name: value\n" each */
	bool body_stuck;    /* request body bytes were still with the client at the end */
	bool adopted;	    /* fake: the exchange ended while the protocol held response bytes and
			     * handed their buffer over (client op adopt) */
};

#define MAX_DYNOS 3

struct dyno;
struct env;

/* A client protocol driver. */
struct driver {
	const char *name;
	/* Sends request (a raw HTTP/1.1 request: head, then body bytes; held of the body bytes are
	 * kept back until drv_release_body()). A second request may follow, as a client pipelines
	 * it (HTTP/1) or opens another stream (HTTP/2), once the first response ended. */
	void (*start)(struct env *e, const char *request, size_t len, size_t held);
	void (*release_body)(struct env *e);
	/* The client goes away (EOF, or the stream reset). */
	void (*quit)(struct env *e);
	/* The client reads nothing more (its side stops taking response bytes). */
	void (*stop_reading)(struct env *e);
	void (*teardown)(struct env *e);
};

extern const struct driver fake_driver, h1_driver, h2_driver;

/* fake only: the next n response spans are refused with -ENOBUFS (a full protocol queue). */
void fake_enobufs(struct env *e, int n);

struct env {
	uv_loop_t loop;
	struct hm__router_config cfg;
	struct hm__router_shm *shm;
	struct hm__router_ctx ctx;
	struct hm_table_writer *tw;
	char dir[64];
	char table_path[96];
	char log_path[96];
	struct dyno *dynos[MAX_DYNOS];
	int ndynos;
	const struct driver *drv;
	void *drv_state;
	int nreq; /* requests to send (1 or 2) */
	int cur;  /* the request the client is on */
	struct outcome out[2];
	bool quit_when_seen;	  /* the client goes away once a dyno has the request */
	bool release_on_response; /* held body bytes go once the response head arrived */
	const char *tunnel_probe; /* h1: sent after a 101; the client quits once it is echoed */
	uv_timer_t watchdog;
	bool timed_out;
};

/* A context (with the configuration in e->cfg, long timeouts unless the case shortens them) and
 * an empty table at a temporary path; app "app" with the domain "app.test" unless no_table. */
void env_init(struct env *e, bool no_table);
/* Adds the case's dynos to the table (listening first) and publishes it. */
void env_dynos(struct env *e, const struct dyno_spec *d, int n, bool maintenance, bool affinity);
/* Changes a dyno's state in the table (published at once). */
void env_dyno_state(struct env *e, int i, uint8_t state);
/* Closes everything and runs the loop until no handle is left. */
void env_fini(struct env *e);

/* Runs the loop until done(e) or a 20 s watchdog (then e->timed_out). */
void env_run(struct env *e, bool (*done)(struct env *e));

/* The access log's lines so far (flushed first), NUL-terminated, in buf. Returns how many. */
int env_log_lines(struct env *e, char *buf, size_t cap);
/* The value of field in a logfmt line (quotes stripped) into out; false if absent. */
bool env_log_field(const char *line, const char *field, char *out, size_t cap);

/* Called by the drivers and the dynos. */
void env_dyno_saw_request(struct env *e);
void env_response_started(struct env *e);
/*
 * More bytes than every kernel buffer between two loopback sockets can hold on this machine (twice
 * the largest TCP receive plus send buffer the sysctls allow, and 8 MiB): a peer that stops
 * reading is certain to hold a writer of that many bytes back, whatever autotuning does.
 */
size_t env_beyond_buffers(void);

/* Bytes the dyno with that index meant to write and has not (still queued, or failed when its
 * connection closed): 0 once everything it wrote reached the kernel. */
size_t env_dyno_unsent(struct env *e, int i);
/* Request body bytes dyno i has read. */
size_t env_dyno_body_read(struct env *e, int i);
/* Connections dyno i accepted. */
int env_dyno_conns(struct env *e, int i);

/* Records trailer fields into o->trailers. */
void outcome_trailer(struct outcome *o, const char *name, size_t nl, const char *value, size_t vl);
void outcome_body(struct outcome *o, const char *p, size_t n);

#endif
