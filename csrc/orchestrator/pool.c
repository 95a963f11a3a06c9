/* orchestrator/pool.c: the permit pool, a free list of slots. */
#include "orchestrator/pool.h"

#include <stddef.h>

void permit_pool_init(permit_pool *pool) {
    pool->free = NULL;
    pool->num_free = 0;
}

pool_link *permit_pool_try_acquire(permit_pool *pool) {
    pool_link *link = pool->free;
    if (!link)
        return NULL;
    pool->free = link->next;
    link->next = NULL;
    link->in_pool = 0;
    pool->num_free--;
    return link;
}

void permit_pool_release(permit_pool *pool, pool_link *link) {
    if (link->in_pool || link->poisoned)
        return;
    link->in_pool = 1;
    link->next = pool->free;
    pool->free = link;
    pool->num_free++;
}

void permit_pool_poison(permit_pool *pool, pool_link *link) {
    if (link->poisoned)
        return;
    link->poisoned = 1;
    if (!link->in_pool)
        return;
    pool_link **pp = &pool->free;
    while (*pp && *pp != link)
        pp = &(*pp)->next;
    if (*pp)
        *pp = link->next;
    link->next = NULL;
    link->in_pool = 0;
    pool->num_free--;
}

int permit_pool_free_count(const permit_pool *pool) { return pool->num_free; }

void permit_pool_unpoison(permit_pool *pool, pool_link *link) {
    if (!link->poisoned)
        return;
    link->poisoned = 0;
    permit_pool_release(pool, link);
}
