/* core/prediction.c: the prediction object, its sinks, the registry of in-flight
 * predictions, and the terminal transition. docs/architecture.md ("The prediction core")
 * describes the lifecycle; docs/http-api.md the JSON shapes built here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/metrics.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::prediction"

const char *pred_status_name(pred_status s) {
    static const char *names[] = {"starting", "processing", "succeeded", "failed", "canceled"};
    return names[s];
}

static int is_terminal(pred_status s) { return s >= PRED_SUCCEEDED; }

const char *prediction_id(const prediction *p) { return p->id; }
const char *prediction_exception_message(const prediction *p) { return p->exc_message; }
const char *prediction_traceback(const prediction *p) { return p->traceback; }
pred_status prediction_status(const prediction *p) { return p->status; }
int prediction_is_terminal(const prediction *p) { return is_terminal(p->status); }
int prediction_in_flight(const prediction *p) { return p->in_registry; }
core *prediction_core(const prediction *p) { return p->core; }

/* ---- creation ---- */

/* pred_ + hex nanoseconds, strictly increasing within the process. */
static void generate_id(char *out, size_t outlen) {
    static uint64_t last;
    uint64_t ns = now_realtime_ns();
    if (ns <= last)
        ns = last + 1;
    last = ns;
    snprintf(out, outlen, "pred_%llx", (unsigned long long)ns);
}

static prediction *prediction_new(core *c, const char *id, int is_training) {
    prediction *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->refs = 1;
    p->core = c;
    p->id = strdup(id);
    p->is_training = is_training;
    p->outputs = json_array();
    p->metrics = json_object();
    p->context = json_object();
    pred_logs_init(&p->logs);
    p->created = p->started = now_monotonic();
    p->created_ns = now_realtime_ns();
    if (!p->id || !p->outputs || !p->metrics || !p->context) {
        prediction_unref(p);
        return NULL;
    }
    return p;
}

static const char *reject_reason(admit_result why) {
    switch (why) {
    case ADMIT_SHUTTING_DOWN: return "shutting_down";
    case ADMIT_DEFUNCT: return "defunct";
    case ADMIT_NOT_READY: return "not_ready";
    case ADMIT_BUSY: return "busy";
    case ADMIT_OK: break;
    }
    return "out_of_memory";
}

prediction *prediction_create(core *c, prediction_request *req, admit_result *why) {
    json_t *input = req->input;
    char *raw = req->input_raw;
    req->input = NULL;
    req->input_raw = NULL;
    *why = core_admit(c);
    /* a free slot goes to the first in line: with predictions waiting, a new one waits too */
    slot *s = *why == ADMIT_OK && c->num_waiting == 0 ? orchestrator_acquire_slot(&c->orch) : NULL;
    if (*why == ADMIT_OK && !s && c->queue_depth == 0)
        *why = ADMIT_BUSY;
    prediction *p = NULL;
    if (*why == ADMIT_OK) {
        char idbuf[64];
        const char *id = req->id;
        if (!id) {
            generate_id(idbuf, sizeof idbuf);
            id = idbuf;
        }
        p = prediction_new(c, id, req->is_training);
    }
    if (!p) {
        if (s)
            orchestrator_release_slot(&c->orch, s);
        json_decref(input);
        free(raw);
        stats_inc(STAT_PREDICTIONS_REJECTED, req->door ? req->door : "unknown", reject_reason(*why));
        return NULL;
    }
    p->door = req->door ? req->door : "unknown";
    trace_parse_traceparent(req->traceparent, &p->trace_parent);
    p->input = input ? input : json_object();
    p->input_raw = raw;
    p->input_raw_off = req->input_raw_off;
    p->input_raw_len = req->input_raw_len;
    if (json_is_object(req->context))
        json_object_update(p->context, (json_t *)req->context);
    if (!s) {
        waitq_enqueue(c, p); /* its place in line is held from here on */
        return p;
    }
    /* the slot is held for p from here on; dispatch links them */
    p->slot = s;
    s->prediction = p;
    prediction_ref(p); /* the slot's */
    core_notify_doors(c); /* one slot fewer for the other doors */
    return p;
}

void prediction_start(prediction *p) {
    if (p->started_dispatch)
        return;
    p->started_dispatch = 1;
    stats_inc(STAT_PREDICTIONS_STARTED, p->door, NULL);
    p->span = trace_span_begin(p->core->tracer, p->is_training ? "training" : "prediction", SPAN_SERVER,
                               &p->trace_parent, p->created_ns);
    trace_span_str(p->span, "coglet.prediction.id", p->id);
    trace_span_str(p->span, "coglet.door", p->door);
    if (p->waiting) {
        /* accepted: findable by id (cancel, PUT), counted by shutdown, run when a slot frees */
        core_register(p->core, p);
        waitq_schedule(p->core);
        return;
    }
    dispatch_prediction(p);
}

void prediction_discard(prediction *p) {
    if (!p->started_dispatch) {
        if (p->waiting)
            waitq_remove(p->core, p);
        dispatch_unlink(p, SLOT_RELEASE);
        sink *s = p->sinks, *next;
        p->sinks = NULL;
        for (; s; s = next) {
            next = s->next;
            s->next = NULL;
            if (s->ops->on_discard)
                s->ops->on_discard(s, p);
        }
    }
    prediction_unref(p);
}

void prediction_ref(prediction *p) { p->refs++; }

void prediction_unref(prediction *p) {
    if (--p->refs > 0)
        return;
    free(p->id);
    json_decref(p->input);
    json_decref(p->context);
    json_decref(p->outputs);
    json_decref(p->output);
    json_decref(p->metrics);
    pred_logs_free(&p->logs);
    free(p->error);
    free(p->exc_message);
    free(p->traceback);
    free(p->output_error);
    free(p->input_raw);
    free(p);
}

/* ---- sinks ---- */

void prediction_attach(prediction *p, sink *s) {
    s->next = NULL;
    sink **pp = &p->sinks;
    while (*pp)
        pp = &(*pp)->next;
    *pp = s;
}

void prediction_detach(prediction *p, sink *s) {
    for (sink **pp = &p->sinks; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            s->next = NULL;
            return;
        }
    }
}

sink *prediction_find_sink(const prediction *p, const sink_ops *ops) {
    for (sink *s = p->sinks; s; s = s->next)
        if (s->ops == ops)
            return s;
    return NULL;
}

/* Calls one op on every sink. A sink may detach itself, or end the prediction (a cancel that
 * finishes it at once): then the terminal calls have been made and the walk stops. */
#define EMIT(p, op, ...)                                                                                               \
    do {                                                                                                               \
        prediction_ref(p);                                                                                             \
        sink *s_, *next_;                                                                                              \
        for (s_ = (p)->sinks; s_ && !is_terminal((p)->status); s_ = next_) {                                           \
            next_ = s_->next;                                                                                          \
            if (s_->ops->op)                                                                                           \
                s_->ops->op(s_, (p), ##__VA_ARGS__);                                                                   \
        }                                                                                                              \
        prediction_unref(p);                                                                                           \
    } while (0)

void prediction_emit_start(prediction *p) { EMIT(p, on_start); }

void prediction_add_log(prediction *p, const json_t *data, const char *source) {
    const char *text = json_string_value(data);
    size_t len = json_string_length(data);
    if (!text || !len)
        return;
    size_t dropped = pred_logs_dropped(&p->logs);
    if (pred_logs_append(&p->logs, text, len) != 0)
        log_warn(TARGET, "prediction %s: out of memory keeping its logs; a line is dropped", p->id);
    else if (!dropped && pred_logs_dropped(&p->logs))
        log_event(LOG_WARN, TARGET, json_pack("{s:s}", "prediction_id", p->id),
                  "logs over %zu MiB: keeping the first %zu MiB and the last %zu MiB", (LOGS_HEAD_MAX + LOGS_TAIL_MAX) >> 20,
                  LOGS_HEAD_MAX >> 20, LOGS_TAIL_MAX >> 20);
    EMIT(p, on_log, data, source ? source : "stdout");
    char *line = strndup(text, text[len - 1] == '\n' ? len - 1 : len);
    if (line) {
        log_event_str(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", p->id), line);
        free(line);
    }
}

void prediction_add_metric(prediction *p, const char *mode, const char *name, const json_t *value) {
    EMIT(p, on_metric, mode ? mode : "replace", name ? name : "", value ? value : json_null());
    metrics_merge(p->metrics, name, (json_t *)value, mode);
}

static void output_arrived(prediction *p, const json_t *value, size_t index) { EMIT(p, on_output, value, index); }

void prediction_append_output(prediction *p, const json_t *value) {
    json_array_append(p->outputs, (json_t *)value);
    output_arrived(p, value, json_array_size(p->outputs) - 1);
}

size_t prediction_reserve_output(prediction *p) {
    json_array_append_new(p->outputs, json_null()); /* filled when its file settles */
    return json_array_size(p->outputs) - 1;
}

void prediction_place_output(prediction *p, size_t index, const json_t *value) {
    json_array_set(p->outputs, index, (json_t *)value);
    output_arrived(p, value, index);
}

/* ---- the JSON shapes (docs/http-api.md, "The prediction object") ---- */

static json_t *metrics_with_time(const prediction *p) {
    json_t *m = json_deep_copy(p->metrics);
    if (is_terminal(p->status))
        json_object_set_new(m, "predict_time", json_real(p->predict_time_s));
    return m;
}

static json_t *logs_json(const prediction *p) {
    size_t len;
    char *text = pred_logs_text(&p->logs, &len);
    return text ? json_string_adopt(text, len) : json_string("");
}

json_t *prediction_state_json(const prediction *p, int with_input) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    json_object_set_new(o, "status", json_string(pred_status_name(p->status)));
    json_object_set_new(o, "logs", logs_json(p));
    if (p->status == PRED_SUCCEEDED && p->output)
        json_object_set(o, "output", p->output);
    else if (json_array_size(p->outputs) > 0)
        json_object_set_new(o, "output", json_deep_copy(p->outputs));
    if (p->status == PRED_FAILED)
        json_object_set_new(o, "error", json_string(p->error ? p->error : ""));
    json_object_set_new(o, "metrics", metrics_with_time(p));
    if (with_input && p->input)
        json_object_set(o, "input", p->input);
    return o;
}

json_t *prediction_sync_json(const prediction *p) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    json_object_set_new(o, "status", json_string(pred_status_name(p->status)));
    json_object_set_new(o, "metrics", metrics_with_time(p));
    if (p->status == PRED_SUCCEEDED) {
        json_object_set_new(o, "logs", logs_json(p));
        json_object_set(o, "output", p->output ? p->output : json_null());
    } else {
        json_object_set_new(o, "logs", json_string(""));
        if (p->status == PRED_FAILED)
            json_object_set_new(o, "error", json_string(p->error ? p->error : ""));
        /* a timed-out prediction keeps what it had produced */
        if (p->timed_out && p->status == PRED_FAILED && json_array_size(p->outputs) > 0)
            json_object_set_new(o, "output", json_deep_copy(p->outputs));
    }
    return o;
}

/* ---- registry: at most one entry per slot, so a list is enough ---- */

prediction *core_find(core *c, const char *id) {
    for (prediction *p = c->registry; p; p = p->next)
        if (!strcmp(p->id, id))
            return p;
    return NULL;
}

static void core_unregister(core *c, prediction *p) {
    if (!p->in_registry)
        return;
    for (prediction **pp = &c->registry; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->next = NULL;
    p->in_registry = 0;
    c->num_inflight--;
    prediction_unref(p);
}

void core_register(core *c, prediction *p) {
    /* A create with an id already in flight replaces the old entry (docs/http-api.md,
     * "Ids"): the old one runs on, unreachable by id. */
    prediction *old = core_find(c, p->id);
    if (old)
        core_unregister(c, old);
    prediction_ref(p);
    p->in_registry = 1;
    p->next = c->registry;
    c->registry = p;
    c->num_inflight++;
}

void core_foreach_prediction(core *c, void (*fn)(prediction *p, void *arg), void *arg) {
    /* fn may end (and unregister) any prediction: walk a snapshot */
    int n = c->num_inflight, i = 0;
    if (n <= 0)
        return;
    prediction **all = calloc((size_t)n, sizeof *all);
    if (!all)
        return;
    for (prediction *p = c->registry; p && i < n; p = p->next) {
        prediction_ref(p);
        all[i++] = p;
    }
    for (int k = 0; k < i; k++) {
        fn(all[k], arg);
        prediction_unref(all[k]);
    }
    free(all);
}

/* ---- the end ---- */

static void final_output(prediction *p) {
    json_decref(p->output);
    size_t n = json_array_size(p->outputs);
    if (p->core->output_is_array || p->is_stream)
        p->output = json_incref(p->outputs);
    else if (n == 0)
        p->output = json_null();
    else if (n == 1)
        p->output = json_incref(json_array_get(p->outputs, 0));
    else
        p->output = json_incref(p->outputs);
}

void prediction_finish(prediction *p, pred_status status, const char *error) {
    if (is_terminal(p->status))
        return; /* a terminal status never changes */
    core *c = p->core;
    prediction_ref(p);
    if (p->waiting)
        waitq_remove(c, p);
    deadline_clear(p);
    if (p->timed_out && status == PRED_CANCELED) {
        /* the cancel was the deadline's */
        status = PRED_FAILED;
        error = "Prediction timed out";
    }
    p->status = status;
    p->predict_time_s = p->seq ? now_monotonic() - p->started : 0;
    stats_inc(STAT_PREDICTIONS_FINISHED, p->door, pred_status_name(status));
    if (p->seq)
        stats_observe(STAT_PREDICTION_DURATION, p->predict_time_s, pred_status_name(status), NULL);
    if (status == PRED_FAILED) {
        free(p->error);
        p->error = strdup(error ? error : "");
    }
    if (status == PRED_SUCCEEDED) {
        final_output(p);
        c->restart_streak = 0; /* the worker works: a later crash starts the restart count over */
    }
    /* failures are worth a line at the default level; the rest only when debugging */
    log_level level = status == PRED_FAILED ? LOG_WARN : LOG_DEBUG;
    if (log_enabled(level, TARGET)) {
        json_t *fields = json_pack("{s:s, s:s}", "prediction_id", p->id, "status", pred_status_name(status));
        if (status == PRED_FAILED)
            json_object_set_new(fields, "error", json_string(p->error ? p->error : ""));
        log_event(level, TARGET, fields, "Prediction %s", pred_status_name(status));
    }
    core_unregister(c, p);
    json_t *state = prediction_state_json(p, 0);
    sink *s = p->sinks, *next;
    p->sinks = NULL;
    for (; s; s = next) {
        next = s->next;
        s->next = NULL;
        if (s->ops->on_terminal)
            s->ops->on_terminal(s, p, state);
    }
    json_decref(state);
    trace_run_end(p);
    trace_span_str(p->span, "coglet.prediction.status", pred_status_name(status));
    if (status == PRED_FAILED)
        trace_span_error(p->span, p->error);
    trace_span_end(p->span);
    p->span = NULL;
    dispatch_remove_dir(p);
    prediction_unref(p);
    core_shutdown_check(c);
}

void prediction_maybe_done(prediction *p) {
    if (!p->done_pending || p->num_ops > 0 || is_terminal(p->status))
        return;
    if (p->output_error)
        prediction_finish(p, PRED_FAILED, p->output_error);
    else
        prediction_finish(p, PRED_SUCCEEDED, NULL);
}

/* ---- spans ---- */

void trace_run_begin(prediction *p) {
    tracer *t = p->core->tracer;
    if (!p->span)
        return;
    trace_context ctx;
    trace_span_context(p->span, &ctx);
    trace_span *wait = trace_span_begin(t, "wait for slot", SPAN_INTERNAL, &ctx, p->created_ns);
    trace_span_end(wait);
    p->run_span = trace_span_begin(t, "predict", SPAN_INTERNAL, &ctx, 0);
    trace_span_int(p->run_span, "coglet.slot", p->slot ? p->slot->index : -1);
}

void trace_run_end(prediction *p) {
    trace_span_end(p->run_span);
    p->run_span = NULL;
}

trace_span *prediction_child_span(prediction *p, const char *name, int kind) {
    if (!p->span)
        return NULL;
    trace_context ctx;
    trace_span_context(p->span, &ctx);
    trace_span *s = trace_span_begin(p->core->tracer, name, kind, &ctx, 0);
    trace_span_str(s, "coglet.prediction.id", p->id);
    return s;
}

int prediction_traceparent(const prediction *p, const trace_span *span, char *out) {
    trace_context ctx;
    trace_span_context(span ? span : p->span, &ctx);
    if (!ctx.valid)
        return UV_ENOENT;
    trace_format_traceparent(&ctx, out);
    return 0;
}

/* ---- cancel ---- */

/* The worker is not reading its control channel (stopped, or stuck): queueing more would
 * grow the parent without bound and the cancel might never land. The prediction fails now;
 * its slot, which may still be running it, is out of service until the worker finishes it. */
static void cancel_undeliverable(prediction *p) {
    core *c = p->core;
    char err[200];
    snprintf(err, sizeof err, "Cancel not delivered: the worker has not read the last %zu bytes sent on its control channel",
             orchestrator_control_unsent(&c->orch));
    log_event(LOG_ERROR, TARGET, json_pack("{s:s}", "prediction_id", p->id), "%s", err);
    prediction_give_up(p, err);
}

void prediction_give_up(prediction *p, const char *error) {
    prediction_ref(p);
    dispatch_abandon(p);
    outputs_abort(p->core, p);
    prediction_finish(p, PRED_FAILED, error);
    prediction_unref(p);
}

int prediction_cancel(prediction *p) {
    if (!p->in_registry)
        return UV_ENOENT;
    core *c = p->core;
    if (p->waiting) {
        /* it never ran: it leaves the line and ends here */
        prediction_ref(p);
        prediction_finish(p, PRED_CANCELED, NULL);
        prediction_unref(p);
        return 0;
    }
    if (p->done_pending) {
        /* the worker is done; only file outputs remain, and they stop here */
        prediction_ref(p);
        outputs_abort(c, p);
        prediction_finish(p, PRED_CANCELED, NULL);
        prediction_unref(p);
        return 0;
    }
    if (p->slot && p->started_dispatch) {
        /* seq names this dispatch: the worker applies a cancel that overtook its predict
         * frame when the frame arrives, and drops one for a prediction already over. */
        json_t *m = json_pack("{s:s, s:s, s:s, s:I}", "type", "cancel", "slot", p->slot->id, "id", p->id, "seq",
                              (json_int_t)p->seq);
        int rc = orchestrator_send_control(&c->orch, m);
        json_decref(m);
        if (rc == UV_ENOBUFS)
            cancel_undeliverable(p);
    }
    return 0;
}

int core_cancel(core *c, const char *id) {
    prediction *p = core_find(c, id);
    return p ? prediction_cancel(p) : UV_ENOENT;
}
