"""OpenFlow roles of an instance of a cluster (``sdnvirt.cluster``): MASTER of
the switches it has claimed, SLAVE of the others.

Until a switch answers a MASTER request, the session is SLAVE here and the
sender withholds every write to it (flow, group and meter mods, packet-outs:
counted as withheld). The request carries the claim's etcd revision as its
generation_id, so the switch refuses a request of an older claim (a paused
old master): OVS answers it with an error and the old master's writes with
IS_SLAVE. A switch answering MASTER is read again and reconciled: the flows
that are right are left alone. One handed over to another instance is
asked for SLAVE first, and its claim goes once it answered
(``Member.yielded``). Slaves get packet-ins and port status too
(asynchronous config), so every instance learns links and VM places, and
signs LLDP with the cluster's shared key. A backend is probed by the master
of its switch alone (probes are packet-outs); what its probes decide goes
through etcd, and the others apply it to the switches they master
(``exchange_health``; which keys are written and deleted: ``cluster.claims``).
A migration is coordinated by the instance that accepted it; where it
places the VM goes through etcd too, and every instance plans the VM's
pending target and its flip on the switches it masters
(``Coordinator.placements`` and ``follow``). The master of the target's
switch says when the pending target is in it, and the data transfer starts
only then (``Coordinator.prepared``).

Without a cluster nothing here acts: sessions stay EQUAL and every write goes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..cluster.claims import HealthKey
from ..cluster.member import Member, State
from ..events import Cause, Kind
from ..metrics import dpid_label
from . import backends
from .core import Controller
from .session import Role, SwitchSession

LOG = logging.getLogger("sdnvirt.controller")

WRITES = frozenset({ofp.OFPT_FLOW_MOD, ofp.OFPT_GROUP_MOD, ofp.OFPT_METER_MOD, ofp.OFPT_PACKET_OUT})
_ALL_REASONS = (1 << ofp.OFPR_NO_MATCH) | (1 << ofp.OFPR_ACTION) | (1 << ofp.OFPR_INVALID_TTL)
_ALL_PORT_CHANGES = (1 << ofp.OFPPR_ADD) | (1 << ofp.OFPPR_DELETE) | (1 << ofp.OFPPR_MODIFY)
_WIRE = {Role.MASTER: ofp.OFPCR_ROLE_MASTER, Role.SLAVE: ofp.OFPCR_ROLE_SLAVE}
# Seconds after its start an instance waits for the switches the others reach
# (Open vSwitch retries a lost controller at most every 8 s by default).
RECONNECT_GRACE = 15.0


class Roles:
    def __init__(self, ctl: Controller, member: Member | None):
        self.ctl, self.member = ctl, member
        self.state: State | None = None
        self.asked: dict[int, tuple[Role, int]] = {}     # the last role request sent to each switch
        if member is not None:
            ctl.discovery.secret = member.lldp_secret
            ctl.sender.may_write = self.may_write
            ctl.prober.may_probe = self.masters
            ctl.before_plan = self.exchange_health
            ctl.migrations.told = lambda: member.set_placements(ctl.migrations.placements())
            ctl.migrations.claim = member.claim_placement
            ctl.migrations.prepared_told = member.set_prepared
            ctl.incomplete = self.incomplete
            member.changed = lambda state: ctl.loop.post(self.apply, state)
            ctl.metrics.registry.register(ClusterCollector(self))

    # -- the os-ken shim's events, on the loop ---------------------------------------
    def switch_connected(self, dp: Any, dpid: int) -> None:
        if self.member is None:
            self.ctl.switch_connected(dp, dpid)
            return
        self.asked.pop(dpid, None)
        # SLAVE before anything is planned for it: nothing is written until the switch says MASTER.
        self.ctl.switch_connected(dp, dpid)
        session = self.ctl.sessions[dpid]
        session.role = Role.SLAVE
        self.ctl.send(session, parser.OFPSetAsync(dp, [_ALL_REASONS, _ALL_REASONS],
                                                  [_ALL_PORT_CHANGES, _ALL_PORT_CHANGES], [0, 0]))
        self._connected_changed()
        self._update(session)

    def switch_gone(self, dp: Any) -> None:
        session = self.ctl.session(dp)
        self.ctl.switch_gone(dp)
        if self.member is not None and session is not None:
            self.asked.pop(session.dpid, None)
            self._connected_changed()

    def role_reply(self, dp: Any, role: int, generation_id: int) -> None:
        session = self.ctl.session(dp)
        if session is None or self.state is None:
            return
        mine = self.state.mine(session.dpid)
        if role == ofp.OFPCR_ROLE_MASTER and mine is not None and mine.revision == generation_id:
            self._set(session, Role.MASTER)
        elif role != ofp.OFPCR_ROLE_MASTER:
            self._set(session, Role.SLAVE)
            if self.member is not None:
                # Everything sent to it before is done: a switch handed over may go.
                self.member.yielded(session.dpid, generation_id)

    def refused(self, dp: Any, code: int) -> None:
        """The switch refused a role request (a stale generation_id: another master's is newer)."""
        session = self.ctl.session(dp)
        if session is not None:
            LOG.warning("switch %016x refused a role request (code %d): another instance's claim is newer",
                        session.dpid, code)
            self.asked.pop(session.dpid, None)
            self._set(session, Role.SLAVE)

    # -- the cluster's word, on the loop -------------------------------------------
    def apply(self, state: State) -> None:
        before = self.state
        self.state = state
        if before is None or (before.members, before.leader, before.fenced) != (state.members, state.leader,
                                                                                state.fenced):
            LOG.info("cluster: members %s, leader %s%s", ", ".join(state.members), state.leader,
                     "; FENCED: writing to no switch" if state.fenced else "")
            self.ctl.event_hub.publish(Kind.CLUSTER_CHANGED, members=",".join(state.members), leader=state.leader,
                                       fenced=state.fenced)
            if state.leader == state.me and not state.fenced:
                self.ctl.migrations.orphans(set(state.members))
        if before is not None and before.lease not in (0, state.lease):
            self.ctl.migrations.lease_lost()
        now = self.ctl.clock()
        if state.fenced:
            self.ctl.discovery.held = True
        elif self.ctl.discovery.held:
            self.ctl.discovery.resume(now)
        for dpid, claim in state.claims.items():
            if before is None or before.claims.get(dpid) != claim:
                self.ctl.discovery.new_master(dpid, now)
        for session in list(self.ctl.sessions.values()):
            self._update(session)
        # A migration's flip on this instance's switches waits for nothing else (follow asks for
        # a reconcile at once); one this instance coordinates may wait for its target's master.
        self.ctl.migrations.follow({vm: p for vm, p in state.placements.items() if p.by != state.me})
        self.ctl.migrations.prepared({vm: p for vm, p in state.prepared.items() if p.by != state.me})
        # Now, before a switch claimed here answers MASTER: its new master goes on
        # from what the previous one found.
        if self.exchange_health():
            self.ctl.request()

    def exchange_health(self) -> bool:
        """The backends' health, exchanged with the other instances at each change
        of the cluster's state and before each plan (which follows a config
        change, a verdict of this instance's probes, a switch mastered or given
        up, a VM located): the member is told every backend of the desired state
        and this instance's verdicts on those whose switch it masters; the
        others' verdicts apply to the rest, so never to a backend the desired
        state does not have. True if that changed a backend here."""
        model, changed = self.ctl.model, False
        shared = self.state.health if self.state is not None else {}
        verdicts: dict[HealthKey, bool] = {}
        for svc in model.services():
            for backend in svc.backends:
                key = svc.health_key(backend)
                health, loc = model.health[key], model.locations.get(backend.vm.name)
                if loc is not None and self.masters(loc.dpid):
                    verdicts[key] = health.up
                elif (up := shared.get(key)) is not None and health.told(up, "as the master of its switch found it"):
                    backends.changed(self.ctl.event_hub, model, svc, backend, Cause.SHARED)
                    changed = True
        if self.member is not None:
            self.member.set_health(verdicts, frozenset(model.health))
        return changed

    def _update(self, session: SwitchSession) -> None:
        state = self.state
        if state is None:
            return
        mine = state.mine(session.dpid)
        claim = state.claims.get(session.dpid)
        if mine is None and session.role is Role.MASTER:
            self._set(session, Role.SLAVE)      # at once: the claim is gone or another's, or this instance fenced
            self.asked.pop(session.dpid, None)  # so that the same claim, back after a fence, is asked for again
        if mine is not None:
            self._ask(session, Role.MASTER, mine.revision)
        elif claim is not None and not state.fenced:
            self._ask(session, Role.SLAVE, claim.revision)

    def _ask(self, session: SwitchSession, role: Role, generation_id: int) -> None:
        if self.asked.get(session.dpid) == (role, generation_id):
            return
        self.asked[session.dpid] = (role, generation_id)
        self.ctl.send(session, parser.OFPRoleRequest(session.dp, _WIRE[role], generation_id))

    def _set(self, session: SwitchSession, role: Role) -> None:
        if session.role is role:
            return
        session.role = role
        LOG.info("switch %016x: %s", session.dpid, role.value.upper())
        self.ctl.event_hub.publish(Kind.ROLE_CHANGED, dpid=f"{session.dpid:016x}", role=role.value)
        if role is not Role.MASTER:
            session.covered = 0     # what it holds is no longer this instance's to vouch for
        self.ctl.migrations.roles_changed()
        if role is Role.MASTER:
            # The previous master may have changed the switch since it was last
            # read here: read it again, then fix only what differs. Before the
            # fabric has settled (this instance just started), it is held back
            # like a warm restart's.
            session.warm = not self.ctl.settled()
            session.unannounced = True
            # Its links' LLDP stopped with the old master: send it now, not at the next round.
            self.ctl.send_frames(self.ctl.discovery.frames(self.ctl.fabric, session.dpid))
            for req in session.read_requests():
                self.ctl.send(session, req)
            self.ctl.request()

    def _connected_changed(self) -> None:
        if self.member is not None:
            self.member.set_switches(frozenset(self.ctl.sessions))

    # -- the sender's gate ---------------------------------------------------------
    def may_write(self, dp: Any, msg: Any) -> bool:
        if msg.cls_msg_type not in WRITES:
            return True
        session = self.ctl.session(dp)
        return session is not None and session.role is Role.MASTER

    def incomplete(self) -> bool:
        """An instance that joins a running cluster plans nothing until it is
        connected to every switch the others are (within RECONNECT_GRACE):
        the switches take it back one by one, and paths planned around one
        still missing would rewrite the flows of the switches it masters."""
        if self.ctl.clock() - self.ctl.started >= RECONNECT_GRACE:
            return False
        return self.state is None or not self.state.reached <= self.ctl.sessions.keys()

    def masters(self, dpid: int) -> bool:
        session = self.ctl.sessions.get(dpid)
        return session is not None and session.role is Role.MASTER

    def status(self) -> dict[str, Any] | None:
        """This instance's view of the cluster, for ``GET /v1/status``."""
        if self.member is None or self.state is None:
            return None
        state = self.state
        return {"name": state.me, "members": state.members, "leader": state.leader, "fenced": state.fenced,
                "switches": {f"{dpid:016x}": {"master": claim.owner, "generation_id": claim.revision}
                             for dpid, claim in sorted(state.claims.items())},
                "roles": {f"{dpid:016x}": s.role.value for dpid, s in sorted(self.ctl.sessions.items())}}


class ClusterCollector(Collector):
    """Read at scrape time, on the loop."""

    def __init__(self, roles: Roles):
        self.roles = roles

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self.roles.ctl.loop.call(self._families))

    def _families(self) -> list[GaugeMetricFamily]:
        state = self.roles.state
        members = GaugeMetricFamily("sdnvirt_cluster_members", "Live instances of the cluster, as this one sees them.")
        leader = GaugeMetricFamily("sdnvirt_cluster_leader", "1 if this instance is the cluster's leader.")
        fenced = GaugeMetricFamily("sdnvirt_cluster_fenced", "1 while this instance writes to no switch because "
                                   "its etcd lease may have expired.")
        unowned = GaugeMetricFamily("sdnvirt_cluster_switches_without_master",
                                    "Connected switches that no instance has claimed.")
        role = GaugeMetricFamily("sdnvirt_switch_master", "1 if this instance is the master of the switch.",
                                 labels=["dpid"])
        sessions = self.roles.ctl.sessions
        members.add_metric([], len(state.members) if state else 0)
        leader.add_metric([], 1 if state and state.leader == state.me else 0)
        fenced.add_metric([], 1 if state is None or state.fenced else 0)
        unowned.add_metric([], sum(1 for d in sessions if state is None or d not in state.claims))
        for dpid, session in sorted(sessions.items()):
            role.add_metric([dpid_label(dpid)], 1 if session.role is Role.MASTER else 0)
        return [members, leader, fenced, unowned, role]
