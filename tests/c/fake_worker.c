/* tests/c/fake_worker.c: a worker for test_orchestrator.c. It is spawned by a real
 * orchestrator in place of Python and speaks the frame protocol on the inherited fds (control
 * on 3, slot i on 4 + i; docs/architecture.md, "Transport"), acting out the scenario named by
 * FAKE_WORKER_SCENARIO. It exits once its control channel closes, as the real worker does. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ipc/frame.h"

#define CONTROL_FD 3
#define FIRST_SLOT_FD 4

static int write_all(int fd, const char *data, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Sends msg (stolen) as one frame. */
static void send_msg(int fd, json_t *msg) {
    size_t len;
    char *frame = frame_encode_alloc(msg, &len);
    json_decref(msg);
    if (!frame || write_all(fd, frame, len) != 0)
        exit(90);
    free(frame);
}

/* The next message on fd, or NULL at EOF. */
static json_t *read_msg(int fd, frame_decoder *dec) {
    for (;;) {
        json_t *msg;
        char err[256];
        int rc = frame_decoder_next(dec, &msg, err, sizeof err);
        if (rc == 1)
            return msg;
        if (rc < 0)
            exit(91);
        char chunk[4096];
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return NULL;
        if (frame_decoder_feed(dec, chunk, (size_t)n) != BUF_OK)
            exit(92);
    }
}

static void send_ready(int num_slots, int with_schema) {
    json_t *slots = json_array();
    for (int i = 0; i < num_slots; i++) {
        char id[40];
        snprintf(id, sizeof id, "fake-slot-%d", i);
        json_array_append_new(slots, json_string(id));
    }
    json_t *ready = json_pack("{s:s, s:o, s:b}", "type", "ready", "slots", slots, "has_healthcheck", 0);
    if (with_schema)
        json_object_set_new(ready, "schema", json_pack("{s:s}", "openapi", "3.0.2"));
    send_msg(CONTROL_FD, ready);
}

/* Answers every predict on slot 0 with done; returns at EOF. */
static void answer_predictions(void) {
    frame_decoder dec;
    frame_decoder_init(&dec);
    json_t *msg;
    while ((msg = read_msg(FIRST_SLOT_FD, &dec)) != NULL) {
        const char *type = json_string_value(json_object_get(msg, "type"));
        if (type && !strcmp(type, "predict"))
            send_msg(FIRST_SLOT_FD, json_pack("{s:s, s:O, s:s}", "type", "done", "id", json_object_get(msg, "id"),
                                              "output", "fake output"));
        json_decref(msg);
    }
    frame_decoder_free(&dec);
}

/* Reads control frames until one of `type` (1) or EOF (0). */
static int wait_for(frame_decoder *control, const char *type) {
    json_t *msg;
    while ((msg = read_msg(CONTROL_FD, control)) != NULL) {
        const char *t = json_string_value(json_object_get(msg, "type"));
        int found = type && t && !strcmp(t, type);
        json_decref(msg);
        if (found)
            return 1;
    }
    return 0;
}

/* Acts out the scenario; returns the exit code. */
static int act(const char *scenario, int num_slots, frame_decoder *control) {
    if (!strcmp(scenario, "ready")) {
        send_ready(num_slots, 1);
    } else if (!strcmp(scenario, "setup_failed")) {
        send_msg(CONTROL_FD, json_pack("{s:s, s:s, s:s}", "type", "failed", "slot", "fake-slot-0", "error",
                                       "ValueError: no weights"));
        wait_for(control, NULL);
        return 1;
    } else if (!strcmp(scenario, "predict")) {
        send_ready(num_slots, 0);
        answer_predictions();
    } else if (!strcmp(scenario, "bad_frame")) {
        send_ready(num_slots, 0);
        static const char bad[] = "\0\0\0\5nope!"; /* a whole frame whose payload is not JSON */
        write_all(FIRST_SLOT_FD, bad, sizeof bad - 1);
    } else if (!strcmp(scenario, "exit_code") || !strcmp(scenario, "signal")) {
        send_ready(num_slots, 0);
        if (wait_for(control, "exit")) {
            if (!strcmp(scenario, "signal"))
                kill(getpid(), SIGKILL);
            return 7;
        }
    } else if (strcmp(scenario, "never_ready") != 0) {
        return 4;
    }
    wait_for(control, NULL);
    return 0;
}

/* Where the real worker would exit on its own (after a setup failure), this one waits for
 * EOF or for the test's word (a control frame "exit"), so that whatever it sent is read
 * before its exit is seen. */
int main(void) {
    const char *scenario = getenv("FAKE_WORKER_SCENARIO");
    if (!scenario)
        return 2;
    frame_decoder control;
    frame_decoder_init(&control);
    int rc = 3;
    json_t *init = read_msg(CONTROL_FD, &control);
    if (init) {
        int num_slots = (int)json_integer_value(json_object_get(init, "num_slots"));
        json_decref(init);
        rc = act(scenario, num_slots, &control);
    }
    frame_decoder_free(&control);
    return rc;
}
