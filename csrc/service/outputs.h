/* service/outputs.h: file outputs and spilled values, produced in the parent. */
#ifndef COGLET_OUTPUTS_H
#define COGLET_OUTPUTS_H

#include <jansson.h>

typedef struct service service;
typedef struct prediction prediction;
typedef struct output_op output_op;

/* A file_output frame: data URL, upload, or oversized value; keeps its place in outputs. */
void outputs_on_file(service *svc, prediction *p, json_t *msg);
/* Stops every pending op of p (their outputs are dropped). */
void outputs_abort(service *svc, prediction *p);
/* service.c: after an op settles (finishes p when the worker's done is waiting). */
void outputs_maybe_done(service *svc, prediction *p);
/* service.c: an output value arrived at `index` (SSE + webhook). */
void prediction_output_arrived(prediction *p, json_t *value, size_t index);

#endif
