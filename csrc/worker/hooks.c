/* worker/hooks.c: what coglet._sdk calls back into (its sdk_hooks): log lines routed to the
 * prediction they belong to (log_line on its slot, else control `log`) and metrics sent on
 * their prediction's slot. Called with the GIL held. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "py/sdk.h"
#include "worker/worker.h"

#define LOG_LINE_MAX ((size_t)4 << 20)
#define LOG_TRUNCATED "[**** LOG LINE TRUNCATED AT 4 MiB ****]"

/* Set while a prediction's thread flushes the writers at the end of it: those bytes
 * belong to that prediction whatever the context says. Per thread, not a Python object. */
static _Thread_local wslot *route_override;

/* The sync prediction's slot, else the slot running the prediction the ContextVar names. */
static wslot *slot_for_current_context(worker *w) {
    if (route_override)
        return route_override;
    if (w->sync_slot)
        return w->sync_slot;
    PyObject *id = PyObject_CallMethod(w->pred_id_var, "get", "O", Py_None);
    if (!id) {
        PyErr_Clear();
        return NULL;
    }
    wslot *found = NULL;
    const char *s = PyUnicode_Check(id) ? PyUnicode_AsUTF8AndSize(id, NULL) : NULL;
    if (s) {
        pthread_mutex_lock(&w->lock);
        for (int i = 0; i < w->num_slots; i++)
            if (w->slots[i].current_id && !strcmp(w->slots[i].current_id, s))
                found = &w->slots[i];
        pthread_mutex_unlock(&w->lock);
    }
    PyErr_Clear();
    Py_DECREF(id);
    return found;
}

/* A line over 4 MiB is cut at a character boundary and says so: the parent's frame would not
 * hold it, and the line stays valid UTF-8. A new copy, or NULL out of memory. */
static char *truncate_line(const char *data, size_t *len) {
    size_t cut = utf8_cut(data, LOG_LINE_MAX - sizeof LOG_TRUNCATED + 1);
    char *copy = malloc(cut + sizeof LOG_TRUNCATED);
    if (!copy)
        return NULL;
    memcpy(copy, data, cut);
    memcpy(copy + cut, LOG_TRUNCATED, sizeof LOG_TRUNCATED);
    *len = cut + sizeof LOG_TRUNCATED - 1;
    return copy;
}

static void route_log(void *ctx, const char *source, const char *data, size_t len) {
    worker *w = ctx;
    if (!len)
        return;
    char *copy = NULL;
    if (len > LOG_LINE_MAX) {
        copy = truncate_line(data, &len);
        if (!copy)
            return;
        data = copy;
    }
    wslot *s = slot_for_current_context(w);
    json_t *str = json_stringn_nocheck(data, len);
    if (s)
        worker_send_slot(s, json_pack("{s:s, s:s, s:o}", "type", "log_line", "source", source, "data", str), 1);
    else
        worker_send_control(w, json_pack("{s:s, s:s, s:o}", "type", "log", "source", source, "data", str), 1);
    free(copy);
}

static int send_metric(void *ctx, void *slot, const char *name, json_t *value, const char *mode, char *err,
                       size_t errlen) {
    (void)ctx;
    wslot *s = slot;
    json_t *msg = json_pack("{s:s, s:s, s:o, s:s}", "type", "metric", "name", name, "value", value, "mode", mode);
    int rc = worker_send_slot(s, msg, 1);
    if (rc != 0) {
        snprintf(err, errlen, "%s", strerror(-rc));
        return -1;
    }
    return 0;
}

static const sdk_hooks worker_hooks = {
    .send_metric = send_metric,
    .route_log = route_log,
    .emission_max = LOG_LINE_MAX,
};

void hooks_register(worker *w) { sdk_set_hooks(w->sdk, &worker_hooks, w); }

void hooks_unregister(worker *w) { sdk_set_hooks(w->sdk, NULL, NULL); }

/* A partial last line printed without "\n" still belongs to the prediction that printed it. */
void hooks_flush_writers(worker *w, wslot *s) {
    static const char *const names[] = {"stdout", "stderr"};
    route_override = s;
    for (size_t i = 0; i < 2; i++) {
        PyObject *stream = PySys_GetObject(names[i]); /* borrowed */
        if (stream && sdk_is_slot_writer(w->sdk, stream))
            sdk_slot_writer_flush_pending(w->sdk, stream);
    }
    route_override = NULL;
    PyErr_Clear();
}
