/* queue/redis_conn.c: a self-healing hiredis connection on the libuv loop (see the header).
 * hiredis frees its context itself after a disconnect; `ac->data` points back here and every
 * path that drops a context goes through connection_lost, once. */
#include "queue/redis_conn.h"

#include <arpa/inet.h>
#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

#define TARGET "coglet::queue"
#define BACKOFF_MIN_S 1.0
#define BACKOFF_MAX_S 30.0
#define WATCHDOG_TICK_MS 500

/* ---- commands ---- */

typedef struct rconn_cmd {
    rconn *rc;
    rconn_reply_cb cb;
    void *ctx;
} rconn_cmd;

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)ac;
    rconn_cmd *cmd = privdata;
    rconn *rc = cmd->rc;
    if (rc->outstanding > 0)
        rc->outstanding--;
    rc->last_progress = uv_now(rc->loop);
    if (cmd->cb)
        cmd->cb(rc, reply, cmd->ctx);
    free(cmd);
}

static char *put_decimal(char *p, size_t v) {
    char tmp[24];
    int n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* The command in RESP, as redisFormatCommandArgv would write it; hiredis 0.14 builds that
 * with sdscatfmt a character at a time, several thousand instructions a command. NUL-
 * terminated like hiredis's own (its SUBSCRIBE bookkeeping scans the text with strchr);
 * the length returned leaves the NUL out. The caller frees *out unless it is stack. */
static size_t format_command(char *stack, size_t stack_len, char **out, int argc, const char **argv,
                             const size_t *lens) {
    size_t total = 1 + 20 + 2 + 1;
    for (int i = 0; i < argc; i++)
        total += 1 + 20 + 2 + lens[i] + 2;
    char *p = total <= stack_len ? stack : malloc(total);
    if (!p)
        return 0;
    *out = p;
    *p++ = '*';
    p = put_decimal(p, (size_t)argc);
    *p++ = '\r', *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        *p++ = '$';
        p = put_decimal(p, lens[i]);
        *p++ = '\r', *p++ = '\n';
        memcpy(p, argv[i], lens[i]);
        p += lens[i];
        *p++ = '\r', *p++ = '\n';
    }
    *p = '\0';
    return (size_t)(p - *out);
}

static int send_command(rconn *rc, rconn_reply_cb cb, void *ctx, int argc, const char **argv, const size_t *lens) {
    char stack[2048], *text = NULL;
    size_t len = format_command(stack, sizeof stack, &text, argc, argv, lens);
    rconn_cmd *cmd = len ? malloc(sizeof *cmd) : NULL;
    if (!cmd) {
        if (text != stack)
            free(text);
        return UV_ENOMEM;
    }
    cmd->rc = rc;
    cmd->cb = cb;
    cmd->ctx = ctx;
    if (rc->outstanding == 0)
        rc->last_progress = uv_now(rc->loop);
    int rv = redisAsyncFormattedCommand(rc->ac, on_reply, cmd, text, len);
    if (text != stack)
        free(text);
    if (rv != REDIS_OK) {
        free(cmd);
        return UV_ENOTCONN;
    }
    rc->outstanding++;
    return 0;
}

int rconn_command(rconn *rc, rconn_reply_cb cb, void *ctx, int argc, const char **argv, const size_t *lens) {
    if (rc->state != RCONN_UP || !rc->ac)
        return UV_ENOTCONN;
    return send_command(rc, cb, ctx, argc, argv, lens);
}

int rconn_commandv(rconn *rc, rconn_reply_cb cb, void *ctx, int argc, const char **argv) {
    size_t lens[32];
    if (argc > 32)
        return UV_EINVAL;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return rconn_command(rc, cb, ctx, argc, argv, lens);
}

int rconn_up(const rconn *rc) {
    return rc->state == RCONN_UP;
}

/* ---- connecting ---- */

static void start_resolve(rconn *rc);

static void on_retry(uv_timer_t *t) {
    rconn *rc = t->data;
    if (rc->state == RCONN_DOWN && !rc->closing)
        start_resolve(rc);
}

static void on_handle_closed(uv_handle_t *h) {
    rconn *rc = h->data;
    if (--rc->handles_open == 0 && rc->on_closed) {
        void (*cb)(rconn *) = rc->on_closed;
        rc->on_closed = NULL;
        cb(rc);
    }
}

/* Closing, and nothing is connected or resolving any more: the timers go, then on_closed. */
static void finish_close(rconn *rc) {
    rc->state = RCONN_CLOSED;
    if (rc->ac || rc->resolving || uv_is_closing((uv_handle_t *)&rc->watchdog))
        return;
    uv_close((uv_handle_t *)&rc->retry_timer, on_handle_closed);
    uv_close((uv_handle_t *)&rc->watchdog, on_handle_closed);
    uv_close((uv_handle_t *)&rc->flush, on_handle_closed);
    uv_close((uv_handle_t *)&rc->flush_check, on_handle_closed);
}

/* Every way a context ends comes here once. hiredis frees the context itself. */
static void connection_lost(rconn *rc, const char *why) {
    rc->ac = NULL;
    rc->outstanding = 0;
    if (rc->closing) {
        finish_close(rc);
        return;
    }
    rc->state = RCONN_DOWN;
    if (rc->was_up) {
        log_warn(TARGET, "redis %s connection to %s:%d lost (%s); reconnecting", rc->name, rc->url.host, rc->url.port,
                 why);
        rc->was_up = 0;
    } else {
        log_debug(TARGET, "redis %s: cannot connect to %s:%d (%s); retrying in %.0fs", rc->name, rc->url.host,
                  rc->url.port, why, rc->backoff_s);
    }
    uv_timer_start(&rc->retry_timer, on_retry, (uint64_t)(rc->backoff_s * 1000), 0);
    rc->backoff_s = rc->backoff_s * 2 > BACKOFF_MAX_S ? BACKOFF_MAX_S : rc->backoff_s * 2;
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    rconn *rc = ac->data;
    (void)status;
    if (rc && rc->ac == ac)
        connection_lost(rc, ac->errstr[0] ? ac->errstr : "closed by the server");
}

static void became_up(rconn *rc) {
    rc->state = RCONN_UP;
    rc->backoff_s = BACKOFF_MIN_S;
    if (!rc->was_up)
        log_info(TARGET, "redis %s connection to %s:%d up", rc->name, rc->url.host, rc->url.port);
    rc->was_up = 1;
    if (rc->on_up)
        rc->on_up(rc);
}

/* AUTH and SELECT replies: the last one makes the connection usable. */
static void on_handshake(rconn *rc, redisReply *reply, void *ctx) {
    int last = ctx != NULL;
    if (!reply || rc->state != RCONN_HANDSHAKE)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error(TARGET, "redis %s: %s", rc->name, reply->str);
        rconn_kill(rc, "handshake refused");
        return;
    }
    if (last)
        became_up(rc);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    rconn *rc = ac->data;
    if (!rc || rc->ac != ac)
        return;
    log_debug(TARGET, "redis %s: connect status %d", rc->name, status);
    if (status != REDIS_OK) {
        connection_lost(rc, ac->errstr[0] ? ac->errstr : "connect failed"); /* hiredis frees ac */
        return;
    }
    redisEnableKeepAlive((redisContext *)&ac->c);
    rc->state = RCONN_HANDSHAKE;
    char db[16];
    snprintf(db, sizeof db, "%d", rc->url.db);
    const char *auth[] = {"AUTH", rc->url.user, rc->url.password};
    const char *select[] = {"SELECT", db};
    int need_select = rc->url.db != 0;
    static int marker;
    int rcode = 0;
    if (rc->url.password[0]) {
        int n = rc->url.user[0] ? 3 : 2;
        if (n == 2)
            auth[1] = rc->url.password;
        size_t lens[3] = {4, strlen(auth[1]), n == 3 ? strlen(auth[2]) : 0};
        rcode = send_command(rc, on_handshake, need_select ? NULL : &marker, n, auth, lens);
    }
    if (rcode == 0 && need_select) {
        size_t lens[2] = {6, strlen(db)};
        rcode = send_command(rc, on_handshake, &marker, 2, select, lens);
    }
    if (rcode != 0)
        rconn_kill(rc, "cannot send the handshake");
    else if (!rc->url.password[0] && !need_select)
        became_up(rc);
}

/* hiredis 0.14's libuv adapter restarts its uv_poll on every add and delete, even when the
 * mask does not change: hiredis asks for reads after every write, and each uv_poll_start
 * costs two epoll_ctl calls (libuv drops the fd from epoll and adds it back). hiredis 1.x's
 * adapter returns early when the mask is unchanged; these do the same around the adapter's
 * own (see also on_poll). And a connected context does not wait for a writable event to send: the commands of
 * one loop turn are written together at its end (a check handle, right after the callbacks
 * that queued them; an idle handle when they came from a timer, so the poll does not block
 * first), and only a socket that is full makes the poll watch for writability. */
/* The adapter's poll callback drops an error status, and libuv reports a socket error (a
 * refused connect, a reset) only that way, having stopped the poll: the connection then hangs
 * until the watchdog. As hiredis 1.x does, an error goes to hiredis as the events it waited
 * for, so its read or write sees the error and the context ends at once. */
static void on_poll(uv_poll_t *handle, int status, int events) {
    redisLibuvEvents *p = handle->data;
    int ev = status ? p->events : events;
    if (status)
        p->events = 0; /* libuv stopped the poll */
    if (p->context && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void events_changed(redisLibuvEvents *p, int events) {
    if (p->events == events)
        return;
    p->events = events;
    if (events)
        uv_poll_start(&p->handle, events, on_poll);
    else
        uv_poll_stop(&p->handle);
}

static void add_read(void *privdata) {
    redisLibuvEvents *p = privdata;
    events_changed(p, p->events | UV_READABLE);
}

static void del_read(void *privdata) {
    redisLibuvEvents *p = privdata;
    events_changed(p, p->events & ~UV_READABLE);
}

static void flush(rconn *rc) {
    uv_idle_stop(&rc->flush);
    uv_check_stop(&rc->flush_check);
    if (!rc->flush_pending || !rc->ac)
        return;
    rc->flush_pending = 0;
    rc->flushing = 1;
    redisAsyncHandleWrite(rc->ac); /* what does not fit asks for writability (add_write) */
    rc->flushing = 0;
}

static void on_flush_idle(uv_idle_t *h) {
    flush(h->data);
}
static void on_flush_check(uv_check_t *h) {
    flush(h->data);
}

static void add_write(void *privdata) {
    redisLibuvEvents *p = privdata;
    redisAsyncContext *ac = p->context;
    rconn *rc = ac ? ac->data : NULL;
    if (!rc || rc->flushing || !(ac->c.flags & REDIS_CONNECTED)) {
        events_changed(p, p->events | UV_WRITABLE); /* connecting, or the socket is full */
        return;
    }
    if (!(p->events & UV_WRITABLE) && !rc->flush_pending) {
        rc->flush_pending = 1;
        uv_idle_start(&rc->flush, on_flush_idle);
        uv_check_start(&rc->flush_check, on_flush_check);
    }
}

static void del_write(void *privdata) {
    redisLibuvEvents *p = privdata;
    redisAsyncContext *ac = p->context;
    rconn *rc = ac ? ac->data : NULL;
    if (rc)
        rc->flush_pending = 0;
    events_changed(p, p->events & ~UV_WRITABLE);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
    rconn *rc = req->data;
    rc->resolving = 0;
    if (rc->closing) {
        uv_freeaddrinfo(res);
        finish_close(rc);
        return;
    }
    char ip[64] = "";
    if (status == 0 && res) {
        if (res->ai_family == AF_INET)
            uv_ip4_name((struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
        else if (res->ai_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        connection_lost(rc, status ? uv_strerror(status) : "no address");
        return;
    }
    /* a numeric address: hiredis's own lookup returns at once, nothing blocks the loop */
    redisAsyncContext *ac = redisAsyncConnect(ip, rc->url.port);
    if (!ac || ac->err) {
        char why[160];
        snprintf(why, sizeof why, "%s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        connection_lost(rc, why);
        return;
    }
    ac->data = rc;
    if (redisLibuvAttach(ac, rc->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        connection_lost(rc, "cannot attach to the loop");
        return;
    }
    ac->ev.addRead = add_read;
    ac->ev.delRead = del_read;
    ac->ev.addWrite = add_write;
    ac->ev.delWrite = del_write;
    rc->ac = ac;
    log_debug(TARGET, "redis %s: connecting to %s:%d", rc->name, ip, rc->url.port);
    rc->state = RCONN_CONNECTING;
    rc->last_progress = uv_now(rc->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
}

static void start_resolve(rconn *rc) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    rc->state = RCONN_RESOLVING;
    rc->resolving = 1;
    rc->last_progress = uv_now(rc->loop);
    int r = uv_getaddrinfo(rc->loop, &rc->resolver, on_resolved, rc->url.host, NULL, &hints);
    if (r != 0) {
        rc->resolving = 0;
        connection_lost(rc, uv_strerror(r));
    }
}

/* A connect or a reply that is overdue: the connection is dead even if TCP has not noticed. */
static void on_watchdog(uv_timer_t *t) {
    rconn *rc = t->data;
    uint64_t now = uv_now(rc->loop);
    int waiting =
        rc->state == RCONN_CONNECTING || rc->state == RCONN_HANDSHAKE || (rc->state == RCONN_UP && rc->outstanding > 0);
    if (waiting && now - rc->last_progress > rc->reply_limit_ms)
        rconn_kill(rc, "no reply within the read-idle timeout");
}

int rconn_init(rconn *rc, uv_loop_t *loop, const redis_url *url, const char *name, uint64_t reply_limit_ms) {
    rc->loop = loop;
    rc->url = *url;
    rc->name = name;
    rc->state = RCONN_DOWN;
    rc->backoff_s = BACKOFF_MIN_S;
    rc->reply_limit_ms = reply_limit_ms;
    rc->resolver.data = rc;
    int r = uv_timer_init(loop, &rc->retry_timer);
    if (r == 0)
        r = uv_timer_init(loop, &rc->watchdog);
    if (r == 0)
        r = uv_idle_init(loop, &rc->flush);
    if (r == 0)
        r = uv_check_init(loop, &rc->flush_check);
    if (r != 0)
        return r;
    rc->retry_timer.data = rc->watchdog.data = rc->flush.data = rc->flush_check.data = rc;
    rc->handles_open = 4;
    return 0;
}

void rconn_start(rconn *rc) {
    uv_timer_start(&rc->watchdog, on_watchdog, WATCHDOG_TICK_MS, WATCHDOG_TICK_MS);
    start_resolve(rc);
}

void rconn_kill(rconn *rc, const char *why) {
    redisAsyncContext *ac = rc->ac;
    if (!ac)
        return;
    /* lost first, so the callbacks hiredis makes while freeing see a connection that is down */
    connection_lost(rc, why);
    ac->data = NULL;
    redisAsyncFree(ac);
}

void rconn_close(rconn *rc, int force, void (*on_closed)(rconn *rc)) {
    if (rc->closing)
        return;
    rc->closing = 1;
    rc->on_closed = on_closed;
    uv_timer_stop(&rc->retry_timer);
    if (rc->resolving) {
        uv_cancel((uv_req_t *)&rc->resolver); /* on_resolved sees closing */
    } else if (rc->ac && rc->state == RCONN_UP && !force) {
        /* pending replies first; on_disconnect (or the watchdog) ends it */
        redisAsyncDisconnect(rc->ac);
    } else if (rc->ac) {
        /* forced: what this loop turn queued (an acknowledgement written as its message was
         * abandoned) still goes out, best effort, before the context is freed; a failed
         * write ends the context itself (connection_lost) */
        if (rc->state == RCONN_UP)
            flush(rc);
        if (rc->ac)
            rconn_kill(rc, "closing");
    } else {
        finish_close(rc);
    }
}
