#!/usr/bin/env bash
# Find tool-chain drift on purpose (not in CI): install the NEWEST versions of everything the lock pins
# (torch stays 2.13.0, the CPU wheel) into a second venv, run the conversion-agreement tests there and
# append the outcome, the CPU and every version that differs from requirements/lock.txt to
# requirements/HISTORY.md. A green run is the cue to refresh the lock (see its header); a red one names
# the package to investigate before anyone upgrades.
#
#   scripts/drift.sh [VENV]        default .venv-drift (rebuilt from scratch each time)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-drift}
rm -rf -- "$VENV"
VENV=$VENV EDGE_RUNTIME_UNLOCKED=1 bash scripts/setup.sh
LOG=$(mktemp)
set +e
"$VENV/bin/python" -m pytest -q tests/test_conversion_agreement.py 2>&1 | tee "$LOG"
status=${PIPESTATUS[0]}
set -e
changed=$("$VENV/bin/pip" freeze --exclude-editable | sort | comm -13 <(grep '==' requirements/lock.txt | sort) - |
          paste -sd ' ' -)
{
  echo
  echo "## $(date -u +%Y-%m-%d) drift run: $([ "$status" = 0 ] && echo passed || echo FAILED)"
  echo "- $("$VENV/bin/edge-runtime" targets --detect 2>/dev/null | head -2 | paste -sd ';' | sed 's/;/; /')"
  echo "- newer than the lock: ${changed:-nothing}"
  echo "- tests/test_conversion_agreement.py: $(tail -1 "$LOG")"
} >> requirements/HISTORY.md
rm -f "$LOG"
echo "drift: outcome appended to requirements/HISTORY.md"
exit "$status"
