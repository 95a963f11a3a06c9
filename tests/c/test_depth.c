/* tests/c/test_depth.c: nesting is bounded everywhere, never by the C stack: the encoder on a
 * deep jansson value, the validator compiling a deep schema or a long chain of $refs, the
 * validator walking a deep input; and whatever the reader accepts, the others take. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

#include "common/buf.h"
#include "common/json_in.h"
#include "common/json_out.h"
#include "core/validate.h"

/* [[[...0...]]] with `levels` arrays (built by hand: no parser involved) */
static json_t *nested_arrays(int levels) {
    json_t *v = json_integer(0);
    for (int i = 0; i < levels; i++) {
        json_t *a = json_array();
        json_array_append_new(a, v);
        v = a;
    }
    return v;
}

/* {"x":{"x":...{}...}} with `levels` objects */
static json_t *nested_objects(int levels) {
    json_t *v = json_object();
    for (int i = 1; i < levels; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "x", v);
        v = o;
    }
    return v;
}

TEST(encoder_stops_past_its_depth_limit) {
    json_t *ok = nested_arrays(JSON_OUT_MAX_DEPTH), *deep = nested_arrays(JSON_OUT_MAX_DEPTH + 1);
    buf b;
    buf_init(&b, (size_t)1 << 20);
    CHECK(json_out_append(&b, ok, 0) == BUF_OK && b.len == 2 * JSON_OUT_MAX_DEPTH + 1);
    buf_reset(&b);
    CHECK(json_out_append(&b, deep, 0) == JSON_OUT_TOO_DEEP);
    buf_free(&b);
    CHECK(json_out_string(deep, JSON_OUT_SORTED) == NULL);
    json_segments sg;
    CHECK(json_out_segments(deep, 0, 16, &sg) == JSON_OUT_TOO_DEEP && sg.n == 0 && sg.v == NULL);
    json_t *objs = nested_objects(JSON_OUT_MAX_DEPTH + 5);
    CHECK(json_out_string(objs, 0) == NULL);
    json_decref(objs);
    json_decref(ok);
    json_decref(deep);
}

TEST(whatever_the_reader_accepts_the_encoder_writes) {
    size_t n = JSON_IN_MAX_DEPTH;
    char *text = malloc(2 * n + 2);
    memset(text, '[', n);
    text[n] = '1';
    memset(text + n + 1, ']', n);
    text[2 * n + 1] = '\0';
    json_in_error err;
    json_t *v = json_in_parse(text, 2 * n + 1, &err);
    char *out = v ? json_out_string(v, 0) : NULL;
    CHECK(out && !strcmp(out, text));
    free(out);
    json_decref(v);
    free(text);
}

static validator *compile(json_t *schemas, char *err, size_t errlen) {
    json_t *doc = json_pack("{s:{s:o}}", "components", "schemas", schemas);
    validator *v = validator_compile(doc, "Input", err, errlen);
    json_decref(doc);
    return v;
}

TEST(compiling_a_long_chain_of_refs_fails_cleanly) {
    /* Input -> D1 -> D2 -> ... each only a $ref: recursion a nesting limit of the document
     * never sees */
    for (int len = 100; len <= 3000; len += 2900) {
        json_t *schemas = json_object();
        char name[32], ref[64];
        for (int i = 0; i < len; i++) {
            snprintf(name, sizeof name, i ? "D%d" : "Input", i);
            snprintf(ref, sizeof ref, "#/components/schemas/D%d", i + 1);
            json_object_set_new(schemas, name, json_pack("{s:s}", "$ref", ref));
        }
        snprintf(name, sizeof name, "D%d", len);
        json_object_set_new(schemas, name, json_pack("{s:s}", "type", "object"));
        char err[256] = "";
        validator *v = compile(schemas, err, sizeof err);
        if (len == 100) {
            CHECK(v != NULL);
        } else {
            CHECK(v == NULL && strstr(err, "schema nested more than 512 levels deep"));
        }
        validator_free(v);
    }
}

TEST(compiling_a_deeply_nested_schema_fails_cleanly) {
    json_t *s = json_pack("{s:s}", "type", "integer");
    for (int i = 0; i < 2000; i++)
        s = json_pack("{s:s,s:{s:o}}", "type", "object", "properties", "x", s);
    char err[256] = "";
    validator *v = compile(json_pack("{s:o}", "Input", s), err, sizeof err);
    CHECK(v == NULL && strstr(err, "schema nested more than 512 levels deep"));
    validator_free(v);
}

/* Node = {"type":"object","properties":{"x":{"$ref":Node}}}: every level of the input is a
 * walk through the same nodes. */
static validator *recursive_validator(void) {
    char err[256];
    json_t *node = json_pack("{s:s,s:{s:{s:s}}}", "type", "object", "properties", "x", "$ref",
                             "#/components/schemas/Node");
    json_t *schemas = json_pack("{s:{s:s},s:o}", "Input", "$ref", "#/components/schemas/Node", "Node", node);
    validator *v = compile(schemas, err, sizeof err);
    if (!v)
        fprintf(stderr, "  compile: %s\n", err);
    return v;
}

TEST(walking_a_deep_input_is_bounded) {
    validator *v = recursive_validator();
    CHECK(v != NULL);
    if (!v)
        return;
    json_t *detail = NULL;
    /* as deep as the reader allows: valid */
    json_t *in = nested_objects(JSON_IN_MAX_DEPTH);
    CHECK(validator_apply(v, in, &detail, NULL) == 0 && detail == NULL);
    json_decref(in);
    /* far deeper (only by hand): an error, not a crash */
    in = nested_objects(3000);
    CHECK(validator_apply(v, in, &detail, NULL) == -1 && json_array_size(detail) >= 1);
    const char *msg = json_string_value(json_object_get(json_array_get(detail, 0), "msg"));
    CHECK(msg && !strcmp(msg, "nested too deeply to validate"));
    json_decref(detail);
    json_decref(in);
    validator_free(v);
}

TEST(a_schema_value_too_deep_to_show_does_not_compile) {
    char err[256];
    json_t *deep = nested_arrays(3000);
    json_t *schemas = json_pack("{s:{s:{s:{s:[O]}}}}", "Input", "properties", "e", "enum", deep);
    /* the message shows the enum: too deep to encode, so the schema does not compile */
    validator *v = compile(schemas, err, sizeof err);
    CHECK(v == NULL);
    validator_free(v);
    json_decref(deep);
}

static const test_case tests[] = {
    T(encoder_stops_past_its_depth_limit),
    T(whatever_the_reader_accepts_the_encoder_writes),
    T(compiling_a_long_chain_of_refs_fails_cleanly),
    T(compiling_a_deeply_nested_schema_fails_cleanly),
    T(walking_a_deep_input_is_bounded),
    T(a_schema_value_too_deep_to_show_does_not_compile),
};

int main(void) { return run_tests("c-depth", tests, sizeof tests / sizeof tests[0]); }
