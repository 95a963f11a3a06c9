/* core/stats.c: the metric table, their values (one series per combination of label values,
 * in a short list per metric: label sets are small and fixed), and the Prometheus text
 * exposition. Loop thread only. docs/operations.md ("Metrics") explains each row. */
#include "core/stats.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/util.h"

/* seconds: a fast model answers in milliseconds, a large one in minutes */
static const double duration_buckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,   2.5,
                                          5,     10,   30,    60,   120, 300,  600, 1800, 0};
static const double wait_buckets[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 0};
static const double setup_buckets[] = {0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 0};

static const stat_def defs[STAT__COUNT] = {
    [STAT_PREDICTIONS_STARTED] = {"coglet_predictions_started_total",
                                  "Predictions accepted by a front door (each ends once in finished_total).",
                                  STAT_COUNTER, {"door"}, NULL},
    [STAT_PREDICTIONS_FINISHED] = {"coglet_predictions_finished_total", "Predictions that reached a terminal status.",
                                   STAT_COUNTER, {"door", "status"}, NULL},
    [STAT_PREDICTIONS_REJECTED] = {"coglet_predictions_rejected_total",
                                   "Create requests refused (busy, not ready, defunct, shutting down).", STAT_COUNTER,
                                   {"door", "reason"}, NULL},
    [STAT_PREDICTIONS_TIMED_OUT] = {"coglet_predictions_timed_out_total",
                                    "Predictions stopped by their deadline (COG_PREDICT_TIMEOUT).", STAT_COUNTER,
                                    {"door"}, NULL},
    [STAT_PREDICTION_DURATION] = {"coglet_prediction_duration_seconds",
                                  "Time from a prediction's start on a slot to its terminal status.", STAT_HISTOGRAM,
                                  {"status"}, duration_buckets},
    [STAT_PREDICTION_WAIT] = {"coglet_prediction_wait_seconds",
                              "Time a prediction waited for a free slot before it started.", STAT_HISTOGRAM,
                              {NULL}, wait_buckets},
    [STAT_PREDICTIONS_IN_FLIGHT] = {"coglet_predictions_in_flight", "Accepted predictions not yet terminal.",
                                    STAT_GAUGE, {NULL}, NULL},
    [STAT_SETUP_DURATION] = {"coglet_setup_duration_seconds", "How long the predictor's setup took.",
                             STAT_HISTOGRAM, {"outcome"}, setup_buckets},
    [STAT_SLOTS_BUSY] = {"coglet_slots_busy", "Worker slots running a prediction.", STAT_GAUGE, {NULL}, NULL},
    [STAT_SLOTS_TOTAL] = {"coglet_slots_total", "Worker slots (COG_MAX_CONCURRENCY).", STAT_GAUGE, {NULL}, NULL},
    [STAT_WAIT_QUEUE_DEPTH] = {"coglet_wait_queue_depth", "Predictions waiting for a free slot.", STAT_GAUGE,
                               {NULL}, NULL},
    [STAT_WAIT_QUEUE_CAPACITY] = {"coglet_wait_queue_capacity", "How many predictions may wait (COG_QUEUE_DEPTH).",
                                  STAT_GAUGE, {NULL}, NULL},
    [STAT_WORKER_CRASHES] = {"coglet_worker_crashes_total", "Times the worker process died after setup.",
                             STAT_COUNTER, {NULL}, NULL},
    [STAT_WORKER_RESTARTS] = {"coglet_worker_restarts_total",
                              "Workers spawned again after a crash (COGLET_RESTART_WORKER).", STAT_COUNTER, {NULL},
                              NULL},
    [STAT_WEBHOOK_ATTEMPTS] = {"coglet_webhook_attempts_total", "Webhook requests sent, by event and outcome.",
                               STAT_COUNTER, {"event", "outcome"}, NULL},
    [STAT_WEBHOOKS_ABANDONED] = {"coglet_webhooks_abandoned_total",
                                 "Terminal webhooks given up on (retries exhausted, refused, or shutdown).",
                                 STAT_COUNTER, {"reason"}, NULL},
    [STAT_UPLOADS] = {"coglet_uploads_total", "Output file uploads, by outcome (each retry counts).", STAT_COUNTER,
                      {"outcome"}, NULL},
    [STAT_UPLOAD_BYTES] = {"coglet_upload_bytes_total", "Bytes of output files uploaded successfully.",
                           STAT_COUNTER, {NULL}, NULL},
    [STAT_HTTP_REQUESTS] = {"coglet_http_requests_total", "HTTP responses sent, by route and status class.",
                            STAT_COUNTER, {"route", "code"}, NULL},
    [STAT_HTTP_CONNECTIONS_OPEN] = {"coglet_http_connections_open", "Open HTTP connections.", STAT_GAUGE, {NULL},
                                    NULL},
    [STAT_HTTP_RECEIVED_BYTES] = {"coglet_http_received_bytes_total", "Bytes read from HTTP clients.",
                                  STAT_COUNTER, {NULL}, NULL},
    [STAT_HTTP_SENT_BYTES] = {"coglet_http_sent_bytes_total", "Bytes written to HTTP clients.", STAT_COUNTER,
                              {NULL}, NULL},
    [STAT_SPANS_EXPORTED] = {"coglet_trace_spans_exported_total", "Spans the OTLP endpoint accepted.",
                             STAT_COUNTER, {NULL}, NULL},
    [STAT_SPANS_DROPPED] = {"coglet_trace_spans_dropped_total",
                            "Spans dropped: the export failed or the buffer was full.", STAT_COUNTER, {NULL}, NULL},
    [STAT_BUILD_INFO] = {"coglet_build_info", "Always 1; the labels say what is running.", STAT_GAUGE,
                         {"version", "git_sha"}, NULL},
    [STAT_QUEUE_CLAIMS] = {"coglet_queue_claims_total", "Messages claimed from the input queue (pull mode).",
                           STAT_COUNTER, {"queue"}, NULL},
    [STAT_QUEUE_RECLAIMS] = {"coglet_queue_reclaims_total",
                             "Messages taken over from a consumer whose lease ran out (pull mode).", STAT_COUNTER,
                             {"queue"}, NULL},
    [STAT_QUEUE_ACKS] = {"coglet_queue_acks_total", "Messages acknowledged after their terminal response (pull mode).",
                         STAT_COUNTER, {"queue"}, NULL},
};

typedef struct series {
    struct series *next;
    char *labels[STATS_MAX_LABELS];
    double value;   /* counter, gauge; a histogram's sum */
    double count;   /* histogram */
    double *bucket; /* histogram: one count per bound (not cumulative) */
} series;

static series *values[STAT__COUNT];

typedef struct collector {
    void (*fn)(void *arg);
    void *arg;
} collector;
static collector collectors[8];

static int num_labels(const stat_def *d) {
    int n = 0;
    while (n < STATS_MAX_LABELS && d->labels[n])
        n++;
    return n;
}

static int num_buckets(const stat_def *d) {
    int n = 0;
    while (d->buckets && d->buckets[n] > 0)
        n++;
    return n;
}

static void series_free(series *s) {
    for (int i = 0; i < STATS_MAX_LABELS; i++)
        free(s->labels[i]);
    free(s->bucket);
    free(s);
}

/* The series for these label values, made on first use; NULL when memory ran out. */
static series *find_series(stat_id id, const char *l0, const char *l1) {
    const stat_def *d = &defs[id];
    const char *want[STATS_MAX_LABELS] = {l0 ? l0 : "", l1 ? l1 : ""};
    int n = num_labels(d);
    for (series *s = values[id]; s; s = s->next) {
        int same = 1;
        for (int i = 0; i < n && same; i++)
            same = !strcmp(s->labels[i], want[i]);
        if (same)
            return s;
    }
    series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (!(s->labels[i] = strdup(want[i]))) {
            series_free(s);
            return NULL;
        }
    }
    if (d->type == STAT_HISTOGRAM && !(s->bucket = calloc((size_t)num_buckets(d) + 1, sizeof *s->bucket))) {
        series_free(s);
        return NULL;
    }
    /* appended: the exposition keeps the order series were first seen */
    series **pp = &values[id];
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
    return s;
}

void stats_add(stat_id id, double v, const char *l0, const char *l1) {
    series *s = find_series(id, l0, l1);
    if (s)
        s->value += v;
}

void stats_set(stat_id id, double v, const char *l0, const char *l1) {
    series *s = find_series(id, l0, l1);
    if (s)
        s->value = v;
}

void stats_observe(stat_id id, double v, const char *l0, const char *l1) {
    series *s = find_series(id, l0, l1);
    if (!s || !s->bucket)
        return;
    const stat_def *d = &defs[id];
    int n = num_buckets(d), i = 0;
    while (i < n && v > d->buckets[i])
        i++;
    s->bucket[i]++; /* i == n: only +Inf */
    s->count++;
    s->value += v;
}

int stats_on_scrape(void (*fn)(void *arg), void *arg) {
    for (size_t i = 0; i < ARRAY_SIZE(collectors); i++) {
        if (!collectors[i].fn) {
            collectors[i] = (collector){fn, arg};
            return 0;
        }
    }
    return UV_ENOSPC;
}

void stats_off_scrape(void (*fn)(void *arg), void *arg) {
    for (size_t i = 0; i < ARRAY_SIZE(collectors); i++)
        if (collectors[i].fn == fn && collectors[i].arg == arg)
            collectors[i] = (collector){0};
}

void stats_reset(void) {
    for (int id = 0; id < STAT__COUNT; id++) {
        series *s = values[id], *next;
        for (; s; s = next) {
            next = s->next;
            series_free(s);
        }
        values[id] = NULL;
    }
}

/* ---- exposition ---- */

/* The shortest decimal that reads back as v; integers without a fraction. */
static void number_text(double v, char *text, size_t len) {
    if (isinf(v) || isnan(v)) {
        snprintf(text, len, "%s", isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(text, len, "%.*g", prec, v);
        if (strtod(text, NULL) == v)
            break;
    }
}

static int put_number(buf *out, double v) {
    char text[40];
    number_text(v, text, sizeof text);
    return buf_append_str(out, text);
}

/* A label value: backslash, double quote and newline escaped. */
static int put_label_value(buf *out, const char *v) {
    int rc = BUF_OK;
    for (; *v && rc == BUF_OK; v++) {
        if (*v == '\\')
            rc = buf_append_str(out, "\\\\");
        else if (*v == '"')
            rc = buf_append_str(out, "\\\"");
        else if (*v == '\n')
            rc = buf_append_str(out, "\\n");
        else
            rc = buf_append(out, v, 1);
    }
    return rc;
}

/* {a="x",b="y"} plus an optional le; nothing when there are no labels at all. */
static int put_labels(buf *out, const stat_def *d, const series *s, const char *le) {
    int n = num_labels(d);
    if (!n && !le)
        return BUF_OK;
    int rc = buf_append_str(out, "{");
    for (int i = 0; i < n; i++) {
        rc |= buf_printf(out, "%s%s=\"", i ? "," : "", d->labels[i]);
        rc |= put_label_value(out, s->labels[i]);
        rc |= buf_append_str(out, "\"");
    }
    if (le)
        rc |= buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
    rc |= buf_append_str(out, "}");
    return rc;
}

static int put_histogram(buf *out, const stat_def *d, const series *s) {
    int rc = BUF_OK, n = num_buckets(d);
    double cumulative = 0;
    for (int i = 0; i <= n; i++) {
        char le[40];
        cumulative += s->bucket[i];
        number_text(i < n ? d->buckets[i] : INFINITY, le, sizeof le);
        rc |= buf_printf(out, "%s_bucket", d->name);
        rc |= put_labels(out, d, s, le);
        rc |= buf_append_str(out, " ");
        rc |= put_number(out, cumulative);
        rc |= buf_append_str(out, "\n");
    }
    rc |= buf_printf(out, "%s_sum", d->name);
    rc |= put_labels(out, d, s, NULL);
    rc |= buf_append_str(out, " ");
    rc |= put_number(out, s->value);
    rc |= buf_printf(out, "\n%s_count", d->name);
    rc |= put_labels(out, d, s, NULL);
    rc |= buf_append_str(out, " ");
    rc |= put_number(out, s->count);
    rc |= buf_append_str(out, "\n");
    return rc;
}

int stats_write(buf *out) {
    static const char *type_names[] = {"counter", "gauge", "histogram"};
    for (size_t i = 0; i < ARRAY_SIZE(collectors); i++)
        if (collectors[i].fn)
            collectors[i].fn(collectors[i].arg);
    int rc = BUF_OK;
    for (int id = 0; id < STAT__COUNT && rc == BUF_OK; id++) {
        const stat_def *d = &defs[id];
        /* a metric without labels is always shown (0 until it moves); one with labels once
         * a combination has been seen */
        if (!values[id] && !num_labels(d))
            find_series((stat_id)id, NULL, NULL);
        rc |= buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", d->name, d->help, d->name, type_names[d->type]);
        for (series *s = values[id]; s && rc == BUF_OK; s = s->next) {
            if (d->type == STAT_HISTOGRAM) {
                rc |= put_histogram(out, d, s);
                continue;
            }
            rc |= buf_append_str(out, d->name);
            rc |= put_labels(out, d, s, NULL);
            rc |= buf_append_str(out, " ");
            rc |= put_number(out, s->value);
            rc |= buf_append_str(out, "\n");
        }
    }
    return rc == BUF_OK ? BUF_OK : BUF_NOMEM;
}
