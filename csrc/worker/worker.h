/* worker/worker.h: the worker process's state (one `worker`, one `wslot` per slot, one
 * `run_ctx` per prediction) and what its files call in each other. Python objects are only
 * touched with the GIL held; slot states only under worker.lock. */
#ifndef COGLET_WORKER_H
#define COGLET_WORKER_H

#include <Python.h>
#include <jansson.h>
#include <pthread.h>

#include "common/buf.h"
#include "ipc/frame.h"

typedef struct worker worker;

typedef struct wslot {
    worker *w; /* the worker it belongs to (readers and callbacks get only the slot) */
    int index;
    int fd;
    char id[37];                /* uuid the parent knows the slot by */
    pthread_mutex_t write_lock; /* one frame at a time on the socket; guards batch */
    buf batch;                  /* frames held back to go out in one write (worker/send.c) */
    frame_decoder dec;
    pthread_t thread;
    int thread_started;
    int poisoned;
    /* guarded by worker.lock */
    char *current_id;                /* the prediction running, or NULL */
    unsigned long long current_seq;  /* its dispatch number */
    unsigned long long cancel_seq;   /* a cancel that overtook its predict frame */
    unsigned long long finished_seq; /* the last dispatch that ended */
    int running;
    int cancelled;
    unsigned long thread_ident;
    PyObject *future; /* an async prediction's Task, once it runs: what a cancel cancels (GIL) */
    PyObject *reader; /* async: the loop's reader callback for fd (GIL) */
} wslot;

typedef struct run_path run_path;

struct worker {
    int control_fd;
    pthread_mutex_t control_lock; /* one frame at a time on the control socket */
    frame_decoder control_in;
    pthread_mutex_t lock; /* slot states, healthchecks */
    int quit;
    int healthchecks; /* healthcheck threads still running (they hold a pointer to us) */
    int num_slots;
    wslot *slots;
    int is_train;
    const run_path *path; /* how predictions run: sync, async or async generator */
    wslot *sync_slot;     /* the slot of the running sync prediction, for log routing (GIL) */
    int has_coercions;
    int training_unsupported;
    char method_name[32];
    /* Python objects, strong references (GIL) */
    PyObject *sdk;          /* coglet._sdk: scopes, log writers, our hooks */
    PyObject *cancel_exc;   /* coglet.CancelationException */
    PyObject *runtime;      /* coglet._runtime */
    PyObject *pred;         /* _runtime.Predictor */
    PyObject *method;       /* its bound run/predict/train */
    PyObject *encode_other; /* _runtime.encode_other */
    PyObject *pred_id_var;  /* ContextVar _coglet_prediction_id */
    PyObject *generator_type;
    PyObject *pathlike_type, *iobase_type; /* file outputs */
    PyObject *no_args;                     /* () */
    /* async predictors: the event loop that reads the slot sockets and runs the predictions */
    PyObject *loop;
    PyObject *start_task;  /* _runtime.task_starter(...): (run, coro, id, scope) -> Task */
    PyObject *arun_type;   /* the per-prediction object (worker/run_async.c) */
    char *loop_chunk;      /* the loop thread's read buffer */
    int loop_readers;      /* slots the loop still reads (GIL) */
    int loop_detached;     /* the loop dropped every reader (lock) */
    pthread_cond_t loop_cond;
};

/* What a prediction entered and must leave: all new references or NULL. */
typedef struct run_entered {
    PyObject *context; /* the request's context dict */
    PyObject *kwargs;
    PyObject *temps; /* downloaded inputs, for _runtime.cleanup */
} run_entered;

/* One prediction, from its predict frame to its terminal message (on the thread that read
 * the frame for sync; across the Task's steps for async: worker/run_async.c). */
typedef struct run_ctx {
    worker *w;
    wslot *s;
    const char *id;
    const char *output_dir;
    PyObject *scope;  /* its coglet._sdk Scope */
    PyObject *result; /* what the method gave, still to be delivered */
    int files;        /* file outputs so far (their names) */
    int index;        /* next inline output index */
    int stream;       /* outputs went out item by item: done carries is_stream */
    int cancelled;
    int failed;
    char *error;      /* with failed */
    char *exc_message;   /* with failed by an exception: its str() and traceback, which the */
    char *exc_traceback; /* queue door's responses carry apart from error (docs/queue.md) */
    char *final_text; /* the final value's JSON, to ride inside done */
    size_t final_len;
} run_ctx;

/* A way of running the user's method; one per predictor kind (worker/run_sync.c,
 * worker/run_async.c). */
struct run_path {
    const char *name;
    /* Predictions run as Tasks on the event loop, which reads the slot sockets itself; they
     * are told apart by context (ContextVars), cancelled through their Task, and may run
     * several at once. */
    int is_async;
    /* sync: calls the method with kwargs and runs it to its end: leaves rc->result to deliver,
     * or streams its items (rc->stream), or sets rc->failed / rc->cancelled. */
    void (*call)(run_ctx *rc, PyObject *kwargs);
    /* async: the _runtime coroutine function that drives one prediction's Task; whether the
     * method is an async generator */
    const char *runner;
    int is_generator;
};
extern const run_path run_path_sync, run_path_async, run_path_async_generator;

/* worker/send.c: frames out. Each returns 0 or -errno; msg is taken. have_gil: the caller
 * holds the GIL, which is released around the lock and the write. */
int worker_send_raw(int fd, pthread_mutex_t *lock, char *frame, size_t len, int have_gil); /* frame taken */
int worker_send_frame(int fd, pthread_mutex_t *lock, const json_t *msg, int have_gil);    /* msg kept */
int worker_send_control(worker *w, json_t *msg, int have_gil);
int worker_send_slot(wslot *s, json_t *msg, int have_gil);
/* A frame (taken) on a slot: whatever the slot holds back goes first, in the same write. */
int worker_send_slot_raw(wslot *s, char *frame, size_t len, int have_gil);
/* A frame (taken) held back, to go out with the slot's next frame (the items of a returned
 * list: one write with the terminal message instead of one per item); sent at once when
 * the held-back frames would pass 256 KiB. */
int worker_hold_slot_raw(wslot *s, char *frame, size_t len, int have_gil);
void worker_log(worker *w, const char *level, const char *message, int have_gil);
/* Cannot reach the parent on this slot (or it sent garbage): the slot is done for. */
void worker_poison_slot(worker *w, wslot *s, const char *error, int have_gil);

/* worker/slot.c */
/* Reads slot s and runs the predictions that arrive, until EOF, a broken frame or quit.
 * Called without the GIL; *ts is the calling thread's saved state. */
void slot_serve(wslot *s, PyThreadState **ts);
void *slot_thread_main(void *arg); /* slot_serve on a thread of its own */
/* Marks s running dispatch seq of prediction id; 1 when a cancel for it came first. */
int slot_begin(worker *w, wslot *s, const char *id, unsigned long long seq);
void slot_end(worker *w, wslot *s);
int slot_is_cancelled(worker *w, wslot *s);
/* Where a cancel finds an async prediction's Task (borrowed; NULL clears). 1 when the
 * prediction was cancelled already. */
int slot_set_future(worker *w, wslot *s, PyObject *future);

/* worker/run_async.c */
/* The loop's side of the worker: the per-prediction type and the runner. 0, or -1 with an
 * exception. */
int async_init(worker *w);
/* With the GIL: the loop starts reading every slot socket (soon, on its thread). 0 or -1. */
int async_attach(worker *w);
/* From the main thread without the GIL: the loop stops reading (and so stops touching w)
 * before w goes away; waits up to `seconds`. 0, or -1 when the loop did not answer. */
int async_detach(worker *w, double seconds);

/* worker/run.c */
/* One sync prediction, from the predict frame to its terminal message, on this thread. */
void run_prediction(worker *w, wslot *s, json_t *job);
/* The pieces, for the async path, where one prediction spans several loop callbacks. */
void run_init(run_ctx *rc, worker *w, wslot *s, json_t *job); /* rc borrows strings from job */
/* Marks the slot busy (a cancel that came first: rc cancelled), the scope, the input. 0 when
 * the method can be called, else -1 with rc saying why not. */
int run_enter(run_ctx *rc, json_t *job, run_entered *in);
/* File/Path/Secret coercion and downloads (may block); 0, or -1 with rc failed or cancelled. */
int run_prepare(run_ctx *rc, run_entered *in);
/* Sends rc->result: item by item for a list or tuple, else as the final value. */
void run_deliver(run_ctx *rc);
/* Leaves the contexts, marks the slot idle, then sends done/failed/cancelled. */
void run_finish(run_ctx *rc, run_entered *in);
/* A generator (from a sync or an async method): each item sent as it is yielded. */
void run_stream_generator(run_ctx *rc, PyObject *generator);
/* Fails the prediction with prefix + the pending exception (cleared). */
void run_fail_pyerr(run_ctx *rc, const char *prefix);
/* Fails the prediction with a message (copied). */
void run_fail(run_ctx *rc, const char *message);
/* "{type qualname}: {str(exc)}" of the pending exception, cleared; malloc'd, never NULL
 * unless out of memory. With message / traceback (either may be NULL) it also replaces
 * *message with str(exc) and *traceback with the formatted traceback. */
char *worker_format_pyerr(char **message, char **traceback);

/* worker/outputs.c */
/* Sends one output item: a file output, or inline JSON (spilled when too big for a frame).
 * final: the method's single value, not a stream item (only the error texts differ). 0, or
 * -1 with rc failed. */
int outputs_send(run_ctx *rc, PyObject *item, int final);
/* Sends each item of iterator `it` as it comes; iteration errors fail with prefix. 0 or -1. */
int outputs_stream(run_ctx *rc, PyObject *it, const char *prefix);
/* The items of a returned list or tuple (all there already): runs of inline items as one
 * output_items frame each, held back to go out with the terminal message; file outputs and
 * spills in their place. 0 or -1 with rc failed. */
int outputs_items(run_ctx *rc, PyObject *it);
/* The final value: JSON text kept in rc->final_text for done, or sent first as a file output
 * or a spill. */
void outputs_final(run_ctx *rc, PyObject *value);
/* Python -> JSON with the output rules (encode_other for what is not JSON). */
json_t *outputs_to_json(worker *w, PyObject *value);

/* worker/hooks.c: what coglet._sdk calls back (log lines, metrics) */
void hooks_register(worker *w);
void hooks_unregister(worker *w);
/* Routes the writers' buffered partial lines to slot s (its prediction has ended). */
void hooks_flush_writers(worker *w, wslot *s);

/* worker/control.c */
/* Reads control frames until shutdown or EOF. Called without the GIL; *ts is the main
 * thread's saved state, restored where the GIL is needed. */
void control_loop(worker *w, PyThreadState **ts);

/* worker/setup.c */
/* Everything before init: SIGINT ignored, the log writers, the Python objects the worker
 * uses. 0, or -1 with an exception. */
int setup_python(worker *w);
/* Loads the predictor and runs setup. 0, or -1 after telling the parent. */
int setup_predictor(worker *w, const char *ref);
/* The ready frame (slots, healthcheck, schema) and each slot's protocol_version. */
void setup_send_ready(worker *w);

#endif
