/* service/service.h: the prediction service. Owns health and setup state, the registry
 * of in-flight predictions, their state objects, and the routes that reach them. */
#ifndef COGLET_SERVICE_H
#define COGLET_SERVICE_H

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "http/http.h"
#include "orchestrator/orchestrator.h"
#include "service/outputs.h"
#include "service/validate.h"
#include "webhook/client.h"
#include "webhook/webhook.h"

typedef enum { HEALTH_UNKNOWN, HEALTH_STARTING, HEALTH_READY, HEALTH_SETUP_FAILED, HEALTH_DEFUNCT } health_state;

typedef enum { PRED_STARTING, PRED_PROCESSING, PRED_SUCCEEDED, PRED_FAILED, PRED_CANCELED } pred_status;

#define PRED_LOGS_MAX ((size_t)256 << 20)

typedef struct service service;
typedef struct prediction prediction;

/* What holds an http_conn while a request is pending: a sync waiter or an SSE stream.
 * conn->app_data points at one; the HTTP layer's abort reaches it through ops. */
typedef struct response response;
typedef struct response_ops {
    void (*abort)(response *res); /* client went away */
} response_ops;
struct response {
    const response_ops *ops;
    http_conn *conn;
    prediction *p;
};

/* SSE replay buffer: the most recent `cap` events, each a whole "event: ..\ndata: ..\n\n". */
typedef struct sse_event {
    char *text;
    size_t len;
} sse_event;

typedef struct event_ring {
    sse_event *events;
    size_t cap, start, count;
    unsigned long long evicted;
} event_ring;

typedef struct sse_sub {
    response super;
    struct sse_sub *next;
    double last_write;
} sse_sub;

struct prediction {
    int refs;
    service *svc;
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
    buf logs;
    char *error;
    double started;  /* monotonic, at registration */
    double predict_time_s; /* set at the terminal transition */
    int cancel_requested;
    unsigned long long seq; /* the slot's dispatch number */
    int is_stream;
    slot *slot;           /* while the worker runs it */
    response *sync_res;   /* a sync client waiting for the terminal state */
    output_op *ops;       /* file outputs being read or uploaded */
    int num_ops;
    char *output_error;   /* an output that could not be produced: fails the prediction */
    int done_pending;     /* the worker said done; waiting for ops */
    webhook *wh;
    int created_sse;      /* canceled when its last SSE subscriber leaves */
    int emitting;         /* inside prediction_emit's loop over subscribers */
    int cancel_after_emit;
    int record_events;    /* the model streams: keep SSE history */
    event_ring history;
    sse_sub *subs;
    int num_subs;
    struct prediction *next; /* registry */
    int in_registry;
};

typedef struct service_config {
    const char *predictor_ref; /* NULL: health-only mode */
    const char *host;
    int port;
    int is_train;
    int await_explicit_shutdown;
    const char *upload_url;
    const char *python;
    int max_concurrency;
    double setup_timeout;
    const char *python_sdk_version; /* NULL when unknown */
    const char *python_version;
    double shutdown_grace; /* COG_SHUTDOWN_GRACE, seconds */
    size_t stream_history;  /* COG_STREAM_HISTORY_CAPACITY */
} service_config;

struct service {
    uv_loop_t *loop;
    service_config cfg;
    http_server http;
    orchestrator orch;
    int orch_started;
    health_state health;
    /* setup object */
    uint64_t setup_started_ns, setup_completed_ns;
    const char *setup_status; /* NULL, "starting", "succeeded", "failed" */
    char *setup_logs;
    json_t *schema;
    validator *input_validator;    /* components.schemas.Input */
    validator *training_validator; /* TrainingInput, else Input's */
    int training_schema_broken;    /* TrainingInput there but not compilable: no validation */
    int streaming;
    int output_is_array;
    int has_training_input;
    int user_healthcheck;
    char *user_healthcheck_error;
    void *hc_waiters; /* health.c's waiters */
    int hc_in_flight;
    unsigned long long hc_counter;
    prediction *registry;
    int num_inflight;
    http_client client; /* webhooks and uploads */
    int client_open;
    webhook_settings webhook_settings;
    double upload_retry_base; /* seconds before the first upload retry */
    int pending_webhooks; /* terminal deliveries in progress */
    webhook **pending_wh;
    int num_pending_wh, cap_pending_wh;
    uv_timer_t keepalive_timer; /* SSE keep-alive comments */
    uv_timer_t grace_timer;     /* shutdown: cancel what is still running */
    uv_timer_t webhook_timer;   /* shutdown: how long last webhook attempts may take */
    int webhook_phase;
    int webhooks_abandoned;
    int timers_open;
    int grace_expired;
    int forced;
    int closing;
    int timers_closing;
    int shutting_down;
    int stopped;
    void (*on_stopped)(service *svc);
    char bound[96];
};

/* Binds (0 or a libuv error with *err set to text), then starts the worker. */
int service_start(service *svc, uv_loop_t *loop, const service_config *cfg);
/* The webhook/upload client, started on first use (libcurl loads then). 0 or -1. */
int service_client(service *svc);
/* Graceful stop: no new connections, in-flight requests end, worker told to shut down. */
void service_begin_shutdown(service *svc, const char *why);
/* A second signal: cancel everything and close now. */
void service_force_shutdown(service *svc);

/* Sends body (taken) as sorted-key JSON; large bodies reference their big strings. */
void respond_json_body(http_conn *conn, int status, json_t *body);

/* predictions */
prediction *prediction_new(service *svc, const char *id, int is_training);
void prediction_ref(prediction *p);
void prediction_unref(prediction *p);
json_t *prediction_state_json(const prediction *p, int with_input);
json_t *prediction_sync_json(const prediction *p);
const char *pred_status_name(pred_status s);
prediction *service_find(service *svc, const char *id);
void service_register(service *svc, prediction *p);
void service_unregister(service *svc, prediction *p);
/* Registers, takes the slot and sends the predict frame. */
void service_dispatch(service *svc, prediction *p, slot *s);
void prediction_output_dir(const char *id, char *out, size_t outlen);
void service_finish(service *svc, prediction *p, pred_status status, const char *error);
int service_cancel(service *svc, const char *id);

/* sse.c */
void sse_ring_init(event_ring *ring, size_t cap);
void sse_ring_free(event_ring *ring);
/* Records and broadcasts one event; `completed` ends every stream. data is borrowed. */
void prediction_emit(prediction *p, const char *event, const json_t *data);
/* Attaches conn as a subscriber (replay first). 0, or an HTTP status already sent. */
int sse_subscribe(service *svc, prediction *p, http_conn *conn);
void sse_keepalive_tick(service *svc);
void sse_close_all(prediction *p);

/* health.c */
void route_health(service *svc, http_conn *conn);
void health_on_result(service *svc, json_t *msg);
void health_fail_waiters(service *svc, const char *error);

/* routes.c */
extern const http_app_ops service_http_ops;
/* orchestrator callbacks (service.c) */
extern const orchestrator_ops service_orchestrator_ops;

#endif
