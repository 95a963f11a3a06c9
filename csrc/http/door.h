/* http/door.h: the HTTP front door: routes requests to the prediction core, answers them,
 * and holds what a connection waits on (a sync response, an SSE stream, a health check). */
#ifndef COGLET_HTTP_DOOR_H
#define COGLET_HTTP_DOOR_H

#include <jansson.h>

#include "core/prediction.h"
#include "http/http.h"

typedef struct sse_hub sse_hub;

typedef struct http_door {
    front_door super;
    core *core;
    http_server server;
    size_t stream_history; /* COG_STREAM_HISTORY_CAPACITY */
    uv_timer_t keepalive_timer; /* SSE keep-alive comments */
    int timer_open;
    sse_hub *hubs; /* every prediction's SSE fan-out, for the keep-alive tick */
    char bound[96];
} http_door;

/* Binds and listens (0, or a libuv error), and registers with the core. */
int http_door_start(http_door *d, core *c, uv_loop_t *loop, const char *host, int port, size_t stream_history);

/* What holds an http_conn while a request is pending: conn->app_data points at one, and the
 * HTTP layer's abort (the peer went away) reaches it through ops. */
typedef struct response response;
typedef struct response_ops {
    void (*abort)(response *res);
} response_ops;
struct response {
    const response_ops *ops;
    http_conn *conn;
};

/* Sends body (taken) as sorted-key JSON; large bodies reference their big strings. */
void respond_json_body(http_conn *conn, int status, json_t *body);
/* Sends value (taken) encoded with flags. */
void respond_json_value(http_conn *conn, int status, json_t *value, int flags);

/* routes.c */
void door_on_request(http_conn *conn, http_request *req);
/* health.c: GET /health-check */
void route_health(http_door *d, http_conn *conn);
/* probes.c: GET /livez, /readyz, /metrics, and the door's request metrics */
void route_livez(http_conn *conn);
void route_readyz(core *c, http_conn *conn);
void route_metrics(http_conn *conn);
void door_on_response(http_conn *conn, int status);
void door_collect_stats(void *arg);

/* sse.c */
/* The prediction's SSE fan-out, made on first use (record: keep a replay history). NULL when
 * memory runs out. */
sse_hub *sse_hub_for(http_door *d, prediction *p, int record);
/* Marks the hub: its prediction ends when its last subscriber leaves. */
void sse_hub_owns(sse_hub *hub);
int sse_hub_subscribers(const sse_hub *hub);
/* Attaches conn as a subscriber (replay first). 0, or an HTTP status already sent. */
int sse_subscribe(sse_hub *hub, http_conn *conn);
void sse_keepalive_tick(http_door *d);

#endif
