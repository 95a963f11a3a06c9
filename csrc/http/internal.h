/* http/internal.h: what server.c (connections, parsing, deadlines, back-pressure),
 * response.c (the write path) and limits.c (settings, shedding) share; not for the app. */
#ifndef COGLET_HTTP_INTERNAL_H
#define COGLET_HTTP_INTERNAL_H

#include "http/http.h"

#define HTTP_TARGET "coglet::transport::http"

/* What a connection's timer is timing (docs/operations.md, "Limits and timeouts"). */
enum http_conn_phase {
    HTTP_PHASE_HEADERS, /* a request has begun (or the connection is new): header deadline */
    HTTP_PHASE_BODY,    /* headers read, body arriving: no-progress deadline */
    HTTP_PHASE_IDLE,    /* between requests: idle keep-alive deadline */
};

/* server.c */
/* on_drained, once draining, not listening, and every connection handle is closed. */
void http__server_maybe_drained(http_server *server);
void http__conn_close(http_conn *conn);
/* The app's answer is complete: close, or go on with the next pipelined request. */
void http__conn_request_done(http_conn *conn);
/* A write was queued on the socket (some of it is unsent). */
void http__conn_queued(http_conn *conn);
/* A queued write finished (status < 0: failed), or one went out at once (status 0). */
void http__conn_wrote(http_conn *conn, int status);

/* response.c */
void http__conn_write_raw(http_conn *conn, const char *data, size_t len);

/* limits.c */
void http__limits_from_env(http_limits *limits);
/* Accepts a connection over max_connections, answers 503 and closes it. */
void http__shed_connection(http_server *server);

#endif
