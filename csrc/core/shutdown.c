/* core/shutdown.c: the shutdown sequence, one phase at a time. Accepted predictions end
 * (cancelled after the grace period, failed a few seconds after that), their terminal
 * deliveries get a few more seconds, then the doors close, the worker is told, libcurl and
 * the timers close, and the loop is left. docs/http-api.md ("Shutdown") has the guarantees. */
#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"
#include "core/trace.h"

#define TARGET "coglet::service"
#define CANCEL_LAND_MS 5000       /* after the grace period: time for cancels to land */
#define DELIVER_WAIT_MS 3000      /* after the last prediction: time for terminal deliveries */

static void on_timer_closed(uv_handle_t *h) {
    core *c = h->data;
    if (--c->timers_open == 0)
        core_shutdown_check(c);
}

void shutdown_init(core *c) {
    uv_timer_init(c->loop, &c->grace_timer);
    uv_timer_init(c->loop, &c->deliver_timer);
    uv_idle_init(c->loop, &c->waitq_idle);
    uv_timer_init(c->loop, &c->restart_timer);
    c->grace_timer.data = c->deliver_timer.data = c->waitq_idle.data = c->restart_timer.data = c;
    c->timers_open = 4;
}

int core_shutting_down(const core *c) { return c->shutdown != SHUTDOWN_NONE; }

static void cancel_one(prediction *p, void *arg) {
    (void)arg;
    prediction_cancel(p);
}

static void fail_one(prediction *p, void *arg) {
    (void)arg;
    prediction_ref(p);
    dispatch_unlink(p, SLOT_POISON); /* the worker may still be running it */
    outputs_abort(p->core, p);
    prediction_finish(p, PRED_FAILED, "server shut down before the prediction finished");
    prediction_unref(p);
}

/* Grace and cancels are over: fail what is left, drop deliveries, close. */
static void force_phase(core *c) {
    c->shutdown = SHUTDOWN_CLOSE;
    core_foreach_prediction(c, fail_one, NULL);
    core_abandon_deliveries(c, "a terminal webhook still being retried");
}

static void on_grace_timer(uv_timer_t *t) {
    core *c = t->data;
    if (c->shutdown == SHUTDOWN_DRAIN) {
        c->shutdown = SHUTDOWN_CANCEL;
        if (c->num_inflight > 0)
            log_warn(TARGET, "shutdown grace period over: cancelling %d running prediction(s)", c->num_inflight);
        core_foreach_prediction(c, cancel_one, NULL);
        uv_timer_start(&c->grace_timer, on_grace_timer, CANCEL_LAND_MS, 0);
    } else if (c->shutdown == SHUTDOWN_CANCEL) {
        force_phase(c);
    }
    core_shutdown_check(c);
}

static void on_deliver_timer(uv_timer_t *t) {
    core *c = t->data;
    if (c->shutdown == SHUTDOWN_DELIVER) {
        core_abandon_deliveries(c, "a terminal webhook not delivered in time");
        c->shutdown = SHUTDOWN_CLOSE;
    }
    core_shutdown_check(c);
}

static void stopped(core *c) {
    c->shutdown = SHUTDOWN_STOPPED;
    log_info(TARGET, "Server shutdown complete");
    stats_off_scrape(core_collect_stats, c);
    tracer_free(c->tracer);
    c->tracer = NULL;
    core_drop_schema(c);
    free(c->setup_logs);
    c->setup_logs = NULL;
    free(c->user_healthcheck_error);
    c->user_healthcheck_error = NULL;
    if (c->on_stopped)
        c->on_stopped(c);
}

static void on_orch_closed(orchestrator *orch) {
    core *c = container_of(orch, core, orch);
    c->orch_started = 0;
    core_shutdown_check(c);
}

static void on_client_closed(http_client *client) {
    core *c = container_of(client, core, client);
    c->client_open = 0;
    core_shutdown_check(c);
}

/* SHUTDOWN_CLOSE: the doors, then the worker, the client, the timers; 1 when all is closed. */
static int close_step(core *c) {
    int doors_open = 0;
    for (front_door *d = c->doors; d; d = d->next) {
        if (!d->closing) {
            d->closing = 1;
            d->ops->close(d, 0);
        }
        doors_open += !d->closed;
    }
    if (doors_open)
        return 0;
    if (c->orch_started) {
        if (!c->orch.closing)
            orchestrator_close(&c->orch, on_orch_closed);
        return 0;
    }
    if (c->client_open) {
        if (!c->client.closing)
            http_client_close(&c->client, on_client_closed);
        return 0;
    }
    if (c->timers_open > 0) {
        if (!uv_is_closing((uv_handle_t *)&c->grace_timer)) {
            uv_close((uv_handle_t *)&c->grace_timer, on_timer_closed);
            uv_close((uv_handle_t *)&c->deliver_timer, on_timer_closed);
            uv_close((uv_handle_t *)&c->waitq_idle, on_timer_closed);
            uv_close((uv_handle_t *)&c->restart_timer, on_timer_closed);
        }
        return 0;
    }
    return 1;
}

void core_shutdown_check(core *c) {
    switch (c->shutdown) {
    case SHUTDOWN_NONE:
    case SHUTDOWN_STOPPED:
        return;
    case SHUTDOWN_DRAIN:
    case SHUTDOWN_CANCEL:
        if (c->num_inflight > 0)
            return;
        if (c->num_deliveries == 0) {
            c->shutdown = SHUTDOWN_CLOSE;
            break;
        }
        /* Every prediction is over. Terminal deliveries keep their retry series for a few
         * more seconds, then are abandoned: a dead target never holds the process. */
        c->shutdown = SHUTDOWN_DELIVER;
        log_info(TARGET, "shutdown: waiting up to %.1fs for %d terminal webhook(s)", DELIVER_WAIT_MS / 1000.0,
                 c->num_deliveries);
        uv_timer_start(&c->deliver_timer, on_deliver_timer, DELIVER_WAIT_MS, 0);
        return;
    case SHUTDOWN_DELIVER:
        if (c->num_deliveries > 0)
            return;
        c->shutdown = SHUTDOWN_CLOSE;
        break;
    case SHUTDOWN_CLOSE:
        break;
    }
    if (close_step(c))
        stopped(c);
}

void core_begin_shutdown(core *c, const char *why) {
    if (c->shutdown != SHUTDOWN_NONE)
        return;
    c->shutdown = SHUTDOWN_DRAIN;
    if (why)
        log_info(TARGET, "%s", why);
    /* Idle connections go now, busy ones after their response; new predictions meanwhile
     * are refused (503). */
    for (front_door *d = c->doors; d; d = d->next)
        d->ops->shutdown_begin(d);
    if (c->num_inflight > 0 || c->num_deliveries > 0)
        log_event(LOG_INFO, TARGET,
                  json_pack("{s:i, s:i, s:f}", "in_flight", c->num_inflight, "webhooks", c->num_deliveries,
                            "grace_seconds", c->cfg.shutdown_grace),
                  "waiting for accepted predictions and their webhooks");
    uv_timer_start(&c->grace_timer, on_grace_timer, (uint64_t)(c->cfg.shutdown_grace * 1000), 0);
    core_shutdown_check(c);
}

void core_force_shutdown(core *c) {
    core_begin_shutdown(c, NULL);
    if (c->shutdown == SHUTDOWN_STOPPED)
        return;
    core_foreach_prediction(c, cancel_one, NULL);
    force_phase(c);
    for (front_door *d = c->doors; d; d = d->next) {
        if (!d->closed) {
            d->closing = 1;
            d->ops->close(d, 1);
        }
    }
    core_shutdown_check(c);
}
