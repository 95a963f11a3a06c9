/* worker/outputs.c: a prediction's outputs on their way out: file outputs (the parent makes
 * them data URLs or uploads), inline JSON (output_chunk, or the final value inside done), and
 * values too big for a frame spilled to a file the parent reads and deletes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fs.h"
#include "common/ids.h"
#include "common/json_out.h"
#include "py/convert.h"
#include "worker/worker.h"

/* Room for the frame's other members around an inline value. */
#define INLINE_MAX (FRAME_MAX_PAYLOAD - 4096)

json_t *outputs_to_json(worker *w, PyObject *value) {
    const pyjson_rules rules = {
        .loose_containers = 1,
        .encode_other = w->encode_other,
        .unsupported = NULL,
    };
    return pyjson_from_py(value, &rules);
}

/* os.PathLike or io.IOBase; JSON-native values are answered without isinstance calls. */
static int is_file_like(worker *w, PyObject *o) {
    if (o == Py_None || PyUnicode_CheckExact(o) || PyLong_CheckExact(o) || PyFloat_CheckExact(o) ||
        PyDict_CheckExact(o) || PyList_CheckExact(o) || PyTuple_CheckExact(o) || PyBool_Check(o))
        return 0;
    int r = PyObject_IsInstance(o, w->pathlike_type);
    if (r != 0)
        return r;
    return PyObject_IsInstance(o, w->iobase_type);
}

/* An output whose frame would pass the cap goes through {output_dir}/spill_{uuid}.json, which
 * the parent reads (and deletes). Takes text. 0, or -1 with rc failed. */
static int spill(run_ctx *rc, char *text, size_t len) {
    char uuid[37], *path = NULL;
    int err = ids_uuid4(uuid);
    if (err == 0 && asprintf(&path, "%s/spill_%s.json", rc->output_dir, uuid) < 0) {
        path = NULL;
        err = -ENOMEM;
    }
    if (err == 0) {
        PyThreadState *ts = PyEval_SaveThread();
        err = fs_mkdirs(rc->output_dir, 0755);
        int fd = err == 0 ? open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600) : -1;
        if (err == 0 && fd < 0)
            err = -errno;
        if (fd >= 0) {
            err = fs_write_all(fd, text, len);
            if (close(fd) != 0 && err == 0)
                err = -errno;
        }
        PyEval_RestoreThread(ts);
    }
    free(text);
    if (err != 0) {
        char msg[1600];
        snprintf(msg, sizeof msg, "Prediction failed: Output spill error: cannot write %s: %s",
                 path ? path : rc->output_dir, strerror(-err));
        run_fail(rc, msg);
        free(path);
        return -1;
    }
    worker_send_slot(rc->s,
                     json_pack("{s:s, s:s, s:{s:s}}", "type", "file_output", "filename", path, "kind", "type",
                               "oversized"),
                     1);
    free(path);
    return 0;
}

/* A value's JSON text, encoded once (whatever frame or file it ends up in). NULL with rc
 * failed. */
static char *encode(run_ctx *rc, PyObject *value, int final, size_t *len) {
    json_t *j = outputs_to_json(rc->w, value);
    if (!j) {
        run_fail_pyerr(rc, final ? "Prediction failed: Failed to serialize output: "
                                 : "Prediction failed: Failed to serialize output item: ");
        return NULL;
    }
    char *text = json_out_string(j, 0);
    json_decref(j);
    if (!text) {
        run_fail(rc, "Prediction failed: Failed to serialize output: out of memory");
        return NULL;
    }
    *len = strlen(text);
    return text;
}

/* _runtime.file_output gives (path, mime type or None, owned). */
static int send_file(run_ctx *rc, PyObject *item, const char *error_prefix) {
    PyObject *t = PyObject_CallMethod(rc->w->runtime, "file_output", "Osi", item, rc->output_dir, rc->files++);
    const char *path = NULL, *mime = NULL;
    int owned = 0;
    if (!t || !PyArg_ParseTuple(t, "sz|p", &path, &mime, &owned)) {
        Py_XDECREF(t);
        run_fail_pyerr(rc, error_prefix);
        return -1;
    }
    json_t *msg = json_pack("{s:s, s:s, s:{s:s}, s:b}", "type", "file_output", "filename", path, "kind", "type",
                            "file_type", "owned", owned);
    if (msg && mime)
        json_object_set_new(msg, "mime_type", json_string(mime));
    Py_DECREF(t);
    worker_send_slot(rc->s, msg, 1);
    return 0;
}

static int send_inline(run_ctx *rc, char *text, size_t len) {
    json_t *msg = json_pack("{s:s, s:i}", "type", "output_chunk", "index", rc->index++);
    size_t flen;
    char *frame = msg ? frame_encode_with_raw(msg, "output", text, len, &flen) : NULL;
    json_decref(msg);
    free(text);
    if (!frame) {
        run_fail(rc, "Prediction failed: Failed to send output: cannot encode the frame");
        return -1;
    }
    worker_send_slot_raw(rc->s, frame, flen, 1);
    return 0;
}

int outputs_send(run_ctx *rc, PyObject *item, int final) {
    const char *process_prefix =
        final ? "Prediction failed: Failed to process output: " : "Prediction failed: Failed to process output item: ";
    int file = is_file_like(rc->w, item);
    if (file < 0) {
        run_fail_pyerr(rc, process_prefix);
        return -1;
    }
    if (file)
        return send_file(rc, item, process_prefix);
    size_t len;
    char *text = encode(rc, item, final, &len);
    if (!text)
        return -1;
    return len > INLINE_MAX ? spill(rc, text, len) : send_inline(rc, text, len);
}

/* Items gathered for one output_items frame: the JSON array's text so far ("[a,b"). */
typedef struct item_run {
    buf text;
    int count;
    int first; /* the first item's index */
} item_run;

static int flush_items(run_ctx *rc, item_run *r) {
    if (!r->count)
        return 0;
    buf_append(&r->text, "]", 1);
    json_t *msg = json_pack("{s:s, s:i}", "type", "output_items", "index", r->first);
    size_t flen;
    char *frame = msg ? frame_encode_with_raw(msg, "outputs", r->text.data, r->text.len, &flen) : NULL;
    json_decref(msg);
    buf_reset(&r->text);
    r->count = 0;
    if (!frame) {
        run_fail(rc, "Prediction failed: Failed to send output: cannot encode the frame");
        return -1;
    }
    worker_hold_slot_raw(rc->s, frame, flen, 1);
    return 0;
}

/* One item of a returned list: inline ones join the run, a file output or a spill goes
 * out in its place (after the run so far). 0 or -1 with rc failed. */
static int add_item(run_ctx *rc, item_run *r, PyObject *item) {
    const char *prefix = "Prediction failed: Failed to process output item: ";
    int file = is_file_like(rc->w, item);
    if (file < 0) {
        run_fail_pyerr(rc, prefix);
        return -1;
    }
    if (file)
        return flush_items(rc, r) < 0 ? -1 : send_file(rc, item, prefix);
    size_t len;
    char *text = encode(rc, item, 0, &len);
    if (!text)
        return -1;
    if (len > INLINE_MAX / 2) { /* a big one: its own frame, or a spill */
        if (flush_items(rc, r) < 0) {
            free(text);
            return -1;
        }
        return len > INLINE_MAX ? spill(rc, text, len) : send_inline(rc, text, len);
    }
    if (r->text.len + len + 2 > INLINE_MAX && flush_items(rc, r) < 0) {
        free(text);
        return -1;
    }
    if (!r->count)
        r->first = rc->index;
    int ok = buf_append(&r->text, r->count ? "," : "[", 1) == BUF_OK && buf_append(&r->text, text, len) == BUF_OK;
    free(text);
    if (!ok) {
        run_fail(rc, "Prediction failed: Failed to send output: out of memory");
        return -1;
    }
    r->count++;
    rc->index++;
    return 0;
}

int outputs_items(run_ctx *rc, PyObject *it) {
    item_run r = {.count = 0};
    buf_init(&r.text, INLINE_MAX);
    int rc_ = 0;
    for (;;) {
        PyObject *item = PyIter_Next(it);
        if (!item) {
            if (PyErr_Occurred()) {
                run_fail_pyerr(rc, "Prediction failed: Failed to process output item: ");
                rc_ = -1;
            }
            break;
        }
        rc_ = add_item(rc, &r, item);
        Py_DECREF(item);
        if (rc_)
            break;
    }
    /* what came before a bad item still goes out, as it did item by item */
    if (flush_items(rc, &r) < 0)
        rc_ = -1;
    buf_free(&r.text);
    return rc_;
}

int outputs_stream(run_ctx *rc, PyObject *it, const char *prefix) {
    for (;;) {
        PyObject *item = PyIter_Next(it);
        if (!item) {
            if (!PyErr_Occurred())
                return 0;
            run_fail_pyerr(rc, prefix);
            return -1;
        }
        int r = outputs_send(rc, item, 0);
        Py_DECREF(item);
        if (r)
            return -1;
    }
}

void outputs_final(run_ctx *rc, PyObject *value) {
    int file = is_file_like(rc->w, value);
    if (file != 0) {
        if (file < 0)
            PyErr_Clear();
        outputs_send(rc, value, 1);
        return;
    }
    size_t len;
    char *text = encode(rc, value, 1, &len);
    if (!text)
        return;
    if (len > INLINE_MAX) {
        spill(rc, text, len);
        return;
    }
    rc->final_text = text;
    rc->final_len = len;
}
