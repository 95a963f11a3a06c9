/* worker/send.c: frames from the worker to the parent: blocking write(2) under one mutex per
 * socket, with the GIL released around the lock and the write (a slow reader must not stall
 * other Python threads). */
#include <errno.h>
#include <stdlib.h>

#include "common/fs.h"
#include "worker/worker.h"

int worker_send_raw(int fd, pthread_mutex_t *lock, char *frame, size_t len, int have_gil) {
    PyThreadState *ts = have_gil ? PyEval_SaveThread() : NULL;
    pthread_mutex_lock(lock);
    int rc = fs_write_all(fd, frame, len);
    pthread_mutex_unlock(lock);
    if (ts)
        PyEval_RestoreThread(ts);
    free(frame);
    return rc;
}

/* -EMSGSIZE when msg cannot be encoded within the frame cap (or at all). */
int worker_send_frame(int fd, pthread_mutex_t *lock, const json_t *msg, int have_gil) {
    if (!msg)
        return -ENOMEM; /* a json_pack that failed */
    size_t len;
    char *frame = frame_encode_alloc(msg, &len);
    if (!frame)
        return -EMSGSIZE;
    return worker_send_raw(fd, lock, frame, len, have_gil);
}

int worker_send_control(worker *w, json_t *msg, int have_gil) {
    int rc = worker_send_frame(w->control_fd, &w->control_lock, msg, have_gil);
    json_decref(msg);
    return rc;
}

int worker_send_slot(wslot *s, json_t *msg, int have_gil) {
    int rc = worker_send_frame(s->fd, &s->write_lock, msg, have_gil);
    json_decref(msg);
    return rc;
}

void worker_log(worker *w, const char *level, const char *message, int have_gil) {
    worker_send_control(w,
                        json_pack("{s:s, s:s, s:s, s:s}", "type", "worker_log", "target", "coglet::worker", "level",
                                  level, "message", message),
                        have_gil);
}

/* The parent fails what runs there and never sends to the slot again (docs/architecture.md,
 * Transport: a bad frame breaks the channel). */
void worker_poison_slot(worker *w, wslot *s, const char *error, int have_gil) {
    s->poisoned = 1;
    worker_send_control(w, json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", s->id, "error", error), have_gil);
}
