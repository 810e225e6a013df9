#!/usr/bin/env bash
# System packages some tests need: headless Chromium (the trajectory-viewer test). Installed when missing and
# when this user may use apt; otherwise the test that needs it says it was skipped and why.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the viewer test (apt-get)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "could not install chromium; the viewer test will be skipped"
fi
exit 0
