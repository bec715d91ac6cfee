#!/bin/sh
# PostgreSQL archive_command for trading-ops:
#
#   archive_command = '/path/to/archive_wal.sh /var/lib/postgresql/wal-archive %p %f'
#
# Copies the WAL file %p into the archive directory as %f, durably and without ever replacing a different file:
# - the copy goes to a temporary name, is fsynced, then linked to its final name (a link never overwrites);
# - if %f is already archived with identical content (a retry after a crash) that is success; with different
#   content it is an error: two clusters write to one archive, or the archive holds another timeline's history;
# - the directory is fsynced, so the new name survives a power loss before PostgreSQL recycles the segment.
# Exit 0 only when the file is safely archived; 1 otherwise (PostgreSQL retries; a status above 125 would
# restart its archiver instead).
set -u

if [ "$#" -ne 3 ]; then
    echo "usage: archive_wal.sh ARCHIVE_DIR %p %f" >&2
    exit 1
fi
archive_dir=$1
source_path=$2
file_name=$3
target="$archive_dir/$file_name"

if [ -e "$target" ]; then
    if cmp -s "$source_path" "$target"; then
        exit 0
    fi
    echo "archive_wal: $target already exists with different content; refusing to overwrite it" >&2
    exit 1
fi

temporary="$archive_dir/.$file_name.tmp.$$"
trap 'rm -f "$temporary"' EXIT
cp "$source_path" "$temporary" || exit 1
# Readable by the archive's group (the backup workers), never by everyone: WAL holds every row written.
chmod 0640 "$temporary" || exit 1
sync "$temporary" || exit 1
if ! ln "$temporary" "$target" 2>/dev/null; then
    # Lost a race with another archiver for the same name: fine only if it archived the same bytes.
    if cmp -s "$source_path" "$target"; then
        exit 0
    fi
    echo "archive_wal: could not create $target" >&2
    exit 1
fi
sync "$archive_dir" || exit 1
exit 0
