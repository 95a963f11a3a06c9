/* core/validate.c: input validation at the edge (docs/schema.md): strip unknown keys,
 * walk the compiled graph (validate_compile.c) collecting every error in the Rust coglet's
 * order and wording, inject nulls. */
#include "core/validate.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bignum.h"
#include "common/buf.h"
#include "common/json_out.h"
#include "core/validate_nodes.h"

/* ---- apply ------------------------------------------------------------------------------ */

/* The instance path, linked through the C stack: nothing is built unless an error needs it. */
typedef struct path_seg {
    const struct path_seg *parent;
    const char *key; /* NULL: an array index */
    size_t index;
} path_seg;

typedef struct apply_ctx {
    const validator *v;
    const json_t *input;
    json_t *detail;
    int collect; /* 0 while probing anyOf/oneOf/not branches: stop at the first error, report nothing */
    int required_done;
    int oom;
    int depth; /* check() frames open: WALK_MAX_DEPTH at most */
    pcre2_match_data **match_data; /* one per validator_apply call, made on first use */
} apply_ctx;

static int check(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path);

static int append_path(buf *b, const path_seg *p) {
    int rc = 0;
    if (p->parent && ((rc = append_path(b, p->parent)) || (rc = buf_append(b, "/", 1))))
        return rc;
    if (!p->key)
        return buf_printf(b, "%zu", p->index);
    for (const char *k = p->key; *k && !rc; k++) /* JSON pointer escapes */
        rc = *k == '~' ? buf_append(b, "~0", 2) : *k == '/' ? buf_append(b, "~1", 2) : buf_append(b, k, 1);
    return rc;
}

static void add_detail(apply_ctx *ctx, const path_seg *path, const char *msg, const char *type) {
    buf loc;
    buf_init(&loc, MSG_LIMIT);
    int rc = path ? append_path(&loc, path) : buf_append_str(&loc, "__root__");
    json_t *entry = rc ? NULL
                       : json_pack("{s:[s,s,s%],s:s,s:s}", "loc", "body", "input", loc.data ? loc.data : "", loc.len,
                                   "msg", msg, "type", type);
    buf_free(&loc);
    if (!ctx->detail)
        ctx->detail = json_array();
    if (!entry || json_array_append_new(ctx->detail, entry))
        ctx->oom = 1;
}

/* msg = prefix + compact JSON of `shown` + suffix (any may be NULL). */
static void report(apply_ctx *ctx, const path_seg *path, const char *prefix, const json_t *shown, const char *suffix) {
    if (!ctx->collect)
        return;
    buf b;
    buf_init(&b, MSG_LIMIT);
    int rc = prefix ? buf_append_str(&b, prefix) : 0;
    if (!rc && shown)
        rc = json_out_append(&b, shown, JSON_OUT_SORTED);
    if (!rc && suffix)
        rc = buf_append_str(&b, suffix);
    if (rc || !b.data)
        ctx->oom = 1;
    else
        add_detail(ctx, path, b.data, "value_error");
    buf_free(&b);
}

/* The first missing-required error (docs/schema.md#the-422) stands for every name missing from the component's
 * `required`, in array order; later ones are dropped. A first one from a nested object while the
 * top level misses nothing reports itself, so a 422 never comes with an empty detail. */
static void report_missing(apply_ctx *ctx, const path_seg *path, const char *name) {
    if (!ctx->collect || ctx->required_done)
        return;
    ctx->required_done = 1;
    const schema_node *top = ctx->v->top;
    int emitted = 0;
    for (size_t i = 0; json_is_object(ctx->input) && i < top->nrequired; i++) {
        if (json_object_get(ctx->input, top->required[i]))
            continue;
        path_seg seg = {.key = top->required[i]};
        add_detail(ctx, &seg, "Field required", "value_error.missing");
        emitted++;
    }
    if (!emitted) {
        path_seg seg = {.parent = path, .key = name};
        add_detail(ctx, &seg, "Field required", "value_error.missing");
    }
}

static unsigned type_bits(const json_t *inst) {
    switch (json_typeof(inst)) {
    case JSON_OBJECT: return TYPE_OBJECT;
    case JSON_ARRAY: return TYPE_ARRAY;
    case JSON_STRING: return bignum_is(inst) ? TYPE_INTEGER | TYPE_NUMBER : TYPE_STRING;
    case JSON_INTEGER: return TYPE_INTEGER | TYPE_NUMBER;
    case JSON_REAL: {
        double d = json_real_value(inst); /* 2020-12: 1.0 is an integer */
        return TYPE_NUMBER | (isfinite(d) && d == floor(d) ? TYPE_INTEGER : 0);
    }
    case JSON_TRUE:
    case JSON_FALSE: return TYPE_BOOLEAN;
    case JSON_NULL: return TYPE_NULL;
    }
    return 0;
}

/* JSON Schema equality: 1 == 1.0, integers of any size exactly; objects regardless of key
 * order. Recursive over both values: as deep as the shallower, which a parse bounded. */
static int schema_equal(const json_t *a, const json_t *b, int depth) {
    if (bignum_is_number(a) || bignum_is_number(b))
        return bignum_is_number(a) && bignum_is_number(b) && bignum_cmp(a, b) == 0;
    if (depth > WALK_MAX_DEPTH)
        return 0;
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               !memcmp(json_string_value(a), json_string_value(b), json_string_length(a));
    case JSON_ARRAY:
        if (json_array_size(a) != json_array_size(b))
            return 0;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!schema_equal(json_array_get(a, i), json_array_get(b, i), depth + 1))
                return 0;
        return 1;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            const json_t *vb = json_object_get(b, k);
            if (!vb || !schema_equal(va, vb, depth + 1))
                return 0;
        }
        return 1;
    }
    default: return 1;
    }
}

/* Exact for integers of any size; for reals, a quotient within rounding error of a whole
 * number (0.3 / 0.1). m > 0, checked at compile. */
static int is_multiple(apply_ctx *ctx, const json_t *x, const json_t *m) {
    if (bignum_is_integer(x) && bignum_is_integer(m)) {
        int rc = bignum_divisible(x, m);
        if (rc < 0)
            ctx->oom = 1;
        return rc > 0;
    }
    double q = bignum_to_double(x) / bignum_to_double(m);
    if (!isfinite(q))
        return 0;
    return fabs(q - nearbyint(q)) <= 8 * DBL_EPSILON * fmax(1.0, fabs(q));
}


/* One failed keyword: a probe stops at once, a collecting walk reports and goes on. */
#define FAILED(report_call)                                                                                            \
    do {                                                                                                               \
        ok = 0;                                                                                                        \
        if (!ctx->collect)                                                                                             \
            return 0;                                                                                                  \
        report_call;                                                                                                   \
    } while (0)

static int check_number(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    int ok = 1;
    if (n->minimum.set && bignum_cmp(inst, n->minimum.value) < 0)
        FAILED(report(ctx, path, NULL, inst, n->minimum.msg));
    if (n->maximum.set && bignum_cmp(inst, n->maximum.value) > 0)
        FAILED(report(ctx, path, NULL, inst, n->maximum.msg));
    if (n->exclusive_minimum.set && bignum_cmp(inst, n->exclusive_minimum.value) <= 0)
        FAILED(report(ctx, path, NULL, inst, n->exclusive_minimum.msg));
    if (n->exclusive_maximum.set && bignum_cmp(inst, n->exclusive_maximum.value) >= 0)
        FAILED(report(ctx, path, NULL, inst, n->exclusive_maximum.msg));
    if (n->multiple_of.set && !is_multiple(ctx, inst, n->multiple_of.value))
        FAILED(report(ctx, path, NULL, inst, n->multiple_of.msg));
    return ok;
}

static size_t utf8_code_points(const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += ((unsigned char)s[i] & 0xC0) != 0x80;
    return n;
}

/* format "uri": absolute, i.e. it starts with a scheme (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"). */
static int has_uri_scheme(const char *s, size_t len) {
    if (!len || !((s[0] | 0x20) >= 'a' && (s[0] | 0x20) <= 'z'))
        return 0;
    size_t i = 1;
    while (i < len && (((s[i] | 0x20) >= 'a' && (s[i] | 0x20) <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
                       s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    return i < len && s[i] == ':';
}

static int pattern_matches(apply_ctx *ctx, const pcre2_code *re, const char *s, size_t len) {
    if (!*ctx->match_data && !(*ctx->match_data = pcre2_match_data_create(1, NULL))) {
        ctx->oom = 1;
        return 0;
    }
    /* An ovector of one pair is enough to learn whether it matched (rc 0 means "too small"). */
    return pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, *ctx->match_data, NULL) >= 0;
}

static int check_string(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    const char *s = json_string_value(inst);
    size_t len = json_string_length(inst);
    int ok = 1;
    if (n->min_length.set || n->max_length.set) {
        size_t chars = utf8_code_points(s, len);
        if (n->min_length.set && chars < n->min_length.n)
            FAILED(report(ctx, path, NULL, inst, n->min_length.msg));
        if (n->max_length.set && chars > n->max_length.n)
            FAILED(report(ctx, path, NULL, inst, n->max_length.msg));
    }
    if (n->pattern && !pattern_matches(ctx, n->pattern, s, len))
        FAILED(report(ctx, path, NULL, inst, n->pattern_msg));
    if (n->format_uri && !has_uri_scheme(s, len))
        FAILED(report(ctx, path, NULL, inst, " is not a \"uri\""));
    return ok;
}

static int check_array(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    size_t size = json_array_size(inst);
    int ok = 1;
    if (n->min_items.set && size < n->min_items.n)
        FAILED(report(ctx, path, NULL, inst, n->min_items.msg));
    if (n->max_items.set && size > n->max_items.n)
        FAILED(report(ctx, path, NULL, inst, n->max_items.msg));
    if (n->unique_items) {
        int unique = 1;
        for (size_t i = 0; i < size && unique; i++)
            for (size_t k = i + 1; k < size && unique; k++)
                unique = !schema_equal(json_array_get(inst, i), json_array_get(inst, k), 0);
        if (!unique)
            FAILED(report(ctx, path, NULL, inst, " has non-unique elements"));
    }
    for (size_t i = 0; i < size && (n->items || i < n->prefix_items.len); i++) {
        const schema_node *item = i < n->prefix_items.len ? n->prefix_items.items[i] : n->items;
        path_seg seg = {.parent = path, .index = i};
        if (!check(ctx, item, json_array_get(inst, i), &seg))
            FAILED((void)0);
    }
    return ok;
}

static int cmp_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* "Additional properties are not allowed ('a', 'b' were unexpected)", names in byte order. */
static void report_unexpected(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    size_t count = 0;
    const char **names = malloc(json_object_size(inst) * sizeof *names);
    buf b;
    buf_init(&b, MSG_LIMIT);
    int rc = names ? buf_append_str(&b, "Additional properties are not allowed (") : BUF_NOMEM;
    if (!rc) {
        const char *key;
        json_t *val;
        json_object_foreach(inst, key, val) {
            if (!n->properties_obj || !json_object_get(n->properties_obj, key))
                names[count++] = key;
        }
        qsort(names, count, sizeof *names, cmp_strings);
    }
    for (size_t i = 0; i < count && !rc; i++)
        rc = buf_printf(&b, "%s'%s'", i ? ", " : "", names[i]);
    if (!rc)
        rc = buf_append_str(&b, count == 1 ? " was unexpected)" : " were unexpected)");
    if (rc)
        ctx->oom = 1;
    else
        add_detail(ctx, path, b.data, "value_error");
    buf_free(&b);
    free(names);
}

static int check_object(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    int ok = 1;
    size_t size = json_object_size(inst);
    if (n->min_properties.set && size < n->min_properties.n)
        FAILED(report(ctx, path, NULL, inst, n->min_properties.msg));
    if (n->max_properties.set && size > n->max_properties.n)
        FAILED(report(ctx, path, NULL, inst, n->max_properties.msg));
    for (size_t i = 0; i < n->nrequired; i++)
        if (!json_object_get(inst, n->required[i]))
            FAILED(report_missing(ctx, path, n->required[i]));
    for (size_t i = 0; i < n->nproperties; i++) {
        json_t *value = json_object_get(inst, n->properties[i].name);
        path_seg seg = {.parent = path, .key = n->properties[i].name};
        if (value && !check(ctx, n->properties[i].node, value, &seg))
            FAILED((void)0);
    }
    if (!n->additional)
        return ok;
    int unexpected = 0;
    const char *key;
    json_t *value;
    json_object_foreach(inst, key, value) {
        if (n->properties_obj && json_object_get(n->properties_obj, key))
            continue;
        if (n->additional->always < 0) {
            unexpected = 1;
            FAILED((void)0);
            continue;
        }
        path_seg seg = {.parent = path, .key = key};
        if (!check(ctx, n->additional, value, &seg))
            FAILED((void)0);
    }
    if (unexpected)
        report_unexpected(ctx, n, inst, path);
    return ok;
}

static int count_valid(apply_ctx *ctx, const node_list *list, json_t *inst, const path_seg *path, size_t stop_at) {
    apply_ctx probe = *ctx;
    probe.collect = 0;
    size_t valid = 0;
    for (size_t i = 0; i < list->len && valid < stop_at; i++)
        valid += (size_t)check(&probe, list->items[i], inst, path);
    ctx->oom |= probe.oom;
    return (int)valid;
}

static int check_node(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path);

/* Every walk goes through here: past WALK_MAX_DEPTH nodes at once the instance fails (a schema
 * whose $refs chain that far, an instance that deep) instead of the stack overflowing. */
static int check(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    if (n->always > 0)
        return 1;
    if (ctx->depth >= WALK_MAX_DEPTH) {
        if (ctx->collect)
            add_detail(ctx, path, "nested too deeply to validate", "value_error");
        return 0;
    }
    ctx->depth++;
    int ok = check_node(ctx, n, inst, path);
    ctx->depth--;
    return ok;
}

static int check_node(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    int ok = 1;
    if (n->always < 0) {
        FAILED(report(ctx, path, "False schema does not allow ", inst, NULL));
        return ok;
    }
    if (n->ref && !check(ctx, n->ref, inst, path))
        FAILED((void)0);
    if (n->types && !(type_bits(inst) & n->types))
        FAILED(report(ctx, path, NULL, inst, n->type_msg));
    if (n->const_value && !schema_equal(inst, n->const_value, 0))
        FAILED(report(ctx, path, n->const_msg, NULL, NULL));
    if (n->enum_values) {
        size_t i, size = json_array_size(n->enum_values);
        for (i = 0; i < size && !schema_equal(inst, json_array_get(n->enum_values, i), 0); i++)
            ;
        if (i == size)
            FAILED(report(ctx, path, NULL, inst, n->enum_msg));
    }
    int (*by_type)(apply_ctx *, const schema_node *, json_t *, const path_seg *) = NULL;
    switch (json_typeof(inst)) {
    case JSON_INTEGER:
    case JSON_REAL: by_type = check_number; break;
    case JSON_STRING: by_type = bignum_is(inst) ? check_number : check_string; break;
    case JSON_ARRAY: by_type = check_array; break;
    case JSON_OBJECT: by_type = check_object; break;
    default: break;
    }
    if (by_type && !by_type(ctx, n, inst, path))
        FAILED((void)0);
    for (size_t i = 0; i < n->all_of.len; i++)
        if (!check(ctx, n->all_of.items[i], inst, path))
            FAILED((void)0);
    if (n->any_of.len && !count_valid(ctx, &n->any_of, inst, path, 1))
        FAILED(report(ctx, path, NULL, inst, " is not valid under any of the schemas listed in the 'anyOf' keyword"));
    if (n->one_of.len) {
        int valid = count_valid(ctx, &n->one_of, inst, path, 2);
        if (valid == 0)
            FAILED(report(ctx, path, NULL, inst,
                          " is not valid under any of the schemas listed in the 'oneOf' keyword"));
        else if (valid > 1)
            FAILED(report(ctx, path, NULL, inst,
                          " is valid under more than one of the schemas listed in the 'oneOf' keyword"));
    }
    if (n->not_schema) {
        apply_ctx probe = *ctx;
        probe.collect = 0;
        if (check(&probe, n->not_schema, inst, path))
            FAILED(report(ctx, path, n->not_msg, inst, NULL));
    }
    return ok;
}

/* Step 1, strip (docs/schema.md#validation-at-the-edge): keys the component does not list go, silently for the client. */
static void strip_unknown(const validator *v, json_t *input, json_t **stripped) {
    const json_t *props = v->top->properties_obj;
    json_t *names = NULL;
    const char *key;
    json_t *value;
    void *tmp;
    json_object_foreach_safe(input, tmp, key, value) {
        if (props && json_object_get(props, key))
            continue;
        if (!names)
            names = json_array();
        json_array_append_new(names, json_string(key)); /* before the del frees key */
        json_object_del(input, key);
    }
    if (stripped)
        *stripped = names;
    else
        json_decref(names);
}

int validator_apply(const validator *v, json_t *input, json_t **detail, json_t **stripped) {
    *detail = NULL;
    if (stripped)
        *stripped = NULL;
    if (json_is_object(input))
        strip_unknown(v, input, stripped);
    pcre2_match_data *match_data = NULL;
    apply_ctx ctx = {.v = v, .input = input, .collect = 1, .match_data = &match_data};
    int ok = check(&ctx, v->root, input, NULL);
    pcre2_match_data_free(match_data);
    if (!ok) {
        *detail = ctx.detail;
        return -1;
    }
    json_decref(ctx.detail);
    for (size_t i = 0; json_is_object(input) && i < v->nnull; i++)
        if (!json_object_get(input, v->null_names[i]))
            json_object_set_new(input, v->null_names[i], json_null());
    return 0;
}
