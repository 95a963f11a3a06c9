/* orchestrator/orchestrator.c: the frame protocol with the worker and its slots (the
 * worker's process is process.c's). Transport (ours; docs/worker-protocol.md#channels): the
 * control channel and every slot are socketpairs handed to the worker as inherited fds 3,
 * 4, ...; the worker's fds 1 and 2 are pipes we read and log, so nothing it prints is lost. */
#include "orchestrator/process.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define TARGET "coglet::orchestrator"
/* What may wait unsent to a worker that does not read: on a slot, one predict frame (a slot
 * holds one prediction); on the control channel, cancels and healthchecks, a few hundred
 * bytes each. Past it a send fails with UV_ENOBUFS instead of the parent growing. */
#define SLOT_UNSENT_MAX (FRAME_MAX_PAYLOAD + 4)
#define CONTROL_UNSENT_MAX ((size_t)1 << 20)
/* How long a slot socket the worker closed waits for the worker's exit, so that the error
 * can name the exit status rather than the socket. */
#define GONE_GRACE_MS 1000

static void maybe_closed(orchestrator *orch);

/* ---- writing frames ---- */

typedef struct frame_write {
    uv_write_t req;
    size_t len;
    char *data;
} frame_write;

static void on_frame_written(uv_write_t *req, int status) {
    frame_write *fw = container_of(req, frame_write, req);
    (void)status; /* a broken pipe shows up as EOF / exit on the read side */
    free(fw->data);
    free(fw);
}

/* Writes a whole frame (taking data), or fails with UV_ENOBUFS when it would leave more than
 * unsent_max bytes queued for a reader that is not taking them. */
static int send_raw(uv_pipe_t *pipe, char *data, size_t len, size_t unsent_max) {
    if (uv_stream_get_write_queue_size((uv_stream_t *)pipe) + len > unsent_max) {
        free(data);
        return UV_ENOBUFS;
    }
    uv_buf_t b = uv_buf_init(data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)pipe, &b, 1);
    if (n == (int)len) {
        free(data);
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN) {
        free(data);
        return n;
    }
    if (n < 0)
        n = 0;
    frame_write *fw = malloc(sizeof *fw);
    if (!fw) {
        free(data);
        return UV_ENOMEM;
    }
    fw->data = data;
    fw->len = len;
    b = uv_buf_init(data + n, (unsigned)(len - (size_t)n));
    int rc = uv_write(&fw->req, (uv_stream_t *)pipe, &b, 1, on_frame_written);
    if (rc < 0) {
        free(data);
        free(fw);
    }
    return rc;
}

static int send_frame(uv_pipe_t *pipe, const json_t *msg, size_t unsent_max) {
    size_t len;
    char *data = frame_encode_alloc(msg, &len);
    if (!data)
        return UV_E2BIG;
    return send_raw(pipe, data, len, unsent_max);
}

int orchestrator_send_slot_raw(orchestrator *orch, slot *s, char *frame, size_t len) {
    if (!s->pipe_open || orch->state != ORCH_READY) {
        free(frame);
        return UV_EPIPE;
    }
    return send_raw(&s->pipe, frame, len, SLOT_UNSENT_MAX);
}

int orchestrator_send_slot(orchestrator *orch, slot *s, const json_t *msg) {
    if (!s->pipe_open || orch->state != ORCH_READY)
        return UV_EPIPE;
    return send_frame(&s->pipe, msg, SLOT_UNSENT_MAX);
}

int orchestrator_send_control(orchestrator *orch, const json_t *msg) {
    if (!orch->control_open)
        return UV_EPIPE;
    return send_frame(&orch->control, msg, CONTROL_UNSENT_MAX);
}

size_t orchestrator_control_unsent(const orchestrator *orch) {
    return orch->control_open ? uv_stream_get_write_queue_size((const uv_stream_t *)&orch->control) : 0;
}

/* ---- permit pool (orchestrator/pool.c) ---- */

slot *orchestrator_acquire_slot(orchestrator *orch) {
    pool_link *link = permit_pool_try_acquire(&orch->pool);
    return link ? container_of(link, slot, permit) : NULL;
}

void orchestrator_release_slot(orchestrator *orch, slot *s) {
    if (orch->state == ORCH_READY)
        permit_pool_release(&orch->pool, &s->permit);
}

int orchestrator_free_slots(const orchestrator *orch) { return permit_pool_free_count(&orch->pool); }

void orchestrator_poison(orchestrator *orch, slot *s) { permit_pool_poison(&orch->pool, &s->permit); }

void orchestrator_unpoison(orchestrator *orch, slot *s) {
    if (!s->permit.poisoned || orch->state != ORCH_READY || !s->pipe_open)
        return;
    permit_pool_unpoison(&orch->pool, &s->permit);
}

/* An abandoned slot may come back; one whose socket just closed is not lost until the grace
 * says whether the worker died (then on_worker_gone tells the app) or lives on without it. */
int orchestrator_usable_slots(const orchestrator *orch) {
    int n = 0;
    for (int i = 0; orch->slots && i < orch->cfg.num_slots; i++) {
        const slot *s = &orch->slots[i];
        n += !s->permit.poisoned || s->abandoned || (s->closed_by_worker && !s->lost_reported);
    }
    return n;
}

/* ---- handles ---- */

void orch__scratch_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
    static char scratch[65536]; /* single loop thread: one read at a time */
    (void)handle;
    (void)suggested;
    out->base = scratch;
    out->len = sizeof scratch;
}

static void on_handle_closed(uv_handle_t *handle) {
    orchestrator *orch = handle->data;
    orch->handles_open--;
    maybe_closed(orch);
}

void orch__close_handle(orchestrator *orch, uv_handle_t *handle, int *open_flag) {
    if (!*open_flag)
        return;
    *open_flag = 0;
    handle->data = orch;
    orch->handles_open++;
    uv_close(handle, on_handle_closed);
}

/* ---- worker exit ---- */

static void stop_timer(orchestrator *orch) {
    if (orch->timer_open)
        uv_timer_stop(&orch->timer);
}

/* The slot is out of service for good; the app hears it once, and fails what runs there. */
static void slot_lost(orchestrator *orch, slot *s, const char *error) {
    orchestrator_poison(orch, s);
    if (s->lost_reported || orch->state == ORCH_GONE || orch->closing)
        return;
    s->lost_reported = 1;
    orch->ops->on_slot_poisoned(orch->app, s, error);
}

/* Slots whose socket the worker closed while it lives on (the grace found no exit). */
static void report_closed_slots(orchestrator *orch) {
    for (int i = 0; i < orch->cfg.num_slots && orch->state == ORCH_READY; i++) {
        slot *s = &orch->slots[i];
        if (s->closed_by_worker && !s->lost_reported)
            slot_lost(orch, s, s->closed_mid_frame ? "Slot socket closed by the worker in the middle of a frame"
                                                   : "Slot socket closed by the worker");
    }
}

/* No slot is ever handed out again. */
static void mark_gone(orchestrator *orch) {
    orch->state = ORCH_GONE;
    for (int i = 0; i < orch->cfg.num_slots; i++)
        orchestrator_poison(orch, &orch->slots[i]);
}

/* The worker is gone: its exit seen, its control channel closed and the grace ran out, or
 * its control channel broken (then `cause` says how; otherwise the exit status does). */
static void worker_lost(orchestrator *orch, const char *cause) {
    if (orch->state == ORCH_GONE)
        return;
    int was = orch->state;
    orch->state = ORCH_GONE;
    stop_timer(orch);
    char why[400];
    if (cause)
        snprintf(why, sizeof why, "%s", cause);
    else
        orch__describe_exit(orch, why, sizeof why);
    if (orch->closing || orch->shutdown_sent) {
        log_info(TARGET, "Worker exited");
        return;
    }
    if (was == ORCH_SETUP) {
        log_error(TARGET, "%s during setup", why);
        orch->ops->on_setup_failed(orch->app, "worker crashed");
        return;
    }
    log_error(TARGET, "%s", why);
    mark_gone(orch);
    orch->ops->on_worker_gone(orch->app, why);
}

static void worker_gone(orchestrator *orch) { worker_lost(orch, NULL); }

void orch__worker_exited(orchestrator *orch) { worker_gone(orch); }

static void on_timer(uv_timer_t *timer) {
    orchestrator *orch = container_of(timer, orchestrator, timer);
    if (orch->state == ORCH_SETUP && !orch->control_eof) {
        log_error(TARGET, "worker setup timed out");
        orch->state = ORCH_GONE;
        orch->ops->on_setup_failed(orch->app, "worker setup timed out");
        /* Not killed (docs/worker-protocol.md#setup-failures): it exits once it sees its control channel closed. */
        orch__close_handle(orch, (uv_handle_t *)&orch->control, &orch->control_open);
        return;
    }
    if (orch->control_eof)
        worker_gone(orch); /* control EOF and no exit status within the grace period */
    else if (orch->state == ORCH_READY)
        report_closed_slots(orch); /* the worker lives on without those slots */
}

/* Starts the grace period after an EOF, unless one is already running. */
static void start_grace(orchestrator *orch) {
    if (!orch->timer_open)
        worker_gone(orch);
    else if (!uv_is_active((uv_handle_t *)&orch->timer))
        uv_timer_start(&orch->timer, on_timer, GONE_GRACE_MS, 0);
}

/* ---- control channel ---- */

static void handle_control(orchestrator *orch, json_t *msg) {
    const char *type = json_string_value(json_object_get(msg, "type"));
    if (!strcmp(type, "log")) {
        const char *source = json_string_value(json_object_get(msg, "source"));
        const char *data = json_string_value(json_object_get(msg, "data"));
        if (data) {
            /* one log event per line */
            char *copy = strdup(data);
            if (!copy)
                return;
            char *save = NULL;
            for (char *ln = strtok_r(copy, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save))
                orch->ops->on_log(orch->app, source ? source : "stdout", ln);
            free(copy);
        }
    } else if (!strcmp(type, "worker_log")) {
        orch->ops->on_worker_log(orch->app, json_string_value(json_object_get(msg, "target")),
                                 json_string_value(json_object_get(msg, "level")),
                                 json_string_value(json_object_get(msg, "message")));
    } else if (!strcmp(type, "ready")) {
        if (orch->state != ORCH_SETUP)
            return;
        json_t *slots = json_object_get(msg, "slots");
        if (!json_is_array(slots) || (int)json_array_size(slots) != orch->cfg.num_slots) {
            orch->state = ORCH_GONE;
            orch->ops->on_setup_failed(orch->app, "protocol error: ready names the wrong number of slots");
            return;
        }
        for (int i = 0; i < orch->cfg.num_slots; i++) {
            const char *id = json_string_value(json_array_get(slots, (size_t)i));
            snprintf(orch->slots[i].id, sizeof orch->slots[i].id, "%s", id ? id : "");
        }
        stop_timer(orch);
        orch->state = ORCH_READY;
        int closed = 0;
        for (int i = orch->cfg.num_slots - 1; i >= 0; i--) {
            orchestrator_release_slot(orch, &orch->slots[i]);
            closed |= orch->slots[i].closed_by_worker;
        }
        orch->ops->on_ready(orch->app, json_object_get(msg, "schema"), msg);
        if (closed && orch->state == ORCH_READY)
            start_grace(orch);
    } else if (!strcmp(type, "failed")) {
        const char *err = json_string_value(json_object_get(msg, "error"));
        const char *slot_id = json_string_value(json_object_get(msg, "slot"));
        if (orch->state == ORCH_SETUP) {
            char text[8192];
            snprintf(text, sizeof text, "worker setup failed: worker setup failed (slot %s): %s",
                     slot_id ? slot_id : "?", err ? err : "unknown error");
            orch->state = ORCH_GONE;
            stop_timer(orch);
            orch->ops->on_setup_failed(orch->app, text);
            return;
        }
        for (int i = 0; i < orch->cfg.num_slots; i++) {
            slot *s = &orch->slots[i];
            if (slot_id && !strcmp(s->id, slot_id))
                slot_lost(orch, s, err ? err : "slot poisoned");
        }
    } else if (!strcmp(type, "fatal")) {
        const char *reason = json_string_value(json_object_get(msg, "reason"));
        log_error(TARGET, "worker fatal: %s", reason ? reason : "?");
        if (orch->state == ORCH_SETUP) {
            char text[4096];
            snprintf(text, sizeof text, "worker setup failed: worker fatal: %s", reason ? reason : "?");
            orch->state = ORCH_GONE;
            orch->ops->on_setup_failed(orch->app, text);
        } else {
            mark_gone(orch);
            orch->ops->on_worker_gone(orch->app, reason ? reason : "worker fatal");
        }
    } else if (!strcmp(type, "dropped_logs")) {
        json_int_t n = json_integer_value(json_object_get(msg, "count"));
        json_int_t ms = json_integer_value(json_object_get(msg, "interval_millis"));
        log_warn(TARGET, "%s. %lld logs dropped in last %.1fs",
                 orch->state == ORCH_SETUP ? "Log production exceeds consumption rate during setup"
                                           : "Log production exceeds consumption rate",
                 (long long)n, (double)ms / 1000.0);
    } else if (!strcmp(type, "shutting_down")) {
        log_debug(TARGET, "worker acknowledged shutdown");
    } else {
        orch->ops->on_control_message(orch->app, msg);
    }
}

static void on_control_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    orchestrator *orch = stream->data;
    if (nread < 0) {
        orch->control_eof = 1;
        orch__close_handle(orch, (uv_handle_t *)&orch->control, &orch->control_open);
        if (orch->state == ORCH_SETUP || orch->state == ORCH_READY) {
            /* Give the exit status a moment to arrive so the error can name it. */
            if (orch->timer_open)
                uv_timer_start(&orch->timer, on_timer, GONE_GRACE_MS, 0);
            else
                worker_gone(orch);
        }
        return;
    }
    if (frame_decoder_feed(&orch->control_dec, b->base, (size_t)nread) != BUF_OK) {
        /* dropping bytes would desync the channel: it fails as a whole */
        log_error(TARGET, "control channel buffer overflow");
        orch__close_handle(orch, (uv_handle_t *)&orch->control, &orch->control_open);
        worker_lost(orch, "Worker control channel error: buffer overflow");
        return;
    }
    for (;;) {
        json_t *msg;
        char err[256];
        int rc = frame_decoder_next(&orch->control_dec, &msg, err, sizeof err);
        if (rc == 0)
            break;
        if (rc < 0) {
            log_error(TARGET, "control channel error: %s", err);
            orch__close_handle(orch, (uv_handle_t *)&orch->control, &orch->control_open);
            char text[512];
            if (orch->state == ORCH_SETUP) {
                snprintf(text, sizeof text, "protocol error: control channel error: %s", err);
                orch->state = ORCH_GONE;
                stop_timer(orch);
                orch->ops->on_setup_failed(orch->app, text);
            } else {
                /* No cancel or healthcheck can reach it now, and it exits when it sees the
                 * channel closed: it is gone for every prediction, whatever its exit says. */
                snprintf(text, sizeof text, "Worker control channel error: %s", err);
                worker_lost(orch, text);
            }
            return;
        }
        handle_control(orch, msg);
        json_decref(msg);
        if (!orch->control_open)
            return;
    }
}

/* ---- slot sockets ---- */

static void on_slot_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
    slot *s = handle->data;
    (void)suggested;
    frame_decoder *d = &s->dec;
    if (buf_reserve(&d->in, 65536) != BUF_OK) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = d->in.data + d->in.len;
    out->len = d->in.cap - d->in.len - 1;
}

/* The worker's end of a slot closed (EOF) or failed. An EOF is most often the worker dying:
 * the slot is out of service at once, and what runs there fails after the grace period,
 * with the exit status if the exit arrives meanwhile. */
static void slot_read_ended(orchestrator *orch, slot *s, ssize_t nread) {
    size_t partial = s->dec.in.len - s->dec.pos;
    orch__close_handle(orch, (uv_handle_t *)&s->pipe, &s->pipe_open);
    if (nread != UV_EOF) {
        char err[256];
        snprintf(err, sizeof err, "Slot socket error: %s", uv_strerror((int)nread));
        slot_lost(orch, s, err);
        return;
    }
    if (orch->closing || orch->shutdown_sent)
        return;
    if (partial) /* whether the worker died or lives on, the frame it was writing is lost */
        log_warn(TARGET, "slot %d: the worker closed its socket %zu bytes into a frame", s->index, partial);
    if (orch->state == ORCH_GONE)
        return;
    s->closed_by_worker = 1;
    s->closed_mid_frame = partial > 0;
    orchestrator_poison(orch, s);
    if (orch->state == ORCH_READY)
        start_grace(orch); /* during setup, ready reports it */
}

static void on_slot_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    slot *s = stream->data;
    orchestrator *orch = s->orch;
    (void)b;
    if (nread < 0) {
        slot_read_ended(orch, s, nread);
        return;
    }
    /* read straight into the decoder's buffer (no copy) */
    s->dec.in.len += (size_t)nread;
    s->dec.in.data[s->dec.in.len] = '\0';
    for (;;) {
        json_t *msg;
        char err[256];
        int rc = frame_decoder_next(&s->dec, &msg, err, sizeof err);
        if (rc == 0)
            break;
        if (rc < 0) {
            char text[300];
            snprintf(text, sizeof text, "Slot socket error: %s", err);
            orch__close_handle(orch, (uv_handle_t *)&s->pipe, &s->pipe_open);
            slot_lost(orch, s, text);
            return;
        }
        orch->ops->on_slot_message(orch->app, s, msg);
        json_decref(msg);
        if (!s->pipe_open)
            return;
    }
    /* compact: drop decoded bytes */
    if (s->dec.pos) {
        buf_consume(&s->dec.in, s->dec.pos);
        s->dec.pos = 0;
    }
}

/* ---- start ---- */

static int open_pipe(orchestrator *orch, uv_pipe_t *pipe, int fd, void *data) {
    int rc = uv_pipe_init(orch->loop, pipe, 0);
    if (rc)
        return rc;
    pipe->data = data;
    return uv_pipe_open(pipe, fd);
}

int orchestrator_start(orchestrator *orch, uv_loop_t *loop, const orchestrator_config *cfg,
                       const orchestrator_ops *ops, void *app) {
    memset(orch, 0, sizeof *orch);
    orch->loop = loop;
    orch->ops = ops;
    orch->app = app;
    orch->cfg = *cfg;
    orch->state = ORCH_SETUP;
    permit_pool_init(&orch->pool);
    int n = cfg->num_slots;
    frame_decoder_init(&orch->control_dec);
    buf_init(&orch->out_line, 1 << 20);
    buf_init(&orch->err_line, 1 << 20);
    orch->slots = calloc((size_t)n, sizeof *orch->slots);
    int *child_fds = calloc((size_t)n + 1, sizeof *child_fds);
    int rc = UV_ENOMEM;
    if (!orch->slots || !child_fds)
        goto failed_alloc;

    /* socketpairs: [0] ours, [1] the worker's */
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
        rc = -errno;
        goto failed_alloc;
    }
    child_fds[0] = pair[1];
    if ((rc = open_pipe(orch, &orch->control, pair[0], orch)) != 0) {
        close(pair[0]);
        close(pair[1]);
        goto failed_alloc;
    }
    orch->control_open = 1;
    for (int i = 0; i < n; i++) {
        slot *s = &orch->slots[i];
        s->orch = orch;
        s->index = i;
        frame_decoder_init(&s->dec);
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) < 0) {
            rc = -errno;
            goto failed_slots;
        }
        child_fds[i + 1] = pair[1];
        if ((rc = open_pipe(orch, &s->pipe, pair[0], s)) != 0) {
            close(pair[0]);
            goto failed_slots;
        }
        s->pipe_open = 1;
    }

    rc = orch__process_start(orch, child_fds, n);
    for (int i = 0; i <= n; i++) {
        close(child_fds[i]);
        child_fds[i] = -1;
    }
    if (rc != 0)
        goto failed_slots;
    uv_read_start((uv_stream_t *)&orch->control, orch__scratch_alloc, on_control_read);
    for (int i = 0; i < n; i++)
        uv_read_start((uv_stream_t *)&orch->slots[i].pipe, on_slot_alloc, on_slot_read);

    uv_timer_init(loop, &orch->timer);
    orch->timer_open = 1;
    if (cfg->setup_timeout > 0)
        uv_timer_start(&orch->timer, on_timer, (uint64_t)(cfg->setup_timeout * 1000), 0);

    json_t *init = json_pack("{s:s, s:s, s:i, s:{s:{s:i, s:i}}, s:b, s:b}", "type", "init", "predictor_ref",
                             cfg->predictor_ref, "num_slots", n, "transport_info", "InheritedFds", "first_fd", 4,
                             "num_slots", n, "is_train", cfg->is_train, "is_async", 0);
    send_frame(&orch->control, init, CONTROL_UNSENT_MAX);
    json_decref(init);
    free(child_fds);
    return 0;

failed_slots:
    for (int i = 0; i <= n; i++)
        if (child_fds[i] > 0)
            close(child_fds[i]);
failed_alloc:
    free(child_fds);
    orch->state = ORCH_GONE;
    return rc;
}

/* ---- close ---- */

static void maybe_closed(orchestrator *orch) {
    if (!orch->closing || orch->handles_open > 0)
        return;
    if (orch->proc_alive || orch->exit_poll_open || orch->control_open || orch->out_open || orch->err_open ||
        orch->timer_open)
        return;
    /* slots is NULL when orchestrator_start could not allocate it */
    for (int i = 0; orch->slots && i < orch->cfg.num_slots; i++)
        if (orch->slots[i].pipe_open)
            return;
    for (int i = 0; orch->slots && i < orch->cfg.num_slots; i++)
        frame_decoder_free(&orch->slots[i].dec);
    free(orch->slots);
    orch->slots = NULL;
    frame_decoder_free(&orch->control_dec);
    buf_free(&orch->out_line);
    buf_free(&orch->err_line);
    void (*cb)(orchestrator *) = orch->on_closed;
    orch->on_closed = NULL;
    if (cb)
        cb(orch);
}

void orchestrator_close(orchestrator *orch, void (*on_closed)(orchestrator *orch)) {
    orch->on_closed = on_closed;
    if (orch->closing) {
        maybe_closed(orch);
        return;
    }
    orch->closing = 1;
    if (orch->state == ORCH_READY && orch->control_open && !orch->shutdown_sent) {
        json_t *msg = json_pack("{s:s}", "type", "shutdown");
        orchestrator_send_control(orch, msg);
        json_decref(msg);
        orch->shutdown_sent = 1;
    }
    /* Closing our ends: the worker sees EOF and exits even mid-setup. We do not wait for
     * its exit (docs/http-api.md#shutdown); the process handle is just unreferenced. */
    orch__close_handle(orch, (uv_handle_t *)&orch->control, &orch->control_open);
    for (int i = 0; orch->slots && i < orch->cfg.num_slots; i++)
        orch__close_handle(orch, (uv_handle_t *)&orch->slots[i].pipe, &orch->slots[i].pipe_open);
    orch__close_handle(orch, (uv_handle_t *)&orch->out_pipe, &orch->out_open);
    orch__close_handle(orch, (uv_handle_t *)&orch->err_pipe, &orch->err_open);
    orch__close_handle(orch, (uv_handle_t *)&orch->timer, &orch->timer_open);
    orch__process_close(orch);
    maybe_closed(orch);
}
