# Resume to useful work (`cargo xtask bench resume-work`): fills virmo.work_mib=N MiB of tmpfs,
# prints VIRMO-WORK-READY=N, then, for every line read on the console, reads the whole file again
# (every page of it touched) and prints VIRMO-WORK-DONE=<count>.
. /scenarios/lib.sh
n=$(arg virmo.work_mib)
mount -o remount,size=95% /tmp
yes virmo-work | head -c $((n * 1024 * 1024)) > /tmp/work
echo "VIRMO-WORK-READY=$n"
i=0
while read -r _; do
    dd if=/tmp/work of=/dev/null bs=1M 2>/dev/null
    i=$((i + 1))
    echo "VIRMO-WORK-DONE=$i"
done
