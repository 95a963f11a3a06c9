/* tests/c/test_orchestrator.c: a real orchestrator (orchestrator/orchestrator.c) driving
 * fake_worker over the inherited socketpairs: how it handles what the worker sends, and the
 * worker's exit. One behaviour per test; each spawns its own worker on its own loop. The
 * table runs twice: the worker spawned, then forked (through a fork hook that execs it). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

#include "common/util.h"
#include "orchestrator/fork.h"
#include "orchestrator/orchestrator.h"

#define GUARD_MS 20000 /* a test that never sees its event fails instead of hanging */

static char worker_path[4096];
static int use_fork; /* the second pass: the worker forked (then exec'd), not spawned */

/* The fork hook the Python layer provides, minus Python: fork, lay out the fds, exec. */
static int fork_then_exec(void *arg, const int *plan, int nplan) {
    (void)arg;
    pid_t pid = fork();
    if (pid != 0)
        return pid < 0 ? -errno : (int)pid;
    if (worker_child_fds(plan, nplan) != 0)
        _exit(5);
    for (int fd = nplan; fd < 64; fd++)
        if (fcntl(fd, F_GETFD) != -1)
            _exit(6); /* a descriptor of the parent leaked into the worker */
    char *args[] = {worker_path, NULL};
    execv(worker_path, args);
    _exit(127);
}

typedef struct harness {
    uv_loop_t loop;
    orchestrator orch;
    uv_timer_t guard;
    int guard_fired;
    int ready, setup_failed, gone, poisoned, slot_messages, closed;
    char error[512];   /* the text of the last setup failure, poison or worker-gone */
    json_t *schema;    /* from ready (a reference of our own) */
    json_t *message;   /* the last slot message (a reference of our own) */
    slot *message_slot, *poisoned_slot;
    int exit_on_ready; /* send the worker its "exit" word once it is ready */
} harness;

static harness *of(void *app) { return app; }

/* fake_worker prints nothing; what it does print (a sanitizer report) is shown. */
static void on_log(void *app, const char *source, const char *line) {
    (void)app;
    fprintf(stderr, "  worker %s: %s\n", source, line);
}

static void on_worker_log(void *app, const char *target, const char *level, const char *message) {
    (void)app, (void)target, (void)level, (void)message;
}

static void on_ready(void *app, json_t *schema, json_t *ready) {
    harness *h = of(app);
    (void)ready;
    h->ready++;
    h->schema = json_incref(schema);
    if (h->exit_on_ready) {
        json_t *word = json_pack("{s:s}", "type", "exit");
        CHECK(orchestrator_send_control(&h->orch, word) == 0);
        json_decref(word);
    }
}

static void on_setup_failed(void *app, const char *error) {
    harness *h = of(app);
    h->setup_failed++;
    snprintf(h->error, sizeof h->error, "%s", error);
}

static void on_slot_message(void *app, slot *s, json_t *msg) {
    harness *h = of(app);
    h->slot_messages++;
    json_decref(h->message);
    h->message = json_incref(msg); /* borrowed: keep a reference of our own */
    h->message_slot = s;
}

static void on_slot_poisoned(void *app, slot *s, const char *error) {
    harness *h = of(app);
    h->poisoned++;
    h->poisoned_slot = s;
    snprintf(h->error, sizeof h->error, "%s", error);
}

static void on_worker_gone(void *app, const char *error) {
    harness *h = of(app);
    h->gone++;
    snprintf(h->error, sizeof h->error, "%s", error);
}

static void on_control_message(void *app, json_t *msg) { (void)app, (void)msg; }

static const orchestrator_ops ops = {
    .on_log = on_log,
    .on_worker_log = on_worker_log,
    .on_ready = on_ready,
    .on_setup_failed = on_setup_failed,
    .on_slot_message = on_slot_message,
    .on_slot_poisoned = on_slot_poisoned,
    .on_worker_gone = on_worker_gone,
    .on_control_message = on_control_message,
};

static void on_guard(uv_timer_t *timer) {
    harness *h = container_of(timer, harness, guard);
    h->guard_fired = 1;
}

/* Spawns fake_worker acting out `scenario`; 0 or the orchestrator_start error. */
static int start(harness *h, const char *scenario, int num_slots, double setup_timeout) {
    memset(h, 0, sizeof *h);
    uv_loop_init(&h->loop);
    uv_timer_init(&h->loop, &h->guard);
    uv_timer_start(&h->guard, on_guard, GUARD_MS, 0);
    setenv("FAKE_WORKER_SCENARIO", scenario, 1);
    orchestrator_config cfg = {
        .python = worker_path,
        .predictor_ref = "predict.py:Predictor",
        .num_slots = num_slots,
        .setup_timeout = setup_timeout,
    };
    if (use_fork)
        cfg.forker.fork = fork_then_exec;
    int rc = orchestrator_start(&h->orch, &h->loop, &cfg, &ops, h);
    CHECK(rc != 0 || h->orch.forked == use_fork);
    return rc;
}

/* Runs the loop until *flag is set; 0 when the guard fired first. */
static int run_until(harness *h, const int *flag) {
    while (!*flag && !h->guard_fired)
        uv_run(&h->loop, UV_RUN_ONCE);
    return *flag != 0;
}

static void on_closed(orchestrator *orch) {
    harness *h = container_of(orch, harness, orch);
    h->closed = 1;
}

/* Closes the orchestrator, checks every handle is gone, and reaps the worker, which must
 * exit by itself once its control channel is closed. Returns its wait status. */
static int finish(harness *h) {
    int pid = h->orch.pid;
    orchestrator_close(&h->orch, on_closed);
    CHECK(run_until(h, &h->closed));
    uv_close((uv_handle_t *)&h->guard, NULL);
    uv_run(&h->loop, UV_RUN_DEFAULT);
    CHECK(uv_loop_close(&h->loop) == 0);
    int status = -1;
    if (pid > 0 && waitpid(pid, &status, 0) != pid)
        status = -1; /* already reaped by libuv: the exit was seen */
    json_decref(h->schema);
    json_decref(h->message);
    return status;
}

TEST(ready_installs_the_schema_and_frees_every_slot) {
    harness h;
    CHECK(start(&h, "ready", 2, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    CHECK(h.orch.state == ORCH_READY);
    CHECK(h.schema && !strcmp(json_string_value(json_object_get(h.schema, "openapi")), "3.0.2"));
    CHECK(!strcmp(h.orch.slots[0].id, "fake-slot-0") && !strcmp(h.orch.slots[1].id, "fake-slot-1"));
    CHECK(orchestrator_free_slots(&h.orch) == 2);
    slot *first = orchestrator_acquire_slot(&h.orch);
    CHECK(first && first->index == 0);
    orchestrator_release_slot(&h.orch, first);
    int status = finish(&h);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST(setup_failure_reports_the_worker_error) {
    harness h;
    CHECK(start(&h, "setup_failed", 1, 0) == 0);
    CHECK(run_until(&h, &h.setup_failed));
    CHECK(!strcmp(h.error, "worker setup failed: worker setup failed (slot fake-slot-0): ValueError: no weights"));
    CHECK(!h.ready && h.orch.state == ORCH_GONE);
    CHECK(orchestrator_acquire_slot(&h.orch) == NULL);
    finish(&h);
    CHECK(h.setup_failed == 1 && !h.gone);
}

TEST(slot_frame_reaches_on_slot_message) {
    harness h;
    CHECK(start(&h, "predict", 1, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    slot *s = orchestrator_acquire_slot(&h.orch);
    CHECK(s != NULL);
    json_t *predict = json_pack("{s:s, s:s, s:{}}", "type", "predict", "id", "pred_1", "input");
    CHECK(s && orchestrator_send_slot(&h.orch, s, predict) == 0);
    json_decref(predict);
    CHECK(run_until(&h, &h.slot_messages));
    CHECK(h.message_slot == s);
    CHECK(!strcmp(json_string_value(json_object_get(h.message, "type")), "done"));
    CHECK(!strcmp(json_string_value(json_object_get(h.message, "id")), "pred_1"));
    CHECK(!strcmp(json_string_value(json_object_get(h.message, "output")), "fake output"));
    finish(&h);
}

TEST(bad_slot_frame_poisons_the_slot_for_good) {
    harness h;
    CHECK(start(&h, "bad_frame", 2, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    CHECK(run_until(&h, &h.poisoned));
    CHECK(h.poisoned_slot == &h.orch.slots[0]);
    CHECK(!strncmp(h.error, "Slot socket error: ", 19));
    CHECK(orchestrator_free_slots(&h.orch) == 1);
    slot *s = orchestrator_acquire_slot(&h.orch);
    CHECK(s == &h.orch.slots[1]);
    CHECK(orchestrator_acquire_slot(&h.orch) == NULL);
    orchestrator_release_slot(&h.orch, &h.orch.slots[0]); /* a poisoned slot never comes back */
    CHECK(orchestrator_free_slots(&h.orch) == 0);
    finish(&h);
    CHECK(!h.gone);
}

TEST(worker_exit_after_ready_names_the_exit_code) {
    harness h;
    CHECK(start(&h, "exit_code", 2, 0) == 0);
    h.exit_on_ready = 1;
    CHECK(run_until(&h, &h.gone));
    CHECK(!strcmp(h.error, "Worker crashed: exited with code 7"));
    CHECK(h.orch.state == ORCH_GONE && orchestrator_free_slots(&h.orch) == 0);
    CHECK(orchestrator_acquire_slot(&h.orch) == NULL);
    finish(&h);
    CHECK(h.gone == 1 && !h.setup_failed);
}

TEST(worker_killed_after_ready_names_the_signal) {
    harness h;
    CHECK(start(&h, "signal", 1, 0) == 0);
    h.exit_on_ready = 1;
    CHECK(run_until(&h, &h.gone));
    CHECK(!strcmp(h.error, "Worker crashed: killed by signal 9 (SIGKILL)"));
    CHECK(orchestrator_acquire_slot(&h.orch) == NULL);
    finish(&h);
}

TEST(setup_timeout_fails_setup_and_the_worker_exits) {
    harness h;
    CHECK(start(&h, "never_ready", 1, 0.2) == 0);
    CHECK(run_until(&h, &h.setup_failed));
    CHECK(!strcmp(h.error, "worker setup timed out"));
    CHECK(!h.ready && h.orch.state == ORCH_GONE);
    int status = finish(&h);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0); /* it saw its control channel close */
}

TEST(a_slot_the_worker_closes_is_lost_after_the_grace) {
    harness h;
    CHECK(start(&h, "close_slot", 2, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    CHECK(run_until(&h, &h.poisoned)); /* the worker lives on: no exit to wait for */
    CHECK(h.poisoned_slot == &h.orch.slots[0]);
    CHECK(!strcmp(h.error, "Slot socket closed by the worker"));
    CHECK(orchestrator_usable_slots(&h.orch) == 1 && orchestrator_free_slots(&h.orch) == 1);
    CHECK(orchestrator_acquire_slot(&h.orch) == &h.orch.slots[1]);
    finish(&h);
    CHECK(h.poisoned == 1 && !h.gone);
}

TEST(garbage_on_the_control_channel_loses_the_worker_with_its_cause) {
    harness h;
    CHECK(start(&h, "control_garbage", 1, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    CHECK(run_until(&h, &h.gone));
    CHECK(!strcmp(h.error, "Worker control channel error: frame of 1734439522 bytes exceeds the 8388608 byte limit"));
    CHECK(h.orch.state == ORCH_GONE && orchestrator_usable_slots(&h.orch) == 0);
    int status = finish(&h);
    CHECK(status == -1 || (WIFEXITED(status) && WEXITSTATUS(status) == 0)); /* it saw the channel close */
    CHECK(h.gone == 1);
}

TEST(frames_to_a_worker_that_does_not_read_are_bounded) {
    harness h;
    CHECK(start(&h, "deaf", 1, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    json_t *msg = json_pack("{s:s, s:s, s:s, s:i}", "type", "cancel", "slot", "fake-slot-0", "id", "pred_1", "seq", 1);
    int rc = 0, sent = 0;
    while (sent < 1000000 && (rc = orchestrator_send_control(&h.orch, msg)) == 0)
        sent++;
    json_decref(msg);
    CHECK(rc == UV_ENOBUFS);
    size_t unsent = orchestrator_control_unsent(&h.orch);
    CHECK(unsent <= ((size_t)1 << 20) && unsent > ((size_t)1 << 20) - 200);
    CHECK(sent > 1000); /* the socket took what it could, then 1 MiB waited */
    finish(&h);
    CHECK(!h.gone && !h.poisoned);
}

static int stopped_becomes(harness *h, int want) {
    for (int i = 0; i < 2000; i++) {
        if (orchestrator_worker_stopped(&h->orch) == want)
            return 1;
        usleep(1000);
    }
    return 0;
}

TEST(a_stopped_worker_is_seen_stopped_until_it_continues) {
    harness h;
    CHECK(start(&h, "ready", 1, 0) == 0);
    CHECK(run_until(&h, &h.ready));
    CHECK(orchestrator_worker_stopped(&h.orch) == 0);
    CHECK(h.orch.pid > 0); /* never kill(0, ...): that would stop this whole process group */
    kill(h.orch.pid, SIGSTOP);
    CHECK(stopped_becomes(&h, 1));
    kill(h.orch.pid, SIGCONT);
    CHECK(stopped_becomes(&h, 0));
    finish(&h);
}

static const test_case tests[] = {
    T(ready_installs_the_schema_and_frees_every_slot),
    T(setup_failure_reports_the_worker_error),
    T(slot_frame_reaches_on_slot_message),
    T(bad_slot_frame_poisons_the_slot_for_good),
    T(worker_exit_after_ready_names_the_exit_code),
    T(worker_killed_after_ready_names_the_signal),
    T(setup_timeout_fails_setup_and_the_worker_exits),
    T(a_slot_the_worker_closes_is_lost_after_the_grace),
    T(garbage_on_the_control_channel_loses_the_worker_with_its_cause),
    T(frames_to_a_worker_that_does_not_read_are_bounded),
    T(a_stopped_worker_is_seen_stopped_until_it_continues),
};

int main(int argc, char **argv) {
    (void)argc;
    char self[4096];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(worker_path, sizeof worker_path, "%s/fake_worker", dirname(self));
    setenv("COG_LOG_LEVEL", "error", 0); /* the crashes these tests cause are logged as errors */
    int rc = run_tests("c-orchestrator", tests, sizeof tests / sizeof tests[0]);
    use_fork = 1;
    return run_tests("c-orchestrator-forked", tests, sizeof tests / sizeof tests[0]) | rc;
}
