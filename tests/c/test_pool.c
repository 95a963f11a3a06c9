/* tests/c/test_pool.c: the permit pool (orchestrator/pool.c), one behaviour per test. */
#include <stddef.h>

#include "runner.h"

#include "orchestrator/pool.h"

#define N 3

static permit_pool pool;
static pool_link links[N];

/* A pool holding every link, released last to first so links[0] is taken first. */
static void fill(void) {
    permit_pool_init(&pool);
    for (int i = 0; i < N; i++)
        links[i] = (pool_link){0};
    for (int i = N - 1; i >= 0; i--)
        permit_pool_release(&pool, &links[i]);
}

TEST(empty_pool_gives_nothing_without_waiting) {
    permit_pool_init(&pool);
    CHECK(permit_pool_try_acquire(&pool) == NULL);
    CHECK(permit_pool_free_count(&pool) == 0);
}

TEST(acquire_takes_each_link_once_then_nothing) {
    fill();
    CHECK(permit_pool_free_count(&pool) == N);
    for (int i = 0; i < N; i++) {
        pool_link *l = permit_pool_try_acquire(&pool);
        CHECK(l == &links[i]);
        CHECK(l && !l->in_pool);
        CHECK(permit_pool_free_count(&pool) == N - 1 - i);
    }
    CHECK(permit_pool_try_acquire(&pool) == NULL);
}

TEST(release_returns_a_link_and_the_last_released_goes_first) {
    fill();
    pool_link *a = permit_pool_try_acquire(&pool), *b = permit_pool_try_acquire(&pool);
    permit_pool_release(&pool, a);
    permit_pool_release(&pool, b);
    CHECK(permit_pool_free_count(&pool) == N);
    CHECK(permit_pool_try_acquire(&pool) == b);
    CHECK(permit_pool_try_acquire(&pool) == a);
}

TEST(releasing_a_free_link_twice_counts_it_once) {
    fill();
    pool_link *a = permit_pool_try_acquire(&pool);
    permit_pool_release(&pool, a);
    permit_pool_release(&pool, a);
    CHECK(permit_pool_free_count(&pool) == N);
    int taken = 0;
    while (permit_pool_try_acquire(&pool))
        taken++;
    CHECK(taken == N);
}

TEST(poisoning_a_free_link_takes_it_out) {
    fill();
    permit_pool_poison(&pool, &links[1]);
    CHECK(links[1].poisoned && !links[1].in_pool);
    CHECK(permit_pool_free_count(&pool) == N - 1);
    pool_link *l;
    while ((l = permit_pool_try_acquire(&pool)) != NULL)
        CHECK(l != &links[1]);
}

TEST(a_poisoned_link_is_never_returned) {
    fill();
    pool_link *a = permit_pool_try_acquire(&pool);
    permit_pool_poison(&pool, a);
    permit_pool_poison(&pool, a); /* twice: no effect on the count */
    CHECK(permit_pool_free_count(&pool) == N - 1);
    permit_pool_release(&pool, a);
    CHECK(!a->in_pool && permit_pool_free_count(&pool) == N - 1);
    pool_link *l;
    while ((l = permit_pool_try_acquire(&pool)) != NULL)
        CHECK(l != a);
}

TEST(poisoning_every_link_empties_the_pool) {
    fill();
    permit_pool_try_acquire(&pool);
    for (int i = 0; i < N; i++)
        permit_pool_poison(&pool, &links[i]);
    CHECK(permit_pool_free_count(&pool) == 0);
    CHECK(permit_pool_try_acquire(&pool) == NULL);
    for (int i = 0; i < N; i++)
        permit_pool_release(&pool, &links[i]);
    CHECK(permit_pool_try_acquire(&pool) == NULL);
}

static const test_case tests[] = {
    T(empty_pool_gives_nothing_without_waiting),
    T(acquire_takes_each_link_once_then_nothing),
    T(release_returns_a_link_and_the_last_released_goes_first),
    T(releasing_a_free_link_twice_counts_it_once),
    T(poisoning_a_free_link_takes_it_out),
    T(a_poisoned_link_is_never_returned),
    T(poisoning_every_link_empties_the_pool),
};

int main(void) { return run_tests("c-pool", tests, sizeof tests / sizeof tests[0]); }
