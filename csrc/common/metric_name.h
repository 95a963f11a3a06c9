/* common/metric_name.h: the rules for metric names, in plain C: the worker's recorder checks
 * a name with them before it sends a metric (py/sdk_scope.c), the parent's merge checks the
 * dot path it receives (core/metrics.c), and fuzz/ drives both without Python. Rules and
 * messages: docs/python-api.md#metricrecorder. */
#ifndef COGLET_METRIC_NAME_H
#define COGLET_METRIC_NAME_H

#include <stddef.h>

#define METRIC_NAME_MAX_BYTES 128
#define METRIC_NAME_MAX_SEGMENTS 4

enum {
    METRIC_NAME_OK = 0,
    METRIC_NAME_PREDICT_TIME,     /* reserved: 'predict_time' */
    METRIC_NAME_COG_PREFIX,       /* reserved: 'cog.' */
    METRIC_NAME_EMPTY,
    METRIC_NAME_TOO_LONG,         /* more than METRIC_NAME_MAX_BYTES bytes (count: the bytes) */
    METRIC_NAME_TOO_MANY_SEGMENTS, /* count: the segments */
    METRIC_NAME_LEADING_DOT,
    METRIC_NAME_TRAILING_DOT,
    METRIC_NAME_EMPTY_SEGMENT,    /* consecutive dots */
    METRIC_NAME_BAD_START,        /* a segment not starting with an ASCII letter */
    METRIC_NAME_DOUBLE_UNDERSCORE,
    METRIC_NAME_BAD_CHAR,         /* ch: the first character not [A-Za-z0-9_] */
    METRIC_NAME_BAD_END,          /* a segment ending with '_' */
};

/* What is wrong with a name: the first broken rule, in the order the Rust coglet checks them. */
typedef struct metric_name_error {
    int code;          /* METRIC_NAME_* */
    size_t count;      /* TOO_LONG, TOO_MANY_SEGMENTS */
    const char *seg;   /* the segment at fault (into the name) */
    size_t seg_len;
    const char *ch;    /* BAD_CHAR: the character (into the name; one UTF-8 sequence, cut at the end) */
    size_t ch_len;
} metric_name_error;

/* Checks len bytes of name (UTF-8). `reserved` adds the reserved-name rules (recording checks
 * them, deleting does not). METRIC_NAME_OK, or the code also put in *err. */
int metric_name_check(const char *name, size_t len, int reserved, metric_name_error *err);

/* The ValueError text for err, e.g. "metric name segment 'a-b' contains invalid character
 * '-'", NUL-terminated in out (256 bytes always hold it: a name past 128 bytes fails first). */
void metric_name_message(const metric_name_error *err, char *out, size_t outlen);

/* The parent's rule for the dot path of a metric it merges: not empty, no empty segment. */
int metric_path_valid(const char *name);

#endif
