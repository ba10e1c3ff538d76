#!/usr/bin/env bash
# Installs the Debian packages the tests drive (nginx, haproxy, chromium,
# slowhttptest, openssl, curl, wrk, systemd-analyze, bubblewrap, redis-server)
# when they are missing.
# As root with apt-get it installs them; otherwise it names what is missing
# (the tests that need a tool then fail and say so). Exit 1 if an install
# was attempted and failed.
set -uo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have nginx || need+=(nginx)
have haproxy || need+=(haproxy)
have chromium || need+=(chromium)
have slowhttptest || need+=(slowhttptest)
have openssl || need+=(openssl)
have curl || need+=(curl)
have wrk || need+=(wrk)
have systemd-analyze || need+=(systemd)
have bwrap || need+=(bubblewrap)
have redis-server || need+=(redis-server)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "test tools missing (install them, e.g. apt-get install ${need[*]}): the tests that use them will fail" >&2
  exit 0
fi
echo "installing test tools: ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null || {
  echo "could not install: ${need[*]}" >&2
  exit 1
}
