/* service/validate.c: SPEC 6 input validation. A component schema (JSON Schema 2020-12 subset, plus
 * OpenAPI 3.0's boolean exclusiveMinimum/Maximum) is compiled once into a graph of nodes: $refs
 * linked, regexes compiled, messages pre-rendered; validator_apply only walks it. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "core/validate.h"

#include <float.h>
#include <math.h>
#include <pcre2.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/json_out.h"

enum {
    TYPE_ARRAY = 1 << 0,
    TYPE_BOOLEAN = 1 << 1,
    TYPE_INTEGER = 1 << 2,
    TYPE_NULL = 1 << 3,
    TYPE_NUMBER = 1 << 4,
    TYPE_OBJECT = 1 << 5,
    TYPE_STRING = 1 << 6,
};
/* Bit order, which is also the order names take in `is not of types` (jsonschema's type bitmap). */
static const char *const type_names[] = {"array", "boolean", "integer", "null", "number", "object", "string"};
#define TYPE_COUNT (sizeof type_names / sizeof type_names[0])

#define MSG_LIMIT ((size_t)1 << 30)
#define REF_HOPS_MAX 64

typedef struct number {
    int is_int;
    json_int_t i;
    double d;
} number;

/* A numeric keyword; msg is the text after the instance, e.g. " is less than the minimum of 3". */
typedef struct bound {
    int set;
    number value;
    char *msg;
} bound;

typedef struct count_bound {
    int set;
    size_t n;
    char *msg;
} count_bound;

typedef struct schema_node schema_node;
typedef struct named_node {
    const char *name;
    schema_node *node;
} named_node;
typedef struct node_list {
    schema_node **items;
    size_t len;
} node_list;

struct schema_node {
    int always; /* 1: the `true` schema, -1: `false`, 0: evaluate the keywords below */
    schema_node *ref;
    unsigned types;
    char *type_msg;
    const json_t *enum_values;
    char *enum_msg;
    const json_t *const_value;
    char *const_msg; /* the whole message: it shows the expected value, not the instance */
    bound minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;
    count_bound min_length, max_length, min_items, max_items, min_properties, max_properties;
    pcre2_code *pattern;
    char *pattern_msg;
    int format_uri;
    node_list prefix_items;
    schema_node *items;
    int unique_items;
    named_node *properties; /* sorted by name: errors come out in the original's map order */
    size_t nproperties;
    const json_t *properties_obj;
    const char **required;
    size_t nrequired;
    schema_node *additional; /* NULL: any additional property is fine */
    node_list all_of, any_of, one_of;
    schema_node *not_schema;
    char *not_msg;
};

struct validator {
    json_t *doc; /* private copy of the OpenAPI document: every borrowed string points into it */
    schema_node **nodes;
    size_t nnodes, cap;
    schema_node *root;
    schema_node *true_node;   /* stands in for a $ref cycle that enters no instance level */
    const schema_node *top;   /* the node holding the component's properties/required */
    const char **null_names;  /* SPEC 6 step 3 */
    size_t nnull;
};

/* ---- compile ---------------------------------------------------------------------------- */

typedef struct ref_entry {
    const json_t *target;
    schema_node *node;
    int compiling;
    int descent; /* compiler descent when its compilation began */
} ref_entry;

typedef struct compiler {
    validator *v;
    const json_t *component;
    ref_entry *refs;
    size_t nrefs, cap;
    int descent; /* instance levels (properties, items...) entered: a $ref cycle entering none never ends */
    char *err;
    size_t errlen;
} compiler;

static int compile_into(compiler *c, schema_node *n, const json_t *schema);

__attribute__((format(printf, 2, 3))) static int fail(compiler *c, const char *fmt, ...) {
    if (c->err && c->errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, c->errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

__attribute__((format(printf, 1, 2))) static char *text_printf(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

/* prefix + compact JSON of v (sorted keys, as the original's map-backed values print) + suffix */
static char *text_with_json(const char *prefix, const json_t *v, const char *suffix) {
    char *json = json_out_string(v, JSON_OUT_SORTED);
    if (!json)
        return NULL;
    char *s = text_printf("%s%s%s", prefix, json, suffix);
    free(json);
    return s;
}

static schema_node *node_new(compiler *c) {
    validator *v = c->v;
    if (v->nnodes == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 32;
        schema_node **nodes = realloc(v->nodes, cap * sizeof *nodes);
        if (!nodes)
            return NULL;
        v->nodes = nodes;
        v->cap = cap;
    }
    schema_node *n = calloc(1, sizeof *n);
    if (n)
        v->nodes[v->nnodes++] = n;
    return n;
}

static void node_free(schema_node *n) {
    free(n->type_msg);
    free(n->enum_msg);
    free(n->const_msg);
    bound *bounds[] = {&n->minimum, &n->maximum, &n->exclusive_minimum, &n->exclusive_maximum, &n->multiple_of};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++)
        free(bounds[i]->msg);
    count_bound *counts[] = {&n->min_length, &n->max_length,     &n->min_items,
                             &n->max_items,  &n->min_properties, &n->max_properties};
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        free(counts[i]->msg);
    pcre2_code_free(n->pattern);
    free(n->pattern_msg);
    free(n->prefix_items.items);
    free(n->properties);
    free(n->required);
    free(n->all_of.items);
    free(n->any_of.items);
    free(n->one_of.items);
    free(n->not_msg);
    free(n);
}

static schema_node *compile_sub(compiler *c, const json_t *schema, int enters_instance) {
    schema_node *n = node_new(c);
    if (!n) {
        fail(c, "out of memory");
        return NULL;
    }
    c->descent += enters_instance;
    int rc = compile_into(c, n, schema);
    c->descent -= enters_instance;
    return rc ? NULL : n;
}

/* "#", "#/a/b~1c": a JSON pointer in the fragment; NULL when it names nothing. */
static const json_t *resolve_pointer(const json_t *doc, const char *ref) {
    if (ref[0] != '#')
        return NULL;
    const char *p = ref + 1;
    if (*p && *p != '/')
        return NULL;
    char *seg = malloc(strlen(p) + 1);
    if (!seg)
        return NULL;
    const json_t *cur = doc;
    while (cur && *p == '/') {
        size_t n = 0;
        for (p++; *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~') {
                if (p[1] != '0' && p[1] != '1') {
                    cur = NULL;
                    break;
                }
                ch = *++p == '0' ? '~' : '/';
            }
            seg[n++] = ch;
        }
        seg[n] = '\0';
        if (!cur)
            break;
        if (json_is_object(cur)) {
            cur = json_object_get(cur, seg);
        } else if (json_is_array(cur) && n && strspn(seg, "0123456789") == n) {
            cur = json_array_get(cur, strtoul(seg, NULL, 10));
        } else {
            cur = NULL;
        }
    }
    free(seg);
    return cur;
}

/* The node for a $ref target, compiled once however many places name it. */
static schema_node *link_target(compiler *c, const json_t *target) {
    for (size_t i = 0; i < c->nrefs; i++) {
        if (c->refs[i].target != target)
            continue;
        if (c->refs[i].compiling && c->refs[i].descent == c->descent)
            return c->v->true_node; /* A -> allOf -> A: no instance consumed, would never end */
        return c->refs[i].node;
    }
    if (c->nrefs == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        ref_entry *refs = realloc(c->refs, cap * sizeof *refs);
        if (!refs) {
            fail(c, "out of memory");
            return NULL;
        }
        c->refs = refs;
        c->cap = cap;
    }
    schema_node *n = node_new(c);
    if (!n) {
        fail(c, "out of memory");
        return NULL;
    }
    size_t idx = c->nrefs++;
    c->refs[idx] = (ref_entry){.target = target, .node = n, .compiling = 1, .descent = c->descent};
    if (compile_into(c, n, target))
        return NULL;
    c->refs[idx].compiling = 0; /* by index: the array may have moved meanwhile */
    return n;
}

static int compile_ref(compiler *c, schema_node *n, const json_t *ref) {
    const char *s = json_string_value(ref);
    if (!s)
        return fail(c, "$ref must be a string");
    const json_t *target = NULL;
    if (strncmp(s, "#/components/", 13) != 0)
        target = resolve_pointer(c->component, s); /* "#/$defs/X" is relative to the component */
    if (!target)
        target = resolve_pointer(c->v->doc, s);
    if (!target)
        return fail(c, "cannot resolve $ref \"%s\"", s);
    return (n->ref = link_target(c, target)) ? 0 : -1;
}

static int type_bit(const char *name) {
    for (size_t i = 0; i < TYPE_COUNT; i++)
        if (!strcmp(name, type_names[i]))
            return 1 << i;
    return 0;
}

static int compile_type(compiler *c, schema_node *n, const json_t *type) {
    if (json_is_string(type)) {
        if (!(n->types = type_bit(json_string_value(type))))
            return fail(c, "unknown type \"%s\"", json_string_value(type));
        n->type_msg = text_printf(" is not of type \"%s\"", json_string_value(type));
        return n->type_msg ? 0 : fail(c, "out of memory");
    }
    if (!json_is_array(type) || !json_array_size(type))
        return fail(c, "type must be a string or a non-empty array");
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t) {
        int bit = json_is_string(t) ? type_bit(json_string_value(t)) : 0;
        if (!bit)
            return fail(c, "unknown type in type array");
        n->types |= (unsigned)bit;
    }
    buf b;
    buf_init(&b, MSG_LIMIT);
    int single = !(n->types & (n->types - 1)), rc = 0, first = 1;
    rc = buf_append_str(&b, single ? " is not of type " : " is not of types ");
    for (size_t bit = 0; bit < TYPE_COUNT && !rc; bit++) {
        if (!(n->types & (1u << bit)))
            continue;
        rc = buf_printf(&b, "%s\"%s\"", first ? "" : ", ", type_names[bit]);
        first = 0;
    }
    if (rc) {
        buf_free(&b);
        return fail(c, "out of memory");
    }
    n->type_msg = buf_steal(&b);
    return 0;
}

static number number_of(const json_t *j) {
    if (json_is_integer(j))
        return (number){.is_int = 1, .i = json_integer_value(j), .d = (double)json_integer_value(j)};
    return (number){.is_int = 0, .d = json_real_value(j)};
}

static int compile_bound(compiler *c, const json_t *schema, const char *keyword, const char *phrase, bound *b) {
    const json_t *j = json_object_get(schema, keyword);
    if (!j)
        return 0;
    if (!json_is_number(j))
        return fail(c, "%s must be a number", keyword);
    b->set = 1;
    b->value = number_of(j);
    b->msg = text_with_json(phrase, j, "");
    return b->msg ? 0 : fail(c, "out of memory");
}

/* OpenAPI 3.0: `exclusiveMinimum: true` makes `minimum` exclusive. */
static int compile_exclusive_flag(compiler *c, const json_t *schema, const char *keyword, const char *limit_keyword,
                                  const char *phrase, bound *inclusive, bound *exclusive) {
    if (!json_is_true(json_object_get(schema, keyword)) || !inclusive->set)
        return 0;
    free(inclusive->msg);
    *inclusive = (bound){0};
    return compile_bound(c, schema, limit_keyword, phrase, exclusive);
}

static int compile_count(compiler *c, const json_t *schema, const char *keyword, const char *phrase,
                         const char *singular, const char *plural, count_bound *b) {
    const json_t *j = json_object_get(schema, keyword);
    if (!j)
        return 0;
    double d = json_is_integer(j) ? (double)json_integer_value(j) : json_is_real(j) ? json_real_value(j) : -1;
    if (d < 0 || d != floor(d) || d > 9e15)
        return fail(c, "%s must be a non-negative integer", keyword);
    b->set = 1;
    b->n = (size_t)d;
    b->msg = text_printf("%s %zu %s", phrase, b->n, b->n == 1 ? singular : plural);
    return b->msg ? 0 : fail(c, "out of memory");
}

static int compile_pattern(compiler *c, schema_node *n, const json_t *pattern) {
    if (!json_is_string(pattern))
        return fail(c, "pattern must be a string");
    const char *src = json_string_value(pattern);
    pcre2_compile_context *cctx = pcre2_compile_context_create(NULL);
    if (!cctx)
        return fail(c, "out of memory");
    /* ECMA-262 flavour: \uXXXX and \u{...} escapes, `$` only at the very end. */
    pcre2_set_compile_extra_options(cctx, PCRE2_EXTRA_ALT_BSUX);
    int code;
    PCRE2_SIZE offset;
    /* UTF without UCP: \d \w \s stay ASCII as in ECMA-262, while \p{L} still works */
    n->pattern = pcre2_compile((PCRE2_SPTR)src, json_string_length(pattern),
                               PCRE2_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY, &code, &offset, cctx);
    pcre2_compile_context_free(cctx);
    if (!n->pattern) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        return fail(c, "invalid pattern \"%s\" at offset %zu: %s", src, (size_t)offset, (const char *)msg);
    }
    pcre2_jit_compile(n->pattern, PCRE2_JIT_COMPLETE); /* optional: the interpreter is the fallback */
    n->pattern_msg = text_printf(" does not match \"%s\"", src);
    return n->pattern_msg ? 0 : fail(c, "out of memory");
}

static int compile_list(compiler *c, const json_t *schema, const char *keyword, int enters_instance,
                        node_list *list) {
    const json_t *arr = json_object_get(schema, keyword);
    if (!arr)
        return 0;
    if (!json_is_array(arr) || !json_array_size(arr))
        return fail(c, "%s must be a non-empty array", keyword);
    if (!(list->items = calloc(json_array_size(arr), sizeof *list->items)))
        return fail(c, "out of memory");
    size_t i;
    json_t *sub;
    json_array_foreach(arr, i, sub) {
        if (!(list->items[i] = compile_sub(c, sub, enters_instance)))
            return -1;
        list->len = i + 1;
    }
    return 0;
}

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const named_node *)a)->name, ((const named_node *)b)->name);
}

static int compile_properties(compiler *c, schema_node *n, const json_t *props) {
    if (!json_is_object(props))
        return fail(c, "properties must be an object");
    n->properties_obj = props;
    if (!json_object_size(props))
        return 0;
    if (!(n->properties = calloc(json_object_size(props), sizeof *n->properties)))
        return fail(c, "out of memory");
    const char *name;
    json_t *sub;
    json_object_foreach((json_t *)props, name, sub) {
        schema_node *child = compile_sub(c, sub, 1);
        if (!child)
            return -1;
        n->properties[n->nproperties++] = (named_node){.name = name, .node = child};
    }
    qsort(n->properties, n->nproperties, sizeof *n->properties, cmp_named);
    return 0;
}

static int compile_required(compiler *c, schema_node *n, const json_t *req) {
    if (!json_is_array(req))
        return fail(c, "required must be an array");
    if (!json_array_size(req))
        return 0;
    if (!(n->required = calloc(json_array_size(req), sizeof *n->required)))
        return fail(c, "out of memory");
    size_t i;
    json_t *name;
    json_array_foreach(req, i, name) {
        if (!json_is_string(name))
            return fail(c, "required must hold strings");
        n->required[n->nrequired++] = json_string_value(name);
    }
    return 0;
}

static int compile_into(compiler *c, schema_node *n, const json_t *s) {
    if (json_is_boolean(s)) {
        n->always = json_is_true(s) ? 1 : -1;
        return 0;
    }
    if (!json_is_object(s))
        return fail(c, "a schema must be an object or a boolean");
    const json_t *j;
    if ((j = json_object_get(s, "$ref")) && compile_ref(c, n, j))
        return -1;
    if ((j = json_object_get(s, "type")) && compile_type(c, n, j))
        return -1;
    if ((j = json_object_get(s, "enum"))) {
        if (!json_is_array(j))
            return fail(c, "enum must be an array");
        n->enum_values = j;
        if (!(n->enum_msg = text_with_json(" is not one of ", j, "")))
            return fail(c, "out of memory");
    }
    if ((j = json_object_get(s, "const"))) {
        n->const_value = j;
        if (!(n->const_msg = text_with_json("", j, " was expected")))
            return fail(c, "out of memory");
    }
    if (compile_bound(c, s, "minimum", " is less than the minimum of ", &n->minimum) ||
        compile_bound(c, s, "maximum", " is greater than the maximum of ", &n->maximum))
        return -1;
    const char *xmin = " is less than or equal to the minimum of ";
    const char *xmax = " is greater than or equal to the maximum of ";
    j = json_object_get(s, "exclusiveMinimum");
    if (json_is_boolean(j) ? compile_exclusive_flag(c, s, "exclusiveMinimum", "minimum", xmin, &n->minimum,
                                                    &n->exclusive_minimum)
                           : compile_bound(c, s, "exclusiveMinimum", xmin, &n->exclusive_minimum))
        return -1;
    j = json_object_get(s, "exclusiveMaximum");
    if (json_is_boolean(j) ? compile_exclusive_flag(c, s, "exclusiveMaximum", "maximum", xmax, &n->maximum,
                                                    &n->exclusive_maximum)
                           : compile_bound(c, s, "exclusiveMaximum", xmax, &n->exclusive_maximum))
        return -1;
    if (compile_bound(c, s, "multipleOf", " is not a multiple of ", &n->multiple_of))
        return -1;
    if (n->multiple_of.set && !(n->multiple_of.value.is_int ? n->multiple_of.value.i > 0 : n->multiple_of.value.d > 0))
        return fail(c, "multipleOf must be greater than 0");
    if (compile_count(c, s, "minLength", " is shorter than", "character", "characters", &n->min_length) ||
        compile_count(c, s, "maxLength", " is longer than", "character", "characters", &n->max_length) ||
        compile_count(c, s, "minItems", " has less than", "item", "items", &n->min_items) ||
        compile_count(c, s, "maxItems", " has more than", "item", "items", &n->max_items) ||
        compile_count(c, s, "minProperties", " has less than", "property", "properties", &n->min_properties) ||
        compile_count(c, s, "maxProperties", " has more than", "property", "properties", &n->max_properties))
        return -1;
    if ((j = json_object_get(s, "pattern")) && compile_pattern(c, n, j))
        return -1;
    n->format_uri = !strcmp(json_string_value(json_object_get(s, "format")) ?: "", "uri");
    if (compile_list(c, s, "prefixItems", 1, &n->prefix_items))
        return -1;
    if ((j = json_object_get(s, "items"))) {
        if (json_is_array(j)) { /* pre-2020 tuple form */
            if (!n->prefix_items.len && compile_list(c, s, "items", 1, &n->prefix_items))
                return -1;
        } else if (!(n->items = compile_sub(c, j, 1))) {
            return -1;
        }
    }
    n->unique_items = json_is_true(json_object_get(s, "uniqueItems"));
    if ((j = json_object_get(s, "properties")) && compile_properties(c, n, j))
        return -1;
    if ((j = json_object_get(s, "required")) && compile_required(c, n, j))
        return -1;
    if ((j = json_object_get(s, "additionalProperties")) && !json_is_true(j) &&
        !(n->additional = compile_sub(c, j, 1)))
        return -1;
    if (compile_list(c, s, "allOf", 0, &n->all_of) || compile_list(c, s, "anyOf", 0, &n->any_of) ||
        compile_list(c, s, "oneOf", 0, &n->one_of))
        return -1;
    if ((j = json_object_get(s, "not"))) {
        if (!(n->not_schema = compile_sub(c, j, 0)))
            return -1;
        if (!(n->not_msg = text_with_json("", j, " is not allowed for ")))
            return fail(c, "out of memory");
    }
    return 0;
}

static int is_required(const schema_node *n, const char *name) {
    for (size_t i = 0; i < n->nrequired; i++)
        if (!strcmp(n->required[i], name))
            return 1;
    return 0;
}

/* SPEC 6 step 3 works on the component as written: nullable:true, no default, not required. */
static int collect_null_names(validator *v) {
    const json_t *props = v->top->properties_obj;
    if (!props || !json_object_size(props))
        return 0;
    if (!(v->null_names = calloc(json_object_size(props), sizeof *v->null_names)))
        return -1;
    const char *name;
    json_t *sub;
    json_object_foreach((json_t *)props, name, sub) {
        if (json_is_true(json_object_get(sub, "nullable")) && !json_object_get(sub, "default") &&
            !is_required(v->top, name))
            v->null_names[v->nnull++] = name;
    }
    return 0;
}

validator *validator_compile(const json_t *openapi, const char *component, char *err, size_t errlen) {
    if (err && errlen)
        err[0] = '\0';
    validator *v = calloc(1, sizeof *v);
    compiler c = {.v = v, .err = err, .errlen = errlen};
    if (!v || (openapi && !(v->doc = json_deep_copy(openapi)))) {
        fail(&c, "out of memory");
        goto failed;
    }
    c.component = json_object_get(json_object_get(json_object_get(v->doc, "components"), "schemas"), component);
    if (!c.component) {
        fail(&c, "no components.schemas.%s in the schema", component);
        goto failed;
    }
    if (!(v->true_node = node_new(&c))) {
        fail(&c, "out of memory");
        goto failed;
    }
    v->true_node->always = 1;
    if (!(v->root = link_target(&c, c.component)))
        goto failed;
    const schema_node *top = v->root;
    for (int hops = 0; top->ref && !top->properties_obj && !top->nrequired && hops < REF_HOPS_MAX; hops++)
        top = top->ref; /* a component that is only {"$ref": ...} */
    v->top = top;
    if (collect_null_names(v)) {
        fail(&c, "out of memory");
        goto failed;
    }
    free(c.refs);
    return v;

failed:
    free(c.refs);
    validator_free(v);
    return NULL;
}

void validator_free(validator *v) {
    if (!v)
        return;
    for (size_t i = 0; i < v->nnodes; i++)
        node_free(v->nodes[i]);
    free(v->nodes);
    free(v->null_names);
    json_decref(v->doc);
    free(v);
}

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

/* SPEC 6: the first missing-required error stands for every name missing from the component's
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
    case JSON_STRING: return TYPE_STRING;
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

static int number_cmp(number a, number b) {
    if (a.is_int && b.is_int)
        return (a.i > b.i) - (a.i < b.i);
    long double x = a.is_int ? (long double)a.i : a.d, y = b.is_int ? (long double)b.i : b.d;
    return (x > y) - (x < y);
}

/* JSON Schema equality: 1 == 1.0; objects regardless of key order. */
static int schema_equal(const json_t *a, const json_t *b) {
    if (json_is_number(a) && json_is_number(b))
        return number_cmp(number_of(a), number_of(b)) == 0;
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
            if (!schema_equal(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    case JSON_OBJECT: {
        if (json_object_size(a) != json_object_size(b))
            return 0;
        const char *k;
        json_t *va;
        json_object_foreach((json_t *)a, k, va) {
            const json_t *vb = json_object_get(b, k);
            if (!vb || !schema_equal(va, vb))
                return 0;
        }
        return 1;
    }
    default: return 1;
    }
}

/* Exact for integers; for reals, a quotient within rounding error of a whole number (0.3 / 0.1). */
static int is_multiple(number x, number m) {
    if (x.is_int && m.is_int)
        return x.i % m.i == 0; /* m > 0, checked at compile */
    double q = x.d / m.d;
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
    number x = number_of(inst);
    int ok = 1;
    if (n->minimum.set && number_cmp(x, n->minimum.value) < 0)
        FAILED(report(ctx, path, NULL, inst, n->minimum.msg));
    if (n->maximum.set && number_cmp(x, n->maximum.value) > 0)
        FAILED(report(ctx, path, NULL, inst, n->maximum.msg));
    if (n->exclusive_minimum.set && number_cmp(x, n->exclusive_minimum.value) <= 0)
        FAILED(report(ctx, path, NULL, inst, n->exclusive_minimum.msg));
    if (n->exclusive_maximum.set && number_cmp(x, n->exclusive_maximum.value) >= 0)
        FAILED(report(ctx, path, NULL, inst, n->exclusive_maximum.msg));
    if (n->multiple_of.set && !is_multiple(x, n->multiple_of.value))
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
                unique = !schema_equal(json_array_get(inst, i), json_array_get(inst, k));
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

static int check(apply_ctx *ctx, const schema_node *n, json_t *inst, const path_seg *path) {
    if (n->always > 0)
        return 1;
    int ok = 1;
    if (n->always < 0) {
        FAILED(report(ctx, path, "False schema does not allow ", inst, NULL));
        return ok;
    }
    if (n->ref && !check(ctx, n->ref, inst, path))
        FAILED((void)0);
    if (n->types && !(type_bits(inst) & n->types))
        FAILED(report(ctx, path, NULL, inst, n->type_msg));
    if (n->const_value && !schema_equal(inst, n->const_value))
        FAILED(report(ctx, path, n->const_msg, NULL, NULL));
    if (n->enum_values) {
        size_t i, size = json_array_size(n->enum_values);
        for (i = 0; i < size && !schema_equal(inst, json_array_get(n->enum_values, i)); i++)
            ;
        if (i == size)
            FAILED(report(ctx, path, NULL, inst, n->enum_msg));
    }
    int (*by_type)(apply_ctx *, const schema_node *, json_t *, const path_seg *) = NULL;
    switch (json_typeof(inst)) {
    case JSON_INTEGER:
    case JSON_REAL: by_type = check_number; break;
    case JSON_STRING: by_type = check_string; break;
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

/* SPEC 6 step 1: keys the component does not list go, silently for the client. */
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
