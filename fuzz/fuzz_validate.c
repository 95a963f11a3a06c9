/* fuzz/fuzz_validate.c: the input validator (core/validate*.c) against one fixed schema that
 * uses every keyword it implements ($ref recursion and a $ref cycle, patterns, integers beyond
 * 64 bits, anyOf/oneOf/not...). The input is read as a request body's `input` is; whatever
 * validates or fails, the 422 detail must encode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_in.h"
#include "common/json_out.h"
#include "core/validate.h"

#define MUST(cond)                                                                                                     \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            __builtin_trap();                                                                                          \
    } while (0)

static const char schema_text[] =
    "{\"components\":{\"schemas\":{"
    "\"Input\":{\"type\":\"object\",\"required\":[\"s\"],\"properties\":{"
    "\"s\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":20,\"pattern\":\"^[a-z]+(-[a-z0-9]+)*$\"},"
    "\"n\":{\"type\":\"integer\",\"minimum\":-1000000000000000000000000000000,\"maximum\":1e30,\"multipleOf\":3},"
    "\"big\":{\"multipleOf\":100000000000000000007,\"exclusiveMaximum\":18446744073709551616},"
    "\"x\":{\"type\":\"number\",\"exclusiveMinimum\":0,\"exclusiveMaximum\":1.5e300,\"multipleOf\":0.25},"
    "\"e\":{\"enum\":[\"a\",1,2.5,null,true,[1,2],{\"k\":\"v\"},123456789012345678901234567890]},"
    "\"c\":{\"const\":{\"a\":[1,{\"b\":null}]}},"
    "\"u\":{\"type\":\"string\",\"format\":\"uri\"},"
    "\"uni\":{\"type\":\"string\",\"pattern\":\"\\\\p{L}+\\\\u00e9?$\",\"maxLength\":4},"
    "\"arr\":{\"type\":\"array\",\"items\":{\"$ref\":\"#/components/schemas/Node\"},\"maxItems\":8,"
    "\"uniqueItems\":true},"
    "\"tup\":{\"type\":\"array\",\"prefixItems\":[{\"type\":\"integer\"},{\"type\":\"string\"}],\"items\":false},"
    "\"old\":{\"type\":\"array\",\"items\":[{\"type\":\"boolean\"}]},"
    "\"obj\":{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"boolean\"}},\"required\":[\"a\"],"
    "\"additionalProperties\":{\"type\":\"integer\"},\"minProperties\":1,\"maxProperties\":5},"
    "\"closed\":{\"type\":\"object\",\"additionalProperties\":false,\"properties\":{\"k\":{}}},"
    "\"any\":{\"anyOf\":[{\"type\":\"integer\"},{\"type\":\"string\",\"maxLength\":3}]},"
    "\"one\":{\"oneOf\":[{\"type\":\"number\",\"minimum\":0},{\"type\":\"integer\",\"maximum\":10}]},"
    "\"not\":{\"not\":{\"type\":\"null\"}},"
    "\"all\":{\"allOf\":[{\"type\":\"object\"},{\"required\":[\"z\"]}]},"
    "\"opt\":{\"type\":\"string\",\"nullable\":true},"
    "\"types\":{\"type\":[\"integer\",\"null\",\"string\"]},"
    "\"never\":false,"
    "\"oa\":{\"type\":\"number\",\"minimum\":0,\"exclusiveMinimum\":true,\"maximum\":10,\"exclusiveMaximum\":true},"
    "\"tree\":{\"$ref\":\"#/components/schemas/Node\"},"
    "\"loop\":{\"$ref\":\"#/components/schemas/Loop\"},"
    "\"defs\":{\"$ref\":\"#/$defs/Pos\"}"
    "},\"$defs\":{\"Pos\":{\"type\":\"integer\",\"minimum\":1}}},"
    "\"Node\":{\"type\":\"object\",\"properties\":{\"kids\":{\"type\":\"array\",\"items\":"
    "{\"$ref\":\"#/components/schemas/Node\"}},\"v\":{\"type\":[\"integer\",\"null\"]}}},"
    "\"Loop\":{\"allOf\":[{\"$ref\":\"#/components/schemas/Loop\"}],\"type\":\"integer\"}"
    "}}}";

static validator *v;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    json_in_error jerr;
    json_t *doc = json_in_parse(schema_text, sizeof schema_text - 1, &jerr);
    char err[256];
    v = doc ? validator_compile(doc, "Input", err, sizeof err) : NULL;
    if (!v) {
        fprintf(stderr, "fuzz_validate: the schema does not compile: %s\n", doc ? err : jerr.text);
        abort();
    }
    json_decref(doc);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_in_options opts = {.flags = JSON_IN_REJECT_DUPLICATES, .max_depth = JSON_IN_BODY_MAX_DEPTH};
    json_in_error jerr;
    json_t *input = json_in_parse_with((const char *)data, size, &opts, &jerr);
    if (!input)
        return 0;
    json_t *detail = NULL, *stripped = NULL;
    int rc = validator_apply(v, input, &detail, &stripped);
    MUST((rc == 0) == (detail == NULL));
    if (detail) {
        MUST(json_array_size(detail) > 0);
        char *text = json_out_string(detail, 0);
        MUST(text != NULL);
        free(text);
    }
    char *after = json_out_string(input, JSON_OUT_SORTED);
    MUST(after != NULL);
    free(after);
    json_decref(stripped);
    json_decref(detail);
    json_decref(input);
    return 0;
}
