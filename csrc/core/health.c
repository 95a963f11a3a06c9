/* core/health.c: the health state and its JSON body, and the user's healthcheck run through
 * the worker — coalesced (one worker call answers every waiter queued before its result)
 * and bounded (10 s). docs/http-api.md ("Health") lists the states. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/build_info.h"
#include "common/log.h"
#include "common/util.h"
#include "core/core.h"

#define TARGET "coglet::health"
#define WAIT_LIMIT_MS 10000

/* The worker died, or lives on with every slot out of service: nothing can run again. */
int core_defunct(const core *c) {
    return c->health == HEALTH_DEFUNCT || (c->health == HEALTH_READY && orchestrator_usable_slots(&c->orch) == 0);
}

const char *core_worker_unresponsive(const core *c) {
    if (c->health == HEALTH_READY && orchestrator_worker_stopped(&c->orch))
        return "Worker process is stopped (SIGSTOP, SIGTSTP or a debugger): nothing runs until it is continued";
    return NULL;
}

/* unresponsive: core_worker_unresponsive(c), read once by the caller (it reads /proc) */
static const char *health_name(const core *c, const char *unresponsive) {
    if (core_defunct(c))
        return "DEFUNCT"; /* a user healthcheck result from before the crash means nothing now */
    if (c->user_healthcheck_error || unresponsive)
        return "UNHEALTHY";
    switch (c->health) {
    case HEALTH_UNKNOWN: return "UNKNOWN";
    case HEALTH_STARTING: return "STARTING";
    case HEALTH_READY: return core_has_room(c) ? "READY" : "BUSY"; /* BUSY: a create would get 409 */
    case HEALTH_SETUP_FAILED: return "SETUP_FAILED";
    case HEALTH_DEFUNCT: return "DEFUNCT";
    }
    return "UNKNOWN";
}

const char *core_health_name(const core *c) { return health_name(c, core_worker_unresponsive(c)); }

json_t *core_health_json(const core *c) {
    const char *why = core_worker_unresponsive(c);
    json_t *o = json_object();
    json_object_set_new(o, "status", json_string(health_name(c, why)));
    if (c->setup_status) {
        char ts[48];
        json_t *setup = json_object();
        format_rfc3339(c->setup_started_ns, ts, sizeof ts);
        json_object_set_new(setup, "started_at", json_string(ts));
        if (c->setup_completed_ns) {
            format_rfc3339(c->setup_completed_ns, ts, sizeof ts);
            json_object_set_new(setup, "completed_at", json_string(ts));
        }
        json_object_set_new(setup, "status", json_string(c->setup_status));
        if (c->setup_logs && *c->setup_logs)
            json_object_set_new(setup, "logs", json_string(c->setup_logs));
        json_object_set_new(o, "setup", setup);
    }
    json_t *v = json_object();
    char sha[80];
    snprintf(sha, sizeof sha, "%s%s", coglet_build.git_sha, coglet_build.git_dirty ? "-dirty" : "");
    json_object_set_new(v, "coglet", json_string(coglet_build.version));
    json_object_set_new(v, "git_sha", json_string(sha));
    json_object_set_new(v, "build_time", json_string(coglet_build.build_time));
    if (c->cfg.python_sdk_version)
        json_object_set_new(v, "python_sdk", json_string(c->cfg.python_sdk_version));
    if (c->cfg.python_version)
        json_object_set_new(v, "python", json_string(c->cfg.python_version));
    json_object_set_new(o, "version", v);
    if (why && !core_defunct(c))
        json_object_set_new(o, "user_healthcheck_error", json_string(why));
    else if (c->user_healthcheck_error)
        json_object_set_new(o, "user_healthcheck_error", json_string(c->user_healthcheck_error));
    return o;
}

/* ---- the user's healthcheck ---- */

static void waiter_closed(uv_handle_t *h) {
    health_waiter *w = h->data;
    w->release(w);
}

void core_health_unwait(health_waiter *w) {
    core *c = w->core;
    for (health_waiter **pp = &c->hc_waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    uv_timer_stop(&w->timer);
    w->timer.data = w;
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

static void waiter_answer(health_waiter *w) {
    core_health_unwait(w);
    w->answer(w);
}

static void answer_all(core *c) {
    while (c->hc_waiters)
        waiter_answer(c->hc_waiters);
}

static void waiter_timeout(uv_timer_t *t) {
    health_waiter *w = container_of(t, health_waiter, timer);
    core *c = w->core;
    free(c->user_healthcheck_error);
    c->user_healthcheck_error = strdup("healthcheck timed out");
    waiter_answer(w);
}

void health_on_result(core *c, json_t *msg) {
    const char *status = json_string_value(json_object_get(msg, "status"));
    const char *error = json_string_value(json_object_get(msg, "error"));
    free(c->user_healthcheck_error);
    c->user_healthcheck_error = NULL;
    if (!status || strcmp(status, "healthy")) {
        c->user_healthcheck_error = strdup(error ? error : "Healthcheck failed");
        log_warn(TARGET, "user healthcheck: %s", c->user_healthcheck_error);
    }
    c->hc_in_flight = 0;
    answer_all(c);
}

void health_fail_waiters(core *c, const char *error) {
    c->hc_in_flight = 0;
    if (error && c->hc_waiters) {
        free(c->user_healthcheck_error);
        c->user_healthcheck_error = strdup(error);
    }
    answer_all(c);
}

int core_health_wait(core *c, health_waiter *w) {
    if (c->health != HEALTH_READY || !c->user_healthcheck || core_shutting_down(c) || core_defunct(c) ||
        core_worker_unresponsive(c))
        return UV_ENOTSUP; /* the answer is known now: a stopped worker would only time out */
    w->core = c;
    uv_timer_init(c->loop, &w->timer);
    uv_timer_start(&w->timer, waiter_timeout, WAIT_LIMIT_MS, 0);
    w->next = c->hc_waiters;
    c->hc_waiters = w;
    if (!c->hc_in_flight) {
        char id[32];
        snprintf(id, sizeof id, "hc_%llu", ++c->hc_counter);
        json_t *m = json_pack("{s:s, s:s}", "type", "healthcheck", "id", id);
        int rc = orchestrator_send_control(&c->orch, m);
        json_decref(m);
        if (rc != 0) {
            char err[128];
            snprintf(err, sizeof err, "Failed to send: %s",
                     rc == UV_ENOBUFS ? "the worker is not reading its control channel" : uv_strerror(rc));
            health_fail_waiters(c, err);
            return 0;
        }
        c->hc_in_flight = 1;
    }
    return 0;
}
