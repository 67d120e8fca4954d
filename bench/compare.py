#!/usr/bin/env python3
"""Interleaved A/B of Bantam builds or flags on one guest: what a change buys.

    python3 bench/compare.py VARIANT VARIANT...  [--guest p3|p2|plain|kv-get|kv-set|sql-select] [--rounds 2]

A VARIANT is `[NAME=VALUE ...] <bantam binary> [bantam up flags...]`, for
example `target/release/bantam` against `/tmp/bantam-before --threads 1`.
Each variant serves the guest in turn, round after round (so a change in
the machine's load hits every variant alike); each turn is a warm-up and
`--repeat` wrk runs. It prints, per variant and round, the requests/s of
each run and the server's CPU time per request, which the load
generator's share of the cores does not blur. BENCHMARKS.md records what
each optimisation bought with this procedure.

Build the "before" binary from the commit before a change (a git worktree
and `cargo build --release -p bantam-cli`) and copy it aside.
"""

import argparse
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the benchmark's own server and wrk helpers)

GUESTS = {
    "p3": ("http_p3_probe", "/?status=200"),
    "p2": ("http_p2_probe", "/?status=200"),
    "plain": ("wasi_http_plain", "/"),
    # The capabilities guest with the default key-value store and database.
    "kv-get": ("capabilities_p3", run.kv_path("get")),
    "kv-set": ("capabilities_p3", run.kv_path("set")),
    "sql-select": ("capabilities_p3", "/?cap=sqlite&db=default&sql=SELECT%20count(*)%20FROM%20sqlite_schema"),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", metavar="VARIANT")
    parser.add_argument("--guest", choices=sorted(GUESTS), default="p3")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    args.warmup = 2

    run.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--manifest-path",
             str(run.ROOT / "tests/guests/Cargo.toml")], cwd=run.ROOT)
    name, path = GUESTS[args.guest]
    guest = run.ROOT / "tests/guests/target/wasm32-wasip2/release" / f"{name}.wasm"
    cache = Path(tempfile.mkdtemp(prefix="bantam-compare-"))
    if args.guest.startswith(("kv-", "sql-")):
        guest = run.store_app(cache / "kv", guest)

    for round_ in range(1, args.rounds + 1):
        for variant in args.variants:
            # Leading NAME=VALUE words are the environment, as in a shell.
            words, env = shlex.split(variant), {}
            while words and "=" in words[0] and not words[0].startswith("-"):
                name, value = words.pop(0).split("=", 1)
                env[name] = value
            binary, flags = words[0], words[1:]
            server = run.Server(variant, [binary, "up", "-f", str(guest), "--listen",
                                          "127.0.0.1:{port}", "-q", "-L", "", "--cache-dir",
                                          str(cache), *flags], path, env=env)
            with server as s:
                r = run.throughput(s, args)
            rps = " ".join(f"{each:,.0f}" for each in r["each_rps"])
            print(f"round {round_} | {variant} | req/s {rps} | "
                  f"server CPU {r['cpu_us']:.0f} µs/req", flush=True)
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
