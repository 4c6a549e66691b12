#!/usr/bin/env bash
# Run the kernel's checkpatch.pl --strict on patches/: every ERROR, WARNING or
# CHECK fails (the series is kept clean of all three).
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ -e "$KSRC/scripts/checkpatch.pl" ] || { log "no kernel source in $KSRC: run make kernel"; exit 1; }
bad=0
while read -r p; do
	res=$(perl "$KSRC/scripts/checkpatch.pl" --strict --no-tree --terse --show-types \
		--ignore FILE_PATH_CHANGES "$top/patches/$p" || true)
	if grep -qE ': (ERROR|WARNING|CHECK):' <<<"$res"; then
		echo "$res"
		log "$p: checkpatch --strict findings"
		bad=1
	else
		log "$p: clean"
	fi
done <"$top/patches/series"
[ "$bad" = 0 ] || { log "checkpatch --strict failed"; exit 1; }
