/* common/json_in.h: fast JSON parsing into jansson values (request bodies, frames). */
#ifndef COGLET_JSON_IN_H
#define COGLET_JSON_IN_H

#include <jansson.h>
#include <stddef.h>

typedef struct json_in_error {
    int line, column;
    char text[200]; /* serde-style: "expected value at line 1 column 1" */
} json_in_error;

/* Any JSON value (RFC 8259); NULL with err filled on failure. Strings must be valid UTF-8
 * without NUL; integers beyond 64 bits become reals; nesting is capped at 128. */
json_t *json_in_parse(const char *data, size_t len, json_in_error *err);

/* Where the value of `key` in the top-level object of (already parsed, valid) data sits:
 * *off and *vlen. -1 when there is no such member. The last duplicate wins. */
int json_in_member_span(const char *data, size_t len, const char *key, size_t *off, size_t *vlen);

#endif
