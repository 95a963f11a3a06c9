/* http/server.c: connections, llhttp callbacks, response writing. Owns the request
 * limits: 100 MiB bodies (checked from Content-Length before buffering and again per
 * chunk), 8 KiB URLs, 64 KiB of headers. */
#include "http/http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/util.h"

#define TARGET "coglet::transport::http"
#define READ_CAP (HTTP_MAX_BODY + HTTP_MAX_HEADER_BYTES + HTTP_MAX_URL + 4096)

static const llhttp_settings_t parser_settings;

const char *http_status_text(int status) {
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Unknown";
    }
}

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
    llhttp_set_error_reason(parser, reason);
    return HPE_USER;
}

static int on_message_begin(llhttp_t *parser) {
    http_conn *conn = parser->data;
    request_reset(&conn->req);
    return 0;
}

static int on_url(llhttp_t *parser, const char *at, size_t len) {
    http_conn *conn = parser->data;
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
    /* the next on_header_field starts a new header */
    if (req->num_headers > 0 && req->hdr_value[req->num_headers - 1] == (size_t)-1) {
        req->hdr_value[req->num_headers - 1] = req->hdr_data.len;
        buf_append(&req->hdr_data, "", 1);
    }
    return 0;
}

static const char body_too_large[] = "Failed to buffer the request body: length limit exceeded";

static void conn_write_raw(http_conn *conn, const char *data, size_t len);

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
    const char *expect = http_request_header(req, "expect");
    if (expect && !strcasecmp(expect, "100-continue")) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        conn_write_raw(conn, cont, sizeof cont - 1);
    }
    return 0;
}

static int on_body(llhttp_t *parser, const char *at, size_t len) {
    http_conn *conn = parser->data;
    if (buf_append(&conn->req.body, at, len) != BUF_OK)
        return reject(parser, 413, body_too_large, "body over limit");
    return 0;
}

static int on_message_complete(llhttp_t *parser) {
    http_conn *conn = parser->data;
    conn->req.keep_alive = llhttp_should_keep_alive(parser);
    conn->request_pending = 1;
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
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection lifetime ---- */

static void conn_on_close(uv_handle_t *handle) {
    http_conn *conn = container_of(handle, http_conn, tcp);
    http_server *server = conn->server;
    request_free(&conn->req);
    buf_free(&conn->pending);
    free(conn);
    server->num_conns--;
    if (server->draining && server->num_conns == 0 && !server->listening && server->on_drained)
        server->on_drained(server);
}

static void conn_close(http_conn *conn) {
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
    uv_close((uv_handle_t *)&conn->tcp, conn_on_close);
}

typedef struct write_req {
    uv_write_t req;
    http_conn *conn;
    size_t len;
    char *owned; /* a body handed over by the caller: freed with the request */
    void (*release)(void *ctx); /* referenced memory the caller frees once written */
    void *release_ctx;
    char data[];
} write_req;

static void on_write(uv_write_t *req, int status) {
    write_req *wr = container_of(req, write_req, req);
    http_conn *conn = wr->conn;
    free(wr->owned);
    if (wr->release)
        wr->release(wr->release_ctx);
    free(wr);
    conn->writes_in_flight--;
    if (conn->closing)
        return;
    if (status < 0) {
        conn_close(conn);
        return;
    }
    if (conn->close_after_write && conn->writes_in_flight == 0)
        conn_close(conn);
}

/* What a write leaves behind once the socket has it: `owned` is freed, release(ctx) runs. */
typedef struct write_done {
    char *owned;
    void (*release)(void *ctx);
    void *ctx;
} write_done;

static void write_done_now(write_done *d) {
    free(d->owned);
    if (d->release)
        d->release(d->ctx);
}

/* Writes what the socket takes now and queues the rest: bufs[0, ncopy) are copied if they
 * could not go at once (they may live on the caller's stack), the rest is referenced in
 * place until written (a body handed over, or pieces the caller keeps alive), so a large
 * body is never copied. */
static void conn_writev_ex(http_conn *conn, uv_buf_t *bufs, unsigned nbufs, unsigned ncopy, write_done done) {
    if (conn->closing) {
        write_done_now(&done);
        return;
    }
    size_t total = 0, copy_total = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        total += bufs[i].len;
        if (i < ncopy)
            copy_total += bufs[i].len;
    }
    conn->server->bytes_sent += total;
    size_t sent = 0;
    if (conn->writes_in_flight == 0) {
        int n = uv_try_write((uv_stream_t *)&conn->tcp, bufs, nbufs);
        if (n > 0)
            sent = (size_t)n;
        else if (n < 0 && n != UV_EAGAIN) {
            write_done_now(&done);
            conn_close(conn);
            return;
        }
    }
    if (sent == total) {
        write_done_now(&done);
        if (conn->close_after_write && conn->writes_in_flight == 0)
            conn_close(conn);
        return;
    }
    /* the unsent part of the copied buffers, then the uv_buf_t array, aligned */
    size_t copy_len = sent < copy_total ? copy_total - sent : 0;
    size_t align = (copy_len + 7) & ~(size_t)7;
    write_req *wr = malloc(sizeof *wr + align + (nbufs + 1) * sizeof(uv_buf_t));
    if (!wr) {
        write_done_now(&done);
        conn_close(conn);
        return;
    }
    wr->conn = conn;
    wr->len = total - sent;
    wr->owned = done.owned;
    wr->release = done.release;
    wr->release_ctx = done.ctx;
    uv_buf_t *out = (uv_buf_t *)(wr->data + align);
    unsigned nout = 0;
    size_t skip = sent, off = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        if (i < ncopy) {
            memcpy(wr->data + off, bufs[i].base + skip, l - skip);
            off += l - skip;
        } else {
            out[nout++] = uv_buf_init(bufs[i].base + skip, (unsigned)(l - skip));
        }
        skip = 0;
    }
    if (copy_len) {
        /* the copied bytes go first: shift the references up one */
        memmove(out + 1, out, nout * sizeof *out);
        out[0] = uv_buf_init(wr->data, (unsigned)copy_len);
        nout++;
    }
    conn->writes_in_flight++;
    int rc = uv_write(&wr->req, (uv_stream_t *)&conn->tcp, out, nout, on_write);
    if (rc < 0) {
        conn->writes_in_flight--;
        free(wr);
        write_done_now(&done);
        conn_close(conn);
    }
}

static void conn_writev(http_conn *conn, uv_buf_t *bufs, unsigned nbufs) {
    conn_writev_ex(conn, bufs, nbufs, nbufs, (write_done){0});
}

static void conn_write_raw(http_conn *conn, const char *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    conn_writev(conn, &b, 1);
}

static void conn_process(http_conn *conn);

static void conn_request_done(http_conn *conn) {
    conn->request_pending = 0;
    conn->responding = 0;
    conn->app_data = NULL;
    if (!conn->req.keep_alive || conn->server->draining) {
        conn->close_after_write = 1;
        if (conn->writes_in_flight == 0)
            conn_close(conn);
        return;
    }
    if (conn->read_eof && conn->pending.len == 0) {
        conn->close_after_write = 1;
        if (conn->writes_in_flight == 0)
            conn_close(conn);
        return;
    }
    conn_process(conn);
}

static void respond_and_close(http_conn *conn, int status, const char *body) {
    conn->req.keep_alive = 0;
    conn->request_pending = 1;
    http_respond(conn, status, "text/plain; charset=utf-8", body, strlen(body), NULL);
}

/* Runs the parser over buffered input until a request is handed to the app or the
 * input is used up. Never called from inside llhttp. */
static void conn_process(http_conn *conn) {
    if (conn->processing)
        return; /* a response written from inside on_request: the loop below goes on */
    conn->processing = 1;
    while (!conn->closing && !conn->request_pending && conn->pending.len > 0) {
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
        if (conn->reject_status) {
            log_event(LOG_WARN, TARGET, NULL, "rejected request: %d %s", conn->reject_status,
                      llhttp_get_error_reason(&conn->parser));
            respond_and_close(conn, conn->reject_status, conn->reject_body ? conn->reject_body : "");
        } else {
            log_event(LOG_WARN, TARGET, NULL, "malformed HTTP request: %s (%s)", llhttp_errno_name(err),
                      llhttp_get_error_reason(&conn->parser));
            respond_and_close(conn, 400, "Bad Request");
        }
        conn->processing = 0;
        return;
    }
    conn->processing = 0;
    if (!conn->closing && !conn->request_pending && conn->read_eof) {
        /* Peer finished sending and nothing is pending: done. */
        if (conn->writes_in_flight == 0)
            conn_close(conn);
        else
            conn->close_after_write = 1;
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
        conn_close(conn);
        return;
    }
    if (nread < 0) {
        uv_read_stop(stream);
        conn->read_eof = 1;
        if (nread != UV_EOF || conn->request_pending) {
            /* The client is gone while we owe it an answer: the app hears of it. */
            conn_close(conn);
            return;
        }
        if (conn->pending.len > 0) {
            /* Feed what is left; llhttp learns the stream ended. */
            conn_process(conn);
            if (!conn->closing && !conn->request_pending) {
                if (llhttp_finish(&conn->parser) != HPE_OK && !conn->closing)
                    conn_close(conn);
            }
            return;
        }
        conn_process(conn);
        return;
    }
    if (nread == 0)
        return;
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
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read) != 0)
        conn_close(conn);
}

int http_server_adopt_fd(http_server *server, int fd) {
    http_conn *conn = conn_new(server);
    if (!conn)
        return UV_ENOMEM;
    int rc = uv_tcp_open(&conn->tcp, fd);
    if (rc != 0) {
        conn_close(conn);
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
    http_conn *conn = conn_new(server);
    if (!conn)
        return;
    if (uv_accept(listener, (uv_stream_t *)&conn->tcp) != 0) {
        conn_close(conn);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    conn_start(conn);
}

/* ---- responses ---- */

static int write_head(buf *out, http_conn *conn, int status, const char *content_type,
                      long content_length, const char *extra) {
    int rc = buf_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    if (content_type)
        rc |= buf_printf(out, "content-type: %s\r\n", content_type);
    if (content_length >= 0)
        rc |= buf_printf(out, "content-length: %ld\r\n", content_length);
    if (extra)
        rc |= buf_append_str(out, extra);
    if (!conn->req.keep_alive || conn->server->draining)
        rc |= buf_append_str(out, "connection: close\r\n");
    rc |= buf_append_str(out, "\r\n");
    return rc;
}

static void note_response(http_conn *conn, int status) {
    if (conn->server->ops->on_response)
        conn->server->ops->on_response(conn, status);
}

static void respond(http_conn *conn, int status, const char *content_type, const char *body, size_t len,
                    const char *extra_headers, char *owned) {
    if (conn->closing || !conn->request_pending) {
        free(owned);
        return;
    }
    note_response(conn, status);
    /* Most heads fit on the stack: a buf over stack memory whose limit stops any realloc. */
    char head_mem[512];
    buf head = {.data = head_mem, .len = 0, .cap = sizeof head_mem, .limit = sizeof head_mem - 1};
    int on_heap = 0;
    if (write_head(&head, conn, status, content_type, (long)len, extra_headers) != BUF_OK) {
        buf_init(&head, 1 << 20);
        on_heap = 1;
        if (write_head(&head, conn, status, content_type, (long)len, extra_headers) != BUF_OK) {
            buf_free(&head);
            free(owned);
            conn_close(conn);
            return;
        }
    }
    uv_buf_t bufs[2] = {uv_buf_init(head.data, (unsigned)head.len), uv_buf_init((char *)body, (unsigned)len)};
    if (conn->req.is_head || len == 0) {
        conn_writev(conn, bufs, 1);
        free(owned);
    } else {
        conn_writev_ex(conn, bufs, 2, 1, (write_done){.owned = owned});
    }
    if (on_heap)
        buf_free(&head);
    if (!conn->closing)
        conn_request_done(conn);
}

void http_respond(http_conn *conn, int status, const char *content_type, const char *body, size_t len,
                  const char *extra_headers) {
    respond(conn, status, content_type, body, len, extra_headers, NULL);
}

void http_respond_json_owned(http_conn *conn, int status, char *json) {
    respond(conn, status, "application/json", json, strlen(json), NULL, json);
}

void http_respond_parts(http_conn *conn, int status, const char *content_type, const char *const *parts,
                        const size_t *lens, unsigned nparts, void (*release)(void *ctx), void *ctx) {
    if (conn->closing || !conn->request_pending) {
        release(ctx);
        return;
    }
    note_response(conn, status);
    size_t total = 0;
    for (unsigned i = 0; i < nparts; i++)
        total += lens[i];
    buf head;
    buf_init(&head, 1 << 20);
    if (write_head(&head, conn, status, content_type, (long)total, NULL) != BUF_OK) {
        buf_free(&head);
        release(ctx);
        conn_close(conn);
        return;
    }
    uv_buf_t *bufs = malloc((nparts + 1) * sizeof *bufs);
    if (!bufs) {
        buf_free(&head);
        release(ctx);
        conn_close(conn);
        return;
    }
    bufs[0] = uv_buf_init(head.data, (unsigned)head.len);
    for (unsigned i = 0; i < nparts; i++)
        bufs[i + 1] = uv_buf_init((char *)parts[i], (unsigned)lens[i]);
    conn_writev_ex(conn, bufs, conn->req.is_head ? 1 : nparts + 1, 1,
                   (write_done){.release = release, .ctx = ctx});
    free(bufs);
    buf_free(&head);
    if (!conn->closing)
        conn_request_done(conn);
}

void http_respond_json(http_conn *conn, int status, const char *json) {
    http_respond(conn, status, "application/json", json, strlen(json), NULL);
}

void http_stream_begin(http_conn *conn, int status, const char *content_type, const char *extra_headers) {
    if (conn->closing || !conn->request_pending)
        return;
    note_response(conn, status);
    buf head;
    buf_init(&head, 1 << 20);
    buf_printf(&head, "HTTP/1.1 %d %s\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n%s\r\n", status,
               http_status_text(status), content_type, extra_headers ? extra_headers : "");
    conn->responding = 1;
    conn_write_raw(conn, head.data, head.len);
    buf_free(&head);
}

void http_stream_write(http_conn *conn, const char *data, size_t len) {
    if (conn->closing || !conn->responding || len == 0 || conn->req.is_head)
        return;
    char size[32];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    uv_buf_t bufs[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                        uv_buf_init("\r\n", 2)};
    conn_writev(conn, bufs, 3);
}

void http_stream_end(http_conn *conn) {
    if (conn->closing || !conn->responding)
        return;
    if (!conn->req.is_head)
        conn_write_raw(conn, "0\r\n\r\n", 5);
    if (!conn->closing)
        conn_request_done(conn);
}

/* ---- server ---- */

int http_server_init(http_server *server, uv_loop_t *loop, const http_app_ops *ops, void *app) {
    memset(server, 0, sizeof *server);
    server->loop = loop;
    server->ops = ops;
    server->app = app;
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
    if (server->draining && server->num_conns == 0 && server->on_drained)
        server->on_drained(server);
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
        if (!conn->request_pending && !conn->responding) {
            if (conn->writes_in_flight)
                conn->close_after_write = 1;
            else
                conn_close(conn);
        }
        conn = next;
    }
}

void http_server_close_all(http_server *server) {
    server->draining = 1;
    http_server_stop_listening(server);
    http_conn *conn = server->conns;
    while (conn) {
        http_conn *next = conn->next;
        conn_close(conn);
        conn = next;
    }
}
