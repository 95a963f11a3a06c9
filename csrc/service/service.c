/* service/service.c: prediction lifecycle (register, dispatch, messages from the worker,
 * terminal transition), health and setup state, and the orchestrator's callbacks. */
#include "service/service.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "service/metrics.h"

#define TARGET "coglet::service"

const char *pred_status_name(pred_status s) {
    static const char *names[] = {"starting", "processing", "succeeded", "failed", "canceled"};
    return names[s];
}

static int is_terminal(pred_status s) { return s >= PRED_SUCCEEDED; }

/* ---- predictions ---- */

prediction *prediction_new(service *svc, const char *id, int is_training) {
    prediction *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->refs = 1;
    p->svc = svc;
    p->id = strdup(id);
    p->is_training = is_training;
    p->outputs = json_array();
    p->metrics = json_object();
    p->context = json_object();
    buf_init(&p->logs, PRED_LOGS_MAX);
    p->record_events = svc->streaming;
    sse_ring_init(&p->history, svc->cfg.stream_history);
    p->started = now_monotonic();
    if (!p->id || !p->outputs || !p->metrics || !p->context) {
        prediction_unref(p);
        return NULL;
    }
    return p;
}

void prediction_ref(prediction *p) { p->refs++; }

void prediction_unref(prediction *p) {
    if (--p->refs > 0)
        return;
    if (p->wh)
        webhook_free(p->wh);
    sse_ring_free(&p->history);
    free(p->id);
    json_decref(p->input);
    json_decref(p->context);
    json_decref(p->outputs);
    json_decref(p->output);
    json_decref(p->metrics);
    buf_free(&p->logs);
    free(p->error);
    free(p->output_error);
    free(p->input_raw);
    free(p);
}

static json_t *metrics_with_time(const prediction *p) {
    json_t *m = json_deep_copy(p->metrics);
    if (is_terminal(p->status))
        json_object_set_new(m, "predict_time", json_real(p->predict_time_s));
    return m;
}

json_t *prediction_state_json(const prediction *p, int with_input) {
    json_t *o = json_object();
    json_object_set_new(o, "id", json_string(p->id));
    json_object_set_new(o, "status", json_string(pred_status_name(p->status)));
    json_object_set_new(o, "logs", json_stringn(p->logs.data ? p->logs.data : "", p->logs.len));
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
        json_object_set_new(o, "logs", json_stringn(p->logs.data ? p->logs.data : "", p->logs.len));
        json_object_set(o, "output", p->output ? p->output : json_null());
    } else {
        json_object_set_new(o, "logs", json_string(""));
        if (p->status == PRED_FAILED)
            json_object_set_new(o, "error", json_string(p->error ? p->error : ""));
    }
    return o;
}

/* ---- registry: at most one entry per slot, so a list is enough ---- */

prediction *service_find(service *svc, const char *id) {
    for (prediction *p = svc->registry; p; p = p->next)
        if (!strcmp(p->id, id))
            return p;
    return NULL;
}

void service_register(service *svc, prediction *p) {
    /* POST with an id in flight replaces the old entry (SPEC 3.5 step 6). */
    prediction *old = service_find(svc, p->id);
    if (old)
        service_unregister(svc, old);
    prediction_ref(p);
    p->in_registry = 1;
    p->next = svc->registry;
    svc->registry = p;
    svc->num_inflight++;
}

void service_unregister(service *svc, prediction *p) {
    if (!p->in_registry)
        return;
    for (prediction **pp = &svc->registry; *pp; pp = &(*pp)->next) {
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    }
    p->next = NULL;
    p->in_registry = 0;
    svc->num_inflight--;
    prediction_unref(p);
}

static void maybe_finish_shutdown(service *svc);

/* ---- response bodies ---- */

#define SEGMENT_MIN ((size_t)1 << 20)

typedef struct segmented_body {
    json_t *body; /* keeps the referenced strings alive */
    json_segments segs;
} segmented_body;

static void segmented_body_release(void *ctx) {
    segmented_body *sb = ctx;
    json_segments_free(&sb->segs);
    json_decref(sb->body);
    free(sb);
}

/* Sends body (taken) as JSON with sorted keys. A large one goes out in pieces that reference
 * its big strings where they are (a data-URL output is never copied into the body). */
void respond_json_body(http_conn *conn, int status, json_t *body) {
    if (json_out_size_hint(body) >= SEGMENT_MIN) {
        segmented_body *sb = calloc(1, sizeof *sb);
        if (sb && json_out_segments(body, JSON_OUT_SORTED, SEGMENT_MIN, &sb->segs) == BUF_OK) {
            sb->body = body;
            const char **parts = malloc(sb->segs.n * sizeof *parts);
            size_t *lens = malloc(sb->segs.n * sizeof *lens);
            if (parts && lens) {
                for (size_t i = 0; i < sb->segs.n; i++) {
                    parts[i] = sb->segs.v[i].ptr;
                    lens[i] = sb->segs.v[i].len;
                }
                http_respond_parts(conn, status, "application/json", parts, lens, (unsigned)sb->segs.n,
                                   segmented_body_release, sb);
                free(parts);
                free(lens);
                return;
            }
            free(parts);
            free(lens);
            sb->body = NULL;
            json_segments_free(&sb->segs);
        }
        free(sb);
    }
    char *text = json_out_string(body, JSON_OUT_SORTED);
    json_decref(body);
    if (text)
        http_respond_json_owned(conn, status, text);
    else
        http_respond_json(conn, 500, "{\"error\":\"failed to encode response\"}");
}

static void pending_wh_add(service *svc, webhook *wh) {
    if (svc->num_pending_wh == svc->cap_pending_wh) {
        int cap = svc->cap_pending_wh ? svc->cap_pending_wh * 2 : 16;
        webhook **n = realloc(svc->pending_wh, (size_t)cap * sizeof *n);
        if (!n)
            return;
        svc->pending_wh = n;
        svc->cap_pending_wh = cap;
    }
    svc->pending_wh[svc->num_pending_wh++] = wh;
}

static void webhook_done(void *ctx, webhook *wh) {
    service *svc = ctx;
    for (int i = 0; i < svc->num_pending_wh; i++) {
        if (svc->pending_wh[i] == wh) {
            svc->pending_wh[i] = svc->pending_wh[--svc->num_pending_wh];
            break;
        }
    }
    svc->pending_webhooks--;
    maybe_finish_shutdown(svc);
}

void service_finish(service *svc, prediction *p, pred_status status, const char *error) {
    if (is_terminal(p->status))
        return; /* a terminal status never changes */
    prediction_ref(p);
    p->status = status;
    p->predict_time_s = now_monotonic() - p->started;
    if (status == PRED_FAILED) {
        free(p->error);
        p->error = strdup(error ? error : "");
    }
    if (status == PRED_SUCCEEDED) {
        json_decref(p->output);
        size_t n = json_array_size(p->outputs);
        if (svc->output_is_array || p->is_stream)
            p->output = json_incref(p->outputs);
        else if (n == 0)
            p->output = json_null();
        else if (n == 1)
            p->output = json_incref(json_array_get(p->outputs, 0));
        else
            p->output = json_incref(p->outputs);
    }
    /* failures are worth a line at the default level; the rest only when debugging */
    log_level level = status == PRED_FAILED ? LOG_WARN : LOG_DEBUG;
    if (log_enabled(level, "coglet::prediction")) {
        json_t *fields = json_pack("{s:s, s:s}", "prediction_id", p->id, "status", pred_status_name(status));
        if (status == PRED_FAILED)
            json_object_set_new(fields, "error", json_string(p->error ? p->error : ""));
        log_event(level, "coglet::prediction", fields, "Prediction %s", pred_status_name(status));
    }
    json_t *state = prediction_state_json(p, 0);
    prediction_emit(p, "completed", state);
    if (p->wh) {
        webhook *wh = p->wh;
        p->wh = NULL;
        svc->pending_webhooks++;
        pending_wh_add(svc, wh);
        webhook_completed(wh, state, webhook_done, svc);
    }
    json_decref(state);
    service_unregister(svc, p);
    if (p->sync_res) {
        response *res = p->sync_res;
        http_conn *conn = res->conn;
        p->sync_res = NULL;
        conn->app_data = NULL;
        free(res);
        respond_json_body(conn, 200, prediction_sync_json(p));
        prediction_unref(p); /* the waiter's reference */
    }
    prediction_unref(p);
    maybe_finish_shutdown(svc);
}

/* /tmp/coglet/predictions/{id}/outputs, the id made safe as a path component (the
 * original uses it verbatim, so an id like ../../x escapes the directory). */
void prediction_output_dir(const char *id, char *out, size_t outlen) {
    char safe[1024];
    size_t n = 0;
    for (const char *c = id; *c && n < sizeof safe - 1; c++)
        safe[n++] = (isalnum((unsigned char)*c) || *c == '-' || *c == '_' || *c == '.') ? *c : '_';
    safe[n] = '\0';
    if (!n || !strcmp(safe, ".") || !strcmp(safe, ".."))
        snprintf(safe, sizeof safe, "_");
    snprintf(out, outlen, "/tmp/coglet/predictions/%s/outputs", safe);
}

#define SPILL_THRESHOLD ((size_t)6 << 20)
#define SHUTDOWN_WEBHOOK_WAIT_MS 3000

static void send_predict(service *svc, prediction *p, slot *s, json_t *msg);
static void send_predict_with_input(service *svc, prediction *p, slot *s, json_t *msg, const buf *input);
static void spill_failed(service *svc, prediction *p, slot *s, const char *error);
static void spill_input(service *svc, prediction *p, slot *s, json_t *msg, const char *outdir, char *text);

static void random_hex(char *out, int n) {
    static const char hex[] = "0123456789abcdef";
    unsigned char b[32];
    uv_random(NULL, NULL, b, sizeof b, 0, NULL);
    for (int i = 0; i < n && i < 32; i++)
        out[i] = hex[b[i] & 15];
    out[n] = '\0';
}

void service_dispatch(service *svc, prediction *p, slot *s) {
    service_register(svc, p);
    p->status = PRED_PROCESSING;
    /* the slot and dispatch number first: a cancel raised by the events below (an SSE
     * client already gone) must reach the worker, which holds it until the predict frame */
    p->slot = s;
    s->prediction = p;
    prediction_ref(p); /* the slot's */
    p->seq = ++s->seq;
    prediction_ref(p);
    json_t *start = json_pack("{s:s, s:s}", "id", p->id, "status", "processing");
    prediction_emit(p, "start", start);
    json_decref(start);
    if (p->wh) {
        json_t *state = prediction_state_json(p, 0);
        webhook_event(p->wh, WEBHOOK_START, state);
        json_decref(state);
    }
    int gone = p->slot != s; /* finished meanwhile */
    prediction_unref(p);
    if (gone)
        return;
    if (!p->input)
        p->input = json_object();
    char dir[1200];
    prediction_output_dir(p->id, dir, sizeof dir);
    json_t *msg = json_pack("{s:s, s:s, s:I, s:O, s:s}", "type", "predict", "id", p->id, "seq", (json_int_t)p->seq,
                            "context", p->context, "output_dir", dir);
    if (!msg) {
        s->prediction = NULL;
        p->slot = NULL;
        orchestrator_release_slot(&svc->orch, s);
        service_finish(svc, p, PRED_FAILED, "Failed to send request: cannot encode the request");
        prediction_unref(p); /* the slot's */
        return;
    }
    /* The input is encoded once (or not at all: the client's bytes, unchanged), then goes
     * inline in the frame or into the spill file. */
    buf in;
    buf_init(&in, HTTP_MAX_BODY * 2);
    if (p->input_raw) {
        in.data = p->input_raw;
        in.cap = p->input_raw_off + p->input_raw_len + 1;
        in.len = p->input_raw_off + p->input_raw_len;
        p->input_raw = NULL;
        buf_consume(&in, p->input_raw_off); /* the value's bytes, at the front */
        in.len = p->input_raw_len;
        in.data[in.len] = '\0';
    } else if (json_out_append(&in, p->input, 0) != BUF_OK) {
        buf_free(&in);
        json_decref(msg);
        spill_failed(svc, p, s, "Failed to send request: cannot encode the input");
        return;
    }
    if (in.len > SPILL_THRESHOLD) {
        spill_input(svc, p, s, msg, dir, buf_steal(&in));
        return;
    }
    send_predict_with_input(svc, p, s, msg, &in);
    buf_free(&in);
}

static void send_predict_with_input(service *svc, prediction *p, slot *s, json_t *msg, const buf *input) {
    size_t len;
    char *frame = frame_encode_with_raw(msg, "input", input->data, input->len, &len);
    json_decref(msg);
    if (!frame) {
        spill_failed(svc, p, s, "Failed to send request: request over the frame limit");
        return;
    }
    int rc = orchestrator_send_slot_raw(&svc->orch, s, frame, len);
    if (rc != 0 && p->slot == s) {
        char err[256];
        snprintf(err, sizeof err, "Failed to send request: Failed to send on slot socket: %s", uv_strerror(rc));
        s->prediction = NULL;
        p->slot = NULL;
        orchestrator_poison(&svc->orch, s);
        service_finish(svc, p, PRED_FAILED, err);
        prediction_unref(p); /* the slot's */
    }
}

/* Sends the predict frame (consumed). */
static void send_predict(service *svc, prediction *p, slot *s, json_t *msg) {
    int rc = orchestrator_send_slot(&svc->orch, s, msg);
    json_decref(msg);
    if (rc == 0 || p->slot != s)
        return;
    char err[256];
    s->prediction = NULL;
    p->slot = NULL;
    if (rc == UV_E2BIG) {
        /* nothing reached the worker: the slot is fine */
        snprintf(err, sizeof err, "Failed to send request: request over the %zu byte frame limit",
                 (size_t)FRAME_MAX_PAYLOAD);
        orchestrator_release_slot(&svc->orch, s);
    } else {
        snprintf(err, sizeof err, "Failed to send request: Failed to send on slot socket: %s", uv_strerror(rc));
        orchestrator_poison(&svc->orch, s);
    }
    service_finish(svc, p, PRED_FAILED, err);
    prediction_unref(p); /* the slot's */
}

/* ---- input spill (SPEC 7.6): over 6 MiB goes through a file, written off the loop ---- */

typedef struct spill_job {
    uv_work_t work;
    service *svc;
    prediction *p;
    slot *s;
    json_t *msg;
    char *text;
    char path[1400];
    char error[1600];
} spill_job;

static int mkdirs(char *path) {
    for (char *c = path + 1; *c; c++) {
        if (*c != '/')
            continue;
        *c = '\0';
        int rc = mkdir(path, 0755);
        *c = '/';
        if (rc != 0 && errno != EEXIST)
            return -1;
    }
    return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static void spill_write(uv_work_t *req) {
    spill_job *job = container_of(req, spill_job, work);
    char dir[1400];
    snprintf(dir, sizeof dir, "%s", job->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    if (mkdirs(dir) != 0) {
        snprintf(job->error, sizeof job->error, "cannot create %s: %s", dir, strerror(errno));
        return;
    }
    int fd = open(job->path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(job->error, sizeof job->error, "cannot create %s: %s", job->path, strerror(errno));
        return;
    }
    size_t len = strlen(job->text), off = 0;
    while (off < len) {
        ssize_t n = write(fd, job->text + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(job->error, sizeof job->error, "writing %s: %s", job->path, strerror(errno));
            break;
        }
        off += (size_t)n;
    }
    close(fd);
    if (job->error[0])
        unlink(job->path);
}

static void spill_done(uv_work_t *req, int status) {
    spill_job *job = container_of(req, spill_job, work);
    service *svc = job->svc;
    prediction *p = job->p;
    free(job->text);
    if (status == 0 && !job->error[0] && p->slot == job->s && p->status == PRED_PROCESSING) {
        json_object_set_new(job->msg, "input_file", json_string(job->path));
        send_predict(svc, p, job->s, job->msg);
    } else {
        json_decref(job->msg);
        if (p->slot == job->s && p->status == PRED_PROCESSING) {
            char err[400];
            snprintf(err, sizeof err, "Failed to send request: cannot spill input: %.300s",
                     job->error[0] ? job->error : "cancelled");
            spill_failed(svc, p, job->s, err);
        }
    }
    prediction_unref(p);
    free(job);
}

/* Nothing reached the worker: the slot goes back, the prediction fails. */
static void spill_failed(service *svc, prediction *p, slot *s, const char *error) {
    if (p->slot == s) {
        s->prediction = NULL;
        p->slot = NULL;
        orchestrator_release_slot(&svc->orch, s);
        prediction_unref(p); /* the slot's */
    }
    service_finish(svc, p, PRED_FAILED, error);
}

static void spill_input(service *svc, prediction *p, slot *s, json_t *msg, const char *outdir, char *text) {
    spill_job *job = calloc(1, sizeof *job);
    if (!job || !text) {
        free(job);
        free(text);
        json_decref(msg);
        spill_failed(svc, p, s, "Failed to send request: out of memory spilling input");
        return;
    }
    char uuid[40];
    random_hex(uuid, 32);
    /* .../{id}/outputs -> .../{id}/inputs/spill_{uuid}.json */
    snprintf(job->path, sizeof job->path, "%.*s/inputs/spill_%s.json", (int)(strrchr(outdir, '/') - outdir), outdir,
             uuid);
    job->svc = svc;
    job->p = p;
    job->s = s;
    job->msg = msg;
    job->text = text;
    prediction_ref(p);
    if (uv_queue_work(svc->loop, &job->work, spill_write, spill_done) != 0) {
        free(text);
        json_decref(msg);
        free(job);
        spill_failed(svc, p, s, "Failed to send request: thread pool unavailable");
        prediction_unref(p);
    }
}

int service_cancel(service *svc, const char *id) {
    prediction *p = service_find(svc, id);
    if (!p)
        return -1;
    p->cancel_requested = 1;
    if (p->done_pending) {
        /* the worker is done; only uploads remain, and they stop here */
        prediction_ref(p);
        outputs_abort(svc, p);
        service_finish(svc, p, PRED_CANCELED, NULL);
        prediction_unref(p);
        return 0;
    }
    if (p->slot) {
        /* seq names this dispatch: the worker applies a cancel that overtook its predict
         * frame when the frame arrives, and drops one for a prediction already over. */
        json_t *c = json_pack("{s:s, s:s, s:s, s:I}", "type", "cancel", "slot", p->slot->id, "id", p->id, "seq",
                              (json_int_t)p->seq);
        orchestrator_send_control(&svc->orch, c);
        json_decref(c);
    }
    return 0;
}

/* ---- orchestrator callbacks ---- */

static void on_log(void *app, const char *source, const char *line) {
    service *svc = app;
    (void)source;
    log_event_str(LOG_INFO, svc->health == HEALTH_STARTING ? "coglet::setup" : "coglet::user", NULL, line);
}

static void on_worker_log(void *app, const char *target, const char *level, const char *message) {
    (void)app;
    log_event_str(log_level_parse(level, LOG_INFO), target ? target : "coglet::worker", NULL, message ? message : "");
}

static void write_k8s_ready(uv_work_t *req) {
    (void)req;
    if (mkdir("/var/run/cog", 0755) != 0 && errno != EEXIST) {
        log_warn(TARGET, "cannot create /var/run/cog: %s", strerror(errno));
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

static void drop_validators(service *svc) {
    validator_free(svc->input_validator);
    validator_free(svc->training_validator);
    svc->input_validator = svc->training_validator = NULL;
    svc->training_schema_broken = 0;
}

/* Validators are compiled once, here; one that does not compile is logged and skipped. */
static void compile_validators(service *svc, json_t *schema) {
    char err[512];
    json_t *schemas = json_object_get(json_object_get(schema, "components"), "schemas");
    if (json_object_get(schemas, "Input")) {
        svc->input_validator = validator_compile(schema, "Input", err, sizeof err);
        if (!svc->input_validator)
            log_warn(TARGET, "input schema does not compile; inputs are not validated: %s", err);
    }
    if (json_object_get(schemas, "TrainingInput")) {
        svc->training_validator = validator_compile(schema, "TrainingInput", err, sizeof err);
        svc->training_schema_broken = svc->training_validator == NULL;
        if (!svc->training_validator)
            log_warn(TARGET, "training input schema does not compile; training inputs are not validated: %s", err);
    }
}

static void install_schema(service *svc, json_t *schema) {
    json_decref(svc->schema);
    svc->schema = NULL;
    drop_validators(svc);
    svc->streaming = svc->output_is_array = svc->has_training_input = 0;
    if (!json_is_object(schema))
        return;
    svc->schema = json_incref(schema);
    json_t *post = json_object_get(json_object_get(json_object_get(schema, "paths"), "/predictions"), "post");
    svc->streaming = json_is_true(json_object_get(post, "x-cog-streaming"));
    json_t *schemas = json_object_get(json_object_get(schema, "components"), "schemas");
    json_t *out = json_object_get(schemas, svc->cfg.is_train ? "TrainingOutput" : "Output");
    const char *type = json_string_value(json_object_get(out, "type"));
    svc->output_is_array = type && !strcmp(type, "array");
    svc->has_training_input = json_object_get(schemas, "TrainingInput") != NULL;
    compile_validators(svc, schema);
}

static void on_ready(void *app, json_t *schema, json_t *ready) {
    service *svc = app;
    install_schema(svc, schema); /* before READY: nothing is served unvalidated */
    svc->user_healthcheck = json_is_true(json_object_get(ready, "has_healthcheck"));
    svc->health = HEALTH_READY;
    log_event(LOG_INFO, TARGET,
              json_pack("{s:i, s:s}", "num_slots", svc->cfg.max_concurrency, "mode",
                        svc->cfg.is_train ? "train" : "predict"),
              "Server ready");
    free(svc->setup_logs);
    svc->setup_logs = log_capture_take();
    svc->setup_status = "succeeded";
    svc->setup_completed_ns = now_realtime_ns();
    log_info(TARGET, "Setup complete, now accepting requests");
    if (getenv("KUBERNETES_SERVICE_HOST")) {
        uv_work_t *req = malloc(sizeof *req);
        if (req && uv_queue_work(svc->loop, req, write_k8s_ready, k8s_done) != 0)
            free(req);
    }
}

static void on_setup_failed(void *app, const char *error) {
    service *svc = app;
    if (svc->health == HEALTH_SETUP_FAILED)
        return;
    svc->health = HEALTH_SETUP_FAILED;
    /* SPEC 9.3 keeps only the error string; what setup printed before it failed is what a
     * user needs to see why, so it comes first, and the error string ends the text. */
    char *captured = log_capture_take();
    free(svc->setup_logs);
    size_t n = (captured ? strlen(captured) : 0) + strlen(error) + 1;
    svc->setup_logs = malloc(n);
    if (svc->setup_logs)
        snprintf(svc->setup_logs, n, "%s%s", captured ? captured : "", error);
    free(captured);
    log_error(TARGET, "Setup failed: %s", error);
    svc->setup_status = "failed";
    svc->setup_completed_ns = now_realtime_ns();
}

static void slot_finished(service *svc, slot *s, prediction *p) {
    s->prediction = NULL;
    if (p) {
        p->slot = NULL;
        prediction_unref(p); /* the slot's */
    }
    orchestrator_release_slot(&svc->orch, s);
}

/* The worker is done with p (or gone): the slot is freed first, then p ends. */
static void end_on_slot(service *svc, slot *s, prediction *p, pred_status status, const char *error) {
    prediction_ref(p);
    slot_finished(svc, s, p);
    outputs_abort(svc, p);
    service_finish(svc, p, status, error);
    prediction_unref(p);
}

static void on_slot_message(void *app, slot *s, json_t *msg) {
    service *svc = app;
    prediction *p = s->prediction;
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "log_line")) {
        const char *data = json_string_value(json_object_get(msg, "data"));
        size_t len = json_string_length(json_object_get(msg, "data"));
        if (!data || !len)
            return;
        if (!p) {
            log_event(LOG_WARN, "coglet::prediction", json_pack("{s:s}", "prediction_id", "NO_ACTIVE_PREDICTION"),
                      "%s", data);
            return;
        }
        if (buf_append(&p->logs, data, len) != BUF_OK)
            log_warn(TARGET, "prediction %s: logs over %zu bytes; dropping", p->id, (size_t)PRED_LOGS_MAX);
        const char *source = json_string_value(json_object_get(msg, "source"));
        json_t *ev = json_pack("{s:O, s:s}", "data", json_object_get(msg, "data"), "source",
                               source ? source : "stdout");
        prediction_emit(p, "log", ev);
        json_decref(ev);
        if (p->wh) {
            json_t *state = prediction_state_json(p, 0);
            webhook_event(p->wh, WEBHOOK_LOGS, state);
            json_decref(state);
        }
        char *line = strndup(data, len && data[len - 1] == '\n' ? len - 1 : len);
        if (line) {
            log_event_str(LOG_INFO, "coglet::prediction", json_pack("{s:s}", "prediction_id", p->id), line);
            free(line);
        }
        return;
    }
    if (!strcmp(type, "protocol_version"))
        return;
    if (!p) {
        log_debug(TARGET, "dropping %s on idle slot %d", type, s->index);
        return;
    }
    if (!strcmp(type, "output_chunk")) {
        json_t *out = json_object_get(msg, "output");
        if (!out)
            out = json_null();
        json_array_append(p->outputs, out);
        prediction_output_arrived(p, out, (size_t)json_integer_value(json_object_get(msg, "index")));
    } else if (!strcmp(type, "file_output")) {
        outputs_on_file(svc, p, msg);
    } else if (!strcmp(type, "metric")) {
        const char *mode = json_string_value(json_object_get(msg, "mode"));
        const char *name = json_string_value(json_object_get(msg, "name"));
        json_t *value = json_object_get(msg, "value");
        json_t *ev = json_pack("{s:s, s:s, s:O}", "mode", mode ? mode : "replace", "name", name ? name : "", "value",
                               value ? value : json_null());
        prediction_emit(p, "metric", ev);
        json_decref(ev);
        metrics_merge(p->metrics, json_string_value(json_object_get(msg, "name")), json_object_get(msg, "value"),
                      json_string_value(json_object_get(msg, "mode")));
    } else if (!strcmp(type, "done")) {
        p->is_stream = json_is_true(json_object_get(msg, "is_stream"));
        json_t *out = json_object_get(msg, "output");
        if (out) {
            /* the final value, inline in done (one frame instead of two) */
            json_array_append(p->outputs, out);
            prediction_output_arrived(p, out, 0);
        }
        prediction_ref(p);
        slot_finished(svc, s, p);
        p->done_pending = 1; /* the worker is free; uploads may still run */
        outputs_maybe_done(svc, p);
        prediction_unref(p);
    } else if (!strcmp(type, "failed")) {
        const char *err = json_string_value(json_object_get(msg, "error"));
        end_on_slot(svc, s, p, PRED_FAILED, err ? err : "unknown error");
    } else if (!strcmp(type, "cancelled")) {
        end_on_slot(svc, s, p, PRED_CANCELED, NULL);
    } else {
        log_debug(TARGET, "ignoring slot message %s", type);
    }
}

void prediction_output_arrived(prediction *p, json_t *value, size_t index) {
    json_t *ev = json_pack("{s:O, s:I}", "chunk", value, "index", (json_int_t)index);
    prediction_emit(p, "output", ev);
    json_decref(ev);
    if (p->wh) {
        json_t *state = prediction_state_json(p, 0);
        webhook_event(p->wh, WEBHOOK_OUTPUT, state);
        json_decref(state);
    }
}

void outputs_maybe_done(service *svc, prediction *p) {
    if (!p->done_pending || p->num_ops > 0 || p->status >= PRED_SUCCEEDED)
        return;
    if (p->output_error)
        service_finish(svc, p, PRED_FAILED, p->output_error);
    else
        service_finish(svc, p, PRED_SUCCEEDED, NULL);
}

static void on_slot_poisoned(void *app, slot *s, const char *error) {
    service *svc = app;
    prediction *p = s->prediction;
    log_error(TARGET, "slot %d poisoned: %s", s->index, error);
    if (p)
        end_on_slot(svc, s, p, PRED_FAILED, error);
}

static void on_worker_gone(void *app, const char *error) {
    service *svc = app;
    svc->health = HEALTH_DEFUNCT;
    health_fail_waiters(svc, NULL);
    for (int i = 0; i < svc->cfg.max_concurrency; i++) {
        slot *s = &svc->orch.slots[i];
        if (s->prediction)
            end_on_slot(svc, s, s->prediction, PRED_FAILED, error);
    }
    maybe_finish_shutdown(svc);
}

static void on_control_message(void *app, json_t *msg) {
    service *svc = app;
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "healthcheck_result"))
        health_on_result(svc, msg);
    else
        log_debug(TARGET, "ignoring control message %s", type);
}

const orchestrator_ops service_orchestrator_ops = {
    .on_log = on_log,
    .on_worker_log = on_worker_log,
    .on_ready = on_ready,
    .on_setup_failed = on_setup_failed,
    .on_slot_message = on_slot_message,
    .on_slot_poisoned = on_slot_poisoned,
    .on_worker_gone = on_worker_gone,
    .on_control_message = on_control_message,
};

/* ---- start and stop ---- */

static void on_keepalive(uv_timer_t *t) { sse_keepalive_tick(t->data); }

int service_client(service *svc) {
    if (svc->client_open)
        return 0;
    if (svc->shutting_down && svc->closing)
        return -1;
    if (http_client_init(&svc->client, svc->loop) != 0)
        return -1;
    svc->client_open = 1;
    return 0;
}

static void on_webhook_deadline(uv_timer_t *t) {
    service *svc = t->data;
    svc->webhooks_abandoned = 1;
    while (svc->num_pending_wh > 0) {
        webhook *wh = svc->pending_wh[--svc->num_pending_wh];
        log_warn(TARGET, "shutdown: abandoning a terminal webhook not delivered in time");
        webhook_free(wh);
        svc->pending_webhooks--;
    }
    maybe_finish_shutdown(svc);
}

int service_start(service *svc, uv_loop_t *loop, const service_config *cfg) {
    svc->loop = loop;
    svc->cfg = *cfg;
    svc->health = cfg->predictor_ref ? HEALTH_STARTING : HEALTH_UNKNOWN;
    int rc = http_server_init(&svc->http, loop, &service_http_ops, svc);
    if (rc)
        return rc;
    rc = http_server_listen(&svc->http, cfg->host, cfg->port, svc->bound, sizeof svc->bound);
    if (rc)
        return rc;
    log_info("coglet::transport::http::server", "Starting coglet server on %s", svc->bound);
    webhook_settings_from_env(&svc->webhook_settings);
    const char *urb = getenv("COGLET_UPLOAD_RETRY_BASE");
    char *urb_end = NULL;
    svc->upload_retry_base = urb && *urb ? strtod(urb, &urb_end) : 0.5;
    if (!(svc->upload_retry_base >= 0) || (urb_end && *urb_end))
        svc->upload_retry_base = 0.5;
    uv_timer_init(loop, &svc->keepalive_timer);
    uv_timer_init(loop, &svc->grace_timer);
    uv_timer_init(loop, &svc->webhook_timer);
    svc->keepalive_timer.data = svc->grace_timer.data = svc->webhook_timer.data = svc;
    svc->timers_open = 3;
    uv_timer_start(&svc->keepalive_timer, on_keepalive, 5000, 5000);
    uv_unref((uv_handle_t *)&svc->keepalive_timer);
    if (!cfg->predictor_ref) {
        log_info(TARGET, "No predictor specified, serving health endpoints only");
        free(log_capture_take());
        return 0;
    }
    svc->setup_started_ns = now_realtime_ns();
    svc->setup_status = "starting";
    orchestrator_config oc = {
        .python = cfg->python,
        .predictor_ref = cfg->predictor_ref,
        .num_slots = cfg->max_concurrency,
        .is_train = cfg->is_train,
        .setup_timeout = cfg->setup_timeout,
    };
    rc = orchestrator_start(&svc->orch, loop, &oc, &service_orchestrator_ops, svc);
    svc->orch_started = 1;
    if (rc) {
        char err[512];
        snprintf(err, sizeof err, "failed to spawn worker: spawner failed: failed to spawn process: %s (os error %d)",
                 strerror(-rc), -rc);
        on_setup_failed(svc, err);
    }
    return 0;
}

static void on_http_drained(http_server *http) {
    service *svc = container_of(http, service, http);
    maybe_finish_shutdown(svc);
}

static void on_orch_closed(orchestrator *orch) {
    service *svc = container_of(orch, service, orch);
    svc->orch_started = 0;
    maybe_finish_shutdown(svc);
}

static void on_client_closed(http_client *client) {
    service *svc = container_of(client, service, client);
    svc->client_open = 0;
    maybe_finish_shutdown(svc);
}

static void on_timer_closed(uv_handle_t *h) {
    service *svc = h->data;
    if (--svc->timers_open == 0)
        maybe_finish_shutdown(svc);
}

static void force_phase(service *svc) {
    /* grace is over and cancels had their chance: fail what is left, drop deliveries */
    prediction *p;
    while ((p = svc->registry) != NULL) {
        prediction_ref(p);
        if (p->slot) {
            p->slot->prediction = NULL;
            orchestrator_poison(&svc->orch, p->slot);
            p->slot = NULL;
            prediction_unref(p);
        }
        outputs_abort(svc, p);
        service_finish(svc, p, PRED_FAILED, "server shut down before the prediction finished");
        prediction_unref(p);
    }
    while (svc->num_pending_wh > 0) {
        webhook *wh = svc->pending_wh[svc->num_pending_wh - 1];
        log_warn(TARGET, "shutdown: abandoning a terminal webhook still being retried");
        webhook_free(wh); /* no done callback: forget it here */
        svc->num_pending_wh--;
        svc->pending_webhooks--;
    }
}

/* service_cancel may finish (and unregister) a prediction: walk a snapshot of the ids. */
static void cancel_all(service *svc) {
    int n = 0;
    for (prediction *p = svc->registry; p; p = p->next)
        n++;
    char **ids = calloc((size_t)n + 1, sizeof *ids);
    if (!ids)
        return;
    int i = 0;
    for (prediction *p = svc->registry; p && i < n; p = p->next)
        ids[i++] = strdup(p->id);
    for (i = 0; i < n; i++) {
        if (ids[i])
            service_cancel(svc, ids[i]);
        free(ids[i]);
    }
    free(ids);
}

static void on_grace_timer(uv_timer_t *t) {
    service *svc = t->data;
    if (!svc->grace_expired) {
        svc->grace_expired = 1;
        if (svc->num_inflight > 0)
            log_warn(TARGET, "shutdown grace period over: cancelling %d running prediction(s)", svc->num_inflight);
        cancel_all(svc);
        /* cancels get a few seconds to land before the hard stop */
        uv_timer_start(&svc->grace_timer, on_grace_timer, 5000, 0);
        maybe_finish_shutdown(svc);
        return;
    }
    svc->forced = 1;
    force_phase(svc);
    maybe_finish_shutdown(svc);
}

/* Shutdown, in order: accepted predictions end (cancelled after the grace period) and
 * their terminal webhooks get their attempts; then connections close, the worker is told,
 * libcurl and the timers close, and the loop is left. */
static void maybe_finish_shutdown(service *svc) {
    if (!svc->shutting_down || svc->stopped)
        return;
    if (!svc->forced && svc->num_inflight > 0)
        return;
    if (!svc->forced && svc->pending_webhooks > 0) {
        /* Every prediction is over. Terminal webhooks keep their retry series for a few
         * more seconds, then are abandoned: a dead target never holds the process. */
        if (!svc->webhook_phase) {
            svc->webhook_phase = 1;
            log_info(TARGET, "shutdown: waiting up to %.1fs for %d terminal webhook(s)",
                     SHUTDOWN_WEBHOOK_WAIT_MS / 1000.0, svc->pending_webhooks);
            uv_timer_start(&svc->webhook_timer, on_webhook_deadline, SHUTDOWN_WEBHOOK_WAIT_MS, 0);
        }
        return;
    }
    if (!svc->closing) {
        svc->closing = 1;
        http_server_stop_listening(&svc->http);
        http_server_close_idle(&svc->http);
    }
    if (svc->http.num_conns > 0 || svc->http.listening)
        return;
    if (svc->orch_started) {
        if (!svc->orch.closing)
            orchestrator_close(&svc->orch, on_orch_closed);
        return;
    }
    if (svc->client_open) {
        if (!svc->client.closing)
            http_client_close(&svc->client, on_client_closed);
        return;
    }
    if (svc->timers_open > 0) {
        if (!svc->timers_closing) {
            svc->timers_closing = 1;
            uv_close((uv_handle_t *)&svc->keepalive_timer, on_timer_closed);
            uv_close((uv_handle_t *)&svc->grace_timer, on_timer_closed);
            uv_close((uv_handle_t *)&svc->webhook_timer, on_timer_closed);
        }
        return;
    }
    svc->stopped = 1;
    log_info(TARGET, "Server shutdown complete");
    json_decref(svc->schema);
    svc->schema = NULL;
    drop_validators(svc);
    free(svc->setup_logs);
    svc->setup_logs = NULL;
    free(svc->user_healthcheck_error);
    svc->user_healthcheck_error = NULL;
    free(svc->pending_wh);
    svc->pending_wh = NULL;
    if (svc->on_stopped)
        svc->on_stopped(svc);
}

void service_begin_shutdown(service *svc, const char *why) {
    if (svc->shutting_down) {
        return;
    }
    svc->shutting_down = 1;
    if (why)
        log_info(TARGET, "%s", why);
    svc->http.on_drained = on_http_drained;
    /* Idle keep-alive connections go now, busy ones after their response; new create
     * requests meanwhile get 503. */
    http_server_close_idle(&svc->http);
    if (svc->num_inflight > 0 || svc->pending_webhooks > 0)
        log_event(LOG_INFO, TARGET,
                  json_pack("{s:i, s:i, s:f}", "in_flight", svc->num_inflight, "webhooks", svc->pending_webhooks,
                            "grace_seconds", svc->cfg.shutdown_grace),
                  "waiting for accepted predictions and their webhooks");
    uv_timer_start(&svc->grace_timer, on_grace_timer, (uint64_t)(svc->cfg.shutdown_grace * 1000), 0);
    maybe_finish_shutdown(svc);
}

void service_force_shutdown(service *svc) {
    if (!svc->shutting_down)
        service_begin_shutdown(svc, NULL);
    svc->grace_expired = 1;
    svc->forced = 1;
    cancel_all(svc);
    force_phase(svc);
    http_server_close_all(&svc->http);
    maybe_finish_shutdown(svc);
}
