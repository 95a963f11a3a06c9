/* fuzz/fuzz_frame.c: the frame decoder with the codec: arbitrary bytes, fed in arbitrary
 * splits, must give messages or a clean channel error; never a crash or a leak. */
#include <stdint.h>
#include <stdlib.h>

#include "ipc/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    frame_decoder d;
    frame_decoder_init(&d);
    size_t pos = 0;
    while (pos < size) {
        /* the first byte of each step picks the split size */
        size_t step = 1 + (data[pos] % 64);
        if (step > size - pos)
            step = size - pos;
        if (frame_decoder_feed(&d, (const char *)data + pos, step) != BUF_OK)
            break;
        pos += step;
        json_t *msg;
        char err[256];
        int rc;
        while ((rc = frame_decoder_next(&d, &msg, err, sizeof err)) == 1) {
            size_t len;
            char *again = frame_encode_alloc(msg, &len); /* what decodes must encode */
            free(again);
            json_decref(msg);
        }
        if (rc < 0)
            break;
    }
    frame_decoder_free(&d);
    return 0;
}
