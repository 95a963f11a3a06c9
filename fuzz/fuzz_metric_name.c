/* fuzz/fuzz_metric_name.c: the metric name rules (common/metric_name.c) and the parent's
 * dot-path merge (core/metrics.c). The first byte picks the reserved rules and the merge mode;
 * the rest is the name. A name the recorder accepts must be a path the merge accepts, and the
 * value must land at that path; the message of a refused name must be complete UTF-8 when the
 * name is. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/metric_name.h"
#include "core/metrics.h"

#define MUST(cond)                                                                                                     \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            __builtin_trap();                                                                                          \
    } while (0)

/* valid UTF-8 without NUL, as jansson checks keys: no overlong forms, no surrogates, at most
 * U+10FFFF */
static int valid_utf8(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        unsigned c = (unsigned char)s[i];
        size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
        if (!c || !n || n > len - i)
            return 0;
        unsigned cp = n == 1 ? c : c & (0x7F >> n);
        for (size_t k = 1; k < n; k++) {
            unsigned char b = (unsigned char)s[i + k];
            if ((b & 0xC0) != 0x80)
                return 0;
            cp = cp << 6 | (b & 0x3F);
        }
        static const unsigned min[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += n;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    int reserved = data[0] & 1;
    static const char *const modes[] = {"replace", "increment", "append", NULL};
    const char *mode = modes[(data[0] >> 1) & 3];
    const char *name = (const char *)data + 1;
    size_t len = size - 1;
    metric_name_error err;
    int rc = metric_name_check(name, len, reserved, &err);
    MUST(rc == err.code);
    char msg[256];
    metric_name_message(&err, msg, sizeof msg);
    MUST(strlen(msg) < sizeof msg - 1); /* never cut */
    if (rc && valid_utf8(name, len))
        MUST(valid_utf8(msg, strlen(msg)));
    char *cname = malloc(len + 1);
    memcpy(cname, name, len);
    cname[len] = '\0';
    int path_ok = metric_path_valid(cname);
    if (rc == METRIC_NAME_OK)
        MUST(path_ok && strlen(cname) == len);
    json_t *metrics = json_object();
    json_t *value = json_integer(len);
    int merged = metrics_merge(metrics, cname, value, mode);
    /* a path refused, or a key jansson refuses (not UTF-8): EINVAL */
    MUST(merged == (path_ok && valid_utf8(cname, strlen(cname)) ? 0 : UV_EINVAL));
    metrics_merge(metrics, cname, value, mode);
    if (rc == METRIC_NAME_OK) {
        /* walk the path: every segment an object, the last one holding what was merged */
        json_t *node = metrics;
        char *seg = cname, *dot;
        while ((dot = strchr(seg, '.'))) {
            *dot = '\0';
            node = json_object_get(node, seg);
            MUST(json_is_object(node));
            seg = dot + 1;
        }
        json_t *leaf = json_object_get(node, seg);
        MUST(leaf != NULL);
    }
    json_decref(value);
    json_decref(metrics);
    free(cname);
    return 0;
}
