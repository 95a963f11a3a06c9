/* ipc/frame.c: 4-byte big-endian length + JSON payload; owns the 8 MiB cap.
 * The cap is checked from the header, before any payload is buffered. */
#include "ipc/frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_in.h"
#include "common/json_out.h"

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
    json_in_error jerr;
    json_t *m = json_in_parse(d->in.data + d->pos + 4, n, &jerr);
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

void frame_header_encode(unsigned char out[4], uint32_t len) {
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
}

/* Encoded with json_out (one pass, no per-character stream layer), keys in insertion order. */
int frame_encode(buf *out, const json_t *msg) {
    size_t start = out->len;
    if (buf_append(out, "\0\0\0\0", 4) != BUF_OK)
        return -1;
    if (json_out_append(out, msg, 0) != BUF_OK) {
        out->len = start;
        return -1;
    }
    size_t n = out->len - start - 4;
    if (n > FRAME_MAX_PAYLOAD) {
        out->len = start;
        return -1;
    }
    frame_header_encode((unsigned char *)out->data + start, (uint32_t)n);
    return 0;
}

char *frame_encode_alloc(const json_t *msg, size_t *len) {
    buf b;
    buf_init(&b, FRAME_MAX_PAYLOAD + 4 + (1u << 20)); /* the cap is checked after encoding */
    if (frame_encode(&b, msg) != 0) {
        buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return buf_steal(&b);
}

char *frame_encode_with_raw(const json_t *msg, const char *key, const char *raw, size_t rawlen, size_t *len) {
    buf b;
    buf_init(&b, FRAME_MAX_PAYLOAD + 4 + (1u << 20));
    if (frame_encode(&b, msg) != 0 || b.len < 6)
        goto failed;
    /* msg's encoding ends with '}': splice ,"key":raw before it */
    b.len--;
    if (b.data[b.len - 1] != '{' && buf_append(&b, ",", 1) != BUF_OK)
        goto failed;
    if (buf_printf(&b, "\"%s\":", key) != BUF_OK || buf_append(&b, raw, rawlen) != BUF_OK ||
        buf_append(&b, "}", 1) != BUF_OK)
        goto failed;
    size_t n = b.len - 4;
    if (n > FRAME_MAX_PAYLOAD)
        goto failed;
    frame_header_encode((unsigned char *)b.data, (uint32_t)n);
    *len = b.len;
    return buf_steal(&b);
failed:
    buf_free(&b);
    return NULL;
}
