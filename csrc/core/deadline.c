/* core/deadline.c: a prediction's time limit (COG_PREDICT_TIMEOUT for HTTP, the queue's
 * --predict-timeout). One timer per prediction with a limit, armed when it starts on its slot:
 * the first expiry cancels it in the worker and marks it timed out (prediction_finish turns
 * the canceled end into `failed: Prediction timed out`); the second, a grace period later,
 * ends it even though the worker never answered. docs/operations.md ("Prediction timeout"). */
#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::prediction"

struct deadline_timer {
    uv_timer_t timer;
    prediction *p; /* a reference, dropped when the timer has closed */
    int cancel_sent;
};

static void on_timer_closed(uv_handle_t *h) {
    struct deadline_timer *dt = container_of(h, struct deadline_timer, timer);
    prediction_unref(dt->p);
    free(dt);
}

void deadline_clear(prediction *p) {
    struct deadline_timer *dt = p->deadline;
    if (!dt)
        return;
    p->deadline = NULL;
    uv_timer_stop(&dt->timer);
    uv_close((uv_handle_t *)&dt->timer, on_timer_closed);
}

/* The worker never answered the cancel: the prediction ends now; the slot stays out of
 * service until the worker reports the run over (dispatch.c gives it back then). */
static void abandon(prediction *p) {
    core *c = p->core;
    log_event(LOG_WARN, TARGET, json_pack("{s:s}", "prediction_id", p->id),
              "the worker did not stop the prediction within %.1fs of its timeout; ending it, and its slot "
              "is out of service until the worker finishes it",
              c->timeout_grace);
    prediction_give_up(p, "Prediction timed out");
}

static void on_expired(uv_timer_t *t) {
    struct deadline_timer *dt = container_of(t, struct deadline_timer, timer);
    prediction *p = dt->p;
    if (prediction_is_terminal(p))
        return;
    if (dt->cancel_sent) {
        abandon(p);
        return;
    }
    dt->cancel_sent = 1;
    p->timed_out = 1;
    log_event(LOG_WARN, TARGET, json_pack("{s:s}", "prediction_id", p->id),
              "Prediction timed out after %gs; cancelling it", p->deadline_s);
    stats_inc(STAT_PREDICTIONS_TIMED_OUT, p->door, NULL);
    uv_timer_start(&dt->timer, on_expired, (uint64_t)(p->core->timeout_grace * 1000), 0);
    prediction_ref(p);
    prediction_cancel(p); /* may end p at once (only file outputs were left): the timer closes */
    prediction_unref(p);
}

void deadline_arm(prediction *p) {
    if (p->deadline || p->deadline_s <= 0 || prediction_is_terminal(p))
        return;
    struct deadline_timer *dt = calloc(1, sizeof *dt);
    if (!dt) {
        log_error(TARGET, "prediction %s: out of memory arming its timeout", p->id);
        return;
    }
    uv_timer_init(p->core->loop, &dt->timer);
    dt->p = p;
    prediction_ref(p);
    p->deadline = dt;
    uv_timer_start(&dt->timer, on_expired, (uint64_t)(p->deadline_s * 1000), 0);
}

void prediction_set_deadline(prediction *p, double seconds) {
    deadline_clear(p);
    p->deadline_s = seconds > 0 ? seconds : 0;
    if (p->slot && p->status == PRED_PROCESSING)
        deadline_arm(p); /* already running: counted from now */
}
