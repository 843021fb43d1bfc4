/*
 * Intrusive doubly linked lists (the node lives in the object, so linking allocates nothing) and
 * container_of, for the router's per-worker object sets: client connections, idle dyno
 * connections by address and by age.
 */
#ifndef HM_ROUTER_LIST_H
#define HM_ROUTER_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct hm__router_list {
	struct hm__router_list *prev, *next;
};

static inline void hm__list_init(struct hm__router_list *l)
{
	l->prev = l->next = l;
}

static inline bool hm__list_empty(const struct hm__router_list *l)
{
	return l->next == l;
}

/* Inserts n after head (at the front). */
static inline void hm__list_push(struct hm__router_list *head, struct hm__router_list *n)
{
	n->next = head->next;
	n->prev = head;
	head->next->prev = n;
	head->next = n;
}

/* Unlinks n and leaves it an empty list (unlinking it again is harmless). */
static inline void hm__list_del(struct hm__router_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

#define hm__container_of(ptr, type, member) ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#endif
