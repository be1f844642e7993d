/* response.c -- see response.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "response.h"
#include "sale.h"

/* What is sent when even building an answer failed (out of memory). */
static const char fallback_body[] =
    "{\"type\":\"" PROBLEM_TYPE_PREFIX "internal_error\",\"title\":\"Internal server error\","
    "\"status\":500,\"detail\":\"The server failed unexpectedly.\",\"code\":\"internal_error\"}";

static void set_fallback(struct response *res)
{
    response_free(res);
    res->status = 500;
    res->content_type = CONTENT_TYPE_PROBLEM;
    res->body = (char *)fallback_body;
    res->body_len = sizeof fallback_body - 1;
    res->body_static = 1;
    res->reason = PROBLEM_INTERNAL;
}

void response_init(struct response *res)
{
    memset(res, 0, sizeof *res);
    set_fallback(res);
}

void response_free(struct response *res)
{
    if (!res->body_static)
        free(res->body);
    res->body = NULL;
    res->body_len = 0;
    res->body_static = 0;
    res->retry_after = 0;
    res->allow = NULL;
    res->replayed = 0;
}

/* Puts one member on obj. json-c owns val once the add succeeds, but not
 * when it fails (json_object.c: the key copy can fail first). */
static int add(json_object *obj, const char *key, json_object *val)
{
    if (json_object_object_add(obj, key, val) == 0)
        return 0;
    json_object_put(val);
    return -1;
}

static int add_int(json_object *obj, const char *key, int64_t v)
{
    json_object *val = json_object_new_int64(v);
    return val != NULL ? add(obj, key, val) : -1;
}

/* A NULL s becomes JSON null. */
static int add_str(json_object *obj, const char *key, const char *s)
{
    json_object *val = s != NULL ? json_object_new_string(s) : NULL;
    return s == NULL || val != NULL ? add(obj, key, val) : -1;
}

/* Serialises obj into res and consumes it. */
static int finish(struct response *res, json_object *obj, int status, const char *ctype,
                  enum problem reason)
{
    size_t len;
    const char *s = json_object_to_json_string_length(
        obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    char *copy = s != NULL ? malloc(len) : NULL;
    if (copy == NULL) {
        json_object_put(obj);
        set_fallback(res);
        return -1;
    }
    memcpy(copy, s, len); /* the string belongs to obj, which goes now */
    json_object_put(obj);

    response_free(res);
    res->status = status;
    res->content_type = ctype;
    res->body = copy;
    res->body_len = len;
    res->reason = reason;
    return 0;
}

int response_text(struct response *res, const char *content_type, const char *text, size_t len)
{
    char *copy = malloc(len > 0 ? len : 1);
    if (copy == NULL) {
        set_fallback(res);
        return -1;
    }
    memcpy(copy, text, len);
    response_free(res);
    res->status = 200;
    res->content_type = content_type;
    res->body = copy;
    res->body_len = len;
    res->reason = PROBLEM_NONE;
    return 0;
}

/* A problem object with the five standard members; NULL when out of memory. */
static json_object *problem_object(enum problem p, const char *detail)
{
    const struct problem_info *info = problem_info(p);
    char type[128];
    json_object *obj = json_object_new_object();
    if (obj == NULL)
        return NULL;
    snprintf(type, sizeof type, PROBLEM_TYPE_PREFIX "%s", info->code);
    if (add_str(obj, "type", type) < 0 || add_str(obj, "title", info->title) < 0 ||
        add_int(obj, "status", info->status) < 0 ||
        add_str(obj, "detail", detail != NULL ? detail : info->detail) < 0 ||
        add_str(obj, "code", info->code) < 0) {
        json_object_put(obj);
        return NULL;
    }
    return obj;
}

static int finish_problem(struct response *res, enum problem p, json_object *obj)
{
    const struct problem_info *info = problem_info(p);
    if (obj == NULL) {
        set_fallback(res);
        return -1;
    }
    if (finish(res, obj, info->status, CONTENT_TYPE_PROBLEM, p) < 0)
        return -1;
    res->retry_after = info->retry_after;
    return 0;
}

int response_problem(struct response *res, enum problem p, const char *detail)
{
    return finish_problem(res, p, problem_object(p, detail));
}

int response_insufficient(struct response *res, int64_t available, int64_t requested)
{
    json_object *obj = problem_object(PROBLEM_INSUFFICIENT_STOCK, NULL);
    if (obj != NULL &&
        (add_int(obj, "available", available) < 0 || add_int(obj, "requested", requested) < 0)) {
        json_object_put(obj);
        obj = NULL;
    }
    return finish_problem(res, PROBLEM_INSUFFICIENT_STOCK, obj);
}

int response_not_allowed(struct response *res, const char *allow)
{
    if (response_problem(res, PROBLEM_METHOD_NOT_ALLOWED, NULL) < 0)
        return -1;
    res->allow = allow;
    return 0;
}

int response_order(struct response *res, const struct order *o)
{
    json_object *obj = json_object_new_object();
    if (obj == NULL || add_int(obj, "order_id", o->id) < 0 ||
        add_int(obj, "product_id", o->product_id) < 0 || add_int(obj, "amount", o->amount) < 0 ||
        add_int(obj, "remaining", o->remaining) < 0) {
        json_object_put(obj);
        set_fallback(res);
        return -1;
    }
    return finish(res, obj, 200, CONTENT_TYPE_JSON, PROBLEM_NONE);
}

int response_outcome(struct response *res, const struct outcome *o, int32_t requested)
{
    switch (o->status) {
    case 200:
        return response_order(res, &o->order);
    case 409:
        return response_insufficient(res, o->available, requested);
    default:
        return response_problem(res, PROBLEM_PRODUCT_NOT_FOUND, NULL);
    }
}

int response_product(struct response *res, const struct product *p)
{
    json_object *obj = json_object_new_object();
    if (obj == NULL || add_int(obj, "id", p->id) < 0 || add_str(obj, "name", p->name) < 0 ||
        add_int(obj, "amount", p->amount) < 0) {
        json_object_put(obj);
        set_fallback(res);
        return -1;
    }
    return finish(res, obj, 200, CONTENT_TYPE_JSON, PROBLEM_NONE);
}

static const char *up_or_down(int ok)
{
    return ok ? "ok" : "down";
}

int response_health(struct response *res, int postgres_ok, int redis_ok)
{
    if (postgres_ok && redis_ok) {
        json_object *obj = json_object_new_object();
        if (obj == NULL || add_str(obj, "status", "ok") < 0 || add_str(obj, "postgres", "ok") < 0 ||
            add_str(obj, "redis", "ok") < 0) {
            json_object_put(obj);
            set_fallback(res);
            return -1;
        }
        return finish(res, obj, 200, CONTENT_TYPE_JSON, PROBLEM_NONE);
    }

    char detail[96];
    snprintf(detail, sizeof detail, "Not ready: %s%s%s.", postgres_ok ? "" : "PostgreSQL",
             !postgres_ok && !redis_ok ? " and " : "", redis_ok ? "" : "Redis");
    json_object *obj = problem_object(PROBLEM_SERVICE_UNAVAILABLE, detail);
    if (obj != NULL && (add_str(obj, "postgres", up_or_down(postgres_ok)) < 0 ||
                        add_str(obj, "redis", up_or_down(redis_ok)) < 0)) {
        json_object_put(obj);
        obj = NULL;
    }
    return finish_problem(res, PROBLEM_SERVICE_UNAVAILABLE, obj);
}

const char *response_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 500:
        return "Internal Server Error";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Unknown";
    }
}
