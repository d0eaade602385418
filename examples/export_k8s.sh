# A policy as a Kubernetes Pod, from the options `hardexec run` takes (profiles and policy
# files too): capabilities, allowPrivilegeEscalation, the numeric user, memory and CPU limits,
# the deadline, and the syscall filter as a seccomp profile for the nodes. What a pod cannot
# say is one line on stderr each; --strict refuses the export when there is any.
set -e
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
hardexec export k8s --profile service --user nobody --memory 256M --cpus 0.5 --timeout 1h \
    --image python:3.12-slim --seccomp-out "$dir/web.json" -- python3 -m http.server 80 \
    > "$dir/web.yaml"
grep -v '^#' "$dir/web.yaml"
python3 -c '
import json, sys
p = json.load(open(sys.argv[1]))
print(p["defaultAction"], *p["architectures"])
for rule in p["syscalls"][:2]:
    print(rule["action"], rule.get("errnoRet"), len(rule["names"]), "calls:", *rule["names"][:4])
' "$dir/web.json"
# A Job of one try, and a refusal: RLIMIT_NOFILE has no place in a pod.
hardexec export k8s --kind job --drop-all-caps --no-new-privs --timeout 10m --image busybox \
    -- /bin/backup | grep -E '^(kind|  backoffLimit|  activeDeadlineSeconds):'
hardexec export k8s --strict --drop-all-caps --nofile 64 --image busybox -- true \
    || echo "refused (exit $?)"
