/* core/metrics.c: merging a prediction's metric messages: dot paths address nested objects;
 * replace, increment, append (docs/predictors.md, "Metrics"). */
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/bignum.h"
#include "common/log.h"
#include "common/metric_name.h"

/* Sets key in obj to v (stolen). 0, or UV_EINVAL when jansson refuses the key (not UTF-8:
 * never from a frame, whose reader checked it) or UV_ENOMEM; v is released either way. */
static int set_new(json_t *obj, const char *key, json_t *v) {
    if (!v)
        return UV_ENOMEM;
    return json_object_set_new(obj, key, v) == 0 ? 0 : UV_EINVAL;
}

static int increment(json_t *node, const char *seg, json_t *cur, json_t *value) {
    if (!bignum_is_number(value))
        return 0; /* a non-numeric operand changes nothing */
    if (!cur) {
        int rc = set_new(node, seg, cur = json_integer(0));
        if (rc)
            return rc;
    }
    if (!bignum_is_number(cur))
        return 0;
    if (json_is_integer(cur) && json_is_integer(value)) {
        unsigned long long sum =
            (unsigned long long)json_integer_value(cur) + (unsigned long long)json_integer_value(value);
        return set_new(node, seg, json_integer((json_int_t)sum)); /* wraps */
    }
    if (bignum_is_integer(cur) && bignum_is_integer(value))
        return set_new(node, seg, bignum_add(cur, value)); /* beyond 64 bits: exact */
    return set_new(node, seg, json_real(bignum_to_double(cur) + bignum_to_double(value)));
}

int metrics_merge(json_t *metrics, const char *name, json_t *value, const char *mode) {
    if (!metric_path_valid(name)) {
        log_warn("coglet::service", "ignoring metric with invalid name '%s'", name ? name : "");
        return UV_EINVAL;
    }
    char *path = strdup(name);
    if (!path)
        return UV_ENOMEM;
    int rc = 0;
    json_t *node = metrics;
    char *seg = path;
    char *dot;
    while ((dot = strchr(seg, '.')) != NULL) {
        *dot = '\0';
        json_t *child = json_object_get(node, seg);
        if (!json_is_object(child) && (rc = set_new(node, seg, child = json_object())))
            goto done;
        node = child;
        seg = dot + 1;
    }
    json_t *cur = json_object_get(node, seg);
    if (!mode || !strcmp(mode, "replace")) {
        if (!value || json_is_null(value))
            json_object_del(node, seg);
        else
            rc = json_object_set(node, seg, value) == 0 ? 0 : UV_EINVAL;
    } else if (!strcmp(mode, "increment")) {
        rc = increment(node, seg, cur, value);
    } else if (!strcmp(mode, "append")) {
        json_t *v = value ? value : json_null();
        if (json_is_array(cur))
            rc = json_array_append(cur, v) == 0 ? 0 : UV_ENOMEM;
        else
            rc = set_new(node, seg, cur ? json_pack("[O,O]", cur, v) : json_pack("[O]", v));
    }
done:
    free(path);
    return rc;
}
