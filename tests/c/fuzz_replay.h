/* tests/c/fuzz_replay.h: a fuzz driver (fuzz/fuzz_NAME.c, included before this header) run
 * once over every committed input of its corpus (fuzz/corpus/NAME: the seeds, and every input
 * a campaign found crashing, kept there when it was fixed), without libFuzzer: each file is
 * one test; a crash, a leak under SANITIZE=1, or a failed invariant (the drivers trap) fails
 * the binary, naming the input. Define REPLAY_NAME first (and REPLAY_INIT when the driver has an initializer). */
#ifndef COGLET_FUZZ_REPLAY_H
#define COGLET_FUZZ_REPLAY_H

#include <dirent.h>
#include <signal.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The input being replayed, named when it crashes: a trap (SIGILL), a signal, or a sanitizer
 * report (its death callback). */
static char replay_current[1024];

static void replay_name_it(void) {
    static const char what[] = "fuzz replay: crashed on ";
    if (write(2, what, sizeof what - 1) < 0 || write(2, replay_current, strlen(replay_current)) < 0 ||
        write(2, "\n", 1) < 0)
        return;
}

static void replay_on_signal(int sig) {
    replay_name_it();
    signal(sig, SIG_DFL);
    raise(sig);
}

void __sanitizer_set_death_callback(void (*callback)(void)) __attribute__((weak));

static int replay_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    const char *dir = "../../fuzz/corpus/" REPLAY_NAME;
#ifdef REPLAY_INIT /* the driver has an LLVMFuzzerInitialize */
    LLVMFuzzerInitialize(&argc, &argv);
#else
    (void)argc, (void)argv;
#endif
    int sigs[] = {SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGABRT, SIGFPE};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], replay_on_signal);
    if (__sanitizer_set_death_callback)
        __sanitizer_set_death_callback(replay_name_it);
    DIR *d = opendir(dir);
    if (!d) {
        printf("FAIL cannot open %s\nc-fuzz-%s: 0 passed, 1 failed\n", dir, REPLAY_NAME);
        return 1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        names = realloc(names, (n + 1) * sizeof *names);
        names[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof *names, replay_cmp);
    int passed = 0, failed = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = replay_current;
        snprintf(path, sizeof replay_current, "%s/%s", dir, names[i]);
        FILE *f = fopen(path, "rb");
        uint8_t *data = NULL;
        size_t len = 0, cap = 0;
        while (f) {
            if (len == cap && !(data = realloc(data, cap = cap ? cap * 2 : 4096)))
                break;
            size_t got = fread(data + len, 1, cap - len, f);
            if (!got)
                break;
            len += got;
        }
        if (!f) {
            printf("FAIL %s (unreadable)\n", path);
            failed++;
        } else {
            fclose(f);
            LLVMFuzzerTestOneInput(data ? data : (const uint8_t *)"", len); /* traps on a broken invariant */
            passed++;
        }
        free(data);
        free(names[i]);
    }
    free(names);
    printf("%s   replay of %s\nc-fuzz-%s: %d passed, %d failed\n", failed ? "FAIL" : "ok", dir, REPLAY_NAME, passed,
           failed);
    return failed || !passed;
}

#endif
