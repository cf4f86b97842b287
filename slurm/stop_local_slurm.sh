#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by slurm/start_local_slurm.sh: slurmd, slurmctld, and munged when
# that script started it. Saved state (queued jobs) stays in $EAD_SLURM_DIR; add --purge to delete the directory
# too, so the next start is from scratch.
#
# Usage:   sudo bash slurm/stop_local_slurm.sh [--purge]
# Env:     EAD_SLURM_DIR (default /tmp/ead-slurm), as for the start script.
set -euo pipefail

DIR=${EAD_SLURM_DIR:-/tmp/ead-slurm}
PURGE=0
for arg in "$@"; do
  case "$arg" in
    --purge) PURGE=1 ;;
    -h | --help)
      sed -n '2,8p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $arg (see --help)" >&2
      exit 2
      ;;
  esac
done
export PATH=$PATH:/usr/sbin:/sbin

log() { printf '\033[1m[local-slurm]\033[0m %s\n' "$*"; }

# True while pid is a live (not zombie) process called name; a reused pid or a zombie does not count.
alive() {
  local stat
  [ -n "$2" ] && [ "$(cat "/proc/$2/comm" 2>/dev/null)" = "$1" ] || return 1
  stat=$(sed 's/^.*) //' "/proc/$2/stat" 2>/dev/null) || return 1
  [ "${stat:0:1}" != Z ]
}

# Stop the daemon named by a pid file: SIGTERM, wait up to 15 s, then SIGKILL.
stop_pid_file() {
  local name=$1 pidfile=$2 pid
  if [ ! -f "$pidfile" ]; then
    log "$name: not running (no pid file)"
    return 0
  fi
  pid=$(cat "$pidfile")
  if ! alive "$name" "$pid"; then
    log "$name: not running (stale pid file, pid $pid)"
    rm -f "$pidfile"
    return 0
  fi
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do
    alive "$name" "$pid" || break
    sleep 0.5
  done
  if alive "$name" "$pid"; then
    log "$name did not exit after 15 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

[ -d "$DIR" ] || log "$DIR does not exist; nothing was started there"
stop_pid_file slurmd "$DIR/run/slurmd.pid"
stop_pid_file slurmctld "$DIR/run/slurmctld.pid"
if [ -f "$DIR/run/munged.started-by-ead" ]; then
  stop_pid_file munged /run/munge/munged.pid
  rm -f "$DIR/run/munged.started-by-ead"
else
  log "munged: left alone (not started by start_local_slurm.sh, or already stopped)"
fi
if [ $PURGE -eq 1 ] && [ -d "$DIR" ]; then
  log "removing $DIR"
  rm -rf "$DIR"
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$DIR/etc/slurm.conf" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
fi
log "stopped"
