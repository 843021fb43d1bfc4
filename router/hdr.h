/*
 * Lookups in the router's HTTP vocabulary (router/hdr-t.h): a header name to its id and flags,
 * a status to its reason phrase. Pure functions over constant tables, safe from any thread once
 * the name index is built (it is built by the first lookup, or by hm__router_hdr_init()).
 */
#ifndef HM_ROUTER_HDR_H
#define HM_ROUTER_HDR_H

#include <stddef.h>
#include <stdint.h>

#include "router/hdr-t.h"

/* ASCII lowercase of one character (header names and tokens are compared case-insensitively). */
static inline char hm__router_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* Flags (enum hm__router_hdr_flag) of each enum hm__router_hdr_id; HM__HDR_OTHER has none. */
extern const uint8_t hm__router_hdr_flags[HM__HDR_COUNT];

/* Builds the name index. Optional (the first hm__router_hdr_classify() builds it); call it
 * before the process starts threads that classify. */
void hm__router_hdr_init(void);

/* The id of a header name (any case, n bytes), or HM__HDR_OTHER. One hash probe on average. */
uint8_t hm__router_hdr_classify(const char *name, size_t n);

/* The lowercase name of an id ("" for HM__HDR_OTHER). Static storage. */
const char *hm__router_hdr_name(uint8_t id);

/* The reason phrase of a status (HM__HTTP_REASONS), or "" for one the table does not list.
 * Static storage. */
const char *hm__router_reason(int status);

#endif
