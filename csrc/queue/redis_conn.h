/* queue/redis_conn.h: one Redis connection that keeps itself alive, on the server's libuv
 * loop through hiredis's libuv adapter. It resolves off the loop, connects, selects the
 * database (and authenticates), reconnects with capped exponential backoff (1 s doubling to
 * 30 s), and declares the connection dead when a reply is overdue (the read-idle timeout). */
#ifndef COGLET_REDIS_CONN_H
#define COGLET_REDIS_CONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "queue/redis_url.h"

typedef enum { RCONN_DOWN, RCONN_RESOLVING, RCONN_CONNECTING, RCONN_HANDSHAKE, RCONN_UP, RCONN_CLOSED } rconn_state;

typedef struct rconn rconn;
/* A reply, or NULL when the connection went away before one came. The reply is hiredis's:
 * valid only during the call. */
typedef void (*rconn_reply_cb)(rconn *rc, redisReply *reply, void *ctx);

struct rconn {
    uv_loop_t *loop;
    const char *name; /* for log lines: "reader", "commands" */
    redis_url url;
    struct redisAsyncContext *ac;
    rconn_state state;
    uv_timer_t retry_timer, watchdog;
    uv_idle_t flush; /* write the commands of one loop turn together */
    uv_check_t flush_check;
    int flush_pending, flushing;
    uv_getaddrinfo_t resolver;
    int resolving;
    int handles_open;
    double backoff_s;
    int outstanding;         /* commands sent, reply not yet in */
    uint64_t last_progress;  /* uv_now of the last reply (or the first send after a quiet spell) */
    uint64_t reply_limit_ms; /* a reply later than this declares the connection dead */
    int closing;
    int was_up; /* logs "lost" once per outage, "connected" once per recovery */
    void *owner;
    void (*on_up)(rconn *rc);   /* connected, authenticated, database selected */
    void (*on_closed)(rconn *rc);
};

/* Sets up the handles; nothing connects before rconn_start. 0, or a libuv error. */
int rconn_init(rconn *rc, uv_loop_t *loop, const redis_url *url, const char *name, uint64_t reply_limit_ms);
void rconn_start(rconn *rc);
/* Sends one command (binary-safe argv). 0, UV_ENOTCONN when not up (cb is not called), or
 * UV_ENOMEM. */
int rconn_command(rconn *rc, rconn_reply_cb cb, void *ctx, int argc, const char **argv, const size_t *lens);
/* The same with NUL-terminated arguments. */
int rconn_commandv(rconn *rc, rconn_reply_cb cb, void *ctx, int argc, const char **argv);
int rconn_up(const rconn *rc);
/* Drops the connection now (pending callbacks get NULL) and reconnects after the backoff. */
void rconn_kill(rconn *rc, const char *why);
/* Closes for good: pending replies land first unless `force`; on_closed once all is gone. */
void rconn_close(rconn *rc, int force, void (*on_closed)(rconn *rc));

#endif
