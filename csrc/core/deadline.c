/* core/deadline.c: a time limit on one prediction, counted from its start. On expiry the
 * worker is asked to cancel it (as a cancel request would), and the prediction ends `failed`
 * with "Prediction timed out" instead of `canceled`, keeping the outputs it had produced.
 * The queue door's --predict-timeout uses it; one timer per prediction that has a limit. */
#include <stdlib.h>

#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"

#define TARGET "coglet::prediction"

struct pred_deadline {
    uv_timer_t timer;
    prediction *p; /* a reference, dropped when the timer has closed */
};

static void on_closed(uv_handle_t *h) {
    pred_deadline *d = container_of((uv_timer_t *)h, pred_deadline, timer);
    prediction_unref(d->p);
    free(d);
}

static void on_expired(uv_timer_t *t) {
    pred_deadline *d = container_of(t, pred_deadline, timer);
    prediction *p = d->p;
    if (prediction_is_terminal(p))
        return;
    log_event(LOG_WARN, TARGET, json_pack("{s:s, s:f}", "prediction_id", p->id, "timeout", p->deadline_s),
              "prediction timed out; cancelling it");
    p->timed_out = 1;
    prediction_cancel(p);
}

static void arm(prediction *p) {
    if (p->deadline || p->deadline_s <= 0 || prediction_is_terminal(p))
        return;
    pred_deadline *d = calloc(1, sizeof *d);
    if (!d || uv_timer_init(p->core->loop, &d->timer) != 0) {
        free(d);
        log_error(TARGET, "prediction %s: cannot arm its time limit", p->id);
        return;
    }
    d->p = p;
    prediction_ref(p);
    p->deadline = d;
    uv_timer_start(&d->timer, on_expired, (uint64_t)(p->deadline_s * 1000), 0);
}

void prediction_set_deadline(prediction *p, double seconds) {
    p->deadline_s = seconds;
    if (p->started_dispatch)
        arm(p);
}

void deadline_on_start(prediction *p) {
    arm(p);
}

void deadline_clear(prediction *p) {
    pred_deadline *d = p->deadline;
    if (!d)
        return;
    p->deadline = NULL;
    uv_timer_stop(&d->timer);
    uv_close((uv_handle_t *)&d->timer, on_closed);
}
