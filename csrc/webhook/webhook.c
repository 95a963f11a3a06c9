/* webhook/webhook.c: throttling, headers and the terminal retry series (docs/http-api.md#webhooks):
 * 2xx = delivered; 429/500/502/503/504 or a transport error = retry after
 * base * 2^min(n,10); any other status = give up. */
#include "webhook/webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/build_info.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/stats.h"

#define TARGET "coglet::webhook"
#define MAX_HEADERS 8
/* Non-terminal requests of one webhook in flight at once. Each carries the whole state (every
 * output so far): against a target that answers slowly, one per output would pile up without
 * bound. Past it the newest state waits, replacing an older waiting one, which it contains. */
#define EVENTS_IN_FLIGHT_MAX 8

typedef struct event_send event_send;

/* What a webhook's non-terminal sends share with it. They are not aborted when it ends (they
 * may arrive after the terminal one), so this is counted. */
typedef struct event_gate {
    int refs; /* the webhook's, and one per send in flight */
    int in_flight;
    webhook *wh;         /* NULL once the webhook is freed */
    event_send *waiting; /* the newest send that found every request busy */
} event_gate;

struct webhook {
    http_client *client;
    webhook_settings settings;
    char *url;
    unsigned events;
    char *headers[MAX_HEADERS + 1];
    double last_sent; /* monotonic; starts 10 s in the past */
    /* terminal */
    char *body;
    size_t body_len;
    int attempt;
    uv_timer_t retry_timer;
    int timer_open;
    client_request *inflight;
    event_gate *gate;
    int pending;
    int delivered;
    void (*done)(void *ctx, webhook *wh);
    void *done_ctx;
};

static double env_double(const char *name, double fallback) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    double d = strtod(v, &end);
    return *end ? fallback : d;
}

void webhook_settings_from_env(webhook_settings *s) {
    double t = env_double("COG_THROTTLE_RESPONSE_INTERVAL", 0.5);
    s->throttle_s = t < 0 ? 0 : (double)(long long)(t * 1000) / 1000.0; /* whole milliseconds */
    s->retry_base_s = env_double("COGLET_WEBHOOK_RETRY_BASE", 0.1);
    if (s->retry_base_s < 0)
        s->retry_base_s = 0.1;
    s->max_retries = 12;
    double timeout = env_double("COGLET_WEBHOOK_TIMEOUT", 30.0);
    s->timeout_ms = (long)((timeout > 0 ? timeout : 30.0) * 1000);
}

unsigned webhook_parse_filter(const json_t *filter) {
    if (!json_is_array(filter))
        return WEBHOOK_ALL;
    unsigned bits = 0;
    size_t i;
    json_t *e;
    json_array_foreach(filter, i, e) {
        const char *s = json_string_value(e);
        if (!s)
            continue;
        if (!strcmp(s, "start"))
            bits |= WEBHOOK_START;
        else if (!strcmp(s, "output"))
            bits |= WEBHOOK_OUTPUT;
        else if (!strcmp(s, "logs"))
            bits |= WEBHOOK_LOGS;
        else if (!strcmp(s, "completed"))
            bits |= WEBHOOK_COMPLETED;
    }
    return bits;
}

static char *header(const char *name, const char *value) {
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (h)
        snprintf(h, n, "%s: %s", name, value);
    return h;
}

webhook *webhook_new(http_client *client, const webhook_settings *settings, const char *url, unsigned events,
                     const char *traceparent, const char *tracestate) {
    webhook *wh = calloc(1, sizeof *wh);
    if (!wh)
        return NULL;
    wh->client = client;
    wh->settings = *settings;
    wh->url = strdup(url);
    wh->events = events;
    wh->last_sent = now_monotonic() - 10.0;
    wh->gate = calloc(1, sizeof *wh->gate);
    if (wh->gate) {
        wh->gate->refs = 1;
        wh->gate->wh = wh;
    }
    int n = 0;
    wh->headers[n++] = strdup("Content-Type: application/json");
    wh->headers[n++] = header("User-Agent", coglet_build.user_agent);
    wh->headers[n++] = strdup("Expect:"); /* no 100-continue round trip */
    const char *token = getenv("WEBHOOK_AUTH_TOKEN");
    if (token && *token) {
        size_t len = strlen(token) + 8;
        char *bearer = malloc(len);
        if (bearer) {
            snprintf(bearer, len, "Bearer %s", token);
            wh->headers[n++] = header("Authorization", bearer);
            free(bearer);
        }
    }
    if (traceparent)
        wh->headers[n++] = header("traceparent", traceparent);
    if (tracestate)
        wh->headers[n++] = header("tracestate", tracestate);
    wh->headers[n] = NULL;
    if (!wh->url || !wh->gate) {
        webhook_free(wh);
        return NULL;
    }
    return wh;
}

static void send_once(webhook *wh, const char *body, size_t len, client_done_cb cb, void *ctx,
                      client_request **out) {
    client_request_opts opts = {
        .method = "POST",
        .url = wh->url,
        .headers = (const char *const *)wh->headers,
        .body = body,
        .body_len = len,
        .timeout_ms = wh->settings.timeout_ms,
    };
    client_request *req = http_client_start(wh->client, &opts, cb, ctx);
    if (out)
        *out = req;
    if (!req && cb) {
        client_result res = {.status = 0, .code = CURLE_FAILED_INIT, .error = "could not start request"};
        cb(ctx, &res);
    }
}

static int delivered(const client_result *res) { return res->code == CURLE_OK && res->status >= 200 && res->status < 300; }

static const char *event_name(unsigned event) {
    return event == WEBHOOK_START ? "start" : event == WEBHOOK_OUTPUT ? "output" : "logs";
}

/* One non-terminal send, in flight or waiting for a free request. */
struct event_send {
    const char *event;
    webhook_sent_cb sent;
    void *ctx;
    event_gate *gate;
    char *body; /* while it waits */
};

static void gate_unref(event_gate *g) {
    if (--g->refs == 0)
        free(g);
}

/* sent: 1 delivered, 0 not, -1 aborted (or replaced by a newer state before it went out). */
static void send_done(event_send *es, int outcome) {
    if (es->sent)
        es->sent(es->ctx, outcome);
    free(es->body);
    free(es);
}

/* A newer state, or the terminal one, has everything the waiting one had. */
static void drop_waiting(event_gate *g) {
    event_send *w = g->waiting;
    g->waiting = NULL;
    if (w)
        send_done(w, -1);
}

static void start_send(webhook *wh, event_send *es);

static void on_event_sent(void *ctx, const client_result *res) {
    event_send *es = ctx;
    event_gate *g = es->gate;
    int ok = delivered(res);
    stats_inc(STAT_WEBHOOK_ATTEMPTS, es->event, ok ? "delivered" : "failed");
    if (res->code != CURLE_OK)
        log_debug(TARGET, "webhook event not delivered: %s", res->error);
    send_done(es, ok);
    g->in_flight--;
    if (g->wh && g->waiting) {
        event_send *next = g->waiting;
        g->waiting = NULL;
        start_send(g->wh, next);
    }
    gate_unref(g);
}

static void on_event_aborted(void *ctx) {
    event_send *es = ctx;
    event_gate *g = es->gate;
    send_done(es, -1);
    g->in_flight--;
    gate_unref(g);
}

/* Sends es now, or keeps it waiting while every request is busy. */
static void start_send(webhook *wh, event_send *es) {
    event_gate *g = wh->gate;
    if (g->in_flight >= EVENTS_IN_FLIGHT_MAX) {
        drop_waiting(g);
        g->waiting = es;
        return;
    }
    g->in_flight++;
    g->refs++;
    char *body = es->body;
    es->body = NULL;
    client_request_opts opts = {
        .method = "POST",
        .url = wh->url,
        .headers = (const char *const *)wh->headers,
        .body = body,
        .body_len = strlen(body),
        .timeout_ms = wh->settings.timeout_ms,
        .on_abort = on_event_aborted,
    };
    if (!http_client_start(wh->client, &opts, on_event_sent, es)) {
        client_result res = {.status = 0, .code = CURLE_FAILED_INIT, .error = "could not start request"};
        on_event_sent(es, &res);
    }
    free(body);
}

int webhook_event(webhook *wh, unsigned event, const json_t *state, webhook_sent_cb sent, void *ctx) {
    if (!(wh->events & event))
        return 0;
    double now = now_monotonic();
    if ((event == WEBHOOK_START || event == WEBHOOK_LOGS) && now - wh->last_sent < wh->settings.throttle_s)
        return 0; /* dropped, not delayed */
    event_send *es = malloc(sizeof *es);
    char *body = es ? json_out_string(state, JSON_OUT_SORTED) : NULL;
    if (!body) {
        free(es);
        return 0;
    }
    *es = (event_send){.event = event_name(event), .sent = sent, .ctx = ctx, .gate = wh->gate, .body = body};
    wh->last_sent = now;
    start_send(wh, es);
    return 1;
}

static void finish(webhook *wh) {
    wh->pending = 0;
    if (wh->done)
        wh->done(wh->done_ctx, wh);
    webhook_free(wh);
}

static void attempt_terminal(webhook *wh);

static void on_retry_timer(uv_timer_t *t) {
    webhook *wh = t->data;
    attempt_terminal(wh);
}

static void on_terminal_sent(void *ctx, const client_result *res) {
    webhook *wh = ctx;
    wh->inflight = NULL;
    long st = res->status;
    stats_inc(STAT_WEBHOOK_ATTEMPTS, "completed", delivered(res) ? "delivered" : "failed");
    if (delivered(res)) {
        wh->delivered = 1;
        log_debug(TARGET, "terminal webhook delivered (attempt %d)", wh->attempt);
        finish(wh);
        return;
    }
    int retryable = res->code != CURLE_OK || st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
    char what[300];
    if (res->code != CURLE_OK)
        snprintf(what, sizeof what, "%s", res->error ? res->error : "transport error");
    else
        snprintf(what, sizeof what, "HTTP %ld", st);
    if (!retryable || wh->attempt > wh->settings.max_retries) {
        stats_inc(STAT_WEBHOOKS_ABANDONED, retryable ? "retries_exhausted" : "refused", NULL);
        log_event(LOG_WARN, TARGET, json_pack("{s:s, s:i}", "url", wh->url, "attempts", wh->attempt),
                  "giving up on terminal webhook: %s", what);
        finish(wh);
        return;
    }
    int n = wh->attempt; /* retry n = 1..12 */
    double delay = wh->settings.retry_base_s * (double)(1 << (n < 10 ? n : 10));
    log_event(LOG_WARN, TARGET, json_pack("{s:s, s:i}", "url", wh->url, "attempt", wh->attempt),
              "terminal webhook failed (%s); retrying in %.1fs", what, delay);
    if (!wh->timer_open) {
        uv_timer_init(wh->client->loop, &wh->retry_timer);
        wh->retry_timer.data = wh;
        wh->timer_open = 1;
    }
    uv_timer_start(&wh->retry_timer, on_retry_timer, (uint64_t)(delay * 1000), 0);
}

static void attempt_terminal(webhook *wh) {
    wh->attempt++;
    send_once(wh, wh->body, wh->body_len, on_terminal_sent, wh, &wh->inflight);
}

static void completed(webhook *wh, char *body, void (*done)(void *ctx, webhook *wh), void *ctx) {
    wh->done = done;
    wh->done_ctx = ctx;
    drop_waiting(wh->gate); /* the terminal state has everything it had */
    if (!(wh->events & WEBHOOK_COMPLETED) || !body) {
        free(body);
        finish(wh);
        return;
    }
    wh->body = body;
    wh->body_len = strlen(body);
    wh->pending = 1;
    attempt_terminal(wh);
}

void webhook_completed(webhook *wh, const json_t *state, void (*done)(void *ctx, webhook *wh), void *ctx) {
    completed(wh, wh->events & WEBHOOK_COMPLETED ? json_out_string(state, JSON_OUT_SORTED) : NULL, done, ctx);
}

void webhook_completed_text(webhook *wh, const char *body, void (*done)(void *ctx, webhook *wh), void *ctx) {
    completed(wh, wh->events & WEBHOOK_COMPLETED ? strdup(body) : NULL, done, ctx);
}

int webhook_pending(const webhook *wh) { return wh->pending; }

int webhook_delivered(const webhook *wh) { return wh->delivered; }

void webhook_set_traceparent(webhook *wh, const char *traceparent) {
    int i = 0;
    while (wh->headers[i] && strncmp(wh->headers[i], "traceparent: ", 13))
        i++;
    if (!wh->headers[i] && i >= MAX_HEADERS)
        return;
    char *h = header("traceparent", traceparent);
    if (!h)
        return;
    int is_new = !wh->headers[i];
    free(wh->headers[i]);
    wh->headers[i] = h;
    if (is_new)
        wh->headers[i + 1] = NULL;
}


static void on_timer_closed(uv_handle_t *h) { free(h->data); }

void webhook_free(webhook *wh) {
    if (!wh)
        return;
    if (wh->inflight) {
        http_client_abort(wh->client, wh->inflight);
        wh->inflight = NULL;
    }
    if (wh->gate) {
        drop_waiting(wh->gate);
        wh->gate->wh = NULL;
        gate_unref(wh->gate);
    }
    free(wh->url);
    free(wh->body);
    for (int i = 0; wh->headers[i]; i++)
        free(wh->headers[i]);
    if (wh->timer_open) {
        /* memory goes in the close callback, never right after uv_close */
        uv_timer_stop(&wh->retry_timer);
        wh->retry_timer.data = wh;
        uv_close((uv_handle_t *)&wh->retry_timer, on_timer_closed);
        return;
    }
    free(wh);
}
