# A policy as a Kubernetes Pod, from the options `hardexec run` takes. What a pod cannot say
# is one line on stderr each; --strict refuses the export when there is any.
set -e
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
hardexec export k8s --profile service --user nobody --memory 256M --cpus 0.5 --timeout 1h \
    --image python:3.12-slim --seccomp-out "$dir/web.json" -- python3 -m http.server 80 \
    > "$dir/web.yaml"
grep -v '^#' "$dir/web.yaml"
python3 -c 'import json, sys
p = json.load(open(sys.argv[1]))
print(p["defaultAction"], *[r["action"] for r in p["syscalls"] if "ptrace" in r["names"]])' "$dir/web.json"
hardexec export k8s --kind job --drop-all-caps --no-new-privs --timeout 10m --image busybox \
    -- /bin/backup | grep -E '^(kind|  backoffLimit|  activeDeadlineSeconds):'
hardexec export k8s --strict --drop-all-caps --nofile 64 --image busybox -- true \
    || echo "refused (exit $?)"
