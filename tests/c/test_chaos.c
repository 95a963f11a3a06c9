/* tests/c/test_chaos.c: the JSON codec under allocation failure, as jansson's test_chaos.c
 * does it: each scenario runs once to learn its answer, then again with the N-th allocation
 * failing, for N = 1, 2, ... until a run makes fewer than N allocations (nothing was failed).
 * Every run must end cleanly: either an error, or exactly the answer of the undisturbed run;
 * and every allocation it made must be freed by the time it returns (counted here; under
 * SANITIZE=1 LeakSanitizer checks the same at exit).
 *
 * Allocations are intercepted in two places: jansson's own through json_set_alloc_funcs, ours
 * (json_in.c, json_out.c, bignum.c, buf.c, frame.c) through the linker: this binary is linked
 * with --wrap=malloc,calloc,realloc,free (tests/c/Makefile), so every call from the objects in
 * it reaches the __wrap_ functions below (this file's own calls too; __real_free bypasses). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runner.h"

#include "common/bignum.h"
#include "common/buf.h"
#include "common/json_in.h"
#include "common/json_out.h"
#include "ipc/frame.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);

static struct {
    int armed;      /* counting (and failing) only inside a scenario */
    long count;     /* allocations attempted in this run */
    long fail_at;   /* the one that fails (0: none) */
    long live;      /* allocations made and not yet freed */
} chaos;

static int should_fail(void) {
    if (!chaos.armed)
        return 0;
    return ++chaos.count == chaos.fail_at;
}

void *__wrap_malloc(size_t n) {
    if (should_fail())
        return NULL;
    void *p = __real_malloc(n);
    if (p && chaos.armed)
        chaos.live++;
    return p;
}

void *__wrap_calloc(size_t n, size_t size) {
    if (should_fail())
        return NULL;
    void *p = __real_calloc(n, size);
    if (p && chaos.armed)
        chaos.live++;
    return p;
}

void *__wrap_realloc(void *old, size_t n) {
    if (should_fail())
        return NULL;
    void *p = __real_realloc(old, n);
    if (p && !old && chaos.armed)
        chaos.live++;
    return p;
}

void __wrap_free(void *p) {
    if (p && chaos.armed)
        chaos.live--;
    __real_free(p);
}

/* jansson's allocator: the same counters */
static void *jansson_malloc(size_t n) { return __wrap_malloc(n); }
static void jansson_free(void *p) { __wrap_free(p); }

/* ---- scenarios: each returns a malloc'd description of its result, or NULL on failure ---- */

typedef char *(*scenario)(void);

/* A result as counted memory (through buf, so its allocations may fail too). */
__attribute__((format(printf, 1, 2))) static char *result(const char *fmt, ...) {
    buf b;
    buf_init(&b, 1 << 20);
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&b, fmt, ap);
    va_end(ap);
    char *out = rc ? NULL : buf_steal(&b);
    buf_free(&b);
    return out;
}

static const char doc[] =
    "{\"input\":{\"text\":\"h\\u00e9llo \\ud83d\\ude00 \\n\\t\\\"q\\\" \\\\ /\",\"n\":-42,\"x\":0.1,"
    "\"big\":123456789012345678901234567890,\"neg\":-1180591620717411303424,\"flags\":[true,false,null],"
    "\"nested\":[[[{\"a\":[1,2,{\"b\":\"c\"}]}]]],\"keys\":{\"z\":1,\"y\":2,\"x\":3,\"w\":4,\"v\":5,\"u\":6}},"
    "\"context\":{\"k\":\"v\",\"k2\":\"v2\"},\"webhook_events_filter\":[\"start\",\"completed\"],"
    "\"long\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}";

/* the reader with a member table and duplicate checks, then the encoder, sorted */
static char *parse_and_encode(void) {
    json_in_member members[3] = {{.key = "input"}, {.key = "context", .with_items = 1},
                                 {.key = "webhook_events_filter", .with_items = 1}};
    json_in_options opts = {.flags = JSON_IN_REJECT_DUPLICATES, .max_depth = JSON_IN_BODY_MAX_DEPTH,
                            .members = members, .num_members = 3};
    json_in_error err;
    json_t *v = json_in_parse_with(doc, sizeof doc - 1, &opts, &err);
    if (!v && err.code != JSON_IN_ENOMEM) {
        fprintf(stderr, "  parse failed other than for memory: %s\n", err.text);
        abort();
    }
    char *out = NULL;
    if (v) {
        char *text = json_out_string(v, JSON_OUT_SORTED);
        if (text)
            out = result("%s|%zu-%zu|%zu", text, members[0].start, members[0].end, members[1].num_items);
        free(text);
    }
    json_in_members_free(members, 3);
    json_decref(v);
    return out;
}

/* a string whose unescaping outgrows the reader's scratch buffer at an escape, and keys
 * that outgrow its key buffer */
static char *escapes(void) {
    chaos.armed = 0; /* the fixture is not under test */
    buf text;
    buf_init(&text, 1 << 20);
    buf_append_str(&text, "{\"");
    for (int i = 0; i < 150; i++)
        buf_append_str(&text, "k\\\"");
    buf_append_str(&text, "\":[\"");
    for (int i = 0; i < 200; i++)
        buf_append_str(&text, i % 3 ? "a\\n" : "\\u00e9\\t");
    buf_append_str(&text, "\",\"");
    for (int i = 0; i < 100; i++)
        buf_append_str(&text, "\\ud83d\\ude00\\/");
    buf_append_str(&text, "\"]}");
    chaos.armed = 1;
    json_in_error err;
    json_t *v = json_in_parse(text.data, text.len, &err);
    char *out = v ? json_out_string(v, 0) : NULL;
    json_decref(v);
    chaos.armed = 0;
    buf_free(&text);
    chaos.armed = 1;
    return out;
}

/* the encoder's pieces for a big body: referenced strings and owned text */
static char *segments(void) {
    json_t *v = json_in_parse(doc, sizeof doc - 1, NULL);
    if (!v)
        return NULL;
    json_segments sg;
    char *out = NULL;
    if (json_out_segments(v, 0, 32, &sg) == 0) {
        buf b;
        buf_init(&b, 1 << 20);
        int rc = 0;
        for (size_t i = 0; i < sg.n && !rc; i++)
            rc = buf_append(&b, sg.v[i].ptr, sg.v[i].len);
        out = rc ? NULL : buf_steal(&b);
        buf_free(&b);
        json_segments_free(&sg);
    }
    json_decref(v);
    return out;
}

/* frames: encode, then decode byte by byte */
static char *frames(void) {
    json_t *msg = json_in_parse(doc, sizeof doc - 1, NULL);
    if (!msg)
        return NULL;
    json_object_set_new(msg, "type", json_string("predict"));
    size_t len;
    char *wire = frame_encode_alloc(msg, &len);
    json_decref(msg);
    if (!wire)
        return NULL;
    frame_decoder d;
    frame_decoder_init(&d);
    json_t *got = NULL;
    char err[128];
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        if (frame_decoder_feed(&d, wire + i, 1) != BUF_OK)
            rc = -1;
        else
            rc = frame_decoder_next(&d, &got, err, sizeof err);
    }
    frame_decoder_free(&d);
    free(wire);
    char *out = rc == 1 ? json_out_string(got, JSON_OUT_SORTED) : NULL;
    json_decref(got);
    return out;
}

/* exact integers: sums, divisibility by a divisor beyond 64 bits, a bignum made from text */
static char *bignums(void) {
    json_t *a = bignum_from_text("-1180591620717411303424", 23);
    json_t *b = bignum_from_text("123456789012345678901234567890", 30);
    json_t *m = bignum_from_text("100000000000000000007", 21);
    json_t *x = bignum_from_text("300000000000000000021", 21);
    json_t *sum = a && b ? bignum_add(a, b) : NULL;
    int div = x && m ? bignum_divisible(x, m) : -1;
    char *s = sum ? json_out_string(sum, 0) : NULL;
    char *out = s && div >= 0 ? result("%s %d", s, div) : NULL;
    free(s);
    json_decref(a);
    json_decref(b);
    json_decref(m);
    json_decref(x);
    json_decref(sum);
    return out;
}

/* a file, as spill files are read */
static char *file(void) {
    char path[] = "/tmp/coglet-chaos-XXXXXX";
    chaos.armed = 0; /* the fixture is not under test */
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, doc, sizeof doc - 1) != (ssize_t)(sizeof doc - 1))
        abort();
    close(fd);
    chaos.armed = 1;
    json_in_error err;
    json_t *v = json_in_parse_file(path, &err);
    char *out = v ? json_out_string(v, 0) : NULL;
    json_decref(v);
    unlink(path);
    return out;
}

/* one scenario under every failure; returns how many runs it took */
static long run_chaos(const char *name, scenario fn) {
    int bad = 0;
    chaos = (typeof(chaos)){.armed = 1};
    char *want = fn();
    chaos.armed = 0;
    if (!want || chaos.live != 1) { /* the answer itself is the one allocation left */
        fprintf(stderr, "  %s: undisturbed run %s, %ld allocations left\n", name, want ? "ok" : "failed",
                chaos.live);
        bad++;
        __real_free(want);
        CHECK(bad == 0);
        return 0;
    }
    long n;
    for (n = 1;; n++) {
        chaos = (typeof(chaos)){.armed = 1, .fail_at = n};
        char *got = fn();
        chaos.armed = 0;
        long left = chaos.live - (got != NULL);
        if (left != 0) {
            fprintf(stderr, "  %s: allocation %ld failed: %ld allocations never freed\n", name, n, left);
            bad++;
        }
        if (got && strcmp(got, want)) {
            fprintf(stderr, "  %s: allocation %ld failed: a wrong answer\n    got  %s\n    want %s\n", name, n, got,
                    want);
            bad++;
        }
        int injected = chaos.count >= n;
        if (!injected && !got) {
            fprintf(stderr, "  %s: nothing failed in run %ld, and yet no answer\n", name, n);
            bad++;
        }
        __real_free(got);
        if (!injected)
            break;
    }
    __real_free(want);
    printf("     %s: %ld allocations, each failed once\n", name, n - 1);
    CHECK(bad == 0);
    return n;
}

TEST(reader_and_encoder_survive_every_failed_allocation) { run_chaos("parse+encode", parse_and_encode); }
TEST(escaped_strings_survive_every_failed_allocation) { run_chaos("escapes", escapes); }
TEST(segments_survive_every_failed_allocation) { run_chaos("segments", segments); }
TEST(frames_survive_every_failed_allocation) { run_chaos("frames", frames); }
TEST(bignums_survive_every_failed_allocation) { run_chaos("bignums", bignums); }
TEST(file_reading_survives_every_failed_allocation) { run_chaos("file", file); }

static const test_case tests[] = {
    T(reader_and_encoder_survive_every_failed_allocation),
    T(escaped_strings_survive_every_failed_allocation),
    T(segments_survive_every_failed_allocation),
    T(frames_survive_every_failed_allocation),
    T(bignums_survive_every_failed_allocation),
    T(file_reading_survives_every_failed_allocation),
};

int main(void) {
    json_set_alloc_funcs(jansson_malloc, jansson_free);
    return run_tests("c-chaos", tests, sizeof tests / sizeof tests[0]);
}
