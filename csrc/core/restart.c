/* core/restart.c: a new worker after the old one died (COGLET_RESTART_WORKER=1). The dead
 * worker's predictions have failed already (setup.c); here the old orchestrator is closed,
 * a backoff passes (doubling, capped), and a new worker is spawned and set up, health
 * STARTING until it is READY. Restarts in a row without a succeeded prediction are limited;
 * past the limit the server stays DEFUNCT (or SETUP_FAILED). docs/operations.md ("Worker
 * restart"). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::orchestrator"
#define BACKOFF_CAP_S 30.0

void restart_read_env(core *c) {
    const char *on = getenv("COGLET_RESTART_WORKER");
    c->restart_enabled = on && *on && strcmp(on, "0") && strcasecmp(on, "false");
    const char *max = getenv("COGLET_RESTART_MAX");
    char *end = NULL;
    long n = max && *max ? strtol(max, &end, 10) : 5;
    c->restart_max = (end && *end) || n < 0 ? 5 : (int)(n > 1000000 ? 1000000 : n);
    const char *base = getenv("COGLET_RESTART_BACKOFF");
    end = NULL;
    double b = base && *base ? strtod(base, &end) : 1.0;
    c->restart_backoff = (end && *end) || !(b >= 0) ? 1.0 : b;
}

static void on_old_worker_closed(orchestrator *orch) {
    core *c = container_of(orch, core, orch);
    c->orch_started = 0;
    if (core_shutting_down(c)) {
        c->restarting = 0;
        core_shutdown_check(c);
        return;
    }
    c->restart_streak++;
    stats_inc(STAT_WORKER_RESTARTS, NULL, NULL);
    log_event(LOG_INFO, TARGET, json_pack("{s:i, s:i}", "attempt", c->restart_streak, "limit", c->restart_max),
              "Restarting the worker");
    /* the new worker's setup is what /health-check shows from now on */
    free(c->setup_logs);
    c->setup_logs = NULL;
    free(c->user_healthcheck_error);
    c->user_healthcheck_error = NULL;
    free(log_capture_take());
    log_capture_begin();
    c->health = HEALTH_STARTING;
    core_spawn_worker(c);
}

static void on_backoff_over(uv_timer_t *t) {
    core *c = t->data;
    if (core_shutting_down(c) || !c->orch_started || c->orch.closing)
        return; /* shutdown closes the old worker itself */
    orchestrator_close(&c->orch, on_old_worker_closed);
}

/* 1 when a restart is on its way. */
static int schedule(core *c, const char *what) {
    if (!c->restart_enabled || core_shutting_down(c))
        return 0;
    if (c->restart_streak >= c->restart_max) {
        log_error(TARGET, "%s; not restarting the worker: %d restart(s) in a row without a succeeded prediction",
                  what, c->restart_streak);
        c->restarting = 0;
        return 0;
    }
    double delay = c->restart_backoff;
    for (int i = 0; i < c->restart_streak && delay < BACKOFF_CAP_S; i++)
        delay *= 2;
    if (delay > BACKOFF_CAP_S)
        delay = BACKOFF_CAP_S;
    log_warn(TARGET, "%s; restarting the worker in %.1fs", what, delay);
    c->restarting = 1;
    uv_timer_start(&c->restart_timer, on_backoff_over, (uint64_t)(delay * 1000), 0);
    return 1;
}

int restart_after_crash(core *c) {
    if (!schedule(c, "The worker died"))
        return 0;
    c->health = HEALTH_STARTING; /* not DEFUNCT: it is coming back */
    return 1;
}

int restart_after_setup_failure(core *c) {
    if (!c->restarting)
        return 0; /* the first setup failing is a setup failure, as ever */
    return schedule(c, "The restarted worker's setup failed");
}
