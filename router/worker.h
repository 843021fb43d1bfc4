/*
 * A worker process of hermod-router (worker.c): what the master calls after forking.
 */
#ifndef HM_ROUTER_WORKER_H
#define HM_ROUTER_WORKER_H

#include <stdint.h>

#include "router/config-t.h"
#include "router/shm.h"

/* Runs a worker in this (forked) process: never returns. It uses shm->slot[index]. */
_Noreturn void hm__router_worker_main(const struct hm__router_config *cfg,
				      struct hm__router_shm *shm, uint32_t index);

#endif
