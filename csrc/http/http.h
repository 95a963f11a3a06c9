/* http/http.h: HTTP/1.1 connections on libuv + llhttp. One request per connection is
 * in the application's hands at a time; pipelined requests wait, parsed, in order. */
#ifndef COGLET_HTTP_H
#define COGLET_HTTP_H

#include <llhttp.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"

#define HTTP_MAX_BODY ((size_t)100 * 1024 * 1024)
#define HTTP_MAX_URL ((size_t)8 * 1024)
#define HTTP_MAX_HEADER_BYTES ((size_t)64 * 1024)
#define HTTP_MAX_HEADERS 100

/* Limits and timeouts, read from the environment by http_server_init; each variable, its
 * default and what is done when it is hit are in docs/operations.md. Timeouts of 0 are off. */
typedef struct http_limits {
    unsigned max_connections;   /* COGLET_HTTP_MAX_CONNECTIONS, lowered to fit the fd limit */
    size_t max_unsent;          /* COGLET_HTTP_MAX_UNSENT: bytes queued before reading stops */
    uint64_t header_timeout_ms; /* COGLET_HTTP_HEADER_TIMEOUT */
    uint64_t body_timeout_ms;   /* COGLET_HTTP_BODY_TIMEOUT */
    uint64_t idle_timeout_ms;   /* COGLET_HTTP_IDLE_TIMEOUT */
} http_limits;

typedef struct http_server http_server;
typedef struct http_conn http_conn;

typedef struct http_request {
    int method; /* llhttp_method_t */
    int is_head;
    buf url;
    /* headers, each "name\0value\0" in hdr_data; offsets in hdr_off */
    buf hdr_data;
    size_t hdr_name[HTTP_MAX_HEADERS];
    size_t hdr_value[HTTP_MAX_HEADERS];
    int num_headers;
    int in_value;     /* llhttp callback state */
    int value_at_eol; /* the last value piece ended at a line break */
    buf body;
    int keep_alive;
} http_request;

/* The application's side of a connection. */
typedef struct http_app_ops {
    /* A whole request arrived. The app answers now or later with http_respond /
     * http_stream_*; until then, later pipelined requests wait. */
    void (*on_request)(http_conn *conn, http_request *req);
    /* The peer went away (or the connection failed) while a request was pending. The app
     * must drop its reference to conn: it is freed right after this returns. */
    void (*on_abort)(http_conn *conn);
    /* Optional: a response (or a stream) with this status is going out for conn->req. */
    void (*on_response)(http_conn *conn, int status);
} http_app_ops;

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int listening;
    int listener_open; /* the handle, listening or not */
    const http_app_ops *ops;
    void *app;
    http_conn *conns; /* all open connections */
    int num_conns;
    http_limits limits;
    int shed_open;            /* refused connections whose handles are still closing */
    unsigned long long shed_unlogged; /* refused since the last log line about it */
    uint64_t shed_logged_at;  /* uv_now of that line */
    void (*on_drained)(http_server *server); /* after close_all, when the last conn is freed */
    int draining;
    unsigned long long bytes_received, bytes_sent; /* for metrics */
};

struct http_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the deadline of the current phase (http/internal.h) */
    uv_shutdown_t shutdown_req;
    int handles_open; /* tcp and timer: the conn is freed when both have closed */
    http_server *server;
    http_conn *next, *prev;
    llhttp_t parser;
    http_request req;
    buf pending; /* received but not yet parsed (while a request is pending) */
    int request_pending;  /* the app holds req */
    int responding;       /* streaming response begun and not finished */
    int parse_paused;
    int processing;       /* inside conn_process: no re-entry */
    int closing;
    int close_after_write;
    int read_eof;
    int reject_status;
    const char *reject_body;
    const char *reject_reason;
    int writes_in_flight;
    int phase;     /* http_conn_phase */
    int reading;   /* uv_read_start in effect */
    int throttled; /* unsent output over limits.max_unsent: not read, next request not parsed */
    int rejected;  /* answered with an error: what still arrives is discarded */
    int linger;    /* once written: half-close, discard input until EOF (or 2 s), then close */
    void *app_data; /* the app's per-request pointer */
};

/* Reads the limits from the environment (a bad value is logged and the default used). */
int http_server_init(http_server *server, uv_loop_t *loop, const http_app_ops *ops, void *app);
/* Binds and listens. Returns 0 or a libuv error; the bound address goes to `bound` (e.g.
 * "0.0.0.0:43121"). */
int http_server_listen(http_server *server, const char *host, int port, char *bound, size_t boundlen);
/* Serves an already connected socket (tests and fuzzing). 0 or a libuv error. */
int http_server_adopt_fd(http_server *server, int fd);
/* Stops accepting. Open connections carry on. */
void http_server_stop_listening(http_server *server);
/* Closes idle connections now and every other one once its pending request ends. */
void http_server_close_idle(http_server *server);
/* Closes everything, the listener included; on_drained when done. */
void http_server_close_all(http_server *server);

const char *http_request_header(const http_request *req, const char *name); /* case-insensitive, first */

/* A complete response. extra_headers: NULL or "name: value\r\n..." lines. */
void http_respond(http_conn *conn, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers);
/* A JSON response whose malloc'd body is handed over (never copied, freed when written). */
void http_respond_json_owned(http_conn *conn, int status, char *json);
/* A response whose body is `nparts` pieces referenced in place (no copy); release(ctx) once
 * they are written (or the connection is gone). */
void http_respond_parts(http_conn *conn, int status, const char *content_type, const char *const *parts,
                        const size_t *lens, unsigned nparts, void (*release)(void *ctx), void *ctx);
/* A JSON response; body is a compact JSON string. */
void http_respond_json(http_conn *conn, int status, const char *json);
/* Streaming (SSE): headers now, chunks as they come, end closes the request. */
void http_stream_begin(http_conn *conn, int status, const char *content_type, const char *extra_headers);
void http_stream_write(http_conn *conn, const char *data, size_t len);
void http_stream_end(http_conn *conn);

const char *http_status_text(int status);

#endif
