/* ipc/frame.h: 4-byte big-endian length + compact JSON payload; owns the 8 MiB cap. */
#ifndef COGLET_FRAME_H
#define COGLET_FRAME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

#define FRAME_MAX_PAYLOAD ((size_t)8 << 20)

typedef struct frame_decoder {
    buf in;
    size_t pos; /* bytes of `in` already decoded */
} frame_decoder;

void frame_decoder_init(frame_decoder *d);
void frame_decoder_free(frame_decoder *d);
/* Appends raw bytes. Returns BUF_OK or a buf error. */
int frame_decoder_feed(frame_decoder *d, const char *data, size_t len);
/* 1: *msg set (new reference); 0: need more bytes; -1: channel broken (err set). */
int frame_decoder_next(frame_decoder *d, json_t **msg, char *err, size_t errlen);

/* The 4-byte big-endian length every frame starts with; every writer of frames uses it. */
void frame_header_encode(unsigned char out[4], uint32_t len);

/* Appends one frame for msg to out. -1 when the payload is over the cap or unencodable. */
int frame_encode(buf *out, const json_t *msg);
/* Serialises msg into a new malloc'd frame (header included). NULL on failure (also when
 * the payload is over the cap). */
char *frame_encode_alloc(const json_t *msg, size_t *len);

/* msg's frame with one more member, "key": raw (already-encoded JSON text), spliced in
 * without re-encoding it. NULL when over the cap or on failure. */
char *frame_encode_with_raw(const json_t *msg, const char *key, const char *raw, size_t rawlen, size_t *len);

#endif
