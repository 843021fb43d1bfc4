/*
 * hm-certstore-put: writes a node's certificate store directly, as hermod-syncd edge does, so
 * that the router's TLS tests and benchmarks need no cluster. Certificates go through the
 * origin's checks (syncd/certcheck.c) and are stored in their canonical form, exactly what an
 * edge would store. For tests only: production state always flows through the origin.
 *
 *   hm-certstore-put STORE put NAME CERT.pem KEY.pem   put (replace) a certificate
 *   hm-certstore-put STORE rm NAME                     remove one
 *   hm-certstore-put STORE keys HEX [HEX...]           set the ticket keys (80 bytes each, in
 *                                                      hex; the first encrypts)
 *
 * Each command is one committed batch (seq = last + 1). The store is created (0600) if there is
 * none. Exit 0, 1 with the reason on stderr (a refused certificate: the origin's text).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/util.h"
#include "syncd/certcheck.h"

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (f == NULL)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) != NULL) {
		*len = fread(buf, 1, (size_t)n, f);
		buf[*len] = '\0';
	}
	fclose(f);
	return buf;
}

static int parse_key(const char *hex, struct hm_ticket_key *k)
{
	uint8_t b[sizeof(*k)];

	if (hm_unhex(hex, strlen(hex), b, sizeof(b)) != 0)
		return -EINVAL;
	memcpy(k->name, b, 16);
	memcpy(k->aes_key, b + 16, 32);
	memcpy(k->hmac_key, b + 48, 32);
	return 0;
}

static int put(struct hm_certstore_writer *w, char **argv)
{
	struct hm_certcheck chk;
	struct hm_cert_put p = {0};
	size_t cl = 0, kl = 0;
	char *cert = slurp(argv[1], &cl), *key = slurp(argv[2], &kl);
	int r;

	if (cert == NULL || key == NULL) {
		fprintf(stderr, "hm-certstore-put: cannot read %s\n",
			cert == NULL ? argv[1] : argv[2]);
		free(cert);
		free(key);
		return -EIO;
	}
	r = hm_certcheck_run(&chk, argv[0], strlen(argv[0]), cert, cl, key, kl,
			     (int64_t)time(NULL));
	if (r != 0) {
		fprintf(stderr, "hm-certstore-put: %s\n", r == -EINVAL ? chk.text : hm_strerror(r));
	} else {
		p.name = argv[0];
		p.name_len = strlen(argv[0]);
		p.cert = chk.cert;
		p.cert_len = chk.cert_len;
		p.key = chk.key;
		p.key_len = chk.key_len;
		p.not_after = chk.not_after;
		memcpy(p.id, chk.id, sizeof(p.id));
		r = hm_certstore_put(w, &p);
		if (r == -ENOSPC && (hm_certstore_abort(w), hm_certstore_grow(w, NULL)) == 0 &&
		    hm_certstore_begin(w) == 0)
			r = hm_certstore_put(w, &p);
	}
	hm_certcheck_fini(&chk);
	free(cert);
	free(key);
	return r;
}

int main(int argc, char **argv)
{
	struct hm_certstore_writer *w;
	struct hm_certstore_info info;
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	int r, n = argc - 3;

	if (argc < 4 || (strcmp(argv[2], "put") == 0 && argc != 6) ||
	    (strcmp(argv[2], "rm") == 0 && argc != 4) ||
	    (strcmp(argv[2], "keys") == 0 && n > HM_TICKET_KEYS_MAX)) {
		fprintf(stderr, "usage: hm-certstore-put STORE put NAME CERT KEY | rm NAME | keys "
				"HEX...\n");
		return 2;
	}
	r = hm_certstore_writer_open(&w, argv[1], NULL, HM_CERTSTORE_RESUME, 0);
	if (r == -ENOENT)
		r = hm_certstore_writer_open(&w, argv[1], NULL, 0, 0);
	if (r != 0) {
		fprintf(stderr, "hm-certstore-put: %s: %s\n", argv[1], hm_strerror(r));
		return 1;
	}
	hm_certstore_writer_info(w, &info);
	r = hm_certstore_begin(w);
	if (r == 0 && strcmp(argv[2], "put") == 0) {
		r = put(w, argv + 3);
	} else if (r == 0 && strcmp(argv[2], "rm") == 0) {
		r = hm_certstore_rm(w, argv[3], strlen(argv[3]));
	} else if (r == 0 && strcmp(argv[2], "keys") == 0) {
		for (int i = 0; i < n && r == 0; i++)
			r = parse_key(argv[3 + i], &keys[i]);
		if (r == 0)
			r = hm_certstore_set_ticket_keys(w, keys, (unsigned)n);
	} else if (r == 0) {
		r = -EINVAL;
	}
	if (r == 0)
		r = hm_certstore_commit(w, info.epoch, info.seq + 1);
	else
		hm_certstore_abort(w);
	if (r != 0 && r != -EINVAL)
		fprintf(stderr, "hm-certstore-put: %s %s: %s\n", argv[1], argv[2], hm_strerror(r));
	hm_certstore_writer_close(w);
	return r == 0 ? 0 : 1;
}
