#!/bin/sh
# Print one line per entry below $1 (sorted, the root itself left out): path, type, mode,
# owner, group, size (not of directories), modification time, link target, SHA-256 of a regular file's contents,
# and the other paths sharing its inode (hard links), so two trees compare line by line.
set -eu
cd "$1"
find . -mindepth 1 -printf '%i\t%p\t%y\t%m\t%U\t%G\t%s\t%T@\t%l\n' | sort -k2 > /tmp/.manifest.$$
while IFS="$(printf '\t')" read -r inode path type mode uid gid size mtime target; do
    sum=-
    [ "$type" = f ] && sum=$(sha256sum < "$path" | cut -d' ' -f1)
    [ "$type" = d ] && size=-   # a directory's size is its file system's business
    # Hard links: name the entry's inode by the first path that has it.
    first=$(awk -F'\t' -v i="$inode" '$1 == i { print $2; exit }' /tmp/.manifest.$$)
    printf '%s %s %s %s:%s %s %s %s %s inode-of:%s\n' "$path" "$type" "$mode" "$uid" "$gid" \
        "$size" "$mtime" "${target:--}" "$sum" "$first"
done < /tmp/.manifest.$$
rm -f /tmp/.manifest.$$
