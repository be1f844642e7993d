# tap.sh -- TAP lines for the shell suites, sourced by each (through
# tests/integration/lib.sh for the stack's suites). tests/run.sh counts the
# lines that start with "ok " and "not ok ".
T_N=0
T_FAIL=0

ok() {
    T_N=$((T_N + 1))
    echo "ok $T_N - $1"
}

# not_ok NAME [WHY...]: each WHY on its own "#" lines, however many it has.
not_ok() {
    T_N=$((T_N + 1))
    T_FAIL=$((T_FAIL + 1))
    echo "not ok $T_N - $1"
    shift
    local why
    for why in "$@"; do sed 's/^/#   /' <<<"$why"; done
}
