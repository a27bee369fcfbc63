#!/usr/bin/env bash
# Make sure the programs the product and its tests run are here: PostgreSQL server
# (initdb, pg_ctl) and client tools, ssh-keygen (drill-log signatures), tmux (the demo's
# end-to-end test), age (encrypted backups: the tests decrypt with the stock tool). Installs the missing Debian packages with apt when run as root.
set -euo pipefail
have_server() {
  command -v initdb >/dev/null 2>&1 && return 0
  command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ] && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
  return 1
}
missing=()
{ have_server && command -v pg_dump >/dev/null && command -v psql >/dev/null; } || missing+=(postgresql)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v tmux >/dev/null || missing+=(tmux)
command -v age >/dev/null || missing+=(age)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing: ${missing[*]} - install these packages (as root: apt-get install -y ${missing[*]}), then retry." >&2
  exit 1
fi
echo "Installing with apt: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
have_server || { echo "apt installed postgresql but initdb is still missing" >&2; exit 1; }
