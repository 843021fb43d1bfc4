/*
 * A randomized, model-based test of common/table.c, and targeted tests for bugs it led to.
 *
 * The model is plain C: arrays indexed by name number (apps, domains with their app, dynos per
 * app with state and address). A seeded generator makes batches of all six operations over a
 * small name space, so that puts update, removals hit and miss, domains move between apps,
 * wildcards and exact names overlap, dynos change state many times, apps cross the inline/heap
 * boundary of their dyno array both ways, and long names go to the heap. Some batches carry one
 * deliberately invalid change (a missing object, a bad name); they must fail with the model's
 * error and change nothing. Writers start with tiny capacities, so HM_EFULL -> abort -> grow ->
 * retry happens often; they are replaced now and then by a fresh path-backed writer (which must
 * stay invisible until its first commit), a private one, or a resumed one.
 *
 * After every batch, committed or not, the table is compared with the model through every
 * public view: hm_table_verify, counts, hm_table_foreach as a set, hm_table_resolve of every
 * domain and of random hosts (with the dyno array's partition order), hm_table_route through a
 * reader of the file (app, counts per state, the chosen dyno is up and belongs to the app,
 * affinity and skip), the files in the directory, and the digest against one computed from the
 * model by a second table built from scratch in canonical order.
 *
 * HM_TABLE_MODEL_BATCHES (batches per seed) and HM_TABLE_MODEL_SEED (run one seed) override the
 * defaults; a failure message names the seed and batch to replay.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/errors.h"
#include "common/hash.h"
#include "common/table.h"
#include "common/util.h"
#include "tests/unit/hm_check.h"

/* ck_assert marks its location in a pipe on every call: too slow for the inner loops. */
static char where[256];
#define CHK(cond, ...)                                                                             \
	do {                                                                                       \
		if (!(cond))                                                                       \
			fail_at(__LINE__, #cond, __VA_ARGS__);                                     \
	} while (0)
#define CHK_EQ(a, b)                                                                               \
	do {                                                                                       \
		long long a_ = (long long)(a), b_ = (long long)(b);                                \
		if (a_ != b_)                                                                      \
			fail_at(__LINE__, #a " == " #b, "%lld != %lld", a_, b_);                   \
	} while (0)

__attribute__((format(printf, 3, 4))) static void fail_at(int line, const char *expr,
							  const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ck_abort_msg("line %d: %s: '%s' failed: %s", line, where, expr, msg);
}

/* ---- random numbers ---------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static unsigned below(unsigned n)
{
	return (unsigned)(rnd() % n);
}

static bool chance(unsigned one_in)
{
	return below(one_in) == 0;
}

/* ---- the name space ---------------------------------------------------------------------- */

#define N_APPS		10
#define N_DYNOS		45
#define FIRST_LONG_DYNO 24
#define LONGEST_DYNO	28 /* a dyno name of 63 bytes */
#define MAX_DOMAINS	48

static char app_name[N_APPS][HM_APP_NAME_MAX + 1];
static char dyno_name[N_DYNOS][HM_DYNO_NAME_MAX + 1];
static char dom_name[MAX_DOMAINS][HM_HOST_MAX + 3]; /* canonical; "*." for a wildcard */
static int n_doms;

/* A string of exactly n characters from set, starting with first. */
static void fill(char *out, char first, size_t n, const char *set)
{
	out[0] = first;
	for (size_t i = 1; i < n; i++)
		out[i] = set[i % strlen(set)];
	out[n] = '\0';
}

static void add_dom(const char *s)
{
	ck_assert_int_lt(n_doms, MAX_DOMAINS);
	ck_assert_uint_le(strlen(s), HM_HOST_MAX + 2);
	strcpy(dom_name[n_doms++], s);
}

/* A hostname of exactly n bytes ending in tail, made of labels of at most 63 bytes. */
static void add_long(const char *prefix, size_t n, const char *tail)
{
	char buf[HM_HOST_MAX + 8];
	size_t k = strlen(prefix), end = n - strlen(tail);

	memcpy(buf, prefix, k);
	for (size_t lab = 0; k < end; k++, lab++) {
		/* a dot every 60 bytes, never first, last, or next to the tail's dot */
		bool dot = lab == 60 && k + 1 < end;

		buf[k] = dot ? '.' : (char)('a' + (k % 26));
		if (dot)
			lab = (size_t)-1;
	}
	strcpy(buf + end, tail);
	ck_assert_uint_eq(strlen(buf), n);
	add_dom(buf);
}

static void names_init(void)
{
	/* dynos 24..44: names of 28 (the longest inline) to 63 bytes */
	static const size_t long_dyno_len[] = {28, 29, 30, 40, 63, 63, 50, 28, 29, 45, 62,
					       31, 32, 33, 47, 48, 49, 56, 60, 61, 36};

	if (n_doms > 0)
		return;
	for (int i = 0; i < 8; i++)
		snprintf(app_name[i], sizeof(app_name[i]), "a%d", i);
	fill(app_name[8], 'l', HM_APP_NAME_MAX, "abc-123xyz");
	fill(app_name[9], 'm', 40, "q0-9");
	for (int k = 0; k < N_DYNOS; k++) {
		if (k < FIRST_LONG_DYNO) {
			snprintf(dyno_name[k], sizeof(dyno_name[k]), "web.%d", k);
		} else {
			char suffix[8];
			size_t len = long_dyno_len[k - FIRST_LONG_DYNO];

			snprintf(suffix, sizeof(suffix), ".%d", k);
			fill(dyno_name[k], 'w', len - strlen(suffix), "orker_-9z");
			strcat(dyno_name[k], suffix);
			ck_assert_uint_eq(strlen(dyno_name[k]), len);
		}
		ck_assert_int_eq(hm_dyno_name_check(dyno_name[k], strlen(dyno_name[k])), 0);
	}
	for (int i = 0; i < N_APPS; i++)
		ck_assert_int_eq(hm_app_name_check(app_name[i], strlen(app_name[i])), 0);
	static const char *const plain[] = {
	    "ex.com",	 "www.ex.com", "api.ex.com",	  "v1.api.ex.com",
	    "x.org",	 "b.x.org",    "a.b.x.org",	  "foo.net",
	    "io",	 "q.io",       "*.ex.com",	  "*.api.ex.com",
	    "*.x.org",	 "*.b.x.org",  "*.org",		  "*.net",
	    "*.foo.net", "*.io",       "*.v1.api.ex.com", "*.q.io",
	};
	for (size_t i = 0; i < HM_ARRAY_SIZE(plain); i++)
		add_dom(plain[i]);
	add_long("", 44, ".ex.com"); /* longest inline name */
	add_long("", 45, ".ex.com"); /* shortest heap name */
	add_long("", 100, ".api.ex.com");
	add_long("", 253, ".ex.com");  /* longest hostname */
	add_long("*.", 46, ".ex.com"); /* key of 44: inline */
	add_long("*.", 47, ".x.org");  /* key of 45: heap */
	add_long("*.", 200, ".api.ex.com");
	add_long("*.", 255, ".ex.com"); /* key of 253: no host can match it */
	add_long("*.", 120, ".v1.api.ex.com");
	add_long("", 130, ".v1.api.ex.com");
	for (int d = 0; d < n_doms; d++)
		ck_assert_int_eq(hm_hostname_check(dom_name[d], strlen(dom_name[d]), true), 0);
}

static int find_app_name(const char *s, size_t n)
{
	for (int i = 0; i < N_APPS; i++)
		if (strlen(app_name[i]) == n && memcmp(app_name[i], s, n) == 0)
			return i;
	return -1;
}

static int find_dyno_name(const char *s, size_t n)
{
	if (n > 4 && n <= 6 && memcmp(s, "web.", 4) == 0) {
		int k = 0;

		for (size_t i = 4; i < n; i++)
			k = k * 10 + (s[i] - '0');
		return k < FIRST_LONG_DYNO && strlen(dyno_name[k]) == n ? k : -1;
	}
	for (int k = FIRST_LONG_DYNO; k < N_DYNOS; k++)
		if (strlen(dyno_name[k]) == n && memcmp(dyno_name[k], s, n) == 0)
			return k;
	return -1;
}

/* A canonical hostname (with "*." for a wildcard) to its domain number. */
static int find_dom_name(const char *s, size_t n)
{
	for (int d = 0; d < n_doms; d++)
		if (strlen(dom_name[d]) == n && memcmp(dom_name[d], s, n) == 0)
			return d;
	return -1;
}

/* ---- the model ----------------------------------------------------------------------------- */

struct m_app {
	bool used, maint, aff;
	uint8_t bal;
};

struct m_dom {
	bool used;
	uint8_t app;
};

struct m_dyno {
	bool used;
	uint8_t state;
	struct hm_addr addr;
};

struct model {
	struct m_app app[N_APPS];
	struct m_dom dom[MAX_DOMAINS];
	struct m_dyno dyno[N_APPS][N_DYNOS];
};

struct op {
	uint8_t op; /* enum hm_op, or an invalid one */
	int8_t app, dom, dyno;
	uint8_t state, bal;
	bool maint, aff;
	struct hm_addr addr;
	uint32_t mangle; /* case changes and a trailing dot in the hostname */
	int bad;	 /* the hm_change_check() error this change is built to have, or 0 */
};

static int model_apply(struct model *m, const struct op *o)
{
	if (o->bad != 0)
		return o->bad;
	switch (o->op) {
	case HM_OP_APP_PUT:
		m->app[o->app] = (struct m_app){true, o->maint, o->aff, o->bal};
		return 0;
	case HM_OP_APP_RM:
		if (!m->app[o->app].used)
			return HM_ENOAPP;
		memset(&m->app[o->app], 0, sizeof(m->app[o->app]));
		for (int d = 0; d < n_doms; d++)
			if (m->dom[d].used && m->dom[d].app == o->app)
				memset(&m->dom[d], 0, sizeof(m->dom[d]));
		memset(m->dyno[o->app], 0, sizeof(m->dyno[o->app]));
		return 0;
	case HM_OP_DOMAIN_PUT:
		if (!m->app[o->app].used)
			return HM_ENOAPP;
		m->dom[o->dom] = (struct m_dom){true, (uint8_t)o->app};
		return 0;
	case HM_OP_DOMAIN_RM:
		if (!m->dom[o->dom].used)
			return HM_ENODOMAIN;
		memset(&m->dom[o->dom], 0, sizeof(m->dom[o->dom]));
		return 0;
	case HM_OP_DYNO_PUT:
		if (!m->app[o->app].used)
			return HM_ENOAPP;
		m->dyno[o->app][o->dyno] = (struct m_dyno){true, o->state, o->addr};
		return 0;
	case HM_OP_DYNO_RM:
		if (!m->app[o->app].used)
			return HM_ENOAPP;
		if (!m->dyno[o->app][o->dyno].used)
			return HM_ENODYNO;
		memset(&m->dyno[o->app][o->dyno], 0, sizeof(m->dyno[o->app][o->dyno]));
		return 0;
	}
	return HM_EOP;
}

static int model_count_dynos(const struct model *m, int a, int state)
{
	int n = 0;

	for (int k = 0; k < N_DYNOS; k++)
		n += m->dyno[a][k].used && (state == 0 || m->dyno[a][k].state == state);
	return n;
}

static void model_counts(const struct model *m, uint32_t *apps, uint32_t *doms, uint32_t *dynos)
{
	*apps = *doms = *dynos = 0;
	for (int a = 0; a < N_APPS; a++) {
		*apps += m->app[a].used;
		*dynos += (uint32_t)model_count_dynos(m, a, 0);
	}
	for (int d = 0; d < n_doms; d++)
		*doms += m->dom[d].used;
}

/* The lookup rule of docs/table.md: the exact domain, else the longest wildcard suffix. */
static int model_resolve(const struct model *m, const char *host)
{
	char wild[HM_HOST_MAX + 3] = "*.";
	int d = find_dom_name(host, strlen(host));

	if (d >= 0 && m->dom[d].used)
		return m->dom[d].app;
	for (const char *dot = strchr(host, '.'); dot != NULL && dot[1] != '\0';
	     dot = strchr(dot + 1, '.')) {
		snprintf(wild + 2, sizeof(wild) - 2, "%s", dot + 1);
		d = find_dom_name(wild, strlen(wild));
		if (d >= 0 && m->dom[d].used)
			return m->dom[d].app;
	}
	return -1;
}

/* ---- changes ------------------------------------------------------------------------------ */

struct mat {
	struct hm_change c;
	char host[HM_HOST_MAX + 4];
};

static void materialize(const struct op *o, struct mat *mt)
{
	struct hm_change *c = &mt->c;

	memset(c, 0, sizeof(*c));
	c->op = o->op;
	if (o->app >= 0) {
		c->app = app_name[o->app];
		c->app_len = (uint8_t)strlen(app_name[o->app]);
	}
	switch (o->op) {
	case HM_OP_APP_PUT:
		c->maintenance = o->maint;
		c->affinity = o->aff;
		c->balance = o->bal;
		break;
	case HM_OP_DOMAIN_PUT:
	case HM_OP_DOMAIN_RM: {
		size_t n = strlen(dom_name[o->dom]);

		/* the table canonicalizes: mixed case and one trailing dot name the same domain */
		for (size_t i = 0; i < n; i++) {
			char ch = dom_name[o->dom][i];

			if ((o->mangle & 2) && ch >= 'a' && ch <= 'z' &&
			    ((o->mangle >> (2 + i % 29)) & 1))
				ch = (char)(ch - 'a' + 'A');
			mt->host[i] = ch;
		}
		if ((o->mangle & 1) && n < HM_HOST_MAX + 2)
			mt->host[n++] = '.';
		mt->host[n] = '\0';
		c->name = mt->host;
		c->name_len = (uint16_t)n;
		break;
	}
	case HM_OP_DYNO_PUT:
		c->state = o->state;
		c->addr = o->addr;
		/* fall through */
	case HM_OP_DYNO_RM:
		c->name = dyno_name[o->dyno];
		c->name_len = (uint16_t)strlen(dyno_name[o->dyno]);
		break;
	}
	switch (o->bad) {
	case HM_EAPPNAME:
		c->app = "Bad-App";
		c->app_len = 7;
		break;
	case HM_EDYNONAME:
		c->name = "web";
		c->name_len = 3;
		break;
	case HM_EHOSTNAME:
		c->name = "-x.ex.com";
		c->name_len = 9;
		break;
	case HM_ESTATE:
		c->state = (uint8_t)(o->mangle & 1 ? 0 : HM_DYNO_STATE_MAX + 1);
		break;
	case HM_EADDR:
		if (o->mangle & 1)
			c->addr.port = 0;
		else
			c->addr.family = 5;
		break;
	case HM_EBALANCE:
		c->balance = HM_BALANCE_MAX + 1;
		break;
	}
}

static struct hm_addr rand_addr(void)
{
	struct hm_addr a;
	uint64_t r = rnd(), r2 = rnd();

	memset(&a, 0, sizeof(a));
	a.family = r & 1 ? 4 : 6;
	a.port = (uint16_t)(1 + (r >> 8) % 65535);
	memcpy(a.ip, &r2, 8);
	if (a.family == 6)
		memcpy(a.ip + 8, &r, 8);
	else
		memset(a.ip + 4, 0, 12);
	return a;
}

/* ---- batch generation -------------------------------------------------------------------- */

enum { P_MIXED, P_BUILD, P_SHRINK, P_CHURN, P_DOMAINS, P_APPS, P_N };

/* Weights of app.put, app.rm, domain.put, domain.rm, dyno.put, dyno.rm per profile. */
static const unsigned weights[P_N][6] = {
    [P_MIXED] = {8, 3, 15, 8, 50, 16},	[P_BUILD] = {2, 0, 4, 1, 85, 8},
    [P_SHRINK] = {1, 1, 2, 4, 22, 70},	[P_CHURN] = {3, 0, 5, 3, 85, 4},
    [P_DOMAINS] = {5, 1, 55, 35, 2, 2}, [P_APPS] = {35, 25, 20, 5, 12, 3},
};
static const unsigned max_len[P_N] = {24, 50, 50, 40, 20, 12};

#define MAX_OPS 1024

static int pick_app(const struct model *m, bool used)
{
	int c[N_APPS], n = 0;

	for (int a = 0; a < N_APPS; a++)
		if (m->app[a].used == used)
			c[n++] = a;
	return n == 0 ? -1 : c[below((unsigned)n)];
}

static int pick_dom(const struct model *m, bool used)
{
	int c[MAX_DOMAINS], n = 0;

	for (int d = 0; d < n_doms; d++)
		if (m->dom[d].used == used)
			c[n++] = d;
	return n == 0 ? -1 : c[below((unsigned)n)];
}

static int pick_dyno(const struct model *m, int a, bool used)
{
	int c[N_DYNOS], n = 0;

	for (int k = 0; k < N_DYNOS; k++)
		if (m->dyno[a][k].used == used)
			c[n++] = k;
	return n == 0 ? -1 : c[below((unsigned)n)];
}

static struct op op_app_put(int a)
{
	struct op o = {.op = HM_OP_APP_PUT, .app = (int8_t)a, .dom = -1, .dyno = -1};

	o.maint = chance(4);
	o.aff = chance(3);
	o.bal = (uint8_t)below(HM_BALANCE_MAX + 1);
	return o;
}

/* An app for a change that needs one: the focus app, else a used one, else a new one (*pre). */
static int need_app(const struct model *m, int focus, struct op *pre, bool *has_pre)
{
	int a = focus >= 0 && m->app[focus].used ? focus : pick_app(m, true);

	if (a < 0 || (focus >= 0 && !m->app[focus].used && chance(2))) {
		a = focus >= 0 ? focus : (int)below(N_APPS);
		*pre = op_app_put(a);
		*has_pre = true;
	}
	return a;
}

/* One change that must fail against m: a missing object or a bad field. */
static struct op invalid_op(const struct model *m)
{
	struct op o = {.app = -1, .dom = -1, .dyno = -1};
	int a, k;

	o.mangle = (uint32_t)rnd();
	switch (below(12)) {
	case 0:
		if ((a = pick_app(m, false)) >= 0) {
			o.op = HM_OP_APP_RM;
			o.app = (int8_t)a;
			return o;
		}
		break;
	case 1:
		if ((o.dom = (int8_t)pick_dom(m, false)) >= 0) {
			o.op = HM_OP_DOMAIN_RM;
			return o;
		}
		break;
	case 2:
		if ((a = pick_app(m, true)) >= 0 && (k = pick_dyno(m, a, false)) >= 0) {
			o.op = HM_OP_DYNO_RM;
			o.app = (int8_t)a;
			o.dyno = (int8_t)k;
			return o;
		}
		break;
	case 3:
	case 4:
		if ((a = pick_app(m, false)) >= 0) {
			static const uint8_t ops[] = {HM_OP_DOMAIN_PUT, HM_OP_DYNO_PUT,
						      HM_OP_DYNO_RM};

			o.op = ops[below(3)];
			o.app = (int8_t)a;
			o.dom = (int8_t)below((unsigned)n_doms);
			o.dyno = (int8_t)below(N_DYNOS);
			o.state = (uint8_t)(1 + below(4));
			o.addr = rand_addr();
			return o;
		}
		break;
	default:
		break;
	}
	/* bad fields: checked before anything is looked up */
	static const int bad[] = {HM_EAPPNAME, HM_EDYNONAME, HM_EHOSTNAME, HM_ESTATE,
				  HM_EADDR,    HM_EBALANCE,  HM_EOP};
	o.bad = bad[below(HM_ARRAY_SIZE(bad))];
	o.app = (int8_t)below(N_APPS);
	o.dom = (int8_t)below((unsigned)n_doms);
	o.dyno = (int8_t)below(N_DYNOS);
	o.state = HM_DYNO_UP;
	o.addr = rand_addr();
	switch (o.bad) {
	case HM_EAPPNAME:
	case HM_EBALANCE:
		o.op = HM_OP_APP_PUT;
		break;
	case HM_EHOSTNAME:
		o.op = o.mangle & 4 ? HM_OP_DOMAIN_PUT : HM_OP_DOMAIN_RM;
		break;
	case HM_EOP:
		o.op = o.mangle & 4 ? 0 : HM_OP_MAX + 1;
		break;
	default:
		o.op = HM_OP_DYNO_PUT;
		break;
	}
	return o;
}

/* Fills ops with a random batch against base; returns its length. */
static int gen_batch(const struct model *base, struct op *ops, bool with_invalid)
{
	static struct model m;
	unsigned prof = below(P_N), len = chance(50) ? 0 : 1 + below(max_len[prof]), total = 0;
	int focus = chance(4) ? -1 : (int)below(N_APPS), n = 0;
	int bad_at = with_invalid ? (int)below(len + 1) : -1;

	m = *base;
	for (unsigned i = 0; i < 6; i++)
		total += weights[prof][i];
	while ((unsigned)n < len || bad_at >= 0) {
		struct op o = {.app = -1, .dom = -1, .dyno = -1}, pre;
		bool has_pre = false;
		unsigned w = below(total), kind = 0;
		int a, k;

		if (bad_at >= 0 && n >= bad_at) {
			ops[n++] = invalid_op(&m);
			bad_at = -1;
			continue;
		}
		while (w >= weights[prof][kind])
			w -= weights[prof][kind++];
		o.mangle = (uint32_t)rnd();
		switch (kind) {
		case 0:
			o = op_app_put(focus >= 0 && chance(2) ? focus : (int)below(N_APPS));
			break;
		case 1:
			if ((a = pick_app(&m, true)) < 0)
				continue;
			o.op = HM_OP_APP_RM;
			o.app = (int8_t)(focus >= 0 && m.app[focus].used && chance(2) ? focus : a);
			break;
		case 2:
			o.op = HM_OP_DOMAIN_PUT;
			o.app = (int8_t)need_app(&m, chance(2) ? focus : -1, &pre, &has_pre);
			o.dom = (int8_t)below((unsigned)n_doms);
			break;
		case 3:
			if ((o.dom = (int8_t)pick_dom(&m, true)) < 0)
				continue;
			o.op = HM_OP_DOMAIN_RM;
			break;
		case 4:
			o.op = HM_OP_DYNO_PUT;
			o.app = (int8_t)(a = need_app(&m, focus, &pre, &has_pre));
			k = has_pre ? -1
				    : pick_dyno(&m, a,
						prof == P_CHURN	  ? true
						: prof == P_BUILD ? false
								  : chance(2));
			o.dyno = (int8_t)(k >= 0 ? k : (int)below(N_DYNOS));
			o.state = (uint8_t)(1 + below(4));
			o.addr = !has_pre && m.dyno[a][o.dyno].used && chance(2)
				     ? m.dyno[a][o.dyno].addr
				     : rand_addr();
			break;
		case 5:
			a = focus >= 0 && m.app[focus].used ? focus : pick_app(&m, true);
			if (a < 0 || (k = pick_dyno(&m, a, true)) < 0)
				continue;
			o.op = HM_OP_DYNO_RM;
			o.app = (int8_t)a;
			o.dyno = (int8_t)k;
			break;
		}
		if (has_pre) {
			if (n + 2 >= MAX_OPS)
				break;
			CHK_EQ(model_apply(&m, &pre), 0);
			ops[n++] = pre;
		}
		CHK_EQ(model_apply(&m, &o), 0);
		ops[n++] = o;
		if (n + 2 >= MAX_OPS)
			break;
	}
	return n;
}

/* The changes that build m from nothing: apps, then domains and dynos, in random order. */
static int gen_load(const struct model *m, struct op *ops)
{
	int n = 0, first;

	for (int a = 0; a < N_APPS; a++)
		if (m->app[a].used) {
			ops[n] = op_app_put(a);
			ops[n].maint = m->app[a].maint;
			ops[n].aff = m->app[a].aff;
			ops[n].bal = m->app[a].bal;
			n++;
		}
	first = n;
	for (int d = 0; d < n_doms; d++)
		if (m->dom[d].used)
			ops[n++] = (struct op){.op = HM_OP_DOMAIN_PUT,
					       .app = (int8_t)m->dom[d].app,
					       .dom = (int8_t)d,
					       .dyno = -1,
					       .mangle = (uint32_t)rnd()};
	for (int a = 0; a < N_APPS; a++)
		for (int k = 0; k < N_DYNOS; k++)
			if (m->dyno[a][k].used)
				ops[n++] = (struct op){.op = HM_OP_DYNO_PUT,
						       .app = (int8_t)a,
						       .dom = -1,
						       .dyno = (int8_t)k,
						       .state = m->dyno[a][k].state,
						       .addr = m->dyno[a][k].addr};
	for (int i = n - 1; i > first; i--) {
		int j = first + (int)below((unsigned)(i - first + 1));
		struct op t = ops[i];

		ops[i] = ops[j];
		ops[j] = t;
	}
	return n;
}

/* ---- the digest a model must have ------------------------------------------------------------ */

/*
 * Builds m in a fresh private table, in canonical order, and returns its digest. The last two
 * states asked for are remembered (a failed batch leaves the state as it was).
 */
static void model_digest(const struct model *m, uint8_t out[HM_DIGEST_LEN])
{
	static struct model seen[2];
	static uint8_t seen_digest[2][HM_DIGEST_LEN];
	static bool seen_ok[2];
	static unsigned next;

	for (int i = 0; i < 2; i++)
		if (seen_ok[i] && memcmp(&seen[i], m, sizeof(*m)) == 0) {
			memcpy(out, seen_digest[i], HM_DIGEST_LEN);
			return;
		}

	struct hm_table_caps caps = {N_APPS, MAX_DOMAINS, N_APPS * N_DYNOS, 1u << 17};
	struct hm_table_writer *w;
	struct hm_table_info info;
	struct op ops[N_APPS + MAX_DOMAINS + N_APPS * N_DYNOS];
	int n = 0;

	for (int a = 0; a < N_APPS; a++)
		if (m->app[a].used)
			ops[n++] = (struct op){.op = HM_OP_APP_PUT,
					       .app = (int8_t)a,
					       .maint = m->app[a].maint,
					       .aff = m->app[a].aff,
					       .bal = m->app[a].bal};
	for (int d = 0; d < n_doms; d++)
		if (m->dom[d].used)
			ops[n++] = (struct op){
			    .op = HM_OP_DOMAIN_PUT, .app = (int8_t)m->dom[d].app, .dom = (int8_t)d};
	for (int a = 0; a < N_APPS; a++)
		for (int k = 0; k < N_DYNOS; k++)
			if (m->dyno[a][k].used)
				ops[n++] = (struct op){.op = HM_OP_DYNO_PUT,
						       .app = (int8_t)a,
						       .dyno = (int8_t)k,
						       .state = m->dyno[a][k].state,
						       .addr = m->dyno[a][k].addr};
	CHK_EQ(hm_table_writer_open(&w, NULL, &caps, 0, 0), 0);
	CHK_EQ(hm_table_begin(w), 0);
	for (int i = 0; i < n; i++) {
		struct mat mt;

		materialize(&ops[i], &mt);
		CHK_EQ(hm_table_apply(w, &mt.c), 0);
	}
	CHK_EQ(hm_table_commit(w, 0, 0), 0);
	hm_table_writer_info(w, &info);
	memcpy(out, info.digest, HM_DIGEST_LEN);
	hm_table_writer_close(w);
	seen[next] = *m;
	memcpy(seen_digest[next], out, HM_DIGEST_LEN);
	seen_ok[next] = true;
	next ^= 1;
}

/* ---- comparing table and model ------------------------------------------------------------ */

struct run {
	char dir[64], path[128];
	struct hm_table_writer *w;
	bool path_backed, installed;
	struct model pub;    /* the writer's published state */
	uint64_t epoch, seq; /* its sync position */
	uint64_t gen;	     /* the epoch the writer commits with */
	/* What readers of the path must see: the last state installed there. */
	struct model vis;
	bool vis_exists;
	uint64_t vis_epoch, vis_seq, vis_file_id;
	struct hm_table_reader *r;
	/* coverage, so that a test that stopped exercising something fails */
	unsigned batches, commits, failed, efull, grows, reopen, resumes, private_w, unsent;
	unsigned to_heap, to_inline, max_dynos, moves, long_hits, wild_hits;
	unsigned heap_full;
	uint64_t max_full_heap;
};

static bool addr_eq(const struct hm_addr *a, const struct hm_addr *b)
{
	return a->family == b->family && a->port == b->port && memcmp(a->ip, b->ip, 16) == 0;
}

struct fe_ctx {
	const struct model *m;
	bool app[N_APPS], dom[MAX_DOMAINS], dyno[N_APPS][N_DYNOS];
	uint8_t phase;
};

static int fe_cb(void *ctx, const struct hm_change *c)
{
	struct fe_ctx *f = ctx;
	int a = find_app_name(c->app, c->app_len), d, k;

	CHK(a >= 0 && f->m->app[a].used, "foreach: unknown app %.*s", c->app_len, c->app);
	CHK(c->op >= f->phase, "foreach: op %u after op %u", c->op, f->phase);
	f->phase = c->op;
	switch (c->op) {
	case HM_OP_APP_PUT:
		CHK(!f->app[a], "foreach: app %s twice", app_name[a]);
		f->app[a] = true;
		CHK(c->maintenance == f->m->app[a].maint && c->affinity == f->m->app[a].aff &&
			c->balance == f->m->app[a].bal,
		    "foreach: app %s flags", app_name[a]);
		break;
	case HM_OP_DOMAIN_PUT:
		d = find_dom_name(c->name, c->name_len);
		CHK(d >= 0 && f->m->dom[d].used && !f->dom[d], "foreach: domain %.*s", c->name_len,
		    c->name);
		f->dom[d] = true;
		CHK(f->m->dom[d].app == a, "foreach: domain %s in app %s, model %s", dom_name[d],
		    app_name[a], app_name[f->m->dom[d].app]);
		break;
	case HM_OP_DYNO_PUT:
		k = find_dyno_name(c->name, c->name_len);
		CHK(k >= 0 && f->m->dyno[a][k].used && !f->dyno[a][k], "foreach: dyno %s/%.*s",
		    app_name[a], c->name_len, c->name);
		f->dyno[a][k] = true;
		CHK(c->state == f->m->dyno[a][k].state && addr_eq(&c->addr, &f->m->dyno[a][k].addr),
		    "foreach: dyno %s/%s state %u, model %u", app_name[a], dyno_name[k], c->state,
		    f->m->dyno[a][k].state);
		break;
	default:
		CHK(false, "foreach: op %u", c->op);
	}
	return 0;
}

struct res_ctx {
	const struct model *m;
	int app;
	bool seen[N_DYNOS];
	uint8_t last_state;
	int n;
};

static int res_cb(void *ctx, const struct hm_change *c)
{
	struct res_ctx *rc = ctx;
	int a = find_app_name(c->app, c->app_len), k = find_dyno_name(c->name, c->name_len);

	CHK(c->op == HM_OP_DYNO_PUT && a == rc->app, "resolve: dyno of app %d, want %d", a,
	    rc->app);
	CHK(k >= 0 && rc->m->dyno[a][k].used && !rc->seen[k], "resolve: dyno %.*s", c->name_len,
	    c->name);
	rc->seen[k] = true;
	CHK(c->state == rc->m->dyno[a][k].state && addr_eq(&c->addr, &rc->m->dyno[a][k].addr),
	    "resolve: dyno %s/%s", app_name[a], dyno_name[k]);
	/* the array is partitioned [up | starting | crashed | down] */
	CHK(c->state >= rc->last_state, "resolve: %s/%s (%u) after a dyno in state %u", app_name[a],
	    dyno_name[k], c->state, rc->last_state);
	rc->last_state = c->state;
	rc->n++;
	return 0;
}

static void check_resolve(struct run *R, const char *host)
{
	struct hm_change app;
	struct res_ctx rc = {.m = &R->pub, .app = model_resolve(&R->pub, host)};
	int e = hm_table_resolve(R->w, host, strlen(host), &app, res_cb, &rc);

	if (rc.app < 0) {
		CHK_EQ(e, HM_ENOHOST);
		return;
	}
	CHK(e == 0, "resolve %s: %d, model says app %s", host, e, app_name[rc.app]);
	CHK(find_app_name(app.app, app.app_len) == rc.app, "resolve %s: app %.*s, model %s", host,
	    app.app_len, app.app, app_name[rc.app]);
	CHK(app.maintenance == R->pub.app[rc.app].maint && app.affinity == R->pub.app[rc.app].aff &&
		app.balance == R->pub.app[rc.app].bal,
	    "resolve %s: flags", host);
	CHK_EQ(rc.n, model_count_dynos(&R->pub, rc.app, 0));
}

static bool skip_even_port(void *ctx, const struct hm_addr *a, uint32_t slot)
{
	(void)ctx;
	(void)slot;
	return a->port % 2 == 0;
}

static void check_route(struct run *R, struct hm_table_map *map, const struct hm_table_info *info,
			const char *host)
{
	const struct model *m = &R->vis;
	int ea = model_resolve(m, host), aff = -1, e, k;
	struct hm_pick pick = {.rnd = rnd()};
	bool skip = chance(4), any = false;
	struct hm_route out;

	if (ea >= 0 && chance(2)) {
		aff = (int)below(N_DYNOS);
		pick.affinity = dyno_name[aff];
		pick.affinity_len = strlen(dyno_name[aff]);
	}
	if (skip)
		pick.skip = skip_even_port;
	e = hm_table_route(map, host, strlen(host), chance(8) && aff < 0 && !skip ? NULL : &pick,
			   &out);
	if (ea < 0) {
		CHK(e == HM_ENOHOST, "route %s: %d (app %s), model: no app", host, e, out.app);
		return;
	}
	CHK(e == 0, "route %s: %d, model: app %s", host, e, app_name[ea]);
	CHK_EQ(out.version, info->version);
	CHK(strcmp(out.app, app_name[ea]) == 0, "route %s: app %s, model %s", host, out.app,
	    app_name[ea]);
	CHK(out.maintenance == m->app[ea].maint && out.affinity == m->app[ea].aff &&
		out.balance == m->app[ea].bal,
	    "route %s: flags", host);
	CHK_EQ(out.n_dynos, model_count_dynos(m, ea, 0));
	CHK_EQ(out.n_up, model_count_dynos(m, ea, HM_DYNO_UP));
	CHK_EQ(out.n_starting, model_count_dynos(m, ea, HM_DYNO_STARTING));
	CHK_EQ(out.n_crashed, model_count_dynos(m, ea, HM_DYNO_CRASHED));
	CHK_EQ(out.n_down, model_count_dynos(m, ea, HM_DYNO_DOWN));
	for (k = 0; k < N_DYNOS; k++)
		any |= m->dyno[ea][k].used && m->dyno[ea][k].state == HM_DYNO_UP &&
		       !(skip && m->dyno[ea][k].addr.port % 2 == 0);
	CHK(out.has_dyno == any, "route %s: has_dyno %d, model %d", host, out.has_dyno, any);
	if (!out.has_dyno)
		return;
	k = find_dyno_name(out.dyno, strlen(out.dyno));
	CHK(k >= 0 && m->dyno[ea][k].used && m->dyno[ea][k].state == HM_DYNO_UP,
	    "route %s: dyno %s is not an up dyno of %s", host, out.dyno, app_name[ea]);
	CHK(addr_eq(&out.addr, &m->dyno[ea][k].addr), "route %s: dyno %s address", host, out.dyno);
	CHK(out.slot < info->caps.dynos, "route %s: slot %u", host, out.slot);
	CHK(!skip || out.addr.port % 2 == 1, "route %s: skipped dyno %s chosen", host, out.dyno);
	if (aff >= 0 && m->dyno[ea][aff].used && m->dyno[ea][aff].state == HM_DYNO_UP &&
	    !(skip && m->dyno[ea][aff].addr.port % 2 == 0))
		CHK(out.affinity_hit && k == aff, "route %s: affinity %s missed (%s)", host,
		    dyno_name[aff], out.dyno);
	else
		CHK(!out.affinity_hit, "route %s: affinity hit on %s", host, out.dyno);
}

/* A host for lookups: a domain's own name, a name under a wildcard, or a random name. */
static void host_for(int d, char *out)
{
	static const char *const labels[] = {"www", "api", "v1", "b",	"x",
					     "a",   "q",   "ex", "foo", "io"};
	static const char *const tails[] = {"com",    "org",   "net",	 "io",
					    "ex.com", "x.org", "foo.net"};
	const char *name;

	if (d >= 0) {
		name = dom_name[d];
		if (name[0] != '*') {
			strcpy(out, name);
			return;
		}
		snprintf(out, HM_HOST_MAX + 1, "%s%s", labels[below(HM_ARRAY_SIZE(labels))],
			 name + 1);
		if (strlen(name + 1) + 3 > HM_HOST_MAX)
			strcpy(out, name + 2); /* the apex: never matches its own wildcard */
		return;
	}
	if (chance(4)) {
		d = (int)below((unsigned)n_doms);
		snprintf(out, HM_HOST_MAX + 1, "zz.%s",
			 dom_name[d][0] == '*' ? dom_name[d] + 2 : dom_name[d]);
		if (strlen(out) > HM_HOST_MAX - 3)
			strcpy(out, "zz.zz");
		return;
	}
	out[0] = '\0';
	for (unsigned i = 0, depth = below(4); i < depth; i++) {
		strcat(out, labels[below(HM_ARRAY_SIZE(labels))]);
		strcat(out, ".");
	}
	strcat(out, tails[below(HM_ARRAY_SIZE(tails))]);
}

static void check_dir(struct run *R)
{
	DIR *dp = opendir(R->dir);
	struct dirent *de;
	unsigned tmp = 0, other = 0;

	CHK(dp != NULL, "opendir %s", R->dir);
	while ((de = readdir(dp)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0 ||
		    strcmp(de->d_name, "table") == 0 || strcmp(de->d_name, "table.lock") == 0)
			continue;
		if (strncmp(de->d_name, "table.new.", 10) == 0)
			tmp++;
		else
			other++;
	}
	closedir(dp);
	CHK_EQ(other, 0);
	/* only a path-backed writer before its first commit has a file of its own */
	CHK(tmp == (R->w != NULL && R->path_backed && !R->installed ? 1u : 0u),
	    "%u temporary files in %s", tmp, R->dir);
	if (!R->vis_exists)
		CHK(access(R->path, F_OK) != 0, "%s exists before any commit", R->path);
}

static void check_all(struct run *R)
{
	struct hm_table_info info;
	uint32_t apps, doms, dynos;
	uint8_t dig[HM_DIGEST_LEN];
	char host[HM_HOST_MAX + 1];

	/* the writer's published version */
	CHK_EQ(hm_table_verify(R->w), 0);
	hm_table_writer_info(R->w, &info);
	model_counts(&R->pub, &apps, &doms, &dynos);
	CHK_EQ(info.apps, apps);
	CHK_EQ(info.domains, doms);
	CHK_EQ(info.dynos, dynos);
	CHK_EQ(info.epoch, R->epoch);
	CHK_EQ(info.seq, R->seq);
	model_digest(&R->pub, dig);
	CHK(memcmp(dig, info.digest, HM_DIGEST_LEN) == 0, "digest differs from the model's");
	struct fe_ctx fe = {.m = &R->pub};
	CHK_EQ(hm_table_foreach(R->w, fe_cb, &fe), 0);
	for (int a = 0; a < N_APPS; a++) {
		CHK(fe.app[a] == R->pub.app[a].used, "foreach: app %s missing", app_name[a]);
		for (int k = 0; k < N_DYNOS; k++)
			CHK(fe.dyno[a][k] == R->pub.dyno[a][k].used, "foreach: dyno %s/%s missing",
			    app_name[a], dyno_name[k]);
	}
	for (int d = 0; d < n_doms; d++) {
		CHK(fe.dom[d] == R->pub.dom[d].used, "foreach: domain %s missing", dom_name[d]);
		host_for(d, host);
		check_resolve(R, host);
	}
	for (int i = 0; i < 8; i++) {
		host_for(-1, host);
		check_resolve(R, host);
	}
	if (R->path_backed)
		check_dir(R);

	/* readers of the path */
	if (!R->vis_exists)
		return;
	struct hm_table_map *map = hm_table_reader_map(R->r);
	if (map == NULL) {
		CHK_EQ(hm_table_reader_check(R->r), 1);
		map = hm_table_reader_map(R->r);
	}
	CHK(map != NULL, "no map");
	hm_table_map_info(map, &info);
	CHK(info.file_id == R->vis_file_id, "reader on file %llx, want %llx",
	    (unsigned long long)info.file_id, (unsigned long long)R->vis_file_id);
	CHK_EQ(info.epoch, R->vis_epoch);
	CHK_EQ(info.seq, R->vis_seq);
	model_counts(&R->vis, &apps, &doms, &dynos);
	CHK_EQ(info.apps, apps);
	CHK_EQ(info.domains, doms);
	CHK_EQ(info.dynos, dynos);
	if (memcmp(&R->vis, &R->pub, sizeof(R->vis)) != 0)
		model_digest(&R->vis, dig);
	CHK(memcmp(dig, info.digest, HM_DIGEST_LEN) == 0,
	    "reader's digest differs from the model's");
	for (int d = 0; d < n_doms; d++) {
		if (!R->vis.dom[d].used && !chance(4))
			continue;
		host_for(d, host);
		check_route(R, map, &info, host);
	}
	for (int i = 0; i < 8; i++) {
		host_for(-1, host);
		check_route(R, map, &info, host);
	}
}

/* ---- driving the writer ---------------------------------------------------------------------- */

static void note_coverage(struct run *R, const struct model *before, const struct model *after)
{
	for (int a = 0; a < N_APPS; a++) {
		int n0 = model_count_dynos(before, a, 0), n1 = model_count_dynos(after, a, 0);

		R->to_heap += n0 <= 7 && n1 > 7;
		R->to_inline += n0 > 7 && n1 <= 7;
		R->max_dynos = n1 > (int)R->max_dynos ? (unsigned)n1 : R->max_dynos;
	}
	for (int d = 0; d < n_doms; d++) {
		R->moves += before->dom[d].used && after->dom[d].used &&
			    before->dom[d].app != after->dom[d].app;
		if (after->dom[d].used && !before->dom[d].used) {
			R->long_hits += strlen(dom_name[d]) > 44;
			R->wild_hits += dom_name[d][0] == '*';
		}
	}
}

static void grow(struct run *R)
{
	struct hm_table_caps min = {0, 0, 0, 0}, *minp = NULL;
	int e;

	if (chance(8)) {
		struct hm_table_info info;

		hm_table_writer_info(R->w, &info);
		min = (struct hm_table_caps){info.caps.apps + below(3), info.caps.domains,
					     info.caps.dynos + below(9),
					     info.caps.heap + below(5000)};
		minp = &min;
	}
	e = hm_table_grow(R->w, minp);
	CHK(e == 0, "grow: %d", e);
	R->grows++;
	/* an installed file is replaced by the grown one; one not installed yet stays invisible */
	if (R->path_backed && R->installed) {
		struct hm_table_info info;

		hm_table_writer_info(R->w, &info);
		R->vis_file_id = info.file_id;
	}
}

/*
 * HM_EFULL must mean full, not leaked: a record runs out only when the live ones fill its
 * capacity (every other index is on the free list), and this name space never has more than
 * ~20 KB of heap blocks live (210 dyno names of 29..63 bytes, 10 domain names of 45..253,
 * arrays of <= 56 dynos, whatever the mix of size classes), so heap exhaustion above
 * HEAP_NEVER_FULL means blocks were lost. work is the state with op o applied, o being the
 * change the table could not make.
 */
#define HEAP_NEVER_FULL (32u << 10)

static void check_full(struct run *R, const struct model *work, const struct op *o)
{
	struct hm_table_info info;
	uint32_t apps, doms, dynos;
	bool heap = false;

	hm_table_writer_info(R->w, &info);
	model_counts(work, &apps, &doms, &dynos);
	switch (o->op) {
	case HM_OP_APP_PUT:
		heap = false;
		break;
	case HM_OP_DOMAIN_PUT:
		heap = strlen(dom_name[o->dom]) - (dom_name[o->dom][0] == '*' ? 2 : 0) > 44;
		break;
	case HM_OP_DYNO_PUT:
		heap = strlen(dyno_name[o->dyno]) > 28 || model_count_dynos(work, o->app, 0) > 7;
		break;
	default:
		CHK(false, "HM_EFULL from op %u", o->op);
	}
	if (apps > info.caps.apps || doms > info.caps.domains || dynos > info.caps.dynos)
		return;
	CHK(heap, "HM_EFULL on %s with %u/%u apps, %u/%u domains, %u/%u dynos: records leaked",
	    hm_op_name(o->op), apps, info.caps.apps, doms, info.caps.domains, dynos,
	    info.caps.dynos);
	CHK(info.caps.heap < HEAP_NEVER_FULL, "heap of %llu bytes full: blocks leaked",
	    (unsigned long long)info.caps.heap);
	R->heap_full++;
	R->max_full_heap = info.caps.heap > R->max_full_heap ? info.caps.heap : R->max_full_heap;
}

/* Applies ops as one batch (growing and retrying on HM_EFULL); returns the model's result. */
static int run_batch(struct run *R, const struct op *ops, int n, bool abort_anyway)
{
	static struct model work;

	for (int attempt = 0;; attempt++) {
		int expect = 0, got = 0, fail_i = 0;

		CHK(attempt < 40, "still full after %d grows", attempt);
		work = R->pub;
		CHK_EQ(hm_table_begin(R->w), 0);
		if (chance(64)) {
			CHK_EQ(hm_table_begin(R->w), -EBUSY);
			CHK_EQ(hm_table_grow(R->w, NULL), -EBUSY);
		}
		for (int i = 0; i < n; i++) {
			struct mat mt;

			fail_i = i;
			materialize(&ops[i], &mt);
			expect = model_apply(&work, &ops[i]);
			got = hm_table_apply(R->w, &mt.c);
			if (got == HM_EFULL && expect == 0)
				break;
			CHK(got == expect, "op %d/%d (%s): table %s, model %s", i, n,
			    hm_op_name(ops[i].op) ? hm_op_name(ops[i].op) : "?",
			    got ? hm_errname(got) : "ok", expect ? hm_errname(expect) : "ok");
			if (expect != 0)
				break;
		}
		if (got == HM_EFULL) {
			check_full(R, &work, &ops[fail_i]);
			R->efull++;
			hm_table_abort(R->w);
			check_all(R); /* the abort restored the published state exactly */
			grow(R);
			check_all(R);
			continue;
		}
		if (expect != 0 || abort_anyway) {
			hm_table_abort(R->w);
			R->failed += expect != 0;
			check_all(R);
			return expect;
		}
		R->seq++;
		R->epoch = R->gen;
		CHK_EQ(hm_table_commit(R->w, R->epoch, R->seq), 0);
		note_coverage(R, &R->pub, &work);
		R->pub = work;
		R->commits++;
		if (R->path_backed) {
			struct hm_table_info info;

			hm_table_writer_info(R->w, &info);
			R->installed = true;
			R->vis = R->pub;
			R->vis_exists = true;
			R->vis_epoch = R->epoch;
			R->vis_seq = R->seq;
			R->vis_file_id = info.file_id;
		}
		check_all(R);
		return 0;
	}
}

static const struct hm_table_caps tiny_caps[] = {
    {2, 2, 4, 4096},
    {1, 1, 1, 4096},
    {3, 5, 7, 4096},
    {16, 16, 64, 8192},
    {2, 40, 4, 4096},
    /* only the heap fills */
    {32, 64, 512, 4096},
    {16, 48, 512, 4096},
    {64, 64, 1024, 4096},
    {16, 64, 512, 4096},
};

/* Replaces the writer: a fresh path-backed one, a private one, or one resuming the file. */
static void new_writer(struct run *R, unsigned mode)
{
	static struct op ops[MAX_OPS];
	const struct hm_table_caps *caps = &tiny_caps[below(HM_ARRAY_SIZE(tiny_caps))];
	struct model state = R->pub;
	int e, n;

	if (R->w != NULL)
		hm_table_writer_close(R->w);
	R->w = NULL;
	R->reopen++;
	if (chance(12))
		caps = NULL; /* the defaults */
	if (mode == 3 && !R->vis_exists)
		mode = 0;
	if (mode == 3) {
		struct hm_table_info info;

		/* resume: the file's state, the file's capacities */
		CHK_EQ(hm_table_writer_open(&R->w, R->path, caps, HM_TABLE_RESUME, 0), 0);
		R->path_backed = R->installed = true;
		R->pub = R->vis;
		R->epoch = R->gen = R->vis_epoch;
		R->seq = R->vis_seq;
		hm_table_writer_info(R->w, &info);
		CHK(info.file_id == R->vis_file_id, "resumed another file");
		R->resumes++;
		check_all(R);
		return;
	}
	if (mode == 2) {
		/* a fresh path-backed writer that never commits leaves no trace */
		CHK_EQ(hm_table_writer_open(&R->w, R->path, caps, 0, 0), 0);
		R->path_backed = true;
		R->installed = false;
		memset(&R->pub, 0, sizeof(R->pub));
		R->epoch = R->seq = 0;
		check_all(R);
		CHK_EQ(hm_table_begin(R->w), 0);
		n = gen_load(&state, ops);
		for (int i = 0; i < n && i < 20; i++) {
			struct mat mt;

			materialize(&ops[i], &mt);
			e = hm_table_apply(R->w, &mt.c);
			CHK(e == 0 || e == HM_EFULL, "apply: %d", e);
			if (e != 0)
				break;
		}
		hm_table_writer_close(R->w);
		R->w = NULL;
		R->unsent++;
		mode = 0;
	}
	R->path_backed = mode == 0;
	R->installed = !R->path_backed;
	R->private_w += !R->path_backed;
	CHK_EQ(hm_table_writer_open(&R->w, R->path_backed ? R->path : NULL, caps, 0, 0), 0);
	memset(&R->pub, 0, sizeof(R->pub));
	R->epoch = R->seq = 0;
	R->gen++;
	check_all(R);
	/* load the previous writer's state into the new, small table in one batch */
	n = gen_load(&state, ops);
	CHK_EQ(run_batch(R, ops, n, false), 0);
	CHK(memcmp(&R->pub, &state, sizeof(state)) == 0, "load");
}

/* Tables live in /dev/shm in production; a disk-backed /tmp only adds writeback. */
static const char *scratch_dir(void)
{
	return access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
}

static unsigned env_unsigned(const char *name, unsigned def)
{
	const char *s = getenv(name);

	return s != NULL && *s != '\0' ? (unsigned)strtoul(s, NULL, 0) : def;
}

#ifdef __SANITIZE_ADDRESS__
#define DEFAULT_BATCHES 2500
#else
#define DEFAULT_BATCHES 4000
#endif

static const uint64_t seeds[] = {1, 0x5eed, 20240601, 0xdeadbeefcafe};

START_TEST(model_random_batches)
{
	static struct op ops[MAX_OPS];
	static struct run R;
	uint64_t seed = env_unsigned("HM_TABLE_MODEL_SEED", 0) != 0
			    ? env_unsigned("HM_TABLE_MODEL_SEED", 0)
			    : seeds[_i];
	unsigned batches = env_unsigned("HM_TABLE_MODEL_BATCHES", DEFAULT_BATCHES);
	char cmd[160];

	if (_i > 0 && env_unsigned("HM_TABLE_MODEL_SEED", 0) != 0)
		return;
	names_init();
	memset(&R, 0, sizeof(R));
	rng_state = seed;
	snprintf(R.dir, sizeof(R.dir), "%s/hm-test-table-model-XXXXXX", scratch_dir());
	ck_assert_ptr_nonnull(mkdtemp(R.dir));
	snprintf(R.path, sizeof(R.path), "%s/table", R.dir);
	ck_assert_int_eq(hm_table_reader_new(&R.r, R.path), 0);
	snprintf(where, sizeof(where), "seed %llu, start", (unsigned long long)seed);
	new_writer(&R, seed & 1 ? 1 : 0);
	for (unsigned b = 0; b < batches; b++) {
		bool bad = chance(8);
		int n;

		snprintf(where, sizeof(where), "seed %llu, batch %u (writer %u, %s)",
			 (unsigned long long)seed, b, R.reopen,
			 R.path_backed ? (R.installed ? "file" : "new file") : "private");
		if (chance(150)) {
			new_writer(&R, below(4));
			continue;
		}
		n = gen_batch(&R.pub, ops, bad);
		R.batches++;
		int e = run_batch(&R, ops, n, !bad && chance(40));
		CHK(bad ? e != 0 : e == 0, "batch (%s): %s", bad ? "invalid" : "valid",
		    e ? hm_errname(e) : "ok");
	}
	fprintf(
	    stderr,
	    "seed %llu: %u batches, %u commits, %u failed as expected, %u full, %u grows, "
	    "%u writers (%u private, %u resumed, %u never committed); dyno arrays to the heap "
	    "%u, back inline %u, max %u dynos; %u domain moves, %u long and %u wildcard domains "
	    "added; %u heaps found full, largest %llu\n",
	    (unsigned long long)seed, R.batches, R.commits, R.failed, R.efull, R.grows, R.reopen,
	    R.private_w, R.resumes, R.unsent, R.to_heap, R.to_inline, R.max_dynos, R.moves,
	    R.long_hits, R.wild_hits, R.heap_full, (unsigned long long)R.max_full_heap);
	/* the generator must keep reaching what it is meant to reach */
	if (batches >= 1000) {
		ck_assert_uint_gt(R.failed, batches / 20);
		ck_assert_uint_gt(R.efull, 10);
		ck_assert_uint_gt(R.heap_full, 0);
		ck_assert_uint_gt(R.to_heap, 10);
		ck_assert_uint_gt(R.to_inline, 10);
		ck_assert_uint_ge(R.max_dynos, 38);
		ck_assert_uint_gt(R.moves, 20);
		ck_assert_uint_gt(R.long_hits, 20);
	}
	hm_table_writer_close(R.w);
	hm_table_reader_free(R.r);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", R.dir);
	ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* ---- targeted tests ----------------------------------------------------------------------------
 */

static char tdir[64], tpath[128];

static void tsetup(void)
{
	snprintf(tdir, sizeof(tdir), "%s/hm-test-table-model-XXXXXX", scratch_dir());
	ck_assert_ptr_nonnull(mkdtemp(tdir));
	snprintf(tpath, sizeof(tpath), "%s/table", tdir);
}

static void tteardown(void)
{
	char cmd[160];

	snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", tdir, tdir);
	ck_assert_int_eq(system(cmd), 0);
}

static unsigned count_tmp_files(void)
{
	DIR *dp = opendir(tdir);
	struct dirent *de;
	unsigned n = 0;

	ck_assert_ptr_nonnull(dp);
	while ((de = readdir(dp)) != NULL)
		n += strstr(de->d_name, ".new.") != NULL;
	closedir(dp);
	return n;
}

static int apply1(struct hm_table_writer *w, const struct op *o)
{
	struct mat mt;

	materialize(o, &mt);
	return hm_table_apply(w, &mt.c);
}

static struct op dyno_op(int a, int k)
{
	struct op o = {.op = HM_OP_DYNO_PUT,
		       .app = (int8_t)a,
		       .dom = -1,
		       .dyno = (int8_t)k,
		       .state = HM_DYNO_UP};

	o.addr.family = 4;
	o.addr.port = (uint16_t)(1000 + k);
	o.addr.ip[0] = 10;
	o.addr.ip[3] = (uint8_t)k;
	return o;
}

/*
 * A fresh path-backed writer (a syncd restart, a full resync) loads its first batch; the batch
 * is larger than the initial capacities, so it is aborted, the table grown and the batch applied
 * again. Until that first commit the path must keep the previous table: growth must not
 * install the new, still empty table, nor leave the first temporary file behind.
 */
START_TEST(grow_before_first_commit)
{
	struct hm_table_caps tiny = {2, 2, 4, 4096};
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_table_info winfo, rinfo;
	struct hm_route out;
	struct op o = op_app_put(0);
	int e, k;

	names_init();
	/* the previous writer's table: app a0 at ex.com */
	ck_assert_int_eq(hm_table_writer_open(&w, tpath, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(apply1(w, &o), 0);
	ck_assert_int_eq(apply1(w, &(struct op){.op = HM_OP_DOMAIN_PUT, .app = 0, .dom = 0}), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	hm_table_writer_close(w);
	ck_assert_int_eq(hm_table_reader_new(&r, tpath), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	hm_table_map_info(hm_table_reader_map(r), &rinfo);
	uint64_t old_id = rinfo.file_id;

	/* the new writer: one batch of 40 dynos does not fit in tiny */
	ck_assert_int_eq(hm_table_writer_open(&w, tpath, &tiny, 0, 0), 0);
	ck_assert_uint_eq(count_tmp_files(), 1);
	for (int attempt = 0;; attempt++) {
		ck_assert_int_lt(attempt, 20);
		ck_assert_int_eq(hm_table_begin(w), 0);
		e = apply1(w, &o);
		for (k = 0; k < 40 && e == 0; k++)
			e = apply1(w, &(struct op){.op = HM_OP_DYNO_PUT,
						   .app = 0,
						   .dyno = (int8_t)k,
						   .state = HM_DYNO_UP,
						   .addr = dyno_op(0, k).addr});
		if (e == 0)
			break;
		ck_assert_int_eq(e, HM_EFULL);
		hm_table_abort(w);
		ck_assert_int_eq(hm_table_grow(w, NULL), 0);
		/* readers still see the previous table, and only the writer's file is new */
		ck_assert_int_eq(hm_table_reader_check(r), 0);
		hm_table_map_info(hm_table_reader_map(r), &rinfo);
		ck_assert_uint_eq(rinfo.file_id, old_id);
		ck_assert_int_eq(hm_table_route(hm_table_reader_map(r), "ex.com", 6, NULL, &out),
				 0);
		ck_assert_uint_eq(count_tmp_files(), 1);
	}
	ck_assert_int_eq(hm_table_commit(w, 2, 1), 0);
	ck_assert_int_eq(hm_table_verify(w), 0);
	ck_assert_uint_eq(count_tmp_files(), 0);
	hm_table_writer_info(w, &winfo);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	hm_table_map_info(hm_table_reader_map(r), &rinfo);
	ck_assert_uint_eq(rinfo.file_id, winfo.file_id);
	ck_assert_uint_eq(rinfo.dynos, 40);
	ck_assert_int_eq(hm_table_route(hm_table_reader_map(r), "ex.com", 6, NULL, &out),
			 HM_ENOHOST);
	hm_table_writer_close(w);
	hm_table_reader_free(r);
}
END_TEST

/*
 * The first commit of a new file installs it with rename(2). If that fails, the contract says
 * the batch is aborted: the writer must still publish the state it had, and the same batch
 * applied again must work once the path can be written.
 */
START_TEST(commit_install_failure_aborts)
{
	struct hm_table_writer *w;
	struct hm_table_info info;
	struct op o = op_app_put(0);
	char sub[200];
	int e;

	names_init();
	ck_assert_int_eq(hm_table_writer_open(&w, tpath, NULL, 0, 0), 0);
	/* a non-empty directory at the path: rename(2) over it fails */
	ck_assert_int_eq(mkdir(tpath, 0700), 0);
	snprintf(sub, sizeof(sub), "%s/x", tpath);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(apply1(w, &o), 0);
	e = hm_table_commit(w, 1, 1);
	ck_assert_int_lt(e, 0);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 0);
	ck_assert_uint_eq(info.seq, 0);
	ck_assert_uint_eq(info.version, 0);
	ck_assert_int_eq(hm_table_verify(w), 0);
	/* the caller retries the batch once the path is usable */
	ck_assert_int_eq(rmdir(sub), 0);
	ck_assert_int_eq(rmdir(tpath), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	o.maint = true;
	ck_assert_int_eq(apply1(w, &o), 0);
	ck_assert_int_eq(
	    apply1(w, &(struct op){.op = HM_OP_APP_RM, .app = 0, .dom = -1, .dyno = -1}), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	hm_table_writer_info(w, &info);
	ck_assert_uint_eq(info.apps, 0);
	ck_assert_uint_eq(info.seq, 1);
	ck_assert_int_eq(hm_table_verify(w), 0);
	ck_assert_int_eq(access(tpath, F_OK), 0);
	ck_assert_uint_eq(count_tmp_files(), 0);
	hm_table_writer_close(w);
}
END_TEST

/*
 * A reader validates an app's dyno array against the app's dyno count and bounds its random
 * pick by the up count; it must use one read of the dyno count for both, since the writer may be
 * rewriting the line under it (step 4 of a commit rewrites the copy a slow reader still reads).
 * To make that interleaving exact rather than lucky, the reader's page holding the app record is
 * protected: each read of the app's dyno count faults, and the handler serves the value of a
 * script (the first `sw` reads see 8, later ones 200) before letting that one load through
 * (x86 trap flag) and protecting the page again. The up count reads 200 throughout; 8 dynos put
 * the array on the heap (28 slots), and the next heap block holds the array of app "canary".
 * No consistent snapshot has a dyno to give (200 up of 8, or 200 dynos in 28 slots), so any dyno
 * returned was picked outside the checked bounds; a canary one was read past the array's end.
 */
/*
 * A resuming writer checks the published copy and must refuse a bad one with HM_EBADTABLE. A
 * dyno record whose name length (a byte) exceeds the 63 a name may have, consistent with its
 * hash slot, must be refused before its name is hashed into the digest's fixed-size buffer. The
 * file is edited the way garbage could be: the record found by its address, the slot by its tag
 * (this duplicates the table's dyno key hash: seed ^ salt ^ app index << 32).
 */
#define TABLE_DYNO_SALT 0xc2b2ae3d27d4eb4full

START_TEST(resume_refuses_overlong_names)
{
	struct hm_table_writer *w;
	struct hm_change c;
	struct op o = dyno_op(8, LONGEST_DYNO); /* app name of 63 bytes, dyno name of 63 bytes */
	struct mat mt;
	struct stat st;
	int fd, e;

	names_init();
	ck_assert_uint_eq(strlen(dyno_name[LONGEST_DYNO]), 63);
	o.app = 8;
	o.addr.ip[1] = 0x5a; /* 10.90.0.43: unique bytes to find the record by */
	ck_assert_int_eq(hm_table_writer_open(&w, tpath, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	c = (struct hm_change){.op = HM_OP_APP_PUT, .app = app_name[8], .app_len = HM_APP_NAME_MAX};
	ck_assert_int_eq(hm_table_apply(w, &c), 0);
	materialize(&o, &mt);
	ck_assert_int_eq(hm_table_apply(w, &mt.c), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	hm_table_writer_close(w);

	fd = open(tpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	uint8_t *file = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(file, MAP_FAILED);
	uint64_t pub, seed, copy_off[2];
	memcpy(&seed, file + 32, 8);
	memcpy(copy_off, file + 64, 16);
	memcpy(&pub, file + 256, 8);
	uint8_t *copy = file + copy_off[pub & 1];
	size_t copy_len = (size_t)(copy_off[1] - copy_off[0]);
	/* the record: ip at +16, name_len at +11; the name on the heap; the slot {tag, index + 1}
	 */
	uint8_t *rec = memmem(copy, copy_len, o.addr.ip, 16);
	uint8_t *name = memmem(copy, copy_len, dyno_name[LONGEST_DYNO], 63);
	ck_assert_ptr_nonnull(rec);
	ck_assert_ptr_nonnull(name);
	rec -= 16;
	ck_assert_uint_eq(rec[11], 63);
	uint32_t slot[2] = {
	    (uint32_t)hm_hash64(dyno_name[LONGEST_DYNO], 63, seed ^ TABLE_DYNO_SALT), 1};
	uint8_t *sp = memmem(copy, copy_len, slot, 8);
	ck_assert_ptr_nonnull(sp);
	/* slots of 12 bytes, a power of two >= 2 x cap_dynos; the only slot sits at its home */
	uint32_t cap_dynos, mask = 16;
	memcpy(&cap_dynos, file + 48, 4);
	while (mask < 2 * cap_dynos)
		mask *= 2;
	mask--;
	uint8_t *tab = sp - (size_t)(slot[0] & mask) * 12;
	rec[11] = 255;
	slot[0] = (uint32_t)hm_hash64(name, 255, seed ^ TABLE_DYNO_SALT);
	memset(sp, 0, 12);
	memcpy(tab + (size_t)(slot[0] & mask) * 12, slot, 8);
	munmap(file, (size_t)st.st_size);
	close(fd);

	e = hm_table_writer_open(&w, tpath, NULL, HM_TABLE_RESUME, 0);
	ck_assert_int_eq(e, HM_EBADTABLE);
}
END_TEST

/*
 * The same for an app's dyno counts: per-state counts that only add up to the total modulo 2^32
 * (up = 2^32 - 1, starting = 1, all = 0) must be refused; a writer that accepted them would put
 * the next dyno at partition boundaries computed with wrapped sums, far outside the array.
 */
START_TEST(resume_refuses_wrapped_counts)
{
	static const char app[] = "wrapped-counts";
	struct hm_table_writer *w;
	struct hm_change c = {.op = HM_OP_APP_PUT, .app = app, .app_len = sizeof(app) - 1};
	struct stat st;
	int fd, e;

	ck_assert_int_eq(hm_table_writer_open(&w, tpath, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	ck_assert_int_eq(hm_table_apply(w, &c), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	hm_table_writer_close(w);

	fd = open(tpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	uint8_t *file = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(file, MAP_FAILED);
	uint64_t pub, copy_off[2];
	memcpy(copy_off, file + 64, 16);
	memcpy(&pub, file + 256, 8);
	uint8_t *copy = file + copy_off[pub & 1];
	uint8_t *rec = memmem(copy, (size_t)(copy_off[1] - copy_off[0]), app, sizeof(app));
	ck_assert_ptr_nonnull(rec);
	rec -= 64; /* the name is at +64, n[0..4] at +16 */
	uint32_t n[5] = {0, UINT32_MAX, 1, 0, 0};
	memcpy(rec + 16, n, sizeof(n));
	munmap(file, (size_t)st.st_size);
	close(fd);

	e = hm_table_writer_open(&w, tpath, NULL, HM_TABLE_RESUME, 0);
	if (e == 0)
		hm_table_writer_close(w);
	ck_assert_int_eq(e, HM_EBADTABLE);
}
END_TEST

#if defined(__x86_64__) && defined(__linux__)
#include <signal.h>
#include <ucontext.h>

#define TRAP_FLAG 0x100
static uint8_t *trap_page;
static const uint8_t *trap_n0;	/* the reader's address of the victim's rec_app.n[0] */
static volatile uint32_t *w_n0; /* ours, writable, of the same field */
static volatile int n0_reads, n0_switch;

static void on_segv(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	uint8_t *a = si->si_addr;

	if (a < trap_page || a >= trap_page + 4096) {
		signal(sig, SIG_DFL);
		return;
	}
	if (a == trap_n0)
		*w_n0 = ++n0_reads > n0_switch ? 200 : 8;
	mprotect(trap_page, 4096, PROT_READ);
	uc->uc_mcontext.gregs[REG_EFL] |= TRAP_FLAG;
}

static void on_trap(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;

	(void)sig;
	(void)si;
	mprotect(trap_page, 4096, PROT_NONE);
	uc->uc_mcontext.gregs[REG_EFL] &= ~TRAP_FLAG;
}

static bool skip_victim(void *ctx, const struct hm_addr *a, uint32_t slot)
{
	(void)ctx;
	(void)slot;
	return a->ip[0] == 10 && a->ip[1] == 0; /* dyno_op(0, k): the victim's own dynos */
}

START_TEST(reader_bounds_under_torn_counts)
{
	static const char app[] = "toctou-victim";
	struct hm_table_writer *w;
	struct hm_table_reader *r;
	struct hm_table_map *m;
	struct hm_route out;
	struct hm_change c;
	struct sigaction sa_segv = {0}, sa_trap = {0}, old_segv, old_trap;
	char name[16], line[512];
	unsigned canary = 0, victim = 0;
	uint8_t *rmap = NULL;
	FILE *maps;
	int fd;

	ck_assert_int_eq(hm_table_writer_open(&w, tpath, NULL, 0, 0), 0);
	ck_assert_int_eq(hm_table_begin(w), 0);
	/* the victim's array is the heap's first block, the canary's the next one */
	for (int a = 0; a < 2; a++) {
		const char *an = a == 0 ? app : "canary";

		c = (struct hm_change){
		    .op = HM_OP_APP_PUT, .app = an, .app_len = (uint8_t)strlen(an)};
		ck_assert_int_eq(hm_table_apply(w, &c), 0);
		for (int k = 0; k < 8; k++) {
			snprintf(name, sizeof(name), "%s.%d", a == 0 ? "web" : "canary", k);
			c = (struct hm_change){.op = HM_OP_DYNO_PUT,
					       .app = an,
					       .app_len = (uint8_t)strlen(an),
					       .name = name,
					       .name_len = (uint16_t)strlen(name),
					       .state = HM_DYNO_UP};
			c.addr = dyno_op(a, k).addr;
			c.addr.ip[1] = (uint8_t)a;
			ck_assert_int_eq(hm_table_apply(w, &c), 0);
		}
	}
	c = (struct hm_change){.op = HM_OP_DOMAIN_PUT,
			       .app = app,
			       .app_len = (uint8_t)strlen(app),
			       .name = "v.com",
			       .name_len = 5};
	ck_assert_int_eq(hm_table_apply(w, &c), 0);
	ck_assert_int_eq(hm_table_commit(w, 1, 1), 0);
	ck_assert_int_eq(hm_table_reader_new(&r, tpath), 0);
	ck_assert_int_eq(hm_table_reader_check(r), 1);
	m = hm_table_reader_map(r);
	ck_assert_int_eq(hm_table_route(m, "v.com", 5, NULL, &out), 0);
	ck_assert(out.has_dyno);

	/* our writable view of the file; the victim's record by its name (the name is at +64) */
	struct stat st;
	fd = open(tpath, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	uint8_t *file = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(file, MAP_FAILED);
	uint64_t pub, copy_off[2];
	memcpy(&pub, file + 256, 8);
	memcpy(copy_off, file + 64, 16);
	uint8_t *copy = file + copy_off[pub & 1];
	uint8_t *rec = memmem(copy, (size_t)(copy_off[1] - copy_off[0]), app, sizeof(app));
	ck_assert_ptr_nonnull(rec);
	rec -= 64;
	uint32_t n[2];
	memcpy(n, rec + 16, 8);
	ck_assert_uint_eq(n[0], 8);
	ck_assert_uint_eq(n[1], 8);
	memcpy(rec + 20, &(uint32_t){200}, 4);
	w_n0 = (volatile uint32_t *)(rec + 16);

	/* the reader's read-only mapping of the same file */
	maps = fopen("/proc/self/maps", "r");
	ck_assert_ptr_nonnull(maps);
	while (fgets(line, sizeof(line), maps) != NULL) {
		unsigned long lo, hi;
		char perms[8];
		int pathpos = 0;

		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &lo, &hi, perms, &pathpos) == 3 &&
		    strcmp(perms, "r--s") == 0 && pathpos > 0 &&
		    strncmp(line + pathpos, tpath, strlen(tpath)) == 0 &&
		    line[pathpos + strlen(tpath)] == '\n')
			rmap = (uint8_t *)lo;
	}
	fclose(maps);
	ck_assert_ptr_nonnull(rmap);
	trap_n0 = rmap + (rec + 16 - file);
	trap_page = (uint8_t *)((uintptr_t)trap_n0 & ~(uintptr_t)4095);

	sa_segv.sa_sigaction = on_segv;
	sa_segv.sa_flags = SA_SIGINFO;
	sa_trap.sa_sigaction = on_trap;
	sa_trap.sa_flags = SA_SIGINFO;
	ck_assert_int_eq(sigaction(SIGSEGV, &sa_segv, &old_segv), 0);
	ck_assert_int_eq(sigaction(SIGTRAP, &sa_trap, &old_trap), 0);
	for (int sw = 0; sw < 6; sw++) {
		for (uint64_t i = 0; i < 16; i++) {
			struct hm_pick pick = {.rnd = i * 0x9e3779b97f4a7c15ull,
					       .skip = i & 1 ? skip_victim : NULL};

			n0_reads = 0;
			n0_switch = sw;
			*w_n0 = 8;
			mprotect(trap_page, 4096, PROT_NONE);
			int e = hm_table_route(m, "v.com", 5, &pick, &out);
			mprotect(trap_page, 4096, PROT_READ);
			ck_assert_int_eq(e, 0);
			ck_assert_int_gt(n0_reads, 0);
			if (out.has_dyno && strncmp(out.dyno, "canary.", 7) == 0)
				canary++;
			else if (out.has_dyno)
				victim++;
		}
	}
	sigaction(SIGSEGV, &old_segv, NULL);
	sigaction(SIGTRAP, &old_trap, NULL);
	memcpy(rec + 16, n, 8);
	fprintf(stderr,
		"torn counts: %u dynos picked beyond the checked count, %u past the array\n",
		victim, canary);
	ck_assert_uint_eq(victim + canary, 0);
	ck_assert_int_eq(hm_table_verify(w), 0);
	munmap(file, (size_t)st.st_size);
	close(fd);
	hm_table_reader_free(r);
	hm_table_writer_close(w);
}
END_TEST
#endif

static Suite *make_suite(void)
{
	Suite *s = suite_create("table_model");
	TCase *tc = tcase_create("model");

	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, model_random_batches, 0, (int)HM_ARRAY_SIZE(seeds));
	suite_add_tcase(s, tc);
	tc = tcase_create("targeted");
	tcase_add_checked_fixture(tc, tsetup, tteardown);
	tcase_add_test(tc, grow_before_first_commit);
	tcase_add_test(tc, commit_install_failure_aborts);
	tcase_add_test(tc, resume_refuses_overlong_names);
	tcase_add_test(tc, resume_refuses_wrapped_counts);
#if defined(__x86_64__) && defined(__linux__)
	tcase_add_test(tc, reader_bounds_under_torn_counts);
#endif
	suite_add_tcase(s, tc);
	return s;
}

HM_CHECK_MAIN(make_suite)
