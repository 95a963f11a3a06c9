/* worker/send.c: frames from the worker to the parent: blocking write(2) under one mutex per
 * socket, with the GIL released around the lock and the write (a slow reader must not stall
 * other Python threads). */
#include <errno.h>
#include <stdlib.h>

#include "common/fs.h"
#include "worker/worker.h"

#define HOLD_MAX ((size_t)256 << 10)

int worker_send_slot_raw(wslot *s, char *frame, size_t len, int have_gil) {
    PyThreadState *ts = have_gil ? PyEval_SaveThread() : NULL;
    pthread_mutex_lock(&s->write_lock);
    int rc = 0;
    if (s->batch.len && len <= HOLD_MAX && buf_append(&s->batch, frame, len) == BUF_OK) {
        len = 0; /* rides in the batch: one write */
    }
    if (s->batch.len) {
        rc = fs_write_all(s->fd, s->batch.data, s->batch.len);
        buf_reset(&s->batch);
    }
    if (rc == 0 && len)
        rc = fs_write_all(s->fd, frame, len);
    pthread_mutex_unlock(&s->write_lock);
    if (ts)
        PyEval_RestoreThread(ts);
    free(frame);
    return rc;
}

int worker_hold_slot_raw(wslot *s, char *frame, size_t len, int have_gil) {
    pthread_mutex_lock(&s->write_lock);
    int held = s->batch.len + len <= HOLD_MAX && buf_append(&s->batch, frame, len) == BUF_OK;
    pthread_mutex_unlock(&s->write_lock);
    if (!held)
        return worker_send_slot_raw(s, frame, len, have_gil);
    free(frame);
    return 0;
}

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
    size_t len;
    char *frame = msg ? frame_encode_alloc(msg, &len) : NULL;
    json_decref(msg);
    if (!frame)
        return msg ? -EMSGSIZE : -ENOMEM;
    return worker_send_slot_raw(s, frame, len, have_gil);
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
