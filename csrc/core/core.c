/* core/core.c: starting the core (the worker, the timers), the front doors it closes at
 * shutdown, the outgoing client, deliveries in progress, and admission of new predictions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/build_info.h"
#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"
#include "core/trace.h"

#define TARGET "coglet::service"

/* A non-negative number from the environment; fallback when unset, warned and fallback when
 * not a number. */
static double env_number(const char *name, double fallback) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= 0) || d > 1e9) {
        log_warn(TARGET, "Invalid %s value %s, using %g", name, v, fallback);
        return fallback;
    }
    return d;
}

static void read_operations_env(core *c) {
    c->predict_timeout = env_number("COG_PREDICT_TIMEOUT", 0);
    c->timeout_grace = env_number("COGLET_PREDICT_TIMEOUT_GRACE", 5);
    double depth = env_number("COG_QUEUE_DEPTH", 0);
    c->queue_depth = depth > 1000000 ? 1000000 : (int)depth;
}

void core_collect_stats(void *arg) {
    core *c = arg;
    int total = c->orch_started && c->orch.state == ORCH_READY ? c->cfg.max_concurrency : 0;
    int busy = 0;
    for (int i = 0; total && c->orch.slots && i < total; i++)
        busy += c->orch.slots[i].prediction != NULL || c->orch.slots[i].abandoned;
    stats_set(STAT_SLOTS_BUSY, busy, NULL, NULL);
    stats_set(STAT_SLOTS_TOTAL, total, NULL, NULL);
    stats_set(STAT_WAIT_QUEUE_DEPTH, c->num_waiting, NULL, NULL);
    stats_set(STAT_WAIT_QUEUE_CAPACITY, c->queue_depth, NULL, NULL);
    stats_set(STAT_PREDICTIONS_IN_FLIGHT, c->num_inflight, NULL, NULL);
}

int core_start(core *c, uv_loop_t *loop, const core_config *cfg) {
    c->loop = loop;
    read_operations_env(c);
    restart_read_env(c);
    stats_reset();
    char sha[80];
    snprintf(sha, sizeof sha, "%s%s", coglet_build.git_sha, coglet_build.git_dirty ? "-dirty" : "");
    stats_set(STAT_BUILD_INFO, 1, coglet_build.version, sha);
    stats_on_scrape(core_collect_stats, c);
    c->cfg = *cfg;
    if (!c->cfg.output_dir_base || !*c->cfg.output_dir_base)
        c->cfg.output_dir_base = "/tmp/coglet/predictions";
    c->health = cfg->predictor_ref ? HEALTH_STARTING : HEALTH_UNKNOWN;
    webhook_settings_from_env(&c->webhook_settings);
    const char *urb = getenv("COGLET_UPLOAD_RETRY_BASE");
    char *urb_end = NULL;
    c->upload_retry_base = urb && *urb ? strtod(urb, &urb_end) : 0.5;
    if (!(c->upload_retry_base >= 0) || (urb_end && *urb_end))
        c->upload_retry_base = 0.5;
    shutdown_init(c);
    c->tracer = tracer_from_env(c);
    if (!cfg->predictor_ref) {
        log_info(TARGET, "No predictor specified, serving health endpoints only");
        free(log_capture_take());
        return 0;
    }
    core_spawn_worker(c);
    return 0;
}

void core_spawn_worker(core *c) {
    c->setup_started_ns = now_realtime_ns();
    c->setup_completed_ns = 0;
    c->setup_status = "starting";
    orchestrator_config oc = {
        .python = c->cfg.python,
        .forker = c->cfg.forker,
        .predictor_ref = c->cfg.predictor_ref,
        .num_slots = c->cfg.max_concurrency,
        .is_train = c->cfg.is_train,
        .setup_timeout = c->cfg.setup_timeout,
    };
    int rc = orchestrator_start(&c->orch, c->loop, &oc, &core_orchestrator_ops, c);
    c->orch_started = 1;
    if (rc) {
        char err[512];
        snprintf(err, sizeof err, "failed to spawn worker: spawner failed: failed to spawn process: %s (os error %d)",
                 strerror(-rc), -rc);
        core_setup_failed(c, err);
    }
}

void core_add_door(core *c, front_door *door) {
    door->core = c;
    door->next = c->doors;
    c->doors = door;
}

void core_door_closed(core *c, front_door *door) {
    door->closed = 1;
    core_shutdown_check(c);
}

void core_notify_doors(core *c) {
    for (front_door *d = c->doors; d; d = d->next)
        if (d->ops->on_capacity && !d->closing)
            d->ops->on_capacity(d);
}

int core_client(core *c) {
    if (c->client_open)
        return 0;
    if (c->shutdown == SHUTDOWN_CLOSE || c->shutdown == SHUTDOWN_STOPPED)
        return UV_ECANCELED;
    if (http_client_init(&c->client, c->loop) != 0)
        return UV_ENOSYS;
    c->client_open = 1;
    return 0;
}

void core_delivery_begin(core *c, delivery *d) {
    d->prev = NULL;
    d->next = c->deliveries;
    if (c->deliveries)
        c->deliveries->prev = d;
    c->deliveries = d;
    c->num_deliveries++;
}

static void delivery_unlink(core *c, delivery *d) {
    if (d->prev)
        d->prev->next = d->next;
    else
        c->deliveries = d->next;
    if (d->next)
        d->next->prev = d->prev;
    d->next = d->prev = NULL;
    c->num_deliveries--;
}

void core_delivery_end(core *c, delivery *d) {
    delivery_unlink(c, d);
    core_shutdown_check(c);
}

void core_abandon_deliveries(core *c, const char *why) {
    while (c->deliveries) {
        delivery *d = c->deliveries;
        delivery_unlink(c, d);
        log_warn(TARGET, "shutdown: abandoning %s", why);
        d->ops->abandon(d);
    }
}

int core_has_room(const core *c) {
    /* waiting predictions take the free slots first; whoever is left over waits */
    return c->num_waiting < orchestrator_free_slots(&c->orch) + c->queue_depth;
}

admit_result core_admit(const core *c) {
    if (core_shutting_down(c))
        return ADMIT_SHUTTING_DOWN;
    if (core_defunct(c))
        return ADMIT_DEFUNCT;
    if (c->health != HEALTH_READY)
        return ADMIT_NOT_READY;
    if (!core_has_room(c))
        return ADMIT_BUSY;
    return ADMIT_OK;
}

/* ---- the wait queue (COG_QUEUE_DEPTH): arrival order; a freed slot goes to the head ---- */

void waitq_enqueue(core *c, prediction *p) {
    prediction_ref(p); /* the queue's */
    p->waiting = 1;
    p->wait_next = NULL;
    if (c->wait_tail)
        c->wait_tail->wait_next = p;
    else
        c->wait_head = p;
    c->wait_tail = p;
    c->num_waiting++;
}

void waitq_remove(core *c, prediction *p) {
    if (!p->waiting)
        return;
    prediction *prev = NULL;
    for (prediction *q = c->wait_head; q; prev = q, q = q->wait_next) {
        if (q != p)
            continue;
        if (prev)
            prev->wait_next = p->wait_next;
        else
            c->wait_head = p->wait_next;
        if (c->wait_tail == p)
            c->wait_tail = prev;
        break;
    }
    p->wait_next = NULL;
    p->waiting = 0;
    c->num_waiting--;
    prediction_unref(p);
}

/* Deferred to the next turn so that a slot freed while a prediction ends is handed on after
 * that ending is complete; new arrivals meanwhile line up behind (prediction_create). */
static void waitq_run(uv_idle_t *idle) {
    core *c = idle->data;
    uv_idle_stop(idle);
    while (c->wait_head && c->wait_head->started_dispatch) {
        slot *s = orchestrator_acquire_slot(&c->orch);
        if (!s)
            break;
        prediction *p = c->wait_head;
        c->wait_head = p->wait_next;
        if (!c->wait_head)
            c->wait_tail = NULL;
        p->wait_next = NULL;
        p->waiting = 0;
        c->num_waiting--;
        p->slot = s; /* the queue's reference becomes the slot's */
        s->prediction = p;
        dispatch_prediction(p);
    }
}

void waitq_schedule(core *c) {
    if (c->wait_head && !uv_is_closing((uv_handle_t *)&c->waitq_idle))
        uv_idle_start(&c->waitq_idle, waitq_run);
}

/* Every waiting prediction fails (the worker is gone for good). */
void waitq_fail_all(core *c, const char *error) {
    while (c->wait_head) {
        prediction *p = c->wait_head;
        prediction_ref(p);
        prediction_finish(p, PRED_FAILED, error);
        if (p->waiting) /* never loop on one that finish left in line */
            waitq_remove(c, p);
        prediction_unref(p);
    }
}
