/* queue/queue.h: the Redis Streams front door (pull mode). It claims messages from a stream
 * as slots come free, runs each as a prediction, sends its responses to the message's webhook
 * (or a Redis key) and acknowledges it once the terminal response is out. The protocol and
 * the guarantees are in docs/queue.md. */
#ifndef COGLET_QUEUE_H
#define COGLET_QUEUE_H

#include "core/core.h"

typedef struct queue_config {
    const char *redis_url;        /* redis://host:port/db */
    const char *stream;           /* the input queue; the consumer group has the same name */
    const char *consumer;         /* this consumer's name in the group */
    const char *report_setup_url; /* NULL: no setup report */
    double predict_timeout_s;     /* 0: none */
    int max_failures;             /* exit after more than this many failures in a row; -1: never */
    double lease_s;               /* COGLET_QUEUE_LEASE: how long a silent consumer keeps a message */
    double idle_timeout_s;        /* COGLET_QUEUE_IDLE_TIMEOUT: a reply later than this kills the link */
    double ack_delay_s;           /* COGLET_QUEUE_ACK_DELAY: how long an ack waits for a write to join */
} queue_config;

typedef struct queue_door queue_door;

/* The lease and idle timeout from the environment, the rest left as they are. */
void queue_config_from_env(queue_config *cfg);
/* Makes the door and registers it with the core (before core_start's loop runs); it connects
 * at once and claims nothing before setup has succeeded. NULL with *err set on a bad URL or
 * when memory runs out. */
queue_door *queue_door_start(core *c, uv_loop_t *loop, const queue_config *cfg, int *err);
/* After the loop has stopped (the core closed the door). */
void queue_door_free(queue_door *qd);

#endif
