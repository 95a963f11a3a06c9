/* core/setup.c: the worker as the core sees it — setup logs, ready (with the schema and its
 * validators, installed before READY so nothing is served unvalidated), setup failure,
 * worker output outside predictions, control messages, and the worker's death. These are the
 * orchestrator's callbacks; slot messages go on to dispatch.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::service"

static void on_log(void *app, const char *source, const char *line) {
    core *c = app;
    (void)source;
    log_event_str(LOG_INFO, c->health == HEALTH_STARTING ? "coglet::setup" : "coglet::user", NULL, line);
}

static void on_worker_log(void *app, const char *target, const char *level, const char *message) {
    (void)app;
    log_event_str(log_level_parse(level, LOG_INFO), target ? target : "coglet::worker", NULL, message ? message : "");
}

/* Kubernetes readiness file (docs/http-api.md, "Health"): created off the loop. */
static void write_k8s_ready(uv_work_t *req) {
    (void)req;
    int rc = fs_mkdirs("/var/run/cog", 0755);
    if (rc != 0) {
        log_warn(TARGET, "cannot create /var/run/cog: %s", strerror(-rc));
        return;
    }
    int fd = open("/var/run/cog/ready", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0)
        log_warn(TARGET, "cannot create /var/run/cog/ready: %s", strerror(errno));
    else
        close(fd);
}

static void k8s_done(uv_work_t *req, int status) {
    (void)status;
    free(req);
}

/* ---- the schema ---- */

void core_drop_schema(core *c) {
    json_decref(c->schema);
    c->schema = NULL;
    validator_free(c->input_validator);
    validator_free(c->training_validator);
    c->input_validator = c->training_validator = NULL;
    c->training_schema_broken = 0;
    c->streaming = c->output_is_array = c->has_training_input = 0;
}

/* Validators are compiled once, here; one that does not compile is logged and skipped. */
static void compile_validators(core *c, json_t *schema) {
    char err[512];
    json_t *schemas = json_object_get(json_object_get(schema, "components"), "schemas");
    if (json_object_get(schemas, "Input")) {
        c->input_validator = validator_compile(schema, "Input", err, sizeof err);
        if (!c->input_validator)
            log_warn(TARGET, "input schema does not compile; inputs are not validated: %s", err);
    }
    if (json_object_get(schemas, "TrainingInput")) {
        c->training_validator = validator_compile(schema, "TrainingInput", err, sizeof err);
        c->training_schema_broken = c->training_validator == NULL;
        if (!c->training_validator)
            log_warn(TARGET, "training input schema does not compile; training inputs are not validated: %s", err);
    }
}

static void install_schema(core *c, json_t *schema) {
    core_drop_schema(c);
    if (!json_is_object(schema))
        return;
    c->schema = json_incref(schema);
    json_t *post = json_object_get(json_object_get(json_object_get(schema, "paths"), "/predictions"), "post");
    c->streaming = json_is_true(json_object_get(post, "x-cog-streaming"));
    json_t *schemas = json_object_get(json_object_get(schema, "components"), "schemas");
    json_t *out = json_object_get(schemas, c->cfg.is_train ? "TrainingOutput" : "Output");
    const char *type = json_string_value(json_object_get(out, "type"));
    c->output_is_array = type && !strcmp(type, "array");
    c->has_training_input = json_object_get(schemas, "TrainingInput") != NULL;
    compile_validators(c, schema);
}

const validator *core_validator(const core *c, int is_training) {
    if (!is_training)
        return c->input_validator;
    if (c->training_validator)
        return c->training_validator;
    return c->training_schema_broken ? NULL : c->input_validator;
}

/* ---- ready, or not ---- */

static double setup_seconds(const core *c) {
    return c->setup_started_ns ? (double)(now_realtime_ns() - c->setup_started_ns) / 1e9 : 0;
}

static void on_ready(void *app, json_t *schema, json_t *ready) {
    core *c = app;
    c->restarting = 0;
    stats_observe(STAT_SETUP_DURATION, setup_seconds(c), "succeeded", NULL);
    install_schema(c, schema); /* before READY: nothing is served unvalidated */
    c->user_healthcheck = json_is_true(json_object_get(ready, "has_healthcheck"));
    c->health = HEALTH_READY;
    log_event(LOG_INFO, TARGET,
              json_pack("{s:i, s:s}", "num_slots", c->cfg.max_concurrency, "mode", c->cfg.is_train ? "train" : "predict"),
              "Server ready");
    free(c->setup_logs);
    c->setup_logs = log_capture_take();
    c->setup_status = "succeeded";
    c->setup_completed_ns = now_realtime_ns();
    log_info(TARGET, "Setup complete, now accepting requests");
    waitq_schedule(c); /* predictions that waited through a restart */
    if (getenv("KUBERNETES_SERVICE_HOST")) {
        uv_work_t *req = malloc(sizeof *req);
        if (req && uv_queue_work(c->loop, req, write_k8s_ready, k8s_done) != 0)
            free(req);
    }
    core_notify_doors(c);
}

void core_setup_failed(core *c, const char *error) {
    if (c->health == HEALTH_SETUP_FAILED)
        return;
    c->health = HEALTH_SETUP_FAILED;
    /* The Rust coglet keeps only the error string; what setup printed before it failed is
     * what a user needs to see why, so it comes first and the error string ends the text. */
    char *captured = log_capture_take();
    free(c->setup_logs);
    size_t n = (captured ? strlen(captured) : 0) + strlen(error) + 1;
    c->setup_logs = malloc(n);
    if (c->setup_logs)
        snprintf(c->setup_logs, n, "%s%s", captured ? captured : "", error);
    free(captured);
    log_error(TARGET, "Setup failed: %s", error);
    c->setup_status = "failed";
    stats_observe(STAT_SETUP_DURATION, setup_seconds(c), "failed", NULL);
    c->setup_completed_ns = now_realtime_ns();
    if (restart_after_setup_failure(c))
        c->health = HEALTH_STARTING;
    else
        waitq_fail_all(c, "the worker could not be restarted: setup failed");
    core_notify_doors(c);
}

static void on_setup_failed(void *app, const char *error) { core_setup_failed(app, error); }

static void on_slot_message(void *app, slot *s, json_t *msg) { dispatch_on_slot_message(app, s, msg); }

static void on_slot_poisoned(void *app, slot *s, const char *error) {
    core *c = app;
    log_error(TARGET, "slot %d poisoned: %s", s->index, error);
    s->abandoned = 0; /* out of service for good */
    dispatch_on_slot_failed(c, s, error);
    if (c->health == HEALTH_READY && orchestrator_usable_slots(&c->orch) == 0)
        log_error(TARGET, "every slot is out of service: no prediction can run; restart the server");
}

static void on_worker_gone(void *app, const char *error) {
    core *c = app;
    c->health = HEALTH_DEFUNCT;
    stats_inc(STAT_WORKER_CRASHES, NULL, NULL);
    health_fail_waiters(c, NULL);
    for (int i = 0; c->orch.slots && i < c->cfg.max_concurrency; i++) {
        c->orch.slots[i].abandoned = 0;
        dispatch_on_slot_failed(c, &c->orch.slots[i], error);
    }
    /* with a restart on its way, predictions waiting for a slot wait for the new worker */
    if (!restart_after_crash(c))
        waitq_fail_all(c, error);
    core_notify_doors(c);
    core_shutdown_check(c);
}

static void on_control_message(void *app, json_t *msg) {
    core *c = app;
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "healthcheck_result"))
        health_on_result(c, msg);
    else
        log_debug(TARGET, "ignoring control message %s", type);
}

const orchestrator_ops core_orchestrator_ops = {
    .on_log = on_log,
    .on_worker_log = on_worker_log,
    .on_ready = on_ready,
    .on_setup_failed = on_setup_failed,
    .on_slot_message = on_slot_message,
    .on_slot_poisoned = on_slot_poisoned,
    .on_worker_gone = on_worker_gone,
    .on_control_message = on_control_message,
};
