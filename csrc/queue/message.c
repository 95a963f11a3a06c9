/* queue/message.c: one claimed message, from its claim to its acknowledgement. Its
 * prediction's events become responses (the message's own keys plus status, output, logs,
 * timestamps; docs/queue.md, "Responses"); the terminal one is first recorded in Redis (so a
 * redelivery sends it again instead of running twice), then delivered, then the entry is
 * acknowledged and deleted. The terminal steps are a core delivery: shutdown waits for them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/stats.h"
#include "core/validate.h"
#include "queue/queue_impl.h"

#define LOGS_MAX ((size_t)256 << 20)
#define RECORD_TTL "3600" /* a record outlives its ack only when the ack failed */

/* 1: the record's value; 2: the entry is gone (acknowledged elsewhere); 0: run it. Atomic with
 * the ack script, so a message acknowledged by its first consumer is never run again. */
static const char CHECK_SCRIPT[] = "local v = redis.call('GET', KEYS[2]) "
                                   "if v then return {1, v} end "
                                   "if #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) == 0 then return {2} end "
                                   "return {0}";
static const char ACK_SCRIPT[] = "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) "
                                 "redis.call('XDEL', KEYS[1], ARGV[2]) "
                                 "redis.call('DEL', KEYS[2]) return 1";

static const sink_ops qmsg_sink_ops;
static const delivery_ops qmsg_delivery_ops;

/* ---- lifetime ---- */

qmsg *qmsg_new(queue_door *qd, const char *entry_id, json_t *msg) {
    qmsg *m = calloc(1, sizeof *m);
    if (!m) {
        json_decref(msg);
        return NULL;
    }
    m->refs = 1; /* the door's list */
    m->door = qd;
    m->msg = msg;
    m->entry_id = strdup(entry_id);
    m->outputs = json_array();
    m->last_sent = -1e9;
    m->sink.ops = &qmsg_sink_ops;
    m->del.ops = &qmsg_delivery_ops;
    buf_init(&m->logs, LOGS_MAX);
    if (!m->entry_id || !m->outputs) {
        qmsg_unref(m);
        return NULL;
    }
    /* appended, so waiting messages start in claim order; the list is as long as the slots */
    qmsg **pp = &qd->held;
    qmsg *last = NULL;
    while (*pp) {
        last = *pp;
        pp = &(*pp)->next;
    }
    m->prev = last;
    *pp = m;
    qd->num_held++;
    return m;
}

void qmsg_ref(qmsg *m) {
    m->refs++;
}

void qmsg_unref(qmsg *m) {
    if (--m->refs > 0)
        return;
    if (m->wh)
        webhook_free(m->wh);
    if (m->p)
        prediction_unref(m->p);
    json_decref(m->msg);
    json_decref(m->resp);
    json_decref(m->outputs);
    buf_free(&m->logs);
    free(m->entry_id);
    free(m->webhook_url);
    free(m->response_key);
    free(m->cancel_key);
    free(m->terminal);
    free(m);
}

/* Off the door's list: the list's reference goes. */
static void held_remove(qmsg *m) {
    queue_door *qd = m->door;
    if (m->state == QM_DONE)
        return;
    if (m->state == QM_WAITING)
        qd->num_waiting--;
    if (m->ack_queued)
        queue_flush_acks(qd); /* written now, not dropped with the message (an abandoned delivery) */
    m->state = QM_DONE;
    if (m->prev)
        m->prev->next = m->next;
    else
        qd->held = m->next;
    if (m->next)
        m->next->prev = m->prev;
    m->next = m->prev = NULL;
    qd->num_held--;
    qmsg_unref(m);
}

void qmsg_forget(qmsg *m) {
    held_remove(m);
}

qmsg *queue_find_held(queue_door *qd, const char *entry_id) {
    for (qmsg *m = qd->held; m; m = m->next)
        if (!strcmp(m->entry_id, entry_id))
            return m;
    return NULL;
}

/* ---- the message's own fields ---- */

static int parse_filter(const json_t *filter, unsigned *events, char *why, size_t whylen) {
    if (!filter || json_is_null(filter)) {
        *events = WEBHOOK_ALL;
        return 0;
    }
    if (!json_is_array(filter)) {
        snprintf(why, whylen, "webhook_events_filter is not a list");
        return -1;
    }
    unsigned bits = WEBHOOK_COMPLETED; /* always */
    size_t i;
    json_t *e;
    json_array_foreach(filter, i, e) {
        const char *s = json_string_value(e);
        if (s && !strcmp(s, "start"))
            bits |= WEBHOOK_START;
        else if (s && !strcmp(s, "output"))
            bits |= WEBHOOK_OUTPUT;
        else if (s && !strcmp(s, "logs"))
            bits |= WEBHOOK_LOGS;
        else if (!s || strcmp(s, "completed")) {
            snprintf(why, whylen, "unknown webhook event %.100s", s ? s : "(not a string)");
            return -1;
        }
    }
    *events = bits;
    return 0;
}

static char *string_field(const json_t *msg, const char *key) {
    const char *s = json_string_value(json_object_get(msg, key));
    return s && *s ? strdup(s) : NULL;
}

int qmsg_parse(qmsg *m, char *why, size_t whylen) {
    m->webhook_url = string_field(m->msg, "webhook");
    if (!m->webhook_url)
        m->response_key = string_field(m->msg, "response_queue");
    if (!m->webhook_url && !m->response_key) {
        snprintf(why, whylen, "it has neither webhook nor response_queue");
        return -1;
    }
    if (parse_filter(json_object_get(m->msg, "webhook_events_filter"), &m->events, why, whylen) != 0)
        return -1;
    m->cancel_key = string_field(m->msg, "cancel_key");
    return 0;
}

/* ---- sending responses ---- */

static void on_set_reply(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc, (void)reply;
    qmsg_unref(ctx);
}

static void set_logs(qmsg *m) {
    json_object_set_new(m->resp, "logs", json_stringn(m->logs.len ? m->logs.data : "", m->logs.len));
}

/* A non-terminal response, when the filter wants it and the throttle lets it through. Its
 * failures are ignored. The logs so far are put in here, not per line: most lines are
 * thinned out. */
static void send_event(qmsg *m, unsigned event) {
    queue_door *qd = m->door;
    if (!(m->events & event))
        return;
    double now = now_monotonic();
    if (now - m->last_sent < qd->core->webhook_settings.throttle_s)
        return; /* thinned out, not delayed */
    m->last_sent = now;
    set_logs(m);
    if (m->wh) {
        webhook_event(m->wh, event, m->resp, NULL, NULL);
        return;
    }
    if (!m->response_key || !rconn_up(&qd->cmd))
        return;
    char *text = json_out_string(m->resp, JSON_OUT_SORTED);
    if (!text)
        return;
    const char *argv[] = {"SET", m->response_key, text};
    size_t lens[] = {3, strlen(m->response_key), strlen(text)};
    qmsg_ref(m);
    if (rconn_command(&qd->cmd, on_set_reply, m, 3, argv, lens) != 0)
        qmsg_unref(m);
    free(text);
}

static void set_timestamp(json_t *o, const char *key) {
    char ts[40];
    format_log_timestamp(now_realtime_ns(), ts, sizeof ts);
    json_object_set_new(o, key, json_string(ts));
}

/* ---- the terminal steps: record, send, acknowledge ---- */

static void step_send(qmsg *m);
static void step_ack(qmsg *m);

static void finished(qmsg *m) {
    queue_door *qd = m->door;
    int was_delivery = m->in_delivery;
    m->in_delivery = 0;
    qmsg_ref(m);
    held_remove(m);
    if (was_delivery) {
        core_delivery_end(qd->core, &m->del);
        qmsg_unref(m); /* the delivery's */
    }
    qmsg_unref(m);
    qmsg_start_waiting(qd);
    claim_more(qd);
}

static void on_acked(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc;
    qmsg *m = ctx;
    if (m->state == QM_ACKING) {
        if (!reply) {
            m->wait_redis = 1; /* again once the connection is back */
        } else {
            if (reply->type == REDIS_REPLY_ERROR)
                log_event(LOG_WARN, QUEUE_TARGET, json_pack("{s:s}", "message_id", m->entry_id), "ack failed: %s",
                          reply->str);
            else
                stats_inc(STAT_QUEUE_ACKS, m->door->stream, NULL);
            finished(m);
        }
    }
    qmsg_unref(m);
}

static void done_key(const qmsg *m, char *out, size_t outlen) {
    snprintf(out, outlen, "%s%s", m->door->done_prefix, m->entry_id);
}

/* An acknowledgement waits up to cfg.ack_delay_s (COGLET_QUEUE_ACK_DELAY, 2 ms) for another
 * command to ride with. It has no one waiting on it but the message itself (the slot is
 * free, the webhook sent), and while predictions flow the next one's record and read come
 * within a prediction's time: one write and one wake-up of Redis and of us instead of two. */

static void send_ack(qmsg *m) {
    queue_door *qd = m->door;
    if (!rconn_up(&qd->cmd)) {
        m->wait_redis = 1;
        return;
    }
    char key[512];
    done_key(m, key, sizeof key);
    const char *argv[] = {"EVAL", ACK_SCRIPT, "2", qd->stream, key, qd->stream, m->entry_id};
    qmsg_ref(m);
    if (rconn_commandv(&qd->cmd, on_acked, m, 7, argv) != 0) {
        qmsg_unref(m);
        m->wait_redis = 1;
    }
}

static void step_ack(qmsg *m) {
    queue_door *qd = m->door;
    m->state = QM_ACKING;
    if (m->ack_queued)
        return;
    m->ack_queued = 1;
    qd->acks_queued++;
    uint64_t delay_ms = (uint64_t)(qd->cfg.ack_delay_s * 1000 + 0.5);
    if (uv_is_closing((uv_handle_t *)&qd->ack_timer) || delay_ms == 0)
        queue_flush_acks(qd);
    else if (!uv_is_active((uv_handle_t *)&qd->ack_timer))
        uv_timer_start(&qd->ack_timer, queue_on_ack_timer, delay_ms, 0);
}

void queue_flush_acks(queue_door *qd) {
    if (!qd->acks_queued)
        return;
    if (!uv_is_closing((uv_handle_t *)&qd->ack_timer))
        uv_timer_stop(&qd->ack_timer);
    /* send_ack only queues a command (or marks the message to wait for Redis): the list
     * does not change under us */
    for (qmsg *m = qd->held; m && qd->acks_queued > 0; m = m->next) {
        if (!m->ack_queued)
            continue;
        m->ack_queued = 0;
        qd->acks_queued--;
        if (m->state == QM_ACKING)
            send_ack(m);
    }
    qd->acks_queued = 0;
}

void queue_on_ack_timer(uv_timer_t *t) {
    queue_flush_acks(t->data);
}

static void on_delivered(void *ctx, webhook *wh) {
    (void)wh; /* frees itself after this */
    qmsg *m = ctx;
    m->wh = NULL;
    if (m->state == QM_SENDING)
        step_ack(m);
}

static void on_key_set(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc;
    qmsg *m = ctx;
    if (m->state == QM_SENDING) {
        if (reply)
            step_ack(m);
        else
            m->wait_redis = 1;
    }
    qmsg_unref(m);
}

/* m->wh for the message's webhook (NULL when the client cannot start); every response
 * goes through it, the terminal one included. */
static void open_webhook(qmsg *m) {
    queue_door *qd = m->door;
    if (core_client(qd->core) == 0)
        m->wh = webhook_new(&qd->core->client, &qd->hook_settings, m->webhook_url, WEBHOOK_ALL,
                            json_string_value(json_object_get(m->msg, "traceparent")), NULL);
}

static void step_send(qmsg *m) {
    queue_door *qd = m->door;
    m->state = QM_SENDING;
    if (m->webhook_url) {
        if (!m->wh)
            open_webhook(m);
        if (!m->wh) {
            log_event(LOG_ERROR, QUEUE_TARGET, json_pack("{s:s}", "message_id", m->entry_id),
                      "cannot send the terminal webhook");
            step_ack(m);
            return;
        }
        /* the response built here or the recorded one of a redelivered message, as recorded */
        webhook_completed_text(m->wh, m->terminal, on_delivered, m); /* may call on_delivered at once */
        return;
    }
    if (!rconn_up(&qd->cmd)) {
        m->wait_redis = 1;
        return;
    }
    const char *argv[] = {"SET", m->response_key, m->terminal};
    size_t lens[] = {3, strlen(m->response_key), strlen(m->terminal)};
    qmsg_ref(m);
    if (rconn_command(&qd->cmd, on_key_set, m, 3, argv, lens) != 0) {
        qmsg_unref(m);
        m->wait_redis = 1;
    }
}

static void on_recorded(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc, (void)reply; /* no record: the response still goes out; only the guard is weaker */
    qmsg *m = ctx;
    if (m->state == QM_RECORDING)
        step_send(m);
    qmsg_unref(m);
}

static void step_record(qmsg *m) {
    queue_door *qd = m->door;
    m->state = QM_RECORDING;
    char key[512];
    done_key(m, key, sizeof key);
    const char *argv[] = {"SET", key, m->terminal, "EX", RECORD_TTL};
    size_t lens[] = {3, strlen(key), strlen(m->terminal), 2, strlen(RECORD_TTL)};
    queue_flush_acks(qd); /* in the same write */
    qmsg_ref(m);
    if (!rconn_up(&qd->cmd) || rconn_command(&qd->cmd, on_recorded, m, 5, argv, lens) != 0) {
        qmsg_unref(m);
        step_send(m); /* Redis is away: the response does not wait for it */
    }
}

/* The terminal response is in m->resp: encode it, then record, send, acknowledge. */
static void terminal(qmsg *m) {
    queue_door *qd = m->door;
    free(m->terminal);
    m->terminal = json_out_string(m->resp, JSON_OUT_SORTED);
    if (!m->terminal) {
        log_event(LOG_ERROR, QUEUE_TARGET, json_pack("{s:s}", "message_id", m->entry_id),
                  "cannot encode the terminal response; leaving the message pending");
        held_remove(m);
        return;
    }
    m->in_delivery = 1;
    qmsg_ref(m); /* the delivery's */
    core_delivery_begin(qd->core, &m->del);
    step_record(m);
}

static void abandon(delivery *d) {
    qmsg *m = container_of(d, qmsg, del);
    m->in_delivery = 0;
    if (m->wh) {
        webhook_free(m->wh); /* no done callback */
        m->wh = NULL;
    }
    held_remove(m);
    qmsg_unref(m); /* the delivery's */
}

static const delivery_ops qmsg_delivery_ops = {.abandon = abandon};

/* ---- the prediction's events ---- */

static qmsg *sink_msg(sink *s) {
    return container_of(s, qmsg, sink);
}

static void on_start(sink *s, prediction *p) {
    (void)p;
    qmsg *m = sink_msg(s);
    json_decref(m->resp);
    m->resp = json_deep_copy(m->msg);
    json_object_set_new(m->resp, "status", json_string("processing"));
    json_object_set_new(m->resp, "output", json_null());
    set_timestamp(m->resp, "started_at");
    send_event(m, WEBHOOK_START);
}

static void on_output(sink *s, prediction *p, const json_t *value, size_t index) {
    (void)p;
    qmsg *m = sink_msg(s);
    if (!m->door->iterator_output || !m->resp)
        return; /* a plain return value is only in the completed response */
    while (json_array_size(m->outputs) <= index)
        json_array_append_new(m->outputs, json_null());
    json_array_set(m->outputs, index, (json_t *)value);
    /* the list itself, not a copy: every response is encoded before this returns */
    json_object_set(m->resp, "output", m->outputs);
    send_event(m, WEBHOOK_OUTPUT);
}

static void on_log(sink *s, prediction *p, const json_t *data, const char *source) {
    (void)p, (void)source;
    qmsg *m = sink_msg(s);
    if (!m->resp)
        return;
    if (buf_append(&m->logs, json_string_value(data), json_string_length(data)) != BUF_OK)
        return;
    send_event(m, WEBHOOK_LOGS);
}

/* The worker died under the prediction: the original's words, with the exit code as Python's
 * multiprocessing gives it (a signal is its negative number). */
static int worker_death_error(const core *c, char *out, size_t outlen) {
    if (c->health != HEALTH_DEFUNCT)
        return 0;
    const orchestrator *o = &c->orch;
    if (o->exit_seen)
        snprintf(out, outlen,
                 "Prediction failed for an unknown reason. It might have run out of memory? (exitcode %lld)",
                 o->term_signal ? -(long long)o->term_signal : (long long)o->exit_status);
    else
        snprintf(out, outlen,
                 "Prediction failed for an unknown reason. It might have run out of memory? (exitcode None)");
    return 1;
}

static void terminal_fields(qmsg *m, prediction *p, const json_t *state) {
    const char *status = json_string_value(json_object_get(state, "status"));
    json_t *r = m->resp;
    set_logs(m); /* everything captured, when the state brings no logs of its own */
    json_object_set_new(r, "status", json_string(status));
    set_timestamp(r, "completed_at");
    json_object_del(r, "error");
    json_object_del(r, "metrics");
    json_t *out = json_object_get(state, "output");
    if (out)
        json_object_set(r, "output", out);
    const char *logs = json_string_value(json_object_get(state, "logs"));
    if (!strcmp(status, "succeeded")) {
        json_object_set(r, "metrics", json_object_get(state, "metrics"));
    } else if (!strcmp(status, "failed")) {
        const char *err = json_string_value(json_object_get(state, "error"));
        const char *exc = prediction_exception_message(p);
        const char *tb = prediction_traceback(p);
        char died[200];
        if (worker_death_error(m->door->core, died, sizeof died) && err && !strncmp(err, "Worker crashed", 14))
            err = died;
        else if (exc && !(err && !strcmp(err, "Prediction timed out")))
            err = exc;
        json_object_set_new(r, "error", json_string(err ? err : ""));
        if (tb) {
            buf all;
            buf_init(&all, LOGS_MAX);
            if (buf_append(&all, logs ? logs : "", logs ? strlen(logs) : 0) == BUF_OK &&
                buf_append(&all, tb, strlen(tb)) == BUF_OK)
                json_object_set_new(r, "logs", json_stringn(all.data, all.len));
            buf_free(&all);
            logs = NULL;
        }
    }
    if (logs)
        json_object_set_new(r, "logs", json_string(logs));
}

static void on_terminal(sink *s, prediction *p, const json_t *state) {
    qmsg *m = sink_msg(s);
    if (!m->resp) {
        m->resp = json_deep_copy(m->msg);
        set_timestamp(m->resp, "started_at");
    }
    terminal_fields(m, p, state);
    if (m->p) {
        prediction_unref(m->p);
        m->p = NULL;
    }
    /* the delivery first: a failure count that ends the process must find it to wait for */
    queue_door *qd = m->door;
    char status[16];
    snprintf(status, sizeof status, "%s", json_string_value(json_object_get(m->resp, "status")));
    if (m->state == QM_RUNNING)
        terminal(m);
    queue_note_terminal(qd, status);
    qmsg_unref(m); /* the sink's */
}

static void on_discard(sink *s, prediction *p) {
    (void)p;
    qmsg_unref(sink_msg(s));
}

static const sink_ops qmsg_sink_ops = {
    .on_start = on_start,
    .on_output = on_output,
    .on_log = on_log,
    .on_terminal = on_terminal,
    .on_discard = on_discard,
};

/* ---- running ---- */

/* Invalid input: only a completed response, with the field and the problem; no timestamps
 * (the original sets output and logs before it validates, so both are there). */
static void invalid_input(qmsg *m, const char *error) {
    json_decref(m->resp);
    m->resp = json_deep_copy(m->msg);
    json_object_set_new(m->resp, "status", json_string("failed"));
    json_object_set_new(m->resp, "output", json_null());
    json_object_set_new(m->resp, "error", json_string(error));
    json_object_set_new(m->resp, "logs", json_string(""));
    log_event(LOG_WARN, QUEUE_TARGET, json_pack("{s:s, s:s}", "message_id", m->entry_id, "error", error),
              "invalid input");
    queue_door *qd = m->door;
    terminal(m);
    queue_note_terminal(qd, "failed");
}

/* "text: Field required; n: Input should be a valid integer" from the validator's details. */
static void detail_text(const json_t *detail, buf *out) {
    size_t i;
    json_t *d;
    json_array_foreach(detail, i, d) {
        json_t *loc = json_object_get(d, "loc");
        const char *msg = json_string_value(json_object_get(d, "msg"));
        if (i)
            buf_append_str(out, "; ");
        size_t n = json_array_size(loc);
        /* loc is ["body", "input", field...]: the field is what follows "input" */
        for (size_t k = 2; k < n; k++) {
            json_t *part = json_array_get(loc, k);
            if (k > 2)
                buf_append_str(out, ".");
            if (json_is_string(part))
                buf_append_str(out, json_string_value(part));
            else
                buf_printf(out, "%lld", (long long)json_integer_value(part));
        }
        buf_printf(out, "%s%s", n > 2 ? ": " : "", msg ? msg : "invalid");
    }
}

/* The input to run, validated; NULL with `error` filled when it is not valid. */
static json_t *checked_input(qmsg *m, char *error, size_t errlen) {
    core *c = m->door->core;
    json_t *in = json_object_get(m->msg, "input");
    if (!in || json_is_null(in))
        in = NULL;
    else if (!json_is_object(in)) {
        snprintf(error, errlen, "input: Input should be a valid dictionary");
        return NULL;
    }
    json_t *input = in ? json_deep_copy(in) : json_object();
    const validator *v = core_validator(c, c->cfg.is_train);
    json_t *detail = NULL, *stripped = NULL;
    if (v && input && validator_apply(v, input, &detail, &stripped) != 0) {
        buf text;
        buf_init(&text, 64 << 10);
        detail_text(detail, &text);
        snprintf(error, errlen, "%s", text.len ? text.data : "invalid input");
        buf_free(&text);
        json_decref(detail);
        json_decref(stripped);
        json_decref(input);
        return NULL;
    }
    json_decref(stripped);
    return input;
}

/* 0 when it ran (or ended at once), -1 when no slot could be had: it keeps waiting. */
static int run(qmsg *m) {
    queue_door *qd = m->door;
    core *c = qd->core;
    if (core_admit(c) != ADMIT_OK)
        return -1;
    char error[2048];
    json_t *input = checked_input(m, error, sizeof error);
    qd->num_waiting--;
    m->state = QM_RUNNING;
    if (!input) {
        invalid_input(m, error);
        return 0;
    }
    prediction_request req = {
        .id = json_string_value(json_object_get(m->msg, "id")),
        .is_training = c->cfg.is_train,
        .input = input,
        .door = "queue",
        .traceparent = json_string_value(json_object_get(m->msg, "traceparent")),
    };
    admit_result why;
    prediction *p = prediction_create(c, &req, &why);
    if (!p) {
        m->state = QM_WAITING;
        qd->num_waiting++;
        return -1;
    }
    if (m->webhook_url)
        open_webhook(m);
    m->p = p; /* prediction_create's reference */
    qmsg_ref(m);
    prediction_attach(p, &m->sink);
    if (qd->cfg.predict_timeout_s > 0)
        prediction_set_deadline(p, qd->cfg.predict_timeout_s);
    prediction_start(p);
    cancel_poll_update(qd);
    return 0;
}

void qmsg_start_waiting(queue_door *qd) {
    /* from the head each time: running one may end others (an invalid input ends at once) */
    while (qd->num_waiting > 0 && queue_claims_allowed(qd)) {
        qmsg *m = qd->held;
        while (m && m->state != QM_WAITING)
            m = m->next;
        if (!m || run(m) != 0)
            return; /* no slot now; on_capacity brings us back */
    }
}

/* ---- redelivered messages: finished already? ---- */

static void on_checked(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc;
    qmsg *m = ctx;
    if (m->state != QM_CHECKING) {
        qmsg_unref(m);
        return;
    }
    if (!reply) {
        m->wait_redis = 1;
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->integer == 1 &&
               reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_STRING) {
        log_event(LOG_INFO, QUEUE_TARGET, json_pack("{s:s}", "message_id", m->entry_id),
                  "redelivered message already finished; sending its terminal response again");
        free(m->terminal);
        m->terminal = strndup(reply->element[1]->str, reply->element[1]->len);
        m->in_delivery = 1;
        qmsg_ref(m);
        core_delivery_begin(m->door->core, &m->del);
        if (m->terminal)
            step_send(m);
        else
            step_ack(m);
    } else if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 1 && reply->element[0]->integer == 2) {
        held_remove(m); /* acknowledged by whoever ran it; only our pending entry was left */
    } else {
        if (reply->type == REDIS_REPLY_ERROR)
            log_warn(QUEUE_TARGET, "checking message %s: %s; running it", m->entry_id, reply->str);
        m->state = QM_WAITING;
        m->door->num_waiting++;
        qmsg_start_waiting(m->door);
    }
    qmsg_unref(m);
}

static void send_check(qmsg *m) {
    queue_door *qd = m->door;
    char key[512];
    done_key(m, key, sizeof key);
    const char *argv[] = {"EVAL", CHECK_SCRIPT, "2", qd->stream, key, m->entry_id};
    qmsg_ref(m);
    if (rconn_commandv(&qd->cmd, on_checked, m, 6, argv) != 0) {
        qmsg_unref(m);
        m->wait_redis = 1;
    }
}

void qmsg_admit(qmsg *m) {
    if (m->redelivered) {
        m->state = QM_CHECKING;
        send_check(m);
        return;
    }
    m->state = QM_WAITING;
    m->door->num_waiting++;
    qmsg_start_waiting(m->door);
}

void qmsg_redis_up(queue_door *qd) {
    int n = 0;
    for (qmsg *m = qd->held; m; m = m->next)
        n += m->wait_redis;
    if (!n)
        return;
    qmsg **todo = calloc((size_t)n, sizeof *todo);
    if (!todo)
        return;
    int k = 0;
    for (qmsg *m = qd->held; m && k < n; m = m->next) {
        if (m->wait_redis) {
            m->wait_redis = 0;
            qmsg_ref(m);
            todo[k++] = m;
        }
    }
    for (int i = 0; i < k; i++) {
        qmsg *m = todo[i];
        if (m->state == QM_CHECKING)
            send_check(m);
        else if (m->state == QM_SENDING)
            step_send(m);
        else if (m->state == QM_ACKING)
            send_ack(m);
        qmsg_unref(m);
    }
    free(todo);
}

void qmsg_drop_waiting(queue_door *qd) {
    for (qmsg *m = qd->held; m;) {
        qmsg *next = m->next;
        if (m->state == QM_WAITING || m->state == QM_CHECKING)
            held_remove(m); /* still pending in Redis: another consumer takes it after the lease */
        m = next;
    }
}
