/* tests/c/test_http.c: the HTTP request parser and connection handling (http/server.c),
 * through http_server_adopt_fd on a socketpair as fuzz/fuzz_http.c does: what reaches
 * on_request, pipelining, chunked bodies, the limits, keep-alive. One behaviour per test. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runner.h"

#include "common/util.h"
#include "http/http.h"

#define GUARD_MS 20000 /* a test that never sees its event fails instead of hanging */
#define MAX_SEEN 8

typedef struct seen_request {
    int method;
    char *url;
    char *body;
    size_t body_len;
    char *probe; /* the X-Probe header, if any */
    int keep_alive;
} seen_request;

typedef struct harness {
    uv_loop_t loop;
    http_server server;
    int peer; /* the client's end */
    uv_poll_t peer_poll;
    uv_timer_t guard;
    int guard_fired;
    int hold;        /* keep requests instead of answering them */
    http_conn *held; /* the request the app holds */
    int requests;
    seen_request seen[MAX_SEEN];
    buf received; /* everything the server wrote */
    int peer_eof;
} harness;

static harness *the; /* the app callbacks reach the harness through it */

static char *copy(const char *s, size_t len) {
    char *out = malloc(len + 1);
    memcpy(out, s, len);
    out[len] = '\0';
    return out;
}

static void answer(http_conn *conn, http_request *req) {
    /* the body echoes the URL, so the order of answers shows */
    http_respond(conn, 200, "text/plain", req->url.data, req->url.len, NULL);
}

static void on_request(http_conn *conn, http_request *req) {
    harness *h = the;
    if (h->requests < MAX_SEEN) {
        seen_request *s = &h->seen[h->requests];
        const char *probe = http_request_header(req, "x-probe");
        s->method = req->method;
        s->url = copy(req->url.data ? req->url.data : "", req->url.len);
        s->body = copy(req->body.data ? req->body.data : "", req->body.len);
        s->body_len = req->body.len;
        s->probe = probe ? copy(probe, strlen(probe)) : NULL;
        s->keep_alive = req->keep_alive;
    }
    h->requests++;
    if (h->hold)
        h->held = conn;
    else
        answer(conn, req);
}

static void on_abort(http_conn *conn) {
    if (the->held == conn)
        the->held = NULL;
}

static const http_app_ops ops = {.on_request = on_request, .on_abort = on_abort};

/* Reads what the server wrote. A server that closes with our bytes still unread resets the
 * connection (libuv then reports UV_EBADF): its answer is read all the same. */
static void on_peer_readable(uv_poll_t *poll, int status, int events) {
    harness *h = container_of(poll, harness, peer_poll);
    (void)status, (void)events;
    for (;;) {
        char chunk[65536];
        ssize_t n = recv(h->peer, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n > 0) {
            buf_append(&h->received, chunk, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            return;
        if (n < 0 && (errno == EINTR || errno == ECONNRESET))
            continue;
        h->peer_eof = 1;
        uv_poll_stop(poll);
        return;
    }
}

static void on_guard(uv_timer_t *timer) { container_of(timer, harness, guard)->guard_fired = 1; }

static void start(harness *h) {
    int sv[2];
    memset(h, 0, sizeof *h);
    the = h;
    buf_init(&h->received, 256u << 20);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
    uv_loop_init(&h->loop);
    http_server_init(&h->server, &h->loop, &ops, h);
    CHECK(http_server_adopt_fd(&h->server, sv[0]) == 0);
    h->peer = sv[1];
    uv_poll_init(&h->loop, &h->peer_poll, h->peer);
    uv_poll_start(&h->peer_poll, UV_READABLE, on_peer_readable);
    uv_timer_init(&h->loop, &h->guard);
    uv_timer_start(&h->guard, on_guard, GUARD_MS, 0);
}

/* Runs the loop until cond holds (or the guard fires); the value of cond. */
#define RUN_UNTIL(h, cond)                                                                                             \
    ({                                                                                                                 \
        while (!(cond) && !(h)->guard_fired)                                                                           \
            uv_run(&(h)->loop, UV_RUN_ONCE);                                                                           \
        (cond);                                                                                                        \
    })

/* Sends everything the client writes, letting the server read whenever the socket is full.
 * Stops early when the server has closed the connection. */
static void send_bytes(harness *h, const char *data, size_t len) {
    while (len > 0 && !h->guard_fired) {
        ssize_t n = send(h->peer, data, len, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            len -= (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            return;
        uv_run(&h->loop, UV_RUN_ONCE);
    }
}

static void send_str(harness *h, const char *s) { send_bytes(h, s, strlen(s)); }

/* Sends n copies of the byte c. */
static void send_repeated(harness *h, char c, size_t n) {
    static char run[65536];
    memset(run, c, sizeof run);
    while (n > 0 && !h->peer_eof && !h->guard_fired) {
        size_t step = n < sizeof run ? n : sizeof run;
        send_bytes(h, run, step);
        n -= step;
    }
}

static int responses(const harness *h) {
    int n = 0;
    for (const char *p = h->received.data; p && (p = strstr(p, "HTTP/1.1 ")) != NULL; p++)
        n++;
    return n;
}

static int starts(const harness *h, const char *text) {
    return h->received.data && !strncmp(h->received.data, text, strlen(text));
}

static int received_has(const harness *h, const char *text) {
    return h->received.data && strstr(h->received.data, text) != NULL;
}

/* The server is done with its one connection: answered and closed. */
static int closed(const harness *h) { return h->server.num_conns == 0 && h->peer_eof; }

/* The request was answered with status_line and the connection closed; the app never saw it. */
static void check_rejected(harness *h, const char *status_line) {
    CHECK(RUN_UNTIL(h, closed(h)));
    CHECK(starts(h, status_line));
    CHECK(h->requests == 0);
}

static void finish(harness *h) {
    http_server_close_all(&h->server);
    uv_close((uv_handle_t *)&h->peer_poll, NULL);
    uv_close((uv_handle_t *)&h->guard, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&h->loop) == 0);
    close(h->peer);
    for (int i = 0; i < MAX_SEEN && i < h->requests; i++) {
        free(h->seen[i].url);
        free(h->seen[i].body);
        free(h->seen[i].probe);
    }
    buf_free(&h->received);
    CHECK(!h->guard_fired);
}

TEST(request_line_headers_and_body_reach_on_request) {
    harness h;
    start(&h);
    send_str(&h, "POST /predictions/p1?x=1 HTTP/1.1\r\nHost: a\r\nX-Probe: one two\r\n"
                 "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}");
    CHECK(RUN_UNTIL(&h, responses(&h) == 1));
    CHECK(h.requests == 1);
    CHECK(h.seen[0].method == HTTP_POST);
    CHECK(!strcmp(h.seen[0].url, "/predictions/p1?x=1"));
    CHECK(h.seen[0].probe && !strcmp(h.seen[0].probe, "one two"));
    CHECK(h.seen[0].body_len == 7 && !strcmp(h.seen[0].body, "{\"a\":1}"));
    CHECK(h.seen[0].keep_alive);
    CHECK(starts(&h, "HTTP/1.1 200 OK\r\n"));
    CHECK(h.server.num_conns == 1); /* keep-alive: still open */
    finish(&h);
}

TEST(header_lookup_ignores_case_and_takes_the_first) {
    harness h;
    start(&h);
    send_str(&h, "GET / HTTP/1.1\r\nx-PROBE: first\r\nX-Probe: second\r\n\r\n");
    CHECK(RUN_UNTIL(&h, h.requests == 1));
    CHECK(h.seen[0].probe && !strcmp(h.seen[0].probe, "first"));
    CHECK(h.seen[0].method == HTTP_GET && h.seen[0].body_len == 0);
    finish(&h);
}

TEST(pipelined_requests_are_handed_over_one_at_a_time_in_order) {
    harness h;
    start(&h);
    h.hold = 1;
    send_str(&h, "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
    const char *order[] = {"/a", "/b", "/c"};
    for (int i = 0; i < 3; i++) {
        if (!RUN_UNTIL(&h, h.requests == i + 1 && h.held)) {
            CHECK(!"request not handed over");
            break;
        }
        CHECK(!strcmp(h.seen[i].url, order[i]));
        uv_run(&h.loop, UV_RUN_NOWAIT);
        CHECK(h.requests == i + 1); /* the next one waits while this one is held */
        http_conn *conn = h.held;
        h.held = NULL;
        answer(conn, &conn->req);
    }
    CHECK(RUN_UNTIL(&h, responses(&h) == 3));
    const char *a = strstr(h.received.data, "\r\n\r\n/a"), *b = strstr(h.received.data, "\r\n\r\n/b"),
               *c = strstr(h.received.data, "\r\n\r\n/c");
    CHECK(a && b && c && a < b && b < c);
    finish(&h);
}

TEST(chunked_body_is_reassembled) {
    harness h;
    start(&h);
    send_str(&h, "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n");
    CHECK(RUN_UNTIL(&h, h.requests == 1));
    CHECK(h.seen[0].body_len == 11 && !strcmp(h.seen[0].body, "hello world"));
    CHECK(RUN_UNTIL(&h, responses(&h) == 1));
    finish(&h);
}

TEST(content_length_over_limit_is_413_before_any_body) {
    harness h;
    start(&h);
    char head[256];
    snprintf(head, sizeof head, "POST / HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", HTTP_MAX_BODY + 1);
    send_str(&h, head);
    check_rejected(&h, "HTTP/1.1 413 Payload Too Large\r\n");
    CHECK(received_has(&h, "connection: close\r\n"));
    CHECK(received_has(&h, "\r\n\r\nFailed to buffer the request body: length limit exceeded"));
    finish(&h);
}

TEST(chunked_body_over_limit_is_413) {
    harness h;
    start(&h);
    send_str(&h, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    size_t piece = 1u << 20;
    char size[32];
    snprintf(size, sizeof size, "%zx\r\n", piece);
    for (size_t sent = 0; sent <= HTTP_MAX_BODY && !h.peer_eof && !h.guard_fired; sent += piece) {
        send_str(&h, size);
        send_repeated(&h, 'x', piece);
        send_str(&h, "\r\n");
    }
    check_rejected(&h, "HTTP/1.1 413 Payload Too Large\r\n");
    finish(&h);
}

TEST(url_over_limit_is_414) {
    harness h;
    start(&h);
    send_str(&h, "GET /");
    send_repeated(&h, 'u', HTTP_MAX_URL + 100);
    send_str(&h, " HTTP/1.1\r\n\r\n");
    check_rejected(&h, "HTTP/1.1 414 URI Too Long\r\n");
    finish(&h);
}

TEST(headers_over_64_kib_are_431) {
    harness h;
    start(&h);
    send_str(&h, "GET / HTTP/1.1\r\nX-Big: ");
    send_repeated(&h, 'v', HTTP_MAX_HEADER_BYTES + 100);
    send_str(&h, "\r\n\r\n");
    check_rejected(&h, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    finish(&h);
}

TEST(more_than_100_headers_are_431) {
    harness h;
    start(&h);
    buf req;
    buf_init(&req, 1 << 20);
    buf_append_str(&req, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        buf_printf(&req, "X-H%d: v\r\n", i);
    buf_append_str(&req, "\r\n");
    send_bytes(&h, req.data, req.len);
    buf_free(&req);
    check_rejected(&h, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    finish(&h);
}

TEST(exactly_100_headers_are_accepted) {
    harness h;
    start(&h);
    buf req;
    buf_init(&req, 1 << 20);
    buf_append_str(&req, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < HTTP_MAX_HEADERS - 1; i++)
        buf_printf(&req, "X-H%d: v\r\n", i);
    buf_append_str(&req, "X-Probe: last\r\n\r\n");
    send_bytes(&h, req.data, req.len);
    buf_free(&req);
    CHECK(RUN_UNTIL(&h, h.requests == 1));
    CHECK(h.seen[0].probe && !strcmp(h.seen[0].probe, "last"));
    finish(&h);
}

TEST(keep_alive_serves_the_next_request_on_the_same_connection) {
    harness h;
    start(&h);
    send_str(&h, "GET /one HTTP/1.1\r\n\r\n");
    CHECK(RUN_UNTIL(&h, responses(&h) == 1));
    send_str(&h, "GET /two HTTP/1.1\r\n\r\n");
    CHECK(RUN_UNTIL(&h, responses(&h) == 2));
    CHECK(h.requests == 2 && !strcmp(h.seen[1].url, "/two"));
    CHECK(h.server.num_conns == 1 && !h.peer_eof);
    CHECK(!received_has(&h, "connection: close"));
    finish(&h);
}

TEST(connection_close_is_answered_then_closed) {
    harness h;
    start(&h);
    send_str(&h, "GET /bye HTTP/1.1\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
    CHECK(RUN_UNTIL(&h, closed(&h)));
    CHECK(h.requests == 1 && !h.seen[0].keep_alive);
    CHECK(responses(&h) == 1 && received_has(&h, "connection: close\r\n"));
    finish(&h);
}

TEST(http_1_0_closes_unless_keep_alive_is_asked) {
    harness h;
    start(&h);
    send_str(&h, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK(RUN_UNTIL(&h, responses(&h) == 1));
    CHECK(h.seen[0].keep_alive && h.server.num_conns == 1);
    send_str(&h, "GET /plain HTTP/1.0\r\n\r\n");
    CHECK(RUN_UNTIL(&h, closed(&h)));
    CHECK(h.requests == 2 && !h.seen[1].keep_alive);
    finish(&h);
}

TEST(malformed_request_is_400_and_closed) {
    harness h;
    start(&h);
    send_str(&h, "GET / HTTP/1.1\r\nno colon here\r\n\r\n");
    check_rejected(&h, "HTTP/1.1 400 Bad Request\r\n");
    finish(&h);
}

TEST(peer_gone_while_a_request_is_held_aborts_it) {
    harness h;
    start(&h);
    h.hold = 1;
    send_str(&h, "GET /held HTTP/1.1\r\n\r\n");
    CHECK(RUN_UNTIL(&h, h.held != NULL));
    shutdown(h.peer, SHUT_WR);
    CHECK(RUN_UNTIL(&h, h.held == NULL)); /* on_abort: the app dropped its reference */
    CHECK(RUN_UNTIL(&h, h.server.num_conns == 0));
    finish(&h);
}

static const test_case tests[] = {
    T(request_line_headers_and_body_reach_on_request),
    T(header_lookup_ignores_case_and_takes_the_first),
    T(pipelined_requests_are_handed_over_one_at_a_time_in_order),
    T(chunked_body_is_reassembled),
    T(content_length_over_limit_is_413_before_any_body),
    T(chunked_body_over_limit_is_413),
    T(url_over_limit_is_414),
    T(headers_over_64_kib_are_431),
    T(more_than_100_headers_are_431),
    T(exactly_100_headers_are_accepted),
    T(keep_alive_serves_the_next_request_on_the_same_connection),
    T(connection_close_is_answered_then_closed),
    T(http_1_0_closes_unless_keep_alive_is_asked),
    T(malformed_request_is_400_and_closed),
    T(peer_gone_while_a_request_is_held_aborts_it),
};

int main(void) {
    setenv("COG_LOG_LEVEL", "error", 0); /* each rejected request is logged as a warning */
    return run_tests("c-http", tests, sizeof tests / sizeof tests[0]);
}
