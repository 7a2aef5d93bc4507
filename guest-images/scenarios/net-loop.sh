# Configures eth0 with virmo.ip=ADDR/PREFIX and pings virmo.peer=ADDR once a second:
# VIRMO-PING=ok|fail N RX, RX being the packets eth0 has received so far.
. /scenarios/lib.sh
ip link set eth0 up
ip addr add "$(arg virmo.ip)" dev eth0
peer=$(arg virmo.peer)
i=0
while true; do
    if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then
        result=ok
    else
        result=fail
    fi
    echo "VIRMO-PING=$result $i $(cat /sys/class/net/eth0/statistics/rx_packets)"
    i=$((i + 1))
    sleep 1
done
