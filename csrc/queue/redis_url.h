/* queue/redis_url.h: the --redis-url form. */
#ifndef COGLET_REDIS_URL_H
#define COGLET_REDIS_URL_H

typedef struct redis_url {
    char host[256];
    int port;
    int db;
    char user[128];
    char password[256];
} redis_url;

/* redis://[[user]:password@]host[:port][/db] (port 6379, db 0 by default). 0, or UV_EINVAL. */
int redis_url_parse(const char *url, redis_url *out);

#endif
