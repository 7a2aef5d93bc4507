# The guest side of `cargo xtask bench io`. Disk: virmo.runs times, writes then reads
# virmo.mib MiB of the disk with serial "bench" in 1 MiB direct-I/O blocks, printing
# VIRMO-IO-DISK=RUN T0 T1 T2 (/proc/uptime seconds before the write, between, after the read).
# Network: configures eth0 with virmo.ip, waits for virmo.peer to answer a ping, then virmo.runs
# times sends virmo.net_mib MiB of zeroes to virmo.peer port 5001 with nc (VIRMO-IO-NET=RUN after
# each). Ends with VIRMO-IO-DONE and stays up.
. /scenarios/lib.sh
now() { cut -d' ' -f1 /proc/uptime; }
runs=$(arg virmo.runs)
mib=$(arg virmo.mib)
net_mib=$(arg virmo.net_mib)
dev=$(disk_by_serial bench) || { echo "VIRMO-DISK-MISSING"; return; }
i=0
while [ "$i" -lt "$runs" ]; do
    t0=$(now)
    dd if=/dev/zero of="$dev" bs=1M count="$mib" oflag=direct 2>/dev/null || echo "VIRMO-IO-ERROR=write $i"
    t1=$(now)
    dd if="$dev" of=/dev/null bs=1M count="$mib" iflag=direct 2>/dev/null || echo "VIRMO-IO-ERROR=read $i"
    t2=$(now)
    echo "VIRMO-IO-DISK=$i $t0 $t1 $t2"
    i=$((i + 1))
done
ip link set eth0 up
ip addr add "$(arg virmo.ip)" dev eth0
peer=$(arg virmo.peer)
tries=0
until ping -c 1 -W 1 "$peer" >/dev/null 2>&1; do
    tries=$((tries + 1))
    [ "$tries" -gt 60 ] && { echo "VIRMO-IO-ERROR=no-peer"; break; }
done
i=0
while [ "$i" -lt "$runs" ]; do
    dd if=/dev/zero bs=64k count=$((net_mib * 16)) 2>/dev/null | nc "$peer" 5001
    echo "VIRMO-IO-NET=$i"
    i=$((i + 1))
    sleep 1
done
echo "VIRMO-IO-DONE"
while true; do sleep 3600; done
