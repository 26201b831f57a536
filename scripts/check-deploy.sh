#!/usr/bin/env bash
# Checks the deployment files as far as this machine allows; says why a check is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# The unit: systemd's own verifier, with the binary it names stubbed where it is missing.
if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  cp deploy/cypherwire.service "$tmp/"
  sed -i "s|/usr/local/bin/cypherwire|$(command -v true)|" "$tmp/cypherwire.service"
  systemd-analyze verify "$tmp/cypherwire.service"
  echo "systemd unit: verified"
else
  echo "systemd unit: skipped (systemd-analyze is not installed here)"
fi
# What systemd-analyze cannot say: the unit runs as its own user with the file limit raised.
grep -q '^User=cypherwire$' deploy/cypherwire.service
grep -q '^LimitNOFILE=' deploy/cypherwire.service
grep -q '^NoNewPrivileges=yes$' deploy/cypherwire.service
echo "systemd unit: runs as cypherwire, LimitNOFILE set, no new privileges"

# The image: built where a daemon answers.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  docker build -q -f deploy/Dockerfile -t cypherwire-ci-check . >/dev/null
  user=$(docker image inspect -f '{{.Config.User}}' cypherwire-ci-check)
  [ "$user" != "" ] && [ "$user" != "root" ] && [ "$user" != "0" ]
  echo "Dockerfile: built, runs as $user"
else
  echo "Dockerfile: build skipped (no Docker daemon here)"
fi
# Without a daemon: the runtime stage must drop root.
awk '/^FROM /{stage++} stage==2 && /^USER /{found=1} END{exit !found}' deploy/Dockerfile
echo "Dockerfile: the runtime stage sets a non-root USER"
