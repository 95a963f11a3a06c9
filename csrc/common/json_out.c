/* common/json_out.c: a small JSON encoder over jansson values (see json_out.h). */
#include "common/json_out.h"
#include "common/bignum.h"
#include "common/swar.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's repr(float): the shortest digits that round-trip, fixed notation for
 * decimal exponents in [-4, 16), else d.ddde+XX. */
int json_out_real(char *out, size_t outlen, double d) {
    if (!isfinite(d))
        return snprintf(out, outlen, "null"); /* never produced: NaN is refused upstream */
    char sci[40];
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, d);
        if (strtod(sci, NULL) == d)
            break;
    }
    const char *p = sci;
    int neg = *p == '-';
    if (neg)
        p++;
    char digits[24];
    int nd = 0;
    for (; *p && *p != 'e'; p++)
        if (*p != '.' && nd < (int)sizeof digits - 1)
            digits[nd++] = *p;
    int exp = *p == 'e' ? atoi(p + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    buf b = {.data = out, .len = 0, .cap = outlen, .limit = outlen - 1};
    if (neg)
        buf_append(&b, "-", 1);
    if (exp >= -4 && exp < 16) {
        if (exp >= 0) {
            for (int i = 0; i <= exp; i++)
                buf_append(&b, i < nd ? &digits[i] : "0", 1);
            buf_append(&b, ".", 1);
            if (nd > exp + 1)
                buf_append(&b, digits + exp + 1, (size_t)(nd - exp - 1));
            else
                buf_append(&b, "0", 1);
        } else {
            buf_append(&b, "0.", 2);
            for (int i = 0; i < -exp - 1; i++)
                buf_append(&b, "0", 1);
            buf_append(&b, digits, (size_t)nd);
        }
    } else {
        buf_append(&b, digits, 1);
        if (nd > 1) {
            buf_append(&b, ".", 1);
            buf_append(&b, digits + 1, (size_t)(nd - 1));
        }
        buf_printf(&b, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    }
    return (int)b.len;
}

static int append_string(buf *out, const char *s, size_t len) {
    static const char hex[] = "0123456789abcdef";
    int rc = buf_reserve(out, len + 2);
    if (rc)
        return rc;
    out->data[out->len++] = '"';
    size_t start = 0;
    const unsigned char *base = (const unsigned char *)s, *end = base + len;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            /* in a plain run: jump ahead eight bytes at a time (non-ASCII stops it; fine) */
            i = (size_t)(swar_skip_plain(base + i + 1, end) - base) - 1;
            continue;
        }
        if ((rc = buf_append(out, s + start, i - start)))
            return rc;
        char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
        size_t elen = 2;
        switch (c) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if ((rc = buf_append(out, esc, elen)))
            return rc;
        start = i + 1;
    }
    if ((rc = buf_append(out, s + start, len - start)))
        return rc;
    return buf_append(out, "\"", 1);
}

static int cmp_keys(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Segments being collected (json_out_segments), or none (plain encoding). */
typedef struct seg_encoder {
    struct json_segments *segs;
    size_t big;
} seg_encoder;

static int seg_reference(seg_encoder *e, buf *out, const char *s, size_t len);

/* The one encoder: into out, and, with e, big plain strings referenced as segments. Recursive,
 * so bounded: nothing we parse or convert nests past JSON_OUT_MAX_DEPTH. */
static int encode(seg_encoder *e, buf *out, const json_t *v, int flags, int depth) {
    char num[40];
    int rc;
    if (depth > JSON_OUT_MAX_DEPTH)
        return JSON_OUT_TOO_DEEP;
    switch (json_typeof(v)) {
    case JSON_NULL: return buf_append(out, "null", 4);
    case JSON_TRUE: return buf_append(out, "true", 4);
    case JSON_FALSE: return buf_append(out, "false", 5);
    case JSON_INTEGER:
        return buf_append(out, num, (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v)));
    case JSON_REAL: return buf_append(out, num, (size_t)json_out_real(num, sizeof num, json_real_value(v)));
    case JSON_STRING:
        if (bignum_is(v)) /* an integer beyond 64 bits: its digits, bare */
            return buf_append(out, json_string_value(v) + 1, json_string_length(v) - 1);
        if (e && json_string_length(v) >= e->big)
            return seg_reference(e, out, json_string_value(v), json_string_length(v));
        return append_string(out, json_string_value(v), json_string_length(v));
    case JSON_ARRAY: {
        if ((rc = buf_append(out, "[", 1)))
            return rc;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            if (i && (rc = buf_append(out, ",", 1)))
                return rc;
            if ((rc = encode(e, out, json_array_get(v, i), flags, depth + 1)))
                return rc;
        }
        return buf_append(out, "]", 1);
    }
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        const char *stack_keys[32];
        const char **keys = n <= 32 ? stack_keys : malloc(n * sizeof *keys);
        if (!keys)
            return BUF_NOMEM;
        size_t i = 0;
        const char *k;
        json_t *val;
        json_object_foreach((json_t *)v, k, val) keys[i++] = k;
        if (flags & JSON_OUT_SORTED)
            qsort(keys, n, sizeof *keys, cmp_keys);
        rc = buf_append(out, "{", 1);
        for (i = 0; i < n && !rc; i++) {
            if (i)
                rc = buf_append(out, ",", 1);
            if (!rc)
                rc = append_string(out, keys[i], strlen(keys[i]));
            if (!rc)
                rc = buf_append(out, ":", 1);
            if (!rc)
                rc = encode(e, out, json_object_get(v, keys[i]), flags, depth + 1);
        }
        if (keys != stack_keys)
            free(keys);
        return rc ? rc : buf_append(out, "}", 1);
    }
    }
    return BUF_NOMEM;
}

int json_out_append(buf *out, const json_t *v, int flags) { return encode(NULL, out, v, flags, 0); }

/* A little over the encoded size (escapes aside): reserving it once spares a large value
 * the copies of buffer doubling, and the transient peak they cost. */
static size_t size_hint(const json_t *v, int depth) {
    if (depth > 64)
        return 0;
    size_t n = 16;
    if (json_is_string(v))
        return n + json_string_length(v);
    if (json_is_array(v)) {
        size_t i;
        json_t *item;
        json_array_foreach(v, i, item) n += size_hint(item, depth + 1);
    } else if (json_is_object(v)) {
        const char *k;
        json_t *item;
        json_object_foreach((json_t *)v, k, item) n += 4 + strlen(k) + size_hint(item, depth + 1);
    }
    return n;
}

size_t json_out_size_hint(const json_t *v) { return size_hint(v, 0); }

char *json_out_string(const json_t *v, int flags) {
    buf b;
    buf_init(&b, (size_t)1 << 30);
    size_t hint = size_hint(v, 0);
    if (hint > 4096)
        buf_reserve(&b, hint);
    if (json_out_append(&b, v, flags) != BUF_OK) {
        buf_free(&b);
        return NULL;
    }
    return buf_steal(&b);
}

/* jansson 2.x's private layout of a string value (value.c). Checked against the public
 * accessors before it is written to, so a different layout falls back to copying. */
typedef struct {
    json_t json;
    char *value;
    size_t length;
} jansson_string;

json_t *json_string_adopt(char *text, size_t len) {
    json_t *s = json_stringn_nocheck("", 0);
    if (!s) {
        free(text);
        return NULL;
    }
    jansson_string *js = (jansson_string *)s;
    if (js->value != json_string_value(s) || js->length != json_string_length(s) || js->length != 0) {
        json_decref(s);
        s = json_stringn_nocheck(text, len);
        free(text);
        return s;
    }
    free(js->value);
    js->value = text;
    js->length = len;
    return s;
}

/* ---- segments: big strings referenced, not copied ---- */

static int seg_push(json_segments *sg, const char *ptr, size_t len, char *owned) {
    if (sg->n == sg->cap) {
        size_t cap = sg->cap ? sg->cap * 2 : 8;
        json_segment *v = realloc(sg->v, cap * sizeof *v);
        if (!v) {
            free(owned);
            return BUF_NOMEM;
        }
        sg->v = v;
        sg->cap = cap;
    }
    sg->v[sg->n++] = (json_segment){.ptr = ptr, .len = len, .owned = owned};
    sg->total += len;
    return BUF_OK;
}

/* The text so far becomes an owned segment. */
static int seg_flush(json_segments *sg, buf *cur) {
    if (!cur->len)
        return BUF_OK;
    size_t len = cur->len;
    char *text = buf_steal(cur);
    return seg_push(sg, text, len, text);
}

static int plain_ascii(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    p = swar_skip_plain(p, end);
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p == end;
}

/* A big string: quoted in out, its bytes referenced in place when they need no escaping. */
static int seg_reference(seg_encoder *e, buf *out, const char *s, size_t len) {
    int rc;
    if (!plain_ascii(s, len))
        return append_string(out, s, len);
    if ((rc = buf_append(out, "\"", 1)) || (rc = seg_flush(e->segs, out)) || (rc = seg_push(e->segs, s, len, NULL)))
        return rc;
    return buf_append(out, "\"", 1);
}

int json_out_segments(const json_t *v, int flags, size_t big, json_segments *out) {
    memset(out, 0, sizeof *out);
    seg_encoder e = {.segs = out, .big = big};
    buf cur;
    buf_init(&cur, (size_t)1 << 30);
    int rc = encode(&e, &cur, v, flags, 0);
    if (!rc)
        rc = seg_flush(out, &cur);
    buf_free(&cur);
    if (rc)
        json_segments_free(out);
    return rc;
}

void json_segments_free(json_segments *sg) {
    for (size_t i = 0; i < sg->n; i++)
        free(sg->v[i].owned);
    free(sg->v);
    memset(sg, 0, sizeof *sg);
}
