"""A two-tier leaf-spine (folded Clos) fabric.

Every leaf is linked to every spine; hosts (the VMs) hang off the leaves,
which are the hypervisors.  Standalone use (imports only from mininet):

    mn --custom sdnvirt/emulation/topologies/leafspine.py --topo leafspine,2,4 \
       --switch ovs,protocols=OpenFlow13 --controller remote,port=6653
"""

from mininet.topo import Topo

# Mininet derives a dpid from the first number in a switch name, so leaf1
# and spine1 would both get dpid 1: every switch gets an explicit one, in a
# range of its own per role.
LEAF_DPID = 0x100
SPINE_DPID = 0x200


def dpid(base, i):
    "The dpid (16 hex digits) of switch number i (1-based) of a role."
    if not 1 <= i <= 0xff:
        raise ValueError(f'at most 255 switches per role, not {i}')
    return f'{base + i:016x}'


class LeafSpineTopo(Topo):
    "`spines` spines, `leaves` leaves (all linked), `hosts_per_leaf` hosts per leaf."

    def build(self, spines=2, leaves=4, hosts_per_leaf=1):
        """spines: number of spine switches (spine1, ...)
           leaves: number of leaf switches (leaf1, ...)
           hosts_per_leaf: default hosts (h1, h2, ...) on each leaf"""
        if spines < 1 or leaves < 1 or hosts_per_leaf < 0:
            raise ValueError('a leaf-spine needs at least one spine and one leaf')
        spine_names = [self.addSwitch(f'spine{i}', dpid=dpid(SPINE_DPID, i))
                       for i in range(1, spines + 1)]
        self._leaves = []
        h = 0
        for i in range(1, leaves + 1):
            leaf = self.addSwitch(f'leaf{i}', dpid=dpid(LEAF_DPID, i))
            self._leaves.append(leaf)
            for spine in spine_names:
                self.addLink(leaf, spine)
            for _ in range(hosts_per_leaf):
                h += 1
                self.addLink(self.addHost(f'h{h}'), leaf)

    def hypervisors(self):
        "Names of the switches VMs are plugged into: the leaves."
        return self.sorted(self._leaves)


topos = {'leafspine': LeafSpineTopo}
