/* core/trace.h: OpenTelemetry traces. Spans are made and ended on the loop; ended ones are
 * batched and exported with OTLP over HTTP (JSON encoding) through the core's libcurl
 * client, off the request path. Everything accepts a NULL tracer or span and then does
 * nothing, so call sites need no checks when tracing is off. docs/operations.md
 * ("Tracing") says what is exported and when. */
#ifndef COGLET_TRACE_H
#define COGLET_TRACE_H

#include <stdint.h>

typedef struct core core;
typedef struct tracer tracer;
typedef struct trace_span trace_span;

/* A W3C trace context: the trace and the span that is the parent of what comes next. */
typedef struct trace_context {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    int valid;
} trace_context;

enum { SPAN_INTERNAL = 1, SPAN_SERVER = 2, SPAN_CLIENT = 3 };

/* "00-<32 hex>-<16 hex>-<2 hex>": 0, or UV_EINVAL (then out->valid is 0). */
int trace_parse_traceparent(const char *header, trace_context *out);
/* out must hold TRACEPARENT_LEN + 1 bytes. */
#define TRACEPARENT_LEN 55
void trace_format_traceparent(const trace_context *ctx, char *out);

/* The tracer the environment asks for (OTEL_EXPORTER_OTLP_ENDPOINT or
 * OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), or NULL when tracing is off. */
tracer *tracer_from_env(core *c);
/* Exports nothing more; drops what is pending. Safe on NULL. */
void tracer_free(tracer *t);

/* A span, child of parent (a new trace when parent is NULL or invalid), starting at
 * start_ns (realtime; 0 = now). NULL when t is NULL or memory ran out. */
trace_span *trace_span_begin(tracer *t, const char *name, int kind, const trace_context *parent, uint64_t start_ns);
void trace_span_context(const trace_span *s, trace_context *out); /* out->valid 0 for NULL */
void trace_span_str(trace_span *s, const char *key, const char *value);
void trace_span_int(trace_span *s, const char *key, long long value);
void trace_span_error(trace_span *s, const char *message);
/* Ends the span now and queues it for export; s is freed. Safe on NULL. */
void trace_span_end(trace_span *s);
/* Frees a span that turned out to stand for nothing (it is not exported). Safe on NULL. */
void trace_span_discard(trace_span *s);

#endif
