/* shim/curl_shim.c: coglet/_curl_shim.abi3.so, a shared object that only needs libcurl
 * (DT_NEEDED), so that auditwheel grafts libcurl and what it pulls in into the wheel as it
 * does for _impl. webhook/curl_lazy.c dlopens it on the first webhook or upload and finds
 * curl's functions through its handle; _impl itself never links libcurl. Not a Python
 * module: it has no PyInit and must not include Python.h. */
#include <curl/curl.h>

/* One reference to libcurl keeps the DT_NEEDED entry under --as-needed. */
__attribute__((visibility("default"))) const char *coglet_curl_shim_version(void) {
    return curl_version();
}
