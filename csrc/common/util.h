/* common/util.h: small helpers shared by every layer (time, container_of). */
#ifndef COGLET_UTIL_H
#define COGLET_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Where to cut s so that s[0..cut) keeps whole UTF-8 characters: `at`, or before the
 * character s[at] is inside of (s[at] must exist). */
static inline size_t utf8_cut(const char *s, size_t at) {
    while (at > 0 && ((unsigned char)s[at] & 0xC0) == 0x80)
        at--;
    return at;
}

uint64_t now_realtime_ns(void);
double now_monotonic(void); /* seconds */
/* RFC 3339 UTC with +00:00 and 0/3/6/9 fraction digits (the fewest that keep every
 * non-zero digit), as the health check shows them (docs/http-api.md#health-check). out must hold 40 bytes. */
void format_rfc3339(uint64_t ns, char *out, size_t outlen);
/* 2026-01-01T12:00:00.123456Z, for log lines. out must hold 32 bytes. */
void format_log_timestamp(uint64_t ns, char *out, size_t outlen);

#endif
