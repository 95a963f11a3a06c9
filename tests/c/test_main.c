/* tests/c/test_main.c: unit tests for the plain-C layers, one behaviour per test. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runner.h"

#include "common/buf.h"
#include "common/json_out.h"
#include "common/util.h"
#include "ipc/frame.h"
#include "core/metrics.h"
#include "core/stats.h"
#include "queue/redis_url.h"

#include <uv.h>


TEST(buf_append_past_cap_fails_and_keeps_content) {
    buf b;
    buf_init(&b, 8);
    CHECK(buf_append(&b, "12345", 5) == BUF_OK);
    CHECK(buf_append(&b, "6789", 4) == BUF_TOO_LARGE);
    CHECK(b.len == 5 && !strcmp(b.data, "12345"));
    CHECK(buf_append(&b, "678", 3) == BUF_OK);
    CHECK(b.len == 8);
    buf_free(&b);
}

TEST(buf_consume_and_printf) {
    buf b;
    buf_init(&b, 1024);
    buf_printf(&b, "%s-%d", "abc", 42);
    CHECK(!strcmp(b.data, "abc-42"));
    buf_consume(&b, 4);
    CHECK(!strcmp(b.data, "42") && b.len == 2);
    char *s = buf_steal(&b);
    CHECK(!strcmp(s, "42") && b.data == NULL);
    free(s);
}

static void feed_frame(frame_decoder *d, const char *json) {
    size_t n = strlen(json);
    unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                          (unsigned char)n};
    frame_decoder_feed(d, (const char *)h, 4);
    frame_decoder_feed(d, json, n);
}

TEST(frame_roundtrip_byte_by_byte) {
    json_t *msg = json_pack("{s:s, s:s}", "type", "log", "data", "héllo\n");
    size_t len;
    char *wire = frame_encode_alloc(msg, &len);
    CHECK(wire != NULL);
    frame_decoder d;
    frame_decoder_init(&d);
    json_t *out = NULL;
    char err[128];
    int got = 0;
    for (size_t i = 0; i < len; i++) {
        frame_decoder_feed(&d, wire + i, 1);
        int rc = frame_decoder_next(&d, &out, err, sizeof err);
        if (i + 1 < len)
            CHECK(rc == 0);
        else
            got = rc;
    }
    CHECK(got == 1 && out && json_equal(out, msg));
    json_decref(out);
    json_decref(msg);
    free(wire);
    frame_decoder_free(&d);
}

TEST(frame_header_over_cap_fails_before_payload) {
    frame_decoder d;
    frame_decoder_init(&d);
    unsigned char h[4] = {0x00, 0x80, 0x00, 0x01}; /* 8 MiB + 1 */
    frame_decoder_feed(&d, (const char *)h, 4);
    json_t *out;
    char err[128];
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == -1);
    CHECK(strstr(err, "exceeds") != NULL);
    frame_decoder_free(&d);
}

TEST(frame_rejects_untagged_and_bad_json) {
    frame_decoder d;
    json_t *out;
    char err[128];
    frame_decoder_init(&d);
    feed_frame(&d, "[1,2]");
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == -1);
    frame_decoder_free(&d);
    frame_decoder_init(&d);
    feed_frame(&d, "{\"type\":");
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == -1);
    frame_decoder_free(&d);
}

TEST(frame_two_messages_in_one_feed) {
    frame_decoder d;
    frame_decoder_init(&d);
    feed_frame(&d, "{\"type\":\"a\"}");
    feed_frame(&d, "{\"type\":\"b\"}");
    json_t *out;
    char err[128];
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == 1);
    CHECK(!strcmp(json_string_value(json_object_get(out, "type")), "a"));
    json_decref(out);
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == 1);
    CHECK(!strcmp(json_string_value(json_object_get(out, "type")), "b"));
    json_decref(out);
    CHECK(frame_decoder_next(&d, &out, err, sizeof err) == 0);
    frame_decoder_free(&d);
}

TEST(frame_encode_over_cap_fails) {
    size_t n = FRAME_MAX_PAYLOAD;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    json_t *msg = json_pack("{s:s, s:s}", "type", "x", "data", big);
    size_t len;
    CHECK(frame_encode_alloc(msg, &len) == NULL);
    json_decref(msg);
    free(big);
}

static json_t *merged(const char *steps) {
    /* steps: "name mode json;..." */
    json_t *m = json_object();
    char *copy = strdup(steps), *save = NULL;
    for (char *s = strtok_r(copy, ";", &save); s; s = strtok_r(NULL, ";", &save)) {
        char name[64], mode[16];
        int off = 0;
        sscanf(s, "%63s %15s %n", name, mode, &off);
        json_t *v = json_loads(s + off, JSON_DECODE_ANY, NULL);
        metrics_merge(m, name, v, mode);
        json_decref(v);
    }
    free(copy);
    return m;
}

static int merged_is(const char *steps, const char *expect) {
    json_t *m = merged(steps), *e = json_loads(expect, 0, NULL);
    int ok = json_equal(m, e);
    if (!ok) {
        char *got = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
        fprintf(stderr, "  merge %s -> %s (want %s)\n", steps, got, expect);
        free(got);
    }
    json_decref(m);
    json_decref(e);
    return ok;
}

TEST(metrics_increment_append_replace_nested) {
    CHECK(merged_is("n increment 1;n increment 2", "{\"n\":3}"));
    CHECK(merged_is("n increment 1;n increment 0.5", "{\"n\":1.5}"));
    CHECK(merged_is("t append \"fast\";t append \"cached\"", "{\"t\":[\"fast\",\"cached\"]}"));
    CHECK(merged_is("t replace 1;t append 2", "{\"t\":[1,2]}"));
    CHECK(merged_is("timing.pre replace 0.5", "{\"timing\":{\"pre\":0.5}}"));
    CHECK(merged_is("timing.pre replace 0.5;timing.pre replace null", "{\"timing\":{}}"));
    CHECK(merged_is("a replace 1;a.b replace 2", "{\"a\":{\"b\":2}}"));
    CHECK(merged_is("s replace \"x\";s increment 1", "{\"s\":\"x\"}"));
    CHECK(merged_is(".bad replace 1;bad. replace 1;a..b replace 1", "{}"));
}

TEST(rfc3339_uses_fewest_fraction_digits) {
    char out[48];
    format_rfc3339(1767225600000000000ull, out, sizeof out);
    CHECK(!strcmp(out, "2026-01-01T00:00:00+00:00"));
    format_rfc3339(1767225600123000000ull, out, sizeof out);
    CHECK(!strcmp(out, "2026-01-01T00:00:00.123+00:00"));
    format_rfc3339(1767225600123456000ull, out, sizeof out);
    CHECK(!strcmp(out, "2026-01-01T00:00:00.123456+00:00"));
    format_rfc3339(1767225600123456789ull, out, sizeof out);
    CHECK(!strcmp(out, "2026-01-01T00:00:00.123456789+00:00"));
}

static int encodes_as(const char *in, const char *want) {
    json_t *v = json_loads(in, JSON_DECODE_ANY, NULL);
    char *got = json_out_string(v, JSON_OUT_SORTED);
    int ok = got && !strcmp(got, want);
    if (!ok)
        fprintf(stderr, "  encode %s -> %s (want %s)\n", in, got ? got : "(null)", want);
    free(got);
    json_decref(v);
    return ok;
}

TEST(json_out_shortest_reals_sorted_keys_escapes) {
    CHECK(encodes_as("0.1", "0.1"));
    CHECK(encodes_as("1.0", "1.0"));
    CHECK(encodes_as("1e300", "1e+300"));
    CHECK(encodes_as("1e15", "1000000000000000.0"));
    CHECK(encodes_as("1e16", "1e+16"));
    CHECK(encodes_as("0.0001", "0.0001"));
    CHECK(encodes_as("0.00001", "1e-05"));
    CHECK(encodes_as("-2.5e-7", "-2.5e-07"));
    CHECK(encodes_as("123.456", "123.456"));
    CHECK(encodes_as("0.0", "0.0"));
    CHECK(encodes_as("1.2345678901234568e+17", "1.2345678901234568e+17"));
    CHECK(encodes_as("0.30000000000000004", "0.30000000000000004"));
    CHECK(encodes_as("{\"b\":1,\"a\":[true,null,\"x\"]}", "{\"a\":[true,null,\"x\"],\"b\":1}"));
    CHECK(encodes_as("\"q\\\"\\\\\\n\\u0001é😀/\"", "\"q\\\"\\\\\\n\\u0001é😀/\""));
    char num[40];
    for (double d = 1e-300; d < 1e300; d *= 7.3) {
        json_out_real(num, sizeof num, d);
        CHECK(strtod(num, NULL) == d);
    }
}

TEST(json_string_adopt_takes_the_buffer) {
    char *text = strdup("data:text/plain;base64,aGk=");
    json_t *s = json_string_adopt(text, strlen(text));
    CHECK(s && json_string_value(s) == text); /* the same memory: no copy */
    CHECK(json_string_length(s) == strlen("data:text/plain;base64,aGk="));
    json_decref(s);                            /* and freed with the value */
}

TEST(json_segments_reference_big_strings) {
    size_t n = 5000;
    char *big = malloc(n + 1);
    memset(big, 'A', n);
    big[n] = '\0';
    json_t *v = json_pack("{s:s, s:[s, i], s:s}", "b", "small", "a", big, 1, "c", "q\"uote");
    json_segments sg;
    CHECK(json_out_segments(v, JSON_OUT_SORTED, 1000, &sg) == 0);
    char *whole = json_out_string(v, JSON_OUT_SORTED);
    size_t off = 0;
    int same = 1, referenced = 0;
    for (size_t i = 0; i < sg.n; i++) {
        same &= !memcmp(whole + off, sg.v[i].ptr, sg.v[i].len);
        off += sg.v[i].len;
        referenced += sg.v[i].ptr == json_string_value(json_array_get(json_object_get(v, "a"), 0));
    }
    CHECK(same && off == strlen(whole) && sg.total == off); /* concatenated: the same text */
    CHECK(referenced == 1);                                  /* the big string, in place */
    json_segments_free(&sg);
    free(whole);
    json_decref(v);
    free(big);
}

static void scrape_sets_gauge(void *arg) { stats_set(STAT_SLOTS_TOTAL, *(int *)arg, NULL, NULL); }

TEST(stats_exposition_counters_labels_histograms) {
    stats_reset();
    int slots = 3;
    CHECK(stats_on_scrape(scrape_sets_gauge, &slots) == 0);
    stats_inc(STAT_PREDICTIONS_STARTED, "http", NULL);
    stats_add(STAT_PREDICTIONS_STARTED, 2, "http", NULL);
    stats_inc(STAT_PREDICTIONS_FINISHED, "http", "succeeded");
    stats_inc(STAT_PREDICTIONS_REJECTED, "we\"ird\n", "busy");
    stats_observe(STAT_PREDICTION_DURATION, 0.02, "succeeded", NULL);
    stats_observe(STAT_PREDICTION_DURATION, 7200, "succeeded", NULL);
    buf out;
    buf_init(&out, 1 << 20);
    CHECK(stats_write(&out) == BUF_OK);
    const char *t = out.data;
    CHECK(strstr(t, "# TYPE coglet_predictions_started_total counter\n"));
    CHECK(strstr(t, "\ncoglet_predictions_started_total{door=\"http\"} 3\n"));
    CHECK(strstr(t, "\ncoglet_predictions_finished_total{door=\"http\",status=\"succeeded\"} 1\n"));
    CHECK(strstr(t, "{door=\"we\\\"ird\\n\",reason=\"busy\"} 1\n"));
    CHECK(strstr(t, "\ncoglet_slots_total 3\n"));       /* from the scrape collector */
    CHECK(strstr(t, "\ncoglet_worker_crashes_total 0\n")); /* unlabelled: shown at 0 */
    CHECK(!strstr(t, "coglet_webhook_attempts_total{")); /* labelled: only once seen */
    CHECK(strstr(t, "_bucket{status=\"succeeded\",le=\"0.01\"} 0\n"));
    CHECK(strstr(t, "_bucket{status=\"succeeded\",le=\"0.025\"} 1\n"));
    CHECK(strstr(t, "_bucket{status=\"succeeded\",le=\"1800\"} 1\n"));
    CHECK(strstr(t, "_bucket{status=\"succeeded\",le=\"+Inf\"} 2\n"));
    CHECK(strstr(t, "\ncoglet_prediction_duration_seconds_sum{status=\"succeeded\"} 7200.02\n"));
    CHECK(strstr(t, "\ncoglet_prediction_duration_seconds_count{status=\"succeeded\"} 2\n"));
    buf_free(&out);
    stats_off_scrape(scrape_sets_gauge, &slots);
    stats_reset();
}

TEST(redis_url_forms) {
    redis_url u;
    CHECK(redis_url_parse("redis://127.0.0.1:6380/2", &u) == 0);
    CHECK(!strcmp(u.host, "127.0.0.1") && u.port == 6380 && u.db == 2 && !u.user[0] && !u.password[0]);
    CHECK(redis_url_parse("redis://cache", &u) == 0 && !strcmp(u.host, "cache") && u.port == 6379 && u.db == 0);
    CHECK(redis_url_parse("redis://cache/", &u) == 0 && u.db == 0);
    CHECK(redis_url_parse("redis://:s3cret@cache:7000/1", &u) == 0);
    CHECK(!u.user[0] && !strcmp(u.password, "s3cret") && u.port == 7000 && u.db == 1);
    CHECK(redis_url_parse("redis://bob:p@ss@cache", &u) == 0 && !strcmp(u.user, "bob") && !strcmp(u.password, "p@ss"));
    CHECK(redis_url_parse("http://cache", &u) == UV_EINVAL);
    CHECK(redis_url_parse("redis://", &u) == UV_EINVAL);
    CHECK(redis_url_parse("redis://cache:0", &u) == UV_EINVAL);
    CHECK(redis_url_parse("redis://cache:70000", &u) == UV_EINVAL);
    CHECK(redis_url_parse("redis://cache/x", &u) == UV_EINVAL);
    CHECK(redis_url_parse("redis://cache:6379?x", &u) == UV_EINVAL);
}

static const test_case tests[] = {
    T(buf_append_past_cap_fails_and_keeps_content),
    T(buf_consume_and_printf),
    T(frame_roundtrip_byte_by_byte),
    T(frame_header_over_cap_fails_before_payload),
    T(frame_rejects_untagged_and_bad_json),
    T(frame_two_messages_in_one_feed),
    T(frame_encode_over_cap_fails),
    T(metrics_increment_append_replace_nested),
    T(rfc3339_uses_fewest_fraction_digits),
    T(json_out_shortest_reals_sorted_keys_escapes),
    T(json_string_adopt_takes_the_buffer),
    T(json_segments_reference_big_strings),
    T(stats_exposition_counters_labels_histograms),
    T(redis_url_forms),
};

int main(void) { return run_tests("c-unit", tests, sizeof tests / sizeof tests[0]); }
