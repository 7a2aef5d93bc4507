# Prints an increasing counter every 100 ms, forever (pause/resume and suspend/resume tests).
i=0
while true; do
    echo "VIRMO-COUNTER=$i"
    i=$((i + 1))
    usleep 100000
done
