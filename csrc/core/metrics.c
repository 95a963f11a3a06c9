/* core/metrics.c: merging a prediction's metric messages: dot paths address nested objects;
 * replace, increment, append (docs/predictors.md, "Metrics"). */
#include "core/metrics.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/bignum.h"
#include "common/log.h"
#include "common/metric_name.h"

int metrics_merge(json_t *metrics, const char *name, json_t *value, const char *mode) {
    if (!metric_path_valid(name)) {
        log_warn("coglet::service", "ignoring metric with invalid name '%s'", name ? name : "");
        return UV_EINVAL;
    }
    char *path = strdup(name);
    if (!path)
        return UV_ENOMEM;
    json_t *node = metrics;
    char *seg = path;
    char *dot;
    while ((dot = strchr(seg, '.')) != NULL) {
        *dot = '\0';
        json_t *child = json_object_get(node, seg);
        if (!json_is_object(child)) {
            child = json_object();
            json_object_set_new(node, seg, child);
        }
        node = child;
        seg = dot + 1;
    }
    json_t *cur = json_object_get(node, seg);
    if (!mode || !strcmp(mode, "replace")) {
        if (!value || json_is_null(value))
            json_object_del(node, seg);
        else
            json_object_set(node, seg, value);
    } else if (!strcmp(mode, "increment")) {
        if (!cur && bignum_is_number(value))
            cur = json_integer(0), json_object_set_new(node, seg, cur);
        if (bignum_is_number(cur) && bignum_is_number(value)) {
            if (json_is_integer(cur) && json_is_integer(value)) {
                unsigned long long sum = (unsigned long long)json_integer_value(cur) +
                                         (unsigned long long)json_integer_value(value);
                json_object_set_new(node, seg, json_integer((json_int_t)sum)); /* wraps */
            } else if (bignum_is_integer(cur) && bignum_is_integer(value)) {
                json_object_set_new(node, seg, bignum_add(cur, value)); /* beyond 64 bits: exact */
            } else {
                json_object_set_new(node, seg, json_real(bignum_to_double(cur) + bignum_to_double(value)));
            }
        }
    } else if (!strcmp(mode, "append")) {
        if (!cur) {
            json_object_set_new(node, seg, json_pack("[O]", value ? value : json_null()));
        } else if (json_is_array(cur)) {
            json_array_append(cur, value ? value : json_null());
        } else {
            json_object_set_new(node, seg, json_pack("[O,O]", cur, value ? value : json_null()));
        }
    }
    free(path);
    return 0;
}
