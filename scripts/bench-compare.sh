#!/usr/bin/env bash
# Weft against its peers on this machine, side by side in one session, and BENCHMARKS.md from the results.
#
#   scripts/bench-compare.sh
#
# 1. builds weft-bench and weft (the exec worker) in release;
# 2. prepares the peers' harness (../shared/peers, beside the repository): a private working copy under target/bench-compare/peers
#    (the shared directory stays untouched; PEERS_INPLACE=1 uses it in place), PostgreSQL 15 on 127.0.0.1:55432
#    started as the peers' setup.sh starts it, and the selected peers installed with setup.sh's pinned versions
#    (FULL_SETUP=1 runs `INSTALL=1 setup.sh` instead, which also installs Redis and every other peer);
# 3. REPS rounds (default 3), interleaved: every Weft scenario on every backend once (and A and B again with each
#    extra worker mode), then one round of the peers (`REPS=1 run_all.sh graphile-worker pg-boss dbos`);
# 4. writes BENCHMARKS.md: medians [min..max] per variant, Weft/peer ratios, machine, versions, this command.
# If the peers cannot be installed, the Weft half is still measured and BENCHMARKS.md names the missing peers.
#
# Environment: REPS (3), PEERS ("graphile-worker pg-boss dbos"), SKIP_PEERS=1, WEFT_SCENARIOS ("a a-batch a-bulk b c c-bulk d e"),
# WEFT_ONCE_SCENARIOS ("f g": minutes each, 100k queued runs and a 1M-run seed; run in the first round only),
# WEFT_WORKER_MODES ("process exec": extra --worker modes, each running WEFT_WORKER_SCENARIOS, "a b", on every backend;
# empty: none), WEFT_EXEC_ARGS ("--n 2000": extra flags of the exec worker's lines, a process per step is slower),
# WEFT_BACKENDS ("postgres sqlite"), WEFT_ARGS (extra weft-bench flags), WEFT_BENCH_BIN (use this binary, no build),
# REPORT_ONLY (a session file from an earlier run: only rewrite BENCHMARKS.md), KEEP_PG=1 (leave the peers' Postgres up), QUIET_WAIT (20: seconds to wait for a
# quiet machine before each run), PEERS_SRC (../shared/peers, beside the repository), OUT_DIR (target/bench-compare),
# BENCHMARKS (BENCHMARKS.md).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
# the command line to reproduce this session: the settings the caller gave
COMMAND="$(for v in REPS PEERS SKIP_PEERS WEFT_SCENARIOS WEFT_ONCE_SCENARIOS WEFT_BACKENDS WEFT_ARGS WEFT_WORKER_MODES WEFT_WORKER_SCENARIOS WEFT_EXEC_ARGS QUIET_WAIT FULL_SETUP PEERS_INPLACE; do
  [ -n "${!v+x}" ] && printf '%s=%q ' "$v" "${!v}"; done)scripts/bench-compare.sh"
REPS=${REPS:-3}
PEERS=${PEERS:-graphile-worker pg-boss dbos}
SKIP_PEERS=${SKIP_PEERS:-0}
WEFT_SCENARIOS=${WEFT_SCENARIOS:-a a-batch a-bulk b c c-bulk d e}
WEFT_ONCE_SCENARIOS=${WEFT_ONCE_SCENARIOS-f g}
WEFT_WORKER_MODES=${WEFT_WORKER_MODES-process exec}
WEFT_WORKER_SCENARIOS=${WEFT_WORKER_SCENARIOS:-a b}
WEFT_EXEC_ARGS=${WEFT_EXEC_ARGS---n 2000}
WEFT_BACKENDS=${WEFT_BACKENDS:-postgres sqlite}
WEFT_ARGS=${WEFT_ARGS:-}
QUIET_WAIT=${QUIET_WAIT:-20}
PEERS_SRC=${PEERS_SRC:-$ROOT/../shared/peers}
OUT_DIR=${OUT_DIR:-$ROOT/target/bench-compare}
BENCHMARKS=${BENCHMARKS:-$ROOT/BENCHMARKS.md}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/bench-compare.log"
say() { echo "[bench-compare] $*" | tee -a "$LOG" >&2; }

# REPORT_ONLY=<session file>: rewrite BENCHMARKS.md from a finished session, measuring nothing.
write_report() {
  export SESSION_TS WEFT_JSONL PEERS_DIR BENCHMARKS COMMAND MISSING RUN_PEERS SKIP_PEERS REPS V_WEFT
  export M_NPROC=$(nproc) M_MEM=$(free -m | awk '/^Mem:/ {print $2 " MiB"}') M_KERNEL=$(uname -r)
  export M_CPU="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  export V_RUSTC=$(rustc --version) V_PG=$("$(command -v postgres || echo /usr/lib/postgresql/15/bin/postgres)" --version 2>/dev/null)
  export V_NODE=$(node --version 2>/dev/null) V_PY=$(python3 --version 2>/dev/null)
  export V_PEERS="$( { [ -d "$PEERS_DIR/graphile-worker/node_modules" ] && (cd "$PEERS_DIR/graphile-worker" && npm ls --depth=0 2>/dev/null | grep -E '^[├└]');
    [ -d "$PEERS_DIR/pgboss/node_modules" ] && (cd "$PEERS_DIR/pgboss" && npm ls --depth=0 2>/dev/null | grep -E '^[├└]');
    [ -x "$PEERS_DIR/dbos/.venv/bin/pip" ] && "$PEERS_DIR/dbos/.venv/bin/pip" freeze 2>/dev/null | grep -iE '^(dbos|psycopg)'; } | sed 's/^[^a-zA-Z@]*//' )"
  python3 "$ROOT/scripts/bench-report.py" && say "wrote $BENCHMARKS"
}
if [ -n "${REPORT_ONLY:-}" ]; then
  # shellcheck disable=SC1090
  . "$REPORT_ONLY"
  write_report
  exit
fi

SESSION_TS=$(date +%Y-%m-%dT%H:%M:%S)
WEFT_JSONL="$OUT_DIR/weft-$(date +%Y%m%d-%H%M%S).jsonl"
SESSION_FILE="$OUT_DIR/session-$(date +%Y%m%d-%H%M%S).env"
V_WEFT="$(git rev-parse --short HEAD 2>/dev/null)$([ -z "$(git status --porcelain -- crates Cargo.toml Cargo.lock 2>/dev/null)" ] || echo ' + uncommitted changes')"
MISSING=""

if [ -n "${WEFT_BENCH_BIN:-}" ]; then
  BIN=$WEFT_BENCH_BIN
  say "session $SESSION_TS: using $BIN (no build)"
else
  say "session $SESSION_TS: building weft-bench and weft (release)"
  cargo build --release -p weft-bench -p weft-cli || { say "cargo build failed"; exit 1; }
  BIN=$ROOT/target/release/weft-bench
fi

# ---- peers: working copy, Postgres on 55432, installs ----
if [ "${PEERS_INPLACE:-0}" = 1 ]; then
  PEERS_DIR=$PEERS_SRC
else
  PEERS_DIR=$OUT_DIR/peers
  mkdir -p "$PEERS_DIR"
  # harness files only (refreshed every time); installs, pgdata and results stay between sessions
  (cd "$PEERS_SRC" && find . -type f ! -path './*/results/*' ! -path './*/node_modules/*' ! -path './*/.venv/*' \
      ! -path './pgdata/*' ! -path './*/target/*' ! -path './logs/*' -print0) |
    while IFS= read -r -d '' f; do mkdir -p "$PEERS_DIR/$(dirname "$f")"; cp -f "$PEERS_SRC/$f" "$PEERS_DIR/$f"; done
  chmod -R u+w "$PEERS_DIR"
fi

peer_ok() { # peer -> 0 when its harness can run
  case $1 in
    graphile-worker) [ -d "$PEERS_DIR/graphile-worker/node_modules/graphile-worker" ];;
    pg-boss) [ -d "$PEERS_DIR/pgboss/node_modules/pg-boss" ];;
    dbos) [ -x "$PEERS_DIR/dbos/.venv/bin/python" ] && "$PEERS_DIR/dbos/.venv/bin/python" -c 'import dbos, psycopg' 2>/dev/null;;
    procrastinate) [ -x "$PEERS_DIR/procrastinate/.venv/bin/python" ] && "$PEERS_DIR/procrastinate/.venv/bin/python" -c 'import procrastinate' 2>/dev/null;;
    apalis) [ -x "$PEERS_DIR/rust-apalis/target/release/peers_rust" ];;
    celery) [ -x "$PEERS_DIR/celery/.venv/bin/python" ] && command -v redis-server >/dev/null;;
    prefect) [ -x "$PEERS_DIR/prefect/.venv/bin/python" ];;
    *) return 1;;
  esac
}

install_peer() { # the same pinned installs as setup.sh
  local d=$PEERS_DIR
  case $1 in
    graphile-worker) (cd "$d/graphile-worker" && npm install --no-audit --no-fund graphile-worker@0.17.3 pg);;
    pg-boss) (cd "$d/pgboss" && npm install --no-audit --no-fund pg-boss@10.4.2);;
    dbos) { [ -d "$d/dbos/.venv" ] || python3 -m venv "$d/dbos/.venv"; } && "$d/dbos/.venv/bin/pip" install -q dbos==3.4.0 psycopg2-binary 'psycopg[binary]';;
    procrastinate) { [ -d "$d/procrastinate/.venv" ] || python3 -m venv "$d/procrastinate/.venv"; } && "$d/procrastinate/.venv/bin/pip" install -q procrastinate==3.10.0 'psycopg[binary,pool]';;
    apalis) (cd "$d/rust-apalis" && cargo build --release);;
    *) say "no installer for $1 here: use FULL_SETUP=1"; return 1;;
  esac
}

pg_up() { python3 - <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", 55432)) == 0 else 1)
PY
}

RUN_PEERS=""
if [ "$SKIP_PEERS" != 1 ]; then
  if [ "${FULL_SETUP:-0}" = 1 ]; then
    say "INSTALL=1 $PEERS_DIR/setup.sh"
    INSTALL=1 "$PEERS_DIR/setup.sh" >>"$LOG" 2>&1 || say "setup.sh failed (see $LOG)"
  else
    # setup.sh's Postgres part (Redis is only for celery)
    if ! pg_up; then
      STARTED_PG=1
      (cd "$PEERS_DIR" && mkdir -p logs &&
        if [ ! -d pgdata ]; then mkdir -p pgdata && chown postgres:postgres pgdata logs &&
          su postgres -s /bin/bash -c "initdb -D $PEERS_DIR/pgdata -U postgres --auth=trust" >>"$LOG" 2>&1; fi &&
        chown postgres:postgres logs &&
        su postgres -s /bin/bash -c "pg_ctl -D $PEERS_DIR/pgdata -l $PEERS_DIR/logs/pg.log -o '-c listen_addresses=127.0.0.1 -p 55432 -k $PEERS_DIR/pgdata' start" >>"$LOG" 2>&1) ||
        say "could not start the peers' PostgreSQL (see $LOG)"
    fi
    if ! { [ -x "$PEERS_DIR/common/.venv/bin/python" ] && "$PEERS_DIR/common/.venv/bin/python" -c 'import psycopg' 2>/dev/null; }; then
      { [ -d "$PEERS_DIR/common/.venv" ] || python3 -m venv "$PEERS_DIR/common/.venv"; } &&
        "$PEERS_DIR/common/.venv/bin/pip" install -q 'psycopg[binary]' >>"$LOG" 2>&1 || say "could not install the common driver venv"
    fi
    for p in $PEERS; do
      peer_ok "$p" || { say "installing $p"; install_peer "$p" >>"$LOG" 2>&1 || say "install of $p failed (see $LOG)"; }
    done
  fi
  if pg_up; then
    for p in $PEERS; do
      if peer_ok "$p"; then RUN_PEERS="$RUN_PEERS $p"; else MISSING="$MISSING $p"; fi
    done
  else
    say "no PostgreSQL on 127.0.0.1:55432: skipping every peer"
    MISSING="$PEERS"
  fi
  [ -n "$MISSING" ] && say "peers missing:$MISSING"
fi

# ---- the rounds ----
for r in $(seq "$REPS"); do
  for backend in $WEFT_BACKENDS; do
    scenarios=$WEFT_SCENARIOS
    [ "$r" = 1 ] && scenarios="$scenarios $WEFT_ONCE_SCENARIOS"
    for s in $scenarios; do
      python3 "$PEERS_SRC/common/wait_quiet.py" "$QUIET_WAIT" 0.05 2>/dev/null | sed 's/^/[bench-compare] /' >&2
      say "round $r/$REPS: weft $s on $backend"
      # shellcheck disable=SC2086
      "$BIN" "$s" --backend "$backend" --out "$WEFT_JSONL" $WEFT_ARGS 2>>"$LOG" >/dev/null || say "weft-bench $s on $backend failed (see $LOG)"
      tail -n 1 "$LOG" >&2
    done
    # the same scenarios with the handlers in another process: an SDK worker of its own, the exec worker
    for mode in $WEFT_WORKER_MODES; do
      extra=""; [ "$mode" = exec ] && extra=$WEFT_EXEC_ARGS
      for s in $WEFT_WORKER_SCENARIOS; do
        python3 "$PEERS_SRC/common/wait_quiet.py" "$QUIET_WAIT" 0.05 2>/dev/null | sed 's/^/[bench-compare] /' >&2
        say "round $r/$REPS: weft $s on $backend, --worker $mode"
        # shellcheck disable=SC2086
        "$BIN" "$s" --backend "$backend" --worker "$mode" --out "$WEFT_JSONL" $WEFT_ARGS $extra 2>>"$LOG" >/dev/null ||
          say "weft-bench $s on $backend --worker $mode failed (see $LOG)"
        tail -n 1 "$LOG" >&2
      done
    done
  done
  if [ -n "$RUN_PEERS" ]; then
    say "round $r/$REPS: peers$RUN_PEERS"
    # shellcheck disable=SC2086
    (cd "$PEERS_DIR" && REPS=1 QUIET_WAIT=$QUIET_WAIT ./run_all.sh $RUN_PEERS) 2>&1 | tee -a "$LOG" >&2
  fi
done

# the peers' Postgres, when this script started it (KEEP_PG=1 leaves it up)
if [ "${STARTED_PG:-0}" = 1 ] && [ "${KEEP_PG:-0}" != 1 ]; then
  su postgres -s /bin/bash -c "pg_ctl -D $PEERS_DIR/pgdata -m fast stop" >>"$LOG" 2>&1 && say "stopped the peers' PostgreSQL"
fi

# ---- BENCHMARKS.md ----
for v in SESSION_TS WEFT_JSONL PEERS_DIR COMMAND MISSING RUN_PEERS SKIP_PEERS REPS V_WEFT; do printf '%s=%q\n' "$v" "${!v}"; done >"$SESSION_FILE"
say "session settings in $SESSION_FILE (REPORT_ONLY=$SESSION_FILE $0 rewrites the report)"
write_report
