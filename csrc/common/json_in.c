/* common/json_in.c: a fast JSON parser producing jansson values. jansson's own parser reads
 * byte by byte through a stream layer (~60 MB/s); request bodies and frames can be tens of
 * MB, so strings are scanned with memchr-style loops and built with json_stringn_nocheck
 * after one UTF-8 check. Errors read like serde_json's ("... at line L column C"). */
#include "common/json_in.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/swar.h"

#define MAX_DEPTH 128 /* serde_json's recursion limit */

typedef struct parser {
    const unsigned char *p, *start, *end;
    json_in_error *err;
    int depth;
    buf scratch; /* unescaped strings */
} parser;

static void position(parser *ps, const unsigned char *at, int *line, int *col) {
    int l = 1, c = 0;
    for (const unsigned char *q = ps->start; q < at && q < ps->end; q++) {
        if (*q == '\n')
            l++, c = 0;
        else if ((*q & 0xC0) != 0x80)
            c++;
    }
    *line = l;
    *col = c;
}

static json_t *fail_at(parser *ps, const unsigned char *at, const char *msg) {
    if (ps->err && !ps->err->text[0]) {
        position(ps, at, &ps->err->line, &ps->err->column);
        snprintf(ps->err->text, sizeof ps->err->text, "%s at line %d column %d", msg, ps->err->line,
                 ps->err->column);
    }
    return NULL;
}

/* serde reports the position of the last byte consumed */
static json_t *fail(parser *ps, const char *msg) { return fail_at(ps, ps->p < ps->end ? ps->p + 1 : ps->end, msg); }

static void skip_ws(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
}

/* Length of a valid UTF-8 sequence at s (1-4), or 0. */
static int utf8_len(const unsigned char *s, const unsigned char *end) {
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    int n;
    unsigned min;
    if ((c & 0xE0) == 0xC0)
        n = 2, min = 0x80, c &= 0x1F;
    else if ((c & 0xF0) == 0xE0)
        n = 3, min = 0x800, c &= 0x0F;
    else if ((c & 0xF8) == 0xF0)
        n = 4, min = 0x10000, c &= 0x07;
    else
        return 0;
    if (end - s < n)
        return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
        return 0;
    return n;
}

static int hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return -1;
    }
    *out = v;
    return 0;
}

static void put_utf8(buf *b, unsigned cp) {
    char o[4];
    size_t n;
    if (cp < 0x80)
        o[0] = (char)cp, n = 1;
    else if (cp < 0x800)
        o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    else if (cp < 0x10000)
        o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[2] = (char)(0x80 | (cp & 0x3F)),
        n = 3;
    else
        o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 0x3F)),
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), o[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    buf_append(b, o, n);
}

/* Parses a string at ps->p (the opening quote). Returns its bytes in *out / *len: pointing
 * into the input when there were no escapes, else into ps->scratch. 0 or -1. */
static int parse_string_raw(parser *ps, const char **out, size_t *len) {
    const unsigned char *s = ++ps->p;
    const unsigned char *q = s;
    /* fast path: printable ASCII up to the closing quote, eight bytes at a time */
    for (;;) {
        q = swar_skip_plain(q, ps->end);
        while (q < ps->end && *q >= 0x20 && *q != '"' && *q != '\\' && *q < 0x80)
            q++;
        if (q >= ps->end) {
            ps->p = q;
            fail_at(ps, ps->end, "EOF while parsing a string");
            return -1;
        }
        if (*q >= 0x80) {
            int n = utf8_len(q, ps->end);
            if (!n) {
                ps->p = q;
                fail(ps, "invalid unicode code point");
                return -1;
            }
            q += n;
            continue;
        }
        break;
    }
    if (*q == '"') {
        *out = (const char *)s;
        *len = (size_t)(q - s);
        ps->p = q + 1;
        return 0;
    }
    if (*q < 0x20) {
        ps->p = q;
        fail(ps, "control character (\\u0000-\\u001F) found while parsing a string");
        return -1;
    }
    /* escapes: copy what was scanned, then go on unescaping */
    buf *b = &ps->scratch;
    buf_reset(b);
    if (buf_append(b, s, (size_t)(q - s)) != BUF_OK)
        goto nomem;
    while (q < ps->end) {
        unsigned char c = *q;
        if (c == '"') {
            *out = b->data ? b->data : "";
            *len = b->len;
            ps->p = q + 1;
            return 0;
        }
        if (c < 0x20) {
            ps->p = q;
            fail(ps, "control character (\\u0000-\\u001F) found while parsing a string");
            return -1;
        }
        if (c != '\\') {
            const unsigned char *r = q;
            while (r < ps->end && *r >= 0x20 && *r != '"' && *r != '\\') {
                if (*r >= 0x80) {
                    int n = utf8_len(r, ps->end);
                    if (!n) {
                        ps->p = r;
                        fail(ps, "invalid unicode code point");
                        return -1;
                    }
                    r += n;
                } else {
                    r++;
                }
            }
            if (buf_append(b, q, (size_t)(r - q)) != BUF_OK)
                goto nomem;
            q = r;
            continue;
        }
        if (q + 1 >= ps->end)
            break;
        char e = (char)q[1];
        q += 2;
        switch (e) {
        case '"': buf_append(b, "\"", 1); break;
        case '\\': buf_append(b, "\\", 1); break;
        case '/': buf_append(b, "/", 1); break;
        case 'b': buf_append(b, "\b", 1); break;
        case 'f': buf_append(b, "\f", 1); break;
        case 'n': buf_append(b, "\n", 1); break;
        case 'r': buf_append(b, "\r", 1); break;
        case 't': buf_append(b, "\t", 1); break;
        case 'u': {
            unsigned cp;
            if (ps->end - q < 4 || hex4(q, &cp) != 0) {
                ps->p = q;
                fail(ps, "invalid escape");
                return -1;
            }
            q += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (ps->end - q < 6 || q[0] != '\\' || q[1] != 'u' || hex4(q + 2, &lo) != 0 || lo < 0xDC00 ||
                    lo > 0xDFFF) {
                    ps->p = q - 1;
                    fail(ps, "unexpected end of hex escape");
                    return -1;
                }
                q += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                ps->p = q - 1;
                fail(ps, "lone leading surrogate in hex escape");
                return -1;
            }
            if (cp == 0) {
                ps->p = q - 1;
                fail(ps, "NUL characters are not supported");
                return -1;
            }
            put_utf8(b, cp);
            break;
        }
        default:
            ps->p = q - 1;
            fail(ps, "invalid escape");
            return -1;
        }
        if (b->len == 0 && !b->data)
            goto nomem;
    }
    ps->p = ps->end;
    fail_at(ps, ps->end, "EOF while parsing a string");
    return -1;
nomem:
    fail(ps, "out of memory");
    return -1;
}

static json_t *parse_value(parser *ps);

static json_t *parse_number(parser *ps) {
    const unsigned char *s = ps->p, *q = s;
    int is_real = 0;
    if (q < ps->end && *q == '-')
        q++;
    if (q >= ps->end || *q < '0' || *q > '9') {
        ps->p = q;
        return fail(ps, q >= ps->end ? "EOF while parsing a value" : "invalid number");
    }
    if (*q == '0')
        q++;
    else
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    if (q < ps->end && *q == '.') {
        is_real = 1;
        q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            ps->p = q;
            return fail(ps, "invalid number");
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    if (q < ps->end && (*q == 'e' || *q == 'E')) {
        is_real = 1;
        q++;
        if (q < ps->end && (*q == '+' || *q == '-'))
            q++;
        if (q >= ps->end || *q < '0' || *q > '9') {
            ps->p = q;
            return fail(ps, "invalid number");
        }
        while (q < ps->end && *q >= '0' && *q <= '9')
            q++;
    }
    char tmp[64];
    size_t n = (size_t)(q - s);
    char *text = n < sizeof tmp ? tmp : malloc(n + 1);
    if (!text)
        return fail(ps, "out of memory");
    memcpy(text, s, n);
    text[n] = '\0';
    json_t *v = NULL;
    if (!is_real) {
        errno = 0;
        long long ll = strtoll(text, NULL, 10);
        if (errno != ERANGE)
            v = json_integer(ll);
        else
            is_real = 1; /* beyond 64 bits: a float, as from Python */
    }
    if (is_real) {
        double d = strtod(text, NULL);
        if (isinf(d)) {
            if (text != tmp)
                free(text);
            ps->p = q - 1;
            return fail(ps, "number out of range");
        }
        v = json_real(d);
    }
    if (text != tmp)
        free(text);
    ps->p = q;
    return v ? v : fail(ps, "out of memory");
}

static json_t *parse_literal(parser *ps, const char *word, json_t *value) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) >= n && !memcmp(ps->p, word, n)) {
        ps->p += n;
        return value;
    }
    /* serde points at the first byte that differs */
    const unsigned char *q = ps->p;
    for (size_t i = 0; i < n && q < ps->end && *q == (unsigned char)word[i]; i++)
        q++;
    ps->p = q;
    return fail(ps, q >= ps->end ? "EOF while parsing a value" : "expected ident");
}

static json_t *parse_array(parser *ps) {
    if (++ps->depth > MAX_DEPTH)
        return fail(ps, "recursion limit exceeded");
    ps->p++;
    json_t *arr = json_array();
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == ']') {
        ps->p++;
        ps->depth--;
        return arr;
    }
    for (;;) {
        json_t *v = parse_value(ps);
        if (!v || json_array_append_new(arr, v) != 0)
            goto failed;
        skip_ws(ps);
        if (ps->p >= ps->end) {
            fail_at(ps, ps->end, "EOF while parsing a list");
            goto failed;
        }
        if (*ps->p == ',') {
            ps->p++;
            skip_ws(ps);
            if (ps->p < ps->end && *ps->p == ']') {
                fail(ps, "trailing comma");
                goto failed;
            }
            continue;
        }
        if (*ps->p == ']') {
            ps->p++;
            ps->depth--;
            return arr;
        }
        fail(ps, "expected `,` or `]`");
        goto failed;
    }
failed:
    json_decref(arr);
    return NULL;
}

static json_t *parse_object(parser *ps) {
    if (++ps->depth > MAX_DEPTH)
        return fail(ps, "recursion limit exceeded");
    ps->p++;
    json_t *obj = json_object();
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        ps->depth--;
        return obj;
    }
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end) {
            fail_at(ps, ps->end, "EOF while parsing an object");
            goto failed;
        }
        if (*ps->p != '"') {
            fail(ps, *ps->p == '}' ? "trailing comma" : "key must be a string");
            goto failed;
        }
        const char *k;
        size_t klen;
        if (parse_string_raw(ps, &k, &klen) != 0)
            goto failed;
        if (memchr(k, '\0', klen)) {
            fail(ps, "NUL characters are not supported");
            goto failed;
        }
        char kstack[128];
        char *key = klen < sizeof kstack ? kstack : malloc(klen + 1);
        if (!key) {
            fail(ps, "out of memory");
            goto failed;
        }
        memcpy(key, k, klen);
        key[klen] = '\0';
        skip_ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') {
            if (key != kstack)
                free(key);
            if (ps->p >= ps->end)
                fail_at(ps, ps->end, "EOF while parsing an object");
            else
                fail(ps, "expected `:`");
            goto failed;
        }
        ps->p++;
        json_t *v = parse_value(ps);
        if (!v) {
            if (key != kstack)
                free(key);
            goto failed;
        }
        int rc = json_object_set_new_nocheck(obj, key, v); /* duplicate keys: the last wins */
        if (key != kstack)
            free(key);
        if (rc != 0) {
            fail(ps, "out of memory");
            goto failed;
        }
        skip_ws(ps);
        if (ps->p >= ps->end) {
            fail_at(ps, ps->end, "EOF while parsing an object");
            goto failed;
        }
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p == '}') {
            ps->p++;
            ps->depth--;
            return obj;
        }
        fail(ps, "expected `,` or `}`");
        goto failed;
    }
failed:
    json_decref(obj);
    return NULL;
}

static json_t *parse_value(parser *ps) {
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail_at(ps, ps->end, "EOF while parsing a value");
    switch (*ps->p) {
    case '{': return parse_object(ps);
    case '[': return parse_array(ps);
    case '"': {
        const char *s;
        size_t len;
        if (parse_string_raw(ps, &s, &len) != 0)
            return NULL;
        json_t *v = json_stringn_nocheck(s, len);
        return v ? v : fail(ps, "out of memory");
    }
    case 't': return parse_literal(ps, "true", json_true());
    case 'f': return parse_literal(ps, "false", json_false());
    case 'n': return parse_literal(ps, "null", json_null());
    default:
        if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
            return parse_number(ps);
        return fail(ps, "expected value");
    }
}

json_t *json_in_parse(const char *data, size_t len, json_in_error *err) {
    parser ps = {.p = (const unsigned char *)data, .start = (const unsigned char *)data,
                 .end = (const unsigned char *)data + len, .err = err};
    if (err)
        err->text[0] = '\0';
    buf_init(&ps.scratch, (size_t)1 << 31);
    json_t *v = parse_value(&ps);
    if (v) {
        skip_ws(&ps);
        if (ps.p < ps.end) {
            fail(&ps, "trailing characters");
            json_decref(v);
            v = NULL;
        }
    }
    buf_free(&ps.scratch);
    return v;
}

/* ---- spans: where a member's value sits in the raw text ---- */

static const unsigned char *skip_ws_raw(const unsigned char *p, const unsigned char *end) {
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* Past the string at p (its opening quote); NULL if unterminated. */
static const unsigned char *skip_string_raw(const unsigned char *p, const unsigned char *end) {
    p++;
    for (;;) {
        p = swar_skip_plain(p, end);
        while (p < end && *p != '"' && *p != '\\')
            p++;
        if (p >= end)
            return NULL;
        if (*p == '"')
            return p + 1;
        p += 2; /* an escape: skip the escaped byte */
    }
}

/* Past one (already valid) value. */
static const unsigned char *skip_value_raw(const unsigned char *p, const unsigned char *end) {
    p = skip_ws_raw(p, end);
    if (p >= end)
        return NULL;
    if (*p == '"')
        return skip_string_raw(p, end);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (p < end) {
            if (*p == '"') {
                p = skip_string_raw(p, end);
                if (!p)
                    return NULL;
                continue;
            }
            if (*p == '{' || *p == '[')
                depth++;
            else if ((*p == '}' || *p == ']') && --depth == 0)
                return p + 1;
            p++;
        }
        return NULL;
    }
    while (p < end && !strchr(",]} \t\r\n", *p))
        p++;
    return p;
}

int json_in_member_span(const char *data, size_t len, const char *key, size_t *off, size_t *vlen) {
    const unsigned char *start = (const unsigned char *)data, *end = start + len;
    const unsigned char *p = skip_ws_raw(start, end), *found = NULL, *found_end = NULL;
    size_t klen = strlen(key);
    if (p >= end || *p != '{')
        return -1;
    p = skip_ws_raw(p + 1, end);
    while (p && p < end && *p == '"') {
        const unsigned char *k = p + 1;
        const unsigned char *kend = skip_string_raw(p, end);
        if (!kend)
            return -1;
        int match = (size_t)(kend - 1 - k) == klen && !memcmp(k, key, klen);
        p = skip_ws_raw(kend, end);
        if (p >= end || *p != ':')
            return -1;
        const unsigned char *v = skip_ws_raw(p + 1, end);
        p = skip_value_raw(v, end);
        if (!p)
            return -1;
        if (match) { /* duplicates: the last wins, as in the parser */
            found = v;
            found_end = p;
        }
        p = skip_ws_raw(p, end);
        if (p < end && *p == ',')
            p = skip_ws_raw(p + 1, end);
        else
            break;
    }
    if (!found)
        return -1;
    *off = (size_t)(found - start);
    *vlen = (size_t)(found_end - found);
    return 0;
}
