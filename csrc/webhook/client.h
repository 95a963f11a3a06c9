/* webhook/client.h: outgoing HTTP on libcurl's multi interface, driven by the libuv loop
 * (no thread per request). Webhooks and output uploads both go through here. */
#ifndef COGLET_CLIENT_H
#define COGLET_CLIENT_H

#ifndef CURL_DISABLE_TYPECHECK
#define CURL_DISABLE_TYPECHECK 1 /* its wrappers are macros named like the functions (curl_lazy.h) */
#endif
#include <curl/curl.h>
#include <stdio.h>
#include <uv.h>

typedef struct client_request client_request;
typedef struct socket_ctx socket_ctx;

#define CLIENT_IDLE_EASY 16 /* finished easy handles kept for the next requests */

typedef struct http_client {
    uv_loop_t *loop;
    client_request *active;
    CURLM *multi;
    socket_ctx *sockets; /* every socket we poll for curl, in use or parked */
    CURL *idle_easy[CLIENT_IDLE_EASY];
    int num_idle_easy;
    curl_socket_t *conn_fds; /* the connections' sockets curl opened through us (parkable) */
    size_t num_conn_fds, cap_conn_fds;
    uv_timer_t timer;
    int timer_open;
    int num_active;
    int closing;
    void (*on_closed)(struct http_client *client);
    void (*on_idle)(struct http_client *client); /* after the last transfer ends */
} http_client;

typedef struct client_result {
    long status;          /* HTTP status, 0 when no response */
    CURLcode code;        /* CURLE_OK when a response arrived */
    const char *error;    /* transport error text, NULL when code == CURLE_OK */
    const char *location; /* Location header, or NULL */
    const char *effective_url;
} client_result;

/* Called once per started request, unless it was aborted. */
typedef void (*client_done_cb)(void *ctx, const client_result *result);

typedef struct client_request_opts {
    const char *method; /* "POST", "PUT" */
    const char *url;
    const char *const *headers; /* NULL-terminated "Name: value" lines */
    const char *body;           /* copied */
    size_t body_len;
    FILE *upload;               /* streamed body instead of `body` (not closed by us) */
    curl_off_t upload_len;
    long timeout_ms;
    /* Optional: called with ctx instead of the done callback when the request is aborted
     * (http_client_abort, or the client closing), so ctx can be freed. */
    void (*on_abort)(void *ctx);
} client_request_opts;

int http_client_init(http_client *client, uv_loop_t *loop);
/* NULL when the request could not even be set up (then cb is never called). */
client_request *http_client_start(http_client *client, const client_request_opts *opts, client_done_cb cb, void *ctx);
/* Stops a request; its callback is not called (its `release`, when it has one, is). */
void http_client_abort(http_client *client, client_request *req);
/* Aborts what is left and closes; on_closed when every handle is gone. */
void http_client_close(http_client *client, void (*on_closed)(http_client *client));

#endif
