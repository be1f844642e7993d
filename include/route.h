/* route.h -- answers one request: the handler its path and method ask for
 * (request_route; POST /buy/{id} is purchase.h's, the small ones are here),
 * and what it did, into the metrics.
 *
 * Above the worker and the purchase, so that neither needs the other's
 * caller: a handler takes the worker (worker.h), and only this module knows
 * every handler. */
#ifndef STOCK_ROUTE_H
#define STOCK_ROUTE_H

struct http_request;
struct response;
struct worker;

/* Routes one request and fills res (which starts as a 500). */
void route_handle(struct worker *w, struct http_request *req, struct response *res);

#endif
