/* orchestrator/process.h: what orchestrator.c (the frame protocol) and process.c (the
 * worker's process) call of each other; nothing outside orchestrator/ includes it. */
#ifndef COGLET_ORCHESTRATOR_PROCESS_H
#define COGLET_ORCHESTRATOR_PROCESS_H

#include "orchestrator/orchestrator.h"

/* process.c */
/* Starts the worker, forked when cfg.forker can and spawned otherwise: child_fds[0..n]
 * become its fds 3, 4, ..., its fds 1 and 2 pipes read into log lines from now on. 0 or a
 * libuv error. */
int orch__process_start(orchestrator *orch, const int *child_fds, int n);
/* "Worker crashed: ..." with the exit status once it is known. */
void orch__describe_exit(const orchestrator *orch, char *out, size_t outlen);
/* Closes the process handle or the pidfd (with its fd); again is a no-op. */
void orch__process_close(orchestrator *orch);

/* orchestrator.c */
void orch__close_handle(orchestrator *orch, uv_handle_t *handle, int *open_flag);
/* A 64 KiB read buffer for channels whose bytes are consumed within the read callback. */
void orch__scratch_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *out);
/* The worker's exit is seen (exit_seen, exit_status, term_signal are set). */
void orch__worker_exited(orchestrator *orch);

#endif
