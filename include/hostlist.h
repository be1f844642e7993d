/* hostlist.h -- a libpq host list with one server moved to its end.
 *
 * A primary cut off from its synchronous standby and from the failover
 * manager, but not from us, still takes sessions and says it takes writes
 * (transaction_read_only is off): target_session_attrs=read-write keeps
 * sending every new session to it, while every COMMIT there waits for a
 * standby that is gone, and a standby promoted meanwhile is never tried.
 * So a worker that saw its server unable to commit opens its next session
 * with that server last in DATABASE_URL's list (store.c): libpq tries the
 * others first, in their order, and takes the first that takes writes,
 * which is the promoted standby once the failover manager lets it; until
 * then, the server it left, as before. Nothing here decides which server
 * is the primary: the failover manager does, by letting one take writes.
 *
 * Pure: no I/O, no allocation. */
#ifndef STOCK_HOSTLIST_H
#define STOCK_HOSTLIST_H

#include <stddef.h>

/* hosts and ports as libpq holds them (comma-separated; one port, or one
 * per host). Writes to hosts_out and ports_out (cap bytes each) the same
 * lists with the entry host:port moved to the end, the others in their
 * order. Returns 0, or -1 when there is nothing to move (one host, no such
 * entry, more ports than one that do not pair with the hosts) or the
 * lists do not fit: the caller then connects as it would have. */
int hostlist_last(const char *hosts, const char *ports, const char *host, const char *port,
                  char *hosts_out, char *ports_out, size_t cap);

#endif
