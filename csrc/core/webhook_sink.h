/* core/webhook_sink.h: a prediction's webhook as a sink of the core; the terminal delivery is
 * a delivery the core waits for at shutdown. */
#ifndef COGLET_WEBHOOK_SINK_H
#define COGLET_WEBHOOK_SINK_H

#include "core/prediction.h"

/* A sink that posts to url the events in `events` (WEBHOOK_* bits); NULL when the client
 * cannot start or memory runs out. traceparent/tracestate may be NULL. */
sink *webhook_sink_new(core *c, const char *url, unsigned events, const char *traceparent, const char *tracestate);

#endif
