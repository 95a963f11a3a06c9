/* core/validate_nodes.h: the compiled form of a component schema, shared by the compiler
 * (validate_compile.c) and the walker (validate.c). Nothing outside those two includes it. */
#ifndef COGLET_VALIDATE_NODES_H
#define COGLET_VALIDATE_NODES_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stddef.h>

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
/* How deep compiling may recurse (nested subschemas and chains of $refs), and walking (schema
 * nodes entered at once, over all instance levels): no schema or input can exhaust the stack. */
#define COMPILE_MAX_DEPTH 512
#define WALK_MAX_DEPTH 1024

/* A numeric keyword; msg is the text after the instance, e.g. " is less than the minimum of 3". */
typedef struct bound {
    int set;
    const json_t *value; /* an integer, a real or a bignum (common/bignum.h), in the validator's doc */
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
    named_node *properties; /* sorted by name: errors come out in the Rust coglet's map order */
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
    const char **null_names;  /* step 3, inject nulls (docs/schema.md#validation-at-the-edge) */
    size_t nnull;
};

#endif
