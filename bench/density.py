#!/usr/bin/env python3
"""Density: many small apps on one `bantam serve` host.

    python3 bench/density.py              # 1000 apps (a few minutes); prints Markdown
    python3 bench/density.py --apps 200
    python3 bench/density.py --smoke      # 10 apps, debug build (CI)

One app (the spin-sdk 7 probe, with its own default key-value store) is
bundled once with `bantam deploy --save-bundle`, then uploaded under N
names to the admin API, one after another, as a deploy pipeline would.
It reports the time per deploy (the upload's round trip: unpack, lay
out, load, open the store, prepare from the shared compiled code), the
host's resident memory per app, the data directory's size per app, and
then asks every app once, by its host name, counting any answer but 200.
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (the main bench's helpers)

TOKEN = "density-bench-token"


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request(port, method, path, body=None, host=None, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    all_headers = dict(headers or {})
    if host:
        all_headers["Host"] = host
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, data


def du_mib(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="10 apps on a debug build")
    args = parser.parse_args()
    if args.smoke:
        args.apps = 10
    profile = "debug" if args.smoke else "release"
    run.run(["cargo", "build", "-p", "bantam-cli"] + ([] if args.smoke else ["--release"]), cwd=run.ROOT)
    run.run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--manifest-path",
             str(run.ROOT / "tests/guests/Cargo.toml")], cwd=run.ROOT)
    bantam = run.ROOT / "target" / profile / "bantam"
    guest = run.ROOT / "tests/guests/target/wasm32-wasip2/release/http_p3_probe.wasm"

    work = Path(tempfile.mkdtemp(prefix="bantam-density-"))
    app = work / "app"
    app.mkdir()
    (app / "spin.toml").write_text(
        'spin_manifest_version = 2\n[application]\nname = "small"\n'
        '[[trigger.http]]\nroute = "/..."\ncomponent = "probe"\n'
        f'[component.probe]\nsource = "{guest}"\nkey_value_stores = ["default"]\n')
    bundle = work / "small.tgz"
    run.run([str(bantam), "deploy", "-f", str(app), "--save-bundle", str(bundle)],
            stdout=subprocess.DEVNULL)
    body = bundle.read_bytes()

    public, admin = run.free_port(), run.free_port()
    data = work / "data"
    env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
    # The host logs a line per deploy: to a file, never to a pipe that no
    # one reads (a full pipe would stall it).
    log = open(work / "serve.log", "w")
    server = subprocess.Popen(
        [str(bantam), "serve", "--listen", f"127.0.0.1:{public}", "--admin-listen",
         f"127.0.0.1:{admin}", "--admin-token", TOKEN, "--data-dir", str(data),
         "--cache-dir", str(work / "compile-cache")],
        env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        run.wait_for_200(f"http://127.0.0.1:{admin}/", server)
        base_rss = rss_mib(server.pid)
        auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/gzip"}
        times = []
        started = time.perf_counter()
        for index in range(args.apps):
            t0 = time.perf_counter()
            status, answer = request(admin, "PUT", f"/v1/apps/app-{index}", body=body, headers=auth)
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"deploy {index}: {status} {answer[:500]!r}")
            if index == 0:
                first_rss = rss_mib(server.pid)
            if (index + 1) % 100 == 0:
                run.log(f"{index + 1} apps deployed, {rss_mib(server.pid):.0f} MiB resident")
        deploy_total = time.perf_counter() - started
        deployed_rss = rss_mib(server.pid)

        failures = 0
        t0 = time.perf_counter()
        for index in range(args.apps):
            status, _ = request(public, "GET", "/?status=200", host=f"app-{index}.localhost")
            failures += status != 200
        answer_total = time.perf_counter() - t0
        served_rss = rss_mib(server.pid)

        # A restart prepares them all again from the data directory.
        server.terminate()
        server.wait(30)
        t0 = time.perf_counter()
        server = subprocess.Popen(server.args, env=env, stdout=subprocess.DEVNULL, stderr=log)
        run.wait_for_200(f"http://127.0.0.1:{admin}/", server, timeout=600)
        restart = time.perf_counter() - t0
        status, _ = request(public, "GET", "/?status=200", host=f"app-{args.apps - 1}.localhost")
        failures += status != 200
    finally:
        server.terminate()
        server.wait(30)

    n = args.apps
    quantiles = statistics.quantiles(times, n=100) if n >= 2 else times * 99
    print(f"## Density ({'smoke' if args.smoke else 'full'} run)\n")
    print(f"Machine: {os.cpu_count()} cores. `python3 bench/density.py --apps {n}`: one spin-sdk 7 app "
          f"with a default key-value store (bundle {len(body) / 2**20:.1f} MiB), deployed {n} times.\n")
    print("| Figure | Value |")
    print("|---|---|")
    print(f"| Apps deployed | {n} |")
    print(f"| First deploy (compiles the component) | {times[0] * 1000:.0f} ms |")
    print(f"| Deploy time per app, median / p99 | {statistics.median(times) * 1000:.1f} ms / {quantiles[98] * 1000:.1f} ms |")
    print(f"| All {n} deploys | {deploy_total:.1f} s |")
    print(f"| Host resident memory: empty / {n} apps deployed / after each answered once | "
          f"{base_rss:.0f} / {deployed_rss:.0f} / {served_rss:.0f} MiB |")
    print(f"| Host resident memory after the first deploy (which compiles the shared code) | {first_rss:.0f} MiB |")
    if n > 1:
        print(f"| Resident memory per further app: deployed, then answered once | "
              f"{(deployed_rss - first_rss) * 1024 / (n - 1):.0f} KiB, "
              f"{(served_rss - first_rss) * 1024 / (n - 1):.0f} KiB |")
    print(f"| Data directory per app (excluding the shared blobs) | "
          f"{du_mib(data / 'apps') * 1024 / n:.0f} KiB |")
    print(f"| One request to each app, in turn | {answer_total:.2f} s ({answer_total / n * 1000:.2f} ms each) |")
    print(f"| Restart to serving all {n} again | {restart:.1f} s |")
    print(f"| Answers other than 200 | {failures} |")
    if failures:
        sys.exit(f"{failures} apps did not answer 200")


if __name__ == "__main__":
    main()
