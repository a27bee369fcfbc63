#!/usr/bin/env bash
# Make sure PostgreSQL server binaries (initdb, pg_ctl) and client tools exist.
# Installs Debian's postgresql package when they are missing and we are root.
set -euo pipefail
have_server() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  return 1
}
if have_server && command -v pg_dump >/dev/null && command -v psql >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries (initdb, pg_ctl) not found and not root: install the 'postgresql' package, then retry." >&2
  exit 1
fi
echo "Installing PostgreSQL with apt (initdb/pg_ctl not found)..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql openssh-client tmux >/dev/null
have_server || { echo "apt installed postgresql but initdb is still missing" >&2; exit 1; }
