#!/usr/bin/env bash
# signals.sh -- a responder told to stop (SIGTERM, SIGINT, SIGUSR1) finishes
# the request in flight, then exits 0; an idle one exits at once; a crashed
# one is replaced by multiwatch.
#
# Each case runs its own responder (start_worker), so this script is its
# parent and sees its exit status.
. "$(dirname "$0")/lib.sh"

export LOCK_WAIT_MS=10000
P=$(new_product "Signals" 10)

set_calls() {
    rcli INFO commandstats | sed -n 's/^cmdstat_set:calls=\([0-9]*\),.*/\1/p'
}

# Waits (10 s at most) until someone tries to SET a lock after the count $1.
wait_for_lock_attempt() {
    for ((i = 0; i < 200; i++)); do
        (($(set_calls) > $1)) && return 0
        sleep 0.05
    done
    return 1
}

for sig in TERM INT USR1; do
    start_worker
    # Hold the product's lock so the purchase is provably in flight when
    # the signal arrives: it waits for the lock.
    rcli SET "lock:product:$P" test-holder PX 30000 >/dev/null
    calls=$(set_calls)
    fcgi_buy "$P" >"$TMP/answer" &
    buyer=$!
    check "SIG$sig: the purchase is in flight, waiting for the lock" wait_for_lock_attempt "$calls"
    kill "-$sig" "$WORKER"
    before=$(sold "$P")
    rcli DEL "lock:product:$P" >/dev/null
    wait "$buyer"
    same "SIG$sig: the answer is a complete FastCGI response (END_REQUEST)" "$?" 0
    stop_worker "$sig" # already on its way out: this only waits
    same "SIG$sig: the worker exits 0 after its request" "$STOPPED" 0
    check "SIG$sig: the request in flight completed with 200" grep -q '^Status: 200' "$TMP/answer"
    same "SIG$sig: and its purchase was recorded" "$(sold "$P")" "$((before + 1))"
done

# A signal while the worker reads the request body: libfcgi does not retry
# an interrupted read, so the body would come back short (400) unless the
# worker holds stop signals during a request.
LOG_LEVEL=debug start_worker
rm -f "$TMP/go"
printf '{"amount": 1}' | "$FCGI_REQUEST" --body-after "$TMP/go" "$TMP/w.sock" REQUEST_METHOD=POST \
    DOCUMENT_URI="/buy/$P" CONTENT_TYPE=application/json CONTENT_LENGTH=13 >"$TMP/answer" &
buyer=$!
# Accepted, then asleep: the only place it can sleep now is reading the body.
for ((i = 0; i < 200; i++)); do
    grep -q "\"pid\":$WORKER,\"msg\":\"POST /buy/$P: accepted" "$TMP/w.log" &&
        [[ $(sed 's/^.*) //' "/proc/$WORKER/stat" | cut -d' ' -f1) == S ]] && break
    sleep 0.05
done
check "SIGTERM while reading the body: the worker is waiting for it" \
    grep -q "\"pid\":$WORKER,\"msg\":\"POST /buy/$P: accepted" "$TMP/w.log"
kill -TERM "$WORKER"
touch "$TMP/go"
wait "$buyer"
same "SIGTERM while reading the body: a complete FastCGI answer" "$?" 0
check "SIGTERM while reading the body: the purchase still succeeds" grep -q '^Status: 200' "$TMP/answer"
stop_worker
same "SIGTERM while reading the body: then the worker exits 0" "$STOPPED" 0

# Idle, the worker sits in accept(): the signal must interrupt it (no
# SA_RESTART), or it would wait for one more request. stop_worker waits 10 s,
# a liveness bound rather than a measurement, then kills it.
start_worker
stop_worker TERM
same "SIGTERM while idle: the worker exits 0 without another request" "$STOPPED" 0
same "no lock key is left in Redis" "$(lock_keys)" 0

# multiwatch replaces a worker that crashes.
before=$(workers)
victim=${before%% *}
kill -KILL "$victim"
for ((i = 0; i < 50; i++)); do
    after=$(workers)
    [[ $(wc -w <<<"$after") == $(wc -w <<<"$before") && $after != *"$victim "* ]] && break
    sleep 0.1
done
same "kill -9: multiwatch starts a replacement worker" "$(wc -w <<<"$after")" "$(wc -w <<<"$before")"
check "kill -9: the killed worker is gone" test "${after/$victim /}" == "$after"
buy "/buy/$P" '{"amount": 1}'
expect "kill -9: purchases still succeed" 200

finish
