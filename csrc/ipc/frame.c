/* ipc/frame.c: 4-byte big-endian length + JSON payload; owns the 8 MiB cap.
 * The cap is checked from the header, before any payload is buffered. */
#include "ipc/frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void frame_decoder_init(frame_decoder *d) {
    buf_init(&d->in, FRAME_MAX_PAYLOAD + 4 + (1u << 20));
    d->pos = 0;
}

void frame_decoder_free(frame_decoder *d) { buf_free(&d->in); }

int frame_decoder_feed(frame_decoder *d, const char *data, size_t len) {
    if (d->pos && d->pos == d->in.len) {
        buf_reset(&d->in);
        d->pos = 0;
    } else if (d->pos > (1u << 16) && d->in.len + len > d->in.cap) {
        buf_consume(&d->in, d->pos);
        d->pos = 0;
    }
    int rc = buf_append(&d->in, data, len);
    if (rc == BUF_TOO_LARGE && d->pos) {
        buf_consume(&d->in, d->pos);
        d->pos = 0;
        rc = buf_append(&d->in, data, len);
    }
    return rc;
}

int frame_decoder_next(frame_decoder *d, json_t **msg, char *err, size_t errlen) {
    *msg = NULL;
    size_t avail = d->in.len - d->pos;
    if (avail < 4)
        return 0;
    const unsigned char *h = (const unsigned char *)d->in.data + d->pos;
    size_t n = ((size_t)h[0] << 24) | ((size_t)h[1] << 16) | ((size_t)h[2] << 8) | h[3];
    if (n > FRAME_MAX_PAYLOAD) {
        snprintf(err, errlen, "frame of %zu bytes exceeds the %zu byte limit", n, FRAME_MAX_PAYLOAD);
        return -1;
    }
    if (avail - 4 < n)
        return 0;
    json_error_t jerr;
    json_t *m = json_loadb(d->in.data + d->pos + 4, n, JSON_ALLOW_NUL, &jerr);
    d->pos += 4 + n;
    if (!m) {
        snprintf(err, errlen, "invalid JSON frame: %s", jerr.text);
        return -1;
    }
    if (!json_is_object(m) || !json_is_string(json_object_get(m, "type"))) {
        json_decref(m);
        snprintf(err, errlen, "frame is not a tagged message object");
        return -1;
    }
    *msg = m;
    return 1;
}

static const size_t json_flags = JSON_COMPACT;

int frame_encode(buf *out, const json_t *msg) {
    size_t n = json_dumpb(msg, NULL, 0, json_flags);
    if (n == 0 || n > FRAME_MAX_PAYLOAD)
        return -1;
    if (buf_reserve(out, n + 4) != BUF_OK)
        return -1;
    unsigned char *h = (unsigned char *)out->data + out->len;
    h[0] = (unsigned char)(n >> 24);
    h[1] = (unsigned char)(n >> 16);
    h[2] = (unsigned char)(n >> 8);
    h[3] = (unsigned char)n;
    if (json_dumpb(msg, out->data + out->len + 4, n, json_flags) != n)
        return -1;
    out->len += n + 4;
    out->data[out->len] = '\0';
    return 0;
}

char *frame_encode_alloc(const json_t *msg, size_t *len) {
    buf b;
    buf_init(&b, FRAME_MAX_PAYLOAD + 4);
    if (frame_encode(&b, msg) != 0) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return buf_steal(&b);
}
