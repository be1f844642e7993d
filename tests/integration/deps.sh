#!/usr/bin/env bash
# The install path: tests/stack/deps.sh against stand-ins for dpkg-query,
# apt-get and id (a PATH of fakes; the policy file at a path of the test's
# own), one case per way a first `make run` or `make test` can go. The real
# script runs under the real /bin/sh (dash on Debian), because what broke on
# a fresh machine was dash's handling of an EXIT trap.
#
# The fakes keep their state in files: `missing` lists what dpkg-query says
# is not installed (apt-get install removes what it installs), `calls` logs
# each apt-get call, and the policy file's presence is logged during install.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEPS=$ROOT/tests/stack/deps.sh
WORK=$(mktemp -d /tmp/stock-deps-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
. "$ROOT/tests/tap.sh"

check() { # check DESCRIPTION COMMAND...: ok if COMMAND succeeds
    local what=$1
    shift
    if "$@"; then ok "$what"; else not_ok "$what" "$(cat "$CASE/out" 2>/dev/null)"; fi
}

# A new case: a directory with the fakes, and nothing "installed" missing.
# APT_MODE: ok | stale (install fails until update ran) | broken (install
# always fails) | noop (install succeeds, installs nothing) | slow (sleeps).
new_case() {
    CASE=$WORK/$1
    mkdir -p "$CASE/bin"
    : >"$CASE/missing"
    : >"$CASE/calls"
    POLICY=$CASE/policy-rc.d
    cat >"$CASE/bin/dpkg-query" <<'SH'
#!/bin/sh
# Stand-in for dpkg-query -W -f='${Status}' PKG: installed unless listed.
for last; do :; done
if grep -qx "$last" "$FAKE/missing"; then
    echo "dpkg-query: no packages found matching $last" >&2
    exit 1
fi
printf 'install ok installed'
SH
    cat >"$CASE/bin/apt-get" <<'SH'
#!/bin/sh
# Stand-in for apt-get: logs each call; "install" obeys $APT_MODE.
echo "apt-get $*" >>"$FAKE/calls"
[ "$1" = -o ] && shift 2 # an option with its value
case "$1" in
update) : >"$FAKE/updated"; exit 0 ;;
install) ;;
*) exit 100 ;;
esac
if [ -e "$FAKE/policy-rc.d" ]; then
    echo "policy during install: $(cat "$FAKE/policy-rc.d" | tail -n 1)" >>"$FAKE/calls"
fi
case "$APT_MODE" in
stale) [ -e "$FAKE/updated" ] || { echo "E: Unable to locate package" >&2; exit 100; } ;;
broken) echo "E: Unable to fetch some archives" >&2; exit 100 ;;
noop) exit 0 ;;
slow) : >"$FAKE/slow-started"; sleep 30; exit 0 ;;
esac
shift
for p; do
    case "$p" in -*) continue ;; esac
    grep -vx "$p" "$FAKE/missing" >"$FAKE/missing.new" || true
    mv "$FAKE/missing.new" "$FAKE/missing"
done
echo "installed"
SH
    cat >"$CASE/bin/id" <<'SH'
#!/bin/sh
# Stand-in for id -u: root unless $FAKE_UID says otherwise.
echo "${FAKE_UID:-0}"
SH
    chmod +x "$CASE/bin/"*
    APT_MODE=ok
    FAKE_UID=0
}

# The command that runs deps.sh in the current case, as DEPS_ARGV (env
# execs the shell: one process, whose status is deps.sh's).
deps_argv() {
    DEPS_ARGV=(env FAKE="$CASE" APT_MODE="$APT_MODE" FAKE_UID="$FAKE_UID" POLICY_RC_D="$POLICY"
        PATH="$CASE/bin:/usr/sbin:/usr/bin:/sbin:/bin" /bin/sh "$DEPS")
}

# Runs deps.sh [SET] in the current case; output in $CASE/out, status in $RC.
run_deps() {
    deps_argv
    "${DEPS_ARGV[@]}" "$@" >"$CASE/out" 2>&1
    RC=$?
}

out_has() { grep -qF -- "$1" "$CASE/out"; }
calls_are() { [[ $(cat "$CASE/calls") == "$1" ]]; }
no_policy() { [[ ! -e $POLICY ]]; }

# 1. Nothing missing: silent success, apt-get never called.
new_case nothing-missing
run_deps
check "nothing missing: exit 0" test "$RC" -eq 0
check "nothing missing: prints nothing" test ! -s "$CASE/out"
check "nothing missing: apt-get is not called" calls_are ""

# 2. Missing, with a policy file already there (container images ship one):
# success, and the machine's file stays as it was. This was the fresh-machine
# failure: the EXIT trap's status became the script's.
new_case policy-present
echo curl >"$CASE/missing"
printf '#!/bin/sh\n# the machine'"'"'s own\nexit 101\n' >"$POLICY"
chmod 755 "$POLICY"
touch -d '2025-05-20 12:00' "$POLICY"
cp -p "$POLICY" "$CASE/policy.orig"
run_deps
check "policy present: exit 0 after installing" test "$RC" -eq 0
check "policy present: says what it installs" out_has "deps: installing: curl"
check "policy present: apt-get install ran once" \
    calls_are $'apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends --no-remove curl\npolicy during install: exit 101'
check "policy present: the file stays, same bytes" cmp -s "$POLICY" "$CASE/policy.orig"
check "policy present: same mode and time" \
    test "$(stat -c '%a %Y' "$POLICY")" = "$(stat -c '%a %Y' "$CASE/policy.orig")"

# 2b. A policy file that deps.sh made, left by a run that was killed (it
# carries deps.sh's mark): removed, and the install goes on as usual.
new_case policy-left
echo curl >"$CASE/missing"
printf '#!/bin/sh\n%s\nexit 101\n' "# made by redisdistributedlock's deps.sh for one install" >"$POLICY"
run_deps
check "policy left by a killed run: exit 0" test "$RC" -eq 0
check "policy left by a killed run: says it removes it" out_has "deps: removing $POLICY, left by an install that was killed"
check "policy left by a killed run: gone afterwards" no_policy

# 3. Missing, no policy file: one is there during the install (services do
# not start), and gone afterwards.
new_case policy-absent
printf 'nginx\nredis-server\n' >"$CASE/missing"
run_deps
check "policy absent: exit 0" test "$RC" -eq 0
check "policy absent: a policy answering 101 during the install" \
    calls_are $'apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends --no-remove nginx redis-server\npolicy during install: exit 101'
check "policy absent: removed afterwards" no_policy
check "policy absent: the packages are installed" test ! -s "$CASE/missing"

# 4. A stale package list: install fails until apt-get update ran.
new_case stale-lists
echo curl >"$CASE/missing"
APT_MODE=stale
run_deps
check "stale lists: exit 0" test "$RC" -eq 0
check "stale lists: install, update, install" calls_are "$(printf '%s\n' \
    'apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends --no-remove curl' 'policy during install: exit 101' \
    'apt-get update' \
    'apt-get -o DPkg::Lock::Timeout=120 install -y --no-install-recommends --no-remove curl' 'policy during install: exit 101')"
check "stale lists: says it updates" out_has "updating the package lists and trying again"
check "stale lists: policy removed" no_policy

# 5. apt-get fails for good: non-zero, one line naming the packages and
# what to do; the policy it made is removed.
new_case broken
printf 'curl\nnginx\n' >"$CASE/missing"
APT_MODE=broken
run_deps
check "apt-get broken: non-zero exit" test "$RC" -ne 0
check "apt-get broken: names the packages and the command" out_has \
    "deps: could not install: nginx curl. Check the network, apt's sources and that no other apt runs, then run: apt-get update && apt-get install -y --no-install-recommends --no-remove nginx curl"
check "apt-get broken: policy removed" no_policy

# 6. apt-get says yes but installs nothing: caught by a second look.
new_case noop
echo curl >"$CASE/missing"
APT_MODE=noop
run_deps
check "apt-get installs nothing: non-zero exit" test "$RC" -ne 0
check "apt-get installs nothing: names what is still missing" \
    out_has "deps: apt-get succeeded but these are still not installed: curl."

# 7. Not root: the exact line to run, non-zero, nothing attempted.
new_case not-root
printf 'curl\nnginx\n' >"$CASE/missing"
FAKE_UID=1000
run_deps
check "not root: non-zero exit" test "$RC" -ne 0
check "not root: prints the exact apt-get line" \
    out_has "  sudo apt-get install -y --no-install-recommends --no-remove nginx curl"
check "not root: apt-get is not called" calls_are ""
check "not root: no policy file" no_policy

# 8. The sets: test adds the test tools to run's; bench is its own.
new_case sets
printf 'nginx\npodman\nwrk\n' >"$CASE/missing"
FAKE_UID=1000
run_deps run
check "set run: asks for nginx only" out_has "sudo apt-get install -y --no-install-recommends --no-remove nginx"$'\n'
run_deps test
check "set test: asks for nginx and podman" out_has "--no-install-recommends --no-remove nginx podman"
run_deps bench
check "set bench: asks for wrk" out_has "--no-install-recommends --no-remove wrk"
run_deps nonsense
check "unknown set: exit 2 with a message" \
    test "$RC" -eq 2 -a "$(cat "$CASE/out")" = "deps: unknown set 'nonsense' (run, test or bench)"

# 9. Interrupted during the install (Ctrl-C reaches the whole process group;
# a service manager sends TERM): non-zero, and the policy file is gone.
# Job control gives each case its own process group and leaves SIGINT
# deliverable (a background job of a script otherwise starts with it ignored).
interrupt_case() {
    local sig=$1 pid i
    new_case "interrupt-$sig"
    echo curl >"$CASE/missing"
    APT_MODE=slow
    deps_argv
    set -m
    "${DEPS_ARGV[@]}" >"$CASE/out" 2>&1 &
    pid=$!
    set +m
    for ((i = 0; i < 100; i++)); do
        [[ -e $CASE/slow-started ]] && break
        sleep 0.1
    done
    if [[ ! -e $POLICY ]]; then
        not_ok "interrupted by $sig: the policy file exists during the install"
    else
        ok "interrupted by $sig: the policy file exists during the install"
    fi
    kill "-$sig" -- "-$pid" 2>/dev/null
    wait "$pid"
    local rc=$?
    check "interrupted by $sig: non-zero exit ($rc)" test "$rc" -ne 0
    check "interrupted by $sig: policy removed" no_policy
}
interrupt_case INT
interrupt_case TERM

echo "# deps.sh: $T_N checks, $T_FAIL failed"
((T_FAIL == 0))
