#!/usr/bin/env bash
# Prints N (default 1) distinct TCP ports that nothing listens on at
# 127.0.0.1, one per line. Uses bash's /dev/tcp: no extra tools needed.
set -u
n=${1:-1}
taken=" "
while ((n > 0)); do
    p=$((20000 + RANDOM % 40000))
    [[ $taken == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    taken+="$p "
    echo "$p"
    n=$((n - 1))
done
