/* common/fs.c: fs_mkdirs and fs_write_all: the one copy of each the parent and the worker
 * use (spill files, output directories, frames on blocking sockets). */
#include "common/fs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir that accepts an existing directory (and only a directory). */
static int mkdir_one(const char *path, mode_t mode) {
    if (mkdir(path, mode) == 0)
        return 0;
    int err = errno;
    struct stat st;
    if (err == EEXIST || err == EACCES || err == EROFS) {
        /* EACCES/EROFS: a parent we may not write to can still hold the directory */
        if (stat(path, &st) == 0)
            return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
    }
    return -err;
}

int fs_mkdirs(const char *path, mode_t mode) {
    if (!path || !*path)
        return -EINVAL;
    char *tmp = strdup(path);
    if (!tmp)
        return -ENOMEM;
    int rc = 0;
    /* each parent in turn: cut the path at every '/' after the first character */
    for (char *c = tmp + 1; *c && rc == 0; c++) {
        if (*c != '/' || c[-1] == '/')
            continue;
        *c = '\0';
        rc = mkdir_one(tmp, mode);
        *c = '/';
    }
    if (rc == 0)
        rc = mkdir_one(tmp, mode);
    free(tmp);
    return rc;
}

int fs_write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO; /* a write of len > 0 that writes nothing would loop forever */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
