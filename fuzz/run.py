"""`make fuzz`: every target in fuzz/targets.py under atheris for a while.

    python fuzz/run.py [--seconds 60] [--only push,pull]

Each target starts from its committed seeds (fuzz/seeds/TARGET) and a working
corpus that grows across runs (fuzz/.corpus/TARGET, not committed). A finding
is written to fuzz/crashes/TARGET-crash-<hash>; to keep it as a regression
case, fix the bug and move the file into fuzz/seeds/TARGET: `make test`
replays every seed (tests/test_fuzz_seeds.py). Exits 1 if any target found
something.
"""
import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from targets import TARGETS  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=int, default=60, help="per target (default 60)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(TARGETS)}")
    args = p.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(TARGETS)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    failed = []
    for target in chosen:
        corpus = HERE / ".corpus" / target
        corpus.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, str(HERE / "fuzz.py"), target, f"-max_total_time={args.seconds}",
             "-rss_limit_mb=2048", "-timeout=20", f"-artifact_prefix={crashes}/{target}-",
             str(corpus), str(HERE / "seeds" / target)],
            capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+).*?corp: (\d+)", out)
        runs, cov, corp = done[-1] if done else ("?", "?", "?")
        found = re.findall(r"Test unit written to (\S+)", out)
        verdict = "ok" if proc.returncode == 0 and not found else "FOUND SOMETHING"
        print(f"{target:7} {verdict}: {runs} runs in {args.seconds} s, coverage {cov}, "
              f"corpus {corp} inputs" + "".join(f"\n    {f}" for f in found), flush=True)
        if verdict != "ok":
            failed.append(target)
            tail = [line for line in out.splitlines() if "Finding" in line or "Error" in line]
            print("    " + "\n    ".join(tail[-8:] or out.splitlines()[-15:]), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
