#!/usr/bin/env bash
# Debian packages the project needs: groff (renders man pages for the local web), redis-server (shared
# MinHash LSH index), translated man pages, and documentation with real mathematics for the local web
# (maxima, octave, R and sympy manuals in HTML, PARI/GP's manual in TeX), and bubblewrap (the sandbox that
# runs model-written code in post-training, ml/posttrain/sandbox.py); for the operations tests (tests/ops)
# PostgreSQL (Dagster storage and an MLflow tracking server on it) and Chromium (the UIs in a real browser,
# driven by Playwright through executable_path: no browser download) with a font for legible screenshots.
# Installs only what is missing, so a machine that has them pays nothing.
set -euo pipefail
need=()
command -v groff >/dev/null 2>&1 || need+=(groff)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -d /usr/share/man/de ] || need+=(manpages-de)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
for pkg in maxima-doc octave-doc r-doc-html pari-doc python-sympy-doc; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing Debian packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
