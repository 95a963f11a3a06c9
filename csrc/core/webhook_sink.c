/* core/webhook_sink.c: the webhook of one prediction as a sink. start/output/logs go out as
 * they happen (webhook.c throttles and never retries them); the terminal state is a
 * delivery the core tracks until webhook.c's retry series ends. */
#include "core/webhook_sink.h"

#include <stdlib.h>

#include "common/util.h"
#include "core/stats.h"
#include "core/trace.h"
#include "webhook/webhook.h"

typedef struct webhook_sink {
    sink super;
    delivery del;
    core *core;
    webhook *wh;
    trace_span *span; /* the terminal delivery, when tracing */
} webhook_sink;

/* A non-terminal delivery's span ends with its request. */
static void on_event_sent(void *ctx, int delivered) {
    trace_span *span = ctx;
    if (delivered <= 0)
        trace_span_error(span, delivered < 0 ? "aborted" : "not delivered");
    trace_span_end(span);
}

static void send_state(sink *s, prediction *p, unsigned event, const char *name) {
    webhook_sink *ws = container_of(s, webhook_sink, super);
    /* with tracing, each delivery is a client span, and the receiver's parent */
    trace_span *span = prediction_child_span(p, "webhook", SPAN_CLIENT);
    trace_span_str(span, "coglet.webhook.event", name);
    char tp[TRACEPARENT_LEN + 1];
    if (prediction_traceparent(p, span, tp) == 0)
        webhook_set_traceparent(ws->wh, tp);
    json_t *state = prediction_state_json(p, 0);
    if (!webhook_event(ws->wh, event, state, span ? on_event_sent : NULL, span))
        trace_span_discard(span); /* filtered or throttled: nothing was delivered */
    json_decref(state);
}

static void on_start(sink *s, prediction *p) { send_state(s, p, WEBHOOK_START, "start"); }

static void on_output(sink *s, prediction *p, const json_t *value, size_t index) {
    (void)value, (void)index;
    send_state(s, p, WEBHOOK_OUTPUT, "output");
}

static void on_log(sink *s, prediction *p, const json_t *data, const char *source) {
    (void)data, (void)source;
    send_state(s, p, WEBHOOK_LOGS, "logs");
}

static void on_delivered(void *ctx, webhook *wh) {
    /* webhook.c frees itself after this returns */
    webhook_sink *ws = ctx;
    if (!webhook_delivered(wh))
        trace_span_error(ws->span, "not delivered");
    trace_span_end(ws->span);
    core_delivery_end(ws->core, &ws->del);
    free(ws);
}

static void on_terminal(sink *s, prediction *p, const json_t *state) {
    webhook_sink *ws = container_of(s, webhook_sink, super);
    char tp[TRACEPARENT_LEN + 1];
    ws->span = prediction_child_span(p, "webhook", SPAN_CLIENT);
    trace_span_str(ws->span, "coglet.webhook.event", "completed");
    if (prediction_traceparent(p, ws->span, tp) == 0)
        webhook_set_traceparent(ws->wh, tp);
    core_delivery_begin(ws->core, &ws->del);
    webhook_completed(ws->wh, state, on_delivered, ws);
}

static void on_discard(sink *s, prediction *p) {
    (void)p;
    webhook_sink *ws = container_of(s, webhook_sink, super);
    webhook_free(ws->wh);
    free(ws);
}

static void abandon(delivery *d) {
    webhook_sink *ws = container_of(d, webhook_sink, del);
    stats_inc(STAT_WEBHOOKS_ABANDONED, "shutdown", NULL);
    trace_span_error(ws->span, "abandoned at shutdown");
    trace_span_end(ws->span);
    webhook_free(ws->wh); /* no done callback */
    free(ws);
}

static const sink_ops webhook_sink_ops = {
    .on_start = on_start,
    .on_output = on_output,
    .on_log = on_log,
    .on_terminal = on_terminal,
    .on_discard = on_discard,
};

static const delivery_ops webhook_delivery_ops = {.abandon = abandon};

sink *webhook_sink_new(core *c, const char *url, unsigned events, const char *traceparent, const char *tracestate) {
    if (core_client(c) != 0)
        return NULL;
    webhook_sink *ws = calloc(1, sizeof *ws);
    if (!ws)
        return NULL;
    ws->wh = webhook_new(&c->client, &c->webhook_settings, url, events, traceparent, tracestate);
    if (!ws->wh) {
        free(ws);
        return NULL;
    }
    ws->super.ops = &webhook_sink_ops;
    ws->del.ops = &webhook_delivery_ops;
    ws->core = c;
    return &ws->super;
}
