# A policy written once, in a file: TOML (or JSON), the same keys as hardexec.Policy, and a
# [run] table for the run's environment, time and output. Options on the command line win.
set -e
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/web.toml" <<'POLICY'
version = 1

[security]
drop_all_caps = true
keep_caps = ["NET_BIND_SERVICE"]
no_new_privs = true
user = "nobody"

[rlimits]
max_open_files = 256
disable_core_dumps = true

[run]
env_policy = "clear"            # nothing of hardexec's environment but a default PATH
env = { GREETING = "hello" }
POLICY
hardexec run --policy "$dir/web.toml" -- sh -c 'grep CapEff /proc/self/status; id -un; echo "$GREETING"'
hardexec run --policy "$dir/web.toml" --nofile 64 -- sh -c 'ulimit -n'
# A mistake names the file, the key and the value, and nothing runs:
sed -i 's/NET_BIND_SERVICE/NET_BIND/' "$dir/web.toml"
hardexec run --policy "$dir/web.toml" -- true || echo "refused (exit $?)"
