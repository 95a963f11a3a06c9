/* core/validate.h: input validation at the edge (docs/schema.md#validation-at-the-edge),
 * compiled once per schema. */
#ifndef COGLET_VALIDATE_H
#define COGLET_VALIDATE_H

#include <stddef.h>

#include <jansson.h>
typedef struct validator validator;
/* Compiles components.schemas.{component} of an OpenAPI document (e.g. "Input", "TrainingInput").
 * $refs "#/components/schemas/{Name}" are resolved (with cycle protection). Returns NULL with err set
 * when the component is missing or cannot be compiled (e.g. an invalid regex). */
validator *validator_compile(const json_t *openapi, const char *component, char *err, size_t errlen);
void validator_free(validator *v);
/* The validation steps (docs/schema.md#validation-at-the-edge) on one request's `input` (modified in place when it is an object): strip unknown keys (their
 * names go to *stripped as a new JSON array, or NULL when none), validate, and only if valid inject
 * nulls for properties with nullable:true, no default, not required, absent. Returns 0 when valid;
 * else -1 and *detail = new JSON array of {"loc":["body","input",...],"msg":...,"type":...} exactly
 * as docs/schema.md#the-422 describes (all errors; the "Field required"/"value_error.missing" rule for required; loc path
 * rules incl. "__root__" and nested paths as ONE string like "items/0"). */
int validator_apply(const validator *v, json_t *input, json_t **detail, json_t **stripped);

/* The validator keeps no reference to `openapi` (it works on its own copy), holds no mutable
 * state after compile, and may be shared by threads; validator_apply allocates nothing on the
 * valid path beyond jansson's own (stripped names, injected nulls) and one PCRE2 match block
 * when a `pattern` is evaluated. On an allocation failure it returns -1 with *detail possibly
 * NULL or incomplete. `input` must not be NULL (a null or missing input is {} by then: docs/http-api.md#request-body). */

#endif
