/* core/logs.c: a prediction's `logs`, bounded to its first and its last bytes. The Rust
 * coglet keeps everything, so a predictor printing for hours grows the parent (and every
 * webhook and response body) without end; the start (what ran) and the end (how it ended)
 * are what a reader of the logs needs. */
#include "core/logs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/util.h"

static int is_continuation(char c) { return ((unsigned char)c & 0xC0) == 0x80; }

void pred_logs_init_limits(pred_logs *l, size_t head_max, size_t tail_max) {
    memset(l, 0, sizeof *l);
    l->head_max = head_max;
    l->tail_max = tail_max;
}

void pred_logs_init(pred_logs *l) { pred_logs_init_limits(l, LOGS_HEAD_MAX, LOGS_TAIL_MAX); }

void pred_logs_free(pred_logs *l) {
    free(l->head);
    free(l->ring);
    l->head = l->ring = NULL;
    l->head_len = l->head_cap = l->ring_len = l->ring_start = 0;
}

static int head_append(pred_logs *l, const char *text, size_t len) {
    if (l->head_len + len > l->head_cap) {
        size_t cap = l->head_cap ? l->head_cap : 256;
        while (cap < l->head_len + len)
            cap *= 2;
        if (cap > l->head_max)
            cap = l->head_max;
        char *grown = realloc(l->head, cap);
        if (!grown)
            return UV_ENOMEM;
        l->head = grown;
        l->head_cap = cap;
    }
    memcpy(l->head + l->head_len, text, len);
    l->head_len += len;
    return 0;
}

/* The last tail_max bytes stay; older ones are counted in `dropped`. */
static void ring_append(pred_logs *l, const char *text, size_t len) {
    size_t max = l->tail_max;
    if (len >= max) {
        l->dropped += l->ring_len + (len - max);
        memcpy(l->ring, text + (len - max), max);
        l->ring_start = 0;
        l->ring_len = max;
        return;
    }
    if (l->ring_len + len > max) {
        size_t over = l->ring_len + len - max;
        l->ring_start = (l->ring_start + over) % max;
        l->ring_len -= over;
        l->dropped += over;
    }
    size_t at = (l->ring_start + l->ring_len) % max;
    size_t first = len < max - at ? len : max - at;
    memcpy(l->ring + at, text, first);
    memcpy(l->ring, text + first, len - first);
    l->ring_len += len;
}

int pred_logs_append(pred_logs *l, const char *text, size_t len) {
    if (!l->head_full) {
        if (l->head_len + len <= l->head_max)
            return head_append(l, text, len);
        size_t cut = utf8_cut(text, l->head_max - l->head_len); /* < len: text[cut] exists */
        if (!l->ring && !(l->ring = malloc(l->tail_max ? l->tail_max : 1)))
            return UV_ENOMEM;
        if (cut && head_append(l, text, cut) != 0)
            return UV_ENOMEM;
        l->head_full = 1;
        text += cut;
        len -= cut;
    }
    if (l->tail_max == 0) {
        l->dropped += len;
        return 0;
    }
    ring_append(l, text, len);
    return 0;
}

size_t pred_logs_dropped(const pred_logs *l) { return l->dropped; }

static void size_words(size_t n, char *out, size_t outlen) {
    if (n && n % ((size_t)1 << 20) == 0)
        snprintf(out, outlen, "%zu MiB", n >> 20);
    else
        snprintf(out, outlen, "%zu BYTES", n);
}

char *pred_logs_text(const pred_logs *l, size_t *len) {
    /* the ring's oldest bytes may be the end of a character whose start was dropped */
    size_t skip = 0;
    while (l->dropped && skip < l->ring_len && is_continuation(l->ring[(l->ring_start + skip) % l->tail_max]))
        skip++;
    char marker[200] = "";
    if (l->dropped) {
        char head[32], tail[32];
        size_words(l->head_max, head, sizeof head);
        size_words(l->tail_max, tail, sizeof tail);
        snprintf(marker, sizeof marker, "%s[**** LOGS TRUNCATED: %zu BYTES DROPPED; THE FIRST %s AND THE LAST %s ARE KEPT ****]\n",
                 l->head_len && l->head[l->head_len - 1] != '\n' ? "\n" : "", l->dropped + skip, head, tail);
    }
    size_t mlen = strlen(marker), tail_len = l->ring_len - skip;
    char *out = malloc(l->head_len + mlen + tail_len + 1);
    if (!out)
        return NULL;
    if (l->head_len)
        memcpy(out, l->head, l->head_len);
    memcpy(out + l->head_len, marker, mlen);
    char *t = out + l->head_len + mlen;
    if (tail_len) {
        size_t from = (l->ring_start + skip) % l->tail_max;
        size_t first = tail_len < l->tail_max - from ? tail_len : l->tail_max - from;
        memcpy(t, l->ring + from, first);
        memcpy(t + first, l->ring, tail_len - first);
    }
    *len = l->head_len + mlen + tail_len;
    out[*len] = '\0';
    return out;
}
