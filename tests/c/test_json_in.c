/* tests/c/test_json_in.c: the JSON reader: values, error messages and positions, duplicate
 * keys at every level, the member table a body parse records, the nesting limit. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner.h"

#include "common/bignum.h"
#include "common/json_in.h"

#define STRICT JSON_IN_REJECT_DUPLICATES

static int parses_like_jansson(const char *text) {
    json_in_error err;
    json_t *ours = json_in_parse(text, strlen(text), &err);
    json_t *theirs = json_loads(text, JSON_DECODE_ANY, NULL);
    int ok = ours && theirs && json_equal(ours, theirs) && err.code == 0;
    if (!ok)
        fprintf(stderr, "  parse %s: ours %s\n", text, ours ? "ok" : err.text);
    json_decref(ours);
    json_decref(theirs);
    return ok;
}

/* Parses with flags and a depth limit (0: the default); the error text must be `want`. */
static int error_is_with(const char *text, size_t len, unsigned flags, int max_depth, int code, const char *want) {
    json_in_error err;
    json_in_options opts = {.flags = flags, .max_depth = max_depth};
    json_t *v = json_in_parse_with(text, len, &opts, &err);
    int ok = !v && err.code == code && !strcmp(err.text, want);
    if (!ok)
        fprintf(stderr, "  parse %.60s -> %s [%d] (want %s [%d])\n", text, v ? "a value" : err.text, err.code, want,
                code);
    json_decref(v);
    return ok;
}

static int parse_error_is(const char *text, const char *want) {
    return error_is_with(text, strlen(text), 0, 0, JSON_IN_ESYNTAX, want);
}

static int duplicate_is(const char *text, const char *want) {
    return error_is_with(text, strlen(text), STRICT, 0, JSON_IN_EDUPLICATE, want);
}

static int strict_parses(const char *text) {
    json_in_error err;
    json_in_options opts = {.flags = STRICT};
    json_t *v = json_in_parse_with(text, strlen(text), &opts, &err);
    if (!v)
        fprintf(stderr, "  strict parse %s: %s\n", text, err.text);
    json_decref(v);
    return v != NULL;
}

TEST(json_in_values_match_jansson) {
    CHECK(parses_like_jansson("{\"input\":{\"a\":[1,2.5,-3e2,true,false,null,\"x\"]},\"id\":\"p\"}"));
    CHECK(parses_like_jansson("\"h\\u00e9llo \\ud83d\\ude00 \\n\\t\\\"\\\\/\""));
    CHECK(parses_like_jansson("\"héllo 😀\""));
    CHECK(parses_like_jansson("  [ ]  "));
    CHECK(parses_like_jansson("{}"));
    CHECK(parses_like_jansson("[[],{},[{}],{\"a\":[]}]"));
    CHECK(parses_like_jansson("{\"a\":{\"b\":{\"c\":[1,[2,[3]]]}},\"d\":\"e\"}"));
    CHECK(parses_like_jansson("-0"));
    CHECK(parses_like_jansson("9223372036854775807"));
    json_in_error err;
    json_t *big = json_in_parse("18446744073709551616", 20, &err); /* beyond 64 bits: a bignum */
    CHECK(big && bignum_is(big) && !strcmp(bignum_text(big, NULL), "18446744073709551616"));
    json_decref(big);
    big = json_in_parse("[-9223372036854775809, 1.5e300]", 31, &err); /* reals stay reals */
    CHECK(big && bignum_is(json_array_get(big, 0)) && json_is_real(json_array_get(big, 1)));
    json_decref(big);
}

TEST(json_in_errors_name_the_place) {
    CHECK(parse_error_is("", "EOF while parsing a value at line 1 column 0"));
    CHECK(parse_error_is("{\"a\":", "EOF while parsing a value at line 1 column 5"));
    CHECK(parse_error_is("{\"a\":1}x", "trailing characters at line 1 column 8"));
    CHECK(parse_error_is("[1,]", "trailing comma at line 1 column 4"));
    CHECK(parse_error_is("{\"a\":1,}", "trailing comma at line 1 column 8"));
    CHECK(parse_error_is("{a:1}", "key must be a string at line 1 column 2"));
    CHECK(parse_error_is("{\"a\" 1}", "expected `:` at line 1 column 6"));
    CHECK(parse_error_is("[1 2]", "expected `,` or `]` at line 1 column 4"));
    CHECK(parse_error_is("{\"a\":1 \"b\"}", "expected `,` or `}` at line 1 column 8"));
    CHECK(parse_error_is("[1,", "EOF while parsing a value at line 1 column 3"));
    CHECK(parse_error_is("[1", "EOF while parsing a list at line 1 column 2"));
    CHECK(parse_error_is("{\"a\":1", "EOF while parsing an object at line 1 column 6"));
    CHECK(parse_error_is("\n\n  nope", "expected ident at line 3 column 4"));
    CHECK(parse_error_is("\"\\ud800\"", "unexpected end of hex escape at line 1 column 7"));
    CHECK(parse_error_is("\"a\x01\"", "control character (\\u0000-\\u001F) found while parsing a string at line 1 column 3"));
    CHECK(parse_error_is("\"\xff\"", "invalid unicode code point at line 1 column 2"));
    CHECK(parse_error_is("1e999", "number out of range at line 1 column 5"));
    CHECK(parse_error_is("{\"a\\u0000\":1}", "NUL characters are not supported at line 1 column 9"));
    /* errors deep inside open containers: everything built so far is freed (ASan) */
    CHECK(parse_error_is("[{\"a\":[1,{\"b\":\"c\"", "EOF while parsing an object at line 1 column 17"));
    CHECK(parse_error_is("{\"a\":{\"b\":[1,2,]}}", "trailing comma at line 1 column 16"));
}

static char *nested(size_t n, char open, char close) {
    char *s = malloc(2 * n + 1);
    memset(s, open, n);
    memset(s + n, close, n);
    s[2 * n] = '\0';
    return s;
}

TEST(json_in_depth_limit_is_an_error_not_a_crash) {
    char *ok = nested(JSON_IN_MAX_DEPTH, '[', ']');
    json_in_error err;
    json_t *v = json_in_parse(ok, strlen(ok), &err);
    CHECK(v != NULL); /* exactly at the limit */
    json_decref(v);
    free(ok);
    char *deep = nested(JSON_IN_MAX_DEPTH + 1, '[', ']');
    CHECK(error_is_with(deep, strlen(deep), 0, 0, JSON_IN_EDEPTH, "recursion limit exceeded at line 1 column 513"));
    free(deep);
    /* far past it: refused at the limit, whatever follows (no recursion to overflow) */
    size_t n = (size_t)4 << 20;
    char *huge = malloc(n);
    memset(huge, '[', n);
    CHECK(error_is_with(huge, n, 0, 0, JSON_IN_EDEPTH, "recursion limit exceeded at line 1 column 513"));
    free(huge);
}

TEST(json_in_body_depth_is_serde_json_s) {
    /* serde_json: 127 nested arrays parse; the 128th `[` fails, at its own column */
    char *ok = nested(127, '[', ']');
    json_in_options opts = {.flags = STRICT, .max_depth = JSON_IN_BODY_MAX_DEPTH};
    json_in_error err;
    json_t *v = json_in_parse_with(ok, strlen(ok), &opts, &err);
    CHECK(v != NULL && err.code == 0);
    json_decref(v);
    free(ok);
    char brackets[130];
    memset(brackets, '[', 129);
    brackets[129] = '\0';
    CHECK(error_is_with(brackets, 129, STRICT, JSON_IN_BODY_MAX_DEPTH, JSON_IN_EDEPTH,
                        "recursion limit exceeded at line 1 column 128"));
    /* objects count the same */
    char objs[128 * 5 + 1];
    for (int i = 0; i < 128; i++)
        memcpy(objs + 5 * i, "{\"a\":", 5);
    objs[sizeof objs - 1] = '\0';
    CHECK(error_is_with(objs, strlen(objs), STRICT, JSON_IN_BODY_MAX_DEPTH, JSON_IN_EDEPTH,
                        "recursion limit exceeded at line 1 column 636"));
}

TEST(json_in_large_string_round_trips) {
    size_t n = 3u << 20;
    char *text = malloc(n + 3);
    text[0] = '"';
    for (size_t i = 0; i < n; i++)
        text[i + 1] = (char)('a' + i % 26);
    text[n + 1] = '"';
    text[n + 2] = '\0';
    json_in_error err;
    json_t *v = json_in_parse(text, n + 2, &err);
    CHECK(v && json_string_length(v) == n && !memcmp(json_string_value(v), text + 1, n));
    json_decref(v);
    free(text);
}

TEST(json_in_duplicates_last_wins_without_the_flag) {
    json_in_error err;
    json_t *dup = json_in_parse("{\"a\":1,\"a\":2}", 13, &err); /* frames, spill files */
    CHECK(dup && json_integer_value(json_object_get(dup, "a")) == 2 && json_object_size(dup) == 1);
    json_decref(dup);
    const char *esc = "{\"input\":{\"s\":1,\"\\u0073\":2}}";
    dup = json_in_parse(esc, strlen(esc), &err);
    CHECK(dup && json_integer_value(json_object_get(json_object_get(dup, "input"), "s")) == 2);
    json_decref(dup);
}

TEST(json_in_duplicates_rejected_at_every_level) {
    /* the top level: serde's message and position (just past the second key) */
    CHECK(duplicate_is("{\"input\":1,\"input\":2}", "duplicate field `input` at line 1 column 18"));
    CHECK(duplicate_is("{\"input\":1,\"\\u0069nput\":2}", "duplicate field `input` at line 1 column 23"));
    CHECK(duplicate_is("{\n  \"id\": \"x\",\n  \"id\": \"y\"\n}", "duplicate field `id` at line 3 column 6"));
    /* inside input, and deeper: the path names the object holding the key */
    CHECK(duplicate_is("{\"input\":{\"s\":\"a\",\"s\":\"b\"}}", "input: duplicate field `s` at line 1 column 21"));
    CHECK(duplicate_is("{\"input\":{\"s\":\"a\",\"\\u0073\":\"b\"}}", "input: duplicate field `s` at line 1 column 26"));
    CHECK(duplicate_is("{\"input\":{\"a\":[{\"k\":1},{\"k\":1,\"k\":2}]}}",
                       "input.a[1]: duplicate field `k` at line 1 column 33"));
    CHECK(duplicate_is("[0,{\"k\":1,\"k\":2}]", "[1]: duplicate field `k` at line 1 column 13"));
    CHECK(duplicate_is("{\"a\":{\"b\":{\"c\":{},\"c\":[]}}}", "a.b: duplicate field `c` at line 1 column 21"));
    /* the second value is read first: a later syntax error is not reached, one inside it is */
    CHECK(duplicate_is("{\"a\":1,\"a\":2,", "duplicate field `a` at line 1 column 10"));
    CHECK(error_is_with("{\"a\":1,\"a\":[}", 13, STRICT, 0, JSON_IN_ESYNTAX, "expected value at line 1 column 13"));
    /* keys are compared decoded, and only within one object */
    CHECK(strict_parses("{\"a\\\"\":1,\"a\":2,\"A\":3}"));
    CHECK(strict_parses("{\"s\":{\"s\":1},\"t\":[{\"s\":1},{\"s\":2}]}"));
    CHECK(strict_parses("{\"\":1,\"x\":{\"\":2}}"));
    CHECK(duplicate_is("{\"\":1,\"\":2}", "duplicate field `` at line 1 column 8"));
}

static int utf8_ok(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80 ? 1 : (*p & 0xE0) == 0xC0 ? 2 : (*p & 0xF0) == 0xE0 ? 3 : (*p & 0xF8) == 0xF0 ? 4 : 0;
        if (!n)
            return 0;
        for (int i = 1; i < n; i++)
            if ((p[i] & 0xC0) != 0x80)
                return 0;
        p += n;
    }
    return 1;
}

TEST(json_in_duplicate_message_cuts_long_names_whole) {
    /* a 300-character key of two-byte characters, nested under a long key: the text still
     * fits, ends with the position, and is cut between characters */
    char text[2048];
    size_t n = 0;
    n += (size_t)sprintf(text + n, "{\"");
    for (int i = 0; i < 100; i++)
        n += (size_t)sprintf(text + n, "outer");
    n += (size_t)sprintf(text + n, "\":{\"");
    size_t key_at = n;
    for (int i = 0; i < 300; i++)
        n += (size_t)sprintf(text + n, "é");
    size_t key_len = n - key_at;
    n += (size_t)sprintf(text + n, "\":1,\"");
    memcpy(text + n, text + key_at, key_len);
    n += key_len;
    n += (size_t)sprintf(text + n, "\":2}}");
    json_in_error err;
    json_in_options opts = {.flags = STRICT};
    json_t *v = json_in_parse_with(text, n, &opts, &err);
    CHECK(!v && err.code == JSON_IN_EDUPLICATE);
    CHECK(strlen(err.text) < sizeof err.text - 1);
    CHECK(utf8_ok(err.text));
    CHECK(!strncmp(err.text, "outerouter", 10) && strstr(err.text, ": duplicate field `éé"));
    char tail[64];
    snprintf(tail, sizeof tail, "` at line 1 column %d", err.column);
    CHECK(strlen(err.text) > strlen(tail) && !strcmp(err.text + strlen(err.text) - strlen(tail), tail));
    CHECK(err.line == 1 && err.column == 2 + 500 + 4 + 300 + 5 + 300 + 1);
}

/* text[start, end) of a located member must be `want`. */
static int span_is(const char *text, const json_in_member *m, const char *want) {
    size_t len = m->end - m->start;
    int ok = want ? m->found && len == strlen(want) && !memcmp(text + m->start, want, len) : !m->found;
    if (!ok)
        fprintf(stderr, "  span %s -> %.*s\n", m->key, m->found ? (int)len : 4, m->found ? text + m->start : "none");
    return ok;
}

TEST(json_in_members_record_spans_by_decoded_key) {
    const char *text = " { \"id\" : \"x\" , \"\\u0069nput\" :  {\"a\":\"}\\\"]\",\"b\":[1,2]} ,\n"
                       "\"context\":{\"k\":\"v\",\"j\": 5 }, \"webhook_events_filter\":[\"start\", 7 ],"
                       "\"x\":{\"input\":1} } \n";
    json_in_member m[] = {{.key = "id"},
                          {.key = "input"},
                          {.key = "context", .with_items = 1},
                          {.key = "webhook_events_filter", .with_items = 1},
                          {.key = "webhook"},
                          {.key = "x", .with_items = 1}};
    json_in_options opts = {.flags = STRICT, .members = m, .num_members = 6};
    json_in_error err;
    json_t *v = json_in_parse_with(text, strlen(text), &opts, &err);
    CHECK(v != NULL);
    CHECK(span_is(text, &m[0], "\"x\""));
    CHECK(span_is(text, &m[1], "{\"a\":\"}\\\"]\",\"b\":[1,2]}")); /* written \u0069nput */
    CHECK(span_is(text, &m[2], "{\"k\":\"v\",\"j\": 5 }"));
    CHECK(m[2].num_items == 2 && !memcmp(text + m[2].item_ends[0] - 3, "\"v\"", 3) &&
          text[m[2].item_ends[1] - 1] == '5');
    CHECK(m[3].num_items == 2 && !memcmp(text + m[3].item_ends[0] - 7, "\"start\"", 7) &&
          text[m[3].item_ends[1] - 1] == '7');
    CHECK(span_is(text, &m[4], NULL));
    CHECK(span_is(text, &m[5], "{\"input\":1}") && m[5].num_items == 1); /* a nested "input" is not located */
    CHECK(!m[1].item_ends && m[1].num_items == 0);                       /* not asked for */
    CHECK(opts.end == strlen(text) - 2); /* before the trailing whitespace */
    json_in_members_free(m, 6);
    json_decref(v);
}

TEST(json_in_member_items_follow_foreach_order) {
    const char *text = "{\"o\":{\"z\":1,\"a\":22,\"m\":333,\"\\u0062\":4444}}";
    json_in_member m = {.key = "o", .with_items = 1};
    json_in_options opts = {.flags = STRICT, .members = &m, .num_members = 1};
    json_in_error err;
    json_t *v = json_in_parse_with(text, strlen(text), &opts, &err);
    CHECK(v && m.num_items == 4);
    const char *k;
    json_t *item;
    size_t i = 0;
    json_object_foreach(json_object_get(v, "o"), k, item) {
        char num[16];
        int len = snprintf(num, sizeof num, "%lld", (long long)json_integer_value(item));
        CHECK(i < m.num_items && !memcmp(text + m.item_ends[i] - len, num, (size_t)len));
        i++;
    }
    CHECK(i == 4);
    json_in_members_free(&m, 1);
    json_decref(v);
}

TEST(json_in_members_edge_cases) {
    json_in_member m = {.key = "input", .with_items = 1};
    json_in_options opts = {.members = &m, .num_members = 1};
    json_in_error err;
    /* not an object: nothing located; the end is still known */
    json_t *v = json_in_parse_with(" [{\"input\":1}] ", 15, &opts, &err);
    CHECK(v && !m.found && opts.end == 14);
    json_decref(v);
    json_in_members_free(&m, 1);
    /* a scalar has no items; an empty container has none either */
    v = json_in_parse_with("{\"input\":\"s\"}", 13, &opts, &err);
    CHECK(v && m.found && m.num_items == 0 && m.start == 9 && m.end == 12);
    json_decref(v);
    json_in_members_free(&m, 1);
    v = json_in_parse_with("{\"input\":[]}", 12, &opts, &err);
    CHECK(v && m.found && m.num_items == 0 && m.start == 9 && m.end == 11);
    json_decref(v);
    json_in_members_free(&m, 1);
    /* duplicates allowed in: the last one is located */
    const char *text = "{\"input\":[1,2,3],\"input\":{\"b\":2}}";
    v = json_in_parse_with(text, strlen(text), &opts, &err);
    CHECK(v && span_is(text, &m, "{\"b\":2}") && m.num_items == 1);
    json_decref(v);
    json_in_members_free(&m, 1);
    /* a failed parse after items were recorded: freed by the caller as always (ASan) */
    text = "{\"input\":[1,2,3,";
    v = json_in_parse_with(text, strlen(text), &opts, &err);
    CHECK(!v && err.code == JSON_IN_ESYNTAX);
    json_in_members_free(&m, 1);
    /* many items: the table grows */
    char big[6000];
    size_t n = (size_t)sprintf(big, "{\"input\":[");
    for (int i = 0; i < 1000; i++)
        n += (size_t)sprintf(big + n, "%s%d", i ? "," : "", i % 10);
    n += (size_t)sprintf(big + n, "]}");
    v = json_in_parse_with(big, n, &opts, &err);
    CHECK(v && m.num_items == 1000 && m.item_ends[999] == n - 2 && m.item_ends[0] == 11);
    json_decref(v);
    json_in_members_free(&m, 1);
}

TEST(json_in_position_counts_characters) {
    const char *text = "ab\n\xc3\xa9\xf0\x9f\x98\x80x\ny";
    int line, col;
    json_in_position(text, strlen(text), 0, &line, &col);
    CHECK(line == 1 && col == 0);
    json_in_position(text, strlen(text), 2, &line, &col);
    CHECK(line == 1 && col == 2);
    json_in_position(text, strlen(text), 10, &line, &col); /* just past x: é, 😀, x */
    CHECK(line == 2 && col == 3);
    json_in_position(text, strlen(text), 1000, &line, &col); /* past the end: the end */
    CHECK(line == 3 && col == 1);
}

TEST(json_in_parse_file_reads_the_whole_file) {
    char path[] = "/tmp/coglet-json-in-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *text = "{\"a\":[1,\"two\"],\"a\":3}";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    json_in_error err;
    json_t *v = json_in_parse_file(path, &err);
    CHECK(v && json_integer_value(json_object_get(v, "a")) == 3);
    json_decref(v);
    unlink(path);
    v = json_in_parse_file(path, &err);
    CHECK(!v && err.code == JSON_IN_EIO && strstr(err.text, "cannot read /tmp/coglet-json-in-") &&
          strstr(err.text, "No such file or directory"));
}

static const test_case tests[] = {
    T(json_in_values_match_jansson),
    T(json_in_errors_name_the_place),
    T(json_in_depth_limit_is_an_error_not_a_crash),
    T(json_in_body_depth_is_serde_json_s),
    T(json_in_large_string_round_trips),
    T(json_in_duplicates_last_wins_without_the_flag),
    T(json_in_duplicates_rejected_at_every_level),
    T(json_in_duplicate_message_cuts_long_names_whole),
    T(json_in_members_record_spans_by_decoded_key),
    T(json_in_member_items_follow_foreach_order),
    T(json_in_members_edge_cases),
    T(json_in_position_counts_characters),
    T(json_in_parse_file_reads_the_whole_file),
};

int main(void) { return run_tests("c-json-in", tests, sizeof tests / sizeof tests[0]); }
