/* queue/lease.c: what keeps a held message ours, and what stops it early. The heartbeat
 * resets the idle time of every message this consumer still owns (XCLAIM ... JUSTID, in a
 * script that first checks the owner, so a message another consumer took over is never taken
 * back); a consumer that stops beating loses its messages to XAUTOCLAIM within one lease (half
 * a lease of silence makes them claimable, and other consumers look every quarter).
 * Cancel keys are polled ten times a second, only while a running message has one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "queue/queue_impl.h"

#define CANCEL_POLL_MS 100
#define HEARTBEAT_BATCH 256
#define FIXED_ARGS 6 /* EVAL script 1 stream group consumer, then the ids */

/* KEYS[1] stream; ARGV[1] group, ARGV[2] consumer, ARGV[3..] ids. Returns the ids it lost. */
static const char LEASE_SCRIPT[] = "local lost = {} "
                                   "for i = 3, #ARGV do "
                                   "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1) "
                                   "  if #p == 1 and p[1][2] == ARGV[2] then "
                                   "    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID') "
                                   "  else lost[#lost + 1] = ARGV[i] end "
                                   "end "
                                   "return lost";

static void on_heartbeat(rconn *rc, redisReply *reply, void *ctx) {
    (void)ctx;
    queue_door *qd = rc->owner;
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_warn(QUEUE_TARGET, "heartbeat failed: %s", reply->str);
        return;
    }
    if (reply->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < reply->elements; i++) {
        const redisReply *id = reply->element[i];
        if (id->type != REDIS_REPLY_STRING)
            continue;
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)id->len, id->str);
        qmsg *m = queue_find_held(qd, buf);
        if (m && !m->lease_lost) {
            m->lease_lost = 1;
            log_event(LOG_WARN, QUEUE_TARGET, json_pack("{s:s}", "message_id", buf),
                      "message %s is no longer pending for this consumer (taken over, or Redis lost it); "
                      "finishing it anyway",
                      buf);
        }
    }
}

static void send_batch(queue_door *qd, const char **argv, size_t *lens, int n) {
    if (n <= FIXED_ARGS)
        return; /* no ids */
    rconn_command(&qd->cmd, on_heartbeat, NULL, n, argv, lens);
}

void lease_heartbeat(queue_door *qd) {
    if (!qd->held || !rconn_up(&qd->cmd))
        return;
    const char *argv[HEARTBEAT_BATCH + FIXED_ARGS];
    size_t lens[HEARTBEAT_BATCH + FIXED_ARGS];
    int n = FIXED_ARGS;
    argv[0] = "EVAL";
    argv[1] = LEASE_SCRIPT;
    argv[2] = "1";
    argv[3] = qd->stream;
    argv[4] = qd->stream;
    argv[5] = qd->consumer;
    for (qmsg *m = qd->held; m; m = m->next) {
        if (m->lease_lost)
            continue;
        argv[n++] = m->entry_id;
        if (n == HEARTBEAT_BATCH + FIXED_ARGS) {
            for (int i = 0; i < n; i++)
                lens[i] = strlen(argv[i]);
            send_batch(qd, argv, lens, n);
            n = FIXED_ARGS;
        }
    }
    for (int i = 0; i < n; i++)
        lens[i] = strlen(argv[i]);
    send_batch(qd, argv, lens, n);
}

/* ---- cancel keys ---- */

static void on_exists(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc;
    qmsg *m = ctx;
    m->cancel_inflight = 0;
    if (reply && reply->type == REDIS_REPLY_INTEGER && reply->integer > 0 && m->p && !m->cancel_sent &&
        m->state == QM_RUNNING) {
        m->cancel_sent = 1;
        log_event(LOG_INFO, QUEUE_TARGET, json_pack("{s:s}", "message_id", m->entry_id), "cancel key set; cancelling");
        prediction_cancel(m->p);
    }
    qmsg_unref(m);
}

static void on_cancel_poll(uv_timer_t *t) {
    queue_door *qd = t->data;
    int any = 0;
    for (qmsg *m = qd->held; m; m = m->next) {
        if (m->state != QM_RUNNING || !m->cancel_key || m->cancel_sent)
            continue;
        any = 1;
        if (m->cancel_inflight || !rconn_up(&qd->cmd))
            continue;
        const char *argv[] = {"EXISTS", m->cancel_key};
        qmsg_ref(m);
        if (rconn_commandv(&qd->cmd, on_exists, m, 2, argv) == 0)
            m->cancel_inflight = 1;
        else
            qmsg_unref(m);
    }
    if (!any)
        uv_timer_stop(t);
}

void cancel_poll_update(queue_door *qd) {
    if (qd->super.closing || uv_is_active((uv_handle_t *)&qd->cancel_timer))
        return;
    for (qmsg *m = qd->held; m; m = m->next) {
        if (m->state == QM_RUNNING && m->cancel_key && !m->cancel_sent) {
            uv_timer_start(&qd->cancel_timer, on_cancel_poll, CANCEL_POLL_MS, CANCEL_POLL_MS);
            return;
        }
    }
}
