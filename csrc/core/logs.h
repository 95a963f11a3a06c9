/* core/logs.h: a prediction's `logs`, bounded: the first LOGS_HEAD_MAX bytes and the last
 * LOGS_TAIL_MAX bytes are kept, with one line in between saying how much was dropped
 * (docs/operations.md, "Failure modes"). Plain data on the loop; no I/O. */
#ifndef COGLET_LOGS_H
#define COGLET_LOGS_H

#include <stddef.h>

#define LOGS_HEAD_MAX ((size_t)1 << 20)
#define LOGS_TAIL_MAX ((size_t)7 << 20)

typedef struct pred_logs {
    char *head; /* the first bytes, up to LOGS_HEAD_MAX, cut between UTF-8 characters */
    size_t head_len, head_cap;
    int head_full; /* what comes now goes to the ring */
    char *ring;    /* the last LOGS_TAIL_MAX bytes after the head (allocated when needed) */
    size_t ring_start, ring_len;
    size_t dropped; /* bytes that fell out of the ring */
    size_t head_max, tail_max;
} pred_logs;

void pred_logs_init(pred_logs *l);
/* Small limits, for the tests of this module. */
void pred_logs_init_limits(pred_logs *l, size_t head_max, size_t tail_max);
void pred_logs_free(pred_logs *l);
/* Appends text (valid UTF-8). 0, or UV_ENOMEM (nothing appended). */
int pred_logs_append(pred_logs *l, const char *text, size_t len);
/* Bytes dropped so far (0: the text is everything appended). */
size_t pred_logs_dropped(const pred_logs *l);
/* The text: the head, then, when something was dropped, the line
 * `[**** LOGS TRUNCATED: {n} BYTES DROPPED; THE FIRST 1 MiB AND THE LAST 7 MiB ARE KEPT ****]`
 * on a line of its own, then the tail from its first whole character. A new NUL-terminated
 * string (*len bytes), or NULL out of memory. */
char *pred_logs_text(const pred_logs *l, size_t *len);

#endif
