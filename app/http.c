/* http.c -- see http.h. */
#include <stdio.h>
#include <string.h>

#include "http.h"
#include "request.h"
#include "response.h"

/* How much unread input is thrown away at most: a peer that keeps sending
 * must not keep a worker reading forever. */
#define DRAIN_MAX (64 * 1024)

/* Every value of a parameter: nginx passes a header that a client sent
 * twice as two parameters, and FCGX_GetParam finds only the first. Returns
 * how many came; *coded is the first that names a content coding. */
static int scan_param(const char *name, FCGX_ParamArray envp, const char **coded)
{
    size_t n = strlen(name);
    int count = 0;
    if (coded != NULL)
        *coded = NULL;
    for (; *envp != NULL; envp++) {
        if (strncmp(*envp, name, n) != 0 || (*envp)[n] != '=')
            continue;
        count++;
        if (coded != NULL && *coded == NULL && request_has_coding(*envp + n + 1))
            *coded = *envp + n + 1;
    }
    return count;
}

void http_request_init(struct http_request *req, FCGX_Request *fcgi)
{
    req->method = FCGX_GetParam("REQUEST_METHOD", fcgi->envp);
    req->path = FCGX_GetParam("DOCUMENT_URI", fcgi->envp);
    req->content_type = FCGX_GetParam("CONTENT_TYPE", fcgi->envp);
    req->content_length = FCGX_GetParam("CONTENT_LENGTH", fcgi->envp);
    req->idempotency_key = FCGX_GetParam("HTTP_IDEMPOTENCY_KEY", fcgi->envp);
    req->idempotency_keys = scan_param("HTTP_IDEMPOTENCY_KEY", fcgi->envp, NULL);
    req->content_types = scan_param("HTTP_CONTENT_TYPE", fcgi->envp, NULL);
    (void)scan_param("HTTP_CONTENT_ENCODING", fcgi->envp, &req->content_encoding);
    req->request_id = FCGX_GetParam("HTTP_X_REQUEST_ID", fcgi->envp);
    req->in = fcgi->in;
    if (req->method == NULL)
        req->method = "";
}

void http_discard_input(struct http_request *req)
{
    char scratch[1024];
    int got, total = 0;
    while (total < DRAIN_MAX && (got = FCGX_GetStr(scratch, sizeof scratch, req->in)) > 0)
        total += got;
}

enum problem http_read_body(struct http_request *req, char *buf, size_t cap, size_t *len)
{
    size_t want;
    enum problem p = request_parse_length(req->content_length, cap, &want);
    if (p == PROBLEM_NONE && want > 0) {
        /* FCGX_GetStr loops until it has want bytes or reaches the end. */
        int got = FCGX_GetStr(buf, (int)want, req->in);
        if (got < 0 || (size_t)got != want)
            p = PROBLEM_INVALID_JSON; /* the body ended before CONTENT_LENGTH */
    }
    *len = p == PROBLEM_NONE ? want : 0;
    return p;
}

/* Appends a formatted header; returns -1 when it does not fit. */
static int put_header(char *buf, size_t cap, size_t *used, const char *name, const char *value)
{
    int n = snprintf(buf + *used, cap - *used, "%s: %s\r\n", name, value);
    if (n < 0 || (size_t)n >= cap - *used)
        return -1;
    *used += (size_t)n;
    return 0;
}

int http_send(FCGX_Stream *out, const struct response *res)
{
    char head[512], num[32];
    size_t used = 0;

    /* FCGX_FPrintF knows no %zu: every header is formatted here with
     * snprintf and written with FCGX_PutStr. */
    snprintf(num, sizeof num, "%d %s", res->status, response_reason(res->status));
    if (put_header(head, sizeof head, &used, "Status", num) < 0 ||
        put_header(head, sizeof head, &used, "Content-Type", res->content_type) < 0)
        return -1;
    snprintf(num, sizeof num, "%zu", res->body_len);
    if (put_header(head, sizeof head, &used, "Content-Length", num) < 0 ||
        put_header(head, sizeof head, &used, "Cache-Control", "no-store") < 0)
        return -1;
    if (res->retry_after > 0) {
        snprintf(num, sizeof num, "%d", res->retry_after);
        if (put_header(head, sizeof head, &used, "Retry-After", num) < 0)
            return -1;
    }
    if (res->allow != NULL && put_header(head, sizeof head, &used, "Allow", res->allow) < 0)
        return -1;
    if (res->replayed && put_header(head, sizeof head, &used, "Idempotent-Replayed", "true") < 0)
        return -1;
    if (used + 2 >= sizeof head)
        return -1;
    head[used++] = '\r';
    head[used++] = '\n';

    if (FCGX_PutStr(head, (int)used, out) != (int)used)
        return -1;
    if (res->body_len > 0 && FCGX_PutStr(res->body, (int)res->body_len, out) != (int)res->body_len)
        return -1;
    return FCGX_FFlush(out) == 0 ? 0 : -1;
}
