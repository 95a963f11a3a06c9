/* benchmarks/webhook_receiver.c: the pull-mode benchmark's webhook receiver (queue_bench.py
 * builds it with the system compiler and falls back to its Python receiver without one).
 *
 * It answers `200 {}` to every request on kept-alive connections and prints one line per
 * request, `time_ns status id`, the top-level "status" and "id" of the JSON body, in one
 * write per batch of requests read. It shares a CPU with Redis and the producer: at several
 * thousand predictions a second (two webhooks each) the Python receiver spent ~45 us per
 * prediction there, enough to set the rate it was measuring; this one spends a few.
 *
 *   webhook_receiver        prints "PORT n", then serves 127.0.0.1:n until killed
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_REQUEST (4u << 20) /* a larger request closes its connection */

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";

typedef struct conn {
    int fd;
    char *buf;
    size_t len, cap;
} conn;

static char out[1 << 16];
static size_t out_len;

static void flush_out(void) {
    size_t off = 0;
    while (off < out_len) {
        ssize_t n = write(1, out + off, out_len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            exit(0); /* the reader is gone */
        off += (size_t)n;
    }
    out_len = 0;
}

static void emit(const char *line, size_t n) {
    if (out_len + n > sizeof out)
        flush_out();
    memcpy(out + out_len, line, n);
    out_len += n;
}

/* The string value at *p (just past its opening quote), copied without its escapes into
 * dst; p moves past the closing quote. */
static const char *read_string(const char *p, const char *end, char *dst, size_t dstlen) {
    size_t k = 0;
    while (p < end && *p != '"') {
        if (*p == '\\' && p + 1 < end)
            p++;
        if (k + 1 < dstlen)
            dst[k++] = *p;
        p++;
    }
    dst[k] = '\0';
    return p < end ? p + 1 : end;
}

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    return p;
}

/* The top-level "status" and "id" string values of a JSON object ("-" when absent). */
static void top_level_fields(const char *p, const char *end, char *status, char *id, size_t n) {
    strcpy(status, "bad");
    strcpy(id, "-");
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return;
    strcpy(status, "-");
    int depth = 0;
    int expect_key = 0;
    char key[32];
    while (p < end) {
        char c = *p++;
        if (c == '"') {
            if (depth == 1 && expect_key) {
                p = read_string(p, end, key, sizeof key);
                p = skip_ws(p, end);
                if (p < end && *p == ':')
                    p = skip_ws(p + 1, end);
                expect_key = 0;
                if (p < end && *p == '"' && (!strcmp(key, "status") || !strcmp(key, "id"))) {
                    p = read_string(p + 1, end, !strcmp(key, "status") ? status : id, n);
                }
            } else {
                char skip[2];
                p = read_string(p, end, skip, sizeof skip);
            }
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1;
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (c == ',' && depth == 1) {
            expect_key = 1;
        }
    }
}

/* Answers every complete request in c->buf; -1 when the connection should close. */
static int serve(conn *c) {
    size_t pos = 0, answers = 0;
    struct timespec ts;
    for (;;) {
        char *head = c->buf + pos;
        size_t avail = c->len - pos;
        char *sep = memmem(head, avail, "\r\n\r\n", 4);
        if (!sep)
            break;
        size_t body_len = 0;
        for (char *line = memchr(head, '\n', (size_t)(sep - head)); line && line < sep;
             line = memchr(line + 1, '\n', (size_t)(sep - line - 1))) {
            if ((size_t)(sep - line) > 16 && !strncasecmp(line + 1, "content-length:", 15))
                body_len = strtoul(line + 16, NULL, 10);
        }
        size_t need = (size_t)(sep + 4 - head) + body_len;
        if (need > MAX_REQUEST)
            return -1;
        if (avail < need)
            break;
        char status[64], id[256], line[400];
        top_level_fields(sep + 4, sep + 4 + body_len, status, id, sizeof id);
        clock_gettime(CLOCK_REALTIME, &ts);
        int n = snprintf(line, sizeof line, "%lld %s %s\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, status,
                         id);
        emit(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        pos += need;
        answers++;
    }
    if (pos) {
        memmove(c->buf, c->buf + pos, c->len - pos);
        c->len -= pos;
    }
    while (answers) {
        char reply[sizeof ANSWER * 16];
        size_t k = answers < 16 ? answers : 16, len = 0;
        for (size_t i = 0; i < k; i++, len += sizeof ANSWER - 1)
            memcpy(reply + len, ANSWER, sizeof ANSWER - 1);
        size_t off = 0;
        while (off < len) {
            ssize_t w = send(c->fd, reply + off, len - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0 && errno == EAGAIN) {
                /* the client does not read its answers: wait for it, it is a benchmark */
                usleep(100);
                continue;
            }
            if (w <= 0)
                return -1;
            off += (size_t)w;
        }
        answers -= k;
    }
    return 0;
}

static void drop(int ep, conn *c) {
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->buf);
    free(c);
}

int main(void) {
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t salen = sizeof sa;
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 512) != 0 ||
        getsockname(ls, (struct sockaddr *)&sa, &salen) != 0) {
        perror("webhook_receiver");
        return 1;
    }
    printf("PORT %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
    struct epoll_event events[64];
    for (;;) {
        int n = epoll_wait(ep, events, 64, -1);
        if (n < 0 && errno == EINTR)
            continue;
        for (int i = 0; i < n; i++) {
            conn *c = events[i].data.ptr;
            if (!c) {
                int fd;
                while ((fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    conn *nc = calloc(1, sizeof *nc);
                    if (!nc) {
                        close(fd);
                        continue;
                    }
                    nc->fd = fd;
                    struct epoll_event cev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = nc};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &cev);
                }
                continue;
            }
            int closed = 0;
            for (;;) {
                if (c->cap - c->len < 16384) {
                    size_t cap = c->cap ? c->cap * 2 : 65536;
                    char *b = cap <= 2 * MAX_REQUEST ? realloc(c->buf, cap) : NULL;
                    if (!b) {
                        closed = 1;
                        break;
                    }
                    c->buf = b;
                    c->cap = cap;
                }
                ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
                if (r > 0) {
                    c->len += (size_t)r;
                    if (c->cap - c->len >= 16384)
                        break; /* short read: nothing more right now */
                    continue;
                }
                if (r < 0 && errno == EINTR)
                    continue;
                if (r < 0 && errno == EAGAIN)
                    break;
                closed = 1; /* EOF or error */
                break;
            }
            if (serve(c) != 0 || closed)
                drop(ep, c);
        }
        if (out_len)
            flush_out();
    }
}
