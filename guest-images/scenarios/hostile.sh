# A hostile guest (docs/security.md, "Hostile guests"): runs /bin/hostile-tool against every
# virtio-mmio device of the VM. Boot it with virmo.skip_modules=virtio_mmio (no driver holds the
# devices, so /dev/mem may map their windows) and mem=OWN (the guest kernel leaves RAM above OWN
# alone; the tool builds its queues and buffers there), and
#   virmo.ram_end=HEX virmo.own_base=HEX [virmo.rounds=N] [virmo.flood_ms=MS] [virmo.seed=N]
# Prints the tool's HOSTILE-… lines, then stays up (counting) unless virmo.hold=0.
. /scenarios/lib.sh
grep LNRO0005 /proc/iomem | sed 's/^/VIRMO-IOMEM /'
ls /sys/bus/platform/drivers/virtio-mmio 2>/dev/null | grep LNRO && echo "VIRMO-HOSTILE a driver holds a device"
rounds=$(arg virmo.rounds)
flood_ms=$(arg virmo.flood_ms)
seed=$(arg virmo.seed)
hostile-tool --ram-end "$(arg virmo.ram_end)" --own-base "$(arg virmo.own_base)" \
    --rounds "${rounds:-3}" --flood-ms "${flood_ms:-3000}" --seed "${seed:-1}"
echo "VIRMO-HOSTILE-EXIT=$?"
if [ "$(arg virmo.hold)" != "0" ]; then
    i=0
    while true; do
        echo "VIRMO-COUNTER=$i"
        i=$((i + 1))
        usleep 100000
    done
fi
