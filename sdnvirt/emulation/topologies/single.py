"""One switch with hosts: the smallest network sdnvirt can run on.

Standalone use (imports only from mininet):

    mn --custom sdnvirt/emulation/topologies/single.py --topo single,2 \
       --switch ovs,protocols=OpenFlow13 --controller remote,port=6653
"""

from mininet.topo import Topo


class SingleTopo(Topo):
    "One switch, s1, with `hosts` hosts (h1, h2, ...); s1 is the only hypervisor."

    def build(self, hosts=2):
        "hosts: number of default hosts on s1"
        self.addSwitch('s1', dpid='0000000000000001')
        for h in range(1, hosts + 1):
            self.addLink(self.addHost(f'h{h}'), 's1')

    def hypervisors(self):
        "Names of the switches VMs are plugged into."
        return ['s1']


topos = {'single': SingleTopo}
