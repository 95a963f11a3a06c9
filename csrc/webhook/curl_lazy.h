/* webhook/curl_lazy.h: libcurl, loaded with dlopen on first use. libcurl and the 30-odd
 * libraries it pulls in (TLS, HTTP/2, LDAP, Kerberos...) cost ~6 MB of resident memory;
 * a server that never sends a webhook or an upload never pays it. client.c calls curl
 * through these pointers (the macros below keep its code reading like plain libcurl). */
#ifndef COGLET_CURL_LAZY_H
#define COGLET_CURL_LAZY_H

/* the typecheck wrappers are macros of the same names */
#ifndef CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_TYPECHECK 1
#endif
#include <curl/curl.h>

typedef struct curl_api {
    CURLcode (*global_init)(long flags);
    CURLM *(*multi_init)(void);
    CURLMcode (*multi_setopt)(CURLM *m, CURLMoption opt, ...);
    CURLMcode (*multi_socket_action)(CURLM *m, curl_socket_t s, int ev, int *running);
    CURLMsg *(*multi_info_read)(CURLM *m, int *left);
    CURLMcode (*multi_assign)(CURLM *m, curl_socket_t s, void *p);
    CURLMcode (*multi_add_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_remove_handle)(CURLM *m, CURL *e);
    CURLMcode (*multi_cleanup)(CURLM *m);
    CURL *(*easy_init)(void);
    CURLcode (*easy_setopt)(CURL *e, CURLoption opt, ...);
    CURLcode (*easy_getinfo)(CURL *e, CURLINFO info, ...);
    void (*easy_cleanup)(CURL *e);
    void (*easy_reset)(CURL *e);
    const char *(*easy_strerror)(CURLcode code);
    struct curl_slist *(*slist_append)(struct curl_slist *l, const char *s);
    void (*slist_free_all)(struct curl_slist *l);
} curl_api;

extern curl_api curl_lazy;
/* Loads libcurl once. 0, or -1 with err set (the library or a symbol is missing). */
int curl_lazy_load(char *err, size_t errlen);

#ifndef CURL_LAZY_IMPL
/* curl.h wraps these three in macros of their own names */
#undef curl_easy_setopt
#undef curl_easy_getinfo
#undef curl_multi_setopt
#define curl_global_init curl_lazy.global_init
#define curl_multi_init curl_lazy.multi_init
#define curl_multi_setopt curl_lazy.multi_setopt
#define curl_multi_socket_action curl_lazy.multi_socket_action
#define curl_multi_info_read curl_lazy.multi_info_read
#define curl_multi_assign curl_lazy.multi_assign
#define curl_multi_add_handle curl_lazy.multi_add_handle
#define curl_multi_remove_handle curl_lazy.multi_remove_handle
#define curl_multi_cleanup curl_lazy.multi_cleanup
#define curl_easy_init curl_lazy.easy_init
#define curl_easy_setopt curl_lazy.easy_setopt
#define curl_easy_getinfo curl_lazy.easy_getinfo
#define curl_easy_cleanup curl_lazy.easy_cleanup
#define curl_easy_reset curl_lazy.easy_reset
#define curl_easy_strerror curl_lazy.easy_strerror
#define curl_slist_append curl_lazy.slist_append
#define curl_slist_free_all curl_lazy.slist_free_all
#endif

#endif
