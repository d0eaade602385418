# A fleet on one machine: a Redis server (broker and result backend), a worker with a ceiling,
# and tasks sent to it from the shell and from Python. On many machines, only the URL changes.
set -e
dir=$(mktemp -d)
redis-server --port 0 --unixsocket "$dir/redis.sock" --save '' --appendonly no --dir "$dir" >/dev/null &
redis=$!
broker="redis+socket://$dir/redis.sock"
cat > "$dir/worker.toml" <<'POLICY'
version = 1

[security]                      # the most any task gets
drop_all_caps = true
keep_caps = ["NET_BIND_SERVICE"]
no_new_privs = true
user = "nobody"                 # never uid 0: it owns too much even without a capability

[run]
env_policy = "clear"            # the worker's environment never reaches a task
timeout = 60
max_output = 65536              # bytes of each stream a result keeps
POLICY
hardexec worker --broker "$broker" --ceiling "$dir/worker.toml" --concurrency 2 &
worker=$!
# At the end, whatever happened: the worker first (it finishes its tasks), then Redis.
trap 'set +e; kill $worker; wait $worker; kill $redis; wait $redis; rm -rf "$dir"' EXIT
trap 'exit 130' INT TERM

# A task says nothing: it gets the ceiling. Its output and exit status come back.
hardexec submit --broker "$broker" -- sh -c 'grep -E "^(CapEff|NoNewPrivs)" /proc/self/status; exit 3' ||
    echo "exit status $?"
# A task may narrow the ceiling (no capability at all)...
hardexec submit --broker "$broker" --drop-all-caps -- sh -c 'id -un; grep CapEff /proc/self/status'
# ... but not widen it: refused by the worker, never run.
hardexec submit --broker "$broker" --drop-all-caps --keep-cap SYS_ADMIN -- true || echo "refused (exit $?)"

# The same from Python: a TaskSpec and a Policy in, the runner's Result out.
python3 - "$broker" <<'PY'
import sys
from hardexec import Policy, RlimitConfig
from hardexec.celery import submit
from hardexec.runner import TaskSpec

spec = TaskSpec.command(["sh", "-c", "ulimit -n; echo to stderr >&2"])
result = submit(spec, Policy(rlimits=RlimitConfig(max_open_files=64)), broker=sys.argv[1]).get(timeout=60)
print(result.describe())
print("stdout:", result.stdout.strip(), "| stderr:", result.stderr.strip(), "| usage from", result.usage.source)
PY
