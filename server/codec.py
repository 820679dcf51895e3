"""The stored texts of a record: `state` (the merge state, packed) and
`wire` (what pull sends), written by storage.Writer and read by pull,
exports and migrations. Pure functions: no SQL here.
"""
import orjson

from schemas import merge as merging


def _dumps(value):
    # Compact UTF-8 JSON, as text (bytes would be stored as a BLOB).
    return orjson.dumps(value).decode()


def encode_state(state):
    """The stored `state` column: the merge state (schemas/merge.py), packed.

    Registers repeat their clock, device and user field after field; packed,
    each distinct clock and (device, user) pair is written once and a field
    refers to them by index, with base and origin left out while null:
    ``{id, form, form_version, area, "f": {name: [value, clock#, node#,
    (base, origin)]}, "t": tombstone register | null, "h": [clock, ...],
    "n": [[device, user], ...]}``. An anc_visit's state takes ~700 bytes
    instead of ~2,100, so a row fits its page.
    """
    clocks, nodes, fields = {}, {}, {}
    for name, reg in state["fields"].items():
        fields[name] = _pack(reg, clocks, nodes)
    tomb = _pack(state["deleted"], clocks, nodes) if state["deleted"] else None
    return _dumps({"id": state["id"], "form": state["form"],
                   "form_version": state["form_version"], "area": state["area"],
                   "f": fields, "t": tomb, "h": list(clocks), "n": list(nodes)})


def _pack(reg, clocks, nodes):
    hlc, node = reg["hlc"], (reg["device"], reg["user"])
    h = clocks.get(hlc)
    if h is None:
        h = clocks[hlc] = len(clocks)
    n = nodes.get(node)
    if n is None:
        n = nodes[node] = len(nodes)
    base, origin = reg.get("base"), reg.get("origin")
    if base is None and origin is None:
        return [reg["value"], h, n]
    return [reg["value"], h, n, base, origin]


def decode_state(text):
    """The merge state from the stored `state` column (`encode_state`); an
    unpacked state (a row written before migration 5) is read as it is."""
    packed = orjson.loads(text)
    if "fields" in packed:
        return packed
    clocks, nodes = packed["h"], packed["n"]
    fields = {}
    for name, p in packed["f"].items():
        device, user = nodes[p[2]]
        fields[name] = {"value": p[0], "hlc": clocks[p[1]], "device": device, "user": user,
                        "base": p[3] if len(p) > 3 else None,
                        "origin": p[4] if len(p) > 3 else None}
    t = packed["t"]
    if t is not None:
        device, user = nodes[t[2]]
        t = {"value": t[0], "hlc": clocks[t[1]], "device": device, "user": user,
             "base": t[3] if len(t) > 3 else None, "origin": t[4] if len(t) > 3 else None}
    return {"id": packed["id"], "form": packed["form"], "form_version": packed["form_version"],
            "area": packed["area"], "fields": fields, "deleted": t}


def create_texts(change, device, user):
    """`(state, wire, hlc)` columns of a new record made by `change` alone:
    exactly `encode_state`, `wire_text` and `merge.record_hlc` of
    `merge.merge(None, change, ...)` when no clock is re-stamped and the
    change has no `deleted`, without building a register per field (the push
    hot path: most changes create).
    """
    hlc, clocks, bases = change["hlc"], change.get("clocks") or {}, change.get("bases") or {}
    data = change["data"]
    stamps, fields, listed, common = {}, {}, {}, {}
    if not clocks:  # a record made in one go: every field has the change's clock
        stamps[hlc] = 0
        top = hlc
        for name, value in data.items():
            base = bases.get(name)
            fields[name] = [value, 0, 0] if base is None else [value, 0, 0, base, None]
    else:
        per = {name: clocks.get(name, hlc) for name in data}
        for name, value in data.items():
            c = per[name]
            h = stamps.get(c)
            if h is None:
                h = stamps[c] = len(stamps)
            base = bases.get(name)
            fields[name] = [value, h, 0] if base is None else [value, h, 0, base, None]
        top = max(stamps)
        shared = merging.common_hlc(list(per.values()), top)
        if shared != top:
            common["common_hlc"] = shared
        listed = {name: c for name, c in per.items() if c != shared}
    head = {"id": change["id"], "form": change["form"], "form_version": change["form_version"],
            "area": change["area"]}
    state = _dumps({**head, "f": fields, "t": None, "h": list(stamps), "n": [[device, user]]})
    wire = _dumps({**head, "data": data, "deleted": False, "hlc": top, "tombstone": None,
                   **common, "clocks": listed})
    return state, wire, top


def wire_text(state):
    """The stored `wire` column: `merge.to_wire(state, clocks="common")` as
    compact JSON text, without `seq`.

    A `clocks=common` pull page is these texts joined, each with its `seq`
    spliced in: pull neither decodes nor encodes them. The other modes decode
    a text to list its clocks their way (`_pull_text`).

    Rows written before `common` stored the `sparse` text. It is also a
    correct `common` text (no `common_hlc`: every unlisted clock is `hlc`),
    only longer for an edited record, so they are served as they are.
    """
    return _dumps(merging.to_wire(state, clocks="common"))
