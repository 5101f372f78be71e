# A server's watchdog (see cleanup.rs), run as
# `sh -c SCRIPT pglog-pg-watchdog PID PG_CTL DATA ROOT SOCKDIR USER RUNUSER`.
# Polls every 200 ms whether the test process PID is still alive (and not a zombie);
# once it is gone, stops the server immediately and removes the directories.
# USER and RUNUSER are empty when the binaries run as the current user.
exec 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
trap '' HUP INT
cd /
pid=$1 pg_ctl=$2 data=$3 root=$4 sock=$5 user=$6 runuser=$7
alive() {
    kill -0 "$pid" 2>/dev/null || return 1
    [ -r "/proc/$pid/status" ] || return 0
    while IFS= read -r line; do
        case $line in
            State:*"Z ("*|State:*"X ("*) return 1 ;;
            State:*) return 0 ;;
        esac
    done < "/proc/$pid/status"
    return 0
}
while alive; do sleep 0.2; done
# A test that froze the server (SIGSTOP) and died before thawing it: resume every process
# first, or the stop below would wait for them forever.
pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
if [ -n "$pm" ]; then
    kill -CONT "$pm" 2>/dev/null
    for stat in /proc/[0-9]*/stat; do
        read -r line < "$stat" 2>/dev/null || continue
        set -- $line
        [ "$4" = "$pm" ] && kill -CONT "$1" 2>/dev/null
    done
fi
if [ -f "$data/postmaster.pid" ]; then
    if [ -n "$user" ]; then
        "$runuser" -u "$user" -- "$pg_ctl" -D "$data" -m immediate -w -t 30 stop
    else
        "$pg_ctl" -D "$data" -m immediate -w -t 30 stop
    fi
fi
rm -rf -- "$root" "$sock"
