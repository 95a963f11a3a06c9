/* orchestrator/output.h: the worker's fd 1/2 output cut into log lines. */
#ifndef COGLET_ORCHESTRATOR_OUTPUT_H
#define COGLET_ORCHESTRATOR_OUTPUT_H

#include "common/buf.h"

#define OUTPUT_LINE_MAX 4096 /* bytes of one log line; a longer run is cut into pieces */

/* Called with each line, NUL-terminated and without its '\n'; valid only during the call. */
typedef void (*output_line_fn)(void *ctx, const char *line);

/* Emits the lines in *pending and consumes them: a '\n' ends a line, a run longer than
 * OUTPUT_LINE_MAX is split into pieces of at most that (no byte lost), cut before a UTF-8
 * character rather than inside one (a piece must stay valid text for the JSON log); a tail
 * without '\n' stays in *pending for more bytes, unless flush_all. */
void output_cut_lines(buf *pending, int flush_all, output_line_fn emit, void *ctx);

#endif
