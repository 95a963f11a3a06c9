/* common/buf.h: growable byte buffers with a hard cap set at init (curl's dynbuf).
 * An append past the cap frees nothing the caller still needs and returns BUF_TOO_LARGE. */
#ifndef COGLET_BUF_H
#define COGLET_BUF_H

#include <stdarg.h>
#include <stddef.h>

enum { BUF_OK = 0, BUF_NOMEM = -1, BUF_TOO_LARGE = -2 };

typedef struct buf {
    char *data;   /* always NUL-terminated when non-NULL (the NUL is not in len) */
    size_t len;
    size_t cap;
    size_t limit; /* max len */
} buf;

void buf_init(buf *b, size_t limit);
void buf_free(buf *b);
void buf_reset(buf *b); /* len = 0, keeps memory */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *data, size_t len);
int buf_append_str(buf *b, const char *s);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap);
void buf_consume(buf *b, size_t n); /* drop n bytes from the front */
char *buf_steal(buf *b);            /* hands out data (NUL-terminated), leaves b empty */

#endif
