#!/usr/bin/env bash
# run.sh -- every test, against real services this script starts on free
# loopback ports in a temporary directory (so it runs beside `make run`), and
# always stops. `make test` builds first, then calls this.
#
# Each suite prints TAP ("ok N - ..." / "not ok N - ..."); this script counts
# them and ends with one line: "N passed, N failed".
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 1
PASSED=0
FAILED=0

# SUITES="fencing redis-crash" tests/run.sh runs only those (after a build).
wanted() { [[ -z ${SUITES:-} || " $SUITES " == *" $1 "* ]]; }

# suite NAME COMMAND...: runs one suite, shows its output, counts its results.
# A suite that dies without reporting a failure counts as one.
suite() {
    local name=$1 out rc pass fail start=$SECONDS
    shift
    echo "== $name"
    out=$(mktemp)
    "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    pass=$(grep -c '^ok ' "$out")
    fail=$(grep -c '^not ok ' "$out")
    if ((rc != 0 && fail == 0)); then
        echo "not ok - $name exited with status $rc"
        fail=1
    fi
    PASSED=$((PASSED + pass))
    FAILED=$((FAILED + fail))
    echo "# $name: $pass passed, $fail failed, $((SECONDS - start)) s"
    rm -f "$out"
}

# The unit tests report sanitizer errors on stderr, in their own output.
wanted unit && suite unit build/asan/unit-tests
wanted fuzz && suite fuzz tests/fuzz/run.sh 20
# The install path (tests/stack/deps.sh) against stand-ins for apt-get.
wanted deps && suite deps tests/integration/deps.sh

# The stack under test runs the ASan+UBSan build of the responder. Sanitizer
# reports go to files, which the "sanitizers" check below looks for.
# RUN_DIR itself does not exist yet: the stack creates it, and as root hands
# it to the account its daemons run as.
export RUN_DIR
TEST_DIR=$(mktemp -d /tmp/stock-test.XXXXXX)
chmod 755 "$TEST_DIR"
RUN_DIR=$TEST_DIR/stack
export PORT PGPORT REDIS_PORT
read -r PORT PGPORT REDIS_PORT <<<"$(tests/stack/free-port.sh 3 | tr '\n' ' ')"
# Small pools, so pools.sh can fill them.
export WORKERS=4 OVERFLOW_WORKERS=4 PER_PRODUCT=2
# Long enough that a slow, shared CI machine never turns queueing into a
# lock_timeout; api.sh waits this long once, on purpose.
export LOCK_WAIT_MS=3000
export STOCK_BIN=$ROOT/build/asan/stock-fcgi
export STACK=$ROOT/tests/stack/stack.sh
export BASE_URL=http://127.0.0.1:$PORT
# (Set after the unit tests: the sanitizer runtime creates the log directory
# at start, and RUN_DIR must not exist before the stack creates it.)
export ASAN_OPTIONS="detect_leaks=1:log_path=$RUN_DIR/log/sanitizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$RUN_DIR/log/sanitizer"

cleanup() {
    "$STACK" down >/dev/null 2>&1
    rm -rf "$TEST_DIR"
}
trap cleanup EXIT


if "$STACK" up; then
    for t in api hostile lock pools logs metrics ratelimit fencing idempotency concurrency combining outages sentinel signals leaks docs config install ${EXTRA_SUITES:-}; do
        wanted "$t" && suite "$t" "tests/integration/$t.sh"
    done
    for t in kill-worker pause-holder combiner redis-crash postgres-crash terminate-backends client-disconnect sigterm-pool; do
        wanted "$t" && suite "fault: $t" "tests/fault/$t.sh"
    done
    "$STACK" down
    # Reports are written when a responder hits an error or exits with a leak.
    reports=$(ls "$RUN_DIR"/log/sanitizer.* 2>/dev/null)
    if [[ -z $reports ]]; then
        echo "ok - sanitizers: no ASan, LeakSanitizer or UBSan report from any responder"
        PASSED=$((PASSED + 1))
    else
        echo "not ok - sanitizers: reports from the responders"
        sed 's/^/#   /' $reports | head -n 60
        FAILED=$((FAILED + 1))
    fi
else
    echo "not ok - the test stack did not start; logs follow"
    tail -n 30 "$RUN_DIR"/log/*.log 2>/dev/null | sed 's/^/#   /'
    FAILED=$((FAILED + 1))
fi

# The user-facing commands (make up, down, run, reset, psql), with the
# release build, on a stack of their own.
wanted commands && suite commands tests/integration/commands.sh

# Several machines: responder hosts behind an edge, as network namespaces,
# under faults between them (tests/cluster/).
wanted cluster && suite cluster tests/cluster/cluster.sh
# High availability: PostgreSQL under pg_auto_failover, Redis under Sentinel,
# their primaries killed and cut off (tests/cluster/ha.sh).
wanted ha && suite ha tests/cluster/ha.sh

# The docker-compose demo, built and run for real with podman (see the
# script: stand-ins for the registry images, a store of its own).
wanted compose && suite compose tests/compose/smoke.sh

((FAILED == 0)) || echo "# to run the failing suites again after a fix: SUITES=\"name ...\" tests/run.sh"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
