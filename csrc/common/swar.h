/* common/swar.h: eight bytes at a time through the plain-ASCII runs of JSON strings. */
#ifndef COGLET_SWAR_H
#define COGLET_SWAR_H

#include <stdint.h>
#include <string.h>

#define SWAR_ONES 0x0101010101010101ULL
#define SWAR_HIGHS 0x8080808080808080ULL
#define SWAR_HASZERO(x) (((x)-SWAR_ONES) & ~(x)&SWAR_HIGHS)

/* Non-zero when any of the 8 bytes is a control character (< 0x20), '"', '\\', or not
 * ASCII: the bytes a JSON string scan must look at one by one. */
static inline uint64_t swar_special(uint64_t v) {
    uint64_t ctrl = (v - 0x2020202020202020ULL) & ~v & SWAR_HIGHS;
    return ctrl | SWAR_HASZERO(v ^ 0x2222222222222222ULL) | SWAR_HASZERO(v ^ 0x5C5C5C5C5C5C5C5CULL) |
           (v & SWAR_HIGHS);
}

/* The first byte at or after p that is special (see above), or end. */
static inline const unsigned char *swar_skip_plain(const unsigned char *p, const unsigned char *end) {
    while (end - p >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        if (swar_special(v))
            break;
        p += 8;
    }
    return p;
}

#endif
