#!/usr/bin/env bash
# Prints N (default 1) distinct TCP ports that nothing listens on at
# 127.0.0.1, one per line. Uses bash's /dev/tcp: no extra tools needed. The
# ports are below Linux's ephemeral range (32768-60999), so no outgoing
# connection takes one between this check and the bind.
set -u
n=${1:-1}
taken=" "
while ((n > 0)); do
    p=$((10000 + RANDOM % 22768))
    [[ $taken == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    taken+="$p "
    echo "$p"
    n=$((n - 1))
done
