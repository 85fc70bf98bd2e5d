#!/usr/bin/env bash
# Installs the Debian packages scan_pipeline needs, when they are missing. Idempotent: with
# everything present it only checks (a second run takes well under a second).
#   usage: scripts/install_system_deps.sh [--with-libreoffice]
set -euo pipefail

packages=(
  tesseract-ocr tesseract-ocr-fra   # OCR engine and its French model
  poppler-utils                     # pdftoppm / pdfinfo for PDFs
  fonts-dejavu-core                 # the printed sheet's font
  # handwriting fonts for the sample generator
  fonts-dkg-handwriting fonts-breip fonts-humor-sans fonts-rufscript fonts-comic-neue fonts-dancingscript
  python3-venv
  chromium                          # the tests render `process --report` in headless Chromium
  libreoffice-calc-nogui fonts-crosextra-carlito  # the review tests open the workbook in LibreOffice (Carlito: Calibri's widths)
)
if [[ "${1:-}" == "--with-libreoffice" ]]; then
  packages+=(libreoffice-calc-nogui)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}" >&2
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
  command -v sudo >/dev/null || { echo "run as root: apt-get install ${missing[*]}" >&2; exit 5; }
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
