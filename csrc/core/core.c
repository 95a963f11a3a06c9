/* core/core.c: starting the core (the worker, the timers), the front doors it closes at
 * shutdown, the outgoing client, deliveries in progress, and admission of new predictions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "core/core.h"

#define TARGET "coglet::service"

int core_start(core *c, uv_loop_t *loop, const core_config *cfg) {
    c->loop = loop;
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
    if (!cfg->predictor_ref) {
        log_info(TARGET, "No predictor specified, serving health endpoints only");
        free(log_capture_take());
        return 0;
    }
    c->setup_started_ns = now_realtime_ns();
    c->setup_status = "starting";
    orchestrator_config oc = {
        .python = cfg->python,
        .forker = cfg->forker,
        .predictor_ref = cfg->predictor_ref,
        .num_slots = cfg->max_concurrency,
        .is_train = cfg->is_train,
        .setup_timeout = cfg->setup_timeout,
    };
    int rc = orchestrator_start(&c->orch, loop, &oc, &core_orchestrator_ops, c);
    c->orch_started = 1;
    if (rc) {
        char err[512];
        snprintf(err, sizeof err, "failed to spawn worker: spawner failed: failed to spawn process: %s (os error %d)",
                 strerror(-rc), -rc);
        core_setup_failed(c, err);
    }
    return 0;
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

admit_result core_admit(const core *c) {
    if (core_shutting_down(c))
        return ADMIT_SHUTTING_DOWN;
    if (c->health == HEALTH_DEFUNCT)
        return ADMIT_DEFUNCT;
    if (c->health != HEALTH_READY)
        return ADMIT_NOT_READY;
    if (orchestrator_free_slots(&c->orch) == 0)
        return ADMIT_BUSY;
    return ADMIT_OK;
}
