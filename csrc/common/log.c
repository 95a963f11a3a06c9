/* common/log.c: one line per event on stderr, JSON (default) or console; owns the
 * setup-log accumulator. Safe to call from any thread. */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/util.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int log_ready;
static log_level min_level = LOG_INFO;
static int console_format;
static int capturing;
static buf capture;

log_level log_level_parse(const char *s, log_level fallback) {
    if (!s)
        return fallback;
    if (!strcasecmp(s, "trace"))
        return LOG_TRACE;
    if (!strcasecmp(s, "debug"))
        return LOG_DEBUG;
    if (!strcasecmp(s, "info"))
        return LOG_INFO;
    if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning"))
        return LOG_WARN;
    if (!strcasecmp(s, "error"))
        return LOG_ERROR;
    return fallback;
}

const char *log_level_name(log_level level) {
    static const char *names[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR"};
    return level <= LOG_ERROR ? names[level] : "INFO";
}

void log_init(void) {
    pthread_mutex_lock(&log_lock);
    if (!log_ready) {
        const char *rust = getenv("RUST_LOG");
        if (rust && *rust) {
            /* Only the plain-level form is honoured ("debug", "coglet=debug"). */
            const char *eq = strrchr(rust, '=');
            min_level = log_level_parse(eq ? eq + 1 : rust, LOG_INFO);
        } else {
            min_level = log_level_parse(getenv("COG_LOG_LEVEL"), LOG_INFO);
        }
        const char *fmt = getenv("LOG_FORMAT");
        console_format = fmt && !strcmp(fmt, "console");
        buf_init(&capture, 16u << 20);
        log_ready = 1;
    }
    pthread_mutex_unlock(&log_lock);
}

int log_enabled(log_level level, const char *target) {
    if (!log_ready)
        log_init();
    if (level >= min_level)
        return 1;
    /* setup and user output are always shown at info */
    return level >= LOG_INFO && target &&
           (!strcmp(target, "coglet::setup") || !strcmp(target, "coglet::user"));
}

static void write_all(int fd, const char *p, size_t len) {
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            return; /* stderr gone: nothing better to do with a log line */
        p += n;
        len -= (size_t)n;
    }
}

void log_event_str(log_level level, const char *target, json_t *fields, const char *message) {
    if (!log_enabled(level, target)) {
        json_decref(fields);
        return;
    }
    char ts[40];
    format_log_timestamp(now_realtime_ns(), ts, sizeof ts);
    buf line;
    buf_init(&line, (size_t)64 << 20);
    if (console_format) {
        buf_printf(&line, "%s %5s %s: %s", ts, log_level_name(level), target, message);
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value) {
            char *v = json_is_string(value) ? NULL : json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
            buf_printf(&line, " %s=%s", key, v ? v : json_string_value(value));
            free(v);
        }
        buf_append(&line, "\n", 1);
    } else {
        json_t *all = json_object();
        json_t *f = json_object();
        json_object_set_new(f, "message", json_string(message));
        if (fields)
            json_object_update(f, fields);
        json_object_set_new(all, "timestamp", json_string(ts));
        json_object_set_new(all, "level", json_string(log_level_name(level)));
        json_object_set_new(all, "fields", f);
        json_object_set_new(all, "target", json_string(target));
        char *s = json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER);
        if (s) {
            buf_append_str(&line, s);
            buf_append(&line, "\n", 1);
            free(s);
        }
        json_decref(all);
    }
    pthread_mutex_lock(&log_lock);
    if (line.data)
        write_all(2, line.data, line.len);
    if (capturing) {
        buf_printf(&capture, "[%s] %s", target, message);
        size_t mlen = strlen(message);
        if (!mlen || message[mlen - 1] != '\n')
            buf_append(&capture, "\n", 1);
    }
    pthread_mutex_unlock(&log_lock);
    buf_free(&line);
    json_decref(fields);
}

void log_event(log_level level, const char *target, json_t *fields, const char *fmt, ...) {
    if (!log_enabled(level, target)) {
        json_decref(fields);
        return;
    }
    buf msg;
    buf_init(&msg, (size_t)64 << 20);
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    log_event_str(level, target, fields, msg.data ? msg.data : "");
    buf_free(&msg);
}

void log_capture_begin(void) {
    if (!log_ready)
        log_init();
    pthread_mutex_lock(&log_lock);
    buf_reset(&capture);
    capturing = 1;
    pthread_mutex_unlock(&log_lock);
}

char *log_capture_take(void) {
    pthread_mutex_lock(&log_lock);
    capturing = 0;
    char *s = buf_steal(&capture);
    pthread_mutex_unlock(&log_lock);
    return s;
}
