/* orchestrator/fork.h: helpers for a worker started by fork() instead of exec. */
#ifndef COGLET_ORCHESTRATOR_FORK_H
#define COGLET_ORCHESTRATOR_FORK_H

/* In the forked child, before anything else: fd i becomes a copy of plan[i] for i < nplan,
 * and every other descriptor (the parent's listener, its loop, its ends of the socketpairs)
 * is closed. 0 or a negative errno. */
int worker_child_fds(const int *plan, int nplan);

/* pidfd_open(2) with FD_CLOEXEC: readable once the process has exited. The fd, or a
 * negative errno (-ENOSYS before Linux 5.3). */
int worker_pidfd_open(int pid);

#endif
