#!/usr/bin/env bash
# Run the kernel's checkpatch.pl on patches/; errors fail, warnings are printed.
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ -e "$KSRC/scripts/checkpatch.pl" ] || { log "no kernel source in $KSRC: run make kernel"; exit 1; }
while read -r p; do
	res=$(perl "$KSRC/scripts/checkpatch.pl" --no-tree --terse --show-types \
		--ignore FILE_PATH_CHANGES "$top/patches/$p" || true)
	if grep -q ': ERROR:' <<<"$res"; then echo "$res"; log "$p: checkpatch errors"; exit 1; fi
	grep -q ': WARNING:' <<<"$res" && echo "$res"
	log "$p: $(tail -1 <<<"$res")"
done <"$top/patches/series"
