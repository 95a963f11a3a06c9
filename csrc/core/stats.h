/* core/stats.h: the server's Prometheus metrics: counters, gauges and histograms kept in
 * plain memory and only ever touched on the loop thread (no locks), and the text exposition
 * (format 0.0.4) a scrape reads. Every metric is one row of the table in stats.c; a new front
 * door adds its own by appending ids here and rows there. docs/operations.md lists them. */
#ifndef COGLET_STATS_H
#define COGLET_STATS_H

#include "common/buf.h"

#define STATS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"
#define STATS_MAX_LABELS 2

typedef enum {
    /* predictions (labels: door; door, status; door, reason) */
    STAT_PREDICTIONS_STARTED,
    STAT_PREDICTIONS_FINISHED,
    STAT_PREDICTIONS_REJECTED,
    STAT_PREDICTIONS_TIMED_OUT,
    STAT_PREDICTION_DURATION,
    STAT_PREDICTION_WAIT,
    STAT_PREDICTIONS_IN_FLIGHT,
    STAT_SETUP_DURATION,
    /* capacity */
    STAT_SLOTS_BUSY,
    STAT_SLOTS_TOTAL,
    STAT_WAIT_QUEUE_DEPTH,
    STAT_WAIT_QUEUE_CAPACITY,
    /* the worker */
    STAT_WORKER_CRASHES,
    STAT_WORKER_RESTARTS,
    /* webhooks and uploads (labels: event, outcome; outcome) */
    STAT_WEBHOOK_ATTEMPTS,
    STAT_WEBHOOKS_ABANDONED,
    STAT_UPLOADS,
    STAT_UPLOAD_BYTES,
    /* HTTP (labels: route, code) */
    STAT_HTTP_REQUESTS,
    STAT_HTTP_CONNECTIONS_OPEN,
    STAT_HTTP_RECEIVED_BYTES,
    STAT_HTTP_SENT_BYTES,
    /* tracing */
    STAT_SPANS_EXPORTED,
    STAT_SPANS_DROPPED,
    STAT_BUILD_INFO,
    /* the pull mode's door (label: queue); shown once it counts something */
    STAT_QUEUE_CLAIMS,
    STAT_QUEUE_RECLAIMS,
    STAT_QUEUE_ACKS,
    STAT__COUNT
} stat_id;

typedef enum { STAT_COUNTER, STAT_GAUGE, STAT_HISTOGRAM } stat_type;

/* One metric. `labels` names its labels in order (NULL-terminated, at most
 * STATS_MAX_LABELS); a histogram's `buckets` are upper bounds, ascending, ended by 0. */
typedef struct stat_def {
    const char *name;
    const char *help;
    stat_type type;
    const char *labels[STATS_MAX_LABELS + 1];
    const double *buckets;
} stat_def;

/* Label values are given in the order of the definition's labels; a NULL value is "". The
 * values are copied the first time a combination is seen; keep them to small fixed sets. */
void stats_add(stat_id id, double v, const char *l0, const char *l1);
static inline void stats_inc(stat_id id, const char *l0, const char *l1) { stats_add(id, 1, l0, l1); }
/* Gauges: the value now. */
void stats_set(stat_id id, double v, const char *l0, const char *l1);
/* Histograms: one observation. */
void stats_observe(stat_id id, double v, const char *l0, const char *l1);

/* Called at the start of every scrape to bring gauges up to date (the core's slots, a door's
 * connections). At most 8; 0, or UV_ENOSPC. */
int stats_on_scrape(void (*fn)(void *arg), void *arg);
void stats_off_scrape(void (*fn)(void *arg), void *arg);

/* Appends the whole exposition to out. BUF_OK or a buf error. */
int stats_write(buf *out);
/* Forgets every value (tests, and a second serve() in one process). */
void stats_reset(void);

#endif
