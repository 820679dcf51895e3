"""Wire size: bytes per record sent (push) and received (push answer, pull),
raw JSON and gzip levels 1–6, clocks included; received ones also in zstd at
the server's level (what the device is sent: `server/compress.py`).

Sent bodies are exactly what a device sends: compact JSON of a push batch of
500 realistic changes (UUIDv7 ids, device HLC clocks). Received bodies come
from the real server when it runs here (its push answers and pull pages);
otherwise they are built with `schemas.merge.to_wire`, the function the
server answers with, and the table says so.

Goal (issue 6): at most 100 bytes per record pushed, gzip.
"""

from __future__ import annotations


import common
from common import BATCH, Generator, Table, encode, gzipped, push_body
from server import compress

LEVELS = (1, 2, 3, 4, 5, 6)
GOAL_BYTES = 100
WIRE_AREA = "QN.WI.01"


ZSTD = f"zstd {compress.ZSTD_LEVEL}"


def _sizes(raw: bytes, n: int) -> dict:
    out = {"raw": len(raw) / n}
    for level in LEVELS:
        out[f"gzip {level}"] = len(gzipped(raw, level)) / n
    if compress.zstd:
        out[ZSTD] = len(compress.encode(raw, "zstd")) / n
    return out


def _batches(seed: int, n: int):
    """(creates body, edits body, per-form bodies) for one round."""
    gen = Generator(seed=seed, area=WIRE_AREA, node="bench-dev-wire")
    creates = gen.creates(n)
    edits = [gen.edit(c) for c in creates]
    anc = [gen.anc_visit() for _ in range(n)]
    growth = [gen.growth() for _ in range(n)]
    return gen, creates, edits, anc, growth


def _received_in_process(creates: list[dict]) -> tuple[bytes, dict, str]:
    """Push answer and pull pages as the server builds them, without a server."""
    from schemas import merge

    answer = {"results": [{"id": c["id"], "status": "applied"} for c in creates],
              "hlc": creates[-1]["hlc"], "skew": {"seconds": 0.0, "restamped": 0}}
    states = [merge.merge(None, c, device="bench-dev-1", user="bench").record for c in creates]
    pages = {}
    for clocks in ("common", "sparse", "all"):
        records = [merge.to_wire(st, seq=i + 1, clocks=clocks)
                   for i, st in enumerate(states)]
        pages[f"pull page of creates, clocks={clocks}"] = encode(
            {"records": records, "cursor": "x" * 40, "more": False, "hlc": creates[-1]["hlc"]})
    return encode(answer), pages, "built in-process with schemas.merge.to_wire"


def _received_from_server(creates: list[dict], edits: list[dict]):
    """Push answer and pull pages from the real server (one user, one device):
    of the creates, then after one edit of each (clocks that differ), with
    common clocks (as the device pulls), sparse ones (as devices before
    common pulled) and every clock (DESIGN's default)."""
    import requests

    with common.serve("wire", WIRE_AREA) as srv:
        client = srv.client("wire", "bench-dev-wire")
        r = client.http.post(srv.url + "/api/v1/sync/push",
                             data=encode(push_body(creates, client.node)),
                             headers={"Content-Type": "application/json"}, timeout=120)
        r.raise_for_status()
        push_answer = r.content
        pages = {}

        def pull(label):
            for clocks in ("common", "sparse", "all"):
                r = client.http.get(srv.url + "/api/v1/sync/pull",
                                    params={"limit": len(creates), "clocks": clocks},
                                    headers={"Accept-Encoding": "identity"}, timeout=120)
                r.raise_for_status()
                pages[f"pull page {label}, clocks={clocks}"] = r.content

        pull("of creates")
        client.push(edits)  # pulled records then carry per-field clocks that differ
        pull("after one edit each")
        # Does the server compress when asked (DESIGN.md: "when the client asks"),
        # and how, when asked as the device asks (requests' default header)?
        g = requests.get(srv.url + "/api/v1/sync/pull", params={"limit": len(creates)},
                         headers={"Authorization": client.http.headers["Authorization"]},
                         timeout=120, stream=True)
        served = g.headers.get("Content-Encoding", "identity")
        g.close()
    return push_answer, pages, f"real server; pull served with Content-Encoding: {served}"


def run(mode: str = "full") -> dict:
    rounds = common.mode_rounds(mode, 5, 3)
    n = BATCH if mode != "smoke" else 50
    sent = {k: [] for k in ("creates", "edits", "anc_visit", "growth")}
    last = None
    for r in range(rounds):
        gen, creates, edits, anc, growth = _batches(seed=r + 1, n=n)
        for key, batch in (("creates", creates), ("edits", edits), ("anc_visit", anc),
                           ("growth", growth)):
            sent[key].append(_sizes(encode(push_body(batch, gen.clock.node)), n))
        last = (creates, edits)

    table = Table(f"wire: bytes per record sent, push batches of {n} (clocks included)")
    for key, label in (("creates", "push creates (anc_visit+growth)"),
                       ("anc_visit", "push creates, anc_visit only"),
                       ("growth", "push creates, growth only"),
                       ("edits", "push edits (1-2 fields, bases)")):
        for enc in ("raw", "gzip 1", "gzip 6"):
            table.add(f"{label}, {enc}", "B/record", [s[enc] for s in sent[key]])
    levels = Table("wire: gzip level vs bytes per record, push creates")
    for level in LEVELS:
        levels.add(f"gzip {level}", "B/record", [s[f"gzip {level}"] for s in sent["creates"]])

    creates, edits = last
    why = common.server_available()
    source = None
    if why is None:
        try:
            answer, pages, source = _received_from_server(creates, edits)
        except Exception as exc:  # the server is a moving part: say why and go on
            why = f"server run failed: {exc}"
    if source is None:
        answer, pages, source = _received_in_process(creates)
        source += f" ({why})"
    recv = Table(f"wire: bytes per record received ({source})")
    for label, body in [("push answer", answer), *pages.items()]:
        s = _sizes(body, n)
        for enc in ("raw", "gzip 1", "gzip 6", ZSTD):
            if enc in s:
                recv.add(f"{label}, {enc}", "B/record", s[enc])

    for t in (table, levels, recv):
        t.print()
    med = common.summary([s["gzip 1"] for s in sent["creates"]])[0]
    verdict = "met" if med <= GOAL_BYTES else f"missed by {med - GOAL_BYTES:.0f} B"
    print(f"goal: <= {GOAL_BYTES} B/record pushed (gzip 1): {med:.0f} B -> {verdict}")
    return {"push_gzip1_bytes": med, "push_raw_bytes": common.summary(
        [s["raw"] for s in sent["creates"]])[0], "tables": [table, levels, recv]}


def main(argv=None):
    common.script_main(run, __doc__, argv)


if __name__ == "__main__":
    main()
