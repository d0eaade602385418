# A memory ceiling for the program and everything it starts (cgroup v2 memory.max).
# Where the memory controller is available, the OOM killer ends the program: exit status 137
# and "hardexec: killed by the OOM killer (memory.max=64M)". Where it is not, hardexec refuses
# to run the program without its ceiling: exit status 125 and one line saying why.
hardexec run --memory 64M -- python3 -c "b = bytearray(10**9)"
echo "exit status $?"
