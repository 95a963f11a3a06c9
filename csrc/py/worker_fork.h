/* py/worker_fork.h: whether and how the parent forks its worker (py/worker_fork.c). */
#ifndef COGLET_PY_WORKER_FORK_H
#define COGLET_PY_WORKER_FORK_H

#include <Python.h>

#include "orchestrator/orchestrator.h"

/* With the GIL, before the server starts: the fork hook when the worker may be forked from
 * this process (coglet._forked.decide), else none (it is spawned). The choice is logged at
 * debug level. */
void worker_forker_choose(worker_forker *out);

#endif
