/* orchestrator/output.c: the worker's fd 1/2 output cut into log lines (output.h). */
#include "orchestrator/output.h"

/* data[len] is borrowed as the terminator and put back. */
static void emit_piece(output_line_fn emit, void *ctx, char *data, size_t len) {
    char saved = data[len];
    data[len] = '\0';
    emit(ctx, data);
    data[len] = saved;
}

void output_cut_lines(buf *pending, int flush_all, output_line_fn emit, void *ctx) {
    size_t start = 0;
    for (size_t i = 0; i < pending->len; i++) {
        if (pending->data[i] == '\n') {
            emit_piece(emit, ctx, pending->data + start, i - start);
            start = i + 1;
        } else if (i - start == OUTPUT_LINE_MAX) {
            size_t cut = i; /* a character starts at most 3 bytes back; else it is not UTF-8 */
            while (cut > i - 3 && ((unsigned char)pending->data[cut] & 0xC0) == 0x80)
                cut--;
            if (((unsigned char)pending->data[cut] & 0xC0) == 0x80)
                cut = i;
            emit_piece(emit, ctx, pending->data + start, cut - start);
            start = cut;
        }
    }
    if (flush_all && pending->len > start) {
        emit_piece(emit, ctx, pending->data + start, pending->len - start);
        start = pending->len;
    }
    buf_consume(pending, start);
}
