/* test_hostlist.c -- a server that could not commit goes to the end of the
 * host list, the others keep their order. */
#include <string.h>

#include "hostlist.h"
#include "unit.h"

static char hosts[128], ports[128];

static int last(const char *h, const char *p, const char *host, const char *port)
{
    return hostlist_last(h, p, host, port, hosts, ports, sizeof hosts);
}

static void the_server_moves_to_the_end(void)
{
    CHECK(last("pg1,pg2", "5432,5433", "pg1", "5432") == 0);
    CHECK(strcmp(hosts, "pg2,pg1") == 0 && strcmp(ports, "5433,5432") == 0);
    CHECK(last("a,b,c,d", "1,2,3,4", "b", "2") == 0);
    CHECK(strcmp(hosts, "a,c,d,b") == 0 && strcmp(ports, "1,3,4,2") == 0);
    CHECK(last("a,b,c", "1,2,3", "c", "3") == 0);
    CHECK(strcmp(hosts, "a,b,c") == 0 && strcmp(ports, "1,2,3") == 0);
}

static void one_port_serves_every_host(void)
{
    CHECK(last("10.0.0.5,10.0.0.9", "5432", "10.0.0.5", "5432") == 0);
    CHECK(strcmp(hosts, "10.0.0.9,10.0.0.5") == 0 && strcmp(ports, "5432,5432") == 0);
}

static void the_port_tells_two_servers_on_one_host_apart(void)
{
    CHECK(last("db,db,db", "5432,5433,5434", "db", "5433") == 0);
    CHECK(strcmp(hosts, "db,db,db") == 0 && strcmp(ports, "5432,5434,5433") == 0);
}

static void empty_entries_and_socket_paths_are_entries_too(void)
{
    CHECK(last("/run/postgresql,pg2", "5432", "/run/postgresql", "5432") == 0);
    CHECK(strcmp(hosts, "pg2,/run/postgresql") == 0 && strcmp(ports, "5432,5432") == 0);
    CHECK(last("pg1,pg2,", "1,2,3", "pg1", "1") == 0);
    CHECK(strcmp(hosts, "pg2,,pg1") == 0 && strcmp(ports, "2,3,1") == 0);
}

static void nothing_to_move_changes_nothing(void)
{
    CHECK(last("pg1", "5432", "pg1", "5432") == -1);                   /* one host */
    CHECK(last("pg1,pg2", "5432", "pg3", "5432") == -1);               /* not in the list */
    CHECK(last("pg1,pg2", "5432", "pg1", "5433") == -1);               /* not on that port */
    CHECK(last("pg1,pg2", "1,2,3", "pg1", "1") == -1);                 /* ports do not pair */
    CHECK(last("pg1,pg10", "5432", "pg", "5432") == -1);               /* no prefix match */
    CHECK(hostlist_last("a,b", "1", "a", "1", hosts, ports, 3) == -1); /* does not fit */
    CHECK(last("pg1,pg2", "5432,", "pg2", "5432") == -1);              /* pg2's port is empty */
    CHECK(last(",pg2", "5432", "/run/postgresql", "5432") == -1);      /* a default socket */
}

void suite_hostlist(void)
{
    RUN(the_server_moves_to_the_end);
    RUN(one_port_serves_every_host);
    RUN(the_port_tells_two_servers_on_one_host_apart);
    RUN(empty_entries_and_socket_paths_are_entries_too);
    RUN(nothing_to_move_changes_nothing);
}
