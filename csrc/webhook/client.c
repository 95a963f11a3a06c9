/* webhook/client.c: libcurl multi on libuv, after curl's docs/examples/multi-uv.c: one
 * uv_poll_t per socket (CURLMOPT_SOCKETFUNCTION), one timer (CURLMOPT_TIMERFUNCTION).
 * Differences from the example: poll errors reach curl as CURL_CSELECT_ERR, finished
 * transfers are drained after every action (timer-driven ones included), and cleanup
 * runs curl_multi_cleanup while our callbacks are still alive.
 *
 * Two things keep a steady stream of webhooks to one receiver cheap (docs/queue.md,
 * "Benchmark"): finished easy handles are reset and kept for the next requests, and the poll
 * handle of a kept-alive connection is parked, not closed, when curl stops watching it
 * between transfers (closing and making it again cost an epoll_ctl pair and an ioctl per
 * request). A parked handle watches for readability, which on an idle connection means the
 * peer closed it or misbehaves: it is closed then. curl tells us when it closes a
 * connection's socket (CURLOPT_CLOSESOCKETFUNCTION), so a parked handle never outlives its
 * fd and a new socket that gets the same number never meets a stale handle. Only the
 * connections' sockets, which curl opens through CURLOPT_OPENSOCKETFUNCTION and closes
 * through that callback, are parked: curl (or c-ares) closes its others, the threaded
 * resolver's socketpair or DNS sockets, by itself. */
#include "webhook/client.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "webhook/curl_lazy.h"
#include "common/util.h"

#define TARGET "coglet::webhook"

struct client_request {
    http_client *client;
    client_request *next, *prev; /* the client's active list */
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    char *location;
    client_done_cb cb;
    void (*on_abort)(void *ctx);
    void *ctx;
    char error[CURL_ERROR_SIZE];
};

struct socket_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    http_client *client;
    socket_ctx *next, *prev; /* the client's sockets */
    int events;              /* what the poll watches */
    int parked;              /* curl does not watch it now (an idle kept-alive connection) */
    int parkable;            /* a connection's socket: curl closes it through close_socket */
};

static void unlink_request(http_client *client, client_request *req) {
    if (req->prev)
        req->prev->next = req->next;
    else
        client->active = req->next;
    if (req->next)
        req->next->prev = req->prev;
    client->num_active--;
}

/* Reset and kept for the next request while there is room; connections live in the multi,
 * so nothing of this transfer's carries over. */
static void release_easy(http_client *client, CURL *easy) {
    if (!easy)
        return;
    if (!client->closing && client->num_idle_easy < CLIENT_IDLE_EASY) {
        curl_easy_reset(easy);
        client->idle_easy[client->num_idle_easy++] = easy;
    } else {
        curl_easy_cleanup(easy);
    }
}

static void free_request(client_request *req) {
    release_easy(req->client, req->easy);
    curl_slist_free_all(req->headers);
    free(req->body);
    free(req->location);
    free(req);
}

static void check_done(http_client *client) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(client->multi, &left))) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode code = msg->data.result;
        client_request *req = NULL;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&req);
        client_result res = {0};
        res.code = code;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &res.status);
        char *eff = NULL;
        curl_easy_getinfo(easy, CURLINFO_EFFECTIVE_URL, &eff);
        res.effective_url = eff;
        res.location = req->location;
        if (code != CURLE_OK)
            res.error = req->error[0] ? req->error : curl_easy_strerror(code);
        curl_multi_remove_handle(client->multi, easy);
        unlink_request(client, req);
        if (req->cb)
            req->cb(req->ctx, &res);
        free_request(req);
    }
    if (client->num_active == 0 && client->on_idle)
        client->on_idle(client);
}

static void close_socket_ctx(socket_ctx *sc);

static void on_poll(uv_poll_t *poll, int status, int events) {
    socket_ctx *sc = container_of(poll, socket_ctx, poll);
    http_client *client = sc->client;
    if (sc->parked) {
        /* an idle connection became readable: closed by the peer (curl finds it dead when it
         * next looks at it), or something unasked for; either way not worth watching */
        close_socket_ctx(sc);
        return;
    }
    int flags = 0;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    int running;
    curl_multi_socket_action(client->multi, sc->fd, flags, &running);
    check_done(client);
}

static void on_timeout(uv_timer_t *timer) {
    http_client *client = container_of(timer, http_client, timer);
    int running;
    curl_multi_socket_action(client->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(client); /* always: a transfer may end on its own timeout */
}

static int start_timeout(CURLM *multi, long timeout_ms, void *userp) {
    (void)multi;
    http_client *client = userp;
    if (timeout_ms < 0) {
        uv_timer_stop(&client->timer);
    } else {
        /* 0 runs on the next loop turn (libuv never runs a timer from uv_timer_start), so curl
         * is not re-entered from its own callback; rounding it up to 1 ms put a millisecond
         * before every request */
        uv_timer_start(&client->timer, on_timeout, (uint64_t)timeout_ms, 0);
    }
    return 0;
}

static void on_socket_closed(uv_handle_t *handle) {
    socket_ctx *sc = container_of(handle, socket_ctx, poll);
    free(sc);
}

/* Off the client's list and closed; freed when libuv is done with it. */
static void close_socket_ctx(socket_ctx *sc) {
    http_client *client = sc->client;
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        client->sockets = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    sc->next = sc->prev = NULL;
    uv_poll_stop(&sc->poll);
    uv_close((uv_handle_t *)&sc->poll, on_socket_closed);
}

static socket_ctx *find_socket(http_client *client, curl_socket_t s) {
    for (socket_ctx *sc = client->sockets; sc; sc = sc->next)
        if (sc->fd == s)
            return sc;
    return NULL;
}

static int conn_fd_index(const http_client *client, curl_socket_t s) {
    for (size_t i = 0; i < client->num_conn_fds; i++)
        if (client->conn_fds[i] == s)
            return (int)i;
    return -1;
}

/* CURLOPT_OPENSOCKETFUNCTION: as curl opens a socket, remembering a connection's. Without
 * room to remember it, it is simply never parked. */
static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr) {
    http_client *client = clientp;
    curl_socket_t s = socket(addr->family, addr->socktype, addr->protocol);
    if (s == CURL_SOCKET_BAD || purpose != CURLSOCKTYPE_IPCXN)
        return s;
    if (client->num_conn_fds == client->cap_conn_fds) {
        size_t cap = client->cap_conn_fds ? client->cap_conn_fds * 2 : 16;
        curl_socket_t *fds = realloc(client->conn_fds, cap * sizeof *fds);
        if (!fds)
            return s;
        client->conn_fds = fds;
        client->cap_conn_fds = cap;
    }
    client->conn_fds[client->num_conn_fds++] = s;
    return s;
}

/* CURLOPT_CLOSESOCKETFUNCTION: our handle goes before the fd does. */
static int close_socket(void *clientp, curl_socket_t s) {
    http_client *client = clientp;
    int i = conn_fd_index(client, s);
    if (i >= 0)
        client->conn_fds[i] = client->conn_fds[--client->num_conn_fds];
    socket_ctx *sc = find_socket(client, s);
    if (sc) {
        if (!sc->parked && client->multi)
            curl_multi_assign(client->multi, s, NULL);
        close_socket_ctx(sc);
    }
    return close(s);
}

static int handle_socket(CURL *easy, curl_socket_t s, int action, void *userp, void *socketp) {
    (void)easy;
    http_client *client = userp;
    socket_ctx *sc = socketp;
    if (action == CURL_POLL_REMOVE) {
        if (sc && !sc->parkable) {
            /* not a connection's (the resolver's socketpair, a DNS socket): curl or c-ares
             * closes it without telling us, so it is closed now, as before parking existed */
            curl_multi_assign(client->multi, s, NULL);
            close_socket_ctx(sc);
        } else if (sc) {
            curl_multi_assign(client->multi, s, NULL);
            sc->parked = 1;
            if (sc->events != UV_READABLE) {
                sc->events = UV_READABLE;
                uv_poll_start(&sc->poll, UV_READABLE, on_poll);
            }
        }
        return 0;
    }
    if (!sc && (sc = find_socket(client, s)) != NULL) {
        sc->parked = 0; /* the kept-alive connection taken again */
        curl_multi_assign(client->multi, s, sc);
    }
    if (!sc) {
        sc = calloc(1, sizeof *sc);
        if (!sc)
            return -1;
        sc->fd = s;
        sc->client = client;
        sc->parkable = conn_fd_index(client, s) >= 0;
        if (uv_poll_init_socket(client->loop, &sc->poll, s) != 0) {
            free(sc);
            return -1;
        }
        sc->next = client->sockets;
        if (client->sockets)
            client->sockets->prev = sc;
        client->sockets = sc;
        curl_multi_assign(client->multi, s, sc);
    }
    int events = 0;
    if (action == CURL_POLL_IN || action == CURL_POLL_INOUT)
        events |= UV_READABLE;
    if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT)
        events |= UV_WRITABLE;
    /* each uv_poll_start drops the fd from epoll and adds it back: only when the mask changes */
    if (events != sc->events || !uv_is_active((uv_handle_t *)&sc->poll)) {
        sc->events = events;
        uv_poll_start(&sc->poll, events, on_poll);
    }
    return 0;
}

int http_client_init(http_client *client, uv_loop_t *loop) {
    char err[300];
    if (curl_lazy_load(err, sizeof err) != 0) {
        log_error(TARGET, "%s", err);
        return UV_ENOSYS;
    }
    memset(client, 0, sizeof *client);
    client->loop = loop;
    client->multi = curl_multi_init();
    if (!client->multi)
        return UV_ENOMEM;
    int rc = uv_timer_init(loop, &client->timer);
    if (rc) {
        curl_multi_cleanup(client->multi);
        client->multi = NULL;
        return rc;
    }
    client->timer_open = 1;
    curl_multi_setopt(client->multi, CURLMOPT_SOCKETFUNCTION, handle_socket);
    curl_multi_setopt(client->multi, CURLMOPT_SOCKETDATA, client);
    curl_multi_setopt(client->multi, CURLMOPT_TIMERFUNCTION, start_timeout);
    curl_multi_setopt(client->multi, CURLMOPT_TIMERDATA, client);
    return 0;
}

static size_t on_header(char *data, size_t size, size_t n, void *userp) {
    client_request *req = userp;
    size_t len = size * n;
    if (len > 9 && !strncasecmp(data, "location:", 9)) {
        const char *v = data + 9;
        size_t vlen = len - 9;
        while (vlen && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
            vlen--;
        free(req->location);
        req->location = strndup(v, vlen);
    } else if (len >= 5 && !strncmp(data, "HTTP/", 5)) {
        /* a new response (after a redirect): forget the previous one's Location */
        free(req->location);
        req->location = NULL;
    }
    return len;
}

static size_t discard_body(char *data, size_t size, size_t n, void *userp) {
    (void)data, (void)userp;
    return size * n;
}

client_request *http_client_start(http_client *client, const client_request_opts *opts, client_done_cb cb, void *ctx) {
    if (client->closing)
        return NULL;
    client_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->client = client;
    req->cb = cb;
    req->on_abort = opts->on_abort;
    req->ctx = ctx;
    req->easy = client->num_idle_easy ? client->idle_easy[--client->num_idle_easy] : curl_easy_init();
    if (!req->easy)
        goto failed;
    CURL *e = req->easy;
    for (const char *const *h = opts->headers; h && *h; h++) {
        struct curl_slist *n = curl_slist_append(req->headers, *h);
        if (!n)
            goto failed;
        req->headers = n;
    }
    curl_easy_setopt(e, CURLOPT_URL, opts->url);
    curl_easy_setopt(e, CURLOPT_PRIVATE, req);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(e, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, opts->timeout_ms);
    /* a transfer that moves nothing for a minute is dead, however large it is */
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(e, CURLOPT_LOW_SPEED_TIME, 60L);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_body);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, client);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, client);
    if (opts->upload) {
        curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(e, CURLOPT_READDATA, opts->upload);
        curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, opts->upload_len);
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, opts->method);
    } else {
        req->body = malloc(opts->body_len + 1);
        if (!req->body)
            goto failed;
        if (opts->body_len)
            memcpy(req->body, opts->body, opts->body_len);
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
        if (strcmp(opts->method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, opts->method);
    }
    if (curl_multi_add_handle(client->multi, e) != CURLM_OK)
        goto failed;
    client->num_active++;
    req->next = client->active;
    if (client->active)
        client->active->prev = req;
    client->active = req;
    return req;
failed:
    release_easy(client, req->easy);
    curl_slist_free_all(req->headers);
    free(req->body);
    free(req);
    return NULL;
}

void http_client_abort(http_client *client, client_request *req) {
    curl_multi_remove_handle(client->multi, req->easy);
    unlink_request(client, req);
    if (req->on_abort)
        req->on_abort(req->ctx);
    free_request(req);
}

static void on_timer_closed(uv_handle_t *handle) {
    http_client *client = container_of(handle, http_client, timer);
    void (*cb)(http_client *) = client->on_closed;
    client->on_closed = NULL;
    if (cb)
        cb(client);
}

void http_client_close(http_client *client, void (*on_closed)(http_client *client)) {
    client->closing = 1;
    client->on_closed = on_closed;
    client->on_idle = NULL;
    /* easy handles first, then the multi with our socket callback still live */
    while (client->active)
        http_client_abort(client, client->active);
    while (client->num_idle_easy)
        curl_easy_cleanup(client->idle_easy[--client->num_idle_easy]);
    curl_multi_cleanup(client->multi); /* closes the cached connections: close_socket for each */
    client->multi = NULL;
    while (client->sockets)
        close_socket_ctx(client->sockets);
    free(client->conn_fds);
    client->conn_fds = NULL;
    client->num_conn_fds = client->cap_conn_fds = 0;
    client->timer_open = 0;
    uv_close((uv_handle_t *)&client->timer, on_timer_closed);
}
