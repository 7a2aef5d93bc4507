# Waits forever; the ACPI power button (armed by /init) powers the guest off.
echo "VIRMO-IDLE"
while true; do sleep 3600; done
