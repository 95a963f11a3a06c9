/* orchestrator/orchestrator.h: the worker process, its control channel, one socket per
 * slot, and the permit pool that hands slots to predictions. */
#ifndef COGLET_ORCHESTRATOR_H
#define COGLET_ORCHESTRATOR_H

#include <jansson.h>
#include <uv.h>

#include "common/buf.h"
#include "ipc/frame.h"
#include "orchestrator/pool.h"

typedef struct orchestrator orchestrator;

typedef struct slot {
    orchestrator *orch;
    int index;
    char id[40]; /* uuid from the worker's ready */
    uv_pipe_t pipe;
    int pipe_open;
    frame_decoder dec;
    void *prediction; /* the service's current prediction on this slot, or NULL */
    pool_link permit; /* in the permit pool while free */
    int abandoned;    /* the app gave up on its prediction; the worker may still run it */
    unsigned long long seq; /* predict frames sent on this slot */
    int closed_by_worker;   /* EOF on it while the worker was up */
    int closed_mid_frame;   /* ... with part of a frame read */
    int lost_reported;      /* on_slot_poisoned was called for it */
} slot;

typedef struct orchestrator_ops {
    /* Worker output outside predictions: control `log` frames and fd 1/2 lines. */
    void (*on_log)(void *app, const char *source, const char *line);
    void (*on_worker_log)(void *app, const char *target, const char *level, const char *message);
    void (*on_ready)(void *app, json_t *schema, json_t *ready);
    void (*on_setup_failed)(void *app, const char *error);
    /* A frame on a slot socket. The app owns nothing of msg (borrowed). */
    void (*on_slot_message)(void *app, slot *s, json_t *msg);
    /* The slot is out of service for good (a broken frame, a socket error or EOF, the
     * worker's control `failed`); called once per slot, with or without a prediction on it.
     * Not called for the slots of a worker that is gone: on_worker_gone covers those. */
    void (*on_slot_poisoned)(void *app, slot *s, const char *error);
    /* The worker is gone after ready; every slot's prediction must fail with `error`. */
    void (*on_worker_gone)(void *app, const char *error);
    void (*on_control_message)(void *app, json_t *msg); /* healthcheck_result, ... */
} orchestrator_ops;

/* Starting the worker by forking this process instead of spawning `python`
 * (docs/architecture.md#how-the-worker-starts). fork(arg, plan, nplan) forks: in the parent
 * it returns the child's pid, or a negative errno (the orchestrator then spawns); in the
 * child it lays out the fds with worker_child_fds(plan, nplan) (orchestrator/fork.h), runs
 * the worker and never returns. Called on the loop thread before the loop runs. */
typedef struct worker_forker {
    int (*fork)(void *arg, const int *plan, int nplan);
    void *arg;
} worker_forker;

typedef struct orchestrator_config {
    const char *python;        /* executable to spawn */
    worker_forker forker;      /* optional: fork instead of spawning */
    const char *predictor_ref;
    int num_slots;
    int is_train;
    double setup_timeout;      /* seconds; 0 = none */
} orchestrator_config;

enum { ORCH_IDLE, ORCH_SETUP, ORCH_READY, ORCH_GONE };

struct orchestrator {
    uv_loop_t *loop;
    const orchestrator_ops *ops;
    void *app;
    orchestrator_config cfg;
    int state;
    uv_process_t proc; /* a spawned worker */
    int proc_alive;
    int forked;         /* a forked one: its pid, and its pidfd polled for the exit */
    int pid;
    uv_poll_t exit_poll;
    int exit_poll_open;
    int exit_seen;
    int64_t exit_status;
    int term_signal;
    uv_pipe_t control;
    int control_open;
    frame_decoder control_dec;
    uv_pipe_t out_pipe, err_pipe; /* worker fd 1 and 2 */
    int out_open, err_open;
    buf out_line, err_line;
    uv_timer_t timer; /* setup timeout; then the crash grace timer */
    int timer_open;
    int control_eof;
    slot *slots;
    permit_pool pool;
    int shutdown_sent;
    int closing;
    int handles_open;
    void (*on_closed)(orchestrator *orch);
};

int orchestrator_start(orchestrator *orch, uv_loop_t *loop, const orchestrator_config *cfg,
                       const orchestrator_ops *ops, void *app);
/* Permit pool: a free slot or NULL; non-blocking. */
slot *orchestrator_acquire_slot(orchestrator *orch);
void orchestrator_release_slot(orchestrator *orch, slot *s);
int orchestrator_free_slots(const orchestrator *orch);
/* Frames to the worker; 0 or a libuv error: UV_EPIPE when the channel is closed, UV_E2BIG
 * for a frame over the cap, UV_ENOBUFS when the worker is not reading (more than one frame
 * would wait unsent on a slot, or more than 1 MiB on the control channel). */
int orchestrator_send_slot(orchestrator *orch, slot *s, const json_t *msg);
int orchestrator_send_control(orchestrator *orch, const json_t *msg);
/* Bytes queued on the control channel that the worker has not read yet. */
size_t orchestrator_control_unsent(const orchestrator *orch);
/* Slots not out of service for good, busy or free (an abandoned one may come back). */
int orchestrator_usable_slots(const orchestrator *orch);
/* 1 when the worker process is stopped (SIGSTOP, SIGTSTP, a debugger): alive, but nothing it
 * was sent is read until it continues. Read from /proc on Linux; 0 elsewhere. */
int orchestrator_worker_stopped(const orchestrator *orch);
/* An encoded frame (header included), taken. */
int orchestrator_send_slot_raw(orchestrator *orch, slot *s, char *frame, size_t len);
void orchestrator_poison(orchestrator *orch, slot *s);
/* A slot poisoned only because its prediction was given up on, back in the pool now that
 * the worker says it is done with it. */
void orchestrator_unpoison(orchestrator *orch, slot *s);
/* Sends `shutdown` (once the worker is up) and closes our ends; on_closed when every
 * handle is closed. The worker is never killed: it exits on shutdown or EOF. */
void orchestrator_close(orchestrator *orch, void (*on_closed)(orchestrator *orch));

#endif
