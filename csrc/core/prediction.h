/* core/prediction.h: one prediction (or training) and what listens to it. A front door
 * creates a prediction from a request, attaches its sinks, and starts it; the core runs it on
 * a worker slot and tells every sink what happens, ending with exactly one terminal call. */
#ifndef COGLET_PREDICTION_H
#define COGLET_PREDICTION_H

#include <jansson.h>
#include <stddef.h>

#include "core/core.h"

typedef enum { PRED_STARTING, PRED_PROCESSING, PRED_SUCCEEDED, PRED_FAILED, PRED_CANCELED } pred_status;

/* What listens to a prediction: the sync HTTP response, the SSE streams, the webhook. Any op
 * may be NULL. Calls come in the order sinks were attached. After on_terminal the sink is
 * detached and the core never touches it again; its memory is its own. */
typedef struct sink sink;
typedef struct sink_ops {
    void (*on_start)(sink *s, prediction *p);
    void (*on_output)(sink *s, prediction *p, const json_t *value, size_t index);
    void (*on_log)(sink *s, prediction *p, const json_t *data, const char *source);
    void (*on_metric)(sink *s, prediction *p, const char *mode, const char *name, const json_t *value);
    /* The terminal state: `state` is the full prediction object (borrowed). */
    void (*on_terminal)(sink *s, prediction *p, const json_t *state);
    /* The prediction was discarded before it started: no terminal call will come. */
    void (*on_discard)(sink *s, prediction *p);
} sink_ops;
struct sink {
    const sink_ops *ops;
    sink *next;
};

/* What a front door hands the core to make a prediction. */
typedef struct prediction_request {
    const char *id;        /* NULL: one is generated */
    int is_training;
    json_t *input;         /* validated input (taken; NULL means {}) */
    char *input_raw;       /* optional: a buffer holding the input as the client sent it (taken) */
    size_t input_raw_off, input_raw_len;
    const json_t *context; /* object str -> str, or NULL (borrowed) */
    const char *door;      /* the front door's label in metrics and traces ("http"); static */
    const char *traceparent; /* W3C trace context of the caller, or NULL (borrowed) */
} prediction_request;

/* Admits (core_admit), takes a slot and makes the prediction; it runs once started. With a
 * wait queue (COG_QUEUE_DEPTH) and no free slot it takes a place in the queue instead, and
 * runs, in arrival order, when a slot frees. NULL with *why set when it is not admitted
 * (ADMIT_BUSY: no free slot and no room to wait); on ADMIT_OK with NULL, memory ran out. The
 * request's owned fields are taken either way. */
prediction *prediction_create(core *c, prediction_request *req, admit_result *why);
/* Dispatches a created prediction to its slot: sinks get on_start, then the worker's events. */
void prediction_start(prediction *p);
/* Drops a created prediction that was never started; its slot goes back. */
void prediction_discard(prediction *p);

void prediction_ref(prediction *p);
void prediction_unref(prediction *p);

/* Sinks. attach appends; detach is for a sink that leaves before the end. */
void prediction_attach(prediction *p, sink *s);
void prediction_detach(prediction *p, sink *s);
/* The first attached sink with these ops, or NULL. */
sink *prediction_find_sink(const prediction *p, const sink_ops *ops);

/* Asks the worker to stop it (a waiting one ends canceled at once, never having run). 0, or
 * UV_ENOENT when p is not in flight. */
int prediction_cancel(prediction *p);

/* core/deadline.c. A limit on the prediction's run: `seconds` after it starts on a slot (or
 * from now, when it already runs; <= 0 removes the limit). On expiry it is cancelled in the
 * worker and ends `failed` with the error "Prediction timed out", keeping the outputs it had
 * produced; its sinks (webhooks included) hear that terminal state. A worker that ignores the
 * cancel (a predictor stuck in C code) gets COGLET_PREDICT_TIMEOUT_GRACE seconds (5) more;
 * then the prediction ends anyway and its slot stays out of service until the worker
 * answers for it. Every front door's timeout goes through here. */
void prediction_set_deadline(prediction *p, double seconds);

/* core/trace.c through the prediction: the traceparent header for a request made on its
 * behalf (its own span, or `span`'s when given), 0; UV_ENOENT when tracing is off. out holds
 * TRACEPARENT_LEN + 1 bytes. */
struct trace_span;
int prediction_traceparent(const prediction *p, const struct trace_span *span, char *out);
/* A child span of the prediction's (NULL when tracing is off). */
struct trace_span *prediction_child_span(prediction *p, const char *name, int kind);

const char *prediction_id(const prediction *p);
/* When the predictor raised: str() of its exception and the formatted traceback (else NULL).
 * `error` in the prediction object keeps its own form ("Prediction failed: ValueError: x"). */
const char *prediction_exception_message(const prediction *p);
const char *prediction_traceback(const prediction *p);
pred_status prediction_status(const prediction *p);
int prediction_is_terminal(const prediction *p);
int prediction_in_flight(const prediction *p);
core *prediction_core(const prediction *p);
const char *pred_status_name(pred_status s);

/* The full prediction object (id, status, logs, output, error, metrics, and input when asked).
 * New ref. */
json_t *prediction_state_json(const prediction *p, int with_input);
/* The body a waiting sync client gets. New ref. */
json_t *prediction_sync_json(const prediction *p);

/* The registry of in-flight predictions. */
prediction *core_find(core *c, const char *id);
/* Cancels the in-flight prediction with this id: 0, or UV_ENOENT when there is none. */
int core_cancel(core *c, const char *id);
/* Calls fn for each in-flight prediction; fn may end it. */
void core_foreach_prediction(core *c, void (*fn)(prediction *p, void *arg), void *arg);

#endif
