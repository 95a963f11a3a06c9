/* py/convert.h: the one Python <-> JSON converter, for everything the worker sends (outputs,
 * metrics, the schema) and everything it receives (inputs, context). Call with the GIL. */
#ifndef COGLET_PY_CONVERT_H
#define COGLET_PY_CONVERT_H

#include <Python.h>
#include <jansson.h>

/* Lists and dicts nest at most this deep. The parent's parser stops at 128 levels, the frame
 * around a value takes one: a deeper value would break the channel, so it fails here with a
 * ValueError instead (and never overflows the C stack). */
#define PYJSON_MAX_DEPTH 100

/* What a value may be beyond None, bool, int, float, str, list and dict with str keys. */
typedef struct pyjson_rules {
    /* Outputs: tuples are lists; int, float, bool and None keys become their JSON text. */
    int loose_containers;
    /* Called with a value of any other type; returns what to convert instead (one step of a
     * longer encoding, as _runtime.encode_other does). NULL: such values raise TypeError. */
    PyObject *encode_other;
    /* The TypeError for a value of another type: a format with one %U, its type's name. */
    const char *unsupported;
} pyjson_rules;

/* The rules every converted value follows, whatever the rules above:
 * - NaN and +-Infinity raise ValueError "Out of range float values are not JSON compliant",
 *   as json.dumps(allow_nan=False) does: JSON has no token for them and the parent's parser
 *   accepts none;
 * - an int outside 64 bits becomes a bignum (common/bignum.h): its exact decimal digits;
 * - nesting past PYJSON_MAX_DEPTH raises ValueError (a list that contains itself too).
 * NULL with the exception set. */
json_t *pyjson_from_py(PyObject *value, const pyjson_rules *rules);

/* JSON -> Python: dicts, lists, str, int (a bignum too, exactly), float, bool, None. NULL with
 * an exception (ValueError past JSON_IN_MAX_DEPTH levels, or past Python's limit on the digits
 * of an int, as json.loads). */
PyObject *pyjson_to_py(const json_t *value);

#endif
