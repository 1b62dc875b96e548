#!/usr/bin/env bash
# The documentation the `large` local web is built from (ml/sources/localweb.py, LocalWebConfig preset
# "large"): manuals in HTML (Python, PostgreSQL, Linux, Django, Git, SQLAlchemy, perl's pod), the Debian
# handbook, reference, FAQ, policy, developers' reference and maintainers' guide in their translations,
# LibreOffice's and GIMP's help in every language Debian 12 ships, and GNOME's Mallard help (43 languages).
# 115 packages, 3.4 GiB installed (3.8 GiB with what they depend on: LibreOffice l10n packages, yelp), measured on
# Debian 12 (2026-12-05): LibreOffice help 1.1 GiB on disk, GIMP help 1.9 GiB (mostly images), /usr/share/help 134 MiB.
# Not part of `make install`: CI and `make run` (tiny) never download it. Run `make install-large-web`.
# Installs only what is missing. A doc package that follows a package already installed here (python3.11,
# perl, postgresql-15, the kernel headers) is pinned to that package's version when the mirror has it, so
# installing documentation never upgrades a running interpreter or database server.
set -euo pipefail
langs_lo="ca cs da de dz el en-gb en-us es et eu fi fr gl hi hu id it ja km ko nl om pl pt pt-br ru sk sl sv tr vi zh-cn zh-tw"
langs_gimp="ca cs da de el en en-gb es fa fi fr hr hu it ja ko lt nl nn pt pt-br ro ru sl sv uk zh-cn"
langs_ref="de en es fr id it ja pt pt-br zh-cn zh-tw"
pkgs=(python3.11-doc postgresql-doc-15 perl-doc linux-doc-6.1 python-django-doc git-doc python-sqlalchemy-doc
  debian-handbook debian-policy debmake-doc harden-doc installation-guide-amd64 gnome-user-docs gnome-devel-docs
  libreoffice-help-common gimp-help-common debian-faq developers-reference maint-guide)
for l in $langs_lo; do pkgs+=("libreoffice-help-$l"); done
for l in $langs_gimp; do pkgs+=("gimp-help-$l"); done
for l in $langs_ref; do pkgs+=("debian-reference-$l"); done
for l in de fr it ja ko nl pt ru zh-cn; do pkgs+=("debian-faq-$l"); done
for l in de fr it ja ru; do pkgs+=("developers-reference-$l"); done
for l in ca de es fr it ja ru vi zh-cn zh-tw; do pkgs+=("maint-guide-$l"); done

missing=()
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
# doc package -> the installed package whose version it keeps
declare -A follows=([python3.11-doc]=python3.11 [perl-doc]=perl [postgresql-doc-15]=postgresql-15
  [linux-doc-6.1]=linux-libc-dev)
need=()
for pkg in "${missing[@]}"; do
  base="${follows[$pkg]:-}"
  version=""
  [ -z "$base" ] || version=$(dpkg-query -W -f='${Version}' "$base" 2>/dev/null || true)
  if [ -n "$version" ] && apt-cache madison "$pkg" | awk -F'|' '{gsub(/ /, "", $2); print $2}' | grep -qxF "$version"; then
    need+=("$pkg=$version")
  else
    need+=("$pkg")
  fi
done
echo "installing ${#need[@]} documentation packages for the large local web: ${need[*]}"
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
