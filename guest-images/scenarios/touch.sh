# Touches guest memory: fills virmo.touch_mib=N MiB (or "all": nearly all free memory) of tmpfs with
# non-zero bytes, prints VIRMO-TOUCHED=<MiB>, then a counter every 200 ms (snapshot benchmarks).
. /scenarios/lib.sh
n=$(arg virmo.touch_mib)
if [ "$n" = "all" ]; then
    avail=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo)
    n=$((avail / 1024 - 24))
fi
mount -o remount,size=95% /tmp
yes virmo-touched-memory | head -c $((n * 1024 * 1024)) > /tmp/fill
echo "VIRMO-TOUCHED=$n"
i=0
while true; do
    echo "VIRMO-COUNTER=$i"
    i=$((i + 1))
    usleep 200000
done
