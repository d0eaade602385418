# Landlock: the program may read one directory and nothing else on the filesystem. cat's own
# loader and libraries are allowed automatically; /etc/passwd is refused.
set -e
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
echo "hello from the data directory" > "$data/note.txt"
hardexec run --fs-ro "$data" -- cat "$data/note.txt"
hardexec run --fs-ro "$data" -- cat /etc/passwd || echo "cat /etc/passwd was refused (exit $?)"
