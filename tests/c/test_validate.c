/* tests/c/test_validate.c: input validation (service/validate.c, docs/schema.md), one behaviour per test.
 * Schemas and inputs are written with ' for " (jq() swaps them back); expected messages are exact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"
#include <time.h>

#include "common/json_out.h"
#include "core/validate.h"


static json_t *jq(const char *text) {
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t error;
    json_t *v = json_loads(s, JSON_DECODE_ANY, &error);
    if (!v)
        fprintf(stderr, "  bad test JSON %s: %s\n", text, error.text);
    free(s);
    return v;
}

/* Compiles "Input" from a components.schemas object; err (if given) gets the compile error. */
static validator *compile_schemas(const char *schemas, char *err, size_t errlen) {
    char local[256];
    json_t *doc = json_pack("{s:{s:o}}", "components", "schemas", jq(schemas));
    validator *v = validator_compile(doc, "Input", err ? err : local, err ? errlen : sizeof local);
    if (!v && !err)
        fprintf(stderr, "  compile %s: %s\n", schemas, local);
    json_decref(doc);
    return v;
}

/* Applies v to input; returns the compact detail ("" when valid, as a new string) and the input after. */
static char *apply(const validator *v, const char *input, char **after) {
    json_t *in = jq(input), *detail = NULL, *stripped = NULL;
    int rc = validator_apply(v, in, &detail, &stripped);
    char *out = rc == 0 ? strdup("") : json_out_string(detail, 0);
    if ((rc == 0) != (detail == NULL)) {
        free(out);
        out = strdup("(rc and detail disagree)");
    }
    if (after)
        *after = json_out_string(in, 0);
    json_decref(stripped);
    json_decref(detail);
    json_decref(in);
    return out;
}

static int detail_is(const char *schemas, const char *input, const char *want) {
    validator *v = compile_schemas(schemas, NULL, 0);
    if (!v)
        return 0;
    char *got = apply(v, input, NULL);
    int ok = !strcmp(got, want);
    if (!ok)
        fprintf(stderr, "  %s\n    got  %s\n    want %s\n", input, got, want);
    free(got);
    validator_free(v);
    return ok;
}

/* One property "x" with schema `prop`: `want` is the exact message of the only error, or NULL
 * when {"x": value} must be valid. */
static int field_msg_is(const char *prop, const char *value, const char *want) {
    char schemas[4096], input[4096];
    snprintf(schemas, sizeof schemas, "{'Input':{'type':'object','properties':{'x':%s}}}", prop);
    snprintf(input, sizeof input, "{'x':%s}", value);
    validator *v = compile_schemas(schemas, NULL, 0);
    if (!v)
        return 0;
    json_t *in = jq(input), *detail = NULL, *stripped = NULL;
    int rc = validator_apply(v, in, &detail, &stripped);
    int ok;
    if (!want) {
        ok = rc == 0 && !detail;
    } else {
        json_t *e = json_array_get(detail, 0);
        const char *msg = json_string_value(json_object_get(e, "msg"));
        json_t *loc = json_pack("[s,s,s]", "body", "input", "x");
        ok = rc == -1 && json_array_size(detail) == 1 && msg && !strcmp(msg, want) &&
             json_equal(json_object_get(e, "loc"), loc) &&
             !strcmp(json_string_value(json_object_get(e, "type")) ?: "", "value_error");
        json_decref(loc);
    }
    if (!ok) {
        char *got = detail ? json_out_string(detail, 0) : strdup("valid");
        fprintf(stderr, "  %s against %s\n    got  %s\n    want %s\n", value, prop, got, want ? want : "valid");
        free(got);
    }
    json_decref(detail);
    json_decref(stripped);
    json_decref(in);
    validator_free(v);
    return ok;
}

/* ---- type ---- */

TEST(type_string_accepts_strings_rejects_others) {
    CHECK(field_msg_is("{'type':'string'}", "'hi'", NULL));
    CHECK(field_msg_is("{'type':'string'}", "5", "5 is not of type \"string\""));
    CHECK(field_msg_is("{'type':'string'}", "2.5", "2.5 is not of type \"string\""));
}

TEST(type_integer_rejects_fractions_and_strings) {
    CHECK(field_msg_is("{'type':'integer'}", "3", NULL));
    CHECK(field_msg_is("{'type':'integer'}", "1.5", "1.5 is not of type \"integer\""));
    CHECK(field_msg_is("{'type':'integer'}", "'x'", "\"x\" is not of type \"integer\""));
}

TEST(type_integer_accepts_integral_real) { /* 2020-12: 1.0 is an integer */
    CHECK(field_msg_is("{'type':'integer'}", "1.0", NULL));
}

TEST(type_number_accepts_integers) {
    CHECK(field_msg_is("{'type':'number'}", "3", NULL));
    CHECK(field_msg_is("{'type':'number'}", "3.25", NULL));
    CHECK(field_msg_is("{'type':'number'}", "true", "true is not of type \"number\""));
}

TEST(type_boolean_null_array_object) {
    CHECK(field_msg_is("{'type':'boolean'}", "false", NULL));
    CHECK(field_msg_is("{'type':'boolean'}", "0", "0 is not of type \"boolean\""));
    CHECK(field_msg_is("{'type':'null'}", "null", NULL));
    CHECK(field_msg_is("{'type':'null'}", "0", "0 is not of type \"null\""));
    CHECK(field_msg_is("{'type':'array'}", "[1]", NULL));
    CHECK(field_msg_is("{'type':'array'}", "{'a':1}", "{\"a\":1} is not of type \"array\""));
    CHECK(field_msg_is("{'type':'object'}", "{}", NULL));
    CHECK(field_msg_is("{'type':'object'}", "[1,'a']", "[1,\"a\"] is not of type \"object\""));
}

TEST(type_list_message_names_every_type) {
    CHECK(field_msg_is("{'type':['string','null']}", "null", NULL));
    CHECK(field_msg_is("{'type':['string','null']}", "'s'", NULL));
    CHECK(field_msg_is("{'type':['string','null']}", "1", "1 is not of types \"null\", \"string\""));
    CHECK(field_msg_is("{'type':['integer']}", "'a'", "\"a\" is not of type \"integer\""));
}

TEST(offending_value_prints_compact_with_sorted_keys_and_python_floats) {
    CHECK(field_msg_is("{'type':'string'}", "{'b':1,'a':[1.0,1e20,0.1]}",
                       "{\"a\":[1.0,1e+20,0.1],\"b\":1} is not of type \"string\""));
    CHECK(field_msg_is("{'type':'integer'}", "'h\u00e9\\n\\''", "\"hé\\n\\\"\" is not of type \"integer\""));
}

TEST(unknown_type_does_not_compile) {
    char err[256] = "";
    CHECK(compile_schemas("{'Input':{'type':'file'}}", err, sizeof err) == NULL);
    CHECK(strstr(err, "file") != NULL);
}

/* ---- enum / const ---- */

TEST(enum_lists_the_choices) {
    CHECK(field_msg_is("{'enum':['red','green']}", "'red'", NULL));
    CHECK(field_msg_is("{'enum':['red','green']}", "'blue'", "\"blue\" is not one of [\"red\",\"green\"]"));
    CHECK(field_msg_is("{'enum':[1,'a',null]}", "2", "2 is not one of [1,\"a\",null]"));
}

TEST(enum_compares_numbers_by_value) {
    CHECK(field_msg_is("{'enum':[1,2]}", "2.0", NULL));
    CHECK(field_msg_is("{'enum':[[1,{'a':true}]]}", "[1.0,{'a':true}]", NULL));
    CHECK(field_msg_is("{'enum':[true]}", "1", "1 is not one of [true]"));
}

TEST(const_shows_the_expected_value) {
    CHECK(field_msg_is("{'const':'a'}", "'a'", NULL));
    CHECK(field_msg_is("{'const':'a'}", "'b'", "\"a\" was expected"));
    CHECK(field_msg_is("{'const':{'k':[1]}}", "{'k':[2]}", "{\"k\":[1]} was expected"));
    CHECK(field_msg_is("{'const':null}", "0", "null was expected"));
}

/* ---- numbers ---- */

TEST(minimum_and_maximum_inclusive) {
    CHECK(field_msg_is("{'minimum':1}", "1", NULL));
    CHECK(field_msg_is("{'minimum':1}", "0.5", "0.5 is less than the minimum of 1"));
    CHECK(field_msg_is("{'maximum':100}", "100", NULL));
    CHECK(field_msg_is("{'maximum':100}", "1e20", "1e+20 is greater than the maximum of 100"));
    CHECK(field_msg_is("{'maximum':1.5}", "2", "2 is greater than the maximum of 1.5"));
    CHECK(field_msg_is("{'minimum':0}", "'x'", NULL)); /* number keywords ignore other types */
}

TEST(exclusive_bounds_numeric_form) {
    CHECK(field_msg_is("{'exclusiveMinimum':1}", "1.5", NULL));
    CHECK(field_msg_is("{'exclusiveMinimum':1}", "1", "1 is less than or equal to the minimum of 1"));
    CHECK(field_msg_is("{'exclusiveMaximum':10}", "9.99", NULL));
    CHECK(field_msg_is("{'exclusiveMaximum':10}", "10.0", "10.0 is greater than or equal to the maximum of 10"));
}

TEST(exclusive_bounds_openapi_boolean_form) {
    CHECK(field_msg_is("{'minimum':0,'exclusiveMinimum':true}", "0",
                       "0 is less than or equal to the minimum of 0"));
    CHECK(field_msg_is("{'maximum':5,'exclusiveMaximum':true}", "5",
                       "5 is greater than or equal to the maximum of 5"));
    CHECK(field_msg_is("{'minimum':0,'exclusiveMinimum':false}", "0", NULL));
    CHECK(field_msg_is("{'maximum':5,'exclusiveMaximum':false}", "6", "6 is greater than the maximum of 5"));
}

TEST(integer_bounds_compare_exactly_at_int64_edges) {
    CHECK(field_msg_is("{'maximum':9223372036854775806}", "9223372036854775807",
                       "9223372036854775807 is greater than the maximum of 9223372036854775806"));
    CHECK(field_msg_is("{'maximum':9223372036854775806}", "9223372036854775806", NULL));
}

TEST(multiple_of_integers_and_reals) {
    CHECK(field_msg_is("{'multipleOf':2}", "8", NULL));
    CHECK(field_msg_is("{'multipleOf':2}", "7", "7 is not a multiple of 2"));
    CHECK(field_msg_is("{'multipleOf':0.1}", "0.3", NULL));
    CHECK(field_msg_is("{'multipleOf':0.1}", "0.35", "0.35 is not a multiple of 0.1"));
    CHECK(field_msg_is("{'multipleOf':0.5}", "3", NULL));
    CHECK(field_msg_is("{'multipleOf':1}", "1000000000.5", "1000000000.5 is not a multiple of 1"));
}

TEST(multiple_of_zero_does_not_compile) {
    char err[256] = "";
    CHECK(compile_schemas("{'Input':{'properties':{'x':{'multipleOf':0}}}}", err, sizeof err) == NULL);
    CHECK(strstr(err, "multipleOf") != NULL);
}

/* ---- strings ---- */

TEST(min_and_max_length_with_singular_and_plural) {
    CHECK(field_msg_is("{'minLength':1}", "''", "\"\" is shorter than 1 character"));
    CHECK(field_msg_is("{'minLength':2}", "'a'", "\"a\" is shorter than 2 characters"));
    CHECK(field_msg_is("{'maxLength':1}", "'ab'", "\"ab\" is longer than 1 character"));
    CHECK(field_msg_is("{'maxLength':2}", "'abc'", "\"abc\" is longer than 2 characters"));
    CHECK(field_msg_is("{'minLength':2,'maxLength':3}", "'abc'", NULL));
}

TEST(string_length_counts_code_points) {
    CHECK(field_msg_is("{'minLength':5,'maxLength':5}", "'h\u00e9llo'", NULL));
    CHECK(field_msg_is("{'maxLength':4}", "'h\u00e9llo'", "\"héllo\" is longer than 4 characters"));
    CHECK(field_msg_is("{'maxLength':1}", "'\U0001F600'", NULL));
    CHECK(field_msg_is("{'minLength':2}", "'\U0001F600'", "\"😀\" is shorter than 2 characters"));
    CHECK(field_msg_is("{'maxLength':1}", "'\\ud83d\\ude00'", NULL)); /* a surrogate pair is one */
}

TEST(pattern_is_an_unanchored_search) {
    CHECK(field_msg_is("{'pattern':'b'}", "'abc'", NULL));
    CHECK(field_msg_is("{'pattern':'^[0-9]+$'}", "'123'", NULL));
    CHECK(field_msg_is("{'pattern':'^[0-9]+$'}", "'12a'", "\"12a\" does not match \"^[0-9]+$\""));
}

TEST(pattern_dollar_does_not_match_before_final_newline) {
    CHECK(field_msg_is("{'pattern':'^[0-9]+$'}", "'12\\n'", "\"12\\n\" does not match \"^[0-9]+$\""));
}

TEST(pattern_is_unicode_aware) {
    CHECK(field_msg_is("{'pattern':'^.$'}", "'\U0001F600'", NULL));
    /* ECMA-262: \w and \d are ASCII even in unicode mode; \p{...} is how to ask for more */
    CHECK(field_msg_is("{'pattern':'^\\\\w+$'}", "'h\u00e9llo'", "\"h\u00e9llo\" does not match \"^\\w+$\""));
    CHECK(field_msg_is("{'pattern':'^\\\\p{L}+$'}", "'h\u00e9llo'", NULL));
    CHECK(field_msg_is("{'pattern':'^\\\\u00e9$'}", "'\u00e9'", NULL)); /* ECMA-262 \uXXXX */
    CHECK(field_msg_is("{'pattern':'^\\\\p{Lu}'}", "'abc'", "\"abc\" does not match \"^\\p{Lu}\""));
}

TEST(pattern_ignores_non_strings) {
    CHECK(field_msg_is("{'pattern':'^a$'}", "5", NULL));
}

TEST(bad_regex_does_not_compile) {
    char err[256] = "";
    CHECK(compile_schemas("{'Input':{'properties':{'x':{'type':'string','pattern':'([a-z'}}}}", err, sizeof err) ==
          NULL);
    CHECK(strstr(err, "([a-z") != NULL);
}

TEST(format_uri_needs_a_scheme) {
    const char *uri = "{'type':'string','format':'uri'}";
    CHECK(field_msg_is(uri, "'https://example.com/a.png'", NULL));
    CHECK(field_msg_is(uri, "'http://x'", NULL));
    CHECK(field_msg_is(uri, "'data:text/plain;base64,aGk='", NULL));
    CHECK(field_msg_is(uri, "'s3+x.y-z://bucket/key'", NULL));
    CHECK(field_msg_is(uri, "'a.png'", "\"a.png\" is not a \"uri\""));
    CHECK(field_msg_is(uri, "'/tmp/a.png'", "\"/tmp/a.png\" is not a \"uri\""));
    CHECK(field_msg_is(uri, "''", "\"\" is not a \"uri\""));
    CHECK(field_msg_is(uri, "'1http://x'", "\"1http://x\" is not a \"uri\""));
}

TEST(unknown_formats_are_annotations) {
    CHECK(field_msg_is("{'type':'string','format':'date-time'}", "'not a date'", NULL));
}

/* ---- arrays ---- */

TEST(items_errors_have_nested_path_as_one_string) {
    CHECK(detail_is("{'Input':{'properties':{'items':{'type':'array','items':{'type':'integer'}}}}}",
                    "{'items':[1,'x',3,true]}",
                    "[{\"loc\":[\"body\",\"input\",\"items/1\"],\"msg\":\"\\\"x\\\" is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"},"
                    "{\"loc\":[\"body\",\"input\",\"items/3\"],\"msg\":\"true is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(prefix_items_then_items) {
    const char *s = "{'prefixItems':[{'type':'string'},{'type':'integer'}],'items':{'type':'boolean'}}";
    CHECK(field_msg_is(s, "['a',1,true,false]", NULL));
    CHECK(field_msg_is(s, "['a']", NULL));
    CHECK(detail_is("{'Input':{'properties':{'t':{'prefixItems':[{'type':'string'}],'items':{'type':'boolean'}}}}}",
                    "{'t':[1,true,2]}",
                    "[{\"loc\":[\"body\",\"input\",\"t/0\"],\"msg\":\"1 is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"},"
                    "{\"loc\":[\"body\",\"input\",\"t/2\"],\"msg\":\"2 is not of type \\\"boolean\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(min_and_max_items_with_singular_and_plural) {
    CHECK(field_msg_is("{'minItems':1}", "[]", "[] has less than 1 item"));
    CHECK(field_msg_is("{'minItems':2}", "[1]", "[1] has less than 2 items"));
    CHECK(field_msg_is("{'maxItems':1}", "[1,2]", "[1,2] has more than 1 item"));
    CHECK(field_msg_is("{'maxItems':2}", "[1,2,3]", "[1,2,3] has more than 2 items"));
    CHECK(field_msg_is("{'minItems':1,'maxItems':2}", "[1,2]", NULL));
}

TEST(unique_items) {
    CHECK(field_msg_is("{'uniqueItems':true}", "[1,'1',[1]]", NULL));
    CHECK(field_msg_is("{'uniqueItems':true}", "[1,2,1.0]", "[1,2,1.0] has non-unique elements"));
}

/* ---- objects ---- */

TEST(nested_object_errors_have_nested_path) {
    CHECK(detail_is("{'Input':{'properties':{'o':{'type':'object','properties':{'in':{'type':'string'}}}}}}",
                    "{'o':{'in':1}}",
                    "[{\"loc\":[\"body\",\"input\",\"o/in\"],\"msg\":\"1 is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(path_segments_are_json_pointer_escaped) {
    CHECK(detail_is("{'Input':{'properties':{'o':{'properties':{'a/b~c':{'type':'string'}}}}}}",
                    "{'o':{'a/b~c':1}}",
                    "[{\"loc\":[\"body\",\"input\",\"o/a~1b~0c\"],\"msg\":\"1 is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(additional_properties_false_lists_unexpected_names) {
    const char *s = "{'properties':{'a':{}},'additionalProperties':false}";
    CHECK(field_msg_is(s, "{'a':1}", NULL));
    CHECK(field_msg_is(s, "{'a':1,'z':2}", "Additional properties are not allowed ('z' was unexpected)"));
    CHECK(field_msg_is(s, "{'z':1,'b':2}", "Additional properties are not allowed ('b', 'z' were unexpected)"));
}

TEST(additional_properties_schema_checks_the_extras) {
    const char *s = "{'properties':{'a':{}},'additionalProperties':{'type':'integer'}}";
    CHECK(field_msg_is(s, "{'a':'s','n':1}", NULL));
    CHECK(detail_is("{'Input':{'properties':{'x':{'additionalProperties':{'type':'integer'}}}}}", "{'x':{'n':'s'}}",
                    "[{\"loc\":[\"body\",\"input\",\"x/n\"],\"msg\":\"\\\"s\\\" is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(min_and_max_properties) {
    CHECK(field_msg_is("{'minProperties':1}", "{}", "{} has less than 1 property"));
    CHECK(field_msg_is("{'maxProperties':1}", "{'a':1,'b':2}", "{\"a\":1,\"b\":2} has more than 1 property"));
}

/* ---- composition ---- */

TEST(any_of) {
    const char *s = "{'anyOf':[{'type':'string'},{'type':'integer','minimum':0}]}";
    CHECK(field_msg_is(s, "'a'", NULL));
    CHECK(field_msg_is(s, "3", NULL));
    CHECK(field_msg_is(s, "-1", "-1 is not valid under any of the schemas listed in the 'anyOf' keyword"));
}

TEST(one_of) {
    const char *s = "{'oneOf':[{'type':'integer'},{'minimum':5}]}";
    CHECK(field_msg_is(s, "3", NULL));
    CHECK(field_msg_is(s, "5.5", NULL));
    CHECK(field_msg_is(s, "7", "7 is valid under more than one of the schemas listed in the 'oneOf' keyword"));
    CHECK(field_msg_is(s, "1.5", "1.5 is not valid under any of the schemas listed in the 'oneOf' keyword"));
}

TEST(all_of_reports_each_failing_branch) {
    CHECK(field_msg_is("{'allOf':[{'type':'string'},{'minLength':2}]}", "'ab'", NULL));
    CHECK(detail_is("{'Input':{'properties':{'x':{'allOf':[{'type':'integer'},{'enum':[1]}]}}}}", "{'x':'s'}",
                    "[{\"loc\":[\"body\",\"input\",\"x\"],\"msg\":\"\\\"s\\\" is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"},"
                    "{\"loc\":[\"body\",\"input\",\"x\"],\"msg\":\"\\\"s\\\" is not one of [1]\","
                    "\"type\":\"value_error\"}]"));
}

TEST(not_and_false_schema) {
    CHECK(field_msg_is("{'not':{'type':'string'}}", "1", NULL));
    CHECK(field_msg_is("{'not':{'type':'string'}}", "'a'", "{\"type\":\"string\"} is not allowed for \"a\""));
    CHECK(field_msg_is("false", "1", "False schema does not allow 1"));
    CHECK(field_msg_is("true", "1", NULL));
}

TEST(openapi_keywords_are_ignored) {
    CHECK(field_msg_is("{'type':'integer','title':'X','description':'d','x-order':0,'nullable':true,"
                       "'default':'not checked','deprecated':true,'example':'e'}",
                       "2", NULL));
}

/* ---- $ref ---- */

TEST(ref_two_levels_deep) {
    const char *schemas = "{'Input':{'properties':{'c':{'allOf':[{'$ref':'#/components/schemas/Color'}]}}},"
                          "'Color':{'$ref':'#/components/schemas/Base'},"
                          "'Base':{'type':'string','enum':['red','green'],'title':'color'}}";
    CHECK(detail_is(schemas, "{'c':'red'}", ""));
    CHECK(detail_is(schemas, "{'c':'blue'}",
                    "[{\"loc\":[\"body\",\"input\",\"c\"],"
                    "\"msg\":\"\\\"blue\\\" is not one of [\\\"red\\\",\\\"green\\\"]\","
                    "\"type\":\"value_error\"}]"));
}

TEST(self_referencing_schema_through_properties) {
    const char *schemas = "{'Input':{'properties':{'tree':{'$ref':'#/components/schemas/Node'}}},"
                          "'Node':{'type':'object','properties':{'v':{'type':'integer'},"
                          "'kids':{'type':'array','items':{'$ref':'#/components/schemas/Node'}}}}}";
    CHECK(detail_is(schemas, "{'tree':{'v':1,'kids':[{'v':2,'kids':[]},{'v':3}]}}", ""));
    CHECK(detail_is(schemas, "{'tree':{'v':1,'kids':[{'v':2,'kids':[{'v':'deep'}]}]}}",
                    "[{\"loc\":[\"body\",\"input\",\"tree/kids/0/kids/0/v\"],"
                    "\"msg\":\"\\\"deep\\\" is not of type \\\"integer\\\"\",\"type\":\"value_error\"}]"));
}

TEST(self_referencing_schema_without_descent_terminates) {
    const char *schemas = "{'Input':{'properties':{'a':{'$ref':'#/components/schemas/Loop'},"
                          "'b':{'$ref':'#/components/schemas/Ping'}}},"
                          "'Loop':{'allOf':[{'$ref':'#/components/schemas/Loop'}],'type':'string'},"
                          "'Ping':{'anyOf':[{'$ref':'#/components/schemas/Pong'}]},"
                          "'Pong':{'$ref':'#/components/schemas/Ping'}}";
    CHECK(detail_is(schemas, "{'a':'s','b':1}", ""));
    CHECK(detail_is(schemas, "{'a':1}",
                    "[{\"loc\":[\"body\",\"input\",\"a\"],\"msg\":\"1 is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"}]"));
    CHECK(detail_is("{'Input':{'$ref':'#/components/schemas/Input'}}", "{}", ""));
}

TEST(unresolvable_ref_does_not_compile) {
    char err[256] = "";
    CHECK(compile_schemas("{'Input':{'properties':{'a':{'$ref':'#/components/schemas/Nope'}}}}", err, sizeof err) ==
          NULL);
    CHECK(strstr(err, "Nope") != NULL);
}

TEST(missing_component_does_not_compile) {
    char err[256] = "";
    json_t *doc = jq("{'components':{'schemas':{'Input':{}}}}");
    CHECK(validator_compile(doc, "TrainingInput", err, sizeof err) == NULL);
    CHECK(strstr(err, "TrainingInput") != NULL);
    json_t *empty = jq("{}");
    CHECK(validator_compile(empty, "Input", err, sizeof err) == NULL);
    json_decref(empty);
    json_decref(doc);
}

TEST(validator_keeps_no_reference_to_the_document) {
    json_t *doc = jq("{'components':{'schemas':{'Input':{'properties':{'s':{'type':'string','pattern':'^a'}},"
                     "'required':['s']}}}}");
    char err[256];
    validator *v = validator_compile(doc, "Input", err, sizeof err);
    json_decref(doc); /* the validator works on its own copy */
    CHECK(v != NULL);
    char *got = apply(v, "{'s':'b'}", NULL);
    CHECK(!strcmp(got, "[{\"loc\":[\"body\",\"input\",\"s\"],\"msg\":\"\\\"b\\\" does not match \\\"^a\\\"\","
                       "\"type\":\"value_error\"}]"));
    free(got);
    validator_free(v);
}

/* ---- request-level rules: strip, validate, inject nulls (docs/schema.md#validation-at-the-edge) ---- */

static const char *cog_input =
    "{'Input':{'title':'Input','type':'object','required':['s','count'],'properties':{"
    "'s':{'title':'S','type':'string','x-order':0},"
    "'count':{'title':'Count','type':'integer','x-order':1},"
    "'opt':{'title':'Opt','type':'string','nullable':true,'x-order':2},"
    "'opt_default':{'title':'Od','type':'string','nullable':true,'default':'d','x-order':3},"
    "'plain':{'title':'Plain','type':'integer','default':3,'x-order':4},"
    "'image':{'title':'Image','type':'string','format':'uri','nullable':true,'x-order':5}}}}";

TEST(required_emits_one_entry_per_missing_name_in_array_order) {
    const char *schemas = "{'Input':{'type':'object','required':['s','a','count','b'],'properties':{"
                          "'s':{'type':'string'},'a':{},'b':{},'count':{'type':'integer'}}}}";
    CHECK(detail_is(schemas, "{'count':'x','a':1}",
                    "[{\"loc\":[\"body\",\"input\",\"s\"],\"msg\":\"Field required\",\"type\":\"value_error.missing\"},"
                    "{\"loc\":[\"body\",\"input\",\"b\"],\"msg\":\"Field required\",\"type\":\"value_error.missing\"},"
                    "{\"loc\":[\"body\",\"input\",\"count\"],\"msg\":\"\\\"x\\\" is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(spec_example_missing_and_wrong_type) {
    CHECK(detail_is(cog_input, "{'count':'x'}",
                    "[{\"loc\":[\"body\",\"input\",\"s\"],\"msg\":\"Field required\",\"type\":\"value_error.missing\"},"
                    "{\"loc\":[\"body\",\"input\",\"count\"],\"msg\":\"\\\"x\\\" is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(nested_required_is_skipped_after_the_top_level_block) {
    const char *schemas = "{'Input':{'required':['a'],'properties':{'a':{},"
                          "'o':{'type':'object','required':['k']}}}}";
    CHECK(detail_is(schemas, "{'o':{}}",
                    "[{\"loc\":[\"body\",\"input\",\"a\"],\"msg\":\"Field required\","
                    "\"type\":\"value_error.missing\"}]"));
    /* nothing missing at the top: the nested one reports itself rather than leave detail empty */
    CHECK(detail_is(schemas, "{'a':1,'o':{}}",
                    "[{\"loc\":[\"body\",\"input\",\"o/k\"],\"msg\":\"Field required\","
                    "\"type\":\"value_error.missing\"}]"));
}

TEST(non_object_input_is_a_root_error) {
    CHECK(detail_is(cog_input, "'hello'",
                    "[{\"loc\":[\"body\",\"input\",\"__root__\"],"
                    "\"msg\":\"\\\"hello\\\" is not of type \\\"object\\\"\","
                    "\"type\":\"value_error\"}]"));
    CHECK(detail_is(cog_input, "[1,2]",
                    "[{\"loc\":[\"body\",\"input\",\"__root__\"],\"msg\":\"[1,2] is not of type \\\"object\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(explicit_null_for_typed_optional_is_rejected) {
    CHECK(detail_is(cog_input, "{'s':'a','count':1,'opt':null}",
                    "[{\"loc\":[\"body\",\"input\",\"opt\"],\"msg\":\"null is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(all_errors_are_reported_in_property_order) {
    CHECK(detail_is(cog_input, "{'s':1,'count':1.5,'image':'x.png'}",
                    "[{\"loc\":[\"body\",\"input\",\"count\"],\"msg\":\"1.5 is not of type \\\"integer\\\"\","
                    "\"type\":\"value_error\"},"
                    "{\"loc\":[\"body\",\"input\",\"image\"],\"msg\":\"\\\"x.png\\\" is not a \\\"uri\\\"\","
                    "\"type\":\"value_error\"},"
                    "{\"loc\":[\"body\",\"input\",\"s\"],\"msg\":\"1 is not of type \\\"string\\\"\","
                    "\"type\":\"value_error\"}]"));
}

TEST(unknown_keys_are_stripped_and_named) {
    validator *v = compile_schemas(cog_input, NULL, 0);
    CHECK(v != NULL);
    json_t *in = jq("{'s':'a','zz':1,'count':2,'extra':{'x':1}}"), *detail = NULL, *stripped = NULL;
    CHECK(validator_apply(v, in, &detail, &stripped) == 0);
    CHECK(detail == NULL);
    json_t *want = jq("['zz','extra']");
    CHECK(stripped && json_equal(stripped, want));
    CHECK(!json_object_get(in, "zz") && !json_object_get(in, "extra"));
    json_decref(want);
    json_decref(stripped);
    json_decref(in);
    in = jq("{'s':'a','count':2}");
    stripped = (json_t *)1;
    CHECK(validator_apply(v, in, &detail, &stripped) == 0);
    CHECK(stripped == NULL);
    json_decref(in);
    validator_free(v);
}

TEST(strip_happens_even_when_invalid) {
    validator *v = compile_schemas(cog_input, NULL, 0);
    char *after = NULL;
    char *got = apply(v, "{'junk':1,'count':2}", &after);
    CHECK(strstr(got, "Field required") != NULL && strstr(got, "junk") == NULL);
    CHECK(after && !strcmp(after, "{\"count\":2}")); /* stripped, but no nulls injected */
    free(after);
    free(got);
    validator_free(v);
}

TEST(nulls_injected_only_for_nullable_without_default_not_required_absent) {
    validator *v = compile_schemas(cog_input, NULL, 0);
    char *after = NULL;
    char *got = apply(v, "{'s':'a','count':2}", &after);
    CHECK(!strcmp(got, ""));
    CHECK(after && !strcmp(after, "{\"s\":\"a\",\"count\":2,\"opt\":null,\"image\":null}"));
    free(after);
    free(got);
    got = apply(v, "{'s':'a','count':2,'image':'https://x/y.png'}", &after);
    CHECK(after && !strcmp(after, "{\"s\":\"a\",\"count\":2,\"image\":\"https://x/y.png\",\"opt\":null}"));
    free(after);
    free(got);
    validator_free(v);
}

TEST(nullable_required_property_gets_no_null) {
    validator *v = compile_schemas("{'Input':{'required':['r'],'properties':{'r':{'nullable':true}}}}", NULL, 0);
    char *after = NULL;
    char *got = apply(v, "{}", &after);
    CHECK(strstr(got, "Field required") != NULL);
    CHECK(after && !strcmp(after, "{}"));
    free(after);
    free(got);
    validator_free(v);
}

TEST(component_without_properties_strips_everything) {
    validator *v = compile_schemas("{'Input':{'type':'object'}}", NULL, 0);
    char *after = NULL;
    char *got = apply(v, "{'a':1}", &after);
    CHECK(!strcmp(got, "") && after && !strcmp(after, "{}"));
    free(after);
    free(got);
    validator_free(v);
}

#define MANY 50

static char *many_fields_schema(void) {
    static char s[16384];
    size_t n = (size_t)snprintf(s, sizeof s, "{'Input':{'type':'object','required':[");
    for (int i = 0; i < MANY; i++)
        n += (size_t)snprintf(s + n, sizeof s - n, "%s'f%02d'", i ? "," : "", i);
    n += (size_t)snprintf(s + n, sizeof s - n, "],'properties':{");
    for (int i = 0; i < MANY; i++)
        n += (size_t)snprintf(s + n, sizeof s - n,
                              "%s'f%02d':{'type':'%s','minimum':0,'maxLength':20,'x-order':%d,'title':'F'}",
                              i ? "," : "", i, i % 2 ? "integer" : "string", i);
    snprintf(s + n, sizeof s - n, "}}}");
    return s;
}

static json_t *many_fields_input(int valid) {
    json_t *in = json_object();
    char name[16];
    for (int i = 0; i < MANY; i++) {
        snprintf(name, sizeof name, "f%02d", i);
        json_object_set_new(in, name, (i % 2 == 0) == valid ? json_string("value") : json_integer(i));
    }
    return in;
}

TEST(fifty_fields_valid_and_all_invalid) {
    validator *v = compile_schemas(many_fields_schema(), NULL, 0);
    CHECK(v != NULL);
    json_t *in = many_fields_input(1), *detail = NULL, *stripped = NULL;
    CHECK(validator_apply(v, in, &detail, &stripped) == 0);
    json_decref(in);
    in = many_fields_input(0);
    CHECK(validator_apply(v, in, &detail, &stripped) == -1);
    CHECK(json_array_size(detail) == MANY);
    json_t *first = json_array_get(detail, 0), *last = json_array_get(detail, MANY - 1);
    CHECK(!strcmp(json_string_value(json_array_get(json_object_get(first, "loc"), 2)) ?: "", "f00"));
    CHECK(!strcmp(json_string_value(json_object_get(first, "msg")) ?: "", "0 is not of type \"string\""));
    CHECK(!strcmp(json_string_value(json_object_get(last, "msg")) ?: "", "\"value\" is not of type \"integer\""));
    json_decref(detail);
    json_decref(in);
    validator_free(v);
}

TEST(fifty_fields_validate_repeatedly) {
    validator *v = compile_schemas(many_fields_schema(), NULL, 0);
    json_t *in = many_fields_input(1), *detail = NULL, *stripped = NULL;
    enum { ROUNDS = 2000 };
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = 0;
    for (int i = 0; i < ROUNDS; i++)
        rc |= validator_apply(v, in, &detail, &stripped);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double us = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e3 / ROUNDS;
    printf("     (%.2f us per 50-field input)\n", us);
    CHECK(rc == 0); /* the time is reported, never asserted: speed claims live in benchmarks/ */
    json_decref(in);
    validator_free(v);
}

static const test_case tests[] = {
    T(type_string_accepts_strings_rejects_others),
    T(type_integer_rejects_fractions_and_strings),
    T(type_integer_accepts_integral_real),
    T(type_number_accepts_integers),
    T(type_boolean_null_array_object),
    T(type_list_message_names_every_type),
    T(offending_value_prints_compact_with_sorted_keys_and_python_floats),
    T(unknown_type_does_not_compile),
    T(enum_lists_the_choices),
    T(enum_compares_numbers_by_value),
    T(const_shows_the_expected_value),
    T(minimum_and_maximum_inclusive),
    T(exclusive_bounds_numeric_form),
    T(exclusive_bounds_openapi_boolean_form),
    T(integer_bounds_compare_exactly_at_int64_edges),
    T(multiple_of_integers_and_reals),
    T(multiple_of_zero_does_not_compile),
    T(min_and_max_length_with_singular_and_plural),
    T(string_length_counts_code_points),
    T(pattern_is_an_unanchored_search),
    T(pattern_dollar_does_not_match_before_final_newline),
    T(pattern_is_unicode_aware),
    T(pattern_ignores_non_strings),
    T(bad_regex_does_not_compile),
    T(format_uri_needs_a_scheme),
    T(unknown_formats_are_annotations),
    T(items_errors_have_nested_path_as_one_string),
    T(prefix_items_then_items),
    T(min_and_max_items_with_singular_and_plural),
    T(unique_items),
    T(nested_object_errors_have_nested_path),
    T(path_segments_are_json_pointer_escaped),
    T(additional_properties_false_lists_unexpected_names),
    T(additional_properties_schema_checks_the_extras),
    T(min_and_max_properties),
    T(any_of),
    T(one_of),
    T(all_of_reports_each_failing_branch),
    T(not_and_false_schema),
    T(openapi_keywords_are_ignored),
    T(ref_two_levels_deep),
    T(self_referencing_schema_through_properties),
    T(self_referencing_schema_without_descent_terminates),
    T(unresolvable_ref_does_not_compile),
    T(missing_component_does_not_compile),
    T(validator_keeps_no_reference_to_the_document),
    T(required_emits_one_entry_per_missing_name_in_array_order),
    T(spec_example_missing_and_wrong_type),
    T(nested_required_is_skipped_after_the_top_level_block),
    T(non_object_input_is_a_root_error),
    T(explicit_null_for_typed_optional_is_rejected),
    T(all_errors_are_reported_in_property_order),
    T(unknown_keys_are_stripped_and_named),
    T(strip_happens_even_when_invalid),
    T(nulls_injected_only_for_nullable_without_default_not_required_absent),
    T(nullable_required_property_gets_no_null),
    T(component_without_properties_strips_everything),
    T(fifty_fields_valid_and_all_invalid),
    T(fifty_fields_validate_repeatedly),
};

int main(void) { return run_tests("c-validate", tests, sizeof tests / sizeof tests[0]); }
