/* tests/c/test_fuzz_frame.c: fuzz/fuzz_frame.c over its committed corpus (see fuzz_replay.h). */
#include "../../fuzz/fuzz_frame.c"

#define REPLAY_NAME "frame"
#include "fuzz_replay.h"
