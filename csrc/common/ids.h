/* common/ids.h: random identifiers from the kernel's generator (getrandom(2)); there is no
 * weaker fallback: a caller that cannot get randomness gets an error. 0 or -errno. */
#ifndef COGLET_IDS_H
#define COGLET_IDS_H

#include <stddef.h>

/* nhex lowercase hex characters and a NUL: out must hold nhex + 1 bytes. */
int ids_random_hex(char *out, size_t nhex);
/* A random (version 4) UUID, "xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx", NUL-terminated. */
int ids_uuid4(char out[37]);

#endif
