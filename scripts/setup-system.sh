#!/usr/bin/env bash
# Installs what takealook's tests and demo need from the system, when missing:
# PostgreSQL server binaries with pg_stat_statements (package postgresql),
# HypoPG (postgresql-<major>-hypopg), Chromium (headless HTML report tests) and
# redis-server (the agent's test of a contrib instrumentation starts a private one) and
# valgrind (bench/agent_parts.py counts instructions with callgrind).
# As root it runs apt-get; otherwise it prints the one command to run.
set -euo pipefail

need=()
initdb=$(ls -1 /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$initdb" ] && ! command -v initdb >/dev/null 2>&1; then
  need+=(postgresql postgresql-contrib)
  major=""
else
  major=$(basename "$(dirname "$(dirname "${initdb:-$(command -v initdb)}")")")
fi
if [ -z "$major" ] && command -v apt-cache >/dev/null 2>&1; then
  # The major version apt would install, e.g. 15 on Debian 12, 16 on Ubuntu 24.04.
  major=$(apt-cache depends postgresql 2>/dev/null | sed -n 's/.*Depends: postgresql-\([0-9][0-9]*\)$/\1/p' | head -n 1)
fi
share="/usr/share/postgresql/${major:-none}/extension"
if [ -n "$major" ] && [ ! -f "$share/pg_stat_statements.control" ]; then need+=(postgresql-contrib); fi
if [ -n "$major" ] && [ ! -f "$share/hypopg.control" ]; then need+=("postgresql-$major-hypopg"); fi
if [ -z "$major" ]; then need+=(postgresql-hypopg-placeholder); fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  need+=(chromium)
fi

if ! command -v redis-server >/dev/null 2>&1 && [ ! -x /usr/bin/redis-server ]; then
  need+=(redis-server)
fi
if ! command -v valgrind >/dev/null 2>&1; then need+=(valgrind); fi

if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "takealook needs system packages: sudo apt-get install -y ${need[*]}" | sed 's/postgresql-hypopg-placeholder/postgresql-<major>-hypopg/'
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
echo "installing ${need[*]} with apt-get" >&2
apt-get update -qq
pkgs=()
for p in "${need[@]}"; do [ "$p" != postgresql-hypopg-placeholder ] && pkgs+=("$p"); done
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
if printf '%s\n' "${need[@]}" | grep -q placeholder; then
  # The server came with this install: now we know its major version.
  initdb=$(ls -1 /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)
  major=$(basename "$(dirname "$(dirname "$initdb")")")
  apt-get install -y -qq --no-install-recommends "postgresql-$major-hypopg" >/dev/null
fi
