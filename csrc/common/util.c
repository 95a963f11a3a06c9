/* common/util.c: clocks and timestamp formats. */
#include "common/util.h"

#include <stdio.h>
#include <time.h>

uint64_t now_realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double now_monotonic(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void format_date(uint64_t ns, char *out, size_t outlen) {
    time_t secs = (time_t)(ns / 1000000000ull);
    struct tm tm;
    gmtime_r(&secs, &tm);
    strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
}

void format_rfc3339(uint64_t ns, char *out, size_t outlen) {
    char date[32];
    format_date(ns, date, sizeof date);
    unsigned frac = (unsigned)(ns % 1000000000ull);
    if (frac == 0)
        snprintf(out, outlen, "%s+00:00", date);
    else if (frac % 1000000 == 0)
        snprintf(out, outlen, "%s.%03u+00:00", date, frac / 1000000);
    else if (frac % 1000 == 0)
        snprintf(out, outlen, "%s.%06u+00:00", date, frac / 1000);
    else
        snprintf(out, outlen, "%s.%09u+00:00", date, frac);
}

void format_log_timestamp(uint64_t ns, char *out, size_t outlen) {
    char date[32];
    format_date(ns, date, sizeof date);
    snprintf(out, outlen, "%s.%06uZ", date, (unsigned)(ns % 1000000000ull / 1000));
}
