/* core/validate_compile.c: compiling a component schema (a JSON Schema 2020-12 subset, plus
 * OpenAPI 3.0's boolean exclusiveMinimum/Maximum) once into a graph of nodes: $refs linked
 * with cycle protection, regexes compiled, messages pre-rendered. docs/schema.md. */
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
    int nesting; /* compile_into calls open: COMPILE_MAX_DEPTH at most */
    char *err;
    size_t errlen;
} compiler;

static int compile_node(compiler *c, schema_node *n, const json_t *schema);

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

/* prefix + compact JSON of v (sorted keys, as the Rust coglet's map-backed values print) + suffix */
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

/* Every subschema, whether nested or reached through a $ref, is compiled through here. */
static int compile_into(compiler *c, schema_node *n, const json_t *schema) {
    if (c->nesting >= COMPILE_MAX_DEPTH)
        return fail(c, "schema nested more than %d levels deep", COMPILE_MAX_DEPTH);
    c->nesting++;
    int rc = compile_node(c, n, schema);
    c->nesting--;
    return rc;
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

static int compile_bound(compiler *c, const json_t *schema, const char *keyword, const char *phrase, bound *b) {
    const json_t *j = json_object_get(schema, keyword);
    if (!j)
        return 0;
    if (!bignum_is_number(j))
        return fail(c, "%s must be a number", keyword);
    b->set = 1;
    b->value = j;
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

static int compile_node(compiler *c, schema_node *n, const json_t *s) {
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
    if (n->multiple_of.set && bignum_sign(n->multiple_of.value) <= 0)
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

/* Injecting nulls (docs/schema.md#validation-at-the-edge, step 3) works on the component as written: nullable:true, no default, not required. */
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
