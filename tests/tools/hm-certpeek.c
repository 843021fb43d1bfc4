/*
 * hm-certpeek STORE [HOST...]: reads a certificate store file as a router worker does (the
 * reader API of common/certstore.h) and prints one JSON object: the store's facts, the ticket
 * keys' count and generation (and a SHA-256 prefix of each key's name, so tests can tell key
 * sets apart without seeing a key), and for each HOST the entry SNI selection picks, with the
 * SHA-256 of the chain it fetched. Exit 1 if the store cannot be mapped. Tests only: it prints
 * nothing of a private key.
 */
#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/certstore.h"
#include "common/errors.h"
#include "common/model.h"

static void hex(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		printf("%02x", p[i]);
}

int main(int argc, char **argv)
{
	struct hm_certstore_reader *r;
	struct hm_certstore_map *m;
	struct hm_certstore_info info;
	struct hm_ticket_key keys[HM_TICKET_KEYS_MAX];
	uint64_t gen = 0;
	int nk, e;

	if (argc < 2) {
		fprintf(stderr, "usage: hm-certpeek STORE [HOST...]\n");
		return 2;
	}
	if (hm_certstore_reader_new(&r, argv[1]) != 0)
		return 1;
	if ((e = hm_certstore_reader_check(r)) < 0 || (m = hm_certstore_reader_map(r)) == NULL) {
		printf("{\"error\":\"%s\"}\n", hm_errname(e < 0 ? e : -ENOENT));
		hm_certstore_reader_free(r);
		return 1;
	}
	hm_certstore_map_info(m, &info);
	nk = hm_certstore_ticket_keys(m, keys, &gen);
	printf(
	    "{\"epoch\":%llu,\"seq\":%llu,\"certs\":%u,\"ticket_keys\":%d,\"ticket_keys_gen\":%llu,"
	    "\"key_names\":[",
	    (unsigned long long)info.epoch, (unsigned long long)info.seq, info.certs, nk,
	    (unsigned long long)gen);
	for (int i = 0; i < nk; i++) {
		uint8_t d[32];
		unsigned dl = 0;

		EVP_Digest(keys[i].name, sizeof(keys[i].name), d, &dl, EVP_sha256(), NULL);
		printf("%s\"", i ? "," : "");
		hex(d, 8);
		printf("\"");
	}
	memset(keys, 0, sizeof(keys));
	printf("],\"soonest_not_after\":%lld,\"hosts\":{", (long long)info.soonest_not_after);
	for (int i = 2; i < argc; i++) {
		char key[HM_HOST_MAX + 1];
		struct hm_cert_ref ref;
		struct hm_cert_bytes b;
		int kl = strcmp(argv[i], "-") == 0 ? 0 : hm_host_key(argv[i], strlen(argv[i]), key);

		printf("%s\"%s\":", i > 2 ? "," : "", argv[i]);
		if (kl < 0 || hm_certstore_lookup(m, key, (size_t)kl, &ref) != 0) {
			printf("null");
			continue;
		}
		{
			size_t cap = ref.cert_len + ref.key_len;
			uint8_t *buf = malloc(cap ? cap : 1), d[32];
			unsigned dl = 0;

			if (buf == NULL || hm_certstore_fetch(m, &ref, buf, cap, &b) != 0) {
				printf("{\"fetch\":false}");
				free(buf);
				continue;
			}
			EVP_Digest(b.cert, b.cert_len, d, &dl, EVP_sha256(), NULL);
			printf("{\"match\":%u,\"not_after\":%lld,\"chain_sha256\":\"", ref.match,
			       (long long)ref.not_after);
			hex(d, 32);
			printf("\",\"key_len\":%zu}", b.key_len);
			memset(buf, 0, cap);
			free(buf);
		}
	}
	printf("}}\n");
	hm_certstore_reader_free(r);
	return 0;
}
