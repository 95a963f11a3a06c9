/* http/sse.c: server-sent events. Each prediction that streams has one hub, a sink of the
 * core: a replay ring (COG_STREAM_HISTORY_CAPACITY events; 0 disables replay), live fan-out
 * to subscribers, keep-alive comments, the lagged / truncated errors, and the cancel of an
 * SSE-created prediction when its last subscriber leaves. Each event is written to the
 * socket as it happens (uv_try_write; no buffering delay). docs/http-api.md ("Streaming"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "http/door.h"

#define TARGET "coglet::sse"
#define MAX_SUBSCRIBERS 1024
#define LAG_BYTES ((size_t)16 << 20) /* a subscriber this far behind is cut off */
#define KEEPALIVE_S 15.0

/* The most recent `cap` events, each a whole "event: ..\ndata: ..\n\n". */
typedef struct sse_event {
    char *text;
    size_t len;
} sse_event;

typedef struct event_ring {
    sse_event *events;
    size_t cap, start, count;
    unsigned long long evicted;
} event_ring;

typedef struct sse_sub {
    response super;
    sse_hub *hub;
    struct sse_sub *next;
    double last_write;
} sse_sub;

struct sse_hub {
    sink super;
    http_door *door;
    prediction *p;
    event_ring history;
    int record;            /* keep history for subscribers that join later */
    int owns_prediction;   /* created by an SSE request: cancelled when nobody listens */
    sse_sub *subs;
    int num_subs;
    int emitting;          /* inside emit's loop over subscribers */
    int cancel_after_emit;
    int ended;             /* terminal, or discarded: freed once no loop runs */
    sse_hub *next, *prev;  /* the door's list */
};

/* ---- the replay ring ---- */

static void ring_free(event_ring *ring) {
    for (size_t i = 0; i < ring->count; i++)
        free(ring->events[(ring->start + i) % ring->cap].text);
    free(ring->events);
    memset(ring, 0, sizeof *ring);
}

static void ring_push(event_ring *ring, const char *text, size_t len) {
    if (ring->cap == 0)
        return; /* replay disabled: nothing kept, and nothing counted as lost */
    if (!ring->events) {
        ring->events = calloc(ring->cap, sizeof *ring->events);
        if (!ring->events)
            return;
    }
    char *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, text, len);
    if (ring->count == ring->cap) {
        free(ring->events[ring->start].text);
        ring->start = (ring->start + 1) % ring->cap;
        ring->count--;
        ring->evicted++;
    }
    sse_event *e = &ring->events[(ring->start + ring->count) % ring->cap];
    e->text = copy;
    e->len = len;
    ring->count++;
}

static char *format_event(const char *event, const json_t *data, size_t *len) {
    buf b;
    buf_init(&b, (size_t)1 << 30);
    if (buf_printf(&b, "event: %s\ndata: ", event) || json_out_append(&b, data, JSON_OUT_SORTED) ||
        buf_append(&b, "\n\n", 2)) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return buf_steal(&b);
}

/* ---- hubs ---- */

static void hub_free_if_done(sse_hub *hub) {
    if (!hub->ended || hub->emitting || hub->subs)
        return;
    http_door *d = hub->door;
    if (hub->prev)
        hub->prev->next = hub->next;
    else
        d->hubs = hub->next;
    if (hub->next)
        hub->next->prev = hub->prev;
    ring_free(&hub->history);
    prediction_unref(hub->p);
    free(hub);
}

static void hub_cancel(sse_hub *hub) {
    if (!prediction_in_flight(hub->p))
        return;
    log_event(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", prediction_id(hub->p)),
              "last SSE subscriber left; cancelling prediction");
    prediction_cancel(hub->p);
}

/* Every entry point into a hub (a sink call, an abort, a subscribe, the keep-alive tick)
 * runs between hub_enter and hub_leave. A write inside may close a connection, which aborts
 * a subscriber, which may cancel the prediction, which may end it at once: so the cancel of
 * an orphaned SSE-created prediction and the hub's own free wait for the outermost leave. */
static void hub_enter(sse_hub *hub) { hub->emitting++; }

static void hub_leave(sse_hub *hub) {
    if (--hub->emitting > 0)
        return;
    if (hub->cancel_after_emit && !hub->ended) {
        hub->cancel_after_emit = 0;
        hub->emitting++;
        hub_cancel(hub);
        hub->emitting--;
    }
    hub_free_if_done(hub);
}

/* Nobody listens to an SSE-created prediction any more: it is cancelled at hub_leave. */
static void hub_check_orphaned(sse_hub *hub) {
    if (hub->owns_prediction && hub->num_subs == 0 && prediction_in_flight(hub->p))
        hub->cancel_after_emit = 1;
}

/* ---- subscribers ---- */

static void sub_detach(sse_sub *sub) {
    sse_hub *hub = sub->hub;
    for (sse_sub **pp = &hub->subs; *pp; pp = &(*pp)->next) {
        if (*pp == sub) {
            *pp = sub->next;
            hub->num_subs--;
            break;
        }
    }
}

static void sub_abort(response *res) {
    sse_sub *sub = container_of(res, sse_sub, super);
    sse_hub *hub = sub->hub;
    hub_enter(hub);
    sub_detach(sub);
    free(sub);
    hub_check_orphaned(hub);
    hub_leave(hub);
}

static const response_ops sse_ops = {.abort = sub_abort};

static void sub_end(sse_sub *sub) {
    http_conn *conn = sub->super.conn;
    sub_detach(sub);
    conn->app_data = NULL;
    free(sub);
    http_stream_end(conn);
}

/* Any write may find the peer gone and close the connection on the spot, which aborts and
 * frees the subscriber: after each one, check it is still ours. */
static int sub_alive(http_conn *conn, sse_sub *sub) { return !conn->closing && conn->app_data == &sub->super; }

static void sub_write(sse_sub *sub, const char *text, size_t len) {
    http_conn *conn = sub->super.conn;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > LAG_BYTES) {
        /* A reader this far behind is cut off. We count the bytes the socket has not taken
         * (the Rust coglet counts 1024 events), which bounds memory the same way. */
        static const char msg[] =
            "event: error\ndata: {\"error\":\"SSE stream lagged; events were dropped\",\"skipped\":1}\n\n";
        sse_hub *hub = sub->hub;
        http_stream_write(conn, msg, sizeof msg - 1);
        if (sub_alive(conn, sub))
            sub_end(sub);
        hub_check_orphaned(hub);
        return;
    }
    http_stream_write(conn, text, len);
    if (sub_alive(conn, sub))
        sub->last_write = now_monotonic();
}

/* Records and writes one event; called between hub_enter and hub_leave. */
static void emit(sse_hub *hub, const char *event, const json_t *data) {
    if (!hub->record && !hub->subs)
        return;
    size_t len;
    char *text = format_event(event, data, &len);
    if (!text)
        return;
    if (hub->record)
        ring_push(&hub->history, text, len);
    sse_sub *sub = hub->subs;
    while (sub) {
        sse_sub *next = sub->next; /* sub_write may free sub, never another */
        sub_write(sub, text, len);
        sub = next;
    }
    free(text);
}

/* One event from a sink call: the hub may be freed when this returns. */
static void emit_event(sse_hub *hub, const char *event, json_t *data) {
    hub_enter(hub);
    emit(hub, event, data);
    json_decref(data);
    hub_leave(hub);
}

/* ---- the hub as a sink ---- */

static sse_hub *hub_of(sink *s) { return container_of(s, sse_hub, super); }

static void on_start(sink *s, prediction *p) {
    emit_event(hub_of(s), "start", json_pack("{s:s, s:s}", "id", prediction_id(p), "status", "processing"));
}

static void on_output(sink *s, prediction *p, const json_t *value, size_t index) {
    (void)p;
    emit_event(hub_of(s), "output", json_pack("{s:O, s:I}", "chunk", value, "index", (json_int_t)index));
}

static void on_log(sink *s, prediction *p, const json_t *data, const char *source) {
    (void)p;
    emit_event(hub_of(s), "log", json_pack("{s:O, s:s}", "data", data, "source", source));
}

static void on_metric(sink *s, prediction *p, const char *mode, const char *name, const json_t *value) {
    (void)p;
    emit_event(hub_of(s), "metric", json_pack("{s:s, s:s, s:O}", "mode", mode, "name", name, "value", value));
}

static void on_terminal(sink *s, prediction *p, const json_t *state) {
    (void)p;
    sse_hub *hub = hub_of(s);
    hub_enter(hub);
    hub->ended = 1;
    hub->cancel_after_emit = 0;
    emit(hub, "completed", state);
    while (hub->subs)
        sub_end(hub->subs); /* `completed` ends every stream */
    hub_leave(hub);
}

static void on_discard(sink *s, prediction *p) {
    (void)p;
    sse_hub *hub = hub_of(s);
    hub_enter(hub);
    hub->ended = 1;
    while (hub->subs)
        sub_end(hub->subs);
    hub_leave(hub);
}

static const sink_ops sse_sink_ops = {
    .on_start = on_start,
    .on_output = on_output,
    .on_log = on_log,
    .on_metric = on_metric,
    .on_terminal = on_terminal,
    .on_discard = on_discard,
};

sse_hub *sse_hub_for(http_door *d, prediction *p, int record) {
    sink *s = prediction_find_sink(p, &sse_sink_ops);
    if (s)
        return hub_of(s);
    sse_hub *hub = calloc(1, sizeof *hub);
    if (!hub)
        return NULL;
    hub->super.ops = &sse_sink_ops;
    hub->door = d;
    hub->p = p;
    prediction_ref(p);
    hub->record = record;
    hub->history.cap = d->stream_history;
    hub->next = d->hubs;
    if (d->hubs)
        d->hubs->prev = hub;
    d->hubs = hub;
    prediction_attach(p, &hub->super);
    return hub;
}

void sse_hub_owns(sse_hub *hub) {
    hub->owns_prediction = 1;
    hub->record = 1;
}

int sse_hub_subscribers(const sse_hub *hub) { return hub->num_subs; }

int sse_subscribe(sse_hub *hub, http_conn *conn) {
    if (hub->num_subs >= MAX_SUBSCRIBERS) {
        http_respond_json(conn, 429, "{\"error\":\"Too many stream subscribers\"}");
        return 429;
    }
    sse_sub *sub = calloc(1, sizeof *sub);
    if (!sub) {
        http_respond_json(conn, 500, "{\"error\":\"Prediction stream unavailable\"}");
        return 500;
    }
    /* fully linked before the first write, so an abort during it finds a whole subscriber */
    sub->super.ops = &sse_ops;
    sub->super.conn = conn;
    sub->hub = hub;
    conn->app_data = &sub->super;
    sub->last_write = now_monotonic();
    sub->next = hub->subs;
    hub->subs = sub;
    hub->num_subs++;
    hub_enter(hub); /* an abort during the writes must not free the hub under us */
    http_stream_begin(conn, 200, "text/event-stream", "cache-control: no-cache\r\n");
    event_ring *ring = &hub->history;
    if (sub_alive(conn, sub) && ring->evicted) {
        char msg[200];
        int n = snprintf(msg, sizeof msg,
                         "event: error\ndata: {\"error\":\"SSE stream replay truncated; events were dropped\","
                         "\"skipped\":%llu}\n\n",
                         ring->evicted);
        http_stream_write(conn, msg, (size_t)n);
        if (sub_alive(conn, sub))
            sub_end(sub);
    } else {
        for (size_t i = 0; i < ring->count && sub_alive(conn, sub); i++) {
            sse_event *e = &ring->events[(ring->start + i) % ring->cap];
            http_stream_write(conn, e->text, e->len);
        }
    }
    hub_check_orphaned(hub);
    hub_leave(hub);
    return 0;
}

void sse_keepalive_tick(http_door *d) {
    double now = now_monotonic();
    sse_hub *hub_next;
    for (sse_hub *hub = d->hubs; hub; hub = hub_next) {
        hub_next = hub->next; /* hub_leave may free hub, never another */
        hub_enter(hub);
        sse_sub *next;
        for (sse_sub *sub = hub->subs; sub; sub = next) {
            next = sub->next; /* a failed write frees sub */
            if (now - sub->last_write >= KEEPALIVE_S) {
                http_conn *conn = sub->super.conn;
                http_stream_write(conn, ": keep-alive\n\n", 14);
                if (sub_alive(conn, sub))
                    sub->last_write = now;
            }
        }
        hub_leave(hub);
    }
}
