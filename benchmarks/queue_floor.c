/* benchmarks/queue_floor.c: the pull-mode drain's floor on this machine (queue_bench.py builds
 * it, like webhook_receiver.c, and runs it as the kind "floor" of the drain scenario).
 *
 * A bare consumer loop with the same process layout and the same traffic as ours, and nothing
 * else: one process pinned where ours is, with a forked child as its "worker" (a frame out
 * and a frame back over a socketpair, no Python), blocking I/O (no event loop), hiredis'
 * synchronous API, and webhooks written by hand on two kept-alive connections (no libcurl).
 * Per message, as our queue door does:
 *   - XREADGROUP GROUP G C COUNT 1 BLOCK 0 STREAMS Q >   (one message: one slot)
 *   - the start webhook (`processing`), the prediction's round trip through the child,
 *   - then, in one write: SET the terminal record (EX 3600), XACK + XDEL the previous
 *     message (its webhook answered), and the next XREADGROUP;
 *   - the completed webhook once the record's reply is in; its answer is read before the
 *     connection is used again.
 * What it leaves out is what a real server needs (input validation, the prediction core,
 * leases, retries, timeouts, logs, metrics, libcurl's general HTTP client, a Python
 * predictor), so no consumer with this layout drains faster on this machine.
 *
 *   queue_floor REDIS_PORT STREAM GROUP CONSUMER N
 * prints "ready" once connected, handles N messages, exits 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* "http://127.0.0.1:PORT/..." → a connected socket (the bench's receiver is on loopback) */
static int connect_url(const char *url) {
    const char *p = strstr(url, "://");
    p = p ? strchr(p + 3, ':') : NULL;
    if (!p) {
        fprintf(stderr, "queue_floor: webhook URL without a port: %s\n", url);
        exit(1);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(p + 1))};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        die("connect");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

typedef struct hook {
    int fd;
    int waiting; /* a request's answer not read yet */
} hook;

static void read_answer(hook *h) {
    char buf[4096];
    size_t len = 0;
    while (h->waiting) {
        ssize_t r = read(h->fd, buf + len, sizeof buf - 1 - len);
        if (r <= 0)
            die("webhook answer");
        len += (size_t)r;
        buf[len] = '\0';
        const char *end = strstr(buf, "\r\n\r\n"), *cl = strcasestr(buf, "Content-Length:");
        if (end && cl && strlen(end + 4) >= (size_t)atoi(cl + 15))
            h->waiting = 0;
        else if (len == sizeof buf - 1)
            die("webhook answer too long");
    }
}

static void post(hook *h, const char *url, json_t *body) {
    read_answer(h);
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    const char *path = strchr(strstr(url, "://") + 3, '/');
    char head[512];
    int n = snprintf(head, sizeof head,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     path ? path : "/", strlen(text));
    size_t tl = strlen(text);
    char *req = malloc((size_t)n + tl);
    memcpy(req, head, (size_t)n);
    memcpy(req + n, text, tl);
    if (write(h->fd, req, (size_t)n + tl) != (ssize_t)((size_t)n + tl))
        die("webhook write");
    free(req);
    free(text);
    h->waiting = 1;
}

static void timestamp(json_t *o, const char *key) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char out[40];
    size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, sizeof out - n, ".%06ldZ", ts.tv_nsec / 1000);
    json_object_set_new(o, key, json_string(out));
}

/* the child: a frame in, a frame out, until the socket closes */
static void worker(int fd) {
    static const char done[] = "{\"type\":\"done\",\"output\":\"ok\",\"status\":\"succeeded\"}";
    char buf[65536];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0)
            _exit(0);
        if (write(fd, done, sizeof done - 1) != (ssize_t)(sizeof done - 1))
            _exit(1);
    }
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: queue_floor REDIS_PORT STREAM GROUP CONSUMER N\n");
        return 2;
    }
    const char *stream = argv[2], *group = argv[3], *consumer = argv[4];
    long n = atol(argv[5]);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        die("socketpair");
    pid_t child = fork();
    if (child == 0) {
        close(sp[0]);
        worker(sp[1]);
    }
    close(sp[1]);
    redisContext *rc = redisConnect("127.0.0.1", atoi(argv[1]));
    if (!rc || rc->err) {
        fprintf(stderr, "queue_floor: redis: %s\n", rc ? rc->errstr : "out of memory");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    hook start = {-1, 0}, completed = {-1, 0};
    json_t *msg = NULL; /* the message running */
    char id[64] = "", to_ack[64] = ""; /* to_ack: its completed webhook sent */
    for (long i = 0; i <= n; i++) {
        int replies = 0, recording = msg != NULL;
        if (msg) { /* its terminal: the record, the previous message's ack, the next read */
            json_t *resp = json_deep_copy(msg);
            json_object_set_new(resp, "status", json_string("succeeded"));
            json_object_set_new(resp, "output", json_string("ok"));
            json_object_set_new(resp, "logs", json_string(""));
            timestamp(resp, "completed_at");
            char *text = json_dumps(resp, JSON_COMPACT | JSON_SORT_KEYS);
            redisAppendCommand(rc, "SET coglet:%s:done:%s %s EX 3600", stream, id, text);
            free(text);
            replies++;
            if (to_ack[0]) { /* acknowledged once its webhook is answered */
                read_answer(&completed);
                redisAppendCommand(rc, "XACK %s %s %s", stream, group, to_ack);
                redisAppendCommand(rc, "XDEL %s %s", stream, to_ack);
                replies += 2;
            }
            snprintf(to_ack, sizeof to_ack, "%s", id);
            msg = resp; /* what the completed webhook carries */
        }
        if (i < n) {
            redisAppendCommand(rc, "XREADGROUP GROUP %s %s COUNT 1 BLOCK 0 STREAMS %s >", group, consumer, stream);
            replies++;
        }
        redisReply *r = NULL;
        for (int k = 0; k < replies; k++) {
            if (redisGetReply(rc, (void **)&r) != REDIS_OK)
                die("redis reply");
            if (k == 0 && recording) { /* the record is in: the completed webhook */
                const char *url = json_string_value(json_object_get(msg, "webhook"));
                if (completed.fd < 0)
                    completed.fd = connect_url(url);
                post(&completed, url, msg);
                json_decref(msg);
                msg = NULL;
            }
            if (k < replies - 1 || i == n)
                freeReplyObject(r);
        }
        if (i == n)
            break;
        /* the XREADGROUP reply: [[stream, [[id, [field, value]]]]] */
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) {
            fprintf(stderr, "queue_floor: unexpected XREADGROUP reply\n");
            return 1;
        }
        redisReply *entry = r->element[0]->element[1]->element[0];
        snprintf(id, sizeof id, "%s", entry->element[0]->str);
        msg = json_loads(entry->element[1]->element[1]->str, 0, NULL);
        freeReplyObject(r);
        if (!msg || !json_is_string(json_object_get(msg, "webhook"))) {
            fprintf(stderr, "queue_floor: a message that is not JSON or has no webhook\n");
            return 1;
        }
        char frame[256];
        int fl = snprintf(frame, sizeof frame, "{\"type\":\"predict\",\"id\":\"%s\",\"input\":{}}", id);
        if (write(sp[0], frame, (size_t)fl) != fl)
            die("worker write");
        json_t *st = json_deep_copy(msg);
        json_object_set_new(st, "status", json_string("processing"));
        json_object_set_new(st, "output", json_null());
        json_object_set_new(st, "logs", json_string(""));
        timestamp(st, "started_at");
        const char *url = json_string_value(json_object_get(msg, "webhook"));
        if (start.fd < 0)
            start.fd = connect_url(url);
        post(&start, url, st);
        json_decref(st);
        char back[4096];
        if (read(sp[0], back, sizeof back) <= 0)
            die("worker read");
    }
    read_answer(&start);
    read_answer(&completed);
    redisAppendCommand(rc, "XACK %s %s %s", stream, group, to_ack);
    redisAppendCommand(rc, "XDEL %s %s", stream, to_ack);
    for (int k = 0; k < 2; k++) {
        redisReply *r;
        if (redisGetReply(rc, (void **)&r) == REDIS_OK)
            freeReplyObject(r);
    }
    redisFree(rc);
    close(sp[0]);
    waitpid(child, NULL, 0);
    return 0;
}
