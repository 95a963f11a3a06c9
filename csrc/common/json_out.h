/* common/json_out.h: compact JSON encoding for everything we send to clients. Unlike
 * jansson's dumper, reals come out in their shortest round-trip form (0.1, not
 * 0.10000000000000001), as Python and serde print them. */
#ifndef COGLET_JSON_OUT_H
#define COGLET_JSON_OUT_H

#include <jansson.h>

#include "common/buf.h"

#define JSON_OUT_SORTED 1 /* object keys in byte order (map-built objects: docs/http-api.md#conventions) */

/* Arrays and objects nested deeper than this are not encoded (JSON_OUT_TOO_DEEP): above the
 * reader's limit (JSON_IN_MAX_DEPTH), so whatever was parsed can be written again, and far
 * below what would exhaust a thread's stack. */
#define JSON_OUT_MAX_DEPTH 1024
#define JSON_OUT_TOO_DEEP (-3) /* beside the buf errors (BUF_NOMEM, BUF_TOO_LARGE) */

/* Appends the encoding of v to out. 0, a buf error, or JSON_OUT_TOO_DEEP (out may hold a
 * partial value). A bignum (common/bignum.h) is written as its digits. */
int json_out_append(buf *out, const json_t *v, int flags);
/* The encoding as a new malloc'd NUL-terminated string; NULL on failure. */
char *json_out_string(const json_t *v, int flags);
/* Shortest round-trip text of a double, always with '.', 'e', or a non-finite marker. */
int json_out_real(char *out, size_t outlen, double d);

/* A little over the encoded size of v (escapes aside). */
size_t json_out_size_hint(const json_t *v);

/* A JSON string that takes over text (malloc'd, NUL at len) instead of copying it. */
json_t *json_string_adopt(char *text, size_t len);

/* An encoding as a list of pieces, where strings of at least `big` bytes that need no
 * escaping are referenced in place rather than copied: a response carrying an 85 MB data
 * URL is written without a second copy of it. The referenced strings must outlive the
 * segments. */
typedef struct json_segment {
    const char *ptr;
    size_t len;
    char *owned; /* freed with the segments (NULL for a reference) */
} json_segment;

typedef struct json_segments {
    json_segment *v;
    size_t n, cap;
    size_t total;
} json_segments;

int json_out_segments(const json_t *v, int flags, size_t big, json_segments *out);
void json_segments_free(json_segments *sg);

#endif
