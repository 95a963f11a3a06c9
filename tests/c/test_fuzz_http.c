/* tests/c/test_fuzz_http.c: fuzz/fuzz_http.c over its committed corpus (see fuzz_replay.h). */
#include "../../fuzz/fuzz_http.c"

#define REPLAY_NAME "http"
#include "fuzz_replay.h"
