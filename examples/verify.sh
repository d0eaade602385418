# --verify: hardexec stops the program at its exec, before its first instruction, reads what it
# holds, and lets it run only if that is within the policy; otherwise it kills it (exit 125).
set -e
hardexec run --verify --drop-all-caps --user nobody -- sh -c 'echo "verified: $(id -un)"'
# A program that regains a capability at exec: a copy of sh given a file capability, run by a
# launcher without CAP_SETPCAP (which cannot empty the bounding set; a warning says so).
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
cp /bin/dash "$dir/sh"
setcap cap_net_raw+ep "$dir/sh"
# Without --verify it runs, holding NET_RAW (read by the shell itself: grep would be another exec).
capsh --drop=cap_setpcap -- -c "hardexec run --drop-all-caps --user nobody -- $dir/sh -c \
    'while read -r line; do case \$line in CapEff*) echo \$line;; esac; done < /proc/self/status'"
capsh --drop=cap_setpcap -- -c "hardexec run --verify --drop-all-caps --user nobody -- $dir/sh -c 'echo never printed'" ||
    echo "refused (exit $?)"
