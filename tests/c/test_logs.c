/* tests/c/test_logs.c: a prediction's bounded logs (core/logs.c), one behaviour per test,
 * with small limits so that every edge is a few bytes away. */
#include <stdlib.h>
#include <string.h>

#include "runner.h"

#include "core/logs.h"

/* The text, compared with want; the text is freed. */
static int text_is(const pred_logs *l, const char *want) {
    size_t len;
    char *got = pred_logs_text(l, &len);
    int same = got && len == strlen(want) && !memcmp(got, want, len);
    if (!same)
        fprintf(stderr, "  got %s\n  want %s\n", got ? got : "(null)", want);
    free(got);
    return same;
}

static void add(pred_logs *l, const char *s) { CHECK(pred_logs_append(l, s, strlen(s)) == 0); }

TEST(everything_is_kept_within_the_limits) {
    pred_logs l;
    pred_logs_init_limits(&l, 8, 8);
    add(&l, "one\n");
    add(&l, "two\n");
    add(&l, "three\n");
    add(&l, "fo");
    CHECK(pred_logs_dropped(&l) == 0); /* 8 in the head, 8 in the ring */
    CHECK(text_is(&l, "one\ntwo\nthree\nfo"));
    pred_logs_free(&l);
}

TEST(empty_logs_are_an_empty_string) {
    pred_logs l;
    pred_logs_init(&l);
    CHECK(text_is(&l, ""));
    pred_logs_free(&l);
}

TEST(the_middle_is_dropped_and_counted) {
    pred_logs l;
    pred_logs_init_limits(&l, 4, 4);
    add(&l, "aaa\n");
    add(&l, "bbb\n");
    add(&l, "ccc\n");
    add(&l, "ddd\n");
    CHECK(pred_logs_dropped(&l) == 8);
    CHECK(text_is(&l, "aaa\n[**** LOGS TRUNCATED: 8 BYTES DROPPED; THE FIRST 4 BYTES AND THE LAST 4 BYTES ARE KEPT ****]\n"
                      "ddd\n"));
    pred_logs_free(&l);
}

TEST(the_marker_starts_a_line_of_its_own) {
    pred_logs l;
    pred_logs_init_limits(&l, 4, 2);
    add(&l, "abcdefgh");
    CHECK(text_is(&l, "abcd\n[**** LOGS TRUNCATED: 2 BYTES DROPPED; THE FIRST 4 BYTES AND THE LAST 2 BYTES ARE KEPT ****]\n"
                      "gh"));
    pred_logs_free(&l);
}

TEST(one_append_longer_than_both_limits) {
    pred_logs l;
    pred_logs_init_limits(&l, 3, 3);
    add(&l, "0123456789");
    CHECK(pred_logs_dropped(&l) == 4);
    CHECK(text_is(&l, "012\n[**** LOGS TRUNCATED: 4 BYTES DROPPED; THE FIRST 3 BYTES AND THE LAST 3 BYTES ARE KEPT ****]\n"
                      "789"));
    add(&l, "ab");
    CHECK(pred_logs_dropped(&l) == 6);
    CHECK(text_is(&l, "012\n[**** LOGS TRUNCATED: 6 BYTES DROPPED; THE FIRST 3 BYTES AND THE LAST 3 BYTES ARE KEPT ****]\n"
                      "9ab"));
    pred_logs_free(&l);
}

TEST(the_ring_wraps_in_order) {
    pred_logs l;
    pred_logs_init_limits(&l, 0, 5);
    for (int i = 0; i < 7; i++)
        add(&l, (const char[]){(char)('a' + i), 0});
    CHECK(pred_logs_dropped(&l) == 2);
    CHECK(text_is(&l, "[**** LOGS TRUNCATED: 2 BYTES DROPPED; THE FIRST 0 BYTES AND THE LAST 5 BYTES ARE KEPT ****]\n"
                      "cdefg"));
    pred_logs_free(&l);
}

/* "é" is two bytes (C3 A9): neither end of what is kept splits one. */
TEST(cuts_fall_between_utf8_characters) {
    pred_logs l;
    pred_logs_init_limits(&l, 3, 3);
    add(&l, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"); /* 8 bytes */
    /* head: one é (a second would need byte 4); ring: the last 3 bytes, whose first is the
     * end of a character: skipped, and counted */
    CHECK(text_is(&l, "\xc3\xa9\n[**** LOGS TRUNCATED: 4 BYTES DROPPED; THE FIRST 3 BYTES AND THE LAST 3 BYTES ARE KEPT ****]\n"
                      "\xc3\xa9"));
    pred_logs_free(&l);
}

TEST(real_limits_keep_one_and_seven_mib) {
    pred_logs l;
    pred_logs_init(&l);
    size_t line_len = 1000;
    char *line = malloc(line_len);
    memset(line, 'x', line_len - 1);
    line[line_len - 1] = '\n';
    for (int i = 0; i < 10000; i++) /* 10 MB */
        CHECK(pred_logs_append(&l, line, line_len) == 0);
    size_t len;
    char *text = pred_logs_text(&l, &len);
    CHECK(pred_logs_dropped(&l) == 10000 * line_len - LOGS_HEAD_MAX - LOGS_TAIL_MAX);
    CHECK(text && strstr(text, "THE FIRST 1 MiB AND THE LAST 7 MiB ARE KEPT"));
    CHECK(len < LOGS_HEAD_MAX + LOGS_TAIL_MAX + 200);
    free(text);
    free(line);
    pred_logs_free(&l);
}

static const test_case tests[] = {
    T(everything_is_kept_within_the_limits),
    T(empty_logs_are_an_empty_string),
    T(the_middle_is_dropped_and_counted),
    T(the_marker_starts_a_line_of_its_own),
    T(one_append_longer_than_both_limits),
    T(the_ring_wraps_in_order),
    T(cuts_fall_between_utf8_characters),
    T(real_limits_keep_one_and_seven_mib),
};

int main(void) { return run_tests("c-logs", tests, sizeof tests / sizeof tests[0]); }
