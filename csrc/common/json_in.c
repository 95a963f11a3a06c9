/* common/json_in.c: the JSON reader, producing jansson values. jansson's own parser reads
 * byte by byte through a stream layer (~60 MB/s); request bodies and frames can be tens of
 * MB, so strings are scanned eight bytes at a time and built with json_stringn_nocheck after
 * one UTF-8 check. Arrays and objects are kept on an explicit stack, not the C one, which also
 * names the path of a duplicate key. Errors read like serde_json's ("... at line L column C"). */
#include "common/json_in.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bignum.h"
#include "common/buf.h"
#include "common/swar.h"
#include "common/util.h"

#define INLINE_FRAMES 32

/* One open array or object. */
typedef struct frame {
    json_t *container;
    size_t key_at;          /* object: its pending key, NUL-terminated at keys.data + key_at */
    size_t key_end;         /* object: the offset just past that key in the text */
    size_t index;           /* the item being read: array index, member ordinal */
    int is_object;
    json_in_member *member; /* the value of a located top-level member: record its items */
} frame;

typedef struct parser {
    const unsigned char *p, *start, *end;
    json_in_error *err;
    unsigned flags;
    int max_depth, depth;
    frame *stack; /* depth entries in use */
    int stack_cap;
    json_in_options *opts;
    json_in_member *pending; /* the located member whose value is being read */
    buf scratch;             /* unescaped strings */
    buf keys;                /* the pending key of each open object, outermost first */
    frame inline_frames[INLINE_FRAMES];
} parser;

void json_in_position(const char *data, size_t len, size_t offset, int *line, int *column) {
    int l = 1, c = 0;
    const unsigned char *q = (const unsigned char *)data, *at = q ? q + (offset < len ? offset : len) : q;
    for (; q < at; q++) {
        if (*q == '\n')
            l++, c = 0;
        else if ((*q & 0xC0) != 0x80)
            c++;
    }
    *line = l;
    *column = c;
}

/* The first error wins: a later one (an unwind's) never overwrites it. */
static json_t *fail_code(parser *ps, const unsigned char *at, int code, const char *prefix, const char *msg) {
    json_in_error *e = ps->err;
    if (e && !e->code) {
        e->code = code;
        json_in_position((const char *)ps->start, (size_t)(ps->end - ps->start), (size_t)(at - ps->start), &e->line,
                         &e->column);
        snprintf(e->text, sizeof e->text, "%s%s at line %d column %d", prefix, msg, e->line, e->column);
    }
    return NULL;
}

static json_t *fail_at(parser *ps, const unsigned char *at, const char *msg) {
    return fail_code(ps, at, JSON_IN_ESYNTAX, "", msg);
}

/* serde reports the position of the last byte consumed */
static json_t *fail(parser *ps, const char *msg) { return fail_at(ps, ps->p < ps->end ? ps->p + 1 : ps->end, msg); }

static json_t *nomem(parser *ps) {
    return fail_code(ps, ps->p < ps->end ? ps->p + 1 : ps->end, JSON_IN_ENOMEM, "", "out of memory");
}

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

static int put_utf8(buf *b, unsigned cp) {
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
    return buf_append(b, o, n);
}

/* Past the plain run at q, eight bytes at a time where they are ASCII: the first '"', '\\',
 * control character, or the end; characters of more than one byte are checked on the way.
 * NULL, after failing, at one that is not valid UTF-8. */
static const unsigned char *skip_plain_run(parser *ps, const unsigned char *q) {
    for (;;) {
        q = swar_skip_plain(q, ps->end);
        while (q < ps->end && *q >= 0x20 && *q != '"' && *q != '\\' && *q < 0x80)
            q++;
        if (q >= ps->end || *q < 0x80)
            return q;
        int n = utf8_len(q, ps->end);
        if (!n) {
            ps->p = q;
            fail(ps, "invalid unicode code point");
            return NULL;
        }
        q += n;
    }
}

/* The rest of the string at s, from q (its first backslash), unescaped into ps->scratch. */
static int parse_string_escaped(parser *ps, const unsigned char *s, const unsigned char *q, const char **out,
                                size_t *len) {
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
            const unsigned char *r = skip_plain_run(ps, q);
            if (!r)
                return -1;
            if (buf_append(b, q, (size_t)(r - q)) != BUF_OK)
                goto nomem;
            q = r;
            continue;
        }
        if (q + 1 >= ps->end)
            break;
        char e = (char)q[1];
        q += 2;
        int rc = BUF_OK; /* every append checked: a dropped character under memory pressure would
                          * be a wrong string, not an error (found by tests/c/test_chaos.c) */
        switch (e) {
        case '"': rc = buf_append(b, "\"", 1); break;
        case '\\': rc = buf_append(b, "\\", 1); break;
        case '/': rc = buf_append(b, "/", 1); break;
        case 'b': rc = buf_append(b, "\b", 1); break;
        case 'f': rc = buf_append(b, "\f", 1); break;
        case 'n': rc = buf_append(b, "\n", 1); break;
        case 'r': rc = buf_append(b, "\r", 1); break;
        case 't': rc = buf_append(b, "\t", 1); break;
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
            rc = put_utf8(b, cp);
            break;
        }
        default:
            ps->p = q - 1;
            fail(ps, "invalid escape");
            return -1;
        }
        if (rc != BUF_OK)
            goto nomem;
    }
    ps->p = ps->end;
    fail_at(ps, ps->end, "EOF while parsing a string");
    return -1;
nomem:
    nomem(ps);
    return -1;
}

/* Parses a string at ps->p (the opening quote). Returns its bytes in *out / *len: pointing
 * into the input when there were no escapes, else into ps->scratch. 0 or -1. */
static int parse_string_raw(parser *ps, const char **out, size_t *len) {
    const unsigned char *s = ++ps->p;
    const unsigned char *q = skip_plain_run(ps, s);
    if (!q)
        return -1;
    if (q >= ps->end) {
        ps->p = q;
        fail_at(ps, ps->end, "EOF while parsing a string");
        return -1;
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
    return parse_string_escaped(ps, s, q, out, len);
}

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
        return nomem(ps);
    memcpy(text, s, n);
    text[n] = '\0';
    json_t *v = NULL;
    if (!is_real) {
        errno = 0;
        long long ll = strtoll(text, NULL, 10);
        /* beyond 64 bits: a bignum, exact as json.loads gives it (common/bignum.h) */
        v = errno != ERANGE ? json_integer(ll) : bignum_from_text(text, n);
    } else {
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
    return v ? v : nomem(ps);
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

static json_t *parse_scalar(parser *ps) {
    switch (*ps->p) {
    case '"': {
        const char *s;
        size_t len;
        if (parse_string_raw(ps, &s, &len) != 0)
            return NULL;
        json_t *v = json_stringn_nocheck(s, len);
        return v ? v : nomem(ps);
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

/* ---- arrays and objects, on the parser's own stack ---- */

static size_t offset(const parser *ps) { return (size_t)(ps->p - ps->start); }

static frame *innermost(parser *ps) { return &ps->stack[ps->depth - 1]; }

/* Opens the array or object at ps->p. 0, or -1 after failing. */
static int open_container(parser *ps) {
    if (ps->depth >= ps->max_depth) {
        fail_code(ps, ps->p + 1, JSON_IN_EDEPTH, "", "recursion limit exceeded");
        return -1;
    }
    if (ps->depth == ps->stack_cap) {
        int cap = ps->stack_cap * 2 < ps->max_depth ? ps->stack_cap * 2 : ps->max_depth;
        frame *s = ps->stack == ps->inline_frames ? malloc((size_t)cap * sizeof *s)
                                                   : realloc(ps->stack, (size_t)cap * sizeof *s);
        if (!s) {
            nomem(ps);
            return -1;
        }
        if (ps->stack == ps->inline_frames)
            memcpy(s, ps->inline_frames, sizeof ps->inline_frames);
        ps->stack = s;
        ps->stack_cap = cap;
    }
    json_t *c = *ps->p == '{' ? json_object() : json_array();
    if (!c) {
        nomem(ps);
        return -1;
    }
    frame *f = &ps->stack[ps->depth++];
    f->container = c;
    f->is_object = *ps->p == '{';
    f->key_at = ps->keys.len;
    f->index = 0;
    f->member = ps->depth == 2 && ps->pending && ps->pending->with_items ? ps->pending : NULL;
    ps->p++;
    return 0;
}

/* Appends len bytes of s to out (cap bytes, NUL-terminated), cut at a character boundary
 * when they do not fit. */
static void append_clipped(char *out, size_t cap, size_t *n, const char *s, size_t len) {
    if (*n + 1 >= cap)
        return;
    if (len > cap - 1 - *n) {
        len = utf8_cut(s, cap - 1 - *n);
    }
    memcpy(out + *n, s, len);
    *n += len;
    out[*n] = '\0';
}

/* serde's wording; the path (serde_path_to_error's form, `input.a[0]`) names the object
 * holding the key (the innermost frame), and the position is just past the repeated key. */
static void fail_duplicate(parser *ps, const frame *dup) {
    char prefix[64], msg[96], index[32]; /* long names are cut: the whole text fits in 200 */
    size_t n = 0, m = 0;
    prefix[0] = '\0';
    for (int i = 0; i < ps->depth - 1; i++) {
        const frame *f = &ps->stack[i];
        if (f->is_object) {
            if (n)
                append_clipped(prefix, sizeof prefix - 2, &n, ".", 1);
            const char *k = ps->keys.data + f->key_at;
            append_clipped(prefix, sizeof prefix - 2, &n, k, strlen(k));
        } else {
            int len = snprintf(index, sizeof index, "[%zu]", f->index);
            append_clipped(prefix, sizeof prefix - 2, &n, index, (size_t)len);
        }
    }
    if (n)
        append_clipped(prefix, sizeof prefix, &n, ": ", 2);
    const char *key = ps->keys.data + dup->key_at;
    append_clipped(msg, sizeof msg, &m, "duplicate field `", 17);
    append_clipped(msg, sizeof msg - 1, &m, key, strlen(key));
    append_clipped(msg, sizeof msg, &m, "`", 1);
    fail_code(ps, ps->start + dup->key_end, JSON_IN_EDUPLICATE, prefix, msg);
}

static json_in_member *member_named(json_in_options *opts, const char *key) {
    for (size_t i = 0; i < opts->num_members; i++) {
        json_in_member *m = &opts->members[i];
        if (!strcmp(m->key, key)) {
            free(m->item_ends); /* a duplicate allowed in: the last wins */
            m->item_ends = NULL;
            m->num_items = 0;
            m->found = 1;
            return m;
        }
    }
    return NULL;
}

/* Reads `"key" :` in the innermost object, at or before ps->p. 0, or -1 after failing. */
static int read_key(parser *ps, frame *f) {
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail_at(ps, ps->end, "EOF while parsing an object");
        return -1;
    }
    if (*ps->p != '"') {
        fail(ps, *ps->p == '}' ? "trailing comma" : "key must be a string");
        return -1;
    }
    const char *k;
    size_t klen;
    if (parse_string_raw(ps, &k, &klen) != 0)
        return -1;
    if (memchr(k, '\0', klen)) {
        fail(ps, "NUL characters are not supported");
        return -1;
    }
    f->key_end = offset(ps);
    buf *keys = &ps->keys;
    keys->len = f->key_at; /* the previous key of this object is done with */
    if (keys->len + klen + 1 >= keys->cap && buf_reserve(keys, klen + 1) != BUF_OK) {
        nomem(ps);
        return -1;
    }
    memcpy(keys->data + keys->len, k, klen);
    keys->data[keys->len + klen] = '\0';
    keys->len += klen + 1;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
        if (ps->p >= ps->end)
            fail_at(ps, ps->end, "EOF while parsing an object");
        else
            fail(ps, "expected `:`");
        return -1;
    }
    ps->p++;
    if (ps->depth == 1 && ps->opts && ps->opts->num_members)
        ps->pending = member_named(ps->opts, keys->data + f->key_at);
    return 0;
}

/* A value ended: into its container it goes (the record of a located member updated). Then
 * 0: the next value starts at ps->p; 1: the container ended too and is now *v; 2: *v was the
 * top-level value; -1: failed (*v is consumed either way). */
static int value_ended(parser *ps, json_t **v) {
    if (ps->depth == 0)
        return 2;
    frame *f = innermost(ps);
    size_t at = offset(ps);
    if (f->member) {
        json_in_member *m = f->member;
        if ((m->num_items & (m->num_items + 1)) == 0) { /* 0, 1, 3, 7, ...: full, double */
            size_t *e = realloc(m->item_ends, (2 * m->num_items + 2) * sizeof *e);
            if (!e) {
                json_decref(*v);
                *v = NULL;
                nomem(ps);
                return -1;
            }
            m->item_ends = e;
        }
        m->item_ends[m->num_items++] = at;
    }
    int is_object = f->is_object;
    int rc;
    if (is_object) {
        if (ps->depth == 1 && ps->pending) {
            ps->pending->end = at;
            ps->pending = NULL;
        }
        rc = json_object_set_new_nocheck(f->container, ps->keys.data + f->key_at, *v);
    } else {
        rc = json_array_append_new(f->container, *v);
    }
    *v = NULL;
    if (rc != 0) {
        nomem(ps);
        return -1;
    }
    /* A repeated key replaced a value instead of adding one. Found here rather than when
     * the key is read, the check costs nothing; it is reported at the key all the same. */
    if (is_object && (ps->flags & JSON_IN_REJECT_DUPLICATES) && json_object_size(f->container) == f->index) {
        fail_duplicate(ps, f);
        return -1;
    }
    f->index++;
    skip_ws(ps);
    if (ps->p >= ps->end) {
        fail_at(ps, ps->end, is_object ? "EOF while parsing an object" : "EOF while parsing a list");
        return -1;
    }
    if (*ps->p == ',') {
        ps->p++;
        if (is_object)
            return read_key(ps, f);
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ']') {
            fail(ps, "trailing comma");
            return -1;
        }
        return 0;
    }
    if (*ps->p == (is_object ? '}' : ']')) {
        ps->p++;
        *v = f->container;
        ps->keys.len = f->key_at;
        ps->depth--;
        return 1;
    }
    fail(ps, is_object ? "expected `,` or `}`" : "expected `,` or `]`");
    return -1;
}

/* One value and everything inside it, iteratively: depth is bounded by max_depth, not by
 * the C stack. */
static json_t *parse_document(parser *ps) {
    json_t *v = NULL;
    int rc;
    for (;;) {
        skip_ws(ps);
        if (ps->p >= ps->end) {
            fail_at(ps, ps->end, "EOF while parsing a value");
            goto failed;
        }
        if (ps->pending && ps->depth == 1)
            ps->pending->start = offset(ps);
        unsigned char c = *ps->p;
        if (c == '{' || c == '[') {
            if (open_container(ps) != 0)
                goto failed;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != (c == '{' ? '}' : ']')) {
                if (c == '{' && read_key(ps, innermost(ps)) != 0)
                    goto failed;
                continue; /* to the first item */
            }
            ps->p++; /* empty */
            v = innermost(ps)->container;
            ps->depth--;
        } else if (!(v = parse_scalar(ps))) {
            goto failed;
        }
        while ((rc = value_ended(ps, &v)) == 1)
            ;
        if (rc == 2)
            return v;
        if (rc < 0)
            goto failed;
    }
failed:
    json_decref(v);
    while (ps->depth > 0)
        json_decref(ps->stack[--ps->depth].container);
    return NULL;
}

json_t *json_in_parse_with(const char *data, size_t len, json_in_options *opts, json_in_error *err) {
    parser ps = {.p = (const unsigned char *)data, .start = (const unsigned char *)data,
                 .end = (const unsigned char *)data + len, .err = err, .opts = opts,
                 .flags = opts ? opts->flags : 0,
                 .max_depth = opts && opts->max_depth > 0 ? opts->max_depth : JSON_IN_MAX_DEPTH};
    ps.stack = ps.inline_frames;
    ps.stack_cap = INLINE_FRAMES;
    if (err) {
        err->code = 0;
        err->line = err->column = 0;
        err->text[0] = '\0';
    }
    for (size_t i = 0; opts && i < opts->num_members; i++) {
        json_in_member *m = &opts->members[i];
        m->found = 0;
        m->start = m->end = 0;
        m->item_ends = NULL;
        m->num_items = 0;
    }
    buf_init(&ps.scratch, (size_t)1 << 31);
    buf_init(&ps.keys, (size_t)1 << 31);
    json_t *v = parse_document(&ps);
    if (v) {
        if (opts)
            opts->end = offset(&ps);
        skip_ws(&ps);
        if (ps.p < ps.end) {
            fail(&ps, "trailing characters");
            json_decref(v);
            v = NULL;
        }
    }
    if (ps.stack != ps.inline_frames)
        free(ps.stack);
    buf_free(&ps.scratch);
    buf_free(&ps.keys);
    return v;
}

json_t *json_in_parse(const char *data, size_t len, json_in_error *err) {
    return json_in_parse_with(data, len, NULL, err);
}

void json_in_members_free(json_in_member *members, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(members[i].item_ends);
        members[i].item_ends = NULL;
        members[i].num_items = 0;
    }
}

json_t *json_in_parse_file(const char *path, json_in_error *err) {
    json_t *v = NULL;
    char *data = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0)
        goto io_failed;
    size_t size = (size_t)st.st_size, have = 0;
    data = malloc(size + 1);
    if (!data)
        goto io_failed;
    while (have < size) {
        ssize_t n = read(fd, data + have, size - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO; /* shorter than fstat said */
            goto io_failed;
        }
        have += (size_t)n;
    }
    v = json_in_parse(data, size, err);
    goto done;
io_failed:
    if (err) {
        err->code = JSON_IN_EIO;
        err->line = err->column = 0;
        snprintf(err->text, sizeof err->text, "cannot read %s: %s", path, strerror(errno));
    }
done:
    if (fd >= 0)
        close(fd);
    free(data);
    return v;
}
