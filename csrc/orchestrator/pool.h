/* orchestrator/pool.h: the permit pool, the slots free to take. Taking never waits; a
 * poisoned slot never comes back. Plain data, no I/O: tested without a worker. */
#ifndef COGLET_POOL_H
#define COGLET_POOL_H

/* Embedded in what the pool hands out (orchestrator's slot). */
typedef struct pool_link {
    struct pool_link *next;
    int in_pool;  /* free, waiting in the pool */
    int poisoned; /* never returns to the pool */
} pool_link;

typedef struct permit_pool {
    pool_link *free; /* the last released is taken first */
    int num_free;
} permit_pool;

void permit_pool_init(permit_pool *pool);
/* A free link or NULL. */
pool_link *permit_pool_try_acquire(permit_pool *pool);
/* Back into the pool; nothing for a link already there or poisoned. */
void permit_pool_release(permit_pool *pool, pool_link *link);
/* Never handed out again; taken out of the pool if it is there. */
void permit_pool_poison(permit_pool *pool, pool_link *link);
/* A poisoned link made good again (its slot is usable after all) and put back. */
void permit_pool_unpoison(permit_pool *pool, pool_link *link);
int permit_pool_free_count(const permit_pool *pool);

#endif
