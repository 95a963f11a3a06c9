/* http/response.c: the write path (one function, conn_writev_ex, that copies only what may
 * live on the caller's stack) and the responses built on it: whole, referenced pieces, and
 * chunked streams. Back-pressure and closing after the last write are server.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "http/internal.h"

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
    if (!conn->closing)
        http__conn_wrote(conn, status);
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
            http__conn_close(conn);
            return;
        }
    }
    if (sent == total) {
        write_done_now(&done);
        http__conn_wrote(conn, 0);
        return;
    }
    /* the unsent part of the copied buffers, then the uv_buf_t array, aligned */
    size_t copy_len = sent < copy_total ? copy_total - sent : 0;
    size_t align = (copy_len + 7) & ~(size_t)7;
    write_req *wr = malloc(sizeof *wr + align + (nbufs + 1) * sizeof(uv_buf_t));
    if (!wr) {
        write_done_now(&done);
        http__conn_close(conn);
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
        http__conn_close(conn);
        return;
    }
    http__conn_queued(conn);
}

static void conn_writev(http_conn *conn, uv_buf_t *bufs, unsigned nbufs) {
    conn_writev_ex(conn, bufs, nbufs, nbufs, (write_done){0});
}

void http__conn_write_raw(http_conn *conn, const char *data, size_t len) {
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    conn_writev(conn, &b, 1);
}

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
            http__conn_close(conn);
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
        http__conn_request_done(conn);
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
        http__conn_close(conn);
        return;
    }
    uv_buf_t *bufs = malloc((nparts + 1) * sizeof *bufs);
    if (!bufs) {
        buf_free(&head);
        release(ctx);
        http__conn_close(conn);
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
        http__conn_request_done(conn);
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
    http__conn_write_raw(conn, head.data, head.len);
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
        http__conn_write_raw(conn, "0\r\n\r\n", 5);
    if (!conn->closing)
        http__conn_request_done(conn);
}

