# Configures eth0 with virmo.ip=ADDR/PREFIX and pings virmo.peer=ADDR once a second:
# VIRMO-PING=ok|fail N.
. /scenarios/lib.sh
ip link set eth0 up
ip addr add "$(arg virmo.ip)" dev eth0
peer=$(arg virmo.peer)
i=0
while true; do
    if ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then
        echo "VIRMO-PING=ok $i"
    else
        echo "VIRMO-PING=fail $i"
    fi
    i=$((i + 1))
    sleep 1
done
