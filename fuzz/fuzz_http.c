/* fuzz/fuzz_http.c: a whole server connection (llhttp + our callbacks + response writing)
 * fed through a socketpair, as h2o's fuzz/driver.cc does. The app answers every request
 * at once, or on the next loop turn for every other request, so pipelining and the paused
 * parser are both exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/http.h"

static uv_loop_t loop;
static int deferred_flip;

typedef struct later {
    uv_idle_t idle;
    http_conn *conn;
} later;

static later *pending; /* at most one deferred answer */

static void free_ctx(void *ctx) { free(ctx); }

static void answer(http_conn *conn, http_request *req) {
    static const char body[] = "{\"ok\":true}";
    static int flip, third;
    if (++third % 3 == 0 && req->body.len) {
        /* referenced pieces: the echoed body split in two, released once written */
        char *copy = malloc(req->body.len);
        memcpy(copy, req->body.data, req->body.len);
        const char *parts[] = {copy, copy + req->body.len / 2};
        size_t lens[] = {req->body.len / 2, req->body.len - req->body.len / 2};
        http_respond_parts(conn, 200, "application/json", parts, lens, 2, free_ctx, copy);
        return;
    }
    /* alternate copied and handed-over bodies; echo the body so responses vary in size */
    if ((flip ^= 1) && req->body.len) {
        char *owned = malloc(req->body.len + 1);
        memcpy(owned, req->body.data, req->body.len);
        owned[req->body.len] = '\0';
        for (size_t i = 0; i < req->body.len; i++)
            if (!owned[i])
                owned[i] = ' ';
        http_respond_json_owned(conn, 200, owned);
        return;
    }
    http_respond(conn, 200, "application/json", body, sizeof body - 1, NULL);
}

static void idle_closed(uv_handle_t *h) { free(h->data); }

static void on_idle(uv_idle_t *idle) {
    later *l = idle->data;
    uv_idle_stop(idle);
    if (l->conn)
        answer(l->conn, &l->conn->req);
    pending = NULL;
    uv_close((uv_handle_t *)idle, idle_closed);
}

static void on_request(http_conn *conn, http_request *req) {
    if ((deferred_flip ^= 1) && !pending) {
        later *l = calloc(1, sizeof *l);
        l->conn = conn;
        conn->app_data = l;
        uv_idle_init(&loop, &l->idle);
        l->idle.data = l;
        uv_idle_start(&l->idle, on_idle);
        pending = l;
        return;
    }
    answer(conn, req);
}

static void on_abort(http_conn *conn) {
    later *l = conn->app_data;
    if (l)
        l->conn = NULL;
}

static const http_app_ops ops = {.on_request = on_request, .on_abort = on_abort};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 0;
    uv_loop_init(&loop);
    http_server server;
    http_server_init(&server, &loop, &ops, NULL);
    http_server_adopt_fd(&server, sv[0]);
    /* the peer writes everything and half-closes; the server reads, answers, drains */
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(sv[1], data + off, size - off > 65536 ? 65536 : size - off);
        if (n <= 0)
            break;
        off += (size_t)n;
        uv_run(&loop, UV_RUN_NOWAIT);
        char sink[65536];
        while (recv(sv[1], sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    shutdown(sv[1], SHUT_WR);
    for (int i = 0; i < 50 && server.num_conns > 0; i++) {
        uv_run(&loop, UV_RUN_NOWAIT);
        char sink[65536];
        while (recv(sv[1], sink, sizeof sink, MSG_DONTWAIT) > 0) {
        }
    }
    http_server_close_all(&server);
    uv_run(&loop, UV_RUN_DEFAULT);
    close(sv[1]);
    uv_loop_close(&loop);
    pending = NULL;
    return 0;
}
