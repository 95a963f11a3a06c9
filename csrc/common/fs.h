/* common/fs.h: small file-system helpers shared by the parent and the worker. Plain C;
 * 0 or a negative errno, as libuv returns. */
#ifndef COGLET_FS_H
#define COGLET_FS_H

#include <stddef.h>
#include <sys/types.h>

/* Creates path and every missing parent with `mode` (an existing directory is fine).
 * 0, or -errno (-ENOTDIR when a component exists and is not a directory). */
int fs_mkdirs(const char *path, mode_t mode);
/* Writes all len bytes, retrying EINTR and short writes. 0 or -errno. */
int fs_write_all(int fd, const void *data, size_t len);

#endif
