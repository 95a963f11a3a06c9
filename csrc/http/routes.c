/* http/routes.c: the HTTP routes: request bodies, status codes and bodies, each route's
 * call into the prediction core. docs/http-api.md describes every route. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/bignum.h"
#include "common/build_info.h"
#include "common/json_in.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "core/prediction.h"
#include "http/door.h"
#include "core/webhook_sink.h"

#define TARGET "coglet::transport::http"
#define JSON_OUT JSON_OUT_SORTED
#define INPUT_RAW_MIN ((size_t)64 << 10)

static const char not_ready_body[] =
    "{\"error\":\"Setup has not finished yet. Wait until it has finished, or GET /health-check for "
    "status.\",\"status\":\"failed\"}";
static const char busy_body[] = "{\"error\":\"At capacity - all prediction slots busy\",\"status\":\"failed\"}";
static const char no_stream_body[] = "{\"error\":\"This model does not support streaming responses. Add "
                                     "@cog.streaming to predict() to enable SSE.\"}";
static const char training_stream_body[] = "{\"error\":\"Training endpoints do not support streaming responses.\"}";

static void respond_text(http_conn *conn, int status, const char *text) {
    http_respond(conn, status, "text/plain; charset=utf-8", text, strlen(text), NULL);
}

/* ---- GET / ---- */

static void route_root(core *c, http_conn *conn) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "cog_version",
                          c->cfg.python_sdk_version ? c->cfg.python_sdk_version : coglet_build.version, "docs_url",
                          "/docs", "healthcheck_url", "/health-check", "openapi_url", "/openapi.json",
                          "predictions_cancel_url", "/predictions/{prediction_id}/cancel",
                          "predictions_idempotent_url", "/predictions/{prediction_id}", "predictions_url",
                          "/predictions", "shutdown_url", "/shutdown");
    if (c->has_training_input) {
        json_object_set_new(o, "trainings_url", json_string("/trainings"));
        json_object_set_new(o, "trainings_idempotent_url", json_string("/trainings/{training_id}"));
        json_object_set_new(o, "trainings_cancel_url", json_string("/trainings/{training_id}/cancel"));
    }
    respond_json_value(conn, 200, o, JSON_OUT);
}

/* ---- GET /openapi.json ---- */

static void route_openapi(core *c, http_conn *conn) {
    if (!c->schema) {
        http_respond_json(conn, 503, "{\"error\":\"OpenAPI schema not available\"}");
        return;
    }
    respond_json_value(conn, 200, json_incref(c->schema), JSON_OUT);
}

/* ---- request bodies (docs/http-api.md, "Processing order") ---- */

static int is_json_content_type(const char *ct) {
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    if (n == 16 && !strncasecmp(ct, "application/json", 16))
        return 1;
    if (n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5))
        return 1;
    return 0;
}

static const char *json_type_phrase(const json_t *v, char *tmp, size_t tmplen) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "map";
    case JSON_ARRAY: return "sequence";
    case JSON_STRING:
        if (bignum_is(v)) /* serde_json reads an integer beyond 64 bits as a float */
            snprintf(tmp, tmplen, "floating point `%g`", bignum_to_double(v));
        else
            snprintf(tmp, tmplen, "string \"%.64s\"", json_string_value(v));
        return tmp;
    case JSON_INTEGER: snprintf(tmp, tmplen, "integer `%lld`", (long long)json_integer_value(v)); return tmp;
    case JSON_REAL: snprintf(tmp, tmplen, "floating point `%g`", json_real_value(v)); return tmp;
    case JSON_TRUE: return "boolean `true`";
    case JSON_FALSE: return "boolean `false`";
    case JSON_NULL: return "null";
    }
    return "value";
}

/* ---- where a value sits in the raw body, for serde-style "at line L column C" ---- */

/* The top-level members whose values a 422 or the raw input forwarding points at. */
enum { MEMBER_ID, MEMBER_INPUT, MEMBER_WEBHOOK, MEMBER_CONTEXT, MEMBER_FILTER, NUM_MEMBERS };

typedef struct body_map {
    const buf *body;
    json_in_options opts;
    json_in_member members[NUM_MEMBERS];
} body_map;

/* The 422 for a value of the wrong type: at top-level member `m` (-1: the whole body), or at
 * its item `item` (an object member named `inner`, or an array element); the position is
 * just past that value, as recorded by the parse. */
static int shape_error(http_conn *conn, const body_map *map, int m, long item, const char *inner, const json_t *v,
                       const char *expected) {
    char tmp[128], path[400], text[800];
    size_t at = map->opts.end;
    const json_in_member *mem = m >= 0 ? &map->members[m] : NULL;
    if (mem)
        at = item >= 0 && (size_t)item < mem->num_items ? mem->item_ends[item] : mem->end;
    int line, col;
    json_in_position(map->body->data ? map->body->data : "", map->body->len, at, &line, &col);
    if (mem && item >= 0 && inner)
        snprintf(path, sizeof path, "%s.%.256s: ", mem->key, inner);
    else if (mem && item >= 0)
        snprintf(path, sizeof path, "%s[%ld]: ", mem->key, item);
    else if (mem)
        snprintf(path, sizeof path, "%s: ", mem->key);
    else
        path[0] = '\0';
    snprintf(text, sizeof text,
             "Failed to deserialize the JSON body into the target type: %sinvalid type: %s, expected %s at line %d "
             "column %d",
             path, json_type_phrase(v, tmp, sizeof tmp), expected, line, col);
    log_warn(TARGET, "%s", text);
    respond_text(conn, 422, text);
    return -1;
}

/* A body that is not JSON is a 400; a key given twice, at any depth, is a 422 shaped like
 * serde's "duplicate field": what is validated must be exactly what the predictor gets, and
 * with a repeated key the two could differ. */
static void parse_failed(http_conn *conn, const json_in_error *err) {
    char text[512];
    int status = err->code == JSON_IN_EDUPLICATE ? 422 : 400;
    snprintf(text, sizeof text, "%s: %s",
             status == 422 ? "Failed to deserialize the JSON body into the target type"
                           : "Failed to parse the request body as JSON",
             err->text);
    log_warn(TARGET, "%s", text);
    respond_text(conn, status, text);
}

/* Parses and shape-checks a create body. 0 with *out set (and, when the body has a non-null
 * `input`, its bytes at body[*input_off, *input_off + *input_len)), or -1 after responding. */
static int parse_create_body(http_conn *conn, http_request *req, json_t **out, size_t *input_off, size_t *input_len) {
    *out = NULL;
    *input_off = *input_len = 0;
    const char *ct = http_request_header(req, "content-type");
    if (!ct) {
        *out = json_object();
        return 0;
    }
    if (!is_json_content_type(ct)) {
        log_warn(TARGET, "rejected body with Content-Type %s", ct);
        respond_text(conn, 415, "Expected request with `Content-Type: application/json`");
        return -1;
    }
    body_map map = {
        .body = &req->body,
        .opts = {.flags = JSON_IN_REJECT_DUPLICATES, .max_depth = JSON_IN_BODY_MAX_DEPTH, .num_members = NUM_MEMBERS},
        .members = {[MEMBER_ID] = {.key = "id"},
                    [MEMBER_INPUT] = {.key = "input"},
                    [MEMBER_WEBHOOK] = {.key = "webhook"},
                    [MEMBER_CONTEXT] = {.key = "context", .with_items = 1},
                    [MEMBER_FILTER] = {.key = "webhook_events_filter", .with_items = 1}},
    };
    map.opts.members = map.members;
    json_in_error err;
    json_t *body = json_in_parse_with(req->body.data ? req->body.data : "", req->body.len, &map.opts, &err);
    if (!body) {
        parse_failed(conn, &err);
        goto failed;
    }
    if (!json_is_object(body)) {
        shape_error(conn, &map, -1, -1, NULL, body, "struct PredictionRequest");
        goto failed;
    }
    json_t *v;
    if ((v = json_object_get(body, "id")) && !json_is_text(v) && !json_is_null(v)) {
        shape_error(conn, &map, MEMBER_ID, -1, NULL, v, "a string");
        goto failed;
    }
    if ((v = json_object_get(body, "webhook")) && !json_is_text(v) && !json_is_null(v)) {
        shape_error(conn, &map, MEMBER_WEBHOOK, -1, NULL, v, "a string");
        goto failed;
    }
    if ((v = json_object_get(body, "context")) && !json_is_null(v)) {
        if (!json_is_object(v)) {
            shape_error(conn, &map, MEMBER_CONTEXT, -1, NULL, v, "a map");
            goto failed;
        }
        const char *k;
        json_t *cv;
        long i = 0;
        json_object_foreach(v, k, cv) { /* in the body's order: the parse rejected duplicates */
            if (!json_is_text(cv)) {
                shape_error(conn, &map, MEMBER_CONTEXT, i, k, cv, "a string");
                goto failed;
            }
            i++;
        }
    }
    if ((v = json_object_get(body, "webhook_events_filter"))) {
        if (!json_is_array(v)) {
            shape_error(conn, &map, MEMBER_FILTER, -1, NULL, v, "a sequence");
            goto failed;
        }
        size_t i;
        json_t *e;
        json_array_foreach(v, i, e) {
            const char *s = json_is_text(e) ? json_string_value(e) : NULL;
            if (!s || (strcmp(s, "start") && strcmp(s, "output") && strcmp(s, "logs") && strcmp(s, "completed"))) {
                shape_error(conn, &map, MEMBER_FILTER, (long)i, NULL, e, "one of `start`, `output`, `logs`, `completed`");
                goto failed;
            }
        }
    }
    const json_in_member *input = &map.members[MEMBER_INPUT];
    if (input->found && !json_is_null(json_object_get(body, "input"))) {
        *input_off = input->start;
        *input_len = input->end - input->start;
    }
    json_in_members_free(map.members, NUM_MEMBERS);
    *out = body;
    return 0;
failed:
    json_in_members_free(map.members, NUM_MEMBERS);
    json_decref(body);
    return -1;
}

/* ---- create ---- */

/* A sync client waiting for the terminal state: a sink of its prediction. */
typedef struct sync_response {
    response super;
    sink sink;
    prediction *p;
} sync_response;

static void sync_on_terminal(sink *s, prediction *p, const json_t *state) {
    (void)state;
    sync_response *sr = container_of(s, sync_response, sink);
    http_conn *conn = sr->super.conn;
    conn->app_data = NULL;
    free(sr);
    respond_json_body(conn, 200, prediction_sync_json(p));
    prediction_unref(p); /* the waiter's reference */
}

static void sync_on_discard(sink *s, prediction *p) {
    sync_response *sr = container_of(s, sync_response, sink);
    sr->super.conn->app_data = NULL;
    free(sr);
    prediction_unref(p);
}

static const sink_ops sync_sink_ops = {.on_terminal = sync_on_terminal, .on_discard = sync_on_discard};

/* A sync client that leaves cancels its prediction (docs/http-api.md, "Cancel"). */
static void sync_abort(response *res) {
    sync_response *sr = container_of(res, sync_response, super);
    prediction *p = sr->p;
    prediction_detach(p, &sr->sink);
    free(sr);
    if (prediction_in_flight(p)) {
        log_event(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", prediction_id(p)),
                  "client disconnected; cancelling prediction");
        prediction_cancel(p);
    }
    prediction_unref(p);
}

static const response_ops sync_ops = {.abort = sync_abort};

static int attach_sync(prediction *p, http_conn *conn) {
    sync_response *sr = calloc(1, sizeof *sr);
    if (!sr)
        return -1;
    sr->super.ops = &sync_ops;
    sr->super.conn = conn;
    sr->sink.ops = &sync_sink_ops;
    sr->p = p;
    prediction_ref(p);
    conn->app_data = &sr->super;
    prediction_attach(p, &sr->sink);
    return 0;
}

static int wants_sse(const http_request *req) {
    const char *accept = http_request_header(req, "accept");
    if (!accept)
        return 0;
    const char *p = accept;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        const char *semi = memchr(s, ';', (size_t)(e - s));
        const char *end = semi ? semi : e;
        while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end - s == 17 && !memcmp(s, "text/event-stream", 17))
            return 1;
        p = *e ? e + 1 : e;
    }
    return 0;
}

static int wants_async(const http_request *req) {
    const char *prefer = http_request_header(req, "prefer");
    return prefer && !strcmp(prefer, "respond-async");
}

/* PUT with an id in flight: its state (202), or its stream. 1 when answered. */
static int attach_existing(http_door *d, http_conn *conn, const char *id, int sse) {
    prediction *existing = core_find(d->core, id);
    if (!existing)
        return 0;
    if (sse && !d->core->streaming) {
        http_respond_json(conn, 406, no_stream_body);
    } else if (sse) {
        sse_hub *hub = sse_hub_for(d, existing, 0);
        if (hub)
            sse_subscribe(hub, conn);
        else
            http_respond_json(conn, 500, "{\"error\":\"Prediction stream unavailable\"}");
    } else {
        respond_json_value(conn, 202, prediction_state_json(existing, 1), JSON_OUT);
    }
    return 1;
}

/* The body's input, stripped, validated and null-injected, before readiness and capacity
 * are checked (docs/schema.md). 0 with *out set, or -1 after answering 422. */
static int prepare_input(core *c, http_conn *conn, json_t *body, int is_training, json_t **out, int *changed) {
    json_t *input = json_object_get(body, "input");
    input = input && !json_is_null(input) ? json_incref(input) : json_object();
    *out = input;
    *changed = 0;
    const validator *v = core_validator(c, is_training);
    if (!v)
        return 0;
    size_t fields_before = json_object_size(input);
    json_t *detail = NULL, *stripped = NULL;
    int bad = validator_apply(v, input, &detail, &stripped);
    *changed = stripped != NULL || json_object_size(input) != fields_before;
    if (stripped) {
        char *names = json_out_string(stripped, 0);
        log_warn(TARGET, "stripped unknown input fields: %s", names ? names : "?");
        free(names);
        json_decref(stripped);
    }
    if (!bad)
        return 0;
    json_t *o = json_pack("{s:o}", "detail", detail ? detail : json_array());
    char *text = json_out_string(o, JSON_OUT_SORTED);
    log_warn(TARGET, "input rejected: %s", text ? text : "?");
    free(text);
    respond_json_value(conn, 422, o, JSON_OUT);
    return -1;
}

/* A large input that validation left as it was is sent as the client's own bytes: the body
 * is handed to the prediction, and nothing is re-encoded. The span comes from the same parse
 * that produced the validated value, and repeated keys were refused, so the bytes are exactly
 * what was validated. */
static void raw_input_span(http_request *req, size_t off, size_t len, prediction_request *pr) {
    if (req->body.len > INPUT_RAW_MIN && len) {
        pr->input_raw_len = len;
        pr->input_raw_off = off;
        pr->input_raw = buf_steal(&req->body);
    }
}

static void respond_not_admitted(http_conn *conn, admit_result why) {
    switch (why) {
    case ADMIT_SHUTTING_DOWN:
        http_respond_json(conn, 503, "{\"error\":\"Server is shutting down\",\"status\":\"failed\"}");
        break;
    case ADMIT_DEFUNCT:
        http_respond_json(conn, 503,
                          "{\"error\":\"Worker crashed; restart the server to serve predictions again\","
                          "\"status\":\"failed\"}");
        break;
    case ADMIT_NOT_READY: http_respond_json(conn, 503, not_ready_body); break;
    case ADMIT_BUSY: http_respond_json(conn, 409, busy_body); break;
    case ADMIT_OK: http_respond_json(conn, 500, "{\"error\":\"out of memory\"}"); break;
    }
}

/* The sinks of a new prediction, in the order they hear of it: the SSE fan-out (when the
 * model streams), the webhook, then the waiting client. 0, or -1 after answering. */
static int attach_sinks(http_door *d, prediction *p, http_conn *conn, http_request *req, json_t *body, int sse,
                        int async) {
    core *c = d->core;
    sse_hub *hub = NULL;
    if (c->streaming && !(hub = sse_hub_for(d, p, 1)) && sse) {
        http_respond_json(conn, 500, "{\"error\":\"Prediction stream unavailable\"}");
        return -1;
    }
    const char *hook = json_string_value(json_object_get(body, "webhook"));
    if (hook) {
        unsigned events = webhook_parse_filter(json_object_get(body, "webhook_events_filter"));
        sink *wh = events ? webhook_sink_new(c, hook, events, http_request_header(req, "traceparent"),
                                             http_request_header(req, "tracestate"))
                          : NULL;
        if (wh)
            prediction_attach(p, wh);
    }
    if (sse) {
        /* subscribed before dispatch: the stream begins with `start`; refused, or the client
         * already gone: nothing to run it for */
        sse_hub_owns(hub);
        return sse_subscribe(hub, conn) == 0 && sse_hub_subscribers(hub) > 0 ? 0 : -1;
    }
    if (!async && attach_sync(p, conn) != 0) {
        http_respond_json(conn, 500, "{\"error\":\"out of memory\"}");
        return -1;
    }
    return 0;
}

static void route_create(http_door *d, http_conn *conn, http_request *req, const char *path_id, int is_training) {
    core *c = d->core;
    json_t *body = NULL, *input = NULL;
    int sse = wants_sse(req);
    if (is_training && sse && path_id) {
        http_respond_json(conn, 406, training_stream_body); /* PUT: before everything else */
        return;
    }
    size_t input_off, input_len;
    if (parse_create_body(conn, req, &body, &input_off, &input_len) != 0)
        return;
    const char *body_id = json_string_value(json_object_get(body, "id"));
    if (path_id && body_id && strcmp(body_id, path_id)) {
        json_t *detail = json_pack("{s:[{s:[s,s], s:s, s:s}]}", "detail", "loc", "body", "id", "msg",
                                   is_training ? "training ID must match the ID supplied in the URL"
                                               : "prediction ID must match the ID supplied in the URL",
                                   "type", "value_error");
        respond_json_value(conn, 422, detail, JSON_OUT);
        goto done;
    }
    if (is_training && sse) {
        http_respond_json(conn, 406, training_stream_body);
        goto done;
    }
    if (path_id && attach_existing(d, conn, path_id, sse))
        goto done;
    if (sse && !c->streaming) {
        http_respond_json(conn, 406, no_stream_body);
        goto done;
    }
    int changed;
    if (prepare_input(c, conn, body, is_training, &input, &changed) != 0)
        goto done;
    prediction_request pr = {
        .id = path_id ? path_id : body_id,
        .is_training = is_training,
        .input = input,
        .context = json_object_get(body, "context"),
        .door = "http",
        .traceparent = http_request_header(req, "traceparent"),
    };
    input = NULL; /* taken by prediction_create */
    json_t *given = json_object_get(body, "input");
    if (given && !json_is_null(given) && !changed)
        raw_input_span(req, input_off, input_len, &pr);
    admit_result why;
    prediction *p = prediction_create(c, &pr, &why);
    if (!p) {
        respond_not_admitted(conn, why);
        goto done;
    }
    if (c->predict_timeout > 0)
        prediction_set_deadline(p, c->predict_timeout);
    int async = !sse && wants_async(req);
    if (attach_sinks(d, p, conn, req, body, sse, async) != 0) {
        prediction_discard(p);
        goto done;
    }
    prediction_start(p);
    if (async)
        respond_json_value(conn, 202, json_pack("{s:s, s:s}", "id", prediction_id(p), "status", "starting"),
                           JSON_OUT);
    prediction_unref(p);
done:
    json_decref(input);
    json_decref(body);
}

/* ---- cancel, shutdown ---- */

static void route_cancel(core *c, http_conn *conn, const char *id) {
    if (core_cancel(c, id) == 0)
        http_respond_json(conn, 200, "{}");
    else
        http_respond_json(conn, 404, "{}");
}

static void route_shutdown(core *c, http_conn *conn) {
    http_respond_json(conn, 200, "{}");
    core_begin_shutdown(c, "Shutdown requested via /shutdown endpoint...");
}

/* ---- routing ---- */

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes [s, s+n) into out (NUL-terminated). -1 on a bad escape or NUL byte. */
static int percent_decode(const char *s, size_t n, char *out, size_t outlen) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0' || o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

static void method_not_allowed(http_conn *conn, const char *allow) {
    char hdr[64];
    snprintf(hdr, sizeof hdr, "allow: %s\r\n", allow);
    http_respond(conn, 405, NULL, "", 0, hdr);
}

static void not_found(http_conn *conn) { http_respond(conn, 404, NULL, "", 0, NULL); }

void door_on_request(http_conn *conn, http_request *req) {
    http_door *d = conn->server->app;
    core *c = d->core;
    const char *url = req->url.data ? req->url.data : "";
    size_t plen = strcspn(url, "?#");
    int m = req->method;
    int get = m == HTTP_GET || m == HTTP_HEAD;
    int post = m == HTTP_POST;

#define PATH_IS(lit) (plen == sizeof(lit) - 1 && !memcmp(url, lit, plen))
    if (PATH_IS("/")) {
        get ? route_root(c, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/health-check")) {
        get ? route_health(d, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/openapi.json")) {
        get ? route_openapi(c, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/shutdown")) {
        post ? route_shutdown(c, conn) : method_not_allowed(conn, "POST");
        return;
    }
    if (PATH_IS("/livez")) {
        get ? route_livez(conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/readyz")) {
        get ? route_readyz(c, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/metrics")) {
        get ? route_metrics(conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    int training = 0;
    size_t base;
    if (plen >= 12 && !memcmp(url, "/predictions", 12))
        base = 12;
    else if (plen >= 10 && !memcmp(url, "/trainings", 10))
        base = 10, training = 1;
    else {
        not_found(conn);
        return;
    }
    if (plen == base) {
        post ? route_create(d, conn, req, NULL, training) : method_not_allowed(conn, "POST");
        return;
    }
    if (url[base] != '/' || plen == base + 1) {
        not_found(conn);
        return;
    }
    const char *seg = url + base + 1;
    size_t seglen = plen - base - 1;
    const char *slash = memchr(seg, '/', seglen);
    char id[1024];
    if (!slash) {
        if (percent_decode(seg, seglen, id, sizeof id) != 0) {
            not_found(conn);
            return;
        }
        m == HTTP_PUT ? route_create(d, conn, req, id, training) : method_not_allowed(conn, "PUT");
        return;
    }
    size_t idlen = (size_t)(slash - seg);
    if (idlen == 0 || seglen - idlen != 7 || memcmp(slash, "/cancel", 7) ||
        percent_decode(seg, idlen, id, sizeof id) != 0) {
        not_found(conn);
        return;
    }
    post ? route_cancel(c, conn, id) : method_not_allowed(conn, "POST");
#undef PATH_IS
}

