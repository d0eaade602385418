# Namespaces: no network but a loopback of its own, its own host name, and a pid namespace
# whose whole tree ends with the program (here, a daemon that ignores SIGTERM); umask 077.
hardexec run --net none --hostname sandbox --pid-ns --umask 077 -- sh -c '
    echo "pid $$ on $(hostname), umask $(umask)"
    ip -o link | cut -d" " -f2
    setsid sh -c "trap \"\" TERM; sleep 317" &
    exit 3'
echo "exit status $?"
pgrep -f "sleep 317" || echo "nothing left running"
