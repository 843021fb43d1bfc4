/*
 * The generic option parser: defaults, then environment, then the JSON config file, then flags.
 * Every value, wherever it comes from, goes through set_value(), so a bad value is rejected the
 * same way with the same reason whether it was a flag, a config key or an environment variable.
 */
#include "common/opts.h"

#include <cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "common/errors.h"

static void fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Parses an unsigned decimal prefix of s into *v; returns a pointer after it, or NULL. */
static const char *parse_digits(const char *s, int64_t *v)
{
	int64_t n = 0;
	const char *p = s;

	while (*p >= '0' && *p <= '9') {
		if (n > (INT64_MAX - 9) / 10)
			return NULL;
		n = n * 10 + (*p - '0');
		p++;
	}
	if (p == s)
		return NULL;
	*v = n;
	return p;
}

static int scaled(const char *s, const char *const *units, const int64_t *mult, int64_t bare,
		  int64_t *out)
{
	int64_t n;
	const char *p = parse_digits(s, &n);

	if (p == NULL)
		return -EINVAL;
	if (*p == '\0') {
		*out = n * bare;
		return 0;
	}
	for (size_t i = 0; units[i] != NULL; i++) {
		if (strcmp(p, units[i]) == 0) {
			if (n > INT64_MAX / mult[i])
				return -EINVAL;
			*out = n * mult[i];
			return 0;
		}
	}
	return -EINVAL;
}

int hm_parse_duration_ms(const char *s, int64_t *out)
{
	static const char *const units[] = {"ms", "s", "m", "h", NULL};
	static const int64_t mult[] = {1, 1000, 60000, 3600000};

	return scaled(s, units, mult, 1, out);
}

int hm_parse_size(const char *s, int64_t *out)
{
	static const char *const units[] = {"k",   "K", "KiB", "m",   "M",
					    "MiB", "g", "G",   "GiB", NULL};
	static const int64_t mult[] = {1 << 10, 1 << 10, 1 << 10, 1 << 20, 1 << 20,
				       1 << 20, 1 << 30, 1 << 30, 1 << 30};

	return scaled(s, units, mult, 1, out);
}

int hm_parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = {"on", "true", "yes", "1"};
	static const char *const no[] = {"off", "false", "no", "0"};

	for (size_t i = 0; i < 4; i++) {
		if (strcmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -EINVAL;
}

int hm_split_hostport(const char *s, char *host, size_t hostlen, uint16_t *port)
{
	const char *colon, *h = s;
	size_t hl;
	int64_t p;
	const char *end;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (close == NULL || close[1] != ':')
			return -EINVAL;
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return -EINVAL;
		hl = (size_t)(colon - s);
		if (memchr(s, ':', hl) != NULL)
			return -EINVAL; /* an IPv6 address needs brackets */
	}
	if (hl >= hostlen)
		return -EINVAL;
	end = parse_digits(colon + 1, &p);
	if (end == NULL || *end != '\0' || p < 1 || p > 65535)
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

int hm_opt_check_hostport(const char *value, char *err, size_t errlen)
{
	char host[256];
	uint16_t port;

	if (hm_split_hostport(value, host, sizeof(host), &port) != 0) {
		fail(err, errlen, "want HOST:PORT (port 1-65535), got '%s'", value);
		return -EINVAL;
	}
	return 0;
}

static const struct hm_opt *find(const struct hm_opt *table, const char *name, size_t n)
{
	for (const struct hm_opt *o = table; o->name != NULL; o++)
		if (strlen(o->name) == n && memcmp(o->name, name, n) == 0)
			return o;
	return NULL;
}

static int bounded(const struct hm_opt *o, int64_t v, const char *value, char *err, size_t errlen)
{
	if ((o->min != 0 || o->max != 0) && (v < o->min || v > o->max)) {
		fail(err, errlen, "--%s: '%s' is out of range (%" PRId64 " to %" PRId64 "%s)",
		     o->name, value, o->min, o->max, o->type == HM_OPT_DURATION ? " ms" : "");
		return HM_EOPTION;
	}
	return 0;
}

/* Sets the option from its textual value; where says where the value came from, for errors. */
static int set_value(const struct hm_opt *o, void *cfg, const char *value, const char *where,
		     char *err, size_t errlen)
{
	char *field = (char *)cfg + o->offset;
	int64_t v;
	bool b;
	char why[256];

	switch (o->type) {
	case HM_OPT_STR:
		if (o->check != NULL && o->check(value, why, sizeof(why)) != 0) {
			fail(err, errlen, "--%s%s: %s", o->name, where, why);
			return HM_EOPTION;
		}
		free(*(char **)field);
		*(char **)field = strdup(value);
		return *(char **)field != NULL ? 0 : -ENOMEM;
	case HM_OPT_INT: {
		const char *s = value, *end;
		bool neg = *s == '-';

		end = parse_digits(neg ? s + 1 : s, &v);
		if (end == NULL || *end != '\0') {
			fail(err, errlen, "--%s%s: '%s' is not a whole number", o->name, where,
			     value);
			return HM_EOPTION;
		}
		if (neg)
			v = -v;
		if (bounded(o, v, value, err, errlen) != 0)
			return HM_EOPTION;
		*(int64_t *)field = v;
		return 0;
	}
	case HM_OPT_DURATION:
	case HM_OPT_SIZE:
		if ((o->type == HM_OPT_DURATION ? hm_parse_duration_ms(value, &v)
						: hm_parse_size(value, &v)) != 0) {
			fail(err, errlen, "--%s%s: '%s' is not a %s", o->name, where, value,
			     o->type == HM_OPT_DURATION ? "duration (e.g. 500ms, 5s, 2m)"
							: "size (e.g. 4096, 64KiB, 8MiB)");
			return HM_EOPTION;
		}
		if (bounded(o, v, value, err, errlen) != 0)
			return HM_EOPTION;
		*(int64_t *)field = v;
		return 0;
	case HM_OPT_BOOL:
		if (hm_parse_bool(value, &b) != 0) {
			fail(err, errlen, "--%s%s: '%s' is not on/off", o->name, where, value);
			return HM_EOPTION;
		}
		*(bool *)field = b;
		return 0;
	case HM_OPT_ENUM:
		for (int i = 0; o->choices[i] != NULL; i++) {
			if (strcmp(o->choices[i], value) == 0) {
				*(int *)field = i;
				return 0;
			}
		}
		fail(err, errlen, "--%s%s: '%s' is not one of:", o->name, where, value);
		for (int i = 0; o->choices[i] != NULL; i++) {
			size_t l = strlen(err);

			snprintf(err + l, errlen - l, " %s", o->choices[i]);
		}
		return HM_EOPTION;
	}
	return HM_EOPTION;
}

static int load_config(const struct hm_opt *table, void *cfg, const char *path, char *err,
		       size_t errlen)
{
	FILE *f = fopen(path, "rb");
	char *text = NULL, where[300];
	long len;
	cJSON *root, *item;
	int r = 0;

	if (f == NULL) {
		fail(err, errlen, "--config: cannot read %s: %s", path, strerror(errno));
		return HM_EOPTION;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || len > (16 << 20) ||
	    fseek(f, 0, SEEK_SET) != 0 || (text = malloc((size_t)len + 1)) == NULL ||
	    fread(text, 1, (size_t)len, f) != (size_t)len) {
		fclose(f);
		free(text);
		fail(err, errlen, "--config: cannot read %s", path);
		return HM_EOPTION;
	}
	fclose(f);
	text[len] = '\0';
	root = cJSON_ParseWithLength(text, (size_t)len);
	free(text);
	if (root == NULL || !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		fail(err, errlen, "--config: %s is not a JSON object", path);
		return HM_EOPTION;
	}
	snprintf(where, sizeof(where), " (in config %s)", path);
	cJSON_ArrayForEach(item, root)
	{
		const struct hm_opt *o = find(table, item->string, strlen(item->string));
		char num[32];
		const char *value;

		if (o == NULL) {
			fail(err, errlen, "--config: unknown key \"%s\" in %s", item->string, path);
			r = HM_EOPTION;
			break;
		}
		if (cJSON_IsString(item)) {
			value = item->valuestring;
		} else if (cJSON_IsBool(item) && o->type == HM_OPT_BOOL) {
			value = cJSON_IsTrue(item) ? "true" : "false";
		} else if (cJSON_IsNumber(item) && o->type != HM_OPT_BOOL &&
			   o->type != HM_OPT_STR && o->type != HM_OPT_ENUM &&
			   item->valuedouble == (double)(int64_t)item->valuedouble) {
			snprintf(num, sizeof(num), "%" PRId64, (int64_t)item->valuedouble);
			value = num;
		} else {
			fail(err, errlen, "--config: \"%s\" in %s has the wrong JSON type",
			     item->string, path);
			r = HM_EOPTION;
			break;
		}
		r = set_value(o, cfg, value, where, err, errlen);
		if (r != 0)
			break;
	}
	cJSON_Delete(root);
	return r;
}

int hm_opts_parse(const struct hm_opt *table, void *cfg, int argc, char **argv, char **pos,
		  int *npos, char *err, size_t errlen)
{
	const char *config = NULL;
	int r;

	*npos = 0;
	err[0] = '\0';
	for (const struct hm_opt *o = table; o->name != NULL; o++) {
		const char *env = o->env != NULL ? getenv(o->env) : NULL;
		char where[64];

		if (env != NULL && env[0] != '\0') {
			snprintf(where, sizeof(where), " (from $%s)", o->env);
			r = set_value(o, cfg, env, where, err, errlen);
		} else if (o->def != NULL) {
			r = set_value(o, cfg, o->def, " (default)", err, errlen);
		} else {
			continue;
		}
		if (r != 0)
			return r;
	}
	/* The config file comes before flags so that flags win, wherever they stand. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			break;
		if (strcmp(argv[i], "--config") == 0) {
			if (i + 1 >= argc) {
				fail(err, errlen, "--config needs a FILE");
				return HM_EOPTION;
			}
			config = argv[++i];
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			config = argv[i] + 9;
		}
	}
	if (config != NULL && (r = load_config(table, cfg, config, err, errlen)) != 0)
		return r;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *value;
		const struct hm_opt *o;
		size_t n;

		if (strcmp(a, "--") == 0) {
			while (++i < argc)
				pos[(*npos)++] = argv[i];
			break;
		}
		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
			return HM_OPTS_HELP;
		if (a[0] != '-' || a[1] == '\0') {
			pos[(*npos)++] = argv[i];
			continue;
		}
		if (a[1] != '-') {
			fail(err, errlen, "unknown option '%s' (options are --long)", a);
			return HM_EOPTION;
		}
		name = a + 2;
		eq = strchr(name, '=');
		n = eq != NULL ? (size_t)(eq - name) : strlen(name);
		if (n == 6 && memcmp(name, "config", 6) == 0) {
			if (eq == NULL)
				i++;
			continue;
		}
		o = find(table, name, n);
		if (o == NULL) {
			fail(err, errlen, "unknown option '--%.*s' (see --help)", (int)n, name);
			return HM_EOPTION;
		}
		if (eq != NULL) {
			value = eq + 1;
		} else if (o->type == HM_OPT_BOOL) {
			bool b;

			value = "true";
			if (i + 1 < argc && hm_parse_bool(argv[i + 1], &b) == 0)
				value = argv[++i];
		} else if (i + 1 < argc) {
			value = argv[++i];
		} else {
			fail(err, errlen, "--%s needs a value (%s)", o->name,
			     o->arg ? o->arg : "VALUE");
			return HM_EOPTION;
		}
		if ((r = set_value(o, cfg, value, "", err, errlen)) != 0)
			return r;
	}
	return 0;
}

void hm_opts_usage(FILE *f, const char *synopsis, const struct hm_opt *table)
{
	fprintf(f, "usage: %s\n\noptions:\n", synopsis);
	for (const struct hm_opt *o = table; o->name != NULL; o++) {
		char left[64];

		if (o->type == HM_OPT_BOOL)
			snprintf(left, sizeof(left), "--%s", o->name);
		else
			snprintf(left, sizeof(left), "--%s %s", o->name, o->arg ? o->arg : "VALUE");
		fprintf(f, "  %-28s %s", left, o->help);
		if (o->type == HM_OPT_ENUM) {
			fprintf(f, " (");
			for (int i = 0; o->choices[i] != NULL; i++)
				fprintf(f, "%s%s", i ? "|" : "", o->choices[i]);
			fprintf(f, ")");
		}
		if (o->def != NULL)
			fprintf(f, " [default: %s]", o->def);
		if (o->env != NULL)
			fprintf(f, " [env: %s]", o->env);
		fputc('\n', f);
	}
	fprintf(f, "  %-28s %s\n  %-28s %s\n", "--config FILE",
		"read options from a JSON object (flags win)", "--help", "show this help");
}

void hm_opts_free(const struct hm_opt *table, void *cfg)
{
	for (const struct hm_opt *o = table; o->name != NULL; o++) {
		if (o->type == HM_OPT_STR) {
			char **p = (char **)((char *)cfg + o->offset);

			free(*p);
			*p = NULL;
		}
	}
}
