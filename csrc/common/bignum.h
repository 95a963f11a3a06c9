/* common/bignum.h: integers of any size in jansson values, exactly. jansson's integers are
 * 64-bit; an integer outside int64 (a "bignum") is kept as a jansson string whose first byte
 * is NUL, followed by its decimal text: "\0" "-1180591620717411303424". Our JSON reader refuses
 * NUL in strings, so no string from JSON text can look like one. The reader makes them, the
 * encoder writes them as bare digits, the validator compares them exactly, the worker turns
 * them into Python ints and back. Anything that reads strings from a client's or the worker's
 * values uses json_is_text(), so a bignum is never taken for a string. */
#ifndef COGLET_BIGNUM_H
#define COGLET_BIGNUM_H

#include <stddef.h>

#include <jansson.h>

/* 1 if v is a bignum. */
static inline int bignum_is(const json_t *v) {
    return json_is_string(v) && json_string_length(v) >= 2 && json_string_value(v)[0] == '\0';
}

/* A real string: a jansson string that is not a bignum. */
static inline int json_is_text(const json_t *v) { return json_is_string(v) && !bignum_is(v); }

/* An integer, whatever its size: a jansson integer or a bignum. */
static inline int bignum_is_integer(const json_t *v) { return json_is_integer(v) || bignum_is(v); }

/* Any number: integer, real or bignum. */
static inline int bignum_is_number(const json_t *v) { return json_is_number(v) || bignum_is(v); }

/* The integer written as text, len bytes of -?(0|[1-9][0-9]*): a jansson integer when it fits
 * in int64, else a bignum. NULL when the text is not such an integer, or out of memory. */
json_t *bignum_from_text(const char *text, size_t len);

/* A bignum's decimal text (NUL-terminated, "-" first when negative), or NULL. */
const char *bignum_text(const json_t *v, size_t *len);

/* Any number as a double (a bignum rounded to nearest; +-HUGE_VAL past the range). */
double bignum_to_double(const json_t *v);

/* -1, 0 or 1: the sign of any number. */
int bignum_sign(const json_t *v);

/* -1, 0 or 1 as a < b, a == b, a > b, exactly, for any two numbers (integers, reals,
 * bignums): 10**30 + 1 > 1e30, 2**63 > 9223372036854775807. Reals must be finite. */
int bignum_cmp(const json_t *a, const json_t *b);

/* Whether integer x is a multiple of integer m (m > 0), exactly: 1 or 0; -1 out of memory. */
int bignum_divisible(const json_t *x, const json_t *m);

/* The exact sum of two integers (a jansson integer when it fits, else a bignum); NULL out of
 * memory or when either is not an integer. */
json_t *bignum_add(const json_t *a, const json_t *b);

#endif
