/* common/metric_name.c: metric name rules (see metric_name.h). */
#include "common/metric_name.h"

#include <stdio.h>
#include <string.h>

static int is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static size_t utf8_char_len(unsigned char lead) {
    if (lead < 0x80)
        return 1;
    if ((lead & 0xE0) == 0xC0)
        return 2;
    if ((lead & 0xF0) == 0xE0)
        return 3;
    return 4;
}

static int failed(metric_name_error *err, int code, const char *seg, size_t seg_len) {
    err->code = code;
    err->seg = seg;
    err->seg_len = seg_len;
    return code;
}

static int check_segment(const char *seg, size_t len, size_t index, size_t count, metric_name_error *err) {
    if (len == 0)
        return failed(err,
                      index == 0           ? METRIC_NAME_LEADING_DOT
                      : index == count - 1 ? METRIC_NAME_TRAILING_DOT
                                           : METRIC_NAME_EMPTY_SEGMENT,
                      seg, 0);
    if (!is_letter((unsigned char)seg[0]))
        return failed(err, METRIC_NAME_BAD_START, seg, len);
    for (size_t i = 0; i + 1 < len; i++)
        if (seg[i] == '_' && seg[i + 1] == '_')
            return failed(err, METRIC_NAME_DOUBLE_UNDERSCORE, seg, len);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)seg[i];
        if (is_letter(c) || is_digit(c) || c == '_')
            continue;
        size_t n = utf8_char_len(c);
        err->ch = seg + i;
        err->ch_len = n > len - i ? len - i : n;
        return failed(err, METRIC_NAME_BAD_CHAR, seg, len);
    }
    if (seg[len - 1] == '_')
        return failed(err, METRIC_NAME_BAD_END, seg, len);
    return METRIC_NAME_OK;
}

int metric_name_check(const char *name, size_t len, int reserved, metric_name_error *err) {
    memset(err, 0, sizeof *err);
    if (reserved) {
        if (len == 12 && !memcmp(name, "predict_time", 12))
            return failed(err, METRIC_NAME_PREDICT_TIME, NULL, 0);
        if (len >= 4 && !memcmp(name, "cog.", 4))
            return failed(err, METRIC_NAME_COG_PREFIX, NULL, 0);
    }
    if (len == 0)
        return failed(err, METRIC_NAME_EMPTY, NULL, 0);
    if (len > METRIC_NAME_MAX_BYTES) {
        err->count = len;
        return failed(err, METRIC_NAME_TOO_LONG, NULL, 0);
    }
    size_t count = 1;
    for (size_t i = 0; i < len; i++)
        count += name[i] == '.';
    if (count > METRIC_NAME_MAX_SEGMENTS) {
        err->count = count;
        return failed(err, METRIC_NAME_TOO_MANY_SEGMENTS, NULL, 0);
    }
    size_t start = 0, index = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && name[i] != '.')
            continue;
        int rc = check_segment(name + start, i - start, index, count, err);
        if (rc)
            return rc;
        start = i + 1;
        index++;
    }
    return METRIC_NAME_OK;
}

void metric_name_message(const metric_name_error *err, char *out, size_t outlen) {
    int sl = (int)err->seg_len, cl = (int)err->ch_len;
    const char *seg = err->seg ? err->seg : "";
    switch (err->code) {
    case METRIC_NAME_OK: snprintf(out, outlen, "metric name is valid"); break;
    case METRIC_NAME_PREDICT_TIME: snprintf(out, outlen, "'predict_time' is reserved by the runtime"); break;
    case METRIC_NAME_COG_PREFIX: snprintf(out, outlen, "the 'cog.' prefix is reserved for system metrics"); break;
    case METRIC_NAME_EMPTY: snprintf(out, outlen, "metric name must not be empty"); break;
    case METRIC_NAME_TOO_LONG:
        snprintf(out, outlen, "metric name must be %d characters or fewer (got %zu characters)",
                 METRIC_NAME_MAX_BYTES, err->count);
        break;
    case METRIC_NAME_TOO_MANY_SEGMENTS:
        snprintf(out, outlen, "metric name must have at most %d dot-separated segments (got %zu)",
                 METRIC_NAME_MAX_SEGMENTS, err->count);
        break;
    case METRIC_NAME_LEADING_DOT: snprintf(out, outlen, "metric name must not start with a dot"); break;
    case METRIC_NAME_TRAILING_DOT: snprintf(out, outlen, "metric name must not end with a dot"); break;
    case METRIC_NAME_EMPTY_SEGMENT:
        snprintf(out, outlen, "metric name must not contain empty segments (consecutive dots)");
        break;
    case METRIC_NAME_BAD_START:
        snprintf(out, outlen, "metric name segment '%.*s' must start with a letter", sl, seg);
        break;
    case METRIC_NAME_DOUBLE_UNDERSCORE:
        snprintf(out, outlen, "metric name segment '%.*s' must not contain consecutive underscores", sl, seg);
        break;
    case METRIC_NAME_BAD_CHAR:
        snprintf(out, outlen, "metric name segment '%.*s' contains invalid character '%.*s'", sl, seg, cl,
                 err->ch ? err->ch : "");
        break;
    case METRIC_NAME_BAD_END:
        snprintf(out, outlen, "metric name segment '%.*s' must end with a letter or digit", sl, seg);
        break;
    default: snprintf(out, outlen, "invalid metric name"); break;
    }
}

int metric_path_valid(const char *name) {
    if (!name || !*name)
        return 0;
    size_t n = strlen(name);
    return name[0] != '.' && name[n - 1] != '.' && !strstr(name, "..");
}
