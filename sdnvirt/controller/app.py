"""The os-ken shim: OpenFlow events in, posted to the controller's loop.

Nothing here decides anything or touches the controller's state: os-ken's
receive thread only posts work to the one thread that owns it (``loop``), so
the controller can be driven without os-ken's application machinery.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from os_ken.base import app_manager
from os_ken.controller import ofp_event
from os_ken.controller.handler import CONFIG_DISPATCHER, DEAD_DISPATCHER, MAIN_DISPATCHER, set_ev_cls
from os_ken.ofproto import ofproto_v1_3 as ofp

from ..cluster.member import Member
from ..config import Config
from ..events import Events, Handler
from ..metrics import Metrics
from ..store import Store
from . import packet_in
from .core import Controller
from .roles import Roles


class SdnvirtApp(app_manager.OSKenApp):
    OFP_VERSIONS = [ofp.OFP_VERSION]

    def __init__(self, *args: Any, sdnvirt_config: Config, sdnvirt_metrics: Metrics, sdnvirt_events: Events,
                 sdnvirt_failed: Callable[[Handler], None], sdnvirt_store: Store | None = None,
                 sdnvirt_member: Member | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.name = "sdnvirt"
        self.controller = Controller(sdnvirt_config, sdnvirt_metrics, sdnvirt_events, sdnvirt_failed, sdnvirt_store)
        self.roles = Roles(self.controller, sdnvirt_member)
        self._post = self.controller.loop.post

    def start(self):
        thread = super().start()
        self.controller.start()
        return thread

    @set_ev_cls(ofp_event.EventOFPSwitchFeatures, CONFIG_DISPATCHER)
    def _switch_features(self, ev):
        dp = ev.msg.datapath
        # os-ken's own handler, on another thread, sets dp.id from this same
        # message; it may not have run yet.
        dp.id = ev.msg.datapath_id
        self._post(self.roles.switch_connected, dp, dp.id)

    @set_ev_cls(ofp_event.EventOFPStateChange, DEAD_DISPATCHER)
    def _switch_gone(self, ev):
        self._post(self.roles.switch_gone, ev.datapath)

    @set_ev_cls(ofp_event.EventOFPRoleReply, MAIN_DISPATCHER)
    def _role_reply(self, ev):
        self._post(self.roles.role_reply, ev.msg.datapath, ev.msg.role, ev.msg.generation_id)

    @set_ev_cls(ofp_event.EventOFPPortDescStatsReply, MAIN_DISPATCHER)
    def _port_desc(self, ev):
        self._post(self.controller.ports_described, ev.msg.datapath, ev.msg.body)

    @set_ev_cls(ofp_event.EventOFPPortStatus, MAIN_DISPATCHER)
    def _port_status(self, ev):
        self._post(self.controller.port_status, ev.msg.datapath, ev.msg.desc, ev.msg.reason == ofp.OFPPR_DELETE)

    @set_ev_cls([ofp_event.EventOFPFlowStatsReply, ofp_event.EventOFPGroupDescStatsReply,
                 ofp_event.EventOFPMeterConfigStatsReply, ofp_event.EventOFPPortStatsReply,
                 ofp_event.EventOFPTableStatsReply], MAIN_DISPATCHER)
    def _multipart(self, ev):
        self._post(self.controller.multipart_reply, ev.msg)

    @set_ev_cls(ofp_event.EventOFPErrorMsg, [CONFIG_DISPATCHER, MAIN_DISPATCHER])
    def _error(self, ev):
        if ev.msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            self._post(self.roles.refused, ev.msg.datapath, ev.msg.code)
        self._post(self.controller.error, ev.msg.datapath, ev.msg.type, ev.msg.code)

    @set_ev_cls(ofp_event.EventOFPBarrierReply, MAIN_DISPATCHER)
    def _barrier(self, ev):
        self._post(self.controller.barrier_reply, ev.msg.datapath, ev.msg.xid)

    @set_ev_cls(ofp_event.EventOFPPacketIn, MAIN_DISPATCHER)
    def _packet_in(self, ev):
        self._post(packet_in.handle, self.controller, ev.msg)
