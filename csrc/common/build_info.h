/* common/build_info.h: what this build is. The values come from the one generated stamp
 * header (docs/architecture.md, "Build"), which only common/build_info.c includes, so a new
 * commit or dirty state recompiles that file alone. */
#ifndef COGLET_BUILD_INFO_H
#define COGLET_BUILD_INFO_H

typedef struct coglet_build_info {
    const char *version;    /* the package version, from pyproject.toml */
    const char *git_sha;    /* short sha of HEAD, or "unknown" outside a checkout */
    int git_dirty;          /* tracked files differed from HEAD */
    const char *build_time; /* RFC 3339, UTC */
    const char *compiler;   /* e.g. "gcc 12.2.0" */
    const char *user_agent; /* "coglet/{version}", for webhooks and uploads */
} coglet_build_info;

extern const coglet_build_info coglet_build;

#endif
