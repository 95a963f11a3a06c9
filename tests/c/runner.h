/* tests/c/runner.h: the C unit tests' tiny runner: TEST/CHECK, and RUN_TESTS printing one
 * line per test and a closing "{label}: N passed, N failed". */
#ifndef COGLET_TEST_RUNNER_H
#define COGLET_TEST_RUNNER_H

#include <stdio.h>

static int failures, checks;
#define CHECK(cond)                                                                                                    \
    do {                                                                                                               \
        checks++;                                                                                                      \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            fprintf(stderr, "  FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                                         \
        }                                                                                                              \
    } while (0)

typedef void (*test_fn)(void);
#define TEST(name) static void name(void)
#define T(n) {#n, n}

typedef struct test_case {
    const char *name;
    test_fn fn;
} test_case;

static int run_tests(const char *label, const test_case *tests, size_t n) {
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        int before = failures;
        tests[i].fn();
        if (failures == before) {
            passed++;
            printf("ok   %s\n", tests[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", tests[i].name);
        }
    }
    printf("%s: %d passed, %d failed\n", label, passed, failed);
    return failed ? 1 : 0;
}

#endif
