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

typedef enum { HEALTH_UNKNOWN, HEALTH_STARTING, HEALTH_READY, HEALTH_SETUP_FAILED, HEALTH_DEFUNCT } health_state;

typedef enum { PRED_STARTING, PRED_PROCESSING, PRED_SUCCEEDED, PRED_FAILED, PRED_CANCELED } pred_status;

#define PRED_LOGS_MAX ((size_t)256 << 20)

typedef struct service service;

typedef struct prediction {
    int refs;
    service *svc;
    char *id;
    pred_status status;
    int is_training;
    json_t *input;   /* validated input, as sent to the worker */
    json_t *context; /* object str -> str */
    json_t *outputs; /* array of outputs received so far */
    json_t *output;  /* final output at success (NULL before) */
    json_t *metrics; /* user metrics */
    buf logs;
    char *error;
    double started;  /* monotonic, at registration */
    double predict_time_s; /* set at the terminal transition */
    int cancel_requested;
    int is_stream;
    slot *slot;           /* while the worker runs it */
    http_conn *sync_conn; /* a sync client waiting for the terminal state */
    struct prediction *next; /* registry */
    int in_registry;
} prediction;

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
    int streaming;
    int output_is_array;
    int has_training_input;
    int user_healthcheck;
    char *user_healthcheck_error;
    prediction *registry;
    int num_inflight;
    int shutting_down;
    int stopped;
    void (*on_stopped)(service *svc);
    char bound[96];
};

/* Binds (0 or a libuv error with *err set to text), then starts the worker. */
int service_start(service *svc, uv_loop_t *loop, const service_config *cfg);
/* Graceful stop: no new connections, in-flight requests end, worker told to shut down. */
void service_begin_shutdown(service *svc, const char *why);

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
void service_finish(service *svc, prediction *p, pred_status status, const char *error);
int service_cancel(service *svc, const char *id);

/* routes.c */
extern const http_app_ops service_http_ops;
/* orchestrator callbacks (service.c) */
extern const orchestrator_ops service_orchestrator_ops;

#endif
