/* benchmarks/queue_floor.c: the pull-mode drain's floor on this machine (queue_bench.py builds
 * it, like webhook_receiver.c, and runs it as the kinds "floor" and "floor-curl" of the drain
 * scenario).
 *
 * A bare consumer loop with the same process layout and the same traffic as ours, and as
 * little else as it can: one process pinned where ours is, with a forked child as its
 * "worker" (a frame out and a frame back over a socketpair, no Python), blocking I/O (no
 * event loop), hiredis' synchronous API fed commands we write in Redis's protocol
 * ourselves, each response made by splicing fields into the message's own JSON text.
 * Per message, as our queue door does:
 *   - XREADGROUP GROUP G C COUNT 1 BLOCK 0 STREAMS Q >   (one message: one slot)
 *   - the start webhook (`processing`), the prediction's round trip through the child,
 *   - then, in one write: SET the terminal record (EX 3600), XACK + XDEL the previous
 *     message (its webhook answered), and the next XREADGROUP;
 *   - the completed webhook once the record's reply is in; its answer is read before the
 *     connection is used again, and before the message is acknowledged.
 * The webhooks are written by hand on two kept-alive connections ("raw"), or sent with
 * libcurl's multi interface on two kept-alive easy handles ("curl": what the guide
 * prescribes for ours), so the two rows tell what libcurl costs on top.
 * What it leaves out is what a real server needs (input validation, the prediction core,
 * leases, retries, timeouts, logs, metrics, a Python predictor).
 *
 *   queue_floor raw|curl REDIS_PORT STREAM GROUP CONSUMER N
 * prints "ready" once connected, handles N messages, exits 0. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <curl/curl.h>
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

/* ---- text ---- */

typedef struct text {
    char *p;
    size_t len, cap;
} text;

static void put(text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        t->cap = (t->len + n + 1) * 2;
        if (!(t->p = realloc(t->p, t->cap)))
            die("realloc");
    }
    memcpy(t->p + t->len, s, n);
    t->len += n;
    t->p[t->len] = '\0';
}

static void puts_(text *t, const char *s) { put(t, s, strlen(s)); }

static void put_decimal(text *t, size_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%zu", v);
    put(t, tmp, (size_t)n);
}

/* "YYYY-MM-DDTHH:MM:SS.uuuuuuZ" */
static void put_now(text *t) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char out[40];
    size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(out + n, sizeof out - n, ".%06ldZ", ts.tv_nsec / 1000);
    put(t, out, n);
}

/* The message's JSON object with more members: its text up to the closing brace, then
 * `members` (",\"k\":v,..."), then the brace. */
static void response(text *t, const char *msg, size_t msg_len, const char *members, const char *ts_key) {
    t->len = 0;
    while (msg_len > 0 && msg[msg_len - 1] != '}')
        msg_len--;
    put(t, msg, msg_len - 1);
    puts_(t, members);
    puts_(t, ",\"");
    puts_(t, ts_key);
    puts_(t, "\":\"");
    put_now(t);
    puts_(t, "\"}");
}

/* A command in Redis's protocol, appended to the context's output buffer. */
static void command(redisContext *rc, int argc, const char **argv, const size_t *lens) {
    text t = {0};
    puts_(&t, "*");
    put_decimal(&t, (size_t)argc);
    puts_(&t, "\r\n");
    for (int i = 0; i < argc; i++) {
        puts_(&t, "$");
        put_decimal(&t, lens[i]);
        puts_(&t, "\r\n");
        put(&t, argv[i], lens[i]);
        puts_(&t, "\r\n");
    }
    if (redisAppendFormattedCommand(rc, t.p, t.len) != REDIS_OK)
        die("redis append");
    free(t.p);
}

static void command_s(redisContext *rc, int argc, const char **argv) {
    size_t lens[16];
    if (argc > 16)
        die("command_s");
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    command(rc, argc, argv, lens);
}

/* ---- webhooks ---- */

typedef struct hook {
    int fd;        /* raw */
    CURL *easy;    /* curl */
    int waiting;   /* a request's answer not read yet */
    text body;     /* curl: the request body lives until the answer */
    struct curl_slist *headers;
} hook;

static int use_curl;
static CURLM *multi;

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

static size_t discard(char *p, size_t size, size_t n, void *ctx) {
    (void)p, (void)ctx;
    return size * n;
}

static void read_answer(hook *h) {
    if (!h->waiting)
        return;
    if (use_curl) {
        for (;;) {
            int running, left;
            curl_multi_perform(multi, &running);
            CURLMsg *m;
            while ((m = curl_multi_info_read(multi, &left)))
                if (m->msg == CURLMSG_DONE) {
                    if (m->data.result != CURLE_OK) {
                        fprintf(stderr, "queue_floor: webhook: %s\n", curl_easy_strerror(m->data.result));
                        exit(1);
                    }
                    hook *done;
                    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&done);
                    curl_multi_remove_handle(multi, m->easy_handle);
                    done->waiting = 0;
                }
            if (!h->waiting)
                return;
            curl_multi_poll(multi, NULL, 0, 1000, NULL);
        }
    }
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

static void post(hook *h, const char *url, const text *body) {
    read_answer(h);
    if (use_curl) {
        if (!h->easy) {
            h->easy = curl_easy_init();
            h->headers = curl_slist_append(NULL, "Content-Type: application/json");
            curl_easy_setopt(h->easy, CURLOPT_URL, url);
            curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, h->headers);
            curl_easy_setopt(h->easy, CURLOPT_WRITEFUNCTION, discard);
            curl_easy_setopt(h->easy, CURLOPT_PRIVATE, h);
            curl_easy_setopt(h->easy, CURLOPT_NOSIGNAL, 1L);
        }
        h->body.len = 0;
        put(&h->body, body->p, body->len);
        curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, h->body.p);
        curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body.len);
        curl_multi_add_handle(multi, h->easy);
        int running;
        curl_multi_perform(multi, &running); /* connects or reuses, sends */
        h->waiting = 1;
        return;
    }
    if (h->fd < 0)
        h->fd = connect_url(url);
    const char *path = strchr(strstr(url, "://") + 3, '/');
    text req = {0};
    puts_(&req, "POST ");
    puts_(&req, path ? path : "/");
    puts_(&req, " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ");
    put_decimal(&req, body->len);
    puts_(&req, "\r\n\r\n");
    put(&req, body->p, body->len);
    if (write(h->fd, req.p, req.len) != (ssize_t)req.len)
        die("webhook write");
    free(req.p);
    h->waiting = 1;
}

/* ---- the worker ---- */

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

/* ---- the loop ---- */

typedef struct running {
    char id[64];
    char *msg; /* the message's JSON text */
    size_t msg_len;
    char *url;
} running;

int main(int argc, char **argv) {
    if (argc != 7 || (strcmp(argv[1], "raw") && strcmp(argv[1], "curl"))) {
        fprintf(stderr, "usage: queue_floor raw|curl REDIS_PORT STREAM GROUP CONSUMER N\n");
        return 2;
    }
    use_curl = !strcmp(argv[1], "curl");
    const char *stream = argv[3], *group = argv[4], *consumer = argv[5];
    long n = atol(argv[6]);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0)
        die("socketpair");
    pid_t child = fork();
    if (child == 0) {
        close(sp[0]);
        worker(sp[1]);
    }
    close(sp[1]);
    if (use_curl) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        multi = curl_multi_init();
    }
    redisContext *rc = redisConnect("127.0.0.1", atoi(argv[2]));
    if (!rc || rc->err) {
        fprintf(stderr, "queue_floor: redis: %s\n", rc ? rc->errstr : "out of memory");
        return 1;
    }
    printf("ready\n");
    fflush(stdout);

    hook start = {.fd = -1}, completed = {.fd = -1};
    running cur = {0};
    int have = 0;
    char to_ack[64] = ""; /* its completed webhook sent */
    text resp = {0}, key = {0};
    for (long i = 0; i <= n; i++) {
        int replies = 0, recording = have;
        if (have) { /* its terminal: the record, the previous message's ack, the next read */
            response(&resp, cur.msg, cur.msg_len, ",\"status\":\"succeeded\",\"output\":\"ok\",\"logs\":\"\"",
                     "completed_at");
            key.len = 0;
            puts_(&key, "coglet:");
            puts_(&key, stream);
            puts_(&key, ":done:");
            puts_(&key, cur.id);
            const char *a[] = {"SET", key.p, resp.p, "EX", "3600"};
            size_t l[] = {3, key.len, resp.len, 2, 4};
            command(rc, 5, a, l);
            replies++;
            if (to_ack[0]) { /* acknowledged once its webhook is answered */
                read_answer(&completed);
                command_s(rc, 4, (const char *[]){"XACK", stream, group, to_ack});
                command_s(rc, 3, (const char *[]){"XDEL", stream, to_ack});
                replies += 2;
            }
            snprintf(to_ack, sizeof to_ack, "%s", cur.id);
        }
        if (i < n) {
            command_s(rc, 11, (const char *[]){"XREADGROUP", "GROUP", group, consumer, "COUNT", "1", "BLOCK", "0",
                                               "STREAMS", stream, ">"});
            replies++;
        }
        redisReply *r = NULL;
        for (int k = 0; k < replies; k++) {
            if (redisGetReply(rc, (void **)&r) != REDIS_OK)
                die("redis reply");
            if (k == 0 && recording) { /* the record is in: the completed webhook */
                post(&completed, cur.url, &resp);
                free(cur.msg);
                free(cur.url);
                have = 0;
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
        redisReply *entry = r->element[0]->element[1]->element[0], *value = entry->element[1]->element[1];
        snprintf(cur.id, sizeof cur.id, "%s", entry->element[0]->str);
        json_t *msg = json_loadb(value->str, value->len, 0, NULL); /* for its webhook URL */
        const char *url = json_string_value(json_object_get(msg, "webhook"));
        if (!url) {
            fprintf(stderr, "queue_floor: a message that is not JSON or has no webhook\n");
            return 1;
        }
        cur.url = strdup(url);
        json_decref(msg);
        cur.msg = malloc(value->len);
        memcpy(cur.msg, value->str, value->len);
        cur.msg_len = value->len;
        have = 1;
        freeReplyObject(r);
        char frame[256];
        int fl = snprintf(frame, sizeof frame, "{\"type\":\"predict\",\"id\":\"%s\",\"input\":{}}", cur.id);
        if (write(sp[0], frame, (size_t)fl) != fl)
            die("worker write");
        response(&resp, cur.msg, cur.msg_len, ",\"status\":\"processing\",\"output\":null,\"logs\":\"\"",
                 "started_at");
        post(&start, cur.url, &resp);
        char back[4096];
        if (read(sp[0], back, sizeof back) <= 0)
            die("worker read");
    }
    read_answer(&start);
    read_answer(&completed);
    command_s(rc, 4, (const char *[]){"XACK", stream, group, to_ack});
    command_s(rc, 3, (const char *[]){"XDEL", stream, to_ack});
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
