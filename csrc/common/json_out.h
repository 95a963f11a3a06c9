/* common/json_out.h: compact JSON encoding for everything we send to clients. Unlike
 * jansson's dumper, reals come out in their shortest round-trip form (0.1, not
 * 0.10000000000000001), as Python and serde print them. */
#ifndef COGLET_JSON_OUT_H
#define COGLET_JSON_OUT_H

#include <jansson.h>

#include "common/buf.h"

#define JSON_OUT_SORTED 1 /* object keys in byte order (map-built objects, SPEC 0) */

/* Appends the encoding of v to out. 0, or a buf error (out may hold a partial value). */
int json_out_append(buf *out, const json_t *v, int flags);
/* The encoding as a new malloc'd NUL-terminated string; NULL on failure. */
char *json_out_string(const json_t *v, int flags);
/* Shortest round-trip text of a double, always with '.', 'e', or a non-finite marker. */
int json_out_real(char *out, size_t outlen, double d);

#endif
