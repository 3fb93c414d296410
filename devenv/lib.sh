# Shared by devenv/up, devenv/down and devenv/test. Source it; do not run it.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${FAKESTOR_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

if [ "$(id -u)" -eq 0 ]; then
    DATA_DIR=${FAKESTOR_DATA_DIR:-/var/lib/fakestor}
else
    DATA_DIR=${FAKESTOR_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/fakestor}
fi
LISTEN=${FAKESTOR_LISTEN:-127.0.0.1:8773}
ENDPOINT=http://$LISTEN
REGION=us-east-1
# What a shell sources to reach this stack: the aws CLI's and boto3's settings, PATH, DOCKER_HOST.
ENV_FILE=$DATA_DIR/env
# The paths a dockerd started by devenv/up created (devenv/down removes them with it).
DOCKERD_CREATED=$DATA_DIR/dockerd.created

if [ -n "${FAKESTOR_DOCKERD_ROOT:-}" ]; then
    FAKESTOR_DOCKERD_ROOT=$(realpath -m "$FAKESTOR_DOCKERD_ROOT")
    export DOCKER_HOST=${DOCKER_HOST:-unix://$FAKESTOR_DOCKERD_ROOT/docker.sock}
fi

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'fakestor devenv: %s\n' "$*" >&2; exit 1; }

# install_system_packages PACKAGE...: apt-get install the ones not installed yet.
install_system_packages() {
    command -v dpkg-query >/dev/null || return 0
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
        log "missing system packages: ${missing[*]} (install them as root; continuing)"
        return 0
    fi
    log "installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

# make_venv [EXTRAS]: the project's Python environment, reinstalled when pyproject changes.
make_venv() {
    local extras=${1:-}
    local stamp="$VENV/.fakestor-installed${extras:+-$extras}"
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating Python environment in $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        log "installing fakestor${extras:+ with [$extras]}"
        local pip_log="$VENV/pip.log"
        if ! { "$VENV/bin/python" -m pip install --upgrade pip \
                && "$VENV/bin/python" -m pip install -e "$ROOT${extras:+[$extras]}"; } \
                >"$pip_log" 2>&1; then
            tail -n 30 "$pip_log" >&2
            die "pip install failed; the whole log is in $pip_log"
        fi
        touch "$stamp"
    fi
}

# start_daemon LOG PID_FILE COMMAND...: COMMAND in the background, its output appended to LOG,
# its pid in PID_FILE. It keeps none of this shell's other open files: a lock that the caller
# of devenv/up holds (flock LOCK devenv/up) must not stay held by the daemons it leaves.
start_daemon() {
    local log=$1 pid_file=$2 fd_path fd
    shift 2
    (
        for fd_path in /proc/"$BASHPID"/fd/*; do
            fd=${fd_path##*/}
            if [ "$fd" -gt 2 ]; then { exec {fd}>&-; } 2>/dev/null || true; fi
        done
        exec nohup "$@" </dev/null >>"$log" 2>&1
    ) &
    echo $! >"$pid_file"
}

# The docker CLI that matches Debian's dockerd, when both are installed.
DOCKER_CLI=docker
[ -x /usr/bin/docker ] && DOCKER_CLI=/usr/bin/docker
docker() {
    command "$DOCKER_CLI" "$@"
}
