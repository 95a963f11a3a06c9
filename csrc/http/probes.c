/* http/probes.c: the operator's routes: GET /livez, GET /readyz (Kubernetes probes) and
 * GET /metrics (Prometheus), and the HTTP door's own metrics (requests by route and status
 * class, open connections, bytes in and out). docs/operations.md describes all three. */
#include <stdlib.h>
#include <string.h>

#include "common/json_out.h"
#include "common/log.h"
#include "core/stats.h"
#include "http/door.h"

/* ---- probes ---- */

void route_livez(http_conn *conn) {
    /* answering at all is the proof: the loop turned to read this request */
    http_respond_json(conn, 200, "{\"status\":\"alive\"}");
}

/* Why a create would be refused now, or NULL when it would be accepted. */
static const char *not_ready_reason(const core *c, const char **detail) {
    if (core_shutting_down(c)) {
        *detail = "the server is shutting down";
        return "shutting_down";
    }
    switch (c->health) {
    case HEALTH_UNKNOWN: *detail = "no predictor: serving health endpoints only"; return "no_predictor";
    case HEALTH_STARTING:
        *detail = c->restarting ? "the worker crashed and is being restarted" : "setup has not finished yet";
        return c->restarting ? "restarting" : "setup";
    case HEALTH_SETUP_FAILED: *detail = "setup failed"; return "setup_failed";
    case HEALTH_DEFUNCT: *detail = "the worker crashed"; return "defunct";
    case HEALTH_READY: break;
    }
    if (!core_has_room(c)) {
        *detail = "every slot and the wait queue are full";
        return "busy";
    }
    return NULL;
}

void route_readyz(core *c, http_conn *conn) {
    const char *detail = NULL;
    const char *reason = not_ready_reason(c, &detail);
    if (!reason) {
        http_respond_json(conn, 200, "{\"status\":\"ready\"}");
        return;
    }
    respond_json_value(conn, 503, json_pack("{s:s, s:s, s:s}", "status", "not_ready", "reason", reason, "detail", detail),
                       JSON_OUT_SORTED);
}

/* ---- GET /metrics ---- */

static void free_text(void *ctx) { free(ctx); }

void route_metrics(http_conn *conn) {
    buf out;
    buf_init(&out, (size_t)64 << 20);
    if (stats_write(&out) != BUF_OK) {
        buf_free(&out);
        http_respond_json(conn, 500, "{\"error\":\"cannot render metrics\"}");
        return;
    }
    size_t len = out.len;
    char *text = buf_steal(&out);
    const char *parts[] = {text};
    http_respond_parts(conn, 200, STATS_CONTENT_TYPE, parts, &len, 1, free_text, text);
}

/* ---- the door's own metrics ---- */

/* A route's template, so that ids never become label values. */
static const char *route_label(const http_request *req) {
    static const char *fixed[] = {"/", "/health-check", "/openapi.json", "/shutdown", "/metrics", "/livez", "/readyz"};
    const char *url = req->url.data ? req->url.data : "";
    size_t plen = strcspn(url, "?#");
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        if (plen == strlen(fixed[i]) && !memcmp(url, fixed[i], plen))
            return fixed[i];
    int training = plen >= 10 && !memcmp(url, "/trainings", 10);
    size_t base = training ? 10 : plen >= 12 && !memcmp(url, "/predictions", 12) ? 12 : 0;
    if (!base)
        return "other";
    if (plen == base)
        return training ? "/trainings" : "/predictions";
    if (url[base] != '/')
        return "other";
    const char *slash = memchr(url + base + 1, '/', plen - base - 1);
    if (!slash)
        return training ? "/trainings/{id}" : "/predictions/{id}";
    if ((size_t)(url + plen - slash) == 7 && !memcmp(slash, "/cancel", 7))
        return training ? "/trainings/{id}/cancel" : "/predictions/{id}/cancel";
    return "other";
}

void door_on_response(http_conn *conn, int status) {
    static const char *classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
    int k = status / 100;
    stats_inc(STAT_HTTP_REQUESTS, route_label(&conn->req), k >= 1 && k <= 5 ? classes[k - 1] : "other");
}

void door_collect_stats(void *arg) {
    http_door *d = arg;
    stats_set(STAT_HTTP_CONNECTIONS_OPEN, d->server.num_conns, NULL, NULL);
    stats_set(STAT_HTTP_RECEIVED_BYTES, (double)d->server.bytes_received, NULL, NULL);
    stats_set(STAT_HTTP_SENT_BYTES, (double)d->server.bytes_sent, NULL, NULL);
}
