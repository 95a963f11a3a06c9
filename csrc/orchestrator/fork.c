/* orchestrator/fork.c: what a worker started by fork() needs from the plain-C side: its fds
 * laid out as a spawned worker gets them (0 /dev/null, 1 and 2 the output pipes, 3 control,
 * 4 + i slot i) with every other descriptor of the parent closed, and a pidfd through which
 * the loop learns of its exit (docs/architecture.md#how-the-worker-starts). */
#include "orchestrator/fork.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

int worker_pidfd_open(int pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
        return -errno;
    if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0) {
        int e = errno;
        close((int)fd);
        return -e;
    }
    return (int)fd;
}

/* Closes every descriptor from `first` up: close_range(2), else one by one. */
static void close_from(int first) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, (unsigned)first, ~0U, 0) == 0)
        return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        int dfd = dirfd(d);
        int *fds = NULL;
        size_t n = 0, cap = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            int fd = atoi(e->d_name);
            if (fd < first || fd == dfd || e->d_name[0] == '.')
                continue;
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 64;
                int *grown = realloc(fds, ncap * sizeof *fds);
                if (!grown)
                    break;
                fds = grown;
                cap = ncap;
            }
            fds[n++] = fd;
        }
        closedir(d);
        for (size_t i = 0; i < n; i++)
            close(fds[i]);
        free(fds);
        return;
    }
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = first; fd < (max > 0 ? max : 65536); fd++)
        close((int)fd);
}

int worker_child_fds(const int *plan, int nplan) {
    /* first every source out of the way (a source may be another target's number), then
     * each onto its place: dup2 leaves the new descriptor without FD_CLOEXEC */
    int *moved = malloc((size_t)nplan * sizeof *moved);
    if (!moved)
        return -ENOMEM;
    int rc = 0;
    for (int i = 0; i < nplan; i++) {
        moved[i] = fcntl(plan[i], F_DUPFD_CLOEXEC, nplan);
        if (moved[i] < 0 && rc == 0)
            rc = -errno;
    }
    for (int i = 0; rc == 0 && i < nplan; i++)
        if (dup2(moved[i], i) < 0)
            rc = -errno;
    free(moved);
    if (rc == 0)
        close_from(nplan);
    return rc;
}
