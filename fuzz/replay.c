/*
 * The fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput over every file of the corpus
 * directories (or files) given, in name order, so that the suite replays each target's corpus
 * under the sanitizer build on every run. A target reports a broken property by aborting, which
 * fails the test; the corpus holds the inputs a campaign (run.sh) kept for their coverage and any
 * input that once failed.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned ran;

static void one(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf;
	long n;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		exit(2);
	}
	/* a buffer of exactly the input's size, so that the sanitizer sees a read past it */
	if ((buf = malloc(n > 0 ? (size_t)n : 1)) == NULL ||
	    fread(buf, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "replay: cannot read %s\n", path);
		exit(2);
	}
	fclose(f);
	LLVMFuzzerTestOneInput(buf, (size_t)n);
	free(buf);
	ran++;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		struct stat st;
		struct dirent **list;
		int n;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: no %s\n", argv[i]);
			return 2;
		}
		if (!S_ISDIR(st.st_mode)) {
			one(argv[i]);
			continue;
		}
		if ((n = scandir(argv[i], &list, NULL, by_name)) < 0) {
			fprintf(stderr, "replay: cannot list %s\n", argv[i]);
			return 2;
		}
		for (int k = 0; k < n; k++) {
			char path[4096];

			if (list[k]->d_name[0] != '.') {
				snprintf(path, sizeof(path), "%s/%s", argv[i], list[k]->d_name);
				one(path);
			}
			free(list[k]);
		}
		free(list);
	}
	if (ran == 0) {
		fprintf(stderr, "replay: no input\n");
		return 2;
	}
	printf("%u inputs, no failure\n", ran);
	return 0;
}
