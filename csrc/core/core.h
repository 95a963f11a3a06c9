/* core/core.h: the prediction core. Owns health and setup state, the schema and its
 * validators, the registry of in-flight predictions, the worker (through the orchestrator),
 * the outgoing HTTP client, terminal deliveries still being retried, and the shutdown
 * sequence. Front doors (HTTP today) are its clients; nothing in core/ knows HTTP.
 * The API for doors is here and in core/prediction.h; docs/architecture.md draws it. */
#ifndef COGLET_CORE_H
#define COGLET_CORE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "core/validate.h"
#include "orchestrator/orchestrator.h"
#include "webhook/client.h"
#include "webhook/webhook.h"

typedef enum { HEALTH_UNKNOWN, HEALTH_STARTING, HEALTH_READY, HEALTH_SETUP_FAILED, HEALTH_DEFUNCT } health_state;

/* The shutdown sequence, one phase at a time (core/shutdown.c). */
typedef enum {
    SHUTDOWN_NONE,    /* serving */
    SHUTDOWN_DRAIN,   /* accepted predictions run to their end, up to the grace period */
    SHUTDOWN_CANCEL,  /* grace over: every prediction was cancelled; a few seconds to land */
    SHUTDOWN_DELIVER, /* no prediction left: terminal deliveries get their last attempts */
    SHUTDOWN_CLOSE,   /* doors, then the worker, the client and the timers close */
    SHUTDOWN_STOPPED,
} shutdown_phase;

typedef struct core core;
typedef struct prediction prediction;

/* A front door: something that turns requests into predictions (HTTP, a queue). The core
 * tells it when to stop taking work and when to close; it answers with core_door_closed. */
typedef struct front_door front_door;
typedef struct front_door_ops {
    /* Shutdown began: refuse new work; idle connections may go now. */
    void (*shutdown_begin)(front_door *door);
    /* Close everything (now, when `force`; else once what is open is idle). */
    void (*close)(front_door *door, int force);
    /* Optional. Something a door that pulls work watches changed: setup ended (health
     * READY or SETUP_FAILED), the worker is gone (DEFUNCT), or a slot was taken or came
     * free. Called in the middle of the core's work: a door must not start a prediction
     * from here (it may queue work for a later loop turn). */
    void (*on_capacity)(front_door *door);
} front_door_ops;
struct front_door {
    const front_door_ops *ops;
    front_door *next;
    core *core;
    int closing, closed;
};

/* Something that must end before the process may exit but outlives its prediction: a
 * terminal webhook being retried (later: a queue acknowledgement). The core abandons what is
 * left a few seconds into shutdown. */
typedef struct delivery delivery;
typedef struct delivery_ops {
    void (*abandon)(delivery *d); /* give up now; frees d. Must not call core_delivery_end. */
} delivery_ops;
struct delivery {
    const delivery_ops *ops;
    delivery *next, *prev;
};

/* A waiter for the user's healthcheck result (core/health.c). */
typedef struct health_waiter health_waiter;
struct health_waiter {
    void (*answer)(health_waiter *w);  /* the result (or a timeout) is in; w is unlinked */
    void (*release)(health_waiter *w); /* its timer is closed: free w */
    health_waiter *next;
    uv_timer_t timer;
    core *core;
};

typedef struct core_config {
    const char *predictor_ref; /* NULL: health-only mode */
    int is_train;
    const char *upload_url;
    const char *python;
    worker_forker forker; /* optional: the worker forked, not spawned (orchestrator.h) */
    int max_concurrency;
    double setup_timeout;
    const char *python_sdk_version; /* NULL when unknown */
    const char *python_version;
    double shutdown_grace;          /* COG_SHUTDOWN_GRACE, seconds */
    const char *output_dir_base;    /* where prediction directories go */
} core_config;

struct core {
    uv_loop_t *loop;
    core_config cfg;
    orchestrator orch;
    int orch_started;
    health_state health;
    /* setup (core/setup.c) */
    uint64_t setup_started_ns, setup_completed_ns;
    const char *setup_status; /* NULL, "starting", "succeeded", "failed" */
    char *setup_logs;
    /* schema (core/setup.c) */
    json_t *schema;
    validator *input_validator;    /* components.schemas.Input */
    validator *training_validator; /* TrainingInput, else Input's */
    int training_schema_broken;    /* TrainingInput there but not compilable: no validation */
    int streaming;                 /* x-cog-streaming */
    int output_is_array;
    int has_training_input;
    /* user healthcheck (core/health.c) */
    int user_healthcheck;
    char *user_healthcheck_error;
    health_waiter *hc_waiters;
    int hc_in_flight;
    unsigned long long hc_counter;
    /* predictions (core/prediction.c) */
    prediction *registry;
    int num_inflight;
    /* operations (docs/operations.md): the timeout doors apply, the wait queue (core.c) */
    double predict_timeout; /* COG_PREDICT_TIMEOUT, seconds; 0 = none */
    double timeout_grace;   /* COGLET_PREDICT_TIMEOUT_GRACE: a cancel ignored this long is given up on */
    int queue_depth;        /* COG_QUEUE_DEPTH: how many may wait for a slot; 0 = none (409) */
    prediction *wait_head, *wait_tail;
    int num_waiting;
    uv_idle_t waitq_idle;   /* hands freed slots to waiting predictions on the next turn */
    /* worker restart (core/restart.c): COGLET_RESTART_WORKER */
    int restart_enabled;
    int restart_max;        /* COGLET_RESTART_MAX: restarts in a row without a success */
    double restart_backoff; /* COGLET_RESTART_BACKOFF: seconds before the first; doubles, 30 s at most */
    int restart_streak;     /* restarts since the last succeeded prediction */
    int restarting;         /* the worker died and another is on its way */
    uv_timer_t restart_timer;
    struct tracer *tracer; /* core/trace.c; NULL when tracing is off */
    /* outgoing HTTP: webhooks and uploads */
    http_client client;
    int client_open;
    webhook_settings webhook_settings;
    double upload_retry_base; /* seconds before the first upload retry */
    delivery *deliveries;
    int num_deliveries;
    front_door *doors;
    /* shutdown (core/shutdown.c) */
    shutdown_phase shutdown;
    uv_timer_t grace_timer;   /* drain, then cancel, then force */
    uv_timer_t deliver_timer; /* how long terminal deliveries may take */
    int timers_open;
    void (*on_stopped)(core *c);
};

/* Starts the worker (when there is a predictor). 0, or a libuv error. */
int core_start(core *c, uv_loop_t *loop, const core_config *cfg);
/* Front doors register before core_start's loop runs; the core closes them at shutdown. */
void core_add_door(core *c, front_door *door);
void core_door_closed(core *c, front_door *door);
/* Tells every door with on_capacity that health or the free slots changed. */
void core_notify_doors(core *c);
/* The webhook/upload client, started on first use (libcurl loads then). 0, UV_ECANCELED once
 * the core is closing, or UV_ENOSYS when libcurl cannot be loaded. */
int core_client(core *c);
void core_delivery_begin(core *c, delivery *d);
void core_delivery_end(core *c, delivery *d);

/* Graceful stop: no new predictions, accepted ones end, deliveries get their attempts,
 * doors close, the worker is told to shut down. */
void core_begin_shutdown(core *c, const char *why);
/* A second signal: cancel everything and close now. */
void core_force_shutdown(core *c);
int core_shutting_down(const core *c);
/* Re-evaluates the shutdown sequence after something it waits for ended. */
void core_shutdown_check(core *c);

/* Whether a new prediction would be taken now; why not, when not. */
typedef enum { ADMIT_OK, ADMIT_SHUTTING_DOWN, ADMIT_DEFUNCT, ADMIT_NOT_READY, ADMIT_BUSY } admit_result;
admit_result core_admit(const core *c);
/* Whether a new prediction would find a slot or a place in the wait queue. */
int core_has_room(const core *c);
/* The validator for a prediction or a training input (NULL: none). */
const validator *core_validator(const core *c, int is_training);

/* health (core/health.c) */
const char *core_health_name(const core *c);
/* The worker died after setup, or lives on with every slot out of service: creates get 503. */
int core_defunct(const core *c);
/* Why the worker, alive, cannot run anything now (it is stopped); NULL when it can. */
const char *core_worker_unresponsive(const core *c);
/* The /health-check body: status, setup, version, user_healthcheck_error. New ref. */
json_t *core_health_json(const core *c);
/* Queues w for the user's healthcheck (0), or UV_ENOTSUP when none should run now: then the
 * caller answers at once. */
int core_health_wait(core *c, health_waiter *w);
void core_health_unwait(health_waiter *w);

/* Inside core/ only. setup.c: the orchestrator's callbacks; health.c: healthcheck results. */
extern const orchestrator_ops core_orchestrator_ops;
void core_drop_schema(core *c);
void core_setup_failed(core *c, const char *error);
void health_on_result(core *c, json_t *msg);
void health_fail_waiters(core *c, const char *error);
void shutdown_init(core *c);
/* core.c: spawns the worker (core_start, and again for a restart). */
void core_spawn_worker(core *c);
void core_collect_stats(void *arg); /* the scrape's gauges: slots, the queue, in flight */
/* restart.c: 1 when a new worker will come (the queue keeps waiting), 0 when not. */
int restart_after_crash(core *c);
int restart_after_setup_failure(core *c);
void restart_read_env(core *c);
void core_abandon_deliveries(core *c, const char *why);

#endif
