/* common/build_info.c: the only file that includes the generated stamp header; everything
 * else reads coglet_build. */
#include "common/build_info.h"

#include "coglet_build_info.h" /* setup.py writes it under build/gen/; never committed */

const coglet_build_info coglet_build = {
    .version = COGLET_VERSION,
    .git_sha = COGLET_GIT_SHA,
    .git_dirty = COGLET_GIT_DIRTY,
    .build_time = COGLET_BUILD_TIME,
    .compiler = COGLET_COMPILER,
    .user_agent = "coglet/" COGLET_VERSION,
};
