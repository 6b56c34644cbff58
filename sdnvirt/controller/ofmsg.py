"""Flow specs to OpenFlow 1.3 messages, and installed flows back to specs."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import OFPP_CONTROLLER, Flow, Group, Meter
from . import osken_fixes


def _names(prefix: str) -> dict[int, str]:
    return {v: k.removeprefix(prefix).lower() for k, v in vars(ofp).items() if k.startswith(prefix)}


# Names for metric labels: flow_mod, bad_request, no_match...
MESSAGE_TYPES = _names("OFPT_")
ERROR_TYPES = _names("OFPET_")
PACKET_IN_REASONS = _names("OFPR_")


def _action(spec: tuple):
    kind = spec[0]
    if kind == "output":
        return parser.OFPActionOutput(spec[1], 0)
    if kind == "controller":
        return parser.OFPActionOutput(ofp.OFPP_CONTROLLER, spec[1])
    if kind == "push_vlan":
        return parser.OFPActionPushVlan(0x8100)
    if kind == "pop_vlan":
        return parser.OFPActionPopVlan()
    if kind == "set":
        return parser.OFPActionSetField(**{spec[1]: spec[2]})
    if kind == "move":
        return parser.NXActionRegMove(src_field=spec[1], dst_field=spec[2], n_bits=spec[3])
    if kind == "group":
        return parser.OFPActionGroup(spec[1])
    if kind == "ct":
        _, flags, zone, table, nat = spec
        return parser.NXActionCT(flags=flags, zone_src="", zone_ofs_nbits=zone,
                                 recirc_table=0xFF if table is None else table, alg=0,
                                 actions=[] if nat is None else [_nat(nat)])
    if kind == "ct_clear":
        return parser.NXActionCTClear()
    raise ValueError(f"unknown action {spec!r}")


def _nat(spec: tuple):
    if spec == ("nat",):
        return parser.NXActionNAT(flags=0)
    _, ip, port = spec     # ("dnat", ip, port): one address and one port, min only
    return parser.NXActionNAT(flags=osken_fixes.NAT_DST, range_ipv4_min=ip, range_proto_min=port)


def _instruction(spec: tuple):
    kind = spec[0]
    if kind == "apply":
        return parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [_action(a) for a in spec[1]])
    if kind == "meter":
        return parser.OFPInstructionMeter(spec[1])
    if kind == "meta":
        return parser.OFPInstructionWriteMetadata(spec[1], spec[2])
    if kind == "goto":
        return parser.OFPInstructionGotoTable(spec[1])
    raise ValueError(f"unknown instruction {spec!r}")


def flow_mod(dp, f: Flow, command: int) -> parser.OFPFlowMod:
    return parser.OFPFlowMod(
        dp, cookie=f.cookie, table_id=f.table, command=command, priority=f.priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**f.match_dict),
        instructions=[] if command == ofp.OFPFC_DELETE_STRICT else [_instruction(i) for i in f.instructions])


def _action_spec(action) -> tuple:
    if isinstance(action, parser.OFPActionOutput):
        if action.port == OFPP_CONTROLLER:
            return ("controller", action.max_len)
        return ("output", action.port)
    if isinstance(action, parser.OFPActionPushVlan):
        return ("push_vlan",)
    if isinstance(action, parser.OFPActionPopVlan):
        return ("pop_vlan",)
    if isinstance(action, parser.OFPActionSetField):
        return ("set", action.key, action.value)
    if isinstance(action, parser.OFPActionGroup):
        return ("group", action.group_id)
    if isinstance(action, parser.NXActionCT):
        nats = [a for a in action.actions if isinstance(a, parser.NXActionNAT)]
        if len(nats) == len(action.actions) <= 1 and not action.zone_src and not action.alg:
            nat = _nat_spec(nats[0]) if nats else None
            table = None if action.recirc_table == 0xFF else action.recirc_table
            return ("ct", action.flags, action.zone_ofs_nbits, table, nat)
    if isinstance(action, parser.NXActionCTClear):
        return ("ct_clear",)
    if isinstance(action, parser.NXActionRegMove):
        # OVS answers with NXM headers, which os-ken names "<field>_nxm".
        return ("move", _oxm_name(action.src_field), _oxm_name(action.dst_field), action.n_bits)
    # Something sdnvirt never writes: keep it visible so the diff replaces it.
    return ("unknown", type(action).__name__, str(action))


def _nat_spec(nat) -> tuple:
    if nat.flags == 0:
        return ("nat",)
    if nat.flags == osken_fixes.NAT_DST and not nat.range_ipv4_max and nat.range_proto_max is None:
        return ("dnat", nat.range_ipv4_min, nat.range_proto_min)
    return ("unknown", "nat", str(nat))


def _oxm_name(field: str) -> str:
    return field.removesuffix("_nxm")


def _instruction_spec(inst) -> tuple:
    if isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
        return ("apply", tuple(_action_spec(a) for a in inst.actions))
    if isinstance(inst, parser.OFPInstructionMeter):
        return ("meter", inst.meter_id)
    if isinstance(inst, parser.OFPInstructionWriteMetadata):
        return ("meta", inst.metadata, inst.metadata_mask)
    if isinstance(inst, parser.OFPInstructionGotoTable):
        return ("goto", inst.table_id)
    return ("unknown", type(inst).__name__, str(inst))


def _value(v):
    return tuple(v) if isinstance(v, list) else v


def installed_flow(stat) -> Flow:
    """One entry of a flow-stats reply as a spec."""
    match = tuple(sorted((k, _value(v)) for k, v in stat.match.items()))
    return Flow(stat.table_id, stat.priority, match,
                tuple(_instruction_spec(i) for i in stat.instructions), stat.cookie)


METER_FLAGS = ofp.OFPMF_PKTPS | ofp.OFPMF_BURST


def meter_mod(dp, m: Meter, command: int) -> parser.OFPMeterMod:
    bands = [] if command == ofp.OFPMC_DELETE else [parser.OFPMeterBandDrop(rate=m.rate, burst_size=m.burst)]
    return parser.OFPMeterMod(dp, command=command, flags=METER_FLAGS, meter_id=m.meter_id, bands=bands)


def installed_meter(stat) -> Meter:
    """One entry of a meter-config reply as a spec (a meter sdnvirt would not
    write becomes one that never equals a planned one)."""
    bands = [b for b in stat.bands if isinstance(b, parser.OFPMeterBandDrop)]
    if stat.flags != METER_FLAGS or len(bands) != 1 or len(stat.bands) != 1:
        return Meter(stat.meter_id, -1, -1)
    return Meter(stat.meter_id, bands[0].rate, bands[0].burst_size)


def group_mod(dp, g: Group, command: int) -> parser.OFPGroupMod:
    buckets = [] if command == ofp.OFPGC_DELETE else [
        parser.OFPBucket(weight=1, watch_port=ofp.OFPP_ANY, watch_group=ofp.OFPG_ANY,
                         actions=[_action(a) for a in bucket])
        for bucket in g.buckets]
    return parser.OFPGroupMod(dp, command, ofp.OFPGT_SELECT, g.group_id, buckets)


def installed_group(stat) -> Group:
    """One entry of a group-desc reply as a spec (anything but an equal-weight
    select group becomes a spec that never equals a planned one)."""
    if stat.type != ofp.OFPGT_SELECT or any(b.weight != 1 for b in stat.buckets):
        return Group(stat.group_id, (("unknown", str(stat)),))
    return Group(stat.group_id, tuple(tuple(_action_spec(a) for a in b.actions) for b in stat.buckets))
