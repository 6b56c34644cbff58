#!/bin/sh
# PID 1 of an sdnvirt QEMU guest (busybox). Everything it needs comes from the
# kernel command line: sdnvirt.name, sdnvirt.ip (address/prefix), sdnvirt.dirty
# (MiB a second the guest rewrites, so that a live migration's pre-copy has work).
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

arg() {
    for word in $(cat /proc/cmdline); do
        case $word in sdnvirt.$1=*) echo "${word#*=}";; esac
    done
}

# In dependency order (/modules lists them so): virtio_ring before virtio,
# or every module fails and the guest has no eth0 while looking healthy.
for mod in $(cat /modules); do
    insmod "/lib/modules/$mod.ko" || echo "sdnvirt-guest: insmod $mod failed"
done

n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 100 ]; do usleep 50000; n=$((n + 1)); done
# No IPv6: router solicitations, MLD reports and DAD would announce the guest
# on their own, and the tests and benchmarks want QEMU's and our announcements only.
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
ip link set lo up
ip link set eth0 up
ip addr add "$(arg ip)" dev eth0
address=$(arg ip)
arping -q -U -c 1 -I eth0 "${address%/*}" &

mkdir -p /www
arg name > /www/index.html
httpd -p 80 -h /www
# TCP echo on port 7: one process per connection, so a connection can live
# across a migration.
nc -ll -p 7 -e cat &
# HTTP/1.1 with keep-alive on port 8080 (busybox httpd closes every connection
# after one answer), each connection its own process as well: a load
# balancer's connection to the guest can be followed through a migration.
cat > /bin/keepalive-httpd <<'END'
#!/bin/sh
body=$(cat /www/index.html)
cr=$(printf '\r')
while read -r request; do
    while read -r header && [ -n "${header%$cr}" ]; do :; done
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s\n' $((${#body} + 1)) "$body"
done
END
chmod +x /bin/keepalive-httpd
nc -ll -p 8080 -e /bin/keepalive-httpd &

dirty=$(arg dirty)
if [ -n "$dirty" ] && [ "$dirty" -gt 0 ]; then
    # Ten rewrites a second of the same tmpfs pages, 64 KiB blocks.
    mount -t tmpfs -o size=$((dirty + 1))m tmpfs /mnt
    ( while true; do
        dd if=/dev/zero of=/mnt/dirty bs=64k count=$((dirty * 16 / 10)) conv=notrunc 2>/dev/null
        usleep 100000
    done ) &
fi
echo "sdnvirt-guest: $(arg name) up at $address"
while true; do sleep 3600; done
