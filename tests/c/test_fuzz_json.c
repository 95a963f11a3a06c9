/* tests/c/test_fuzz_json.c: fuzz/fuzz_json.c over its committed corpus (see fuzz_replay.h). */
#include "../../fuzz/fuzz_json.c"

#define REPLAY_NAME "json"
#include "fuzz_replay.h"
