/* orchestrator/process.c: the worker's process: forked (cfg.forker) or spawned, its fds 1
 * and 2 read and logged line by line, its exit seen (a uv_process, or a pidfd for a forked
 * one), its stopped state read from /proc. The frame protocol is orchestrator.c's. */
#include "orchestrator/process.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "orchestrator/fork.h"
#include "orchestrator/output.h"

#define TARGET "coglet::orchestrator"

/* /proc/{pid}/stat: "pid (comm) S ...", the state after the last ')'. procfs is served from
 * kernel memory, so this read never waits on a device; it is cheap enough for the loop. */
int orchestrator_worker_stopped(const orchestrator *orch) {
    if (!(orch->proc_alive || orch->exit_poll_open) || orch->exit_seen || orch->pid <= 0)
        return 0; /* spawned (a uv_process) or forked (a pidfd): orch->pid either way */
    char path[64], text[512];
    snprintf(path, sizeof path, "/proc/%d/stat", orch->pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    const char *paren = strrchr(text, ')');
    return paren && paren[1] == ' ' && (paren[2] == 'T' || paren[2] == 't');
}

/* ---- worker output (fds 1 and 2) ---- */

typedef struct output_source {
    orchestrator *orch;
    const char *name; /* "stdout", "stderr" */
} output_source;

static void log_output_line(void *ctx, const char *line) {
    const output_source *src = ctx;
    src->orch->ops->on_log(src->orch->app, src->name, line);
}

static void on_output_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b) {
    orchestrator *orch = stream->data;
    int is_err = stream == (uv_stream_t *)&orch->err_pipe;
    buf *line = is_err ? &orch->err_line : &orch->out_line;
    output_source src = {orch, is_err ? "stderr" : "stdout"};
    if (nread < 0) {
        output_cut_lines(line, 1, log_output_line, &src);
        orch__close_handle(orch, (uv_handle_t *)stream, is_err ? &orch->err_open : &orch->out_open);
        return;
    }
    /* output_cut_lines leaves at most one piece behind, so a 64 KiB read always fits; should
     * it not, what is buffered goes out first and nothing is dropped. */
    if (buf_append(line, b->base, (size_t)nread) != BUF_OK) {
        output_cut_lines(line, 1, log_output_line, &src);
        buf_append(line, b->base, (size_t)nread);
    }
    output_cut_lines(line, 0, log_output_line, &src);
}

/* ---- exit ---- */

void orch__describe_exit(const orchestrator *orch, char *out, size_t outlen) {
    if (!orch->exit_seen)
        snprintf(out, outlen, "Worker crashed");
    else if (orch->term_signal)
        snprintf(out, outlen, "Worker crashed: killed by signal %d (SIG%s)", orch->term_signal,
                 sigabbrev_np(orch->term_signal) ? sigabbrev_np(orch->term_signal) : "?");
    else
        snprintf(out, outlen, "Worker crashed: exited with code %lld", (long long)orch->exit_status);
}

static void process_exited(orchestrator *orch, int64_t exit_status, int term_signal) {
    orch->exit_seen = 1;
    orch->exit_status = exit_status;
    orch->term_signal = term_signal;
    if (term_signal)
        log_event(orch->closing || orch->shutdown_sent ? LOG_INFO : LOG_WARN, TARGET,
                  json_pack("{s:i}", "signal", term_signal), "Worker process killed by signal %d (SIG%s)",
                  term_signal, sigabbrev_np(term_signal) ? sigabbrev_np(term_signal) : "?");
    else
        log_event(orch->closing || orch->shutdown_sent ? LOG_INFO : LOG_WARN, TARGET,
                  json_pack("{s:I}", "exit_code", (json_int_t)exit_status), "Worker process exited with code %lld",
                  (long long)exit_status);
    orch__worker_exited(orch);
}

void orch__process_close(orchestrator *orch) {
    int fd = -1;
    if (orch->exit_poll_open)
        uv_fileno((uv_handle_t *)&orch->exit_poll, &fd);
    orch__close_handle(orch, (uv_handle_t *)&orch->proc, &orch->proc_alive);
    orch__close_handle(orch, (uv_handle_t *)&orch->exit_poll, &orch->exit_poll_open);
    if (fd >= 0)
        close(fd); /* uv_poll_t never closes the fd it watches */
}

static void on_process_exit(uv_process_t *proc, int64_t exit_status, int term_signal) {
    orchestrator *orch = container_of(proc, orchestrator, proc);
    process_exited(orch, exit_status, term_signal);
    orch__process_close(orch);
}

/* A forked worker's pidfd is readable: it has exited; reaped here. */
static void on_pidfd(uv_poll_t *poll, int status, int events) {
    orchestrator *orch = container_of(poll, orchestrator, exit_poll);
    (void)events;
    int ws = 0;
    pid_t got;
    do
        got = waitpid(orch->pid, &ws, WNOHANG);
    while (got < 0 && errno == EINTR);
    if (got == 0 && status == 0)
        return; /* not yet */
    if (got == orch->pid && WIFSIGNALED(ws))
        process_exited(orch, 0, WTERMSIG(ws));
    else
        process_exited(orch, got == orch->pid && WIFEXITED(ws) ? WEXITSTATUS(ws) : 1, 0);
    orch__process_close(orch); /* the fd too; done already if the app closed us meanwhile */
}

/* ---- start ---- */

/* The worker as `python -c "import coglet; coglet.server._run_worker()"`, its fds 1 and 2
 * pipes made by libuv. */
static int spawn_worker(orchestrator *orch, const int *child_fds, int n) {
    uv_stdio_container_t *stdio = calloc((size_t)n + 4, sizeof *stdio);
    if (!stdio)
        return UV_ENOMEM;
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t *)&orch->out_pipe;
    stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[2].data.stream = (uv_stream_t *)&orch->err_pipe;
    for (int i = 0; i <= n; i++) {
        stdio[3 + i].flags = UV_INHERIT_FD;
        stdio[3 + i].data.fd = child_fds[i];
    }
    char *args[] = {(char *)orch->cfg.python, "-c", "import coglet; coglet.server._run_worker()", NULL};
    uv_process_options_t opts = {0};
    opts.file = orch->cfg.python;
    opts.args = args;
    opts.exit_cb = on_process_exit;
    opts.stdio = stdio;
    opts.stdio_count = n + 4;
    int rc = uv_spawn(orch->loop, &orch->proc, &opts);
    free(stdio);
    orch->proc_alive = 1; /* uv_spawn initialised the handle; even on failure it must be closed */
    if (rc != 0) {
        orch__close_handle(orch, (uv_handle_t *)&orch->proc, &orch->proc_alive);
        return rc;
    }
    orch->pid = orch->proc.pid;
    log_event(LOG_DEBUG, TARGET, json_pack("{s:i}", "pid", orch->pid), "Worker spawned");
    return 0;
}

/* The worker forked from this process (cfg.forker): the same fds as a spawned one, its exit
 * seen through a pidfd. 0, or an error before anything was started (then we spawn). */
static int fork_worker(orchestrator *orch, const int *child_fds, int n) {
    int out[2] = {-1, -1}, err[2] = {-1, -1}, rc;
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    int *plan = calloc((size_t)n + 4, sizeof *plan);
    if (devnull < 0 || !plan || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
        rc = plan ? -errno : UV_ENOMEM;
        goto done;
    }
    plan[0] = devnull;
    plan[1] = out[1];
    plan[2] = err[1];
    for (int i = 0; i <= n; i++)
        plan[3 + i] = child_fds[i];
    int pid = orch->cfg.forker.fork(orch->cfg.forker.arg, plan, n + 4);
    if (pid < 0) {
        rc = pid;
        goto done;
    }
    int pidfd = worker_pidfd_open(pid);
    if (pidfd < 0 || (rc = uv_poll_init(orch->loop, &orch->exit_poll, pidfd)) != 0) {
        /* cannot watch it: it must not run unwatched; spawned instead */
        rc = pidfd < 0 ? pidfd : rc;
        if (pidfd >= 0)
            close(pidfd);
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        log_warn(TARGET, "cannot watch the forked worker (%s); spawning one", strerror(-rc));
        goto done;
    }
    orch->exit_poll_open = 1;
    orch->exit_poll.data = orch;
    uv_poll_start(&orch->exit_poll, UV_READABLE, on_pidfd);
    orch->forked = 1;
    orch->pid = pid;
    uv_pipe_open(&orch->out_pipe, out[0]);
    uv_pipe_open(&orch->err_pipe, err[0]);
    out[0] = err[0] = -1;
    log_event(LOG_DEBUG, TARGET, json_pack("{s:i, s:s}", "pid", pid, "start", "fork"), "Worker spawned");
    rc = 0;
done:
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
    }
    if (devnull >= 0)
        close(devnull);
    free(plan);
    return rc;
}

int orch__process_start(orchestrator *orch, const int *child_fds, int n) {
    uv_pipe_init(orch->loop, &orch->out_pipe, 0);
    uv_pipe_init(orch->loop, &orch->err_pipe, 0);
    orch->out_pipe.data = orch;
    orch->err_pipe.data = orch;
    orch->out_open = orch->err_open = 1;
    log_info(TARGET, "Spawning worker subprocess"); /* once, whether forked or spawned */
    int rc = orch->cfg.forker.fork ? fork_worker(orch, child_fds, n) : UV_ENOSYS;
    if (rc != 0)
        rc = spawn_worker(orch, child_fds, n);
    if (rc != 0)
        return rc;
    uv_read_start((uv_stream_t *)&orch->out_pipe, orch__scratch_alloc, on_output_read);
    uv_read_start((uv_stream_t *)&orch->err_pipe, orch__scratch_alloc, on_output_read);
    return 0;
}
