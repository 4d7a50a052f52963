# shellcheck shell=bash
# Installing Debian packages, the one place that runs apt-get (sourced by
# scripts/ensure-tools.sh, scripts/pg.sh and scripts/docker-engine.sh).
#
#   debian_install PACKAGE...   apt-get install --no-install-recommends PACKAGE...;
#                               returns 1 (with a message naming the packages) when not
#                               root or apt-get is missing, or when apt-get fails.
#
# The callers decide whether installing is allowed (PostgreSQL only under CI=true, say);
# this only does it. Concurrent callers (parallel test processes) are serialised with a
# lock, and the package lists are refreshed only when the install fails without them.

debian_install() {
    local what="$*"
    if [[ "$(id -u)" != 0 ]]; then
        printf 'debian: installing Debian %s needs root (apt-get install %s)\n' "$what" "$what" >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        printf 'debian: apt-get not found: install %s with your system'"'"'s package manager\n' "$what" >&2
        return 1
    fi
    printf 'debian: apt-get install %s\n' "$what" >&2
    (
        # One apt-get at a time: dpkg's own lock fails a second caller instead of waiting.
        if command -v flock >/dev/null 2>&1 && [[ -d /var/lock && -w /var/lock ]]; then
            exec 9>/var/lock/tasks-apt.lock
            flock -w 900 9 || printf 'debian: waited 900s for another apt-get; trying anyway\n' >&2
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends "$@" >&2 2>/dev/null && exit 0
        apt-get update -qq >&2 || { printf 'debian: apt-get update failed\n' >&2; exit 1; }
        apt-get install -y -qq --no-install-recommends "$@" >&2 \
            || { printf 'debian: apt-get install %s failed\n' "$what" >&2; exit 1; }
    )
}
