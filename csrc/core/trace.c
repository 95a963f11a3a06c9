/* core/trace.c: spans, their OTLP/JSON shape, and the batching exporter. Ended spans wait in
 * a bounded queue; a timer (OTEL_BSP_SCHEDULE_DELAY) or a full batch sends them in one POST
 * through the core's libcurl client, one export at a time. A failed export or a full queue
 * drops spans and counts them (coglet_trace_spans_dropped_total); nothing here ever waits.
 * While spans are pending the tracer is a delivery, so shutdown gives them their last few
 * seconds like a terminal webhook. */
#include "core/trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/build_info.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/core.h"
#include "core/stats.h"

#define TARGET "coglet::trace"
#define EXPORT_TIMEOUT_MS 10000
#define MAX_HEADERS 16

struct tracer {
    core *core;
    char *url;
    char *headers[MAX_HEADERS + 2];
    char *service_name;
    long delay_ms;
    size_t queue_max, batch_max;
    json_t *pending; /* ended spans, oldest first */
    client_request *inflight;
    size_t inflight_n;
    uv_timer_t timer;
    int timer_running;
    delivery del;
    int in_delivery;
    int failures_logged;
};

struct trace_span {
    tracer *t;
    json_t *obj;
    json_t *attrs;
    trace_context ctx;
};

/* ---- W3C traceparent ---- */

static int hex_value(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_hex(const char *s, uint8_t *out, size_t n) {
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value(s[2 * i]), lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
        nonzero |= out[i];
    }
    return nonzero ? 0 : -1; /* all zeros is invalid */
}

int trace_parse_traceparent(const char *h, trace_context *out) {
    memset(out, 0, sizeof *out);
    if (!h)
        return UV_EINVAL;
    while (*h == ' ' || *h == '\t')
        h++;
    size_t n = strlen(h);
    while (n && (h[n - 1] == ' ' || h[n - 1] == '\t'))
        n--;
    /* version 00 is exactly 55 bytes; later versions may append fields after a dash */
    if (n < TRACEPARENT_LEN || (n > TRACEPARENT_LEN && h[TRACEPARENT_LEN] != '-') || h[2] != '-' || h[35] != '-' ||
        h[52] != '-' || hex_value(h[0]) < 0 || hex_value(h[1]) < 0 || !strncmp(h, "ff", 2) ||
        (n > TRACEPARENT_LEN && !strncmp(h, "00", 2)))
        return UV_EINVAL;
    if (parse_hex(h + 3, out->trace_id, 16) || parse_hex(h + 36, out->span_id, 8) || hex_value(h[53]) < 0 ||
        hex_value(h[54]) < 0) {
        memset(out, 0, sizeof *out);
        return UV_EINVAL;
    }
    out->valid = 1;
    return 0;
}

static void to_hex(const uint8_t *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void trace_format_traceparent(const trace_context *ctx, char *out) {
    char tid[33], sid[17];
    to_hex(ctx->trace_id, 16, tid);
    to_hex(ctx->span_id, 8, sid);
    snprintf(out, TRACEPARENT_LEN + 1, "00-%s-%s-01", tid, sid);
}

/* ---- spans ---- */

static void random_bytes(uint8_t *out, size_t n) {
    do {
        if (uv_random(NULL, NULL, out, n, 0, NULL) != 0)
            for (size_t i = 0; i < n; i++) /* no entropy source: still unique enough for ids */
                out[i] = (uint8_t)(now_realtime_ns() >> (8 * (i % 8))) ^ (uint8_t)rand();
    } while (n == 8 && !out[0] && !out[1] && !out[2] && !out[3] && !out[4] && !out[5] && !out[6] && !out[7]);
}

static json_t *nanos(uint64_t ns) {
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)ns); /* int64 as a string, as OTLP/JSON says */
    return json_string(text);
}

trace_span *trace_span_begin(tracer *t, const char *name, int kind, const trace_context *parent, uint64_t start_ns) {
    if (!t)
        return NULL;
    trace_span *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->t = t;
    if (parent && parent->valid)
        memcpy(s->ctx.trace_id, parent->trace_id, 16);
    else
        random_bytes(s->ctx.trace_id, 16);
    random_bytes(s->ctx.span_id, 8);
    s->ctx.valid = 1;
    char tid[33], sid[17], pid[17];
    to_hex(s->ctx.trace_id, 16, tid);
    to_hex(s->ctx.span_id, 8, sid);
    s->attrs = json_array();
    s->obj = json_pack("{s:s, s:s, s:s, s:i, s:o}", "traceId", tid, "spanId", sid, "name", name, "kind", kind,
                       "startTimeUnixNano", nanos(start_ns ? start_ns : now_realtime_ns()));
    if (!s->obj || !s->attrs) {
        json_decref(s->obj);
        json_decref(s->attrs);
        free(s);
        return NULL;
    }
    if (parent && parent->valid) {
        to_hex(parent->span_id, 8, pid);
        json_object_set_new(s->obj, "parentSpanId", json_string(pid));
    }
    return s;
}

void trace_span_context(const trace_span *s, trace_context *out) {
    if (s)
        *out = s->ctx;
    else
        memset(out, 0, sizeof *out);
}

void trace_span_str(trace_span *s, const char *key, const char *value) {
    if (s && value)
        json_array_append_new(s->attrs, json_pack("{s:s, s:{s:s}}", "key", key, "value", "stringValue", value));
}

void trace_span_int(trace_span *s, const char *key, long long value) {
    char text[24];
    snprintf(text, sizeof text, "%lld", value);
    if (s)
        json_array_append_new(s->attrs, json_pack("{s:s, s:{s:s}}", "key", key, "value", "intValue", text));
}

void trace_span_error(trace_span *s, const char *message) {
    if (s)
        json_object_set_new(s->obj, "status", json_pack("{s:i, s:s}", "code", 2, "message", message ? message : ""));
}

/* ---- the exporter ---- */

static void flush(tracer *t);

static void drop(tracer *t, size_t n, const char *why) {
    if (!n)
        return;
    stats_add(STAT_SPANS_DROPPED, (double)n, NULL, NULL);
    if (t->failures_logged++ < 3 || log_enabled(LOG_DEBUG, TARGET))
        log_warn(TARGET, "dropped %zu span(s): %s", n, why);
}

/* A delivery while anything is pending or in flight (shutdown waits for it, briefly). */
static void update_delivery(tracer *t) {
    int busy = t->inflight || json_array_size(t->pending) > 0;
    if (busy && !t->in_delivery) {
        t->in_delivery = 1;
        core_delivery_begin(t->core, &t->del);
    } else if (!busy && t->in_delivery) {
        t->in_delivery = 0;
        core_delivery_end(t->core, &t->del);
    }
}

static void on_timer(uv_timer_t *timer) {
    tracer *t = timer->data;
    t->timer_running = 0;
    flush(t);
    update_delivery(t);
}

void trace_span_discard(trace_span *s) {
    if (!s)
        return;
    json_decref(s->obj);
    json_decref(s->attrs);
    free(s);
}

void trace_span_end(trace_span *s) {
    if (!s)
        return;
    tracer *t = s->t;
    json_object_set_new(s->obj, "endTimeUnixNano", nanos(now_realtime_ns()));
    json_object_set_new(s->obj, "attributes", s->attrs);
    if (!json_object_get(s->obj, "status"))
        json_object_set_new(s->obj, "status", json_pack("{s:i}", "code", 0));
    if (json_array_size(t->pending) >= t->queue_max)
        drop(t, 1, "the export queue is full");
    else
        json_array_append(t->pending, s->obj);
    json_decref(s->obj);
    free(s);
    if (json_array_size(t->pending) >= t->batch_max)
        flush(t);
    else if (!t->timer_running && json_array_size(t->pending) > 0) {
        t->timer_running = 1;
        uv_timer_start(&t->timer, on_timer, (uint64_t)t->delay_ms, 0);
    }
    update_delivery(t);
}

static void on_exported(void *ctx, const client_result *res) {
    tracer *t = ctx;
    size_t n = t->inflight_n;
    t->inflight = NULL;
    t->inflight_n = 0;
    if (res->code == CURLE_OK && res->status >= 200 && res->status < 300) {
        stats_add(STAT_SPANS_EXPORTED, (double)n, NULL, NULL);
    } else {
        char why[320];
        if (res->code != CURLE_OK)
            snprintf(why, sizeof why, "export failed: %s", res->error ? res->error : "transport error");
        else
            snprintf(why, sizeof why, "export failed: HTTP %ld", res->status);
        drop(t, n, why);
    }
    if (json_array_size(t->pending) >= t->batch_max || (json_array_size(t->pending) > 0 && !t->timer_running))
        flush(t);
    update_delivery(t);
}

static json_t *resource_attrs(const tracer *t) {
    return json_pack("[{s:s, s:{s:s}}, {s:s, s:{s:s}}, {s:s, s:{s:s}}]", "key", "service.name", "value",
                     "stringValue", t->service_name, "key", "service.version", "value", "stringValue",
                     coglet_build.version, "key", "telemetry.sdk.name", "value", "stringValue", "coglet");
}

/* One POST with up to batch_max of the oldest spans. */
static void flush(tracer *t) {
    size_t n = json_array_size(t->pending);
    if (t->inflight || !n)
        return;
    core *c = t->core;
    if (n > t->batch_max)
        n = t->batch_max;
    json_t *spans = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append(spans, json_array_get(t->pending, i));
    for (size_t i = 0; i < n; i++)
        json_array_remove(t->pending, 0);
    if (c->shutdown == SHUTDOWN_CLOSE || c->shutdown == SHUTDOWN_STOPPED || core_client(c) != 0) {
        json_decref(spans);
        drop(t, n, "no HTTP client");
        return;
    }
    json_t *body = json_pack("{s:[{s:{s:o}, s:[{s:{s:s, s:s}, s:o}]}]}", "resourceSpans", "resource", "attributes",
                             resource_attrs(t), "scopeSpans", "scope", "name", "coglet", "version", coglet_build.version,
                             "spans", spans);
    char *text = body ? json_out_string(body, 0) : NULL;
    json_decref(body);
    if (!text) {
        drop(t, n, "out of memory");
        return;
    }
    client_request_opts opts = {
        .method = "POST",
        .url = t->url,
        .headers = (const char *const *)t->headers,
        .body = text,
        .body_len = strlen(text),
        .timeout_ms = EXPORT_TIMEOUT_MS,
    };
    t->inflight = http_client_start(&c->client, &opts, on_exported, t);
    free(text);
    if (!t->inflight)
        drop(t, n, "the request could not be started");
    else
        t->inflight_n = n;
}

static void abandon(delivery *d) {
    tracer *t = container_of(d, tracer, del);
    t->in_delivery = 0;
    if (t->inflight) {
        http_client_abort(&t->core->client, t->inflight);
        t->inflight = NULL;
        drop(t, t->inflight_n, "shutdown");
        t->inflight_n = 0;
    }
    drop(t, json_array_size(t->pending), "shutdown");
    json_array_clear(t->pending);
    uv_timer_stop(&t->timer);
    t->timer_running = 0;
}

static const delivery_ops tracer_delivery_ops = {.abandon = abandon};

/* ---- configuration ---- */

static char *percent_decoded(const char *s, size_t n) {
    char *out = malloc(n + 1);
    size_t o = 0;
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && hex_value(s[i + 1] | 0x20) >= 0 && hex_value(s[i + 2] | 0x20) >= 0) {
            out[o++] = (char)(hex_value(s[i + 1] | 0x20) << 4 | hex_value(s[i + 2] | 0x20));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

static char *trimmed(const char *s, size_t n) {
    while (n && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    return percent_decoded(s, n);
}

/* OTEL_EXPORTER_OTLP_HEADERS: "k1=v1,k2=v2", values percent-encoded. */
static void add_headers(tracer *t, int *nh, const char *spec) {
    while (spec && *spec && *nh < MAX_HEADERS + 1) {
        size_t len = strcspn(spec, ",");
        const char *eq = memchr(spec, '=', len);
        if (eq) {
            char *k = trimmed(spec, (size_t)(eq - spec)), *v = trimmed(eq + 1, len - (size_t)(eq - spec) - 1);
            char *h = NULL;
            if (k && v && *k && asprintf(&h, "%s: %s", k, v) >= 0)
                t->headers[(*nh)++] = h;
            free(k);
            free(v);
        }
        spec += len + (spec[len] == ',');
    }
}

static long env_long(const char *name, long fallback) {
    const char *v = getenv(name);
    char *end;
    long n = v && *v ? strtol(v, &end, 10) : fallback;
    return v && *v && (*end || n <= 0) ? fallback : n;
}

static char *endpoint_url(void) {
    const char *traces = getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    if (traces && *traces)
        return strdup(traces);
    const char *base = getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (!base || !*base)
        return NULL;
    char *url = NULL;
    size_t n = strlen(base);
    if (asprintf(&url, "%.*s/v1/traces", (int)(n && base[n - 1] == '/' ? n - 1 : n), base) < 0)
        return NULL;
    return url;
}

tracer *tracer_from_env(core *c) {
    const char *off = getenv("OTEL_SDK_DISABLED"), *exporter = getenv("OTEL_TRACES_EXPORTER");
    if ((off && !strcasecmp(off, "true")) || (exporter && !strcmp(exporter, "none")))
        return NULL;
    char *url = endpoint_url();
    if (!url)
        return NULL;
    tracer *t = calloc(1, sizeof *t);
    if (!t) {
        free(url);
        return NULL;
    }
    t->core = c;
    t->url = url;
    t->pending = json_array();
    const char *name = getenv("OTEL_SERVICE_NAME");
    t->service_name = strdup(name && *name ? name : "coglet");
    t->delay_ms = env_long("OTEL_BSP_SCHEDULE_DELAY", 1000);
    t->queue_max = (size_t)env_long("OTEL_BSP_MAX_QUEUE_SIZE", 2048);
    t->batch_max = (size_t)env_long("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512);
    int nh = 0;
    t->headers[nh++] = strdup("Content-Type: application/json");
    add_headers(t, &nh, getenv("OTEL_EXPORTER_OTLP_HEADERS"));
    add_headers(t, &nh, getenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS"));
    t->headers[nh] = NULL;
    t->del.ops = &tracer_delivery_ops;
    uv_timer_init(c->loop, &t->timer);
    t->timer.data = t;
    if (!t->pending || !t->service_name || !t->headers[0]) {
        tracer_free(t);
        return NULL;
    }
    log_event(LOG_INFO, TARGET, json_pack("{s:s, s:s}", "endpoint", t->url, "service_name", t->service_name),
              "Exporting traces with OTLP/HTTP (JSON)");
    return t;
}

static void on_tracer_closed(uv_handle_t *h) {
    tracer *t = h->data;
    for (int i = 0; t->headers[i]; i++)
        free(t->headers[i]);
    free(t->url);
    free(t->service_name);
    json_decref(t->pending);
    free(t);
}

void tracer_free(tracer *t) {
    if (!t)
        return;
    if (t->in_delivery) {
        core_delivery_end(t->core, &t->del);
        t->in_delivery = 0;
    }
    if (t->inflight && t->core->client_open)
        http_client_abort(&t->core->client, t->inflight);
    t->inflight = NULL;
    drop(t, json_array_size(t->pending), "shutdown");
    uv_timer_stop(&t->timer);
    uv_close((uv_handle_t *)&t->timer, on_tracer_closed);
}
