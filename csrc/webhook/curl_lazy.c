/* webhook/curl_lazy.c: resolves the libcurl functions client.c uses, on first use. */
#define CURL_LAZY_IMPL
#include "webhook/curl_lazy.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

curl_api curl_lazy;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];
static int loaded;

#define RESOLVE(field, name)                                                                                           \
    do {                                                                                                               \
        *(void **)(&curl_lazy.field) = dlsym(lib, name);                                                               \
        if (!curl_lazy.field) {                                                                                        \
            snprintf(load_error, sizeof load_error, "libcurl has no %s", name);                                        \
            return;                                                                                                    \
        }                                                                                                              \
    } while (0)

static void load(void) {
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load libcurl.so.4 (apt-get install libcurl4): %s",
                 dlerror());
        return;
    }
    RESOLVE(global_init, "curl_global_init");
    RESOLVE(multi_init, "curl_multi_init");
    RESOLVE(multi_setopt, "curl_multi_setopt");
    RESOLVE(multi_socket_action, "curl_multi_socket_action");
    RESOLVE(multi_info_read, "curl_multi_info_read");
    RESOLVE(multi_assign, "curl_multi_assign");
    RESOLVE(multi_add_handle, "curl_multi_add_handle");
    RESOLVE(multi_remove_handle, "curl_multi_remove_handle");
    RESOLVE(multi_cleanup, "curl_multi_cleanup");
    RESOLVE(easy_init, "curl_easy_init");
    RESOLVE(easy_setopt, "curl_easy_setopt");
    RESOLVE(easy_getinfo, "curl_easy_getinfo");
    RESOLVE(easy_cleanup, "curl_easy_cleanup");
    RESOLVE(easy_strerror, "curl_easy_strerror");
    RESOLVE(slist_append, "curl_slist_append");
    RESOLVE(slist_free_all, "curl_slist_free_all");
    if (curl_lazy.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed");
        return;
    }
    loaded = 1;
}

int curl_lazy_load(char *err, size_t errlen) {
    pthread_once(&once, load);
    if (!loaded && err)
        snprintf(err, errlen, "%s", load_error);
    return loaded ? 0 : -1;
}
