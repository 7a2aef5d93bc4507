# Keeps every CPU busy on memory that must stay intact (suspend/resume stress): one worker per CPU,
# pinned to it where taskset exists, fills its own tmpfs buffer with random bytes once, then in a
# loop copies it (fresh writes into guest RAM) and checks the copy's SHA-256 against the original
# sum, printing "VIRMO-STRESS=<cpu> ok|bad <n>". A resumed guest must go on from the next n.
# Between rounds a worker idles for a random 0 to virmo.stress_idle_ms milliseconds, so a suspend
# finds CPUs both running and halted (the state a mostly idle guest is saved in).
kib=$(arg virmo.stress_kib)
kib=${kib:-4096}
idle_ms=$(arg virmo.stress_idle_ms)
idle_ms=${idle_ms:-0}
n=$(nproc)
cpu=0
while [ "$cpu" -lt "$n" ]; do
    (
        [ -x /bin/taskset ] && taskset -p -c "$cpu" $$ >/dev/null 2>&1
        f=/tmp/stress-$cpu
        dd if=/dev/urandom of="$f" bs=1K count="$kib" 2>/dev/null
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        i=0
        while true; do
            cp "$f" "$f.copy"
            if [ "$(sha256sum "$f.copy" | cut -d' ' -f1)" = "$sum" ]; then
                echo "VIRMO-STRESS=$cpu ok $i"
            else
                echo "VIRMO-STRESS=$cpu bad $i"
            fi
            i=$((i + 1))
            [ "$idle_ms" -gt 0 ] && usleep $(( (RANDOM % idle_ms) * 1000 ))
        done
    ) &
    cpu=$((cpu + 1))
done
echo "VIRMO-STRESS-WORKERS=$n"
wait
