/* tests/c/test_regressions.c: what the fuzz campaigns found, one test each (the inputs
 * themselves are in fuzz/corpus/ and replayed by test_fuzz_*.c). Under SANITIZE=1 each
 * failed as a sanitizer report before its fix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "runner.h"

#include "core/metrics.h"

/* fuzz_metric_name, crash-1845dcde...: an increment whose key jansson refuses (not UTF-8)
 * freed the new 0 it had just tried to insert, then added to it (heap use after free); an
 * intermediate object refused the same way was walked into after being freed. */
TEST(metrics_merge_with_a_refused_key_uses_nothing_freed) {
    json_t *m = json_object(), *one = json_integer(1);
    CHECK(metrics_merge(m, "\x10\xe2=K\xfc\x7f", one, "increment") == UV_EINVAL);
    CHECK(metrics_merge(m, "ok.\xe2=K.leaf", one, "increment") == UV_EINVAL);
    CHECK(metrics_merge(m, "\xe2.leaf", one, "append") == UV_EINVAL);
    CHECK(metrics_merge(m, "\xe2", one, "replace") == UV_EINVAL);
    /* what got in before the refused segment stays, and stays usable */
    CHECK(json_is_object(json_object_get(m, "ok")) && json_object_size(m) == 1);
    CHECK(metrics_merge(m, "ok.n", one, "increment") == 0 && metrics_merge(m, "ok.n", one, "increment") == 0);
    CHECK(json_integer_value(json_object_get(json_object_get(m, "ok"), "n")) == 2);
    json_decref(one);
    json_decref(m);
}

static const test_case tests[] = {
    T(metrics_merge_with_a_refused_key_uses_nothing_freed),
};

int main(void) { return run_tests("c-regressions", tests, sizeof tests / sizeof tests[0]); }
