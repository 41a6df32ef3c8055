#!/bin/bash
# Runs inside the arm64 Debian guest, started by systest-runner.service after boot, from the
# payload disk mounted at /run/systest. Two phases, one per boot of the same disk:
#   guest-test.sh install        apt-get install the .deb, check what the postinst left
#                                running, then ask for a reboot
#   guest-test.sh after-reboot   the units as a normal boot brings them up: /health, IP
#                                allow/deny, kill -9 -> restart, journal priorities
#                                (6/4/3), systemctl stop with an open WebSocket, socket
#                                activation, reinstall, catch-up history across
#                                systemctl restart (file descriptor store)
# Every check prints one line on the serial console:
#   SYSTEST PASS <what>   /   SYSTEST FAIL <what>
# plus SYSTEST INFO / SYSTEST JOURNAL / SYSTEST DUMP lines as evidence, then
#   SYSTEST REBOOT                                  (end of the install phase)
#   SYSTEST RESULT: PASS (N passed, 0 failed)       (end of the after-reboot phase; counts
#   SYSTEST RESULT: FAIL (N passed, M failed)        cover both phases)
set -u
export LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
phase=${1:?usage: guest-test.sh install|after-reboot}
here=$(cd "$(dirname "$0")" && pwd)
state=/var/lib/whisper-systest
U=rtce2ee-whisper.service
S=rtce2ee-whisper.socket
IDENT=rtce2ee-whisper
ENVF=/etc/default/rtce2ee-whisper
PORT=8080
passed=0 failed=0

pass() { passed=$((passed + 1)); echo "SYSTEST PASS [$phase] $*"; }
fail() { failed=$((failed + 1)); echo "SYSTEST FAIL [$phase] $*"; }
info() { echo "SYSTEST INFO [$phase] $*"; }
# check "what" cmd...: PASS when cmd succeeds.
check() { local what=$1; shift; if "$@"; then pass "$what"; else fail "$what"; return 1; fi; }
# until_ok SECONDS cmd...: retries cmd every 0.5 s.
until_ok() {
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    ((SECONDS >= deadline)) && return 1
    sleep 0.5
  done
}
prop() { systemctl show -p "$1" --value "$U"; }
dump_units() {
  systemctl status --no-pager -l "$S" "$U" 2>&1 | sed 's/^/SYSTEST DUMP /'
  journalctl --no-pager -b -u "$S" -u "$U" -n 40 2>&1 | sed 's/^/SYSTEST DUMP /'
}
health() { # health URL [curl args...]: body on stdout; fails unless 200 and "healthy"
  local url=$1; shift
  local body
  body=$(curl -fsS --max-time 10 "$@" "$url" 2>&1) || { echo "$body"; return 1; }
  echo "$body"
  [[ $body == *'"status":"healthy"'* ]]
}
check_health() { # check_health URL [curl args...]
  local body
  if body=$(health "$@"); then pass "GET $1 -> 200 healthy"; else fail "GET $1 -> ${body:-no answer}"; return 1; fi
}
# daemon_logged PRIORITY REGEX [journal matches...]: the daemon's own stderr (journald stream,
# SYSLOG_IDENTIFIER=rtce2ee-whisper) has a line matching REGEX whose PRIORITY field, as
# journald stored it, is PRIORITY. Selection by journald itself (-p N..N), no parsing.
daemon_logged() {
  local p=$1 re=$2; shift 2
  journalctl --no-pager -b -o cat -p "$p..$p" _SYSTEMD_UNIT="$U" SYSLOG_IDENTIFIER="$IDENT" "$@" | grep -qE "$re"
}
# Daemon lines as JSON with only the interesting fields (one entry per line).
daemon_json() { # daemon_json UNIT
  journalctl --no-pager -b -o json --output-fields=PRIORITY,SYSLOG_IDENTIFIER,MESSAGE,_PID \
    _SYSTEMD_UNIT="$1" SYSLOG_IDENTIFIER="$IDENT" |
    sed -E 's/"__(CURSOR|REALTIME_TIMESTAMP|MONOTONIC_TIMESTAMP)":"[^"]*",?//g; s/"_BOOT_ID":"[^"]*",?//g; s/,}$/}/'
}
# Every daemon line's PRIORITY matches the level word its text starts with.
levels_match() { # levels_match UNIT...: prints mismatches, fails if any (or no line at all)
  local u
  for u in "$@"; do daemon_json "$u"; done | awk '
    function field(name,   re) {
      re = "\"" name "\":\"([^\"\\\\]|\\\\.)*\""
      if (!match($0, re)) return ""
      return substr($0, RSTART + length(name) + 4, RLENGTH - length(name) - 5)
    }
    BEGIN { want["ERROR"] = 3; want["WARN"] = 4; want["INFO"] = 6; want["DEBUG"] = 7; want["TRACE"] = 7 }
    { n++; p = field("PRIORITY"); m = field("MESSAGE"); split(m, w, " ")
      if (!(w[1] in want) || want[w[1]] != p) { bad++; print "mismatch: PRIORITY=" p " MESSAGE=" m } else seen[p]++ }
    END { printf "%d daemon lines: %d at 6, %d at 4, %d at 3\n", n, seen[6], seen[4], seen[3]; exit (bad > 0 || n == 0) }'
}
listening() { ss -Hltn "sport = :$PORT" | awk '{print $4}' | tr '\n' ' '; }

info "guest: $(uname -srm), $(systemctl --version | head -n1), $(nproc) CPUs, $(awk '/MemTotal/{print $2" kB"}' /proc/meminfo)"
info "boot: $(timeout 120 systemctl is-system-running --wait 2>&1); $(systemd-analyze 2>&1 | head -n1)"
systemctl --no-legend --failed 2>/dev/null | sed "s/^/SYSTEST INFO [$phase] failed unit: /"

if [[ $phase == install ]]; then
  # --- install: what apt-get install + the maintainer scripts leave behind -------------------
  debs=("$here"/*.deb)
  info "package: ${debs[0]##*/}"
  out=$(apt-get install -y --no-install-recommends "${debs[0]}" 2>&1); rc=$?
  echo "$out" | grep -vE '^(Reading|Building|\(Reading)' | tail -n 8 | sed "s/^/SYSTEST INFO [$phase] apt: /"
  check "apt-get install ./${debs[0]##*/} exits 0" test "$rc" = 0
  check "apt-get install printed no error from the maintainer scripts" \
    bash -c '! grep -qiE "could not|error|fail" <<<"$1"' _ "$out"
  check "dpkg: rtce2ee-whisper is 'install ok installed'" \
    test "$(dpkg-query -W -f='${Status}' rtce2ee-whisper 2>/dev/null)" = "install ok installed"
  check "$U is enabled" test "$(systemctl is-enabled "$U" 2>&1)" = enabled
  check "$S is enabled" test "$(systemctl is-enabled "$S" 2>&1)" = enabled
  ok=1
  check "$S is active (listening) after install" until_ok 30 systemctl is-active -q "$S" || ok=0
  check "$U is active after install" until_ok 60 systemctl is-active -q "$U" || ok=0
  check "after install the service runs on the socket passed by systemd (journal, PRIORITY=6)" \
    daemon_logged 6 'using the listening socket passed by systemd' _SYSTEMD_INVOCATION_ID="$(prop InvocationID)" || ok=0
  info "listening on port $PORT: $(listening)"
  for url in "http://localhost:$PORT/health" "http://127.0.0.1:$PORT/health" "http://[::1]:$PORT/health"; do
    check_health "$url"
  done
  ((ok)) || dump_units
  mkdir -p "$state"
  echo "$passed $failed" > "$state/phase1.counts"
  touch /run/systest-reboot
  echo "SYSTEST PHASE install: $passed passed, $failed failed"
  echo "SYSTEST REBOOT"
  exit 0
fi

# --- after-reboot: the units as a boot brings them up ----------------------------------------
read -r p1_passed p1_failed < "$state/phase1.counts" || { p1_passed=0; p1_failed=1; fail "install phase counts missing"; }

check "$S active after boot" until_ok 30 systemctl is-active -q "$S"
check "$U active after boot" until_ok 60 systemctl is-active -q "$U"
check "the service runs on the socket passed by systemd (journal, PRIORITY=6)" \
  until_ok 10 daemon_logged 6 'using the listening socket passed by systemd' _SYSTEMD_INVOCATION_ID="$(prop InvocationID)"
check "journal: 'listening on [::]:$PORT' at PRIORITY=6" daemon_logged 6 "listening on \[::\]:$PORT"
info "listening on port $PORT: $(listening); $(systemctl show -p MainPID,NRestarts,MemoryCurrent,TasksCurrent "$U" | tr '\n' ' ')"
systemctl is-active -q "$S" && systemctl is-active -q "$U" || dump_units

# --- /health, and IPAddressAllow/IPAddressDeny on the real systemd -----------------------------
for url in "http://localhost:$PORT/health" "http://127.0.0.1:$PORT/health" "http://[::1]:$PORT/health"; do
  check_health "$url"
done
# A private (RFC 1918) source is served, a public one is dropped. Both addresses exist only on
# the guest's loopback interface (the VM has no network device at all).
ip addr add 192.168.77.1/32 dev lo
ip addr add 198.51.100.7/32 dev lo
check_health "http://192.168.77.1:$PORT/health" --interface 192.168.77.1
if curl -sS -o /dev/null --max-time 5 --interface 198.51.100.7 "http://198.51.100.7:$PORT/health" 2>/dev/null; then
  fail "a client at public address 198.51.100.7 is refused (IPAddressDeny=any): it was served"
else
  pass "a client at public address 198.51.100.7 is refused (IPAddressDeny=any)"
fi
ip addr del 192.168.77.1/32 dev lo
ip addr del 198.51.100.7/32 dev lo

# --- a killed main process is restarted --------------------------------------------------------
pid1=$(prop MainPID); n1=$(prop NRestarts)
info "kill -9 MainPID=$pid1 (NRestarts=$n1)"
kill -9 "$pid1"
new_pid() { local p; p=$(prop MainPID); [[ $p != 0 && $p != "$pid1" ]] && systemctl is-active -q "$U"; }
if until_ok 60 new_pid; then
  pass "after kill -9 the service is active again with a new MainPID ($pid1 -> $(prop MainPID))"
else
  fail "after kill -9 the service is active again (MainPID=$(prop MainPID), $(systemctl is-active "$U"))"
  dump_units
fi
check "NRestarts went from $n1 to $((n1 + 1))" test "$(prop NRestarts)" = "$((n1 + 1))"
check "systemd logged the SIGKILL and the scheduled restart" \
  bash -c "journalctl --no-pager -b -u $U | grep -q 'status=9/KILL' && journalctl --no-pager -b -u $U | grep -q 'Scheduled restart job'"
check "the restarted process got the socket again (journal, PRIORITY=6)" \
  until_ok 10 daemon_logged 6 'using the listening socket passed by systemd' _SYSTEMD_INVOCATION_ID="$(prop InvocationID)"
check_health "http://localhost:$PORT/health"

# --- PRIORITY=3: an error line (a second daemon cannot bind the port the socket holds) ----------
# A transient unit running the same binary under the journal, without socket activation.
systemd-run --quiet --wait --collect --unit=whisper-bind-conflict -p EnvironmentFile=-"$ENVF" \
  -E HOST=127.0.0.1 -E PORT=$PORT /usr/bin/rtce2ee-whisper >/dev/null 2>&1; rc=$?
check "a second daemon on the busy port exits with status 1 (systemd-run --wait)" test "$rc" = 1
check "journal: 'cannot listen on 127.0.0.1:$PORT' at PRIORITY=3" \
  until_ok 10 bash -c "journalctl --no-pager -b -o cat -p 3..3 _SYSTEMD_UNIT=whisper-bind-conflict.service SYSLOG_IDENTIFIER=$IDENT | grep -q 'cannot listen on 127.0.0.1:$PORT'"

# --- PRIORITY=4: a warning (IP blocked after abuse, with BLOCK_STRIKE_LIMIT=1) -------------------
cp -a "$ENVF" /run/systest-env.orig
echo 'BLOCK_STRIKE_LIMIT=1' >> "$ENVF"
systemctl restart "$U"
check "restart with BLOCK_STRIKE_LIMIT=1 in $ENVF: active" until_ok 60 systemctl is-active -q "$U"
python3 "$here/ws_client.py" abuse 127.0.0.1 "$PORT" > /run/ws-abuse.out 2>&1; rc=$?
sed "s/^/SYSTEST INFO [$phase] /" /run/ws-abuse.out
check "one invalid JSON frame: INVALID_JSON error, close 1008, then HTTP 429 IP_BLOCKED" test "$rc" = 0
check "journal: 'blocked 127.0.0.1 for 60 s after repeated abuse' at PRIORITY=4" \
  until_ok 10 daemon_logged 4 'blocked 127\.0\.0\.1 for [0-9]+ s after repeated abuse'
cp -a /run/systest-env.orig "$ENVF"
systemctl restart "$U"
check "restart with the packaged $ENVF: active" until_ok 60 systemctl is-active -q "$U"

# --- systemctl stop ends it cleanly, draining an open WebSocket --------------------------------
python3 "$here/ws_client.py" hold 127.0.0.1 "$PORT" > /run/ws-hold.out 2>&1 &
hold_pid=$!
until_ok 30 grep -q '^ws: connected' /run/ws-hold.out || info "hold client did not connect: $(cat /run/ws-hold.out)"
t0=$(date +%s%N)
systemctl stop "$U"; rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
wait "$hold_pid"; hold_rc=$?
sed "s/^/SYSTEST INFO [$phase] /" /run/ws-hold.out
res=$(systemctl show -p Result,ExecMainCode,ExecMainStatus "$U" | tr '\n' ' ')
info "after stop: $res ActiveState=$(prop ActiveState), stop took $ms ms"
check "systemctl stop $U exits 0" test "$rc" = 0
check "the open WebSocket was closed with 1001 before the exit" test "$hold_rc" = 0
check "after stop: Result=success, ExecMainCode=1 (exited), ExecMainStatus=0" \
  test "$res" = "Result=success ExecMainCode=1 ExecMainStatus=0 "
check "after stop: the service is inactive, not failed" test "$(prop ActiveState)" = inactive
check "stop took less than TimeoutStopSec=20s (no SIGKILL): $ms ms" test "$ms" -lt 20000
check "journal: 'SIGTERM: shutting down' at PRIORITY=6" daemon_logged 6 'SIGTERM: shutting down'
check "journal: 'all connections closed' at PRIORITY=6" \
  daemon_logged 6 'all connections closed'

# --- socket activation: a request starts the stopped service ----------------------------------
check "$S still listening after the service stopped" systemctl is-active -q "$S"
check_health "http://[::1]:$PORT/health"
check "the request started the service again (socket activation)" until_ok 30 systemctl is-active -q "$U"

# --- reinstall (the postinst's upgrade path: restart instead of start) ---------------------------
debs=("$here"/*.deb)
out=$(dpkg -i "${debs[0]}" 2>&1); rc=$?
echo "$out" | grep -vE '^\(Reading' | tail -n 4 | sed "s/^/SYSTEST INFO [$phase] dpkg -i again: /"
check "reinstall (dpkg -i the same .deb: postinst restarts the units) exits 0" test "$rc" = 0
check "reinstall printed no error from the maintainer scripts" \
  bash -c '! grep -qiE "could not|error|fail" <<<"$1"' _ "$out"
ok=1
check "$S active after reinstall" until_ok 30 systemctl is-active -q "$S" || ok=0
check "$U active after reinstall" until_ok 60 systemctl is-active -q "$U" || ok=0
check "after reinstall the service runs on the socket passed by systemd (journal, PRIORITY=6)" \
  until_ok 10 daemon_logged 6 'using the listening socket passed by systemd' _SYSTEMD_INVOCATION_ID="$(prop InvocationID)" || ok=0
check_health "http://[::1]:$PORT/health" || ok=0
((ok)) || dump_units

# --- catch-up history survives systemctl restart (systemd's file descriptor store) -------------
# Three messages are said in a room that keeps history; after a restart a client's `since` from
# before it is found and the replay is the very frames first sent (PROTOCOL.md section 7).
W="$here/ws_client.py"
msg_id() { sed -n 's/^ws: \(echo\|replayed\) {"type":"message","id":"\([^"]*\)".*/\2/p'; }
frames_of() { sed -n "s/^ws: $1 //p"; } # frames_of echo|replayed|history < output
export -f frames_of # for the checks' bash -c
python3 "$W" history 127.0.0.1 "$PORT" systest-room alice @all 3 > /run/ws-h1.out 2>&1; rc=$?
sed "s/^/SYSTEST INFO [$phase] /" /run/ws-h1.out
check "catch-up: a join with since \"\" gets an empty complete history, then 3 echoes" \
  bash -c '[[ $1 == 0 && $(frames_of history < /run/ws-h1.out) == "{\"type\":\"history\",\"count\":0,\"complete\":true}" && $(frames_of echo < /run/ws-h1.out | wc -l) == 3 ]]' _ "$rc"
frames_of echo < /run/ws-h1.out > /run/ws-h1.echoes
ids=($(msg_id < /run/ws-h1.out))
stored=$(prop NFileDescriptorStore)
if [[ -n $stored ]]; then
  check "catch-up: systemd's file descriptor store is empty while the relay runs" test "$stored" = 0
else
  info "this systemd has no NFileDescriptorStore property"
fi
old_invocation=$(prop InvocationID)
systemctl restart "$U"
check "catch-up: systemctl restart: active again" until_ok 60 systemctl is-active -q "$U"
check "catch-up: journal: 'history handed to systemd: 1 rooms, 3 frames' at PRIORITY=6" \
  until_ok 10 daemon_logged 6 'history handed to systemd: 1 rooms, 3 frames' _SYSTEMD_INVOCATION_ID="$old_invocation"
check "catch-up: journal: 'history taken over from the previous process: 1 rooms, 3 frames' at PRIORITY=6" \
  until_ok 10 daemon_logged 6 'history taken over from the previous process: 1 rooms, 3 frames' _SYSTEMD_INVOCATION_ID="$(prop InvocationID)"
check "catch-up: journal: no 'hand-over refused' and no 'hand-over failed'" \
  bash -c "! journalctl --no-pager -b -o cat _SYSTEMD_UNIT=$U SYSLOG_IDENTIFIER=$IDENT | grep -qE 'hand-over (refused|failed)'"
stored=$(prop NFileDescriptorStore)
[[ -z $stored ]] || check "catch-up: the relay took the memfd out of the store (NFileDescriptorStore=0)" test "$stored" = 0
python3 "$W" history 127.0.0.1 "$PORT" systest-room bob "${ids[0]:-none}" 0 > /run/ws-h2.out 2>&1; rc=$?
sed "s/^/SYSTEST INFO [$phase] /" /run/ws-h2.out
check "catch-up: since = the first id from before the restart: frames 2 and 3 byte for byte, count 2, complete" \
  bash -c '[[ $1 == 0 && $(frames_of replayed < /run/ws-h2.out) == "$(sed -n 2,3p /run/ws-h1.echoes)" && $(frames_of history < /run/ws-h2.out) == "{\"type\":\"history\",\"count\":2,\"complete\":true}" ]]' _ "$rc"
python3 "$W" history 127.0.0.1 "$PORT" systest-room carol @all 1 > /run/ws-h3.out 2>&1; rc=$?
sed "s/^/SYSTEST INFO [$phase] /" /run/ws-h3.out
check "catch-up: since \"\" after the restart: all 3 frames byte for byte, count 3, complete" \
  bash -c '[[ $1 == 0 && $(frames_of replayed < /run/ws-h3.out) == "$(cat /run/ws-h1.echoes)" && $(frames_of history < /run/ws-h3.out) == "{\"type\":\"history\",\"count\":3,\"complete\":true}" ]]' _ "$rc"
new_id=$(sed -n 's/^ws: echo {"type":"message","id":"\([^"]*\)".*/\1/p' /run/ws-h3.out)
check "catch-up: a new message id has another prefix than those from before the restart (${ids[0]:-?} / ${new_id:-?})" \
  test -n "$new_id" -a -n "${ids[0]:-}" -a "${new_id%-*}" != "${ids[0]%-*}"

# --- over the whole boot ------------------------------------------------------------------------
if journalctl --no-pager -b -u "$U" | grep -qi 'watchdog timeout'; then
  fail "no watchdog timeout in the journal"
else
  pass "no watchdog timeout in the journal (WatchdogSec=30s; this phase ran ${SECONDS}s)"
fi
check "journal: no daemon line kept a raw <N> prefix (journald parsed them all)" \
  bash -c "! journalctl --no-pager -b -o cat _SYSTEMD_UNIT=$U SYSLOG_IDENTIFIER=$IDENT | grep -q '^<[0-9]>'"
if out=$(levels_match "$U" whisper-bind-conflict.service); then
  pass "journal: every daemon line's PRIORITY matches its level ($out)"
else
  fail "journal: every daemon line's PRIORITY matches its level: $out"
fi
sec=$(systemd-analyze security "$U" 2>/dev/null | tail -n 1)
info "systemd-analyze security (live): ${sec:-n/a}"
journalctl --no-pager -b -k -g 'audit:.*(seccomp|SECCOMP)|DENIED' 2>/dev/null | grep -v -- '-- No entries --' |
  head -n 5 | sed "s/^/SYSTEST INFO [$phase] kernel: /"

echo "SYSTEST JOURNAL ---- journalctl -b -o json _SYSTEMD_UNIT=$U SYSLOG_IDENTIFIER=$IDENT ----"
daemon_json "$U" | sed 's/^/SYSTEST JOURNAL /'
echo "SYSTEST JOURNAL ---- journalctl -b -o json _SYSTEMD_UNIT=whisper-bind-conflict.service ----"
daemon_json whisper-bind-conflict.service | sed 's/^/SYSTEST JOURNAL /'
echo "SYSTEST JOURNAL ---- journalctl -b -u $U -u $S ----"
journalctl --no-pager -b -u "$U" -u "$S" -o short-monotonic | sed 's/^/SYSTEST JOURNAL /'

echo "SYSTEST PHASE after-reboot: $passed passed, $failed failed"
passed=$((passed + p1_passed)); failed=$((failed + p1_failed))
if ((failed == 0)); then
  echo "SYSTEST RESULT: PASS ($passed passed, $failed failed)"
else
  echo "SYSTEST RESULT: FAIL ($passed passed, $failed failed)"
fi
exit $((failed > 0))
