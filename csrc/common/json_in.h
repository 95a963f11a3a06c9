/* common/json_in.h: the one JSON reader: request bodies, frames and spill files become jansson
 * values; a body's parse also records where its top-level members sit. */
#ifndef COGLET_JSON_IN_H
#define COGLET_JSON_IN_H

#include <jansson.h>
#include <stddef.h>

/* Nesting limits: how many arrays and objects may be open at once. The default (frames, spill
 * files) is above the worker's own limit for outputs (py/convert.h), so nothing the worker encodes is
 * refused. Request bodies use serde_json's limit (128, counted down to zero: 127 levels fit),
 * so a body the Rust coglet rejects as too deep is rejected here with the same message. */
#define JSON_IN_MAX_DEPTH 512
#define JSON_IN_BODY_MAX_DEPTH 127

enum {
    JSON_IN_ESYNTAX = 1, /* not JSON (also: a string that is not UTF-8, a NUL, a huge number) */
    JSON_IN_EDEPTH,      /* nested deeper than the limit: "recursion limit exceeded at ..." */
    JSON_IN_EDUPLICATE,  /* JSON_IN_REJECT_DUPLICATES: "{path}: duplicate field `k` at ..." */
    JSON_IN_ENOMEM,
    JSON_IN_EIO,         /* json_in_parse_file: "cannot read {path}: {strerror}" */
};

typedef struct json_in_error {
    int code; /* JSON_IN_E*, 0 when the parse succeeded */
    int line, column;
    /* serde-style: "expected value at line 1 column 1"; a duplicate names the object that has
     * it ("input.a[0]: duplicate field `k` at line 1 column 30"; no path at the top level) */
    char text[200];
} json_in_error;

/* A top-level member the caller wants located. Offsets are bytes into the parsed text; turn
 * one into a line and column with json_in_position. */
typedef struct json_in_member {
    const char *key; /* in: the key, decoded (a key written "\u0069d" is "id") */
    int with_items;  /* in: also record where each item of its value ends */
    int found;       /* out */
    size_t start;    /* out: the value is text[start, end) */
    size_t end;
    /* out, with_items and the value an array or object: the end of each element / member in
     * order (that is json_object_foreach's order when duplicates are rejected); malloc'd */
    size_t *item_ends;
    size_t num_items;
} json_in_member;

/* A key twice in one object, at any depth, is an error. It is found when the second value
 * has been read (a syntax error inside that value is reported instead) and reported at the
 * second key, as serde does. */
#define JSON_IN_REJECT_DUPLICATES 1u

typedef struct json_in_options {
    unsigned flags;
    int max_depth;            /* 0: JSON_IN_MAX_DEPTH */
    json_in_member *members;  /* in/out, may be NULL; a duplicate allowed in: the last wins */
    size_t num_members;
    size_t end;               /* out: where the top-level value ends */
} json_in_options;

/* Any JSON value (RFC 8259); NULL with err filled on failure. Strings must be valid UTF-8
 * without NUL; integers beyond 64 bits become bignums (common/bignum.h). Duplicate keys: the last wins. Nesting
 * is capped at JSON_IN_MAX_DEPTH, and the parser keeps its own stack: no input can overflow
 * the C stack. For frames and spill files, which our own encoder wrote. */
json_t *json_in_parse(const char *data, size_t len, json_in_error *err);
/* The same, with options (NULL: as json_in_parse). Call json_in_members_free on the members
 * afterwards, whether the parse succeeded or not. */
json_t *json_in_parse_with(const char *data, size_t len, json_in_options *opts, json_in_error *err);
void json_in_members_free(json_in_member *members, size_t n);

/* A whole file, parsed as json_in_parse does. */
json_t *json_in_parse_file(const char *path, json_in_error *err);

/* The serde-style position of a byte offset: line from 1; column = the characters before it
 * on its line, so the offset just past a value gives the column of its last character. */
void json_in_position(const char *data, size_t len, size_t offset, int *line, int *column);

#endif
