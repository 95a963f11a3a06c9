/* service/routes.c: the HTTP routes of SPEC 3: request bodies, status codes, bodies. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/json_in.h"
#include "common/json_out.h"
#include "common/log.h"
#include "common/util.h"
#include "service/service.h"

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

static void respond_json_value(http_conn *conn, int status, json_t *value, int flags) {
    char *s = json_out_string(value, flags);
    json_decref(value);
    if (!s) {
        http_respond_json(conn, 500, "{\"error\":\"failed to encode response\"}");
        return;
    }
    http_respond_json_owned(conn, status, s);
}

/* ---- GET / ---- */

static void route_root(service *svc, http_conn *conn) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "cog_version",
                          svc->cfg.python_sdk_version ? svc->cfg.python_sdk_version : COGLET_VERSION, "docs_url",
                          "/docs", "healthcheck_url", "/health-check", "openapi_url", "/openapi.json",
                          "predictions_cancel_url", "/predictions/{prediction_id}/cancel",
                          "predictions_idempotent_url", "/predictions/{prediction_id}", "predictions_url",
                          "/predictions", "shutdown_url", "/shutdown");
    if (svc->has_training_input) {
        json_object_set_new(o, "trainings_url", json_string("/trainings"));
        json_object_set_new(o, "trainings_idempotent_url", json_string("/trainings/{training_id}"));
        json_object_set_new(o, "trainings_cancel_url", json_string("/trainings/{training_id}/cancel"));
    }
    respond_json_value(conn, 200, o, JSON_OUT);
}

/* ---- GET /openapi.json ---- */

static void route_openapi(service *svc, http_conn *conn) {
    if (!svc->schema) {
        http_respond_json(conn, 503, "{\"error\":\"OpenAPI schema not available\"}");
        return;
    }
    respond_json_value(conn, 200, json_incref(svc->schema), JSON_OUT);
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
    case JSON_STRING: snprintf(tmp, tmplen, "string \"%.64s\"", json_string_value(v)); return tmp;
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
    if ((v = json_object_get(body, "id")) && !json_is_string(v) && !json_is_null(v)) {
        shape_error(conn, &map, MEMBER_ID, -1, NULL, v, "a string");
        goto failed;
    }
    if ((v = json_object_get(body, "webhook")) && !json_is_string(v) && !json_is_null(v)) {
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
            if (!json_is_string(cv)) {
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
            const char *s = json_string_value(e);
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

/* A sync client that leaves cancels its prediction (SPEC 3.16). */
static void sync_abort(response *res) {
    prediction *p = res->p;
    p->sync_res = NULL;
    free(res);
    if (p->in_registry) {
        log_event(LOG_INFO, TARGET, json_pack("{s:s}", "prediction_id", p->id),
                  "client disconnected; cancelling prediction");
        service_cancel(p->svc, p->id);
    }
    prediction_unref(p);
}

static const response_ops sync_ops = {.abort = sync_abort};

static void generate_id(char *out, size_t outlen) {
    static uint64_t last;
    uint64_t ns = now_realtime_ns();
    if (ns <= last)
        ns = last + 1;
    last = ns;
    snprintf(out, outlen, "pred_%llx", (unsigned long long)ns);
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

static void route_create(service *svc, http_conn *conn, http_request *req, const char *path_id, int is_training) {
    json_t *body;
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
        json_t *d = json_pack("{s:[{s:[s,s], s:s, s:s}]}", "detail", "loc", "body", "id", "msg",
                              is_training ? "training ID must match the ID supplied in the URL"
                                          : "prediction ID must match the ID supplied in the URL",
                              "type", "value_error");
        json_decref(body);
        respond_json_value(conn, 422, d, JSON_OUT);
        return;
    }
    if (is_training && sse) {
        json_decref(body);
        http_respond_json(conn, 406, training_stream_body);
        return;
    }
    if (path_id) {
        prediction *existing = service_find(svc, path_id);
        if (existing) {
            json_decref(body);
            if (sse && !svc->streaming) {
                http_respond_json(conn, 406, no_stream_body);
                return;
            }
            if (sse) {
                sse_subscribe(svc, existing, conn);
                return;
            }
            respond_json_value(conn, 202, prediction_state_json(existing, 1), JSON_OUT);
            return;
        }
    }
    if (sse && !svc->streaming) {
        json_decref(body);
        http_respond_json(conn, 406, no_stream_body);
        return;
    }
    json_t *input = json_object_get(body, "input");
    int from_body = input && !json_is_null(input);
    if (!from_body)
        input = json_object();
    else
        json_incref(input);
    size_t fields_before = json_object_size(input);
    int input_changed = 0;
    /* SPEC 6: strip, validate, inject nulls — before readiness and capacity (3.5) */
    const validator *v = !is_training              ? svc->input_validator
                         : svc->training_validator ? svc->training_validator
                         : svc->training_schema_broken ? NULL
                                                       : svc->input_validator;
    if (v) {
        json_t *detail = NULL, *stripped = NULL;
        int bad = validator_apply(v, input, &detail, &stripped);
        input_changed = stripped != NULL || json_object_size(input) != fields_before;
        if (stripped) {
            char *names = json_out_string(stripped, 0);
            log_warn(TARGET, "stripped unknown input fields: %s", names ? names : "?");
            free(names);
            json_decref(stripped);
        }
        if (bad) {
            json_decref(input);
            json_decref(body);
            json_t *o = json_pack("{s:o}", "detail", detail ? detail : json_array());
            char *text = json_out_string(o, JSON_OUT_SORTED);
            log_warn(TARGET, "input rejected: %s", text ? text : "?");
            free(text);
            respond_json_value(conn, 422, o, JSON_OUT);
            return;
        }
    }
    if (svc->health != HEALTH_READY || svc->shutting_down) {
        json_decref(input);
        json_decref(body);
        if (svc->shutting_down)
            http_respond_json(conn, 503, "{\"error\":\"Server is shutting down\",\"status\":\"failed\"}");
        else if (svc->health == HEALTH_DEFUNCT)
            http_respond_json(conn, 503,
                              "{\"error\":\"Worker crashed; restart the server to serve predictions again\","
                              "\"status\":\"failed\"}");
        else
            http_respond_json(conn, 503, not_ready_body);
        return;
    }
    slot *s = orchestrator_acquire_slot(&svc->orch);
    if (!s) {
        json_decref(input);
        json_decref(body);
        http_respond_json(conn, 409, busy_body);
        return;
    }
    char idbuf[64];
    const char *id = path_id ? path_id : body_id;
    if (!id) {
        generate_id(idbuf, sizeof idbuf);
        id = idbuf;
    }
    prediction *p = prediction_new(svc, id, is_training);
    if (!p) {
        orchestrator_release_slot(&svc->orch, s);
        json_decref(input);
        json_decref(body);
        http_respond_json(conn, 500, "{\"error\":\"out of memory\"}");
        return;
    }
    p->input = input;
    /* A large input that validation left as it was is sent as the client's own bytes: the
     * body is handed to the prediction, and nothing is re-encoded. */
    if (from_body && !input_changed && req->body.len > INPUT_RAW_MIN && input_len) {
        p->input_raw_len = input_len;
        p->input_raw_off = input_off;
        p->input_raw = buf_steal(&req->body);
    }
    json_t *ctx = json_object_get(body, "context");
    if (json_is_object(ctx))
        json_object_update(p->context, ctx);
    const char *hook = json_string_value(json_object_get(body, "webhook"));
    if (hook && service_client(svc) == 0) {
        unsigned events = webhook_parse_filter(json_object_get(body, "webhook_events_filter"));
        if (events)
            p->wh = webhook_new(&svc->client, &svc->webhook_settings, hook, events,
                                http_request_header(req, "traceparent"), http_request_header(req, "tracestate"));
    }
    json_decref(body);
    int async = !sse && wants_async(req);
    if (sse) {
        /* subscribed before dispatch: the stream begins with `start` */
        p->created_sse = 1;
        p->record_events = 1;
        if (sse_subscribe(svc, p, conn) != 0 || p->num_subs == 0) {
            /* refused, or the client was already gone: nothing to run it for */
            orchestrator_release_slot(&svc->orch, s);
            prediction_unref(p);
            return;
        }
    } else if (!async) {
        response *res = calloc(1, sizeof *res);
        if (!res) {
            orchestrator_release_slot(&svc->orch, s);
            prediction_unref(p);
            http_respond_json(conn, 500, "{\"error\":\"out of memory\"}");
            return;
        }
        res->ops = &sync_ops;
        res->conn = conn;
        res->p = p;
        p->sync_res = res;
        conn->app_data = res;
        prediction_ref(p);
    }
    service_dispatch(svc, p, s);
    if (async) {
        json_t *o = json_pack("{s:s, s:s}", "id", p->id, "status", "starting");
        respond_json_value(conn, 202, o, JSON_OUT);
    }
    prediction_unref(p);
}

/* ---- cancel, shutdown ---- */

static void route_cancel(service *svc, http_conn *conn, const char *id) {
    if (service_cancel(svc, id) == 0)
        http_respond_json(conn, 200, "{}");
    else
        http_respond_json(conn, 404, "{}");
}

static void route_shutdown(service *svc, http_conn *conn) {
    http_respond_json(conn, 200, "{}");
    service_begin_shutdown(svc, "Shutdown requested via /shutdown endpoint...");
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

static void on_request(http_conn *conn, http_request *req) {
    service *svc = conn->server->app;
    const char *url = req->url.data ? req->url.data : "";
    size_t plen = strcspn(url, "?#");
    int m = req->method;
    int get = m == HTTP_GET || m == HTTP_HEAD;
    int post = m == HTTP_POST;

#define PATH_IS(lit) (plen == sizeof(lit) - 1 && !memcmp(url, lit, plen))
    if (PATH_IS("/")) {
        get ? route_root(svc, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/health-check")) {
        get ? route_health(svc, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/openapi.json")) {
        get ? route_openapi(svc, conn) : method_not_allowed(conn, "GET,HEAD");
        return;
    }
    if (PATH_IS("/shutdown")) {
        post ? route_shutdown(svc, conn) : method_not_allowed(conn, "POST");
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
        post ? route_create(svc, conn, req, NULL, training) : method_not_allowed(conn, "POST");
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
        m == HTTP_PUT ? route_create(svc, conn, req, id, training) : method_not_allowed(conn, "PUT");
        return;
    }
    size_t idlen = (size_t)(slash - seg);
    if (idlen == 0 || seglen - idlen != 7 || memcmp(slash, "/cancel", 7) ||
        percent_decode(seg, idlen, id, sizeof id) != 0) {
        not_found(conn);
        return;
    }
    post ? route_cancel(svc, conn, id) : method_not_allowed(conn, "POST");
#undef PATH_IS
}

static void on_abort(http_conn *conn) {
    response *res = conn->app_data;
    conn->app_data = NULL;
    if (res)
        res->ops->abort(res);
}

const http_app_ops service_http_ops = {
    .on_request = on_request,
    .on_abort = on_abort,
};
