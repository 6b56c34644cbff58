"""A k-ary fat tree (Al-Fares et al., SIGCOMM 2008).

k pods, each with k/2 aggregation and k/2 edge switches, fully linked
within the pod; (k/2)^2 core switches, aggregation switch j of every pod
linked to core switches j*k/2+1 .. (j+1)*k/2.  The edge switches are the
hypervisors.  Standalone use (imports only from mininet):

    mn --custom sdnvirt/emulation/topologies/fattree.py --topo fattree,4 \
       --switch ovs,protocols=OpenFlow13 --controller remote,port=6653
"""

from mininet.topo import Topo

# Explicit dpids in a range per role (Mininet would derive core1, agg1 and
# edge1 all as dpid 1 from the digits in the name).
CORE_DPID = 0x300
AGG_DPID = 0x400
EDGE_DPID = 0x500


def dpid(base, i):
    "The dpid (16 hex digits) of switch number i (1-based) of a role."
    if not 1 <= i <= 0xff:
        raise ValueError(f'at most 255 switches per role, not {i}')
    return f'{base + i:016x}'


class FatTreeTopo(Topo):
    "k-ary fat tree: k^2/4 core, k^2/2 aggregation, k^2/2 edge switches."

    def build(self, k=4, hosts_per_edge=None):
        """k: switch radix, even and at least 2
           hosts_per_edge: default hosts (h1, h2, ...) per edge switch (k/2)"""
        if not isinstance(k, int) or k < 2 or k % 2:
            raise ValueError(f'a fat tree needs an even k >= 2, not {k!r}')
        half = k // 2
        if hosts_per_edge is None:
            hosts_per_edge = half
        cores = [self.addSwitch(f'core{i}', dpid=dpid(CORE_DPID, i))
                 for i in range(1, half * half + 1)]
        self._edges = []
        h = 0
        for pod in range(k):
            aggs = []
            for j in range(half):
                n = pod * half + j + 1
                agg = self.addSwitch(f'agg{n}', dpid=dpid(AGG_DPID, n))
                aggs.append(agg)
                for core in cores[j * half:(j + 1) * half]:
                    self.addLink(agg, core)
            for j in range(half):
                n = pod * half + j + 1
                edge = self.addSwitch(f'edge{n}', dpid=dpid(EDGE_DPID, n))
                self._edges.append(edge)
                for agg in aggs:
                    self.addLink(edge, agg)
                for _ in range(hosts_per_edge):
                    h += 1
                    self.addLink(self.addHost(f'h{h}'), edge)

    def hypervisors(self):
        "Names of the switches VMs are plugged into: the edge switches."
        return self.sorted(self._edges)


topos = {'fattree': FatTreeTopo}
