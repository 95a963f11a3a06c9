/* queue/queue_impl.h: the queue door's parts, for csrc/queue/ only.
 *   door.c      the door's lifetime: connections, setup, pause, shutdown, close
 *   claim.c     taking messages: own pending entries, XAUTOCLAIM, XREADGROUP; parsing them
 *   message.c   one message: its prediction, its responses, the terminal record and the ack
 *   lease.c     heartbeats on held messages, cancel keys
 * One message (qmsg) is held from the claim until its acknowledgement is in; it is
 * reference-counted because hiredis callbacks may outlive everything else that points to it. */
#ifndef COGLET_QUEUE_IMPL_H
#define COGLET_QUEUE_IMPL_H

#include <jansson.h>
#include <stdint.h>

#include "common/buf.h"
#include "core/prediction.h"
#include "queue/queue.h"
#include "queue/redis_conn.h"
#include "webhook/webhook.h"

#define QUEUE_TARGET "coglet::queue"
#define POISON_MAX 1024 /* bad message ids remembered, so a reclaim does not log them again */

typedef enum {
    QM_NEW,       /* parsed, not admitted yet */
    QM_WAITING,   /* claimed, waiting for a slot */
    QM_CHECKING,  /* redelivered: asking Redis whether it already finished */
    QM_RUNNING,   /* its prediction runs */
    QM_RECORDING, /* terminal: writing the record that stops a second run */
    QM_SENDING,   /* terminal: the response is being delivered */
    QM_ACKING,    /* XACK + XDEL sent */
    QM_DONE,
} qmsg_state;

typedef struct qmsg qmsg;
struct qmsg {
    int refs;
    queue_door *door;
    qmsg *next, *prev; /* the door's held messages */
    qmsg_state state;
    char *entry_id;  /* the stream entry */
    json_t *msg;     /* the message object: every response echoes its keys */
    json_t *resp;    /* the response being built */
    json_t *outputs; /* generator outputs so far */
    buf logs;
    char *webhook_url;
    char *response_key; /* response_queue */
    char *cancel_key;
    unsigned events; /* WEBHOOK_* bits */
    int redelivered;
    double last_sent; /* monotonic; throttles non-terminal responses */
    webhook *wh;
    prediction *p;
    sink sink;
    delivery del;
    int in_delivery;
    int wait_redis;      /* a step that needs the command connection, waiting for it */
    int cancel_inflight; /* an EXISTS on cancel_key is out */
    int cancel_sent;
    int lease_lost; /* the heartbeat found it no longer ours */
    int ack_queued; /* QM_ACKING, its command not written yet (queue_flush_acks) */
    char *terminal; /* the terminal response, encoded */
};

struct queue_door {
    front_door super;
    core *core;
    uv_loop_t *loop;
    queue_config cfg;
    char *stream, *consumer, *report_url, *redis_url;
    char *done_prefix; /* "coglet:{stream}:done:" */
    char *pause_key, *pause_consumer_key;
    rconn reader, cmd;
    long long reader_id; /* CLIENT ID of the reader, for CLIENT UNBLOCK */
    int reader_epoch;    /* bumped on every reconnect of the reader */
    int group_ready, group_creating;
    int group_lost;      /* NOGROUP seen: recreate from the stream's start */
    int reading;         /* a claim command is out on the reader */
    int reading_blocked; /* ... and it is a blocking XREADGROUP */
    int read_count;      /* ... for this many messages */
    int unblock_sent;    /* CLIENT UNBLOCK sent for it */
    int flowing;         /* the last read of new messages found some (claim.c) */
    int pel_done;        /* own pending entries read since the reader came up */
    char pel_cursor[48];
    char autoclaim_cursor[48];
    uint64_t next_reclaim_ms;
    int setup_ok, setup_reported, setup_time_pending, setup_time_inflight;
    delivery setup_time_del;
    double setup_seconds;
    int paused, stopping;
    int iterator_output;            /* Output is an iterator: outputs go out as they come */
    webhook_settings hook_settings; /* the core's, unthrottled: this door throttles itself */
    qmsg *held;
    int num_held, num_waiting;
    uv_timer_t tick, cancel_timer, kick;
    uv_timer_t ack_timer; /* sends the acknowledgements no other command took along */
    int acks_queued;      /* messages whose XACK + XDEL waits for the next write */
    int handles_open, conns_open;
    int failures_in_row;
    char *poison[POISON_MAX];
    int poison_next;
    delivery report_del;
    webhook *report_wh;
};

/* door.c */
uint64_t queue_tick_ms(const queue_door *qd);
uint64_t queue_block_ms(const queue_door *qd);
int queue_claims_allowed(const queue_door *qd);
int queue_room(const queue_door *qd);
void queue_note_terminal(queue_door *qd, const char *status);

/* claim.c */
void claim_more(queue_door *qd);
void claim_on_reader_up(queue_door *qd);
void claim_retry(queue_door *qd);
int poison_has(const queue_door *qd, const char *id);

/* message.c */
qmsg *qmsg_new(queue_door *qd, const char *entry_id, json_t *msg);
void qmsg_ref(qmsg *m);
void qmsg_unref(qmsg *m);
/* Parses the message's own fields; -1 (logged) when it cannot be handled. */
int qmsg_parse(qmsg *m, char *why, size_t whylen);
/* Redelivered: ask whether it already ended; else it waits for a slot. */
void qmsg_admit(qmsg *m);
/* Starts waiting messages while slots are free. */
void qmsg_start_waiting(queue_door *qd);
/* The command connection is back: resume steps that waited for it. */
void qmsg_redis_up(queue_door *qd);
/* Writes the acknowledgements that wait (step_ack queues them, at most cfg.ack_delay_s): called
 * before the command connection's next command, so they ride in the same write. */
void queue_flush_acks(queue_door *qd);
void queue_on_ack_timer(uv_timer_t *t);
/* Drops a message that will not be handled (it stays pending in Redis). */
void qmsg_forget(qmsg *m);
/* Close: drops what was never started. */
void qmsg_drop_waiting(queue_door *qd);
qmsg *queue_find_held(queue_door *qd, const char *entry_id);

/* lease.c */
void lease_heartbeat(queue_door *qd);
void cancel_poll_update(queue_door *qd);

#endif
