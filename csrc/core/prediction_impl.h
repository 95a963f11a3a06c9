/* core/prediction_impl.h: the prediction object itself, for core/ only. prediction.c owns
 * its state and lifecycle; dispatch.c links it to a slot and feeds it the worker's messages
 * through the functions below; outputs.c keeps its own list in `ops`. Nothing outside core/
 * includes this file. */
#ifndef COGLET_PREDICTION_IMPL_H
#define COGLET_PREDICTION_IMPL_H

#include "common/buf.h"
#include "core/logs.h"
#include "core/outputs.h"
#include "core/prediction.h"
#include "core/trace.h"

struct prediction {
    int refs;
    core *core;
    char *id;
    pred_status status;
    int is_training;
    json_t *input;   /* validated input, as sent to the worker */
    char *input_raw; /* the request body, when its input can be sent as is (large inputs) */
    size_t input_raw_off, input_raw_len;
    json_t *context; /* object str -> str */
    json_t *outputs; /* array of outputs received so far */
    json_t *output;  /* final output at success (NULL before) */
    json_t *metrics; /* user metrics */
    pred_logs logs; /* bounded: core/logs.h */
    char *error;
    char *exc_message, *traceback; /* the predictor's exception, when it raised one */
    const char *door;      /* the front door's label ("http", "queue"), static */
    double created;        /* monotonic, at creation */
    double started;        /* monotonic, when it started on a slot (creation until then) */
    double predict_time_s; /* set at the terminal transition */
    /* deadline.c: seconds from the start on a slot (0: none), its timer, and whether it fired */
    double deadline_s;
    struct deadline_timer *deadline;
    int timed_out;
    /* trace.c: the caller's context, the prediction's span and its run on the worker */
    trace_context trace_parent;
    trace_span *span, *run_span;
    uint64_t created_ns; /* realtime, for the wait span */
    /* core.c: waiting for a slot (COG_QUEUE_DEPTH), in arrival order */
    int waiting;
    struct prediction *wait_next;
    int is_stream;
    /* dispatch.c: the slot while the worker runs it, and that slot's dispatch number */
    slot *slot;
    unsigned long long seq;
    int started_dispatch;
    int done_pending;   /* the worker said done; waiting for file outputs */
    int made_dir;       /* its directory may exist: removed at the end (dispatch_remove_dir) */
    char *output_error; /* an output that could not be produced: fails the prediction */
    /* outputs.c: file outputs being read or uploaded */
    output_op *ops;
    int num_ops;
    sink *sinks;
    struct prediction *next; /* registry */
    int in_registry;
};

/* The terminal transition: sinks get on_terminal, the registry lets go. Once only. */
void prediction_finish(prediction *p, pred_status status, const char *error);
/* Ends a running prediction the worker will not let go of: its slot out of service until the
 * worker reports the run over (dispatch_abandon), its file outputs dropped, failed with error. */
void prediction_give_up(prediction *p, const char *error);
void core_register(core *c, prediction *p);

/* Events from the worker (dispatch.c and outputs.c call these). */
void prediction_emit_start(prediction *p);
void prediction_add_log(prediction *p, const json_t *data, const char *source);
void prediction_add_metric(prediction *p, const char *mode, const char *name, const json_t *value);
/* An output value arrived: appended to outputs (append) or placed at index. */
void prediction_append_output(prediction *p, const json_t *value);
/* A place in outputs for a value produced later (a file). Its index. */
size_t prediction_reserve_output(prediction *p);
void prediction_place_output(prediction *p, size_t index, const json_t *value);
/* Ends p once the worker said done and no file output is pending. */
void prediction_maybe_done(prediction *p);

/* deadline.c: arms the deadline when p starts on its slot; drops it at the end. */
void deadline_arm(prediction *p);
void deadline_clear(prediction *p);

/* prediction.c: spans around the run (dispatch.c calls these). */
void trace_run_begin(prediction *p);
void trace_run_end(prediction *p);

/* core.c: the wait queue. enqueue appends p (taking a reference); remove unlinks it. */
void waitq_enqueue(core *c, prediction *p);
void waitq_remove(core *c, prediction *p);
/* Hands free slots to waiting predictions, on the next loop turn. */
void waitq_schedule(core *c);
void waitq_fail_all(core *c, const char *error);

/* dispatch.c */
void dispatch_prediction(prediction *p);
/* Unlinks p from its slot (released, or poisoned when the worker may still run it). */
typedef enum { SLOT_RELEASE, SLOT_POISON } slot_fate;
void dispatch_unlink(prediction *p, slot_fate fate);
/* Unlinks p from a slot the worker may still be running it on: out of service until the
 * worker's terminal message for it arrives. */
void dispatch_abandon(prediction *p);
/* The slot's messages and failures (the orchestrator's callbacks go through here). */
void dispatch_on_slot_message(core *c, slot *s, json_t *msg);
void dispatch_on_slot_failed(core *c, slot *s, const char *error);
/* Removes the prediction's directory, if it made one and it is empty, off the loop. */
void dispatch_remove_dir(prediction *p);
/* /tmp/coglet/predictions/{id}/outputs (under cfg.output_dir_base), the id made safe. */
void prediction_output_dir(const core *c, const char *id, char *out, size_t outlen);

#endif
