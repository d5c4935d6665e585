#!/usr/bin/env bash
# Load benchmark: cutover against nginx and HAProxy (and straight to one
# backend), side by side on this machine, reporting ratios. See
# docs/benchmarks.md for the method and how to read the table.
#
#   benches/load/run.sh            # full run: 3 rounds, 2 s warm-up + 10 s per point (~28 min)
#   benches/load/run.sh --quick    # smoke check: 1 round, short runs, fewer points (~3 min)
#
# Options: --rounds N, --no-oha (skip the fixed-rate latency part),
# --no-build (use the existing release binary), --keep (keep the work dir),
# --profile [h1|h2] (no comparison: profile cutover (or BENCH_PROFILE_TARGET) with `perf record` under
# wrk/h2load at 50 connections and print the hottest functions),
# --syscalls [h1|h2] (no timing: system calls per request of each proxy,
# counted with `strace -c -f` over a fixed number of requests at 50
# connections; deterministic where time is not),
# --callgrind (no timing: user-space instructions per request of cutover,
# counted by valgrind's callgrind over 20000 HTTP/1.1 requests at 50
# connections, with the functions that cost most; repeatable to about 1%, so
# it shows changes of a few percent that timed runs cannot; compare commits
# by building each and passing --no-build).
# Environment: CARGO_TARGET_DIR (where cutover is built), BENCH_PORT_BASE
# (default 18000), BENCH_IDLE_MIN (per-CPU idle % required before a round,
# default 90), BENCH_FOREIGN_MAX (CPU % of one core that other processes may
# use during a point before it is repeated, default 10), BENCH_MAX_WAIT
# (seconds to wait for an idle machine before giving up, default 1800),
# BENCH_COMMIT (the commit to name when the tree is not a git checkout),
# BENCH_PROFILE_CONNS (connections for --profile, default 50),
# BENCH_PROFILE_TARGET (the proxy --profile records: cutover, nginx or haproxy;
# default cutover).
# Needs root for apt-get when tools are missing. All traffic is to 127.0.0.1.

set -euo pipefail

QUICK=0
ROUNDS=3
WARM=2
DUR=10
CONNS="1 50 256"
FLIPS=100
FLIP_DUR=20
RATE=5000
RATE_CONNS="50 256"
DO_OHA=1
DO_BUILD=1
KEEP=0
ROUNDS_SET=0
PROFILE=
SYSCALLS=
CALLGRIND=0

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS="$2"; ROUNDS_SET=1; shift ;;
    --no-oha) DO_OHA=0 ;;
    --no-build) DO_BUILD=0 ;;
    --keep) KEEP=1 ;;
    --profile) PROFILE=h1; case "${2:-}" in h1|h2) PROFILE=$2; shift ;; esac ;;
    --callgrind) CALLGRIND=1 ;;
    --syscalls) SYSCALLS=h1; case "${2:-}" in h1|h2) SYSCALLS=$2; shift ;; esac ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  [ "$ROUNDS_SET" = 1 ] || ROUNDS=1
  WARM=1; DUR=3; CONNS="50 256"; FLIPS=20; FLIP_DUR=4
fi

REPO=$(cd "$(dirname "$0")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
BASE=${BENCH_PORT_BASE:-18000}
IDLE_MIN=${BENCH_IDLE_MIN:-90}
FOREIGN_MAX=${BENCH_FOREIGN_MAX:-10}
MAX_WAIT=${BENCH_MAX_WAIT:-1800}
HZ=$(getconf CLK_TCK)

# Ports (all on 127.0.0.1).
BE1=$((BASE + 1)) BE2=$((BASE + 2))           # backends, HTTP/1.1
BE1_H2=$((BASE + 11))                         # backend 1, h2c (direct HTTP/2 limit)
BE1_ST=$((BASE + 21)) BE2_ST=$((BASE + 22))   # backends' stub_status
CUT=$((BASE + 80)) CUT_ADMIN=$((BASE + 90))   # cutover: HTTP/1.1 and h2c on one port
NGX_H1=$((BASE + 81)) NGX_H2=$((BASE + 91))
HAP_H1=$((BASE + 82)) HAP_H2=$((BASE + 92))

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- tools ---
ensure_tools() {
  local missing=() pkgs=() pair cmd pkg
  for pair in nginx:nginx haproxy:haproxy wrk:wrk h2load:nghttp2-client socat:socat \
              curl:curl python3:python3 taskset:util-linux git:git; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || { missing+=("$cmd"); pkgs+=("$pkg"); }
  done
  if [ ${#pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing Debian packages: ${pkgs[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    else
      die "missing: ${missing[*]}; install them with: apt-get install ${pkgs[*]} (as root)"
    fi
  fi
  # Debian's package may start a system nginx on :80; it idles and is not ours.
  if [ "$DO_OHA" = 1 ]; then
    OHA=$(command -v oha || true)
    [ -n "$OHA" ] || OHA="$REPO/target/tools/bin/oha"
    if [ ! -x "$OHA" ]; then
      log "oha not found: building it (cargo install --locked oha --root $REPO/target/tools; ~8 minutes on 2 cores)"
      cargo install --locked oha --root "$REPO/target/tools" >&2
    fi
  fi
  NGINX_VERSION=$(nginx -v 2>&1 | sed 's/.*nginx\///')
  HAPROXY_VERSION=$(haproxy -v 2>/dev/null | awk 'NR == 1 {print $3}')
}

build_cutover() {
  CUTOVER_BIN="$TARGET_DIR/release/cutover"
  if [ "$DO_BUILD" = 1 ]; then
    log "building cutover (release, --no-default-features) in $TARGET_DIR"
    (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --no-default-features -q) >&2 \
      || die "cargo build failed"
  fi
  [ -x "$CUTOVER_BIN" ] || die "no cutover binary at $CUTOVER_BIN (drop --no-build)"
}

# ------------------------------------------------------------ processes ---
WORK=$(mktemp -d /tmp/cutover-bench.XXXXXX)
PIDS=()
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.3
  done
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$KEEP" = 1 ]; then log "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background on the given CPU; sets LAST_PID.
start_on() {
  local cpu=$1 name=$2; shift 2
  taskset -c "$cpu" "$@" >"$WORK/$name.out" 2>&1 &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
}

forget_pid() {
  local p=$1 keep=() q
  for q in "${PIDS[@]}"; do [ "$q" = "$p" ] || keep+=("$q"); done
  PIDS=("${keep[@]}")
}

# Stops one process we started (TERM, then KILL after 5 s) and forgets it,
# so the exit trap never signals a recycled pid.
stop_pid() {
  local p=$1
  if kill -TERM "$p" 2>/dev/null; then
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
  forget_pid "$p"
}

wait_port() {
  local port=$1 i
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The process and its children (nginx: master and workers).
tree() { echo "$1"; pgrep -P "$1" 2>/dev/null || true; }

# utime+stime, in clock ticks, summed over the given pids.
ticks() {
  local sum=0 p s f
  for p in "$@"; do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    sum=$((sum + f[11] + f[12]))
  done
  echo $sum
}

# Peak RSS (VmHWM), KiB, summed over the given pids.
hwm_kb() {
  local sum=0 p v
  for p in "$@"; do
    v=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
    sum=$((sum + ${v:-0}))
  done
  echo $sum
}

# CPU time of this shell's reaped children (the load generators), in ticks,
# into CHILD_TICKS. Must run in the main shell (not in $(...)): `times`
# reports the calling shell's children.
child_ticks() {
  times >"$WORK/times"
  CHILD_TICKS=$(python3 - "$WORK/times" "$HZ" <<'EOF'
import re, sys
line = open(sys.argv[1]).read().splitlines()[1]
secs = sum(int(m) * 60 + float(s) for m, s in re.findall(r"(\d+)m([\d.]+)s", line))
print(int(secs * int(sys.argv[2])))
EOF
)
}

# "busy idle total steal" ticks per CPU from /proc/stat, for cpu0, cpu1 and
# all. Busy includes irq and softirq time: the kernel charges the softirq
# work of loopback TCP to the process that ran it as well.
cpu_sample() {
  awk '/^cpu[01 ] / { busy = $2 + $3 + $4 + $7 + $8; idle = $5 + $6; tot = busy + idle + $9;
       printf "%s %d %d %d %d\n", $1, busy, idle, tot, $9 }' /proc/stat
}

# "pid:starttime:ticks" (utime+stime) of every process outside this script's
# own tree (the proxies, backends and load generators are inside it), kernel
# threads included: what other work used the CPUs between two samples. Read
# per process because the machine-wide /proc/stat counts busy time in whole
# ticks and idle time exactly, so a lightly loaded CPU that wakes often
# (the fixed-rate points) shows busy time no process used.
foreign_sample() { python3 "$WORK/parse.py" procs "$$"; }
now_s() { date +%s.%N; }

# Waits until both CPUs are idle (>= IDLE_MIN %) over 3 s; gives up after MAX_WAIT.
wait_idle() {
  local waited=0 a b
  while :; do
    a=$(cpu_sample); sleep 3 & wait $!; b=$(cpu_sample)
    local verdict
    verdict=$(python3 - "$a" "$b" "$IDLE_MIN" <<'EOF'
import sys
def parse(t): return {l.split()[0]: list(map(int, l.split()[1:])) for l in t.splitlines()}
a, b, need = parse(sys.argv[1]), parse(sys.argv[2]), float(sys.argv[3])
out, ok = [], True
for c in ("cpu0", "cpu1"):
    idle = (b[c][1] - a[c][1]) * 100.0 / max(1, b[c][2] - a[c][2])
    ok = ok and idle >= need
    out.append(f"{c} {idle:.0f}% idle")
print(("ok " if ok else "busy ") + ", ".join(out))
EOF
)
    case "$verdict" in ok*) return 0 ;; esac
    if [ "$waited" -ge "$MAX_WAIT" ]; then
      die "the machine stayed busy for ${MAX_WAIT}s (${verdict#busy }); not publishing skewed numbers"
    fi
    log "waiting for an idle machine: ${verdict#busy }; top: $(ps -eo pcpu=,comm= --sort=-pcpu | awk 'NR <= 3 {printf "%s(%s%%) ", $2, $1}')"
    sleep 12 & wait $!   # (in the background, so Ctrl-C and TERM act at once)
    waited=$((waited + 15))
    IDLE_WAITS=$((IDLE_WAITS + 15))
  done
}

# ------------------------------------------------------------- configs ---
ngx_h2_listen() {
  # nginx >= 1.25.1 takes `http2 on;`; older ones `listen ... http2` (h2c prior knowledge without TLS).
  if printf '%s\n1.25.1\n' "$NGINX_VERSION" | sort -V -C; then
    echo "listen 127.0.0.1:$1 http2;"
  else
    echo "listen 127.0.0.1:$1; http2 on;"
  fi
}

# The start of every nginx config here, up to the inside of `http {`; $1
# names its pid file, error log and temp directory under $WORK.
nginx_head() {
  local name=$1
  mkdir -p "$WORK/$name"
  cat <<EOF
worker_processes 1;
daemon off;
pid $WORK/$name.pid;
error_log $WORK/$name.err warn;
worker_rlimit_nofile 4096;
events { worker_connections 2048; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path $WORK/$name/body;
  proxy_temp_path $WORK/$name/proxy;
  fastcgi_temp_path $WORK/$name/fastcgi;
  uwsgi_temp_path $WORK/$name/uwsgi;
  scgi_temp_path $WORK/$name/scgi;
EOF
}

write_backend_conf() {
  local n=$1 port=$2 st=$3 body=$4 extra=${5:-}
  cat >"$WORK/be$n.conf" <<EOF
$(nginx_head "be$n")
  server {
    listen 127.0.0.1:$port;
    location / { default_type text/plain; return 200 "$body\n"; }
  }
  $extra
  server {
    listen 127.0.0.1:$st;
    location / { stub_status; }
  }
}
EOF
}

# nginx as the proxy; $1 = upstream servers block content.
write_nginx_proxy_conf() {
  local file=$1 servers=$2
  local loc='location / {
      proxy_pass http://web;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }'
  cat >"$file" <<EOF
$(nginx_head ngx)
  upstream web {
    $servers
    keepalive 1024;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$NGX_H1;
    $loc
  }
  server {
    $(ngx_h2_listen "$NGX_H2")
    $loc
  }
}
EOF
}

write_configs() {
  write_backend_conf 1 "$BE1" "$BE1_ST" "blue" \
    "server { $(ngx_h2_listen "$BE1_H2") location / { default_type text/plain; return 200 \"blue\\n\"; } }"
  write_backend_conf 2 "$BE2" "$BE2_ST" "gren"
  write_nginx_proxy_conf "$WORK/ngx-split.conf" "server 127.0.0.1:$BE1; server 127.0.0.1:$BE2;"
  write_nginx_proxy_conf "$WORK/ngx-blue.conf" "server 127.0.0.1:$BE1;"
  write_nginx_proxy_conf "$WORK/ngx-green.conf" "server 127.0.0.1:$BE2;"

  cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 1800
  stats socket $WORK/haproxy.sock mode 600 level admin
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  timeout http-request 10s
  option http-keep-alive
  option forwardfor
  http-reuse always
frontend web
  bind 127.0.0.1:$HAP_H1
  bind 127.0.0.1:$HAP_H2 proto h2
  http-request set-header X-Forwarded-Proto http
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  default_backend web
backend web
  balance roundrobin
  server blue 127.0.0.1:$BE1 weight 100
  server green 127.0.0.1:$BE2 weight 100
EOF

  cat >"$WORK/cutover.toml" <<EOF
workers = 1
shutdown_timeout = "1s"

[admin]
listen = "127.0.0.1:$CUT_ADMIN"

[services.web]
split = { blue = 50, green = 50 }
drain_timeout = "1s"

[[services.web.listeners]]
listen = "127.0.0.1:$CUT"

[services.web.pools.blue]
backends = ["127.0.0.1:$BE1"]

[services.web.pools.green]
backends = ["127.0.0.1:$BE2"]
EOF
  haproxy -c -q -f "$WORK/haproxy.cfg" || die "haproxy rejects its config"
  nginx -t -q -p "$WORK" -c "$WORK/ngx-split.conf" || die "nginx rejects the proxy config"
  "$CUTOVER_BIN" check "$WORK/cutover.toml" >/dev/null || die "cutover rejects its config"
}

start_backends() {
  local p
  for p in "$BE1" "$BE2" "$BE1_H2" "$BE1_ST" "$BE2_ST" "$CUT" "$CUT_ADMIN" "$NGX_H1" "$NGX_H2" "$HAP_H1" "$HAP_H2"; do
    port_free "$p" || die "port 127.0.0.1:$p is in use (set BENCH_PORT_BASE)"
  done
  start_on 1 be1 nginx -p "$WORK" -c "$WORK/be1.conf"; BE1_PID=$LAST_PID
  start_on 1 be2 nginx -p "$WORK" -c "$WORK/be2.conf"; BE2_PID=$LAST_PID
  wait_port "$BE1" && wait_port "$BE2" && wait_port "$BE1_H2" || die "backends did not start: $(cat "$WORK"/be*.out)"
}

# Starts the three proxies (fresh each round, so peak RSS is per round), on CPU 0.
start_proxies() {
  cp "$WORK/ngx-split.conf" "$WORK/ngx.conf"
  start_on 0 cutover "$CUTOVER_BIN" run --config "$WORK/cutover.toml" --workers 1; CUT_PID=$LAST_PID
  start_on 0 nginx nginx -p "$WORK" -c "$WORK/ngx.conf"; NGX_PID=$LAST_PID
  start_on 0 haproxy haproxy -db -f "$WORK/haproxy.cfg"; HAP_PID=$LAST_PID
  wait_port "$CUT" || die "cutover did not start: $(tail -5 "$WORK/cutover.out")"
  wait_port "$NGX_H1" || die "nginx did not start: $(tail -5 "$WORK/nginx.out")"
  wait_port "$HAP_H1" || die "haproxy did not start: $(tail -5 "$WORK/haproxy.out")"
  wait_port "$CUT_ADMIN" || die "cutover's admin API did not start"
  local t
  for t in cutover nginx haproxy direct; do
    curl -fsS -o /dev/null "http://127.0.0.1:$(port_of "$t" h1)/" || die "$t does not answer"
  done
}

stop_proxies() {
  stop_pid "$CUT_PID"; stop_pid "$NGX_PID"; stop_pid "$HAP_PID"
}

port_of() {
  case "$1:$2" in
    cutover:*) echo "$CUT" ;;
    nginx:h1) echo "$NGX_H1" ;; nginx:h2) echo "$NGX_H2" ;;
    haproxy:h1) echo "$HAP_H1" ;; haproxy:h2) echo "$HAP_H2" ;;
    direct:h1) echo "$BE1" ;; direct:h2) echo "$BE1_H2" ;;
  esac
}

pids_of() {
  case "$1" in
    cutover) tree "$CUT_PID" ;;
    nginx) tree "$NGX_PID" ;;
    haproxy) tree "$HAP_PID" ;;
    direct) ;;
  esac
}

accepts() {
  curl -fsS "http://127.0.0.1:$1/" | awk 'NR == 3 {print $1}'
}

# ------------------------------------------------------------- measure ---
# Runs one load: $1 proto (h1|h2|rate), $2 connections, $3 seconds, $4 port, $5 output.
load() {
  local proto=$1 c=$2 d=$3 port=$4 out=$5
  # A load generator that outlives its run by 30 s is stopped (h2load once
  # never finished when connections were dropped at accept); the point then
  # shows what it printed: 0 req/s when it printed nothing, which stands out.
  local limit=$((d + 30))
  case "$proto" in
    h1) timeout -k 5 "$limit" taskset -c 1 wrk -t1 -c"$c" -d"${d}s" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 || true ;;
    h2) rm -f "$out.log"
        timeout -k 5 "$limit" taskset -c 1 h2load -t1 -c"$c" -m1 -D"$d" --log-file="$out.log" "http://127.0.0.1:$port/" >"$out" 2>&1 || true ;;
    rate) timeout -k 5 "$limit" taskset -c 1 "$OHA" -z "${d}s" -q "$RATE" --latency-correction -c "$c" --no-tui \
            --output-format json "http://127.0.0.1:$port/" >"$out" 2>"$out.err" || true ;;
  esac
}

# One measured point: warm-up, then the measured run with CPU accounting.
point() {
  local round=$1 target=$2 proto=$3 c=$4
  local port out pids
  port=$(port_of "$target" "${proto/rate/h1}")
  out="$WORK/r$round-$target-$proto-$c.txt"
  load "$proto" "$c" "$WORK_WARM" "$port" "$WORK/warm.txt"
  read -r -a pids <<<"$(pids_of "$target" | tr '\n' ' ')"
  local a1 a2 pt0 bt0 ct0 s0 f0 w0 pt1 bt1 ct1 s1 f1 w1
  a1=$(accepts "$BE1_ST"); a2=$(accepts "$BE2_ST")
  pt0=$(ticks "${pids[@]}"); bt0=$(ticks $(tree "$BE1_PID") $(tree "$BE2_PID")); child_ticks; ct0=$CHILD_TICKS
  f0=$(foreign_sample); s0=$(cpu_sample); w0=$(now_s)
  load "$proto" "$c" "$DUR" "$port" "$out"
  w1=$(now_s); s1=$(cpu_sample); f1=$(foreign_sample)
  pt1=$(ticks "${pids[@]}"); bt1=$(ticks $(tree "$BE1_PID") $(tree "$BE2_PID")); child_ticks; ct1=$CHILD_TICKS
  local na1 na2
  na1=$(accepts "$BE1_ST"); na2=$(accepts "$BE2_ST")
  local rss=0
  [ ${#pids[@]} -gt 0 ] && rss=$(hwm_kb "${pids[@]}")
  # Audit trail of the CPU accounting: ours (the backends' and load
  # generator's only here) and the samples behind the foreign-CPU check.
  printf '%s %s %s c=%s proxy=%s backends=%s loadgen=%s wall=%s..%s\n%s\n%s\nothers before: %s\nothers after: %s\n' \
    "$round" "$target" "$proto" "$c" "$((pt1 - pt0))" "$((bt1 - bt0))" "$((ct1 - ct0))" "$w0" "$w1" \
    "$s0" "$s1" "$f0" "$f1" >>"$WORK/accounting.log"
  python3 "$WORK/parse.py" point "$round" "$target" "$proto" "$c" "$out" \
    "$((pt1 - pt0))" "$s0" "$s1" "$f0" "$f1" "$w0" "$w1" \
    "$(( (na1 - a1 - 1) + (na2 - a2 - 1) ))" "$rss" "$HZ" "$FOREIGN_MAX" >>"$WORK/points.tsv"
  tail -1 "$WORK/points.tsv" | python3 "$WORK/parse.py" show >&2
}

# Did the last $1 points stay clean (no foreign CPU)?
last_points_clean() {
  tail -n "$1" "$WORK/points.tsv" | awk -F'\t' '$NF == "dirty" {bad = 1} END {exit bad}'
}

# A group of points (all targets, one protocol and connection count),
# repeated while other processes used the CPU during it.
group() {
  local round=$1 proto=$2 c=$3; shift 3
  local try t
  for try in 1 2 3; do
    for t in "$@"; do point "$round" "$t" "$proto" "$c"; done
    if last_points_clean $#; then return 0; fi
    if [ $try = 3 ]; then
      log "still disturbed after 3 tries; keeping these points, flagged"
      return 0
    fi
    log "other processes used the CPU during $proto c=$c: repeating it"
    REPEATS=$((REPEATS + 1))
    # Drop the disturbed points, wait for quiet.
    head -n "-$#" "$WORK/points.tsv" >"$WORK/points.tmp" && mv "$WORK/points.tmp" "$WORK/points.tsv"
    wait_idle
  done
}

flip() {
  local target=$1 to=$2
  case "$target" in
    cutover) curl -fsS -o /dev/null -X POST -H 'content-type: application/json' \
               -d "{\"to\":\"$to\",\"reason\":\"bench\"}" "http://127.0.0.1:$CUT_ADMIN/v1/services/web/switch" ;;
    # Raise the new pool before draining the old one, as an operator would:
    # the other order leaves a moment with no server (503s).
    haproxy) local cmd="set weight web/blue 100; set weight web/green 0"
             [ "$to" = green ] && cmd="set weight web/green 100; set weight web/blue 0"
             local r; r=$(echo "$cmd" | socat - "UNIX-CONNECT:$WORK/haproxy.sock")
             [ -z "$(echo "$r" | tr -d '[:space:]')" ] ;;
    nginx) cp "$WORK/ngx-$to.conf" "$WORK/ngx.conf"
           nginx -q -p "$WORK" -c "$WORK/ngx.conf" -s reload 2>>"$WORK/ngx-reload.log" ;;
  esac
}

restore_split() {
  case "$1" in
    cutover) curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' \
               -d '{"split":{"blue":50,"green":50},"reason":"bench"}' "http://127.0.0.1:$CUT_ADMIN/v1/services/web/split" ;;
    haproxy) echo "set weight web/blue 100; set weight web/green 100" | socat - "UNIX-CONNECT:$WORK/haproxy.sock" >/dev/null ;;
    nginx) cp "$WORK/ngx-split.conf" "$WORK/ngx.conf"; nginx -q -p "$WORK" -c "$WORK/ngx.conf" -s reload 2>>"$WORK/ngx-reload.log" ;;
  esac
}

# After a flip to $2, do new requests reach only that pool?
check_flip_effect() {
  local target=$1 to=$2 want=blue i body bad=0
  [ "$to" = green ] && want=gren
  sleep 0.5
  for i in $(seq 1 20); do
    body=$(curl -fsS "http://127.0.0.1:$(port_of "$target" h1)/" || echo fail)
    [ "$body" = "$want" ] || bad=$((bad + 1))
  done
  echo $bad
}

# 100 flips blue <-> green during a wrk run at 50 connections.
flip_test() {
  local round=$1 target=$2
  local port out gap i to fails=0
  port=$(port_of "$target" h1)
  out="$WORK/r$round-$target-flip.txt"
  gap=$(python3 -c "print(f'{$FLIP_DUR * 0.9 / $FLIPS:.3f}')")
  taskset -c 1 wrk -t1 -c50 -d"${FLIP_DUR}s" --latency "http://127.0.0.1:$port/" >"$out" 2>&1 &
  local wrk_pid=$!
  PIDS+=("$wrk_pid")
  sleep 0.5
  for i in $(seq 1 "$FLIPS"); do
    to=green; [ $((i % 2)) = 0 ] && to=blue
    flip "$target" "$to" || fails=$((fails + 1))
    sleep "$gap"
  done
  wait "$wrk_pid" || true
  forget_pid "$wrk_pid"
  local wrong_green wrong_blue
  flip "$target" green >/dev/null 2>&1 || true; wrong_green=$(check_flip_effect "$target" green)
  flip "$target" blue >/dev/null 2>&1 || true; wrong_blue=$(check_flip_effect "$target" blue)
  restore_split "$target" || true
  python3 "$WORK/parse.py" flip "$round" "$target" "$out" "$FLIPS" "$fails" "$((wrong_green + wrong_blue))" >>"$WORK/flips.tsv"
  tail -1 "$WORK/flips.tsv" >&2
}

# ------------------------------------------------------------ analysis ---
write_parser() {
  cat >"$WORK/parse.py" <<'PYEOF'
import json, os, re, statistics, sys

def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]

def parse_wrk(text):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    for p in ("50", "99"):
        m = re.search(r"^\s+%s%%\s+([\d.]+)(us|ms|s|m)\s*$" % p, text, re.M)
        r["p" + p] = ms(*m.groups()) if m else float("nan")
    m = re.search(r"(\d+) requests in", text)
    r["req"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sockerr"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r

def parse_h2load(text, logfile):
    r = {}
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    r["req"] = int(m.group(3)) if m else 0
    r["sockerr"] = (int(m.group(5)) + int(m.group(6)) + int(m.group(7))) if m else 0
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    r["non2xx"] = (int(m.group(3)) + int(m.group(4))) if m else 0
    lat = []
    try:
        with open(logfile) as f:
            for line in f:
                cols = line.split("\t")
                if len(cols) >= 3 and cols[1] != "-1":
                    lat.append(int(cols[2]))
    except OSError:
        pass
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0 if lat else float("nan")
    r["p50"], r["p99"] = pct(0.50), pct(0.99)
    return r

def parse_oha(path):
    r = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "req": 0, "sockerr": 0, "non2xx": 0}
    try:
        j = json.load(open(path))
    except (OSError, ValueError):
        return r
    s = j.get("summary", {})
    r["rps"] = float(s.get("requestsPerSec") or 0.0)
    lp = j.get("latencyPercentiles", {})
    r["p50"] = float(lp.get("p50") or "nan") * 1000.0
    r["p99"] = float(lp.get("p99") or "nan") * 1000.0
    codes = j.get("statusCodeDistribution", {})
    r["req"] = sum(codes.values())
    r["non2xx"] = sum(v for k, v in codes.items() if not k.startswith("2"))
    r["sockerr"] = sum(j.get("errorDistribution", {}).values())
    return r

def procs(a):
    """'pid:starttime:ticks' of every process outside the tree of pid a[0]."""
    root = a[0]
    parent, info = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            st = open("/proc/%s/stat" % d).read()
        except OSError:
            continue
        f = st[st.rindex(")") + 2:].split()
        parent[int(d)] = int(f[1])
        info[int(d)] = (f[19], int(f[11]) + int(f[12]))
    ours = {int(root)}
    grew = True
    while grew:
        grew = False
        for pid, pp in parent.items():
            if pp in ours and pid not in ours:
                ours.add(pid)
                grew = True
    print(" ".join("%d:%s:%d" % (pid, start, t) for pid, (start, t) in sorted(info.items()) if pid not in ours))

def foreign_ticks(f0, f1):
    """CPU ticks that processes outside ours used between two procs() samples;
    a process that started in between counts whole."""
    def parse(t):
        return {tuple(x.split(":")[:2]): int(x.split(":")[2]) for x in t.split()}
    a, b = parse(f0), parse(f1)
    return sum(max(0, t - a.get(k, 0)) for k, t in b.items())

def cpu(sample):
    return {l.split()[0]: list(map(int, l.split()[1:])) for l in sample.splitlines()}

COLS = ["round", "target", "proto", "conns", "rps", "p50", "p99", "req", "errors",
        "cpu_us_req", "new_upstream", "rss_kb", "foreign_pct", "steal_pct", "state"]

def point(a):
    (rnd, target, proto, conns, out, pt, s0, s1, f0, f1, w0, w1, newup, rss, hz, fmax) = a
    text = open(out).read()
    if proto == "h1":
        r = parse_wrk(text)
    elif proto == "h2":
        r = parse_h2load(text, out + ".log")
    else:
        r = parse_oha(out)
    hz = int(hz)
    c0, c1 = cpu(s0), cpu(s1)
    total = (c1["cpu"][2] - c0["cpu"][2]) / 2.0  # ticks of one CPU
    steal = c1["cpu"][3] - c0["cpu"][3]
    foreign = foreign_ticks(f0, f1) * 100.0 / max(1.0, (float(w1) - float(w0)) * hz)
    cpu_us = int(pt) * 1e6 / hz / r["req"] if r["req"] and target != "direct" else float("nan")
    state = "dirty" if foreign > float(fmax) else "clean"
    row = [rnd, target, proto, conns, "%.1f" % r["rps"], "%.3f" % r["p50"], "%.3f" % r["p99"],
           r["req"], r["sockerr"] + r["non2xx"], "%.2f" % cpu_us, newup, rss,
           "%.1f" % foreign, "%.1f" % (steal * 100.0 / max(1.0, total)), state]
    print("\t".join(map(str, row)))

def show(_):
    row = dict(zip(COLS, sys.stdin.read().strip().split("\t")))
    print("  r{round} {target:8} {proto} c={conns:<4} {rps:>10} req/s  p50 {p50} ms  p99 {p99} ms  "
          "cpu {cpu_us_req} us/req  errors {errors}  new upstream conns {new_upstream}  "
          "foreign cpu {foreign_pct}%  {state}".format(**row))

def flip(a):
    rnd, target, out, flips, fails, wrong = a
    r = parse_wrk(open(out).read())
    print("\t".join(map(str, [rnd, target, r["req"], r["non2xx"], r["sockerr"], flips, fails, wrong])))

def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")

def fmt(x, nd=2):
    if x != x:
        return "n/a"
    if abs(x) >= 1000:
        return "%.0f" % x
    return ("%%.%df" % nd) % x

def report(a):
    points_path, flips_path, header_path, out_path = a
    rows = [dict(zip(COLS, l.rstrip("\n").split("\t"))) for l in open(points_path) if l.strip()]
    flips = [l.rstrip("\n").split("\t") for l in open(flips_path) if l.strip()]
    targets = ["cutover", "nginx", "haproxy", "direct"]
    rounds = sorted({r["round"] for r in rows})
    keys = []
    for r in rows:
        k = (r["proto"], int(r["conns"]))
        if k not in keys:
            keys.append(k)
    val = {}
    for r in rows:
        val[(r["round"], r["target"], r["proto"], int(r["conns"]))] = r
    lines = []
    hdr = "| test | metric | cutover | nginx | HAProxy | direct | cutover/nginx | cutover/HAProxy | cutover/direct |"
    lines += [hdr, "|" + "---|" * 9]
    metrics = [("rps", "req/s", False), ("p50", "p50 ms", True), ("p99", "p99 ms", True),
               ("cpu_us_req", "CPU µs/req", True)]
    verdict = {}
    rounds_of = {}
    for proto, c in keys:
        label = {"h1": "HTTP/1.1", "h2": "h2c", "rate": "fixed %d/s" % RATE}[proto] + " c=%d" % c
        for m, mname, _ in metrics:
            if proto == "rate" and m == "cpu_us_req":
                continue
            absval = {}
            for t in targets:
                absval[t] = med([float(val[(rd, t, proto, c)][m]) for rd in rounds if (rd, t, proto, c) in val])
            ratios = {}
            for t in ("nginx", "haproxy", "direct"):
                per = []
                for rd in rounds:
                    a_ = val.get((rd, "cutover", proto, c)); b_ = val.get((rd, t, proto, c))
                    if a_ and b_ and float(b_[m]) > 0:
                        per.append(float(a_[m]) / float(b_[m]))
                ratios[t] = med(per)
                if t == "nginx":
                    rounds_of[(proto, c, m)] = per
            verdict[(proto, c, m)] = ratios["nginx"]
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                label, mname, *[fmt(absval[t], 3 if m.startswith("p") else 2) for t in targets],
                *[fmt(ratios[t]) for t in ("nginx", "haproxy", "direct")]))
    # Peak RSS: per round, the maximum VmHWM seen (after the 256-connection points).
    rss = {}
    for t in ("cutover", "nginx", "haproxy"):
        rss[t] = med([max(int(r["rss_kb"]) for r in rows if r["round"] == rd and r["target"] == t) / 1024.0
                      for rd in rounds if any(r["round"] == rd and r["target"] == t for r in rows)])
    rss_ratio = {t: med([max(int(r["rss_kb"]) for r in rows if r["round"] == rd and r["target"] == "cutover") /
                         max(1, max(int(r["rss_kb"]) for r in rows if r["round"] == rd and r["target"] == t))
                         for rd in rounds]) for t in ("nginx", "haproxy")}
    lines.append("| all | peak RSS MiB | %s | %s | %s | n/a | %s | %s | n/a |" % (
        fmt(rss["cutover"], 1), fmt(rss["nginx"], 1), fmt(rss["haproxy"], 1),
        fmt(rss_ratio["nginx"]), fmt(rss_ratio["haproxy"])))
    ft = {}
    for f in flips:
        ft.setdefault(f[1], []).append(f)
    if ft:
        n = ft[next(iter(ft))][0][5]
        for col, name in ((3, "non-2xx"), (4, "socket errors"), (2, "requests")):
            cells = []
            for t in ("cutover", "nginx", "haproxy"):
                cells.append(fmt(med([float(f[col]) for f in ft.get(t, [])]), 0))
            lines.append("| %s flips under load (wrk c=50) | %s (median of rounds) | %s | %s | %s | n/a | | | |" % (n, name, *cells))
        cells = []
        for t in ("cutover", "nginx", "haproxy"):
            cells.append("%d/%d" % (sum(int(f[6]) for f in ft.get(t, [])), sum(int(f[7]) for f in ft.get(t, []))))
        lines.append("| flips | failed flip calls / requests that missed the new pool (sum) | %s | %s | %s | n/a | | | |" % tuple(cells))
    errs = {t: sum(int(r["errors"]) for r in rows if r["target"] == t) for t in targets}
    newup = {t: max([int(r["new_upstream"]) for r in rows if r["target"] == t] or [0]) for t in targets}
    dirty = sum(1 for r in rows if r["state"] == "dirty")
    foreign = max([float(r["foreign_pct"]) for r in rows] or [0.0])
    steal = max([float(r["steal_pct"]) for r in rows] or [0.0])
    notes = []
    notes.append("Errors during throughput points (non-2xx + socket errors, all rounds): " +
                 ", ".join("%s %d" % (t, errs[t]) for t in targets) + ".")
    notes.append("Most new upstream connections the backends accepted during one measured point: " +
                 ", ".join("%s %d" % (t, newup[t]) for t in targets) +
                 " (direct opens one per client connection; a proxy that reuses its upstream connections opens ~0).")
    notes.append("Foreign CPU (other processes) during a kept point: at most %.1f%% of one core; kept points flagged dirty: %d; highest steal: %.1f%%." % (foreign, dirty, steal))
    tgt = []
    # Per-round ratios and nginx's own spread beside each verdict: a ratio
    # near 1 with rounds on both sides is decided by noise, not by cutover.
    per = lambda k: ", ".join(fmt(x) for x in rounds_of.get(k, []))
    for c in (50, 256):
        r = verdict.get(("h1", c, "rps")); p = verdict.get(("h1", c, "p99"))
        if r is not None:
            own = [float(val[(rd, "nginx", "h1", c)]["p99"]) for rd in rounds if (rd, "nginx", "h1", c) in val]
            tgt.append("HTTP/1.1 c=%d: throughput cutover/nginx %s (rounds %s; target >= 1: %s), p99 cutover/nginx %s (rounds %s; nginx's own p99 %s-%s ms; target <= 1: %s)" % (
                c, fmt(r), per(("h1", c, "rps")), "met" if r >= 1 else "NOT met",
                fmt(p), per(("h1", c, "p99")), fmt(min(own or [float("nan")]), 3), fmt(max(own or [float("nan")]), 3),
                "met" if p <= 1 else "NOT met"))
            # The same connections at a fixed rate every target sustains: the
            # latency figure the closed-loop p99 above is not (issue 4).
            q = verdict.get(("rate", c, "p99"))
            if q is not None:
                tgt[-1] += "; at a fixed %d req/s: p99 cutover/nginx %s (rounds %s)" % (RATE, fmt(q), per(("rate", c, "p99")))
    if "cutover" in ft:
        e = sum(int(f[3]) + int(f[4]) for f in ft["cutover"])
        tgt.append("errors under flips for cutover: %d (target 0: %s)" % (e, "met" if e == 0 else "NOT met"))
    tgt.append("peak RSS cutover/nginx %s (target <= 2: %s)" % (fmt(rss_ratio["nginx"]), "met" if rss_ratio["nginx"] <= 2 else "NOT met"))
    head = open(header_path).read()
    text = head + "\n" + "\n".join(lines) + "\n\n" + "\n".join("- " + n for n in notes) + \
        "\n\nTargets (issue 4):\n\n" + "\n".join("- " + t for t in tgt) + "\n"
    open(out_path, "w").write(text)
    print(text)

RATE = 5000
if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "report":
        RATE = int(args.pop())
    {"point": point, "show": show, "flip": flip, "report": report, "procs": procs}[cmd](args)
PYEOF
}

# Profiles cutover alone under load (perf's software clock: this machine's
# VMs may expose no hardware counters).
profile() {
  command -v perf >/dev/null || die "perf is missing: apt-get install linux-perf"
  start_backends
  start_proxies
  local pc=${BENCH_PROFILE_CONNS:-50} t=${BENCH_PROFILE_TARGET:-cutover} port pids
  case "$t" in cutover|nginx|haproxy) ;; *) die "BENCH_PROFILE_TARGET must be cutover, nginx or haproxy, not $t" ;; esac
  port=$(port_of "$t" "$PROFILE")
  pids=$(pids_of "$t" | paste -sd, -)
  load "$PROFILE" "$pc" "$WARM" "$port" "$WORK/warm.txt"
  local secs=$((DUR > 8 ? 8 : DUR))
  perf record -q -e cpu-clock -F 1999 -g -p "$pids" -o "$WORK/perf.data" -- sleep "$secs" 2>/dev/null &
  local perf_pid=$!
  load "$PROFILE" "$pc" "$secs" "$port" "$WORK/prof.txt"
  wait "$perf_pid" || true
  python3 "$WORK/parse.py" point 0 "$t" "$PROFILE" "$pc" "$WORK/prof.txt" 0 "$(cpu_sample)" "$(cpu_sample)" "" "" 0 1 0 0 "$HZ" 100 \
    | python3 "$WORK/parse.py" show
  echo "== hottest functions (self time) =="
  perf report -i "$WORK/perf.data" --no-children --sort symbol --stdio 2>/dev/null >"$WORK/self.txt" || true
  awk '/^ +[0-9.]+%/ { sub(/ +- +- *$/, ""); print substr($0, 1, 150); if (++n == 40) exit }' "$WORK/self.txt"
  echo "== inclusive time (children included) =="
  perf report -i "$WORK/perf.data" --children --sort symbol --stdio -g none 2>/dev/null >"$WORK/incl.txt" || true
  awk '/^ +[0-9.]+%/ { sub(/ +- +- *$/, ""); print substr($0, 1, 150); if (++n == 60) exit }' "$WORK/incl.txt"
  mkdir -p "$REPO/target"
  cp "$WORK/perf.data" "$REPO/target/$t-perf.data" && log "perf data kept: $REPO/target/$t-perf.data (perf report -i ...)"
}

# System calls per request of each proxy: strace -c -f attached for a fixed
# number of requests (strace slows the proxy, so no timing is taken).
syscalls() {
  command -v strace >/dev/null || die "strace is missing: apt-get install strace"
  local n=20000 t pids args
  start_backends
  start_proxies
  printf '%-8s %-5s %10s %10s   %s\n' proxy proto requests "calls/req" "top calls per request"
  for t in cutover nginx haproxy; do
    args=()
    for p in $(pids_of "$t"); do args+=(-p "$p"); done
    strace -c -f -o "$WORK/strace-$t.txt" "${args[@]}" 2>/dev/null &
    local st=$!
    sleep 0.5
    case "$SYSCALLS" in
      h1) taskset -c 1 h2load --h1 -t1 -c50 -n"$n" "http://127.0.0.1:$(port_of "$t" h1)/" >"$WORK/sc-$t.txt" 2>&1 || true ;;
      h2) taskset -c 1 h2load -t1 -c50 -m1 -n"$n" "http://127.0.0.1:$(port_of "$t" h2)/" >"$WORK/sc-$t.txt" 2>&1 || true ;;
    esac
    kill -INT "$st" 2>/dev/null || true
    wait "$st" 2>/dev/null || true
    local ok
    ok=$(awk '/^status codes:/ { print $3 }' "$WORK/sc-$t.txt")
    awk -v t="$t" -v proto="$SYSCALLS" -v ok="${ok:-0}" '
      $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { calls[$NF] = $4; total += $4 }
      END {
        if (ok == 0) { printf "%-8s %-5s no successful requests\n", t, proto; exit }
        top = ""
        # the five most frequent calls
        for (k = 0; k < 5; k++) {
          best = ""; bv = -1
          for (c in calls) if (!(c in used) && calls[c] + 0 > bv) { best = c; bv = calls[c] + 0 }
          if (best == "") break
          used[best] = 1
          top = top sprintf("%s %.2f  ", best, bv / ok)
        }
        printf "%-8s %-5s %10d %10.2f   %s\n", t, proto, ok, total / ok, top
      }' "$WORK/strace-$t.txt"
  done
}

# User-space instructions per request of cutover under callgrind.
callgrind() {
  command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || die "valgrind is missing: apt-get install valgrind"
  local n=20000 vg f
  start_backends
  taskset -c 0 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out.%p" \
    "$CUTOVER_BIN" run --config "$WORK/cutover.toml" --workers 1 >"$WORK/cg.log" 2>&1 &
  vg=$!
  PIDS+=("$vg")
  local i
  for i in $(seq 1 150); do
    curl -fsS -o /dev/null "http://127.0.0.1:$CUT/" 2>/dev/null && break
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$CUT/" || die "cutover did not start under valgrind: $(tail -5 "$WORK/cg.log")"
  # Count only the measured requests: zero after start-up, dump after.
  callgrind_control -z "$vg" >/dev/null 2>&1
  taskset -c 1 h2load --h1 -t1 -c50 -n"$n" "http://127.0.0.1:$CUT/" >"$WORK/cg-load.txt" 2>&1 || true
  callgrind_control -d "$vg" >/dev/null 2>&1
  kill -INT "$vg" 2>/dev/null || true
  wait "$vg" 2>/dev/null || true
  f=$(ls "$WORK"/cg.out.*.1 2>/dev/null | head -1)
  [ -n "$f" ] || die "callgrind wrote no dump"
  local ok
  ok=$(awk '/^status codes:/ { print $3 }' "$WORK/cg-load.txt")
  [ "${ok:-0}" = "$n" ] || die "only ${ok:-0} of $n requests succeeded: $(cat "$WORK/cg-load.txt")"
  awk -v n="$n" '/^totals:/ { printf "cutover: %.1f K user-space instructions per request (%d requests, HTTP/1.1, 50 connections)\n", $2 / n / 1000, n }' "$f"
  echo "== most instructions (self), per request =="
  callgrind_annotate --threshold=100 --auto=no "$f" 2>/dev/null \
    | sed -E 's/ \[[^]]*\]$//; s#/root/.cargo/registry/src/[^/]+/##; s#/rustc/[0-9a-f]+/##' \
    | awk -v n="$n" '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS|libc-start|below main|block_on|enter_runtime|lang_start|begin_short_backtrace|cutover::main|\?\?\?:/ {
        c = $1; gsub(/,/, "", c); sub(/^[^)]*\) +/, "");
        printf "%8.0f  %s\n", c / n, substr($0, 1, 140); if (++k == 25) exit }' || true
  mkdir -p "$REPO/target"
  cp "$f" "$REPO/target/cutover-callgrind.out" && log "callgrind data kept: $REPO/target/cutover-callgrind.out (callgrind_annotate ...)"
}

# ---------------------------------------------------------------- main ---
main() {
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  [ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -ge 2048 ] || die "needs at least 2048 open files (ulimit -n)"
  [ "$(nproc)" -ge 2 ] || die "needs at least 2 CPUs (proxy on CPU 0, load on CPU 1)"
  { [ -n "$PROFILE$SYSCALLS" ] || [ "$CALLGRIND" = 1 ]; } && DO_OHA=0
  ensure_tools
  build_cutover
  write_parser
  write_configs
  if [ -n "$PROFILE" ]; then profile; return; fi
  if [ -n "$SYSCALLS" ]; then syscalls; return; fi
  if [ "$CALLGRIND" = 1 ]; then callgrind; return; fi
  : >"$WORK/points.tsv"; : >"$WORK/flips.tsv"
  REPEATS=0; IDLE_WAITS=0
  WORK_WARM=$WARM
  local commit dirty date
  # BENCH_COMMIT names the commit when the tree is not a git checkout (an export).
  commit=${BENCH_COMMIT:-$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)}
  dirty=""
  if [ -z "${BENCH_COMMIT:-}" ] && ! git -C "$REPO" diff --quiet HEAD -- 2>/dev/null; then dirty="-dirty"; fi
  date=$(date -u +%Y-%m-%d)
  start_backends
  log "backends up (nginx $NGINX_VERSION, pinned to CPU 1); proxies on CPU 0: cutover ($CUTOVER_BIN, --workers 1), nginx $NGINX_VERSION, HAProxy $HAPROXY_VERSION"

  local targets=(cutover nginx haproxy direct) round i proto c
  for round in $(seq 1 "$ROUNDS"); do
    local order=()
    for i in 0 1 2 3; do order+=("${targets[$(( (i + round - 1) % 4 ))]}"); done
    wait_idle
    start_proxies
    log "round $round/$ROUNDS, order: ${order[*]}"
    for proto in h1 h2; do
      for c in $CONNS; do
        group "$round" "$proto" "$c" "${order[@]}"
      done
    done
    if [ "$DO_OHA" = 1 ]; then
      for c in $RATE_CONNS; do
        group "$round" rate "$c" "${order[@]}"
      done
    fi
    for i in "${order[@]}"; do
      [ "$i" = direct ] || flip_test "$round" "$i"
    done
    stop_proxies
  done

  {
    echo "# cutover load benchmark, $date, commit $commit$dirty"
    echo
    echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r), $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo)"
    echo "- peers: nginx $NGINX_VERSION, HAProxy $HAPROXY_VERSION; load: $(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}'), h2load $(h2load --version 2>&1 | awk 'NR == 1 {print $NF}')$([ "$DO_OHA" = 1 ] && echo ", $("$OHA" --version | awk 'NR == 1')")"
    echo "- mode: $([ "$QUICK" = 1 ] && echo quick || echo full), $ROUNDS round(s), ${WARM} s warm-up + ${DUR} s measured per point, target order rotated each round; proxy under test alone on CPU 0 (one worker each), load generator and two nginx backends on CPU 1; upstream HTTP/1.1 keep-alive, 50/50 split"
    echo "- values: medians over rounds; ratios: median of per-round ratios (req/s: higher is better; latency, CPU, RSS: lower is better); h2c uses one stream per connection; 'fixed' rows: oha at $RATE req/s over $(echo $RATE_CONNS | sed 's/ / or /') connections, latency-corrected (the latency figure: every target sustains that rate)"
    echo "- groups repeated because other processes used the CPU: $REPEATS; seconds spent waiting for an idle machine: $IDLE_WAITS"
  } >"$WORK/header.md"
  mkdir -p "$REPO/benches/results"
  local result="$REPO/benches/results/$date-$commit$dirty$([ "$QUICK" = 1 ] && echo -quick).md"
  python3 "$WORK/parse.py" report "$WORK/points.tsv" "$WORK/flips.tsv" "$WORK/header.md" "$result" "$RATE"
  cp "$WORK/points.tsv" "${result%.md}.points.tsv"
  log "written: $result"
}

main
