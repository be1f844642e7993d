/* hostlist.c -- see hostlist.h. */
#include <string.h>

#include "hostlist.h"

/* Entries in a comma-separated list. */
static int count(const char *list)
{
    int n = 1;
    for (const char *c = list; *c != '\0'; c++)
        n += *c == ',';
    return n;
}

/* The i-th entry of list: its start, and its length in *len. */
static const char *entry(const char *list, int i, size_t *len)
{
    const char *start = list;
    while (i-- > 0)
        start = strchr(start, ',') + 1;
    const char *end = strchr(start, ',');
    *len = end != NULL ? (size_t)(end - start) : strlen(start);
    return start;
}

static int equals(const char *s, size_t len, const char *want)
{
    return strlen(want) == len && strncmp(s, want, len) == 0;
}

/* Appends entry i of list to out (used bytes in *used), comma first unless
 * it is the first: -1 if it does not fit. */
static int append(char *out, size_t cap, size_t *used, const char *list, int i)
{
    size_t len;
    const char *s = entry(list, i, &len);
    size_t need = len + (*used > 0);
    if (*used + need + 1 > cap)
        return -1;
    if (*used > 0)
        out[(*used)++] = ',';
    memcpy(out + *used, s, len);
    *used += len;
    out[*used] = '\0';
    return 0;
}

int hostlist_last(const char *hosts, const char *ports, const char *host, const char *port,
                  char *hosts_out, char *ports_out, size_t cap)
{
    int n = count(hosts), nports = count(ports), last = -1;
    if (n < 2 || (nports != 1 && nports != n) || cap == 0)
        return -1;
    for (int i = 0; i < n && last < 0; i++) {
        size_t hlen, plen;
        const char *h = entry(hosts, i, &hlen);
        const char *p = entry(ports, nports == 1 ? 0 : i, &plen);
        if (equals(h, hlen, host) && equals(p, plen, port))
            last = i;
    }
    if (last < 0)
        return -1;
    size_t hused = 0, pused = 0;
    hosts_out[0] = ports_out[0] = '\0';
    for (int k = 0; k < n; k++) {
        int i = k < n - 1 ? (k < last ? k : k + 1) : last;
        if (append(hosts_out, cap, &hused, hosts, i) < 0)
            return -1;
        if (append(ports_out, cap, &pused, ports, nports == 1 ? 0 : i) < 0)
            return -1;
    }
    return 0;
}
