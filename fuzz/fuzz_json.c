/* fuzz/fuzz_json.c: the JSON reader (common/json_in.c) and the encoder (common/json_out.c).
 * The first byte picks the reader's options (duplicate keys refused, the body depth limit, a
 * located member with its items); the rest is the text. Whatever parses must encode, and the
 * encoding must read back to a value that encodes the same (integers of any size included). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/json_in.h"
#include "common/json_out.h"

#define MUST(cond)                                                                                                     \
    do {                                                                                                               \
        if (!(cond))                                                                                                   \
            __builtin_trap();                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    unsigned pick = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    json_in_member members[2] = {{.key = "input"}, {.key = "context", .with_items = 1}};
    json_in_options opts = {
        .flags = pick & 1 ? JSON_IN_REJECT_DUPLICATES : 0,
        .max_depth = pick & 2 ? JSON_IN_BODY_MAX_DEPTH : 0,
        .members = pick & 4 ? members : NULL,
        .num_members = pick & 4 ? 2 : 0,
    };
    json_in_error err;
    json_t *v = json_in_parse_with(text, len, &opts, &err);
    if (!v) {
        MUST(err.code != 0 && err.text[0] != '\0');
        json_in_members_free(members, 2);
        return 0;
    }
    MUST(err.code == 0);
    for (size_t i = 0; i < opts.num_members; i++) {
        const json_in_member *m = &members[i];
        MUST(!m->found || (m->start <= m->end && m->end <= len));
        for (size_t k = 0; k < m->num_items; k++)
            MUST(m->item_ends[k] > m->start && m->item_ends[k] <= m->end);
    }
    json_in_members_free(members, 2);
    int flags = pick & 8 ? JSON_OUT_SORTED : 0;
    char *once = json_out_string(v, flags);
    MUST(once != NULL);
    json_t *again = json_in_parse(once, strlen(once), &err);
    MUST(again != NULL);
    char *twice = json_out_string(again, flags);
    MUST(twice != NULL && !strcmp(once, twice));
    json_segments sg;
    if (json_out_segments(v, flags, 8, &sg) == 0) {
        size_t total = 0;
        for (size_t i = 0; i < sg.n; i++)
            total += sg.v[i].len;
        MUST(total == sg.total && total == strlen(once));
        json_segments_free(&sg);
    }
    free(once);
    free(twice);
    json_decref(again);
    json_decref(v);
    return 0;
}
