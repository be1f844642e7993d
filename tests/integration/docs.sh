#!/usr/bin/env bash
# docs.sh -- the documents by reader hold together: every relative link
# between README.md, nginx/README.md and tests/README.md names a file that
# exists, every #anchor a heading of its target, and README.md stays short
# enough for a newcomer. Needs no stack: runs on its own too.
set -uo pipefail
. "$(dirname "$0")/../tap.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DOCS=(README.md nginx/README.md tests/README.md)
README_MAX=500
export LC_ALL=C

# links FILE: the target of each [text](target) outside fenced code and
# inline code, one a line; web and mail addresses are not ours to check.
links() {
    awk '/^ *```/ { fence = !fence; next }
        !fence {
            line = $0
            gsub(/`[^`]*`/, "", line)
            while (match(line, /\]\([^) ]+\)/)) {
                print substr(line, RSTART + 2, RLENGTH - 3)
                line = substr(line, RSTART + RLENGTH)
            }
        }' "$1" | grep -vE '^(https?|mailto):'
}

# anchors FILE: the anchor of each heading outside fenced code, as GitHub
# makes it: lower case, punctuation dropped, spaces to '-', and a repeated
# one numbered (-1, -2...).
anchors() {
    awk '/^ *```/ { fence = !fence; next }
        !fence && /^#+ / {
            a = tolower($0)
            sub(/^#+ +/, "", a)
            gsub(/[^a-z0-9 _-]/, "", a)
            gsub(/ /, "-", a)
            n = seen[a]++
            print (n ? a "-" n : a)
        }' "$1"
}

# broken DOC: each link of DOC that does not resolve, with why.
broken() {
    local doc=$1 dir target path anchor file
    dir=$(dirname "$ROOT/$doc")
    while IFS= read -r target; do
        path=${target%%#*}
        anchor=
        [[ $target == *"#"* ]] && anchor=${target#*#}
        if [[ -z $path ]]; then file=$ROOT/$doc; else file=$dir/$path; fi
        if [[ ! -e $file ]]; then
            echo "$target: no file $path"
        elif [[ -n $anchor ]] && ! anchors "$file" | grep -qxF -- "$anchor"; then
            echo "$target: no heading with anchor #$anchor in ${path:-$doc}"
        fi
    done < <(links "$ROOT/$doc")
}

for doc in "${DOCS[@]}"; do
    if [[ ! -f $ROOT/$doc ]]; then
        not_ok "$doc exists"
        continue
    fi
    n=$(links "$ROOT/$doc" | wc -l)
    # A document that links nowhere would pass the next check vacuously,
    # and these three are meant to lead to one another.
    if ((n > 0)); then ok "$doc links to the others ($n relative links)"; else
        not_ok "$doc links to the others" "no relative link found"; fi
    bad=$(broken "$doc")
    if [[ -z $bad ]]; then ok "every relative link and #anchor in $doc resolves"; else
        not_ok "every relative link and #anchor in $doc resolves" "$bad"; fi
done

lines=$(wc -l <"$ROOT/README.md")
if ((lines <= README_MAX)); then ok "README.md is at most $README_MAX lines ($lines)"; else
    not_ok "README.md is at most $README_MAX lines" "it has $lines: move a reader's detail to nginx/README.md or tests/README.md"; fi

echo "1..$T_N"
exit $((T_FAIL > 0))
