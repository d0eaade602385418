# learn: run a program once under observation (every syscall of it, its threads and children),
# then write the narrowest policy that let it run: an allow-list of those syscalls, and no
# network namespace only if it used the network. `run --policy` of that file runs it the same
# way; a syscall it did not make is refused, and reported.
set -e
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
tool='import os, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
open(sys.argv[1] + "/out.txt", "w").write("done\n")
if "--fork" in sys.argv:
    os.waitpid(os.fork(), 0)
print("tool: ok")'
hardexec learn -o "$dir/tool.toml" -- python3 -S -c "$tool" "$dir"
hardexec run --policy "$dir/tool.toml" -- python3 -S -c "$tool" "$dir"
hardexec run --policy "$dir/tool.toml" -- python3 -S -c "$tool" "$dir" --fork 2>&1 | tail -n 2
