# Lists the virtio devices the guest sees (virtio device IDs: 1 net, 2 block, 4 entropy) and the
# serial of each virtio disk (VIRMO-DISK=NAME SERIAL SECTORS RO), then powers off; with
# virmo.hold=1 it stays up instead (for the host to look at the VM through the API).
. /scenarios/lib.sh
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d/device" ] && echo "VIRMO-VIRTIO-DEVICE=$(cat "$d/device")"
done
for b in /sys/block/vd*; do
    [ -e "$b/serial" ] && echo "VIRMO-DISK=${b##*/} $(cat "$b/serial") $(cat "$b/size") $(cat "$b/ro")"
done
echo "VIRMO-DEVICES-END"
if [ "$(arg virmo.hold)" = "1" ]; then
    while true; do sleep 3600; done
fi
