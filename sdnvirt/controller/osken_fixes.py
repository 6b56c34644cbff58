"""Two gaps in os-ken 4.2.2 that the load balancer's conntrack flows run into.

Imported for its effect by ``ofmsg``; both were found against Open vSwitch 3.1.

1. os-ken does not know the Nicira conntrack "original direction" match
   fields (ct_nw_proto, ct_nw_src/dst, ct_ipv6_src/dst, ct_tp_src/dst,
   NXM_NX 119-125): OFPMatch(ct_nw_dst=...) raises KeyError and replies parse
   them as opaque "field_NNN".
2. NXAction.serialize sets the action length rounded up to 8 bytes but does
   not pad the body: an NXActionNAT with an address and a port (22 bytes) at
   the end of a message leaves it 2 bytes short, and OVS rejects the whole
   FlowMod/GroupMod (OFPBRC_BAD_LEN).
"""

from __future__ import annotations

from os_ken.lib import type_desc
from os_ken.ofproto import nicira_ext, ofproto_v1_3, oxm_fields
from os_ken.ofproto import ofproto_v1_3_parser as parser

_CT_ORIGINAL_DIRECTION = [
    ("ct_nw_proto", 119, type_desc.Int1),
    ("ct_nw_src", 120, type_desc.IPv4Addr),
    ("ct_nw_dst", 121, type_desc.IPv4Addr),
    ("ct_ipv6_src", 122, type_desc.IPv6Addr),
    ("ct_ipv6_dst", 123, type_desc.IPv6Addr),
    ("ct_tp_src", 124, type_desc.Int2),
    ("ct_tp_dst", 125, type_desc.Int2),
]


def _register_ct_fields() -> None:
    known = {f.name for f in ofproto_v1_3.oxm_types}
    missing = [f for f in _CT_ORIGINAL_DIRECTION if f[0] not in known]
    if not missing:
        return
    for name, num, kind in missing:
        ofproto_v1_3.oxm_types.append(oxm_fields.NiciraExtended1(name, num, kind))
    oxm_fields.generate(ofproto_v1_3.__name__)


def _pad_nx_actions() -> None:
    original = parser.NXAction.serialize
    if getattr(original, "_sdnvirt_padded", False):
        return

    def serialize(self, buf, offset):
        original(self, buf, offset)
        short = offset + self.len - len(buf)
        if short > 0:
            buf += bytes(short)

    serialize._sdnvirt_padded = True
    parser.NXAction.serialize = serialize


_register_ct_fields()
_pad_nx_actions()

# os-ken has no names for these (ovs-actions(7), "nat").
NAT_SRC = 1
NAT_DST = 2
CT_COMMIT = nicira_ext.NX_CT_F_COMMIT
