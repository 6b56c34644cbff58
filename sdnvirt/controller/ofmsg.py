"""Flow specs to OpenFlow 1.3 messages, and installed flows back to specs."""

from __future__ import annotations

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from ..plan.flows import OFPP_CONTROLLER, Flow, Meter


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
    raise ValueError(f"unknown action {spec!r}")


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
    if isinstance(action, parser.NXActionRegMove):
        # OVS answers with NXM headers, which os-ken names "<field>_nxm".
        return ("move", _oxm_name(action.src_field), _oxm_name(action.dst_field), action.n_bits)
    # Something sdnvirt never writes: keep it visible so the diff replaces it.
    return ("unknown", type(action).__name__, str(action))


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
    return parser.OFPMeterMod(dp, command=command, flags=METER_FLAGS, meter_id=m.meter_id,
                              bands=[parser.OFPMeterBandDrop(rate=m.rate, burst_size=m.burst)])


def installed_meter(stat) -> Meter | None:
    """One entry of a meter-config reply as a spec; None for a meter sdnvirt would not write."""
    bands = [b for b in stat.bands if isinstance(b, parser.OFPMeterBandDrop)]
    if stat.flags != METER_FLAGS or len(bands) != 1 or len(stat.bands) != 1:
        return None
    return Meter(stat.meter_id, bands[0].rate, bands[0].burst_size)
