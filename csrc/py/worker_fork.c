/* py/worker_fork.c: the worker forked from the parent instead of spawned, when that is safe
 * (coglet/_forked.py decides and prepares the child; docs/architecture.md#how-the-worker-starts).
 * The fork happens on the loop thread before the loop runs, with the GIL, through
 * PyOS_BeforeFork / PyOS_AfterFork_*, so the interpreter's locks and at-fork hooks (the
 * random module reseeds, threading forgets the parent's threads) are as after os.fork(). */
#include "py/worker_fork.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "orchestrator/fork.h"

#define TARGET "coglet::orchestrator"

static void flush_std_streams(void) {
    static const char *const names[] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *stream = PySys_GetObject(names[i]); /* borrowed */
        PyObject *r = stream && stream != Py_None ? PyObject_CallMethod(stream, "flush", NULL) : NULL;
        Py_XDECREF(r);
    }
    PyErr_Clear();
    fflush(NULL); /* nothing buffered is written twice */
}

/* The orchestrator's fork hook. In the child: the fds laid out, then coglet._forked.run(),
 * which never returns. */
static int fork_worker(void *arg, const int *plan, int nplan) {
    (void)arg;
    PyGILState_STATE g = PyGILState_Ensure();
    flush_std_streams();
    PyOS_BeforeFork();
    pid_t pid = fork();
    if (pid != 0) {
        int e = errno;
        PyOS_AfterFork_Parent();
        PyGILState_Release(g);
        return pid < 0 ? -e : (int)pid;
    }
    PyOS_AfterFork_Child();
    if (worker_child_fds(plan, nplan) != 0)
        _exit(1);
    PyObject *m = PyImport_ImportModule("coglet._forked");
    PyObject *r = m ? PyObject_CallMethod(m, "run", NULL) : NULL;
    if (!r)
        PyErr_Print();
    _exit(1);
}

void worker_forker_choose(worker_forker *out) {
    out->fork = NULL;
    out->arg = NULL;
    /* imported here, in the parent: the child does not pay for it */
    PyObject *m = PyImport_ImportModule("coglet._forked");
    PyObject *why = m ? PyObject_CallMethod(m, "decide", NULL) : NULL;
    Py_XDECREF(m);
    const char *reason = why && PyUnicode_Check(why) ? PyUnicode_AsUTF8AndSize(why, NULL) : NULL;
    char buf[300];
    if (!reason) {
        PyErr_Clear();
        reason = "cannot tell whether forking is safe";
    } else if (!*reason) {
        int fd = worker_pidfd_open((int)getpid());
        if (fd >= 0) {
            close(fd);
            out->fork = fork_worker;
        } else {
            snprintf(buf, sizeof buf, "no pidfd_open: %s", strerror(-fd));
            reason = buf;
        }
    }
    if (out->fork)
        log_debug(TARGET, "worker start: fork");
    else
        log_debug(TARGET, "worker start: spawn (%s)", reason);
    Py_XDECREF(why);
}
