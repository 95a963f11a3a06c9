/* webhook/curl_lazy.c: resolves the libcurl functions client.c uses, on first use, through
 * the curl shim next to _impl (the wheel's own libcurl) or else the system's libcurl.so.4. */
#define CURL_LAZY_IMPL
#include "webhook/curl_lazy.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Built by setup.py next to _impl (always with the abi3 suffix); it needs libcurl, which the
 * wheel carries in coglet.libs/ (docs/architecture.md, Packaging). */
#define CURL_SHIM_NAME "_curl_shim.abi3.so"

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

/* dlsym on the shim's handle searches its dependencies too, so the curl functions resolve
 * from the libcurl the shim needs. Without a loadable shim, the system's libcurl.so.4. */
static void *open_libcurl(void) {
    char shim_error[160] = "no " CURL_SHIM_NAME;
    Dl_info self;
    if (dladdr((void *)&curl_lazy_load, &self) && self.dli_fname) {
        const char *slash = strrchr(self.dli_fname, '/');
        char path[PATH_MAX];
        int len = slash ? snprintf(path, sizeof path, "%.*s/%s", (int)(slash - self.dli_fname), self.dli_fname,
                                   CURL_SHIM_NAME)
                        : -1;
        if (len > 0 && (size_t)len < sizeof path) {
            void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (lib)
                return lib;
            snprintf(shim_error, sizeof shim_error, "%s", dlerror());
        }
    }
    void *lib = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!lib)
        snprintf(load_error, sizeof load_error, "cannot load libcurl (apt-get install libcurl4): %s; %s", shim_error,
                 dlerror());
    return lib;
}

static void load(void) {
    void *lib = open_libcurl();
    if (!lib)
        return;
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
    RESOLVE(easy_reset, "curl_easy_reset");
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
