# What a run would give a program, without running anything: each capability set, hardexec's
# own and the program's after exec, the ids, limits, cgroup and confinement, the warnings the
# run would print, and an exposure score (0 fully confined ... 10 unconfined root) from a table
# of weighted checks. It takes the options of `hardexec run`, profiles and policy files too.
hardexec explain --profile service --user nobody --nofile 1024 -- python3 -m http.server 80
# For scripts, one JSON document (schema version 1): here, the score of each profile for root.
for profile in none strict service; do
    hardexec explain --json --profile "$profile" -- true | python3 -c '
import json, sys
e = json.load(sys.stdin)
print(sys.argv[1], e["score"], e["level"])' "$profile"
done
