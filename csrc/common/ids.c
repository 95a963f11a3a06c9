/* common/ids.c: random hex strings and UUIDv4 from getrandom(2), /dev/urandom where the
 * kernel has no getrandom (ENOSYS); never rand(). */
#include "common/ids.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/random.h>
#include <unistd.h>

static int urandom_fill(unsigned char *p, size_t len) {
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = 0;
    while (len && rc == 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    close(fd);
    return rc;
}

static int random_fill(unsigned char *p, size_t len) {
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ENOSYS ? urandom_fill(p, len) : -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ids_random_hex(char *out, size_t nhex) {
    static const char digits[] = "0123456789abcdef";
    unsigned char bytes[64];
    size_t done = 0;
    while (done < nhex) {
        size_t want = (nhex - done + 1) / 2;
        if (want > sizeof bytes)
            want = sizeof bytes;
        int rc = random_fill(bytes, want);
        if (rc < 0) {
            out[0] = '\0';
            return rc;
        }
        for (size_t i = 0; i < want && done < nhex; i++) {
            out[done++] = digits[bytes[i] >> 4];
            if (done < nhex)
                out[done++] = digits[bytes[i] & 0x0f];
        }
    }
    out[nhex] = '\0';
    return 0;
}

int ids_uuid4(char out[37]) {
    unsigned char b[16];
    int rc = random_fill(b, sizeof b);
    if (rc < 0) {
        out[0] = '\0';
        return rc;
    }
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
             b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    return 0;
}
