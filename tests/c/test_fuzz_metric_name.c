/* tests/c/test_fuzz_metric_name.c: fuzz/fuzz_metric_name.c over its committed corpus (see fuzz_replay.h). */
#include "../../fuzz/fuzz_metric_name.c"

#define REPLAY_NAME "metric_name"
#include "fuzz_replay.h"
