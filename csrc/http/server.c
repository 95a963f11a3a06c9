/* http/server.c: the listener, connections, llhttp callbacks and the request limits
 * (100 MiB bodies, checked from Content-Length and per chunk; 8 KiB URLs; 64 KiB of
 * headers), each connection's deadlines, and back-pressure on unsent output. */
#include "http/internal.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

#define TARGET HTTP_TARGET
#define READ_CAP (HTTP_MAX_BODY + HTTP_MAX_HEADER_BYTES + HTTP_MAX_URL + 4096)
#define LINGER_MS 2000

static const llhttp_settings_t parser_settings;
static void conn_process(http_conn *conn);
static void conn_rearm(http_conn *conn);

/* ---- requests ---- */

static void request_init(http_request *req) {
    memset(req, 0, sizeof *req);
    buf_init(&req->url, HTTP_MAX_URL);
    buf_init(&req->hdr_data, HTTP_MAX_HEADER_BYTES);
    buf_init(&req->body, HTTP_MAX_BODY);
}

static void request_reset(http_request *req) {
    buf_reset(&req->url);
    buf_reset(&req->hdr_data);
    /* A large body's memory goes back now, not when the connection closes. */
    if (req->body.cap > (1u << 16))
        buf_free(&req->body);
    else
        buf_reset(&req->body);
    req->num_headers = 0;
    req->in_value = 0;
    req->value_at_eol = 0;
    req->method = 0;
    req->is_head = 0;
    req->keep_alive = 0;
}

static void request_free(http_request *req) {
    buf_free(&req->url);
    buf_free(&req->hdr_data);
    buf_free(&req->body);
}

const char *http_request_header(const http_request *req, const char *name) {
    for (int i = 0; i < req->num_headers; i++)
        if (!strcasecmp(req->hdr_data.data + req->hdr_name[i], name))
            return req->hdr_data.data + req->hdr_value[i];
    return NULL;
}

/* ---- llhttp callbacks ---- */

static int reject(llhttp_t *parser, int status, const char *body, const char *reason) {
    http_conn *conn = parser->data;
    conn->reject_status = status;
    conn->reject_body = body;
    conn->reject_reason = reason; /* llhttp replaces the reason of some callbacks' errors */
    llhttp_set_error_reason(parser, reason);
    return HPE_USER;
}

static const char bad_request[] = "Bad Request";

static int on_message_begin(llhttp_t *parser) {
    http_conn *conn = parser->data;
    request_reset(&conn->req);
    conn->phase = HTTP_PHASE_HEADERS; /* the header deadline runs from the first byte */
    conn_rearm(conn);
    return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len) {
    http_conn *conn = parser->data;
    /* A request line that ends after the target is HTTP/0.9, which llhttp would take and
     * then wait on for headers. The byte after the span is in the buffer, or is the NUL
     * that ends it (a target cut by the end of a read is continued by the next call). */
    if (at[len] == '\r' || at[len] == '\n')
        return reject(parser, 400, "HTTP/0.9 is not supported", "HTTP/0.9 request line");
    if (buf_append(&conn->req.url, at, len) != BUF_OK)
        return reject(parser, 414, "", "url over limit");
    return 0;
}

static int on_header_field(llhttp_t *parser, const char *at, size_t len) {
    http_request *req = &((http_conn *)parser->data)->req;
    if (!req->in_value && req->num_headers > 0 && req->hdr_value[req->num_headers - 1] == (size_t)-1) {
        /* continuation of the same field name */
        req->hdr_data.len--; /* drop the NUL */
    } else {
        if (req->num_headers == HTTP_MAX_HEADERS)
            return reject(parser, 431, "", "too many headers");
        req->hdr_name[req->num_headers] = req->hdr_data.len;
        req->hdr_value[req->num_headers] = (size_t)-1;
        req->num_headers++;
        req->in_value = 0;
    }
    if (buf_append(&req->hdr_data, at, len) != BUF_OK || buf_append(&req->hdr_data, "", 1) != BUF_OK)
        return reject(parser, 431, "", "headers over limit");
    return 0;
}

static int on_header_value(llhttp_t *parser, const char *at, size_t len) {
    http_request *req = &((http_conn *)parser->data)->req;
    /* llhttp takes a folded value (obs-fold: a line break, then a space or tab) as a second
     * piece of the same value; a piece after one that ended at a line break is a fold, and
     * the request is refused rather than unfolded. */
    if (req->value_at_eol)
        return reject(parser, 400, "Folded header lines (obs-fold) are not supported", "obs-fold in a header");
    req->value_at_eol = at[len] == '\r' || at[len] == '\n'; /* the NUL past the buffer otherwise */
    if (req->num_headers == 0)
        return 0;
    size_t *v = &req->hdr_value[req->num_headers - 1];
    if (*v == (size_t)-1)
        *v = req->hdr_data.len;
    else
        req->hdr_data.len--; /* continuation: drop the NUL */
    req->in_value = 1;
    if (buf_append(&req->hdr_data, at, len) != BUF_OK || buf_append(&req->hdr_data, "", 1) != BUF_OK)
        return reject(parser, 431, "", "headers over limit");
    return 0;
}

static int on_header_value_complete(llhttp_t *parser) {
    http_request *req = &((http_conn *)parser->data)->req;
    req->in_value = 0;
    req->value_at_eol = 0;
    /* the next on_header_field starts a new header */
    if (req->num_headers > 0 && req->hdr_value[req->num_headers - 1] == (size_t)-1) {
        req->hdr_value[req->num_headers - 1] = req->hdr_data.len;
        buf_append(&req->hdr_data, "", 1);
    }
    return 0;
}

static const char body_too_large[] = "Failed to buffer the request body: length limit exceeded";

static int on_headers_complete(llhttp_t *parser) {
    http_conn *conn = parser->data;
    http_request *req = &conn->req;
    /* A header with no value at all leaves its value unset. */
    for (int i = 0; i < req->num_headers; i++)
        if (req->hdr_value[i] == (size_t)-1) {
            req->hdr_value[i] = req->hdr_data.len - 1; /* the name's NUL: empty string */
        }
    req->method = llhttp_get_method(parser);
    req->is_head = req->method == HTTP_HEAD;
    if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > HTTP_MAX_BODY)
        return reject(parser, 413, body_too_large, "body over limit");
    if ((parser->flags & F_CONTENT_LENGTH) && parser->content_length > 65536)
        buf_reserve(&req->body, (size_t)parser->content_length); /* once, not by doubling */
    conn->phase = HTTP_PHASE_BODY;
    conn_rearm(conn);
    const char *expect = http_request_header(req, "expect");
    if (expect && !strcasecmp(expect, "100-continue")) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        http__conn_write_raw(conn, cont, sizeof cont - 1);
    }
    return 0;
}

/* A chunk announced past the body limit is refused before any of it is buffered. */
static int on_chunk_header(llhttp_t *parser) {
    http_conn *conn = parser->data;
    if (parser->content_length > HTTP_MAX_BODY - conn->req.body.len)
        return reject(parser, 413, body_too_large, "chunk over the body limit");
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len) {
    http_conn *conn = parser->data;
    if (buf_append(&conn->req.body, at, len) != BUF_OK)
        return reject(parser, 413, body_too_large, "body over limit");
    conn_rearm(conn); /* progress: the body deadline starts again */
    return 0;
}

static int on_message_complete(llhttp_t *parser) {
    http_conn *conn = parser->data;
    /* Upgrades are not served: the answer closes the connection, so what follows (another
     * protocol's bytes) is never parsed as requests. */
    conn->req.keep_alive = llhttp_should_keep_alive(parser) && !parser->upgrade;
    conn->request_pending = 1;
    conn_rearm(conn); /* the app's wait is never timed here */
    /* Hand the request over once llhttp has returned; pause so pipelined bytes wait. */
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_chunk_header = on_chunk_header,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection lifetime ---- */

void http__server_maybe_drained(http_server *server) {
    if (server->draining && server->num_conns == 0 && server->shed_open == 0 && !server->listening &&
        server->on_drained)
        server->on_drained(server);
}

static void conn_on_close(uv_handle_t *handle) {
    http_conn *conn = handle->data;
    if (--conn->handles_open > 0)
        return;
    http_server *server = conn->server;
    request_free(&conn->req);
    buf_free(&conn->pending);
    free(conn);
    server->num_conns--;
    http__server_maybe_drained(server);
}

void http__conn_close(http_conn *conn) {
    if (conn->closing)
        return;
    conn->closing = 1;
    http_server *server = conn->server;
    if (conn->prev)
        conn->prev->next = conn->next;
    else
        server->conns = conn->next;
    if (conn->next)
        conn->next->prev = conn->prev;
    if (conn->request_pending && server->ops->on_abort) {
        conn->request_pending = 0;
        server->ops->on_abort(conn);
    }
    conn->app_data = NULL;
    uv_close((uv_handle_t *)&conn->timer, conn_on_close);
    uv_close((uv_handle_t *)&conn->tcp, conn_on_close);
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);

/* Reads while the peer may still send, the parser can take it, and output is under the
 * bound. */
static void conn_update_reading(http_conn *conn) {
    int want = !conn->closing && !conn->read_eof && !conn->throttled;
    if (want == conn->reading)
        return;
    conn->reading = want;
    if (!want)
        uv_read_stop((uv_stream_t *)&conn->tcp);
    else if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) != 0)
        http__conn_close(conn);
}

/* ---- deadlines ---- */

/* The deadline that applies now, in ms (0: none). Output still being written, or a client
 * too slow to take it, counts as idle: write progress restarts that deadline. */
static uint64_t conn_deadline_ms(const http_conn *conn) {
    const http_limits *limits = &conn->server->limits;
    if (conn->linger)
        return LINGER_MS;
    if (conn->request_pending)
        return 0; /* the app holds the request: a sync prediction or an SSE stream */
    if (conn->throttled)
        return limits->idle_timeout_ms;
    switch (conn->phase) {
    case HTTP_PHASE_HEADERS: return limits->header_timeout_ms;
    case HTTP_PHASE_BODY: return limits->body_timeout_ms;
    default: return limits->idle_timeout_ms;
    }
}

static void on_conn_timer(uv_timer_t *timer);

static void conn_rearm(http_conn *conn) {
    if (conn->closing)
        return;
    uint64_t ms = conn_deadline_ms(conn);
    if (ms)
        uv_timer_start(&conn->timer, on_conn_timer, ms, 0);
    else
        uv_timer_stop(&conn->timer);
}

static void respond_and_close(http_conn *conn, int status, const char *body) {
    conn->rejected = 1;
    conn->linger = 1;
    conn->req.keep_alive = 0;
    conn->request_pending = 1;
    http_respond(conn, status, "text/plain; charset=utf-8", body, strlen(body), NULL);
}

static void on_conn_timer(uv_timer_t *timer) {
    http_conn *conn = timer->data;
    const http_limits *limits = &conn->server->limits;
    if (conn->closing)
        return;
    if (conn->linger || conn->rejected) {
        http__conn_close(conn);
    } else if (conn->throttled || conn->phase == HTTP_PHASE_IDLE) {
        if (conn->writes_in_flight)
            log_warn(TARGET, "closing a connection whose client stopped reading: %zu bytes unsent for %g s",
                     uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp), limits->idle_timeout_ms / 1000.0);
        else
            log_debug(TARGET, "closing a keep-alive connection idle for %g s", limits->idle_timeout_ms / 1000.0);
        http__conn_close(conn);
    } else if (conn->phase == HTTP_PHASE_HEADERS) {
        log_warn(TARGET, "rejected request: 408 request headers not received within %g s",
                 limits->header_timeout_ms / 1000.0);
        respond_and_close(conn, 408, "Timed out reading the request headers");
    } else {
        log_warn(TARGET, "rejected request: 408 no request body received for %g s", limits->body_timeout_ms / 1000.0);
        respond_and_close(conn, 408, "Timed out reading the request body");
    }
}

/* ---- back-pressure and the end of a connection ---- */

static int conn_over_bound(http_conn *conn) {
    return uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) > conn->server->limits.max_unsent;
}

void http__conn_queued(http_conn *conn) {
    if (!conn->throttled && conn_over_bound(conn)) {
        conn->throttled = 1;
        conn_update_reading(conn);
        conn_rearm(conn);
    }
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    http_conn *conn = req->data;
    if (status < 0 && !conn->closing)
        http__conn_close(conn);
}

/* Everything is written and the connection is to close. After an error answer the peer may
 * still be sending (a body we refused): closing with unread input would reset the
 * connection and could destroy the answer before the client reads it, so half-close, drop
 * what arrives until the peer's EOF, and close then (or after LINGER_MS). */
static void conn_end(http_conn *conn) {
    if (!conn->linger || conn->read_eof || conn->server->draining) {
        http__conn_close(conn);
        return;
    }
    conn->throttled = 0;
    conn->shutdown_req.data = conn;
    if (uv_shutdown(&conn->shutdown_req, (uv_stream_t *)&conn->tcp, on_shutdown) != 0) {
        http__conn_close(conn);
        return;
    }
    conn_update_reading(conn);
    conn_rearm(conn);
}

static void conn_close_after_write(http_conn *conn) {
    conn->close_after_write = 1;
    if (conn->writes_in_flight == 0)
        conn_end(conn);
}

void http__conn_wrote(http_conn *conn, int status) {
    if (status < 0) {
        http__conn_close(conn);
        return;
    }
    if (conn->close_after_write) {
        if (conn->writes_in_flight == 0)
            conn_end(conn);
        else
            conn_rearm(conn);
        return;
    }
    if (conn->throttled && uv_stream_get_write_queue_size((uv_stream_t *)&conn->tcp) <= conn->server->limits.max_unsent / 2) {
        conn->throttled = 0;
        conn_update_reading(conn);
        conn_rearm(conn);
        if (!conn->closing && !conn->request_pending)
            conn_process(conn);
        return;
    }
    if (conn->throttled || conn->phase == HTTP_PHASE_IDLE)
        conn_rearm(conn); /* the client is taking its output */
}

void http__conn_request_done(http_conn *conn) {
    conn->request_pending = 0;
    conn->responding = 0;
    conn->app_data = NULL;
    conn->phase = HTTP_PHASE_IDLE;
    if (!conn->req.keep_alive || conn->server->draining || (conn->read_eof && conn->pending.len == 0)) {
        conn_close_after_write(conn);
        return;
    }
    conn_rearm(conn);
    conn_process(conn);
}

/* ---- parsing ---- */

static void conn_reject_parse_error(http_conn *conn, llhttp_errno_t err) {
    const char *reason = llhttp_get_error_reason(&conn->parser);
    if (conn->reject_status) {
        log_warn(TARGET, "rejected request: %d %s", conn->reject_status, conn->reject_reason);
        respond_and_close(conn, conn->reject_status, conn->reject_body ? conn->reject_body : "");
    } else if (err == HPE_PAUSED_H2_UPGRADE) {
        log_warn(TARGET, "rejected request: 400 HTTP/2 connection preface (only HTTP/1.x is served)");
        respond_and_close(conn, 400, bad_request);
    } else {
        log_warn(TARGET, "malformed HTTP request: %s (%s)", llhttp_errno_name(err), reason);
        respond_and_close(conn, 400, bad_request);
    }
}

/* Runs the parser over buffered input until a request is handed to the app, the input is
 * used up, or the connection's unsent output is over the bound. Never called from inside
 * llhttp. */
static void conn_process(http_conn *conn) {
    if (conn->processing || conn->rejected)
        return; /* a response written from inside on_request: the loop below goes on */
    conn->processing = 1;
    while (!conn->closing && !conn->request_pending && conn->pending.len > 0) {
        if (conn_over_bound(conn)) {
            /* the next request waits until the client has read enough of the answers */
            http__conn_queued(conn);
            break;
        }
        if (conn->parse_paused) {
            llhttp_resume(&conn->parser);
            conn->parse_paused = 0;
        }
        const char *data = conn->pending.data;
        size_t len = conn->pending.len;
        llhttp_errno_t err = llhttp_execute(&conn->parser, data, len);
        if (err == HPE_OK) {
            buf_reset(&conn->pending);
            break;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&conn->parser);
            size_t used = pos ? (size_t)(pos - data) : len;
            conn->parse_paused = 1;
            buf_consume(&conn->pending, used);
            http_server *server = conn->server;
            server->ops->on_request(conn, &conn->req);
            continue; /* loop ends while the request is pending */
        }
        buf_reset(&conn->pending);
        conn->processing = 0;
        conn_reject_parse_error(conn, err);
        return;
    }
    conn->processing = 0;
    if (conn->closing || conn->request_pending || conn->throttled || conn->close_after_write)
        return;
    if (conn->pending.len == 0)
        buf_free(&conn->pending); /* an idle connection keeps no read buffer */
    if (conn->read_eof && conn->pending.len == 0) {
        /* The peer finished sending and nothing is pending: done, unless it stopped in the
         * middle of a request, which is abandoned. */
        if (llhttp_finish(&conn->parser) != HPE_OK)
            http__conn_close(conn);
        else
            conn_close_after_write(conn);
    }
}

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out) {
    http_conn *conn = container_of(handle, http_conn, tcp);
    size_t want = suggested < 65536 ? 65536 : suggested;
    if (buf_reserve(&conn->pending, want) != BUF_OK) {
        /* Over the input cap: a pipelining peer that never reads. */
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = conn->pending.data + conn->pending.len;
    out->len = conn->pending.cap - conn->pending.len - 1;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    http_conn *conn = container_of(stream, http_conn, tcp);
    (void)b;
    if (nread == UV_ENOBUFS) {
        log_warn(TARGET, "connection input over limit; closing it");
        http__conn_close(conn);
        return;
    }
    if (nread < 0) {
        conn->read_eof = 1;
        conn_update_reading(conn);
        if (nread != UV_EOF || conn->linger || conn->request_pending) {
            /* A reset, done lingering, or the client is gone while we owe it an answer
             * (the app hears of it). */
            http__conn_close(conn);
            return;
        }
        conn_process(conn); /* after an error answer: closed once that is written */
        return;
    }
    if (nread == 0)
        return;
    if (conn->rejected) {
        buf_reset(&conn->pending); /* answered already: dropped */
        return;
    }
    conn->pending.len += (size_t)nread;
    conn->pending.data[conn->pending.len] = '\0';
    conn->server->bytes_received += (size_t)nread;
    if (!conn->request_pending)
        conn_process(conn);
}

static http_conn *conn_new(http_server *server) {
    http_conn *conn = calloc(1, sizeof *conn);
    if (!conn)
        return NULL;
    conn->server = server;
    if (uv_tcp_init(server->loop, &conn->tcp) != 0) {
        free(conn);
        return NULL;
    }
    uv_timer_init(server->loop, &conn->timer);
    conn->tcp.data = conn;
    conn->timer.data = conn;
    conn->handles_open = 2;
    request_init(&conn->req);
    buf_init(&conn->pending, READ_CAP);
    server->num_conns++;
    conn->next = server->conns;
    if (server->conns)
        server->conns->prev = conn;
    server->conns = conn;
    return conn;
}

static void conn_start(http_conn *conn) {
    llhttp_init(&conn->parser, HTTP_REQUEST, &parser_settings);
    conn->parser.data = conn;
    conn->phase = HTTP_PHASE_HEADERS; /* a new connection owes its first request's headers */
    conn_rearm(conn);
    conn_update_reading(conn);
}

int http_server_adopt_fd(http_server *server, int fd) {
    http_conn *conn = conn_new(server);
    if (!conn)
        return UV_ENOMEM;
    int rc = uv_tcp_open(&conn->tcp, fd);
    if (rc != 0) {
        http__conn_close(conn);
        return rc;
    }
    conn_start(conn);
    return 0;
}

static void on_connection(uv_stream_t *listener, int status) {
    http_server *server = container_of(listener, http_server, listener);
    if (status < 0) {
        log_warn(TARGET, "accept failed: %s", uv_strerror(status));
        return;
    }
    if ((unsigned)server->num_conns >= server->limits.max_connections) {
        http__shed_connection(server);
        return;
    }
    http_conn *conn = conn_new(server);
    if (!conn)
        return;
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        http__conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    conn_start(conn);
}

/* ---- server ---- */

int http_server_init(http_server *server, uv_loop_t *loop, const http_app_ops *ops, void *app) {
    memset(server, 0, sizeof *server);
    server->loop = loop;
    server->ops = ops;
    server->app = app;
    http__limits_from_env(&server->limits);
    int rc = uv_tcp_init(loop, &server->listener);
    server->listener_open = rc == 0;
    return rc;
}

int http_server_listen(http_server *server, const char *host, int port, char *bound, size_t boundlen) {
    struct sockaddr_storage addr;
    int rc;
    int v6 = strchr(host, ':') != NULL;
    if (v6)
        rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr);
    else
        rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rc != 0)
        return rc;
    if ((rc = uv_tcp_bind(&server->listener, (struct sockaddr *)&addr, 0)) != 0)
        return rc;
    if ((rc = uv_listen((uv_stream_t *)&server->listener, 1024, on_connection)) != 0)
        return rc;
    server->listening = 1;
    struct sockaddr_storage name;
    int namelen = sizeof name;
    if ((rc = uv_tcp_getsockname(&server->listener, (struct sockaddr *)&name, &namelen)) != 0)
        return rc;
    char ip[INET6_ADDRSTRLEN];
    if (name.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&name, ip, sizeof ip);
        snprintf(bound, boundlen, "[%s]:%d", ip, ntohs(((struct sockaddr_in6 *)&name)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&name, ip, sizeof ip);
        snprintf(bound, boundlen, "%s:%d", ip, ntohs(((struct sockaddr_in *)&name)->sin_port));
    }
    return 0;
}

static void on_listener_closed(uv_handle_t *handle) {
    http_server *server = container_of(handle, http_server, listener);
    http__server_maybe_drained(server);
}

void http_server_stop_listening(http_server *server) {
    server->listening = 0;
    if (!server->listener_open)
        return;
    server->listener_open = 0;
    uv_close((uv_handle_t *)&server->listener, on_listener_closed);
}

void http_server_close_idle(http_server *server) {
    server->draining = 1;
    http_conn *conn = server->conns;
    while (conn) {
        http_conn *next = conn->next;
        if (!conn->request_pending && !conn->responding)
            conn_close_after_write(conn);
        conn = next;
    }
}

void http_server_close_all(http_server *server) {
    server->draining = 1;
    http_server_stop_listening(server);
    http_conn *conn = server->conns;
    while (conn) {
        http_conn *next = conn->next;
        http__conn_close(conn);
        conn = next;
    }
}
