/* tests/c/test_bignum.c: integers beyond 64 bits (common/bignum.h) end to end in plain C: the
 * reader makes them, the encoder writes them back digit for digit, comparisons and
 * divisibility are exact, the validator types and bounds them exactly, metrics add them. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

#include "common/bignum.h"
#include "common/json_in.h"
#include "common/json_out.h"
#include "core/metrics.h"
#include "core/validate.h"

static json_t *parse(const char *text) {
    json_in_error err;
    json_t *v = json_in_parse(text, strlen(text), &err);
    if (!v)
        fprintf(stderr, "  parse %s: %s\n", text, err.text);
    return v;
}

/* text parses and encodes back to exactly itself */
static int round_trips(const char *text) {
    json_t *v = parse(text);
    char *out = v ? json_out_string(v, 0) : NULL;
    int ok = out && !strcmp(out, text);
    if (!ok)
        fprintf(stderr, "  round trip %s -> %s\n", text, out ? out : "(null)");
    free(out);
    json_decref(v);
    return ok;
}

/* the sign of a <=> b, both parsed from JSON text */
static int cmp(const char *a, const char *b) {
    json_t *x = parse(a), *y = parse(b);
    int c = x && y ? bignum_cmp(x, y) : 99;
    json_decref(x);
    json_decref(y);
    return c;
}

static int divisible(const char *x, const char *m) {
    json_t *a = parse(x), *b = parse(m);
    int r = a && b ? bignum_divisible(a, b) : 99;
    json_decref(a);
    json_decref(b);
    return r;
}

/* a + b encoded */
static int sum_is(const char *a, const char *b, const char *want) {
    json_t *x = parse(a), *y = parse(b);
    json_t *s = x && y ? bignum_add(x, y) : NULL;
    char *out = s ? json_out_string(s, 0) : NULL;
    int ok = out && !strcmp(out, want);
    if (!ok)
        fprintf(stderr, "  %s + %s = %s (want %s)\n", a, b, out ? out : "(null)", want);
    free(out);
    json_decref(s);
    json_decref(x);
    json_decref(y);
    return ok;
}

TEST(integers_beyond_64_bits_round_trip_exactly) {
    CHECK(round_trips("123456789012345678901234567890"));
    CHECK(round_trips("{\"big\":1000000000000000000000000000001,\"neg\":-1180591620717411303424}"));
    CHECK(round_trips("[9223372036854775807,9223372036854775808,-9223372036854775808,-9223372036854775809]"));
    CHECK(round_trips("[1e+30,1.5,0.1,-1.2345678901234568e+29]")); /* reals stay reals */
    json_t *v = parse("[9223372036854775807,9223372036854775808,-9223372036854775808,-9223372036854775809]");
    CHECK(v && json_is_integer(json_array_get(v, 0)) && bignum_is(json_array_get(v, 1)));
    CHECK(v && json_is_integer(json_array_get(v, 2)) && bignum_is(json_array_get(v, 3)));
    CHECK(v && !json_is_text(json_array_get(v, 1)) && bignum_is_integer(json_array_get(v, 1)));
    size_t len = 0;
    CHECK(v && !strcmp(bignum_text(json_array_get(v, 3), &len), "-9223372036854775809") && len == 20);
    json_decref(v);
    /* segments (bodies over 1 MiB): a bignum is never referenced as a string */
    v = parse("{\"a\":123456789012345678901234567890}");
    json_segments sg;
    CHECK(v && json_out_segments(v, 0, 1, &sg) == 0 && sg.total == 36);
    if (v)
        json_segments_free(&sg);
    json_decref(v);
}

TEST(bignum_from_text_is_canonical) {
    json_t *v = bignum_from_text("42", 2);
    CHECK(json_is_integer(v) && json_integer_value(v) == 42);
    json_decref(v);
    v = bignum_from_text("-9223372036854775808", 20);
    CHECK(json_is_integer(v) && json_integer_value(v) == INT64_MIN);
    json_decref(v);
    CHECK(bignum_from_text("", 0) == NULL);
    CHECK(bignum_from_text("-", 1) == NULL);
    CHECK(bignum_from_text("-0", 2) == NULL);
    CHECK(bignum_from_text("012", 3) == NULL);
    CHECK(bignum_from_text("1e5", 3) == NULL);
    CHECK(bignum_from_text("12 ", 3) == NULL);
    /* NUL-marked strings that are not canonical are not bignums' business: only
     * bignum_from_text makes them */
    json_t *s = json_string("plain");
    CHECK(!bignum_is(s) && json_is_text(s));
    json_decref(s);
}

TEST(comparisons_are_exact) {
    /* the double 1e30 is 10^30 + 19884624838656, and is compared as that (as Python does) */
    CHECK(cmp("1000000000000000000000000000001", "1e30") == -1);
    CHECK(cmp("1000000000000000019884624838656", "1e30") == 0);
    CHECK(cmp("1000000000000000019884624838657", "1e30") == 1);
    CHECK(cmp("1e30", "1000000000000000000000000000001") == 1);
    CHECK(cmp("1267650600228229401496703205376", "1.2676506002282294e30") == 0); /* 2^100 */
    CHECK(cmp("1267650600228229401496703205377", "1.2676506002282294e30") == 1);
    CHECK(cmp("-1267650600228229401496703205377", "-1.2676506002282294e30") == -1);
    CHECK(cmp("1267650600228229401496703205375", "1e300") == -1);
    CHECK(cmp("-1267650600228229401496703205375", "-1e300") == 1);
    CHECK(cmp("-1267650600228229401496703205375", "2.5") == -1);
    CHECK(cmp("1267650600228229401496703205375", "-2.5") == 1);
    CHECK(cmp("1000000000000000000000000000001", "1000000000000000000000000000000") == 1);
    CHECK(cmp("-1000000000000000000000000000001", "-1000000000000000000000000000000") == -1);
    CHECK(cmp("-1000000000000000000000000000001", "5") == -1);
    CHECK(cmp("9223372036854775808", "9223372036854775807") == 1);
    CHECK(cmp("-9223372036854775809", "-9223372036854775808") == -1);
    /* 2^63 as a double against integers either side of it */
    CHECK(cmp("9223372036854775807", "9223372036854775808.0") == -1);
    CHECK(cmp("9223372036854775808", "9223372036854775808.0") == 0);
    CHECK(cmp("9223372036854775809", "9223372036854775808.0") == 1);
    /* 2^53 + 1 is no double: compared exactly all the same */
    CHECK(cmp("9007199254740993", "9007199254740992.0") == 1);
    CHECK(cmp("5", "5.5") == -1);
    CHECK(cmp("-5", "-5.5") == 1);
    CHECK(cmp("123456789012345678901234567890", "1.2345678901234568e+29") == 1); /* ...77877719597056 */
    CHECK(cmp("-123456789012345678901234567890", "-1.2345678901234568e+29") == -1);
    CHECK(cmp("1.5", "2.5") == -1);
    CHECK(cmp("0", "-0.0") == 0);
}

TEST(divisibility_is_exact) {
    CHECK(divisible("1000000000000000000000000000000", "7") == 0);
    CHECK(divisible("1000000000000000000000000000000", "8") == 1);
    CHECK(divisible("-1000000000000000000000000000000", "1000000000000000000000") == 1);
    CHECK(divisible("1000000000000000000000000000001", "1000000000000000000000") == 0);
    /* 3 * (10^20 + 7): by a divisor beyond 64 bits, in limbs */
    CHECK(divisible("300000000000000000021", "100000000000000000007") == 1);
    CHECK(divisible("300000000000000000022", "100000000000000000007") == 0);
    CHECK(divisible("0", "100000000000000000007") == 1);
    CHECK(divisible("12", "100000000000000000007") == 0);
    CHECK(divisible("12", "4") == 1);
}

TEST(sums_are_exact) {
    CHECK(sum_is("9223372036854775807", "1", "9223372036854775808"));
    CHECK(sum_is("-9223372036854775808", "-1", "-9223372036854775809"));
    CHECK(sum_is("9223372036854775808", "-1", "9223372036854775807"));
    CHECK(sum_is("1000000000000000000000000000000", "-1000000000000000000000000000000", "0"));
    CHECK(sum_is("-1000000000000000000000000000001", "1000000000000000000000000000000", "-1"));
    CHECK(sum_is("999999999999999999999999999999", "1", "1000000000000000000000000000000"));
    CHECK(sum_is("2", "3", "5"));
}

TEST(metrics_increment_beyond_64_bits_is_exact) {
    json_t *m = json_object();
    json_t *big = parse("1000000000000000000000000000000");
    json_t *one = json_integer(1);
    metrics_merge(m, "a.b", big, "increment");
    metrics_merge(m, "a.b", one, "increment");
    char *out = json_out_string(m, 0);
    CHECK(out && !strcmp(out, "{\"a\":{\"b\":1000000000000000000000000000001}}"));
    free(out);
    /* int64 + int64 keeps wrapping, as documented */
    json_t *max = json_integer(INT64_MAX);
    metrics_merge(m, "w", max, "increment");
    metrics_merge(m, "w", one, "increment");
    CHECK(json_integer_value(json_object_get(m, "w")) == INT64_MIN);
    json_decref(max);
    json_decref(one);
    json_decref(big);
    json_decref(m);
}

/* ---- the validator ---- */

static validator *compile_text(const char *schemas) {
    char doc[2048], err[256];
    snprintf(doc, sizeof doc, "{\"components\":{\"schemas\":%s}}", schemas);
    json_t *d = parse(doc);
    validator *v = d ? validator_compile(d, "Input", err, sizeof err) : NULL;
    if (!v)
        fprintf(stderr, "  compile %s: %s\n", schemas, err);
    json_decref(d);
    return v;
}

/* the 422 detail for input (JSON text), "" when valid */
static int detail_is(const char *schemas, const char *input, const char *want) {
    validator *v = compile_text(schemas);
    json_t *in = parse(input), *detail = NULL;
    if (!v || !in) {
        validator_free(v);
        json_decref(in);
        return 0;
    }
    int rc = validator_apply(v, in, &detail, NULL);
    char *got = rc == 0 ? strdup("") : json_out_string(detail, 0);
    int ok = got && !strcmp(got, want);
    if (!ok)
        fprintf(stderr, "  %s with %s:\n    got  %s\n    want %s\n", schemas, input, got ? got : "(null)", want);
    free(got);
    json_decref(detail);
    json_decref(in);
    validator_free(v);
    return ok;
}

#define LE_1E30 "{\"Input\":{\"properties\":{\"n\":{\"type\":\"integer\",\"maximum\":1000000000000000000000000000000}}}}"

TEST(validator_bounds_compare_bignums_exactly) {
    CHECK(detail_is(LE_1E30, "{\"n\":1000000000000000000000000000000}", ""));
    CHECK(detail_is(LE_1E30, "{\"n\":1000000000000000000000000000001}",
                    "[{\"loc\":[\"body\",\"input\",\"n\"],\"msg\":\"1000000000000000000000000000001 is greater than "
                    "the maximum of 1000000000000000000000000000000\",\"type\":\"value_error\"}]"));
    CHECK(detail_is(LE_1E30, "{\"n\":-1000000000000000000000000000001}", ""));
    /* a real bound: by its exact value (the double 1e30 is 10^30 + 19884624838656) */
    const char *real = "{\"Input\":{\"properties\":{\"n\":{\"type\":\"integer\",\"exclusiveMinimum\":1e30}}}}";
    CHECK(detail_is(real, "{\"n\":1000000000000000019884624838657}", ""));
    CHECK(detail_is(real, "{\"n\":1000000000000000019884624838656}",
                    "[{\"loc\":[\"body\",\"input\",\"n\"],\"msg\":\"1000000000000000019884624838656 is less than or "
                    "equal to the minimum of 1e+30\",\"type\":\"value_error\"}]"));
    const char *mult = "{\"Input\":{\"properties\":{\"n\":{\"multipleOf\":1000000000000000000000}}}}";
    CHECK(detail_is(mult, "{\"n\":3000000000000000000000000}", ""));
    CHECK(detail_is(mult, "{\"n\":3000000000000000000000001}",
                    "[{\"loc\":[\"body\",\"input\",\"n\"],\"msg\":\"3000000000000000000000001 is not a multiple of "
                    "1000000000000000000000\",\"type\":\"value_error\"}]"));
}

TEST(validator_types_a_bignum_as_an_integer) {
    const char *s = "{\"Input\":{\"properties\":{\"i\":{\"type\":\"integer\"},\"x\":{\"type\":\"number\"},"
                    "\"s\":{\"type\":\"string\"}}}}";
    CHECK(detail_is(s, "{\"i\":123456789012345678901234567890,\"x\":-123456789012345678901234567890}", ""));
    CHECK(detail_is(s, "{\"s\":123456789012345678901234567890}",
                    "[{\"loc\":[\"body\",\"input\",\"s\"],\"msg\":\"123456789012345678901234567890 is not of type "
                    "\\\"string\\\"\",\"type\":\"value_error\"}]"));
    /* no string keyword applies to it */
    CHECK(detail_is("{\"Input\":{\"properties\":{\"i\":{\"maxLength\":2,\"pattern\":\"^x$\"}}}}",
                    "{\"i\":123456789012345678901234567890}", ""));
    const char *e = "{\"Input\":{\"properties\":{\"e\":{\"enum\":[1267650600228229401496703205376,\"a\"]},"
                    "\"c\":{\"const\":-1000000000000000000000000000000}}}}";
    CHECK(detail_is(e, "{\"e\":1267650600228229401496703205376,\"c\":-1000000000000000000000000000000}", ""));
    CHECK(detail_is(e, "{\"e\":1.2676506002282294e30}", "")); /* JSON Schema equality: by value (2^100) */
    CHECK(detail_is(e, "{\"e\":1267650600228229401496703205377}",
                    "[{\"loc\":[\"body\",\"input\",\"e\"],\"msg\":\"1267650600228229401496703205377 is not one of "
                    "[1267650600228229401496703205376,\\\"a\\\"]\",\"type\":\"value_error\"}]"));
    CHECK(detail_is(e, "{\"c\":-1000000000000000000000000000001}",
                    "[{\"loc\":[\"body\",\"input\",\"c\"],\"msg\":\"-1000000000000000000000000000000 was expected\","
                    "\"type\":\"value_error\"}]"));
    CHECK(detail_is("{\"Input\":{\"properties\":{\"u\":{\"uniqueItems\":true}}}}",
                    "{\"u\":[100000000000000000000,100000000000000000001]}", ""));
    CHECK(detail_is("{\"Input\":{\"properties\":{\"u\":{\"uniqueItems\":true}}}}",
                    "{\"u\":[1267650600228229401496703205376,1.2676506002282294e30]}",
                    "[{\"loc\":[\"body\",\"input\",\"u\"],\"msg\":\"[1267650600228229401496703205376,1.2676506002282294e+30] has non-unique "
                    "elements\",\"type\":\"value_error\"}]"));
}

static const test_case tests[] = {
    T(integers_beyond_64_bits_round_trip_exactly),
    T(bignum_from_text_is_canonical),
    T(comparisons_are_exact),
    T(divisibility_is_exact),
    T(sums_are_exact),
    T(metrics_increment_beyond_64_bits_is_exact),
    T(validator_bounds_compare_bignums_exactly),
    T(validator_types_a_bignum_as_an_integer),
};

int main(void) { return run_tests("c-bignum", tests, sizeof tests / sizeof tests[0]); }
