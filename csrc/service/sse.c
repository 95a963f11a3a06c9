/* service/sse.c: server-sent events (SPEC 3.9): a replay ring per prediction, live
 * fan-out to subscribers, keep-alive comments, lagged / truncated errors, and the cancel
 * of an SSE-created prediction when its last subscriber leaves. Each event is written to
 * the socket as it happens (uv_try_write; no buffering delay). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "service/service.h"

#define TARGET "coglet::sse"
#define MAX_SUBSCRIBERS 1024
#define LAG_BYTES ((size_t)16 << 20) /* a subscriber this far behind is cut off */
#define KEEPALIVE_S 15.0

void sse_ring_init(event_ring *ring, size_t cap) {
    memset(ring, 0, sizeof *ring);
    ring->cap = cap;
}

void sse_ring_free(event_ring *ring) {
    for (size_t i = 0; i < ring->count; i++)
        free(ring->events[(ring->start + i) % ring->cap].text);
    free(ring->events);
    memset(ring, 0, sizeof *ring);
}

static void ring_push(event_ring *ring, const char *text, size_t len) {
    if (ring->cap == 0) {
        ring->evicted++;
        return;
    }
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

/* ---- subscribers ---- */

static void sub_detach(sse_sub *sub) {
    prediction *p = sub->super.p;
    for (sse_sub **pp = &p->subs; *pp; pp = &(*pp)->next) {
        if (*pp == sub) {
            *pp = sub->next;
            p->num_subs--;
            break;
        }
    }
}

static void sub_abort(response *res) {
    sse_sub *sub = container_of(res, sse_sub, super);
    prediction *p = res->p;
    sub_detach(sub);
    free(sub);
    /* an SSE-created prediction ends when nobody listens any more (SPEC 3.9); while an
     * event is being written to the subscribers the cancel waits for the loop to end */
    if (p->created_sse && p->num_subs == 0 && p->in_registry && p->emitting) {
        p->cancel_after_emit = 1;
    } else if (p->created_sse && p->num_subs == 0 && p->in_registry) {
        log_event(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", p->id),
                  "last SSE subscriber left; cancelling prediction");
        service_cancel(p->svc, p->id);
    }
    prediction_unref(p);
}

static const response_ops sse_ops = {.abort = sub_abort};

static void sub_end(sse_sub *sub) {
    prediction *p = sub->super.p;
    http_conn *conn = sub->super.conn;
    sub_detach(sub);
    conn->app_data = NULL;
    free(sub);
    http_stream_end(conn);
    prediction_unref(p);
}

/* Any write may find the peer gone and close the connection on the spot, which aborts and
 * frees the subscriber: after each one, check it is still ours. */
static int sub_alive(http_conn *conn, sse_sub *sub) { return !conn->closing && conn->app_data == &sub->super; }

static void sub_write(sse_sub *sub, const char *text, size_t len) {
    http_conn *conn = sub->super.conn;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > LAG_BYTES) {
        /* A reader this far behind is cut off (SPEC 3.9 counts 1024 events; we count the
         * bytes the socket has not taken, which bounds memory the same way). */
        char msg[160];
        int n = snprintf(msg, sizeof msg,
                         "event: error\ndata: {\"error\":\"SSE stream lagged; events were dropped\",\"skipped\":%d}\n\n",
                         1);
        prediction *p = sub->super.p;
        prediction_ref(p);
        http_stream_write(conn, msg, (size_t)n);
        if (sub_alive(conn, sub))
            sub_end(sub);
        if (p->created_sse && p->num_subs == 0 && p->in_registry)
            p->cancel_after_emit = 1; /* nobody is listening any more; cancelled after the loop */
        prediction_unref(p);
        return;
    }
    http_stream_write(conn, text, len);
    if (sub_alive(conn, sub))
        sub->last_write = now_monotonic();
}

void prediction_emit(prediction *p, const char *event, const json_t *data) {
    if (!p->record_events && !p->subs)
        return;
    size_t len;
    char *text = format_event(event, data, &len);
    if (!text)
        return;
    if (p->record_events)
        ring_push(&p->history, text, len);
    int terminal = !strcmp(event, "completed");
    prediction_ref(p);
    p->emitting++;
    sse_sub *sub = p->subs;
    while (sub) {
        sse_sub *next = sub->next; /* sub_write may free sub, never another */
        sub_write(sub, text, len);
        sub = next;
    }
    p->emitting--;
    if (terminal)
        sse_close_all(p);
    if (!p->emitting && p->cancel_after_emit) {
        p->cancel_after_emit = 0;
        if (p->in_registry) {
            log_event(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", p->id),
                      "last SSE subscriber left; cancelling prediction");
            service_cancel(p->svc, p->id);
        }
    }
    prediction_unref(p);
    free(text);
}

void sse_close_all(prediction *p) {
    while (p->subs)
        sub_end(p->subs);
}

int sse_subscribe(service *svc, prediction *p, http_conn *conn) {
    (void)svc;
    if (p->num_subs >= MAX_SUBSCRIBERS) {
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
    sub->super.p = p;
    prediction_ref(p);
    conn->app_data = &sub->super;
    sub->last_write = now_monotonic();
    sub->next = p->subs;
    p->subs = sub;
    p->num_subs++;
    http_stream_begin(conn, 200, "text/event-stream", "cache-control: no-cache\r\n");
    if (!sub_alive(conn, sub))
        return 0;
    event_ring *ring = &p->history;
    if (ring->evicted) {
        char msg[200];
        int n = snprintf(msg, sizeof msg,
                         "event: error\ndata: {\"error\":\"SSE stream replay truncated; events were dropped\","
                         "\"skipped\":%llu}\n\n",
                         ring->evicted);
        http_stream_write(conn, msg, (size_t)n);
        if (sub_alive(conn, sub))
            sub_end(sub);
        return 0;
    }
    for (size_t i = 0; i < ring->count && sub_alive(conn, sub); i++) {
        sse_event *e = &ring->events[(ring->start + i) % ring->cap];
        http_stream_write(conn, e->text, e->len);
    }
    return 0;
}

void sse_keepalive_tick(service *svc) {
    double now = now_monotonic();
    for (prediction *p = svc->registry; p; p = p->next) {
        sse_sub *next;
        for (sse_sub *sub = p->subs; sub; sub = next) {
            next = sub->next; /* a failed write frees sub */
            if (now - sub->last_write >= KEEPALIVE_S) {
                http_conn *conn = sub->super.conn;
                http_stream_write(conn, ": keep-alive\n\n", 14);
                if (sub_alive(conn, sub))
                    sub->last_write = now;
            }
        }
    }
}
