/* webhook/webhook.h: one prediction's webhooks (docs/http-api.md#webhooks): events start/output/logs
 * (fire-and-forget, start and logs throttled, at most 8 in flight) and the terminal
 * `completed`, retried. */
#ifndef COGLET_WEBHOOK_H
#define COGLET_WEBHOOK_H

#include <jansson.h>
#include <uv.h>

#include "webhook/client.h"

enum {
    WEBHOOK_START = 1 << 0,
    WEBHOOK_OUTPUT = 1 << 1,
    WEBHOOK_LOGS = 1 << 2,
    WEBHOOK_COMPLETED = 1 << 3,
    WEBHOOK_ALL = 15,
};

typedef struct webhook_settings {
    double throttle_s;    /* COG_THROTTLE_RESPONSE_INTERVAL */
    double retry_base_s;  /* first backoff step: 0.1 s (COGLET_WEBHOOK_RETRY_BASE) */
    int max_retries;      /* 12 */
    long timeout_ms;      /* per request: 30 s */
} webhook_settings;

typedef struct webhook webhook;

/* Reads the environment (once per call). */
void webhook_settings_from_env(webhook_settings *s);
/* Parses the event filter: NULL/absent = all; returns the bit set. */
unsigned webhook_parse_filter(const json_t *filter);

webhook *webhook_new(http_client *client, const webhook_settings *settings, const char *url, unsigned events,
                     const char *traceparent, const char *tracestate);
/* A non-terminal event; state is borrowed. */
/* Called once a non-terminal event's request ended: delivered 1 (a 2xx), 0 (anything else),
 * or -1 (aborted: the client closed first). */
typedef void (*webhook_sent_cb)(void *ctx, int delivered);
/* A non-terminal event; state is borrowed. 1 when a request was started (then sent, when
 * not NULL, is called exactly once), 0 when the filter or the throttle dropped it. */
int webhook_event(webhook *wh, unsigned event, const json_t *state, webhook_sent_cb sent, void *ctx);
/* The terminal event; state is borrowed. The webhook frees itself once the delivery
 * series ends (then `done` is called). Without `completed` in the filter it ends at once. */
void webhook_completed(webhook *wh, const json_t *state, void (*done)(void *ctx, webhook *wh), void *ctx);
/* The same with the terminal state already encoded (sorted keys, as webhook_completed would):
 * body is copied. */
void webhook_completed_text(webhook *wh, const char *body, void (*done)(void *ctx, webhook *wh), void *ctx);
/* Drops a webhook that never reached completed (or abandons a pending delivery). */
void webhook_free(webhook *wh);
int webhook_pending(const webhook *wh);
/* Replaces the traceparent header of the requests sent from now on. */
void webhook_set_traceparent(webhook *wh, const char *traceparent);
/* Whether the terminal delivery got a 2xx (valid in the done callback). */
int webhook_delivered(const webhook *wh);

#endif
