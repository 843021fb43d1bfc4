/*
 * Table-driven options, after nginx's ngx_command_t: each program describes its options once
 * (name, type, where the value goes, default, bounds, help) and one parser reads them from the
 * command line and from a JSON config file (--config FILE), flags winning over the file, the file
 * over environment defaults, those over built-in defaults. --help is generated from the table.
 *
 * Flags are "--name VALUE" or "--name=VALUE"; a boolean may be given alone ("--json") or with
 * on/off, true/false, yes/no, 1/0. Config keys are the option names; values are JSON strings,
 * numbers or booleans as the type asks. Anything else non-option is positional.
 */
#ifndef HM_COMMON_OPTS_H
#define HM_COMMON_OPTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum hm_opt_type {
	HM_OPT_STR,	 /* char * (owned: freed by hm_opts_free) */
	HM_OPT_INT,	 /* int64_t in [min, max] */
	HM_OPT_BOOL,	 /* bool */
	HM_OPT_DURATION, /* int64_t milliseconds in [min, max]: "250ms", "5s", "2m", "1h", or a
			    bare number of milliseconds */
	HM_OPT_SIZE,	 /* int64_t bytes in [min, max]: "512", "64k", "8KiB", "4M", "1GiB" */
	HM_OPT_ENUM,	 /* int: index of the value in choices */
};

struct hm_opt {
	const char *name; /* "listen": the flag is --listen, the config key "listen" */
	enum hm_opt_type type;
	size_t offset;		    /* offsetof(config struct, field) */
	const char *def;	    /* default, written as a flag value would be; NULL: none */
	int64_t min, max;	    /* bounds for INT, DURATION, SIZE (min = max = 0: none) */
	const char *const *choices; /* ENUM: NULL-terminated list of accepted values */
	const char *env;	    /* environment variable that overrides def, or NULL */
	const char *arg;	    /* placeholder in --help ("URL", "PATH"); NULL for BOOL */
	const char *help;	    /* one line */
	/* STR only: extra check of the value; returns 0 or writes a reason to err and returns <0 */
	int (*check)(const char *value, char *err, size_t errlen);
};

/* A table ends with an entry whose name is NULL. */
#define HM_OPT_END                                                                                 \
	{                                                                                          \
		.name = NULL                                                                       \
	}

#define HM_OPTS_HELP 1 /* hm_opts_parse() saw --help or -h */

/*
 * Parses argv[1..argc-1] into cfg (zero it first) as described above. Positional arguments are
 * stored, in order, in pos (borrowed from argv; room for argc entries) and counted in *npos;
 * "--" makes everything after it positional. An implicit option "--config FILE" loads a JSON
 * object. Returns 0, HM_OPTS_HELP, or HM_EOPTION with a one-line reason in err (unknown flag,
 * missing or bad value, out of bounds, bad config file). Values already set stay in cfg on error;
 * call hm_opts_free either way.
 */
int hm_opts_parse(const struct hm_opt *table, void *cfg, int argc, char **argv, char **pos,
		  int *npos, char *err, size_t errlen);

/* Writes "usage: <synopsis>" and one line per option (with its default) to f. */
void hm_opts_usage(FILE *f, const char *synopsis, const struct hm_opt *table);

/* Frees the STR values of cfg. */
void hm_opts_free(const struct hm_opt *table, void *cfg);

/* Parsers behind the types, for programs that read such values elsewhere. 0 or -EINVAL. */
int hm_parse_duration_ms(const char *s, int64_t *out);
int hm_parse_size(const char *s, int64_t *out);
int hm_parse_bool(const char *s, bool *out);

/*
 * Splits "HOST:PORT" or "[IPv6]:PORT" (HOST may be a name, "*" or empty for any address).
 * Writes the host (without brackets, NUL-terminated) to host (hostlen bytes) and the port.
 * Returns 0 or -EINVAL. Also usable as an hm_opt check via hm_opt_check_hostport.
 */
int hm_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *port);
int hm_opt_check_hostport(const char *value, char *err, size_t errlen);

#endif
