# A timeout that ends the program's whole tree: SIGTERM, then SIGKILL after --kill-after;
# exit status 124, as timeout(1) gives.
hardexec run --timeout 1s --kill-after 1s -- sh -c 'trap "" TERM; sleep 60'
echo "exit status $?"

# A chosen environment and working directory: only HOME is kept, FOO is set, PATH is given
# (sh itself adds PWD).
hardexec run --env-clear --env-keep HOME --env FOO=bar --cwd /tmp -- sh -c 'env | sort; pwd'

# Output passed through up to a cap, byte for byte (the rest counted and dropped), and the
# run's result as JSON.
result=$(mktemp -d)/result.json
hardexec run --max-output 13 --json-result "$result" -- printf 'hello, world\nand more\n'
grep -E '"(exit_code|stdout_bytes)"' "$result"
rm -r "$(dirname "$result")"
