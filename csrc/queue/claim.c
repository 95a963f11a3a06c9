/* queue/claim.c: taking messages, on the reader connection, one command at a time and never
 * more than the free slots: first this consumer's own pending entries (a restart with the same
 * name finds what it held), then, once per reclaim interval, a dead consumer's messages whose
 * lease ran out (XAUTOCLAIM), then new ones with a blocking XREADGROUP. While full, paused or
 * stopping, nothing is sent at all. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "core/stats.h"
#include "queue/queue_impl.h"

/* CLAIM_FLOWING: while messages keep coming, the next read does not block and goes over the
 * command connection, in the same write as the last message's terminal record; the first
 * empty answer sends the consumer back to the reader's blocking read. */
typedef enum { CLAIM_OWN, CLAIM_RECLAIM, CLAIM_NEW, CLAIM_FLOWING } claim_kind;

int poison_has(const queue_door *qd, const char *id) {
    for (int i = 0; i < POISON_MAX; i++)
        if (qd->poison[i] && !strcmp(qd->poison[i], id))
            return 1;
    return 0;
}

static void poison_add(queue_door *qd, const char *id) {
    char *copy = strdup(id);
    if (!copy)
        return;
    free(qd->poison[qd->poison_next]);
    qd->poison[qd->poison_next] = copy;
    qd->poison_next = (qd->poison_next + 1) % POISON_MAX;
}

static const char *field(const redisReply *fields, const char *name, size_t *len) {
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *k = fields->element[i], *v = fields->element[i + 1];
        if (k->type == REDIS_REPLY_STRING && v->type == REDIS_REPLY_STRING && k->len == strlen(name) &&
            !memcmp(k->str, name, k->len)) {
            *len = v->len;
            return v->str;
        }
    }
    return NULL;
}

/* Only for an entry take_entry found not poisoned yet. */
static void bad_message(queue_door *qd, const char *id, const char *why) {
    log_event(LOG_WARN, QUEUE_TARGET, json_pack("{s:s, s:s}", "message_id", id, "reason", why),
              "cannot handle message %s: %s; leaving it pending", id, why);
    poison_add(qd, id);
}

static void on_cleanup_ack(rconn *rc, redisReply *reply, void *ctx) {
    (void)rc, (void)reply, (void)ctx;
}

/* One stream entry: [id, [field, value, ...]] (the fields nil when the entry was deleted). */
static void take_entry(queue_door *qd, const redisReply *e, int redelivered) {
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING)
        return;
    char id[64];
    snprintf(id, sizeof id, "%.*s", (int)e->element[0]->len, e->element[0]->str);
    const redisReply *fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY) {
        /* deleted but still pending: nothing to run, only the pending entry to clear */
        const char *argv[] = {"XACK", qd->stream, qd->stream, id};
        rconn_commandv(&qd->cmd, on_cleanup_ack, NULL, 4, argv);
        return;
    }
    if (queue_find_held(qd, id) || poison_has(qd, id))
        return;
    size_t len;
    const char *value = field(fields, "value", &len);
    if (!value) {
        bad_message(qd, id, "no value field");
        return;
    }
    json_error_t jerr;
    json_t *msg = json_loadb(value, len, 0, &jerr);
    if (!json_is_object(msg)) {
        char why[256];
        snprintf(why, sizeof why, msg ? "value is not a JSON object" : "value is not JSON: %s", jerr.text);
        json_decref(msg);
        bad_message(qd, id, why);
        return;
    }
    qmsg *m = qmsg_new(qd, id, msg);
    if (!m)
        return;
    char why[256];
    if (qmsg_parse(m, why, sizeof why) != 0) {
        bad_message(qd, id, why);
        qmsg_forget(m);
        return;
    }
    m->redelivered = redelivered;
    stats_inc(STAT_QUEUE_CLAIMS, qd->stream, NULL);
    if (log_enabled(LOG_DEBUG, QUEUE_TARGET))
        log_event(LOG_DEBUG, QUEUE_TARGET, json_pack("{s:s, s:b}", "message_id", id, "redelivered", redelivered),
                  "claimed message");
    qmsg_admit(m);
}

static void take_entries(queue_door *qd, const redisReply *entries, int redelivered, char *last_id, size_t last_len) {
    if (!entries || entries->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        if (last_id && e->type == REDIS_REPLY_ARRAY && e->elements >= 1 && e->element[0]->type == REDIS_REPLY_STRING)
            snprintf(last_id, last_len, "%.*s", (int)e->element[0]->len, e->element[0]->str);
        take_entry(qd, e, redelivered);
    }
}

/* XREADGROUP's reply: nil, or [[stream, entries]]. The entries of our one stream. */
static const redisReply *stream_entries(const redisReply *reply) {
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1)
        return NULL;
    const redisReply *s = reply->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements < 2)
        return NULL;
    return s->element[1];
}

static void create_group(queue_door *qd);

/* 0 to go on claiming; -1 after an error (the next tick tries again). */
static int claim_error(queue_door *qd, const redisReply *reply) {
    if (!strncmp(reply->str, "NOGROUP", 7)) {
        log_warn(QUEUE_TARGET, "consumer group %s is gone (Redis restarted?); creating it again", qd->stream);
        qd->group_ready = 0;
        qd->group_lost = 1;
        create_group(qd);
        return -1;
    }
    log_error(QUEUE_TARGET, "claiming from %s: %s", qd->stream, reply->str);
    return -1;
}

static void on_claimed(rconn *rc, redisReply *reply, void *ctx) {
    queue_door *qd = rc->owner;
    claim_kind kind = (claim_kind)(intptr_t)ctx;
    qd->reading_blocked = qd->unblock_sent = 0;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        qd->reading = 0;
        if (reply)
            claim_error(qd, reply);
        return; /* a lost connection: claim_on_reader_up starts over */
    }
    /* still `reading` while the entries are taken: a slot they fill must not look free to a
     * claim made meanwhile (on_capacity) */
    if (kind == CLAIM_OWN) {
        const redisReply *entries = stream_entries(reply);
        if (!entries || entries->elements == 0)
            qd->pel_done = 1;
        take_entries(qd, entries, 1, qd->pel_cursor, sizeof qd->pel_cursor);
    } else if (kind == CLAIM_RECLAIM) {
        /* [next cursor, entries, deleted ids] */
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2) {
            const redisReply *cur = reply->element[0];
            if (cur->type == REDIS_REPLY_STRING)
                snprintf(qd->autoclaim_cursor, sizeof qd->autoclaim_cursor, "%.*s", (int)cur->len, cur->str);
            if (!strcmp(qd->autoclaim_cursor, "0-0"))
                qd->next_reclaim_ms = uv_now(qd->loop) + queue_block_ms(qd);
            if (reply->element[1]->elements > 0)
                log_event(LOG_INFO, QUEUE_TARGET, json_pack("{s:i}", "count", (int)reply->element[1]->elements),
                          "reclaimed messages whose lease ran out");
            stats_add(STAT_QUEUE_RECLAIMS, (double)reply->element[1]->elements, qd->stream, NULL);
            take_entries(qd, reply->element[1], 1, NULL, 0);
        }
    } else {
        const redisReply *entries = reply->type == REDIS_REPLY_ARRAY ? stream_entries(reply) : NULL;
        qd->flowing = entries && entries->elements > 0;
        take_entries(qd, entries, 0, NULL, 0);
    }
    qd->reading = 0;
    claim_more(qd);
}

void claim_more(queue_door *qd) {
    if (qd->reading || !qd->group_ready || !rconn_up(&qd->reader) || !queue_claims_allowed(qd))
        return;
    int room = queue_room(qd);
    if (room <= 0)
        return;
    char count[16], block[24], idle[24];
    snprintf(count, sizeof count, "%d", room);
    claim_kind kind;
    int rc;
    if (!qd->pel_done) {
        kind = CLAIM_OWN;
        const char *argv[] = {"XREADGROUP", "GROUP",   qd->stream, qd->consumer,  "COUNT",
                              count,        "STREAMS", qd->stream, qd->pel_cursor};
        rc = rconn_commandv(&qd->reader, on_claimed, (void *)(intptr_t)kind, 9, argv);
    } else if (uv_now(qd->loop) >= qd->next_reclaim_ms) {
        kind = CLAIM_RECLAIM;
        /* half a lease of silence: a live consumer beats every quarter; a dead one's messages
         * are found by a read at most a quarter later, so they are taken over within a lease */
        snprintf(idle, sizeof idle, "%llu", (unsigned long long)(qd->cfg.lease_s * 1000 / 2));
        const char *argv[] = {"XAUTOCLAIM", qd->stream,           qd->stream, qd->consumer,
                              idle,         qd->autoclaim_cursor, "COUNT",    count};
        rc = rconn_commandv(&qd->reader, on_claimed, (void *)(intptr_t)kind, 8, argv);
    } else if (qd->flowing && rconn_up(&qd->cmd)) {
        kind = CLAIM_FLOWING;
        queue_flush_acks(qd); /* in the same write */
        const char *argv[] = {"XREADGROUP", "GROUP",   qd->stream, qd->consumer, "COUNT",
                              count,        "STREAMS", qd->stream, ">"};
        rc = rconn_commandv(&qd->cmd, on_claimed, (void *)(intptr_t)kind, 9, argv);
    } else {
        kind = CLAIM_NEW;
        snprintf(block, sizeof block, "%llu", (unsigned long long)queue_block_ms(qd));
        const char *argv[] = {"XREADGROUP", "GROUP", qd->stream, qd->consumer, "COUNT", count,
                              "BLOCK",      block,   "STREAMS",  qd->stream,   ">"};
        rc = rconn_commandv(&qd->reader, on_claimed, (void *)(intptr_t)kind, 11, argv);
    }
    log_debug(QUEUE_TARGET, "claim: kind %d, count %d (free %d, waiting %d)", kind, room,
              orchestrator_free_slots(&qd->core->orch), qd->num_waiting);
    if (rc == 0) {
        qd->reading = 1;
        qd->reading_blocked = kind == CLAIM_NEW;
        qd->read_count = room;
    }
}

/* ---- the group, and the reader's identity ---- */

static void on_client_id(rconn *rc, redisReply *reply, void *ctx) {
    (void)ctx;
    queue_door *qd = rc->owner;
    if (reply && reply->type == REDIS_REPLY_INTEGER)
        qd->reader_id = reply->integer;
}

static void on_group(rconn *rc, redisReply *reply, void *ctx) {
    (void)ctx;
    queue_door *qd = rc->owner;
    qd->group_creating = 0;
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "BUSYGROUP", 9)) {
        log_error(QUEUE_TARGET, "cannot create consumer group %s: %s", qd->stream, reply->str);
        return; /* the next tick tries again */
    }
    if (reply->type != REDIS_REPLY_ERROR)
        log_info(QUEUE_TARGET, "created consumer group %s", qd->stream);
    qd->group_ready = 1;
    qd->group_lost = 0;
    claim_more(qd);
}

/* XGROUP CREATE Q Q $ MKSTREAM, as the platform would. Once the reader has been connected
 * before (a reconnect), or the group was found gone, from 0 instead: a group missing then was
 * lost with Redis (a restart without persistence), and every entry in such a stream arrived
 * after the loss and is unacknowledged work, since acknowledged entries are deleted. */
static void create_group(queue_door *qd) {
    if (qd->group_creating)
        return;
    const char *argv[] = {"XGROUP", "CREATE", qd->stream, qd->stream, qd->group_lost ? "0" : "$", "MKSTREAM"};
    qd->group_creating = rconn_commandv(&qd->reader, on_group, NULL, 6, argv) == 0;
}

void claim_on_reader_up(queue_door *qd) {
    qd->reading = qd->reading_blocked = qd->unblock_sent = 0;
    qd->group_ready = qd->group_creating = 0;
    qd->pel_done = 0;
    snprintf(qd->pel_cursor, sizeof qd->pel_cursor, "0");
    snprintf(qd->autoclaim_cursor, sizeof qd->autoclaim_cursor, "0-0");
    if (qd->reader_epoch++ > 0)
        qd->group_lost = 1;
    const char *argv[] = {"CLIENT", "ID"};
    rconn_commandv(&qd->reader, on_client_id, NULL, 2, argv);
    create_group(qd);
}

/* The tick: a group not created yet (an error earlier), or a claim that failed, retried. */
void claim_retry(queue_door *qd) {
    if (!rconn_up(&qd->reader) || qd->reading)
        return;
    if (!qd->group_ready)
        create_group(qd);
    else
        claim_more(qd);
}
