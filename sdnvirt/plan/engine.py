"""Incremental planning: the cost of a change follows the change.

``pipeline.plan`` computes every feature's contribution for every switch and
tenant; the engine (OVN northd's incremental processing, in small) keeps
each contribution from the last plan with the inputs it was computed from,
and on the next plan computes again only those whose inputs changed
(``feature.Feature``'s hooks say what a contribution reads).  The desired
state of a switch is the counted union of the contributions (a flow two
contributions want stays until neither does), and the engine remembers
which keys of which switch changed, so the reconciler diffs only those
(``take_changes``).

Scopes: one contribution per (feature, switch), per (feature, fabric part)
and per (feature, tenant, part); a part whose inputs are ``feature.BySwitch``
is computed again on the switches whose entry changed only (a route toward
one switch that moves at a few others).
A tenant's footprint (``tenancy.Tenant``) is itself kept and reused while
its VMs, places and services stay the same, its paths per VM while the VM
stays where it is and the paths toward its switch do not change.  A link
that comes or goes recomputes the paths toward the switches whose next hops
changed (``Encap.moved``) and what reads the paths or the fabric's ports
(``Feature.reads_paths``, ``Feature.link_parts``, and the hooks' inputs say what).  A change of the
switches, of the controller's settings or of the hypervisors starts the
contributions afresh -- still diffed, only the changed keys reported; a
change to a tenant's config does not (the footprints and the hooks' inputs
see it).
``pipeline.plan`` stays the fallback and the oracle: the tests check, after
random sequences of changes, that the engine's state equals it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from ..fabric import Fabric
from ..model import Model
from .encap import ENCAPS, Encap, VxlanEncap, Wires, vteps
from .feature import BySwitch, Context, Contribution, Feature
from .flows import Flow, Group, Meter
from .pipeline import FEATURES
from .reconcile import Keys, Tables
from .tenancy import Tenant, by_tenant, footprint, same_but_paths

# A contribution's place in the cache: (feature, "switch", dpid) or
# (feature, "tenant", tenant name, part key).
Scope = tuple[Any, ...]
_WHOLE = ("whole",)      # the one part of a feature that does not split its tenants


class Engine:
    """The desired state of every switch, kept up to date change by change."""

    def __init__(self, features: Sequence[type[Feature]] = FEATURES) -> None:
        self.features = tuple(features)
        self.desired: dict[int, Tables] = {}
        self._basis: tuple[Any, ...] | None = None       # what every contribution depends on
        self._links: tuple[Any, ...] = ()
        self._encap: Encap | None = None
        self._ends: set[int] = set()
        self.wires = Wires({})      # where the switches' outputs lead, to order a round's changes
        self._tenants: dict[str, Tenant] = {}
        self._tenant_inputs: dict[tuple[type[Feature], str], Hashable] = {}
        self._parts: dict[Scope, tuple[object, _Held]] = {}
        self._scopes_of: defaultdict[tuple[type[Feature], str], set[Hashable]] = defaultdict(set)
        self._fabric_scopes: defaultdict[type[Feature], set[Hashable]] = defaultdict(set)
        # How many contributions want a flow beyond the first (the desired table holds
        # those it has once, and a million flows are mostly wanted once), a group, a meter.
        self._extra: defaultdict[int, dict[Flow, int]] = defaultdict(dict)
        self._count: defaultdict[int, dict[Group | Meter, int]] = defaultdict(dict)
        self._changed: defaultdict[int, Keys] = defaultdict(Keys)
        self.recomputed = 0     # contributions computed in the last update: what a change cost
        self.restarted = False  # the last update started every contribution afresh

    def update(self, model: Model, fabric: Fabric) -> None:
        """Bring ``desired`` up to date with the model and the fabric."""
        self.recomputed = 0
        encapsulation = model.config.controller.fabric.encapsulation
        # Not the tenants' config: an API change to one tenant recomputes that tenant.
        basis = (model.config.controller, model.config.hypervisors, tuple(fabric.switches),
                 vteps(fabric, model.config) if encapsulation == VxlanEncap.name else None)
        links = fabric.confirmed_links()
        moved: tuple[set[int] | None, bool] = (set(), False)
        self.restarted = False
        if basis != self._basis or self._encap is None:
            self.restarted = True
            self._restart(model, fabric, basis)
        elif links != self._links:
            # Only the paths that crossed a changed link, and the contributions
            # that read the fabric's ports (their inputs say so), are computed again.
            old, self._encap = self._encap, ENCAPS[encapsulation](fabric, model.config)
            self.wires = self._encap.wires()
            moved = self._encap.moved(old)
        relinked = links != self._links
        self._links = links
        assert self._encap is not None
        ctx = Context(model, fabric, self._encap)
        features = [cls(ctx) for cls in self.features]
        for feature in features:
            if _overrides(feature, "switch"):
                for dpid in fabric.switches:
                    self._switch(feature, dpid)
            if _overrides(feature, "fabric_parts"):
                self._fabric(feature)
        features = [f for f in features if _overrides(f, "tenant") or _overrides(f, "part")]
        vms_of, services_of = by_tenant(model)
        # By the contributions held, not the footprints: a restart forgets those.
        for name in sorted({name for _, name in self._scopes_of} - vms_of.keys()):
            self._tenant_gone(name)
        for name, vms in vms_of.items():
            before = self._tenants.get(name)
            tenant = footprint(model, self._encap, self._ends, name, vms, services_of[name], before, moved)
            if tenant is None:
                self._tenant_gone(name)
                continue
            self._tenants[name] = tenant
            # A link change moves paths: what reads none of them has nothing to look at.
            settled = tenant is before or (before is not None and same_but_paths(before, tenant))
            for feature in features:
                self._tenant(feature, tenant, (tenant is before and not relinked)
                             or (settled and not feature.reads_paths), tenant is before)

    def take_changes(self) -> dict[int, Keys]:
        """The keys of every switch whose desired entry changed since the last call."""
        changed, self._changed = dict(self._changed), defaultdict(Keys)
        return changed

    # -- contributions -----------------------------------------------------------
    def _restart(self, model: Model, fabric: Fabric, basis: tuple[Any, ...]) -> None:
        """Forget every contribution's inputs (not the contributions: they are diffed)."""
        self._basis = basis
        self._encap = ENCAPS[model.config.controller.fabric.encapsulation](fabric, model.config)
        self._ends = self._encap.ends()
        self.wires = self._encap.wires()
        self._tenants.clear()
        self._tenant_inputs.clear()
        self._parts = {scope: (_FORGOTTEN, part) for scope, (_, part) in self._parts.items()}
        for dpid in list(self.desired):
            if dpid not in fabric.switches:
                self._drop_switch(dpid)

    def _switch(self, feature: Feature, dpid: int) -> None:
        scope = (type(feature), "switch", dpid)
        inputs = feature.switch_inputs(dpid)
        old = self._parts.get(scope)
        if inputs is not None and old is not None and old[0] == inputs:
            return
        out = Contribution()
        feature.switch(dpid, out)
        self._replace(scope, inputs, out)

    def _fabric(self, feature: Feature) -> None:
        cls = type(feature)
        wanted = feature.fabric_parts()
        for key in self._fabric_scopes[cls] - wanted.keys():
            self._replace((cls, "fabric", key), None, None)
        for key, inputs in wanted.items():
            self._refresh((cls, "fabric", key), inputs, partial(feature.fabric_part, key))
        self._fabric_scopes[cls] = set(wanted)

    def _tenant(self, feature: Feature, tenant: Tenant, same: bool, kept: bool) -> None:
        """``same``: nothing the contribution reads moved but its inputs may say;
        ``kept``: the footprint is the last plan's (links may have moved)."""
        cls = type(feature)
        inputs = feature.tenant_inputs(tenant)
        unchanged = inputs is not None and self._tenant_inputs.get((cls, tenant.name), _FORGOTTEN) == inputs
        if unchanged and same:
            return
        linked = feature.link_parts(tenant) if unchanged and kept else None
        if linked is not None:
            # Only links moved: the parts that read them beyond the footprint are all to look at.
            for key, part_inputs in linked.items():
                self._part(feature, tenant, key, part_inputs, True)
            return
        if inputs is None:
            self._tenant_inputs.pop((cls, tenant.name), None)
        else:
            self._tenant_inputs[cls, tenant.name] = inputs
        parts = feature.parts(tenant) if inputs is not None else None
        wanted: Mapping[Hashable, object] = {_WHOLE: None} if parts is None else parts
        for key in self._scopes_of[cls, tenant.name] - wanted.keys():
            self._replace((cls, "tenant", tenant.name, key), None, None)
        for key, part_inputs in wanted.items():
            self._part(feature, tenant, key, part_inputs, parts is not None)
        self._scopes_of[cls, tenant.name] = set(wanted)

    def _part(self, feature: Feature, tenant: Tenant, key: Hashable, inputs: object, split: bool) -> None:
        """One part of a tenant's contribution, computed again if its inputs changed
        (``split``: the feature has parts; if not, the whole contribution every time)."""
        def compute(at: Collection[int] | None, out: Contribution) -> None:
            if not split:
                feature.tenant(tenant, out)
            elif at is not None:
                feature.part_at(tenant, key, at, out)
            else:
                feature.part(tenant, key, out)
        self._refresh((type(feature), "tenant", tenant.name, key), inputs, compute, split)

    def _refresh(self, scope: Scope, inputs: object,
                 compute: Callable[[Collection[int] | None, Contribution], None], keep: bool = True) -> None:
        """The contribution at ``scope`` computed again by ``compute`` (on the switches whose
        ``BySwitch`` entry moved, or all: None) unless ``keep`` and its inputs are the same."""
        old = self._parts.get(scope)
        if keep and old is not None and old[0] == inputs:
            return
        out = Contribution()
        at = _switches_changed(old[0] if old is not None else None, inputs)
        compute(at, out)
        self._replace(scope, inputs, out, at)

    def _tenant_gone(self, name: str) -> None:
        self._tenants.pop(name, None)
        for cls in self.features:
            self._tenant_inputs.pop((cls, name), None)
            for key in self._scopes_of.pop((cls, name), ()):
                self._replace((cls, "tenant", name, key), None, None)

    def _drop_switch(self, dpid: int) -> None:
        for cls in self.features:
            self._parts.pop((cls, "switch", dpid), None)
        for _, part in self._parts.values():
            for entries in (part.flows, part.groups, part.meters):
                entries.pop(dpid, None)
        self.desired.pop(dpid, None)
        self._count.pop(dpid, None)
        self._extra.pop(dpid, None)
        self._changed.pop(dpid, None)

    def _replace(self, scope: Scope, inputs: object, new: Contribution | None,
                 at: Collection[int] | None = None) -> None:
        """Put ``new`` in the place of the contribution at ``scope`` (``at``: on those switches
        only, the rest kept): only what differs is counted."""
        self.recomputed += new is not None
        old = self._parts.pop(scope, None)
        before = old[1] if old is not None else _NOTHING
        after = _Held(new, before, at) if new is not None else _NOTHING
        if new is not None:
            self._parts[scope] = (inputs, after)
        for dpid in before.flows.keys() | after.flows.keys() if at is None else at:
            was, now = before.flows.get(dpid, ()), after.flows.get(dpid, ())
            if was != now:
                was_set, now_set = set(was), set(now)
                if was_set != now_set:
                    self._count_flows(dpid, was_set - now_set, now_set - was_set)
        for dpid in before.groups.keys() | after.groups.keys() if at is None else at:
            self._count_ids(dpid, before.groups.get(dpid, {}), after.groups.get(dpid, {}), "groups")
        for dpid in before.meters.keys() | after.meters.keys() if at is None else at:
            self._count_ids(dpid, before.meters.get(dpid, {}), after.meters.get(dpid, {}), "meters")

    def _tables(self, dpid: int) -> Tables:
        tables = self.desired.get(dpid)
        if tables is None:
            tables = self.desired[dpid] = Tables()
        return tables

    def _count_flows(self, dpid: int, gone: Iterable[Flow], added: Iterable[Flow]) -> None:
        extra, held, keys = self._extra[dpid], self._tables(dpid).flows, self._changed[dpid].flows
        for f in gone:
            n = extra.get(f)
            if n:
                if n > 1:
                    extra[f] = n - 1
                else:
                    del extra[f]
                continue
            # Another contribution may already have put a flow with the same key in its place.
            if _same(held.get(f.key), f):
                del held[f.key]
                keys.add(f.key)
        for f in added:
            if _same(held.get(f.key), f):
                extra[f] = extra.get(f, 0) + 1
            else:
                held[f.key] = f
                keys.add(f.key)

    def _count_ids(self, dpid: int, was: Mapping[int, Any], now: Mapping[int, Any], kind: str) -> None:
        if was == now:
            return
        count = self._count[dpid]
        held: dict[int, Any] = getattr(self._tables(dpid), kind)
        keys: set[int] = getattr(self._changed[dpid], kind)
        for eid, entry in was.items():
            if now.get(eid) == entry:
                continue
            n = count[entry] - 1
            if n:
                count[entry] = n
                continue
            del count[entry]
            if held.get(eid) == entry:
                del held[eid]
                keys.add(eid)
        for eid, entry in now.items():
            if was.get(eid) == entry:
                continue
            n = count.get(entry, 0)
            count[entry] = n + 1
            if not n:
                held[eid] = entry
                keys.add(eid)


def _same(held: Flow | None, flow: Flow) -> bool:
    return held is flow or held == flow


class _Held:
    """A contribution as the engine keeps it: each switch's flows in a tuple, not a set
    (a third of the memory; compared as sets when it is replaced)."""

    __slots__ = ("flows", "groups", "meters")

    def __init__(self, out: Contribution | None = None, base: _Held | None = None,
                 at: Collection[int] | None = None) -> None:
        """``out``; with ``at``: ``base`` with the switches ``at`` taken from ``out``."""
        self.flows: dict[int, tuple[Flow, ...]] = _patched(
            base.flows if base else {}, at, {d: tuple(f) for d, f in out.flows.items()} if out else {})
        self.groups: dict[int, dict[int, Group]] = _patched(base.groups if base else {}, at, out.groups if out else {})
        self.meters: dict[int, dict[int, Meter]] = _patched(base.meters if base else {}, at, out.meters if out else {})


E = TypeVar("E")


def _patched(base: Mapping[int, E], at: Collection[int] | None, new: Mapping[int, E]) -> dict[int, E]:
    """``new``; with ``at``: ``base`` whose entries of the switches ``at`` are ``new``'s."""
    if at is None:
        return {d: e for d, e in new.items() if e}
    out = dict(base)
    for d in at:
        e = new.get(d)
        if e:
            out[d] = e
        else:
            out.pop(d, None)
    return out


def _switches_changed(old: object, new: object) -> Collection[int] | None:
    """The switches whose entry differs between two ``BySwitch`` inputs of one part with
    the same common inputs; None if the part must be computed whole."""
    if not (isinstance(old, BySwitch) and isinstance(new, BySwitch)) or old.common != new.common:
        return None
    was, now = old.switches, new.switches
    if was is now:
        return ()
    return {dpid for dpid, entry in now.items() if was.get(dpid, _FORGOTTEN) != entry} | (was.keys() - now.keys())


_NOTHING = _Held()


def _overrides(feature: Feature, hook: str) -> bool:
    """The feature has a hook of its own: the base's contributes nothing."""
    return getattr(type(feature), hook) is not getattr(Feature, hook)


class _Forgotten:
    """Inputs equal to nothing: the contribution is computed again."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


_FORGOTTEN = _Forgotten()
