/* service/health.c: GET /health-check (SPEC 3.12): the health state, the setup object,
 * version facts, and the user's healthcheck run through the worker — coalesced (one
 * worker call answers every waiter queued before its result) and bounded (10 s). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "service/service.h"

#define TARGET "coglet::health"
#define WAIT_LIMIT_MS 10000

typedef struct hc_waiter {
    response super;
    uv_timer_t timer;
    service *svc;
    struct hc_waiter *next;
} hc_waiter;

static const char *health_name(service *svc) {
    if (svc->health == HEALTH_DEFUNCT)
        return "DEFUNCT"; /* a user healthcheck result from before the crash means nothing now */
    if (svc->user_healthcheck_error)
        return "UNHEALTHY";
    switch (svc->health) {
    case HEALTH_UNKNOWN: return "UNKNOWN";
    case HEALTH_STARTING: return "STARTING";
    case HEALTH_READY: return orchestrator_free_slots(&svc->orch) == 0 ? "BUSY" : "READY";
    case HEALTH_SETUP_FAILED: return "SETUP_FAILED";
    case HEALTH_DEFUNCT: return "DEFUNCT";
    }
    return "UNKNOWN";
}

static void write_health(service *svc, http_conn *conn) {
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(health_name(svc)));
    if (svc->setup_status) {
        char ts[48];
        json_t *setup = json_object();
        format_rfc3339(svc->setup_started_ns, ts, sizeof ts);
        json_object_set_new(setup, "started_at", json_string(ts));
        if (svc->setup_completed_ns) {
            format_rfc3339(svc->setup_completed_ns, ts, sizeof ts);
            json_object_set_new(setup, "completed_at", json_string(ts));
        }
        json_object_set_new(setup, "status", json_string(svc->setup_status));
        if (svc->setup_logs && *svc->setup_logs)
            json_object_set_new(setup, "logs", json_string(svc->setup_logs));
        json_object_set_new(o, "setup", setup);
    }
    json_t *v = json_object();
    json_object_set_new(v, "coglet", json_string(COGLET_VERSION));
    json_object_set_new(v, "git_sha", json_string(COGLET_GIT_DIRTY ? COGLET_GIT_SHA "-dirty" : COGLET_GIT_SHA));
    json_object_set_new(v, "build_time", json_string(COGLET_BUILD_TIME));
    if (svc->cfg.python_sdk_version)
        json_object_set_new(v, "python_sdk", json_string(svc->cfg.python_sdk_version));
    if (svc->cfg.python_version)
        json_object_set_new(v, "python", json_string(svc->cfg.python_version));
    json_object_set_new(o, "version", v);
    if (svc->user_healthcheck_error)
        json_object_set_new(o, "user_healthcheck_error", json_string(svc->user_healthcheck_error));
    char *text = json_out_string(o, 0); /* typed object: field order */
    json_decref(o);
    if (text) {
        http_respond_json_owned(conn, 200, text);
    } else {
        http_respond_json(conn, 500, "{\"error\":\"failed to encode response\"}");
    }
}


static void waiter_closed(uv_handle_t *h) { free(h->data); }

static void waiter_unlink(hc_waiter *w) {
    service *svc = w->svc;
    for (hc_waiter **pp = (hc_waiter **)&svc->hc_waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    uv_timer_stop(&w->timer);
    w->timer.data = w;
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_answer(hc_waiter *w) {
    http_conn *conn = w->super.conn;
    conn->app_data = NULL;
    waiter_unlink(w);
    write_health(w->svc, conn);
}

static void waiter_abort(response *res) {
    waiter_unlink(container_of(res, hc_waiter, super));
}

static const response_ops waiter_ops = {.abort = waiter_abort};

static void waiter_timeout(uv_timer_t *t) {
    hc_waiter *w = container_of(t, hc_waiter, timer);
    service *svc = w->svc;
    free(svc->user_healthcheck_error);
    svc->user_healthcheck_error = strdup("healthcheck timed out");
    waiter_answer(w);
}

void health_on_result(service *svc, json_t *msg) {
    const char *status = json_string_value(json_object_get(msg, "status"));
    const char *error = json_string_value(json_object_get(msg, "error"));
    free(svc->user_healthcheck_error);
    svc->user_healthcheck_error = NULL;
    if (!status || strcmp(status, "healthy")) {
        svc->user_healthcheck_error = strdup(error ? error : "Healthcheck failed");
        log_warn(TARGET, "user healthcheck: %s", svc->user_healthcheck_error);
    }
    svc->hc_in_flight = 0;
    while (svc->hc_waiters)
        waiter_answer(svc->hc_waiters);
}

void health_fail_waiters(service *svc, const char *error) {
    svc->hc_in_flight = 0;
    if (error && svc->hc_waiters) {
        free(svc->user_healthcheck_error);
        svc->user_healthcheck_error = strdup(error);
    }
    while (svc->hc_waiters)
        waiter_answer(svc->hc_waiters);
}

void route_health(service *svc, http_conn *conn) {
    if (svc->health != HEALTH_READY || !svc->user_healthcheck || svc->shutting_down) {
        write_health(svc, conn);
        return;
    }
    hc_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        write_health(svc, conn);
        return;
    }
    w->super.ops = &waiter_ops;
    w->super.conn = conn;
    w->svc = svc;
    uv_timer_init(svc->loop, &w->timer);
    uv_timer_start(&w->timer, waiter_timeout, WAIT_LIMIT_MS, 0);
    w->next = svc->hc_waiters;
    svc->hc_waiters = w;
    conn->app_data = &w->super;
    if (!svc->hc_in_flight) {
        char id[32];
        snprintf(id, sizeof id, "hc_%llu", ++svc->hc_counter);
        json_t *m = json_pack("{s:s, s:s}", "type", "healthcheck", "id", id);
        int rc = orchestrator_send_control(&svc->orch, m);
        json_decref(m);
        if (rc != 0) {
            char err[128];
            snprintf(err, sizeof err, "Failed to send: %s", uv_strerror(rc));
            health_fail_waiters(svc, err);
            return;
        }
        svc->hc_in_flight = 1;
    }
}
