/* core/outputs.h: outputs the parent produces from files the worker wrote: data URLs,
 * uploads, and values too large for a frame. */
#ifndef COGLET_OUTPUTS_H
#define COGLET_OUTPUTS_H

#include <jansson.h>

typedef struct core core;
typedef struct prediction prediction;
typedef struct output_op output_op;

/* A file_output frame: data URL, upload, or oversized value; keeps its place in outputs. */
void outputs_on_file(core *c, prediction *p, json_t *msg);
/* Stops every pending op of p (their outputs are dropped). */
void outputs_abort(core *c, prediction *p);

#endif
