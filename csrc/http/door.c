/* http/door.c: the HTTP front door's lifetime (listen, drain, close at the core's word),
 * the SSE keep-alive timer, and JSON responses. Routing is in routes.c. */
#include "http/door.h"

#include <stdlib.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/stats.h"

#define KEEPALIVE_TICK_MS 5000

static void door_check_closed(http_door *d) {
    if (d->super.closing && !d->super.closed && d->server.num_conns == 0 && !d->server.listening && !d->timer_open)
        core_door_closed(d->core, &d->super);
}

static void on_drained(http_server *server) {
    http_door *d = server->app;
    door_check_closed(d);
}

static void on_timer_closed(uv_handle_t *h) {
    http_door *d = h->data;
    d->timer_open = 0;
    door_check_closed(d);
}

static void door_shutdown_begin(front_door *fd) {
    http_door *d = container_of(fd, http_door, super);
    d->server.on_drained = on_drained;
    /* idle keep-alive connections go now, busy ones after their response */
    http_server_close_idle(&d->server);
}

static void door_close(front_door *fd, int force) {
    http_door *d = container_of(fd, http_door, super);
    d->server.on_drained = on_drained;
    if (force) {
        http_server_close_all(&d->server);
    } else {
        http_server_stop_listening(&d->server);
        http_server_close_idle(&d->server);
    }
    if (d->timer_open && !uv_is_closing((uv_handle_t *)&d->keepalive_timer))
        uv_close((uv_handle_t *)&d->keepalive_timer, on_timer_closed);
    stats_off_scrape(door_collect_stats, d);
    door_check_closed(d);
}

static const front_door_ops http_door_ops = {
    .shutdown_begin = door_shutdown_begin,
    .close = door_close,
};

static void on_abort(http_conn *conn) {
    response *res = conn->app_data;
    conn->app_data = NULL;
    if (res)
        res->ops->abort(res);
}

static const http_app_ops door_http_ops = {
    .on_request = door_on_request,
    .on_abort = on_abort,
    .on_response = door_on_response,
};

static void on_keepalive(uv_timer_t *t) { sse_keepalive_tick(t->data); }

int http_door_start(http_door *d, core *c, uv_loop_t *loop, const char *host, int port, size_t stream_history) {
    d->core = c;
    d->stream_history = stream_history;
    d->super.ops = &http_door_ops;
    int rc = http_server_init(&d->server, loop, &door_http_ops, d);
    if (rc)
        return rc;
    rc = http_server_listen(&d->server, host, port, d->bound, sizeof d->bound);
    if (rc)
        return rc;
    log_info("coglet::transport::http::server", "Starting coglet server on %s", d->bound);
    uv_timer_init(loop, &d->keepalive_timer);
    d->keepalive_timer.data = d;
    d->timer_open = 1;
    uv_timer_start(&d->keepalive_timer, on_keepalive, KEEPALIVE_TICK_MS, KEEPALIVE_TICK_MS);
    uv_unref((uv_handle_t *)&d->keepalive_timer);
    core_add_door(c, &d->super);
    stats_on_scrape(door_collect_stats, d);
    return 0;
}

/* ---- JSON responses ---- */

#define SEGMENT_MIN ((size_t)1 << 20)

typedef struct segmented_body {
    json_t *body; /* keeps the referenced strings alive */
    json_segments segs;
} segmented_body;

static void segmented_body_release(void *ctx) {
    segmented_body *sb = ctx;
    json_segments_free(&sb->segs);
    json_decref(sb->body);
    free(sb);
}

/* A body of at least SEGMENT_MIN goes out in pieces that reference its big strings where
 * they are (a data-URL output is never copied into the body). 0 when sent. */
static int respond_segmented(http_conn *conn, int status, json_t *body) {
    segmented_body *sb = calloc(1, sizeof *sb);
    if (!sb)
        return -1;
    if (json_out_segments(body, JSON_OUT_SORTED, SEGMENT_MIN, &sb->segs) != BUF_OK) {
        json_segments_free(&sb->segs);
        free(sb);
        return -1;
    }
    const char **parts = malloc(sb->segs.n * sizeof *parts);
    size_t *lens = malloc(sb->segs.n * sizeof *lens);
    if (!parts || !lens) {
        free(parts);
        free(lens);
        json_segments_free(&sb->segs);
        free(sb);
        return -1;
    }
    for (size_t i = 0; i < sb->segs.n; i++) {
        parts[i] = sb->segs.v[i].ptr;
        lens[i] = sb->segs.v[i].len;
    }
    sb->body = body;
    http_respond_parts(conn, status, "application/json", parts, lens, (unsigned)sb->segs.n, segmented_body_release, sb);
    free(parts);
    free(lens);
    return 0;
}

void respond_json_body(http_conn *conn, int status, json_t *body) {
    if (json_out_size_hint(body) >= SEGMENT_MIN && respond_segmented(conn, status, body) == 0)
        return;
    respond_json_value(conn, status, body, JSON_OUT_SORTED);
}

void respond_json_value(http_conn *conn, int status, json_t *value, int flags) {
    char *text = json_out_string(value, flags);
    json_decref(value);
    if (text)
        http_respond_json_owned(conn, status, text);
    else
        http_respond_json(conn, 500, "{\"error\":\"failed to encode response\"}");
}
