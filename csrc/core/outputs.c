/* core/outputs.c: outputs the parent produces from files (docs/files.md#outputs-in-the-parent):
 * data URLs and oversized (spilled) values are read on libuv's thread pool, uploads stream
 * the file from disk through libcurl on the loop. Each output keeps the place the predictor
 * gave it (the Rust coglet appends in completion order); an upload is retried on 5xx / transport
 * errors, and one that finally fails fails the prediction instead of vanishing. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/json_in.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/outputs.h"
#include "core/prediction_impl.h"
#include "core/stats.h"

#define TARGET "coglet::outputs"
#define UPLOAD_MAX_RETRIES 3

enum { OP_DATA_URL, OP_OVERSIZED, OP_UPLOAD };

struct output_op {
    core *core;
    prediction *p;
    output_op *next;
    int kind;
    size_t index;
    char *path;
    char *mime;
    int delete_after; /* a file the worker wrote for us */
    /* thread pool */
    uv_work_t work;
    json_t *result;
    char *error;
    int in_pool;
    /* upload */
    FILE *file;
    long long size; /* the file being uploaded */
    trace_span *span; /* the upload, retries included */
    client_request *req;
    int attempt;
    uv_timer_t retry;
    int retry_open;
    int aborted;
};

/* *dst = the formatted text (replacing what it held); "out of memory" when that fails. */
__attribute__((format(printf, 2, 3))) static void set_error(char **dst, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    if (vasprintf(&text, fmt, ap) < 0)
        text = strdup("out of memory");
    va_end(ap);
    free(*dst);
    *dst = text;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *data_url_of(const char *path, const char *mime, char **error) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_error(error, "cannot open output file %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        set_error(error, "output %s is not a regular file", path);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    size_t prefix = strlen("data:") + strlen(mime) + strlen(";base64,");
    size_t outlen = prefix + (size + 2) / 3 * 4;
    char *out = malloc(outlen + 1);
    if (!out) {
        close(fd);
        set_error(error, "output %s: out of memory", path);
        return NULL;
    }
    char *o = out + sprintf(out, "data:%s;base64,", mime);
    /* read in chunks that are a multiple of 3 so base64 never needs carrying */
    unsigned char chunk[3 * 21846];
    size_t done = 0;
    for (;;) {
        size_t have = 0;
        while (have < sizeof chunk) {
            ssize_t n = read(fd, chunk + have, sizeof chunk - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                set_error(error, "reading output %s: %s", path, strerror(errno));
                close(fd);
                free(out);
                return NULL;
            }
            if (n == 0)
                break;
            have += (size_t)n;
        }
        if (done + have > size)
            have = size - done; /* the file grew: keep what stat promised */
        size_t i = 0;
        for (; i + 3 <= have; i += 3) {
            unsigned v = (unsigned)chunk[i] << 16 | (unsigned)chunk[i + 1] << 8 | chunk[i + 2];
            *o++ = b64[v >> 18];
            *o++ = b64[(v >> 12) & 63];
            *o++ = b64[(v >> 6) & 63];
            *o++ = b64[v & 63];
        }
        if (i < have) {
            unsigned v = (unsigned)chunk[i] << 16 | (i + 1 < have ? (unsigned)chunk[i + 1] << 8 : 0);
            *o++ = b64[v >> 18];
            *o++ = b64[(v >> 12) & 63];
            *o++ = i + 1 < have ? b64[(v >> 6) & 63] : '=';
            *o++ = '=';
        }
        done += have;
        if (have < sizeof chunk || done >= size)
            break;
    }
    close(fd);
    *o = '\0';
    return out;
}

static void work_read(uv_work_t *req) {
    output_op *op = container_of(req, output_op, work);
    if (op->kind == OP_DATA_URL) {
        char *url = data_url_of(op->path, op->mime, &op->error);
        if (url)
            op->result = json_string_adopt(url, strlen(url)); /* taken, not copied: 85 MB once */
    } else {
        json_in_error err; /* our reader: jansson's own takes seconds on a large value */
        op->result = json_in_parse_file(op->path, &err);
        if (!op->result)
            set_error(&op->error, "cannot read oversized output %s: %s", op->path, err.text);
    }
    if (op->delete_after)
        unlink(op->path);
}

/* ---- op bookkeeping ---- */

static void op_free(output_op *op) {
    if (op->span) {
        trace_span_error(op->span, "aborted");
        trace_span_end(op->span);
    }
    if (op->file)
        fclose(op->file);
    json_decref(op->result);
    free(op->error);
    free(op->path);
    free(op->mime);
    prediction_unref(op->p);
    free(op);
}

static void op_unlink(output_op *op) {
    prediction *p = op->p;
    for (output_op **pp = &p->ops; *pp; pp = &(*pp)->next) {
        if (*pp == op) {
            *pp = op->next;
            break;
        }
    }
    p->num_ops--;
}

static void on_retry_closed(uv_handle_t *h) { op_free(h->data); }

static void op_dispose(output_op *op) {
    if (op->retry_open) {
        op->retry_open = 0;
        op->retry.data = op;
        uv_close((uv_handle_t *)&op->retry, on_retry_closed);
        return;
    }
    op_free(op);
}

/* One output settled (value, or error): place it, tell subscribers, maybe finish. */
static void op_settle(output_op *op) {
    prediction *p = op->p;
    prediction_ref(p);
    op_unlink(op);
    if (op->span) {
        trace_span_int(op->span, "coglet.upload.attempts", op->attempt);
        if (op->error)
            trace_span_error(op->span, op->error);
        trace_span_end(op->span);
        op->span = NULL;
    }
    if (op->error) {
        log_event(LOG_ERROR, TARGET, json_pack("{s:s}", "prediction_id", p->id), "%s", op->error);
        if (!p->output_error)
            p->output_error = strdup(op->error);
    } else if (!op->result && !op->aborted) {
        if (!p->output_error)
            p->output_error = strdup("an output could not be produced: out of memory");
    } else if (op->result && !op->aborted) {
        prediction_place_output(p, op->index, op->result);
    }
    op_dispose(op);
    prediction_maybe_done(p);
    prediction_unref(p);
}

static void work_done(uv_work_t *req, int status) {
    output_op *op = container_of(req, output_op, work);
    op->in_pool = 0;
    if (status == UV_ECANCELED || op->aborted) {
        op->aborted = 1;
        op_unlink(op);
        prediction *p = op->p;
        prediction_ref(p);
        op_dispose(op);
        prediction_maybe_done(p);
        prediction_unref(p);
        return;
    }
    op_settle(op);
}

/* ---- uploads ---- */

static void upload_start(output_op *op);

static void on_retry(uv_timer_t *t) { upload_start(t->data); }

/* The output URL: Location, else the final URL, without its query (docs/files.md#outputs-in-the-parent). */
static char *output_url(const client_result *res) {
    const char *u = res->location && *res->location ? res->location : res->effective_url;
    if (!u)
        return strdup("");
    if (!strstr(u, "://"))
        return strdup(u); /* not absolute: verbatim */
    size_t q = strcspn(u, "?#");
    char *out = malloc(strlen(u) + 1);
    if (!out)
        return NULL;
    memcpy(out, u, q);
    out[q] = '\0';
    if (u[q] == '?') {
        const char *frag = strchr(u + q, '#');
        if (frag)
            strcat(out, frag);
    } else if (u[q] == '#') {
        strcat(out, u + q);
    }
    return out;
}

static void on_uploaded(void *ctx, const client_result *res) {
    output_op *op = ctx;
    op->req = NULL;
    int ok = res->code == CURLE_OK && res->status >= 200 && res->status < 300;
    stats_inc(STAT_UPLOADS, ok ? "uploaded" : "failed", NULL);
    if (ok) {
        stats_add(STAT_UPLOAD_BYTES, (double)op->size, NULL, NULL);
        char *url = output_url(res);
        op->result = json_string(url ? url : "");
        free(url);
        if (op->delete_after)
            unlink(op->path);
        op_settle(op);
        return;
    }
    int retryable = res->code != CURLE_OK || res->status >= 500 || res->status == 429;
    char what[300];
    if (res->code != CURLE_OK)
        snprintf(what, sizeof what, "%s", res->error ? res->error : "transport error");
    else
        snprintf(what, sizeof what, "HTTP %ld", res->status);
    if (retryable && op->attempt <= UPLOAD_MAX_RETRIES) {
        double delay = op->core->upload_retry_base * (double)(1 << (op->attempt - 1));
        log_event(LOG_WARN, TARGET, json_pack("{s:s, s:i}", "prediction_id", op->p->id, "attempt", op->attempt),
                  "upload of %s failed (%s); retrying in %.2fs", op->path, what, delay);
        if (!op->retry_open) {
            uv_timer_init(op->core->loop, &op->retry);
            op->retry.data = op;
            op->retry_open = 1;
        }
        uv_timer_start(&op->retry, on_retry, (uint64_t)(delay * 1000), 0);
        return;
    }
    set_error(&op->error, "Failed to upload output %s: %s after %d attempt(s)", op->path, what, op->attempt);
    op_settle(op);
}

static void upload_start(output_op *op) {
    core *c = op->core;
    op->attempt++;
    if (op->file)
        fclose(op->file);
    op->file = fopen(op->path, "rb");
    struct stat st;
    if (!op->file || fstat(fileno(op->file), &st) != 0) {
        set_error(&op->error, "Failed to upload output %s: %s", op->path, strerror(errno));
        op_settle(op);
        return;
    }
    const char *base = strrchr(op->path, '/');
    base = base && base[1] ? base + 1 : (op->path[0] ? op->path : "output");
    const char *prefix = c->cfg.upload_url;
    size_t plen = strlen(prefix);
    char *url = NULL, *ctype = NULL;
    if (asprintf(&url, "%s%s%s", prefix, plen && prefix[plen - 1] == '/' ? "" : "/", base) < 0)
        url = NULL;
    if (asprintf(&ctype, "Content-Type: %s", op->mime) < 0)
        ctype = NULL;
    if (!url || !ctype) {
        free(url);
        free(ctype);
        set_error(&op->error, "Failed to upload output %s: out of memory", op->path);
        op_settle(op);
        return;
    }
    op->size = (long long)st.st_size;
    if (!op->span && (op->span = prediction_child_span(op->p, "upload", SPAN_CLIENT)))
        trace_span_int(op->span, "coglet.upload.bytes", op->size);
    char tp[16 + TRACEPARENT_LEN];
    memcpy(tp, "traceparent: ", 14);
    const char *headers[] = {ctype, "Expect:", NULL, NULL};
    if (prediction_traceparent(op->p, op->span, tp + 13) == 0)
        headers[2] = tp;
    client_request_opts opts = {
        .method = "PUT",
        .url = url,
        .headers = headers,
        .upload = op->file,
        .upload_len = (curl_off_t)st.st_size,
        .timeout_ms = 0, /* no total limit for large files (cog#3172); the stall limit applies */
    };
    op->req = http_client_start(&c->client, &opts, on_uploaded, op);
    free(url);
    free(ctype);
    if (!op->req) {
        set_error(&op->error, "Failed to upload output %s: could not start the request", op->path);
        op_settle(op);
    }
}

/* ---- entry points ---- */

static const char *mime_from_extension(const char *path) {
    static const struct {
        const char *ext, *mime;
    } table[] = {
        {"png", "image/png"},   {"jpg", "image/jpeg"},  {"jpeg", "image/jpeg"},     {"gif", "image/gif"},
        {"webp", "image/webp"}, {"svg", "image/svg+xml"}, {"txt", "text/plain"},    {"json", "application/json"},
        {"wav", "audio/x-wav"}, {"mp3", "audio/mpeg"},  {"mp4", "video/mp4"},       {"pdf", "application/pdf"},
        {"csv", "text/csv"},    {"html", "text/html"},  {"zip", "application/zip"}, {"ogg", "audio/ogg"},
    };
    const char *dot = strrchr(path, '.');
    const char *slash = strrchr(path, '/');
    if (dot && (!slash || dot > slash))
        for (size_t i = 0; i < ARRAY_SIZE(table); i++)
            if (!strcasecmp(dot + 1, table[i].ext))
                return table[i].mime;
    return "application/octet-stream";
}

void outputs_on_file(core *c, prediction *p, json_t *msg) {
    const char *path = json_string_value(json_object_get(msg, "filename"));
    const char *kind = json_string_value(json_object_get(json_object_get(msg, "kind"), "type"));
    const char *mime = json_string_value(json_object_get(msg, "mime_type"));
    if (!path || !kind)
        return;
    output_op *op = calloc(1, sizeof *op);
    if (!op)
        return;
    op->core = c;
    op->p = p;
    prediction_ref(p);
    op->path = strdup(path);
    op->mime = strdup(mime ? mime : mime_from_extension(path));
    op->delete_after = json_is_true(json_object_get(msg, "owned")) || !strcmp(kind, "oversized");
    op->index = prediction_reserve_output(p); /* its place, filled when it settles */
    op->next = p->ops;
    p->ops = op;
    p->num_ops++;
    if (!strcmp(kind, "oversized")) {
        op->kind = OP_OVERSIZED;
    } else if (c->cfg.upload_url) {
        op->kind = OP_UPLOAD;
        if (core_client(c) != 0) {
            set_error(&op->error, "Failed to upload output %s: no HTTP client (libcurl could not be loaded)", op->path);
            op_settle(op);
            return;
        }
        upload_start(op);
        return;
    } else {
        op->kind = OP_DATA_URL;
    }
    op->in_pool = 1;
    if (uv_queue_work(c->loop, &op->work, work_read, work_done) != 0) {
        op->in_pool = 0;
        set_error(&op->error, "cannot read output %s: thread pool unavailable", op->path);
        op_settle(op);
    }
}

void outputs_abort(core *c, prediction *p) {
    output_op *op = p->ops;
    while (op) {
        output_op *next = op->next;
        op->aborted = 1;
        if (op->in_pool) {
            uv_cancel((uv_req_t *)&op->work); /* work_done runs either way */
        } else {
            if (op->req) {
                http_client_abort(&c->client, op->req);
                op->req = NULL;
            }
            if (op->retry_open)
                uv_timer_stop(&op->retry);
            op_unlink(op);
            op_dispose(op);
        }
        op = next;
    }
}
