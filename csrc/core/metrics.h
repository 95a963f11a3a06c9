/* core/metrics.h: merging worker metric messages into a prediction's metrics. */
#ifndef COGLET_METRICS_H
#define COGLET_METRICS_H

#include <jansson.h>

/* mode: "replace" | "increment" | "append". value is borrowed. Returns 0, UV_ENOMEM, or UV_EINVAL when the
 * name was ignored (empty or with an empty dot segment) or jansson refused a key (not UTF-8; the
 * metrics are left as they were up to that segment, never with a freed value in them). */
int metrics_merge(json_t *metrics, const char *name, json_t *value, const char *mode);

#endif
