/* http/health.c: GET /health-check. The body comes from the core (core/health.c); when the
 * predictor has a healthcheck, the connection waits for the worker's answer (at most 10 s). */
#include <stdlib.h>

#include "common/json_out.h"
#include "common/util.h"
#include "http/door.h"

typedef struct health_response {
    response super;
    health_waiter waiter;
} health_response;

/* typed object: fields in their declared order */
static void write_health(core *c, http_conn *conn) { respond_json_value(conn, 200, core_health_json(c), 0); }

static void waiter_answer(health_waiter *w) {
    health_response *hr = container_of(w, health_response, waiter);
    http_conn *conn = hr->super.conn;
    hr->super.conn = NULL;
    if (!conn)
        return;
    conn->app_data = NULL;
    write_health(w->core, conn);
}

static void waiter_release(health_waiter *w) { free(container_of(w, health_response, waiter)); }

static void health_abort(response *res) {
    health_response *hr = container_of(res, health_response, super);
    hr->super.conn = NULL;
    core_health_unwait(&hr->waiter);
}

static const response_ops health_ops = {.abort = health_abort};

void route_health(http_door *d, http_conn *conn) {
    health_response *hr = calloc(1, sizeof *hr);
    if (!hr) {
        write_health(d->core, conn);
        return;
    }
    hr->super.ops = &health_ops;
    hr->super.conn = conn;
    hr->waiter.answer = waiter_answer;
    hr->waiter.release = waiter_release;
    conn->app_data = &hr->super;
    if (core_health_wait(d->core, &hr->waiter) != 0) {
        conn->app_data = NULL;
        free(hr);
        write_health(d->core, conn);
    }
}
