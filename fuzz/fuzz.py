"""One atheris (libFuzzer) target: python fuzz/fuzz.py TARGET [libFuzzer args...].

`make fuzz` runs every target (fuzz/run.py); this is one of them by hand:

    .venv/bin/python fuzz/fuzz.py push -max_total_time=60 fuzz/.corpus/push fuzz/seeds/push
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main():
    target = sys.argv.pop(1)
    # The app is built inside the block: every module it imports (the API,
    # storage, the form compiler, the device transport) is instrumented.
    with atheris.instrument_imports(include=["server", "schemas", "client_sync", "targets"]):
        import targets
        run = targets.runner(target)
        if target in ("client", "sync"):  # the device library, imported here to be traced
            import client_sync.client  # noqa: F401
            import client_sync.store  # noqa: F401
            import client_sync.sync  # noqa: F401
            import client_sync.transport  # noqa: F401
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
