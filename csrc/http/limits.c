/* http/limits.c: the connection limits and timeouts read from the environment, the
 * connection cap fitted under the fd limit, and refusing connections over it (503). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "common/log.h"
#include "http/internal.h"

#define DEFAULT_MAX_CONNECTIONS 2048
#define DEFAULT_MAX_UNSENT ((size_t)4 << 20)
#define DEFAULT_HEADER_TIMEOUT 30.0
#define DEFAULT_BODY_TIMEOUT 30.0
#define DEFAULT_IDLE_TIMEOUT 120.0
/* Descriptors kept free of connections for what a prediction needs while the server is
 * flooded: output files read on the thread pool, input spills, webhook and upload sockets. */
#define FD_HEADROOM 128
#define SHED_LOG_INTERVAL_MS 10000

static uint64_t env_timeout_ms(const char *name, double fallback) {
    const char *v = getenv(name);
    double d = fallback;
    if (v && *v) {
        char *end;
        errno = 0;
        d = strtod(v, &end);
        if (*end || errno || !(d >= 0) || d > 1e9) {
            log_warn(HTTP_TARGET, "Invalid %s value, using %g", name, fallback);
            d = fallback;
        }
    }
    return (uint64_t)(d * 1000 + 0.5);
}

/* A positive integer, or the fallback (with a warning when the value was there but bad). */
static unsigned long long env_count(const char *name, unsigned long long fallback, unsigned long long max) {
    const char *v = getenv(name);
    if (!v || !*v)
        return fallback;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end || errno || n == 0 || n > max || v[0] == '-') {
        log_warn(HTTP_TARGET, "Invalid %s value, using %llu", name, fallback);
        return fallback;
    }
    return n;
}

/* Connections may take what the fd limit leaves once the headroom is set aside (a quarter
 * of a small limit). */
static unsigned fd_connection_ceiling(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 30))
        return 1u << 30;
    unsigned long long nofile = rl.rlim_cur;
    unsigned long long headroom = nofile < 4 * FD_HEADROOM ? nofile / 4 : FD_HEADROOM;
    return nofile > headroom + 1 ? (unsigned)(nofile - headroom) : 1;
}

void http__limits_from_env(http_limits *limits) {
    const char *explicit_max = getenv("COGLET_HTTP_MAX_CONNECTIONS");
    unsigned long long max = env_count("COGLET_HTTP_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS, 1u << 30);
    unsigned ceiling = fd_connection_ceiling();
    if (max > ceiling) {
        if (explicit_max && *explicit_max)
            log_warn(HTTP_TARGET, "COGLET_HTTP_MAX_CONNECTIONS lowered from %llu to %u to fit the open file limit",
                     max, ceiling);
        max = ceiling;
    }
    limits->max_connections = (unsigned)max;
    limits->max_unsent = (size_t)env_count("COGLET_HTTP_MAX_UNSENT", DEFAULT_MAX_UNSENT, (size_t)1 << 40);
    limits->header_timeout_ms = env_timeout_ms("COGLET_HTTP_HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT);
    limits->body_timeout_ms = env_timeout_ms("COGLET_HTTP_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT);
    limits->idle_timeout_ms = env_timeout_ms("COGLET_HTTP_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT);
    log_debug(HTTP_TARGET, "HTTP limits: %u connections, %zu unsent bytes, timeouts %llu/%llu/%llu ms",
              limits->max_connections, limits->max_unsent, (unsigned long long)limits->header_timeout_ms,
              (unsigned long long)limits->body_timeout_ms, (unsigned long long)limits->idle_timeout_ms);
}

/* ---- refusing connections over the cap ---- */

static const char shed_response[] = "HTTP/1.1 503 Service Unavailable\r\n"
                                    "content-type: text/plain; charset=utf-8\r\n"
                                    "content-length: 25\r\n"
                                    "retry-after: 1\r\n"
                                    "connection: close\r\n"
                                    "\r\n"
                                    "Too many open connections";

static void shed_closed(uv_handle_t *handle) {
    http_server *server = handle->data;
    free(handle);
    server->shed_open--;
    http__server_maybe_drained(server);
}

/* One line when refusing starts, then at most one per interval with the count. */
static void shed_log(http_server *server) {
    server->shed_unlogged++;
    uint64_t now = uv_now(server->loop);
    if (server->shed_logged_at && now - server->shed_logged_at < SHED_LOG_INTERVAL_MS)
        return;
    log_warn(HTTP_TARGET, "connection limit reached (%d open, COGLET_HTTP_MAX_CONNECTIONS=%u): refused %llu %s with 503",
             server->num_conns, server->limits.max_connections, server->shed_unlogged,
             server->shed_unlogged == 1 ? "connection" : "connections");
    server->shed_unlogged = 0;
    server->shed_logged_at = now ? now : 1;
}

/* The socket is answered and closed at once, without a connection of its own: what the
 * client already sent is read and dropped first, so the close is a FIN, not a reset that
 * could destroy the answer before the client reads it. */
void http__shed_connection(http_server *server) {
    uv_tcp_t *tcp = malloc(sizeof *tcp);
    if (!tcp || uv_tcp_init(server->loop, tcp) != 0) {
        free(tcp);
        return;
    }
    tcp->data = server;
    server->shed_open++;
    uv_os_fd_t fd;
    if (uv_accept((uv_stream_t *)&server->listener, (uv_stream_t *)tcp) == 0 &&
        uv_fileno((uv_handle_t *)tcp, &fd) == 0) {
        char sink[4096];
        for (int i = 0; i < 16 && recv(fd, sink, sizeof sink, MSG_DONTWAIT) > 0; i++) {
        }
        ssize_t n = send(fd, shed_response, sizeof shed_response - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n; /* best effort: the socket's buffer is empty, so it takes all of it */
        shutdown(fd, SHUT_WR);
        shed_log(server);
    }
    uv_close((uv_handle_t *)tcp, shed_closed);
}
