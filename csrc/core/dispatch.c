/* core/dispatch.c: a prediction on its worker slot. Sends the predict frame (numbered with
 * the slot's `seq`; an input over 6 MiB goes through a spill file written off the loop),
 * turns what comes back on the slot into prediction events, and gives the slot back. The
 * frames are described in docs/architecture.md ("Transport"). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/ids.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::service"
#define SPILL_THRESHOLD ((size_t)6 << 20)
#define INPUT_MAX ((size_t)200 << 20) /* twice the largest request body, as encoded */

/* The one place a slot and a prediction are linked (prediction_create) and unlinked (here). */
void dispatch_unlink(prediction *p, slot_fate fate) {
    slot *s = p->slot;
    if (!s)
        return;
    core *c = p->core;
    trace_run_end(p); /* the worker is done with it */
    s->prediction = NULL;
    p->slot = NULL;
    if (fate == SLOT_POISON) {
        orchestrator_poison(&c->orch, s);
    } else {
        orchestrator_release_slot(&c->orch, s);
        waitq_schedule(c);
    }
    prediction_unref(p); /* the slot's */
    if (fate == SLOT_RELEASE)
        core_notify_doors(c);
}

void dispatch_abandon(prediction *p) {
    if (p->slot)
        p->slot->abandoned = 1;
    dispatch_unlink(p, SLOT_POISON);
}

/* A terminal message on a slot whose prediction was abandoned: the worker is done with it. */
static void slot_back(core *c, slot *s, const char *type) {
    if (!s->abandoned || (strcmp(type, "done") && strcmp(type, "failed") && strcmp(type, "cancelled")))
        return;
    s->abandoned = 0;
    log_info(TARGET, "slot %d is free again: the worker finished the abandoned prediction", s->index);
    orchestrator_unpoison(&c->orch, s);
    waitq_schedule(c);
}

/* Nothing reached the worker (or it can never answer): the slot's fate, then p fails. */
static void dispatch_failed(prediction *p, slot_fate fate, const char *error) {
    prediction_ref(p);
    dispatch_unlink(p, fate);
    prediction_finish(p, PRED_FAILED, error);
    prediction_unref(p);
}

/* /tmp/coglet/predictions/{id}/outputs, the id made safe as a path component (the Rust
 * coglet uses it verbatim, so an id like ../../x escapes the directory). */
void prediction_output_dir(const core *c, const char *id, char *out, size_t outlen) {
    char safe[1024];
    size_t n = 0;
    for (const char *ch = id; *ch && n < sizeof safe - 1; ch++)
        safe[n++] = (isalnum((unsigned char)*ch) || *ch == '-' || *ch == '_' || *ch == '.') ? *ch : '_';
    safe[n] = '\0';
    if (!n || !strcmp(safe, ".") || !strcmp(safe, ".."))
        snprintf(safe, sizeof safe, "_");
    snprintf(out, outlen, "%s/%s/outputs", c->cfg.output_dir_base, safe);
}

/* ---- sending ---- */

static const char *send_error_text(int rc) {
    return rc == UV_ENOBUFS ? "the worker has not read the previous frame" : uv_strerror(rc);
}

static void send_failed(prediction *p, slot *s, int rc) {
    if (p->slot != s)
        return; /* ended meanwhile */
    char err[256];
    if (rc == UV_E2BIG) {
        /* nothing reached the worker: the slot is fine */
        snprintf(err, sizeof err, "Failed to send request: request over the %zu byte frame limit",
                 (size_t)FRAME_MAX_PAYLOAD);
        dispatch_failed(p, SLOT_RELEASE, err);
    } else {
        snprintf(err, sizeof err, "Failed to send request: Failed to send on slot socket: %s", send_error_text(rc));
        dispatch_failed(p, SLOT_POISON, err);
    }
}

/* The predict frame (msg consumed) with the input inline. */
static void send_inline(prediction *p, slot *s, json_t *msg, const buf *input) {
    size_t len;
    char *frame = frame_encode_with_raw(msg, "input", input->data, input->len, &len);
    json_decref(msg);
    if (!frame) {
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: request over the frame limit");
        return;
    }
    int rc = orchestrator_send_slot_raw(&p->core->orch, s, frame, len);
    if (rc != 0 && p->slot == s) {
        char err[256];
        snprintf(err, sizeof err, "Failed to send request: Failed to send on slot socket: %s", send_error_text(rc));
        dispatch_failed(p, SLOT_POISON, err);
    }
}

/* The predict frame (msg consumed) naming the spill file. */
static void send_spilled(prediction *p, slot *s, json_t *msg) {
    int rc = orchestrator_send_slot(&p->core->orch, s, msg);
    json_decref(msg);
    if (rc != 0)
        send_failed(p, s, rc);
}

/* ---- input spill: over 6 MiB goes through a file, written on the thread pool ---- */

typedef struct spill_job {
    uv_work_t work;
    prediction *p;
    slot *s;
    json_t *msg;
    char *text;
    size_t len;
    char path[1400];
    char error[1600];
} spill_job;

static void spill_write(uv_work_t *req) {
    spill_job *job = container_of(req, spill_job, work);
    char dir[1400];
    snprintf(dir, sizeof dir, "%s", job->path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    int rc = fs_mkdirs(dir, 0755);
    if (rc != 0) {
        snprintf(job->error, sizeof job->error, "cannot create %s: %s", dir, strerror(-rc));
        return;
    }
    int fd = open(job->path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(job->error, sizeof job->error, "cannot create %s: %s", job->path, strerror(errno));
        return;
    }
    rc = fs_write_all(fd, job->text, job->len);
    if (rc != 0)
        snprintf(job->error, sizeof job->error, "writing %s: %s", job->path, strerror(-rc));
    close(fd);
    if (job->error[0])
        unlink(job->path);
}

static void spill_done(uv_work_t *req, int status) {
    spill_job *job = container_of(req, spill_job, work);
    prediction *p = job->p;
    free(job->text);
    int ours = p->slot == job->s && p->status == PRED_PROCESSING;
    if (ours && status == 0 && !job->error[0]) {
        json_object_set_new(job->msg, "input_file", json_string(job->path));
        send_spilled(p, job->s, job->msg);
    } else {
        json_decref(job->msg);
        if (ours) {
            char err[400];
            snprintf(err, sizeof err, "Failed to send request: cannot spill input: %.300s",
                     job->error[0] ? job->error : "cancelled");
            dispatch_failed(p, SLOT_RELEASE, err);
        }
    }
    prediction_unref(p);
    free(job);
}

static void spill_input(prediction *p, slot *s, json_t *msg, const char *outdir, buf *input) {
    spill_job *job = calloc(1, sizeof *job);
    if (!job) {
        buf_free(input);
        json_decref(msg);
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: out of memory spilling input");
        return;
    }
    char uuid[40];
    int rc = ids_random_hex(uuid, 32);
    if (rc != 0) {
        free(job);
        buf_free(input);
        json_decref(msg);
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: no randomness for the spill file name");
        return;
    }
    /* .../{id}/outputs -> .../{id}/inputs/spill_{uuid}.json */
    snprintf(job->path, sizeof job->path, "%.*s/inputs/spill_%s.json", (int)(strrchr(outdir, '/') - outdir), outdir,
             uuid);
    job->p = p;
    job->s = s;
    job->msg = msg;
    job->len = input->len;
    job->text = buf_steal(input);
    p->made_dir = 1;
    prediction_ref(p);
    if (uv_queue_work(p->core->loop, &job->work, spill_write, spill_done) != 0) {
        free(job->text);
        json_decref(msg);
        free(job);
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: thread pool unavailable");
        prediction_unref(p);
    }
}

/* The input's bytes: the client's own when they can go as they are, else encoded once. */
static int input_bytes(prediction *p, buf *in) {
    buf_init(in, INPUT_MAX);
    if (p->input_raw) {
        in->data = p->input_raw;
        in->cap = p->input_raw_off + p->input_raw_len + 1;
        in->len = p->input_raw_off + p->input_raw_len;
        p->input_raw = NULL;
        buf_consume(in, p->input_raw_off); /* the value's bytes, at the front */
        in->len = p->input_raw_len;
        in->data[in->len] = '\0';
        return 0;
    }
    if (json_out_append(in, p->input, 0) != BUF_OK) {
        buf_free(in);
        return -1;
    }
    return 0;
}

void dispatch_prediction(prediction *p) {
    core *c = p->core;
    slot *s = p->slot;
    if (!p->in_registry)
        core_register(c, p);
    double now = now_monotonic();
    stats_observe(STAT_PREDICTION_WAIT, now - p->created, NULL, NULL);
    p->started = now; /* predict_time and the deadline count from here, not from the wait */
    p->status = PRED_PROCESSING;
    deadline_arm(p);
    trace_run_begin(p);
    /* the dispatch number first: a cancel raised by the start events (an SSE client already
     * gone) must reach the worker, which holds it until the predict frame */
    p->seq = ++s->seq;
    prediction_emit_start(p);
    if (p->slot != s)
        return; /* finished meanwhile */
    char dir[1200];
    prediction_output_dir(c, p->id, dir, sizeof dir);
    json_t *msg = json_pack("{s:s, s:s, s:I, s:O, s:s}", "type", "predict", "id", p->id, "seq", (json_int_t)p->seq,
                            "context", p->context, "output_dir", dir);
    if (!msg) {
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: cannot encode the request");
        return;
    }
    buf in;
    if (input_bytes(p, &in) != 0) {
        json_decref(msg);
        dispatch_failed(p, SLOT_RELEASE, "Failed to send request: cannot encode the input");
        return;
    }
    if (in.len > SPILL_THRESHOLD) {
        spill_input(p, s, msg, dir, &in);
        return;
    }
    send_inline(p, s, msg, &in);
    buf_free(&in);
}

/* ---- the prediction's directory ---- */

typedef struct dir_job {
    uv_work_t work;
    char path[1200];
} dir_job;

/* .../{id}/outputs, .../{id}/inputs, .../{id}: each only if empty (rmdir refuses otherwise). */
static void dir_remove(uv_work_t *req) {
    dir_job *job = container_of(req, dir_job, work);
    char *slash = strrchr(job->path, '/');
    rmdir(job->path);
    if (!slash)
        return;
    memcpy(slash + 1, "inputs", sizeof "inputs"); /* shorter than "outputs" */
    rmdir(job->path);
    *slash = '\0';
    rmdir(job->path);
}

static void dir_removed(uv_work_t *req, int status) {
    (void)status;
    free(container_of(req, dir_job, work));
}

/* Without this, every prediction that wrote a file leaves two empty directories behind, for
 * ever. Skipped while a read of one of its files is still on the thread pool (an aborted
 * one), or while another prediction with the same id is in flight: they share it. */
void dispatch_remove_dir(prediction *p) {
    core *c = p->core;
    if (!p->made_dir || p->ops || core_find(c, p->id))
        return;
    dir_job *job = malloc(sizeof *job);
    if (!job)
        return;
    prediction_output_dir(c, p->id, job->path, sizeof job->path);
    if (uv_queue_work(c->loop, &job->work, dir_remove, dir_removed) != 0)
        free(job);
}

/* ---- what comes back on the slot ---- */

/* The worker is done with p (or gone): the slot is freed first, then p ends. */
static void end_on_slot(prediction *p, pred_status status, const char *error) {
    prediction_ref(p);
    dispatch_unlink(p, SLOT_RELEASE);
    outputs_abort(p->core, p);
    prediction_finish(p, status, error);
    prediction_unref(p);
}

static void on_done(prediction *p, json_t *msg) {
    p->is_stream = json_is_true(json_object_get(msg, "is_stream"));
    json_t *out = json_object_get(msg, "output");
    prediction_ref(p);
    if (out)
        prediction_append_output(p, out); /* the final value, inline in done */
    if (p->slot)
        dispatch_unlink(p, SLOT_RELEASE);
    p->done_pending = 1; /* the worker is free; file outputs may still be settling */
    prediction_maybe_done(p);
    prediction_unref(p);
}

static void log_without_prediction(json_t *msg) {
    const char *data = json_string_value(json_object_get(msg, "data"));
    if (data && *data)
        log_event(LOG_WARN, "coglet::prediction", json_pack("{s:s}", "prediction_id", "NO_ACTIVE_PREDICTION"), "%s",
                  data);
}

void dispatch_on_slot_message(core *c, slot *s, json_t *msg) {
    prediction *p = s->prediction;
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "protocol_version"))
        return;
    if (!p) {
        if (!strcmp(type, "log_line"))
            log_without_prediction(msg);
        else
            log_debug(TARGET, "dropping %s on idle slot %d", type, s->index);
        slot_back(c, s, type);
        return;
    }
    if (!strcmp(type, "log_line")) {
        prediction_add_log(p, json_object_get(msg, "data"), json_string_value(json_object_get(msg, "source")));
    } else if (!strcmp(type, "output_chunk")) {
        json_t *out = json_object_get(msg, "output");
        prediction_append_output(p, out ? out : json_null());
    } else if (!strcmp(type, "output_items")) {
        /* a returned list's items in one frame: each one as an output_chunk */
        json_t *items = json_object_get(msg, "outputs");
        for (size_t i = 0; i < json_array_size(items) && s->prediction == p; i++)
            prediction_append_output(p, json_array_get(items, i));
    } else if (!strcmp(type, "file_output")) {
        p->made_dir = 1; /* the worker may have written into the prediction's directory */
        outputs_on_file(c, p, msg);
    } else if (!strcmp(type, "metric")) {
        prediction_add_metric(p, json_string_value(json_object_get(msg, "mode")),
                              json_string_value(json_object_get(msg, "name")), json_object_get(msg, "value"));
    } else if (!strcmp(type, "done")) {
        on_done(p, msg);
    } else if (!strcmp(type, "failed")) {
        const char *err = json_string_value(json_object_get(msg, "error"));
        const char *exc = json_string_value(json_object_get(msg, "message"));
        const char *tb = json_string_value(json_object_get(msg, "traceback"));
        if (exc && !p->exc_message)
            p->exc_message = strdup(exc);
        if (tb && !p->traceback)
            p->traceback = strdup(tb);
        end_on_slot(p, PRED_FAILED, err ? err : "unknown error");
    } else if (!strcmp(type, "cancelled")) {
        end_on_slot(p, PRED_CANCELED, NULL);
    } else {
        log_debug(TARGET, "ignoring slot message %s", type);
    }
}

void dispatch_on_slot_failed(core *c, slot *s, const char *error) {
    (void)c;
    if (s->prediction)
        end_on_slot(s->prediction, PRED_FAILED, error);
}
