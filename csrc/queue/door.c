/* queue/door.c: the queue door's lifetime. Two Redis connections (the reader, which blocks in
 * XREADGROUP, and one for everything else, so acknowledgements never wait behind a blocked
 * read), the tick (heartbeats, the pause switch, retries), setup's end (the report, the
 * setup-time stream, or the exit after a failed setup), the failure count, and shutdown:
 * stop claiming, let what runs finish and be acknowledged, then close. docs/queue.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "queue/queue_impl.h"

#define TICK_MAX_MS 1000

static double env_seconds(const char *name, double fallback) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d > 0)) {
        log_warn(QUEUE_TARGET, "Invalid %s value, using %.1f", name, fallback);
        return fallback;
    }
    return d;
}

void queue_config_from_env(queue_config *cfg) {
    cfg->lease_s = env_seconds("COGLET_QUEUE_LEASE", 30.0);
    cfg->idle_timeout_s = env_seconds("COGLET_QUEUE_IDLE_TIMEOUT", 10.0);
    /* 0 is allowed (every ack written at once); past a minute it is a mistake */
    const char *v = getenv("COGLET_QUEUE_ACK_DELAY");
    cfg->ack_delay_s = 0.002;
    if (v && *v) {
        char *end;
        double d = strtod(v, &end);
        if (*end || !(d >= 0 && d <= 60))
            log_warn(QUEUE_TARGET, "Invalid COGLET_QUEUE_ACK_DELAY value, using 0.002");
        else
            cfg->ack_delay_s = d;
    }
}

uint64_t queue_tick_ms(const queue_door *qd) {
    uint64_t t = (uint64_t)(qd->cfg.lease_s * 1000 / 4);
    if (t > TICK_MAX_MS)
        t = TICK_MAX_MS;
    return t < 50 ? 50 : t;
}

/* Slots a claim may count on: the free ones, less what waits for them here, and less the
 * predictions in the core's wait queue (COG_QUEUE_DEPTH), which get a freed slot first. */
int queue_room(const queue_door *qd) {
    return orchestrator_free_slots(&qd->core->orch) - qd->num_waiting - qd->core->num_waiting;
}

/* How long a read blocks, and how often the reclaim runs: a quarter of the lease. */
uint64_t queue_block_ms(const queue_door *qd) {
    uint64_t b = (uint64_t)(qd->cfg.lease_s * 1000 / 4);
    return b < 100 ? 100 : b;
}

int queue_claims_allowed(const queue_door *qd) {
    return qd->setup_ok && !qd->paused && !qd->stopping && !qd->super.closing && qd->core->health == HEALTH_READY &&
           !core_shutting_down(qd->core);
}

void queue_note_terminal(queue_door *qd, const char *status) {
    if (!status || strcmp(status, "failed")) {
        qd->failures_in_row = 0;
        return;
    }
    qd->failures_in_row++;
    if (qd->cfg.max_failures >= 0 && qd->failures_in_row > qd->cfg.max_failures && !qd->stopping) {
        log_error(QUEUE_TARGET, "Had %d failures in a row, exiting...", qd->failures_in_row);
        qd->stopping = 1;
        core_begin_shutdown(qd->core, NULL);
    }
}

/* ---- stop claiming now: a blocked read is released at once ---- */

static void on_ignored(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc, (void)reply, (void)ctx;
}

static void unblock_reader(queue_door *qd) {
    if (!qd->reading_blocked || qd->reader_id <= 0 || qd->unblock_sent)
        return;
    qd->unblock_sent = 1;
    char id[32];
    snprintf(id, sizeof id, "%lld", qd->reader_id);
    const char *argv[] = {"CLIENT", "UNBLOCK", id};
    rconn_commandv(&qd->cmd, on_ignored, NULL, 3, argv);
}

/* ---- the pause switch: SET coglet:{Q}:pause 1 (the fleet) or coglet:{Q}:pause:{C} (one) ---- */

static int flag_set(const redisReply *r) {
    return r->type == REDIS_REPLY_STRING && r->len > 0 && !(r->len == 1 && r->str[0] == '0');
}

static void on_pause_keys(rconn *rc, redisReply *reply, void *ctx) {
    (void)ctx;
    queue_door *qd = rc->owner;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
        return;
    int paused = flag_set(reply->element[0]) || flag_set(reply->element[1]);
    if (paused == qd->paused)
        return;
    qd->paused = paused;
    if (paused) {
        log_info(QUEUE_TARGET, "paused: claiming nothing new; %d message(s) held", qd->num_held);
        unblock_reader(qd);
    } else {
        log_info(QUEUE_TARGET, "resumed");
        qmsg_start_waiting(qd);
        claim_more(qd);
    }
}

/* ---- setup's end ---- */

/* The setup-time entry is a delivery too: a consumer whose setup failed writes it before
 * it exits (or gives up with the other deliveries when Redis stays away). */
static void on_setup_time(rconn *rc, redisReply *reply, void *ctx) {
    (void)ctx;
    queue_door *qd = rc->owner;
    qd->setup_time_inflight = 0;
    if (!reply || !qd->setup_time_pending)
        return; /* again when the connection is back */
    if (reply->type == REDIS_REPLY_ERROR)
        log_warn(QUEUE_TARGET, "cannot write %s-setup-time: %s", qd->stream, reply->str);
    qd->setup_time_pending = 0;
    core_delivery_end(qd->core, &qd->setup_time_del);
}

static void abandon_setup_time(delivery *d) {
    queue_door *qd = container_of(d, queue_door, setup_time_del);
    qd->setup_time_pending = 0;
}

static const delivery_ops setup_time_delivery_ops = {.abandon = abandon_setup_time};

static void send_setup_time(queue_door *qd) {
    if (!qd->setup_time_pending || qd->setup_time_inflight || !rconn_up(&qd->cmd))
        return;
    char key[600], secs[32];
    snprintf(key, sizeof key, "%s-setup-time", qd->stream);
    snprintf(secs, sizeof secs, "%.6f", qd->setup_seconds);
    const char *argv[] = {"XADD", key, "MAXLEN", "~", "100", "*", "duration", secs};
    qd->setup_time_inflight = rconn_commandv(&qd->cmd, on_setup_time, NULL, 8, argv) == 0;
}

static void setup_time(queue_door *qd) {
    core *c = qd->core;
    qd->setup_seconds = (double)(c->setup_completed_ns - c->setup_started_ns) / 1e9;
    qd->setup_time_pending = 1;
    qd->setup_time_del.ops = &setup_time_delivery_ops;
    core_delivery_begin(c, &qd->setup_time_del);
    send_setup_time(qd);
}

static void on_report_sent(void *ctx, webhook *wh) {
    (void)wh;
    queue_door *qd = ctx;
    qd->report_wh = NULL;
    core_delivery_end(qd->core, &qd->report_del);
}

static void abandon_report(delivery *d) {
    queue_door *qd = container_of(d, queue_door, report_del);
    webhook_free(qd->report_wh);
    qd->report_wh = NULL;
}

static const delivery_ops report_delivery_ops = {.abandon = abandon_report};

/* One POST to --report-setup-run-url, retried like a terminal webhook. */
static void report_setup(queue_door *qd, const char *status) {
    core *c = qd->core;
    if (!qd->report_url || core_client(c) != 0)
        return;
    char started[40], completed[40];
    format_log_timestamp(c->setup_started_ns, started, sizeof started);
    format_log_timestamp(c->setup_completed_ns, completed, sizeof completed);
    json_t *body = json_pack("{s:s, s:s, s:s, s:s}", "status", status, "started_at", started, "completed_at", completed,
                             "logs", c->setup_logs ? c->setup_logs : "");
    qd->report_wh =
        body ? webhook_new(&c->client, &qd->hook_settings, qd->report_url, WEBHOOK_COMPLETED, NULL, NULL) : NULL;
    if (qd->report_wh) {
        qd->report_del.ops = &report_delivery_ops;
        core_delivery_begin(c, &qd->report_del);
        webhook_completed(qd->report_wh, body, on_report_sent, qd);
    }
    json_decref(body);
}

static void on_setup_over(queue_door *qd) {
    core *c = qd->core;
    if (qd->setup_reported)
        return;
    if (c->health == HEALTH_READY) {
        qd->setup_reported = 1;
        qd->setup_ok = 1;
        json_t *out = json_object_get(json_object_get(json_object_get(c->schema, "components"), "schemas"),
                                      c->cfg.is_train ? "TrainingOutput" : "Output");
        const char *kind = json_string_value(json_object_get(out, "x-cog-array-type"));
        qd->iterator_output = kind && !strcmp(kind, "iterator");
        report_setup(qd, "succeeded");
        setup_time(qd);
        log_event(LOG_INFO, QUEUE_TARGET, json_pack("{s:s, s:s}", "queue", qd->stream, "consumer", qd->consumer),
                  "claiming predictions from %s as %s", qd->stream, qd->consumer);
    } else if (c->health == HEALTH_SETUP_FAILED) {
        qd->setup_reported = 1;
        report_setup(qd, "failed");
        setup_time(qd);
        log_error(QUEUE_TARGET, "setup failed: claiming nothing, exiting");
        qd->stopping = 1;
        core_begin_shutdown(c, NULL);
    }
}

/* ---- what the core tells the door, run on the next loop turn (the core may be mid-way) ---- */

static void on_kick(uv_timer_t *t) {
    queue_door *qd = t->data;
    core *c = qd->core;
    on_setup_over(qd);
    /* gone for good: with COGLET_RESTART_WORKER a new worker may be on its way, and the
     * consumer waits for it (health STARTING, then READY) */
    if (c->health == HEALTH_DEFUNCT && !c->restarting && !qd->stopping) {
        log_error(QUEUE_TARGET, "the predictor's process is gone: claiming nothing, exiting");
        qd->stopping = 1;
        core_begin_shutdown(c, NULL);
    }
    qmsg_start_waiting(qd);
    claim_more(qd);
}

static void door_on_capacity(front_door *fd) {
    queue_door *qd = container_of(fd, queue_door, super);
    /* another door took a slot a blocked read counts on: release the read, so this consumer
     * never claims more than it can run (a message that still slips in waits for a slot) */
    if (qd->reading_blocked && qd->read_count > queue_room(qd))
        unblock_reader(qd);
    /* a claim only queues a command (written at the end of this loop turn): at once, so the
     * next message is on its way while the last one's responses go out */
    if (!qd->num_waiting)
        claim_more(qd);
    /* the rest on the next loop turn, and only when there is something to do: setup ended, the
     * worker is gone, or a claimed message waits for this slot */
    int more = !qd->setup_reported || qd->core->health != HEALTH_READY || qd->num_waiting > 0;
    if (more && !uv_is_closing((uv_handle_t *)&qd->kick))
        uv_timer_start(&qd->kick, on_kick, 0, 0);
}

static void on_tick(uv_timer_t *t) {
    queue_door *qd = t->data;
    if (rconn_up(&qd->cmd)) {
        const char *argv[] = {"MGET", qd->pause_key, qd->pause_consumer_key};
        rconn_commandv(&qd->cmd, on_pause_keys, NULL, 3, argv);
        lease_heartbeat(qd);
        send_setup_time(qd);
    }
    claim_retry(qd);
}

/* ---- connections ---- */

static void reader_up(rconn *rc) {
    claim_on_reader_up(rc->owner);
}

static void cmd_up(rconn *rc) {
    queue_door *qd = rc->owner;
    qmsg_redis_up(qd);
    send_setup_time(qd);
    lease_heartbeat(qd);
}

/* ---- shutdown and close ---- */

static void door_shutdown_begin(front_door *fd) {
    queue_door *qd = container_of(fd, queue_door, super);
    if (!qd->stopping)
        log_info(QUEUE_TARGET, "stopping: claiming nothing new; %d message(s) held", qd->num_held);
    qd->stopping = 1;
    unblock_reader(qd);
}

static void check_closed(queue_door *qd) {
    if (qd->super.closing && !qd->super.closed && qd->conns_open == 0 && qd->handles_open == 0)
        core_door_closed(qd->core, &qd->super);
}

static void on_conn_closed(rconn *rc) {
    queue_door *qd = rc->owner;
    qd->conns_open--;
    check_closed(qd);
}

static void on_handle_closed(uv_handle_t *h) {
    queue_door *qd = h->data;
    qd->handles_open--;
    check_closed(qd);
}

static void door_close(front_door *fd, int force) {
    queue_door *qd = container_of(fd, queue_door, super);
    qd->stopping = 1;
    if (!uv_is_closing((uv_handle_t *)&qd->tick)) {
        uv_close((uv_handle_t *)&qd->tick, on_handle_closed);
        uv_close((uv_handle_t *)&qd->cancel_timer, on_handle_closed);
        uv_close((uv_handle_t *)&qd->kick, on_handle_closed);
        queue_flush_acks(qd);
        uv_close((uv_handle_t *)&qd->ack_timer, on_handle_closed);
    }
    qmsg_drop_waiting(qd);
    /* the core closes doors once every delivery is over, so nothing more will be sent */
    rconn_close(&qd->reader, 1, on_conn_closed);
    rconn_close(&qd->cmd, force, on_conn_closed);
    check_closed(qd);
}

static const front_door_ops queue_door_ops = {
    .shutdown_begin = door_shutdown_begin,
    .close = door_close,
    .on_capacity = door_on_capacity,
};

/* ---- start ---- */

static char *joined(const char *a, const char *b, const char *c) {
    size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s%s%s", a, b, c);
    return s;
}

void queue_door_free(queue_door *qd) {
    if (!qd)
        return;
    for (int i = 0; i < POISON_MAX; i++)
        free(qd->poison[i]);
    free(qd->stream);
    free(qd->consumer);
    free(qd->report_url);
    free(qd->redis_url);
    free(qd->done_prefix);
    free(qd->pause_key);
    free(qd->pause_consumer_key);
    free(qd);
}

queue_door *queue_door_start(core *c, uv_loop_t *loop, const queue_config *cfg, int *err) {
    redis_url url;
    *err = redis_url_parse(cfg->redis_url, &url);
    if (*err)
        return NULL;
    queue_door *qd = calloc(1, sizeof *qd);
    *err = UV_ENOMEM;
    if (!qd)
        return NULL;
    qd->core = c;
    qd->loop = loop;
    qd->cfg = *cfg;
    qd->super.ops = &queue_door_ops;
    qd->stream = strdup(cfg->stream);
    qd->consumer = strdup(cfg->consumer);
    qd->redis_url = strdup(cfg->redis_url);
    qd->report_url = cfg->report_setup_url ? strdup(cfg->report_setup_url) : NULL;
    qd->done_prefix = joined("coglet:", cfg->stream, ":done:");
    qd->pause_key = joined("coglet:", cfg->stream, ":pause");
    char *pk = qd->pause_key ? joined(qd->pause_key, ":", cfg->consumer) : NULL;
    qd->pause_consumer_key = pk;
    if (!qd->stream || !qd->consumer || !qd->redis_url || !qd->done_prefix || !qd->pause_key || !pk ||
        (cfg->report_setup_url && !qd->report_url)) {
        queue_door_free(qd);
        return NULL;
    }
    qd->cfg.stream = qd->stream;
    qd->cfg.consumer = qd->consumer;
    qd->cfg.redis_url = qd->redis_url;
    qd->cfg.report_setup_url = qd->report_url;
    uint64_t idle = (uint64_t)(cfg->idle_timeout_s * 1000);
    if ((*err = rconn_init(&qd->reader, loop, &url, "reader", idle + queue_block_ms(qd))) != 0 ||
        (*err = rconn_init(&qd->cmd, loop, &url, "commands", idle)) != 0) {
        /* uv_timer_init does not fail on a live loop: no handle to close here */
        queue_door_free(qd);
        return NULL;
    }
    qd->reader.owner = qd->cmd.owner = qd;
    qd->reader.on_up = reader_up;
    qd->cmd.on_up = cmd_up;
    qd->conns_open = 2;
    uv_timer_init(loop, &qd->tick);
    uv_timer_init(loop, &qd->cancel_timer);
    uv_timer_init(loop, &qd->kick);
    uv_timer_init(loop, &qd->ack_timer);
    qd->tick.data = qd->cancel_timer.data = qd->kick.data = qd->ack_timer.data = qd;
    qd->handles_open = 4;
    qd->next_reclaim_ms = 0;
    /* the door throttles its own responses: the webhooks it makes send what they are given */
    webhook_settings_from_env(&qd->hook_settings);
    qd->hook_settings.throttle_s = 0;
    core_add_door(c, &qd->super);
    uv_timer_start(&qd->tick, on_tick, queue_tick_ms(qd), queue_tick_ms(qd));
    rconn_start(&qd->reader);
    rconn_start(&qd->cmd);
    log_event(LOG_INFO, QUEUE_TARGET,
              json_pack("{s:s, s:i, s:i, s:s, s:s, s:f}", "redis_host", url.host, "redis_port", url.port, "redis_db",
                        url.db, "queue", qd->stream, "consumer", qd->consumer, "lease_seconds", cfg->lease_s),
              "Pull mode: queue %s, consumer %s", qd->stream, qd->consumer);
    *err = 0;
    return qd;
}
