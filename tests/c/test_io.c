/* tests/c/test_io.c: unit tests for the small shared I/O helpers: fs_mkdirs, fs_write_all,
 * ids_random_hex, ids_uuid4 and the frame header, one behaviour per test. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runner.h"

#include "common/fs.h"
#include "common/ids.h"
#include "ipc/frame.h"

static char *temp_dir(void) {
    char tmpl[] = "/tmp/coglet-test-io-XXXXXX";
    char *dir = mkdtemp(tmpl);
    return dir ? strdup(dir) : NULL;
}

static int is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void remove_tree(const char *root) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    CHECK(system(cmd) == 0);
}

TEST(fs_mkdirs_creates_every_missing_parent) {
    char *root = temp_dir(), path[512];
    CHECK(root != NULL);
    snprintf(path, sizeof path, "%s/a/b//c/", root);
    CHECK(fs_mkdirs(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/a/b/c", root);
    CHECK(is_dir(path));
    CHECK(fs_mkdirs(path, 0755) == 0); /* already there: fine */
    remove_tree(root);
    free(root);
}

TEST(fs_mkdirs_refuses_a_file_in_the_way) {
    char *root = temp_dir(), path[512];
    CHECK(root != NULL);
    snprintf(path, sizeof path, "%s/file", root);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    CHECK(fd >= 0);
    close(fd);
    CHECK(fs_mkdirs(path, 0755) == -ENOTDIR);
    snprintf(path, sizeof path, "%s/file/below", root);
    CHECK(fs_mkdirs(path, 0755) == -ENOTDIR);
    CHECK(fs_mkdirs("", 0755) == -EINVAL);
    remove_tree(root);
    free(root);
}

static volatile sig_atomic_t alarms;
static void on_alarm(int sig) {
    (void)sig;
    alarms++;
}

/* More than a pipe holds (64 KiB), read late by a child, while a timer without SA_RESTART
 * interrupts the blocked write: write(2) returns short counts and EINTR, and every byte
 * still arrives in order. */
TEST(fs_write_all_survives_signals_and_short_writes) {
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, &old);
    struct itimerval every_2ms = {{0, 2000}, {0, 2000}}, off = {{0, 0}, {0, 0}};
    int p[2];
    CHECK(pipe(p) == 0);
    size_t n = 1 << 20;
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++)
        data[i] = (char)(i * 31);
    pid_t child = fork();
    if (child == 0) {
        close(p[1]);
        usleep(50000);
        size_t got = 0, bad = 0;
        char chunk[4096];
        ssize_t r;
        while ((r = read(p[0], chunk, sizeof chunk)) > 0) {
            for (ssize_t i = 0; i < r; i++)
                bad += chunk[i] != (char)((got + (size_t)i) * 31);
            got += (size_t)r;
        }
        _exit(got == n && bad == 0 ? 0 : 1);
    }
    close(p[0]);
    setitimer(ITIMER_REAL, &every_2ms, NULL);
    CHECK(fs_write_all(p[1], data, n) == 0);
    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    close(p[1]);
    int status = -1;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    free(data);
}

TEST(fs_write_all_reports_the_errno) {
    CHECK(fs_write_all(-1, "x", 1) == -EBADF);
    int p[2];
    CHECK(pipe(p) == 0);
    close(p[0]);
    signal(SIGPIPE, SIG_IGN);
    CHECK(fs_write_all(p[1], "x", 1) == -EPIPE);
    close(p[1]);
    CHECK(fs_write_all(-1, "", 0) == 0); /* nothing to write */
}

TEST(ids_random_hex_is_hex_of_the_length_asked) {
    char a[200], b[200];
    CHECK(ids_random_hex(a, 199) == 0 && ids_random_hex(b, 199) == 0);
    CHECK(strlen(a) == 199 && strspn(a, "0123456789abcdef") == 199);
    CHECK(strcmp(a, b) != 0);
    CHECK(ids_random_hex(a, 0) == 0 && a[0] == '\0');
}

TEST(ids_uuid4_has_the_version_and_variant) {
    char u[37], v[37];
    CHECK(ids_uuid4(u) == 0 && ids_uuid4(v) == 0);
    CHECK(strlen(u) == 36 && u[8] == '-' && u[13] == '-' && u[18] == '-' && u[23] == '-');
    CHECK(u[14] == '4');
    CHECK(strchr("89ab", u[19]) != NULL);
    CHECK(strcmp(u, v) != 0);
}

TEST(frame_header_encode_is_big_endian) {
    unsigned char h[4];
    frame_header_encode(h, 0x01020304u);
    CHECK(h[0] == 1 && h[1] == 2 && h[2] == 3 && h[3] == 4);
    size_t len;
    json_t *msg = json_pack("{s:s}", "type", "x");
    char *wire = frame_encode_alloc(msg, &len);
    frame_header_encode(h, (uint32_t)(len - 4));
    CHECK(wire && !memcmp(wire, h, 4));
    free(wire);
    json_decref(msg);
}

static const test_case tests[] = {
    T(fs_mkdirs_creates_every_missing_parent),
    T(fs_mkdirs_refuses_a_file_in_the_way),
    T(fs_write_all_survives_signals_and_short_writes),
    T(fs_write_all_reports_the_errno),
    T(ids_random_hex_is_hex_of_the_length_asked),
    T(ids_uuid4_has_the_version_and_variant),
    T(frame_header_encode_is_big_endian),
};

int main(void) { return run_tests("c-io", tests, sizeof tests / sizeof tests[0]); }
