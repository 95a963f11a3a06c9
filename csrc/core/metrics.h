/* service/metrics.h: merging worker metric messages into a prediction's metrics (SPEC 3.15). */
#ifndef COGLET_METRICS_H
#define COGLET_METRICS_H

#include <jansson.h>

/* mode: "replace" | "increment" | "append". value is borrowed. Returns 0, or -1 when the
 * name was ignored (empty or with an empty dot segment). */
int metrics_merge(json_t *metrics, const char *name, json_t *value, const char *mode);

#endif
