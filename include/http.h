/* http.h -- the FastCGI side of HTTP: reading one request from nginx and
 * writing one answer back through libfcgi.
 *
 * nginx has already parsed HTTP, decoded and normalised the path ($uri) and
 * buffered the whole body, so a request here is its CGI parameters plus
 * exactly CONTENT_LENGTH bytes on stdin. */
#ifndef STOCK_HTTP_H
#define STOCK_HTTP_H

#include <stddef.h>

#include <fcgiapp.h>

#include "problem.h"

struct response;

struct http_request {
    const char *method;           /* REQUEST_METHOD */
    const char *path;             /* DOCUMENT_URI: decoded path, no query */
    const char *content_type;     /* CONTENT_TYPE, or NULL */
    const char *content_length;   /* CONTENT_LENGTH, or NULL */
    const char *idempotency_key;  /* the (first) Idempotency-Key header, or NULL */
    int idempotency_keys;         /* how many Idempotency-Key headers came */
    int content_types;            /* how many Content-Type headers came */
    const char *content_encoding; /* a Content-Encoding header naming a coding, or NULL */
    const char *request_id;       /* X-Request-Id as nginx passes it, or NULL */
    FCGX_Stream *in;
};

/* Reads the CGI parameters of the request just accepted. The strings belong
 * to libfcgi and live until the next FCGX_Accept_r(). */
void http_request_init(struct http_request *req, FCGX_Request *fcgi);

/* Reads exactly CONTENT_LENGTH bytes (at most cap) into buf.
 * Returns PROBLEM_NONE, PROBLEM_PAYLOAD_TOO_LARGE, or PROBLEM_INVALID_JSON
 * when the length is malformed or the body ended early. */
enum problem http_read_body(struct http_request *req, char *buf, size_t cap, size_t *len);

/* Reads and discards what is left of the request body (64 KiB at most).
 * Called before every answer: over TCP, closing a connection with unread
 * input resets it, and nginx could lose the answer. */
void http_discard_input(struct http_request *req);

/* Writes status, headers and body. Returns 0, or -1 if nginx (or the client
 * behind it) has gone away; the caller only logs that. */
int http_send(FCGX_Stream *out, const struct response *res);

#endif
