/* tests/c/test_fuzz_validate.c: fuzz/fuzz_validate.c over its committed corpus (see fuzz_replay.h). */
#include "../../fuzz/fuzz_validate.c"

#define REPLAY_NAME "validate"
#define REPLAY_INIT
#include "fuzz_replay.h"
