/* queue/redis_url.c: redis://[[user]:password@]host[:port][/db], without hiredis, so the C
 * unit tests can check it alone. */
#include "queue/redis_url.h"

#include <stdlib.h>
#include <string.h>
#include <uv.h>

int redis_url_parse(const char *url, redis_url *out) {
    memset(out, 0, sizeof *out);
    out->port = 6379;
    const char *p = url;
    if (!strncmp(p, "redis://", 8))
        p += 8;
    else
        return UV_EINVAL;
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        size_t ulen = colon ? (size_t)(colon - p) : 0;
        const char *pw = colon ? colon + 1 : p;
        size_t plen = (size_t)(at - pw);
        if (ulen >= sizeof out->user || plen >= sizeof out->password)
            return UV_EINVAL;
        memcpy(out->user, p, ulen);
        memcpy(out->password, pw, plen);
        p = at + 1;
    }
    size_t hlen = strcspn(p, ":/");
    if (hlen == 0 || hlen >= sizeof out->host)
        return UV_EINVAL;
    memcpy(out->host, p, hlen);
    p += hlen;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535)
            return UV_EINVAL;
        out->port = (int)port;
        p = end;
    }
    if (*p == '/' && p[1]) {
        char *end;
        long db = strtol(p + 1, &end, 10);
        if (end == p + 1 || *end || db < 0 || db > 1000000)
            return UV_EINVAL;
        out->db = (int)db;
    } else if (*p && strcmp(p, "/")) {
        return UV_EINVAL;
    }
    return 0;
}
