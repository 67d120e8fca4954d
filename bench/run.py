#!/usr/bin/env python3
"""Bantam's benchmark: every figure side by side, in one run, on this machine.

    python3 bench/run.py            # the full run (several minutes); prints Markdown
    python3 bench/run.py --smoke    # seconds per step: proves the bench still works (CI)

It measures, with a load generator in a separate process on loopback:
  * hello-world throughput and latency through `bantam up` (a wasi:http 0.3
    spin-sdk 7 guest, a 0.2 spin-sdk 5.2 guest and a plain 0.2 guest, each
    with a fresh instance per request, then with the per-connection
    instance reuse a component can opt in to), next to a native hyper
    server (the ceiling) and `wasmtime serve` of the same wasmtime version
    on the same component;
  * p99 latency at half of each server's peak rate (oha's fixed-rate mode),
    and, as the control, native hyper kept busy per request as long as
    Bantam spent on each guest's requests, at that guest's rate;
  * per-request instantiation inside the engine, and memory per instance;
  * start-up to the first 200, with a cold and a warm compile cache, and the
    first request to large (componentize-js, componentize-py) components;
  * key-value set/get through a guest against the embedded store, next to
    native rusqlite doing the same statements;
  * throughput with 1 and 2 worker threads, and peak memory as concurrency
    grows;
  * streaming bodies: a 1 MiB request body echoed back as it arrives, by a
    plain wasi:http 0.2 guest, next to native hyper and `wasmtime serve`.

`--only STEP,...` runs some steps: hello (throughput and latency),
instantiation, startup, kv, scaling, bodies.

Tools: wrk (Debian's package) is required. oha and wasmtime-cli are
installed once with `cargo install` into the cache (BANTAM_BENCH_CACHE,
default ~/.cache/bantam-bench) and reused; --smoke skips what is missing.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASMTIME_VERSION = "48.0.8"
OHA_VERSION = "1.16.0"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk-report.lua"
STEPS = ("hello", "instantiation", "startup", "kv", "scaling", "bodies")
# `wasmtime serve` with a fresh instance per request, as Bantam makes.
WASMTIME_FRESH = ("--max-instance-reuse-count", "1")


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(cmd, **kwargs):
    log("$ " + " ".join(str(c) for c in cmd))
    return subprocess.run(cmd, check=True, **kwargs)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_200(url, process=None, timeout=120.0, interval=0.001):
    """Seconds until `url` first answers 200; fails at once if `process`
    exits first."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - started
        except Exception:
            time.sleep(interval)
    raise RuntimeError(f"{url} did not answer 200 within {timeout}s")


class Server:
    """A server process on a free port, stopped on exit."""

    def __init__(self, name, cmd, path, env=None, cwd=None):
        self.name, self.port = name, free_port()
        self.cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        self.url = f"http://127.0.0.1:{self.port}{path}"
        # RUST_BACKTRACE would make every error value capture a backtrace,
        # in the servers under test as in any Rust program: users serve
        # without it.
        self.env = {k: v for k, v in os.environ.items() if k != "RUST_BACKTRACE"}
        self.env.update(env or {})
        self.cwd = cwd

    def __enter__(self):
        log(f"start {self.name}: {' '.join(self.cmd)}")
        self.started = time.perf_counter()
        # A session of its own, so that stopping it stops whatever it
        # started too (a wrapper such as strace and the server under it).
        self.process = subprocess.Popen(
            self.cmd, env=self.env, cwd=self.cwd, start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            self.startup = wait_for_200(self.url, self.process)
        except Exception:
            self.signal(signal.SIGKILL)
            raise RuntimeError(f"{self.name} did not start: {self.process.stderr.read()[-2000:]}")
        return self

    def peak_rss_mib(self):
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    def signal(self, number):
        """Send `number` to the server's whole process group."""
        try:
            os.killpg(self.process.pid, number)
        except ProcessLookupError:
            pass

    def __exit__(self, *exc):
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()


def wrk(url, connections, seconds, threads=2, body_bytes=None):
    """One wrk run; with `body_bytes`, each request POSTs that many bytes."""
    env = dict(os.environ, **({"WRK_BODY_BYTES": str(body_bytes)} if body_bytes else {}))
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s",
         "-s", str(WRK_SCRIPT), url],
        check=True, capture_output=True, text=True, env=env,
    ).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return json.loads(line[5:])


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def per_request_us(cpu, requests):
    """A server's CPU seconds spread over the requests it served, in µs."""
    return cpu / requests * 1e6 if requests else float("nan")


def throughput(server, args, connections=None, body_bytes=None):
    """Median of `args.repeat` wrk runs after a warm-up: rps, spread, the
    latency percentiles of the median run, and the server's CPU time per
    request over all measured runs (the cost the load generator's share of
    the two cores does not blur). With `body_bytes`, requests are POSTs of
    that size."""
    connections = connections or args.connections
    wrk(server.url, connections, args.warmup, body_bytes=body_bytes)
    cpu_before = cpu_seconds(server.process.pid)
    runs = [wrk(server.url, connections, args.duration, body_bytes=body_bytes)
            for _ in range(args.repeat)]
    cpu = cpu_seconds(server.process.pid) - cpu_before
    requests = sum(r["requests"] for r in runs)
    each_rps = [r["rps"] for r in runs]
    runs.sort(key=lambda r: r["rps"])
    median = runs[len(runs) // 2]
    median["rps_min"], median["rps_max"] = runs[0]["rps"], runs[-1]["rps"]
    median["cpu_us"] = per_request_us(cpu, requests)
    median["each_rps"] = each_rps
    return median


def at_rate(oha, server, rate, seconds):
    """p99 (ms), the achieved rate and the server's CPU µs per request under
    oha's fixed `rate`."""
    before = cpu_seconds(server.process.pid)
    out = subprocess.run(
        [oha, "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-q", str(int(rate)),
         "-c", "64", server.url],
        check=True, capture_output=True, text=True,
    ).stdout
    cpu = cpu_seconds(server.process.pid) - before
    report = json.loads(out)
    answered = sum(report.get("statusCodeDistribution", {}).values())
    return (report["latencyPercentiles"]["p99"] * 1000, report["summary"]["requestsPerSec"],
            per_request_us(cpu, answered))


def cargo_install(crate, version, binary, cache):
    path = cache / "bin" / binary
    if not path.exists():
        run(["cargo", "install", crate, "--version", version, "--locked", "--root", str(cache)])
    return path


def fmt_spread(values):
    """The median of `values` with their min–max spread."""
    values = sorted(values)
    return f"{values[len(values) // 2]:.1f} ({values[0]:.1f}–{values[-1]:.1f})"


def fmt_rps(r):
    return f"{r['rps']:,.0f} ({r['rps_min']:,.0f}–{r['rps_max']:,.0f})"


class Bench:
    """One run of the benchmark: the binaries and guests it measures, the
    servers it starts, and the Markdown report its steps write."""

    def __init__(self, args):
        self.args = args
        self.cache = Path(os.environ.get("BANTAM_BENCH_CACHE",
                                         Path.home() / ".cache" / "bantam-bench"))
        profile = "debug" if args.smoke else "release"
        build = ["cargo", "build", "-p", "bantam-cli", "-p", "bantam-bench"]
        run(build + ([] if args.smoke else ["--release"]), cwd=ROOT)
        run(["cargo", "build", "--release", "--target", "wasm32-wasip2", "--manifest-path",
             str(ROOT / "tests/guests/Cargo.toml")], cwd=ROOT)
        target = ROOT / "target" / profile
        self.bantam, self.native = target / "bantam", target / "native-hello"
        self.instantiate, self.request = target / "instantiate", target / "request"
        guests = ROOT / "tests/guests/target/wasm32-wasip2/release"
        # Hello world in each shape: what `bantam new -t http-rust` makes
        # (spin-sdk 7, wasi:http 0.3), the same with spin-sdk 5.2 (wasi:http
        # 0.2), and a plain wasi:http 0.2 component without an SDK.
        self.p3, self.p2, self.plain, self.caps = (
            guests / f"{n}.wasm" for n in ("hello_p3", "hello_p2", "wasi_http_plain", "capabilities_p3"))
        self.hello_guests = ((self.plain, "plain wasi:http 0.2"),
                             (self.p3, "spin-sdk 7 (wasi:http 0.3)"),
                             (self.p2, "spin-sdk 5.2 (wasi:http 0.2)"))

        if args.smoke:
            def cached(name):
                return shutil.which(name) or (self.cache / "bin" / name
                                              if (self.cache / "bin" / name).exists() else None)
            self.wasmtime, self.oha = cached("wasmtime"), cached("oha")
        else:
            self.wasmtime = cargo_install("wasmtime-cli", WASMTIME_VERSION, "wasmtime", self.cache)
            self.oha = cargo_install("oha", OHA_VERSION, "oha", self.cache)

        self.work = Path(tempfile.mkdtemp(prefix="bantam-bench-"))
        self.compile_cache = self.work / "compile-cache"
        self.report = []

    def out(self, line):
        self.report.append(line)

    def bantam_up(self, app, path, *extra):
        return Server(f"bantam {Path(app).name}",
                      [str(self.bantam), "up", "-f", str(app), "--listen", "127.0.0.1:{port}", "-q",
                       "-L", "", "--cache-dir", str(self.compile_cache), *extra], path)

    def native_up(self, path, *extra):
        return Server("native hyper", [str(self.native), "127.0.0.1:{port}", *extra], path)

    def wasmtime_serve(self, guest, path, *flags):
        # -Scli: the guests import wasi:cli (environment, stdio), which
        # `wasmtime serve` links only when asked.
        return Server("wasmtime serve", [str(self.wasmtime), "serve", "-Scli", *flags,
                                         "--addr", "127.0.0.1:{port}", str(guest)], path)

    def reusing(self, guest):
        """An app of `guest` that opts in to instance reuse (per client
        connection), up to 128 requests per instance as `wasmtime serve`
        and Spin reuse wasi:http 0.3 instances by default."""
        app = self.work / f"reuse-{guest.stem}"
        app.mkdir(exist_ok=True)
        (app / "spin.toml").write_text(
            'spin_manifest_version = 2\n[application]\nname = "reuse"\n[[trigger.http]]\n'
            f'route = "/..."\ncomponent = "hello"\n[component.hello]\nsource = "{guest}"\n'
            '[component.hello.tool.bantam]\ninstance_reuse = { max_requests = 128 }\n')
        return app

    def hello(self):
        """Hello-world throughput, then the latency at half of each peak."""
        args, out = self.args, self.out
        out("### Hello world\n")
        out("| Server | Guest | Requests/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req | vs native | vs wasmtime serve |")
        out("|---|---|---|---|---|---|---|---|---|")
        rows = []
        with self.native_up("/") as s:
            rows.append(("native hyper", "-", throughput(s, args)))
        native = rows[0][2]
        wasmtime_rps, wasmtime_reuse_rps = {}, {}
        if self.wasmtime:
            for guest, label in self.hello_guests:
                # Like for like: a fresh instance per request. `wasmtime
                # serve` reuses a wasi:http 0.3 instance for up to 128
                # requests by default; that row is shown too, as a reference.
                modes = [("", WASMTIME_FRESH)]
                if "0.3" in label:
                    modes.append((" (default: instance reuse)", []))
                for suffix, flags in modes:
                    try:
                        with self.wasmtime_serve(guest, "/", *flags) as s:
                            r = throughput(s, args)
                    except RuntimeError as error:
                        log(f"wasmtime serve cannot run {guest.name}: {error}")
                        continue
                    rows.append((f"wasmtime serve {WASMTIME_VERSION}{suffix}", label, r))
                    (wasmtime_reuse_rps if suffix else wasmtime_rps)[label] = r["rps"]
        bantam_rps = {}
        for guest, label in self.hello_guests:
            with self.bantam_up(guest, "/") as s:
                rows.append(("bantam up", label, throughput(s, args)))
            bantam_rps[guest] = rows[-1][2]["rps"]
        for guest, label in self.hello_guests:
            with self.bantam_up(self.reusing(guest), "/") as s:
                rows.append(("bantam up (opt-in: instance reuse per connection)", label,
                             throughput(s, args)))
        for server, guest, r in rows:
            # Like with like: fresh instances against fresh instances, reuse
            # against `wasmtime serve`'s own reuse.
            baseline = {"bantam up": wasmtime_rps}.get(server, {}).get(guest)
            if server.startswith("bantam") and "reuse" in server:
                baseline = wasmtime_reuse_rps.get(guest)
            vs_wasmtime = f"{r['rps'] / baseline:.2f}x" if baseline else "-"
            out(f"| {server} | {guest} | {fmt_rps(r)} | {r['p50']:.2f} | {r['p99']:.2f} | "
                f"{r['p999']:.2f} | {r['cpu_us']:.0f} | {r['rps'] / native['rps']:.2f}x | {vs_wasmtime} |")
        out("")
        self.floor(native)
        if self.oha:
            self.latency(native, bantam_rps)
        else:
            out("(oha not installed: the fixed-rate latency step was skipped.)\n")

    def floor(self, native):
        """The least a request through a fresh instance can cost a server,
        against what 0.5x native hyper allows it. Under `wrk -t2 -c64` the
        cores are busy, so requests/s = cores / (W + S), W being the load
        generator's CPU per request and S the server's; native hyper's run
        gives W. The floor of S is a whole request through the trigger in
        process (the `request` bench: routing, Spin's headers, a fresh
        instance, the guest, its body, the store dropped; 64 at once, as
        under load) plus all that native hyper spends per request on HTTP
        and TCP."""
        args, out = self.args, self.out
        cores = os.cpu_count()
        loadgen = cores * 1e6 / native["rps"] - native["cpu_us"]
        allowed = loadgen + 2 * native["cpu_us"]
        out("### The floor: the least a request can cost, against the 0.5x target\n")
        out(f"Native hyper above: {native['cpu_us']:.1f} µs of server CPU per request, so the "
            f"load generator takes {loadgen:.1f} µs per request of the {cores} cores; at 0.5x "
            f"native hyper a server may spend at most {allowed:.1f} µs per request. In process: "
            f"median of {args.repeat} runs of the `request` bench, 64 requests at once.\n")
        out("| Guest | In process µs/req | Floor µs/req (+ native hyper's own) | Allowed at 0.5x | Best possible vs native |")
        out("|---|---|---|---|---|")
        for guest, label in self.hello_guests:
            n = "2000" if args.smoke else "20000"
            runs = [json.loads(subprocess.run([str(self.request), str(guest), "/", n], check=True,
                                              capture_output=True, text=True).stdout)
                    for _ in range(args.repeat)]
            each = [r["per_request_us_64_at_once"] for r in runs]
            floor = statistics.median(each) + native["cpu_us"]
            best = (loadgen + native["cpu_us"]) / (loadgen + floor)
            out(f"| {label} | {fmt_spread(each)} | "
                f"{floor:.1f} | {allowed:.1f} | {best:.2f}x |")
        out("")

    def latency(self, native, bantam_rps):
        """p99 at half of peak, each Bantam guest next to its control:
        native hyper made to spend as much CPU per request as Bantam did
        at that rate (which is more than at saturation: caches go cold
        between requests). Its p99 is what that much work per request
        costs on this machine, without anything else Bantam does."""
        out = self.out
        out("### Latency at half of peak throughput\n")
        out("| Server | Rate (req/s) | Achieved | p99 ms | server CPU µs/req at this rate |")
        out("|---|---|---|---|---|")
        seconds = max(self.args.duration, 2)

        def row(name, rate, measured):
            p99, achieved, cpu_us = measured
            out(f"| {name} | {rate:,.0f} | {achieved:,.0f} | {p99:.2f} | {cpu_us:.0f} |")

        with self.native_up("/") as s:
            row("native hyper", native["rps"] / 2, at_rate(self.oha, s, native["rps"] / 2, seconds))
        for guest, label in self.hello_guests:
            rate = bantam_rps[guest] / 2
            with self.bantam_up(guest, "/") as s:
                served = at_rate(self.oha, s, rate, seconds)
            row(f"bantam up, {label}", rate, served)
            # Burn what Bantam spent beyond native hyper's own cost,
            # then correct once by what the control itself spent.
            burn = max(0, served[2] - native["cpu_us"])
            for _ in range(2):
                with self.native_up(f"/?burn={round(burn)}") as s:
                    control = at_rate(self.oha, s, rate, seconds)
                burn = max(0, burn + served[2] - control[2])
            row("control: native hyper spending as much CPU per request", rate, control)
        out("")

    def instantiation(self):
        args, out = self.args, self.out
        out("### Per-request instantiation (in the engine, pooling allocator)\n")
        out(f"Each figure is the median of {args.repeat} runs of the `instantiate` bench, "
            "with the spread of the runs (min–max).\n")
        out("| Guest | new store µs (median) | store + instantiate µs (median) | p99 µs | resident KiB per live instance |")
        out("|---|---|---|---|---|")
        for guest in (self.plain, self.p3, self.p2):
            n = "2000" if args.smoke else "20000"
            runs = [json.loads(subprocess.run([str(self.instantiate), str(guest), n], check=True,
                                              capture_output=True, text=True).stdout)
                    for _ in range(args.repeat)]
            spread = lambda key: fmt_spread([r[key] for r in runs])  # noqa: E731
            out(f"| {runs[0]['component']} | {spread('new_store_median_us')} | "
                f"{spread('instantiate_median_us')} | {spread('instantiate_p99_us')} | "
                f"{statistics.median(r['resident_kib_per_instance'] for r in runs):.0f} |")
        out("")

    def startup(self):
        out, p3 = self.out, self.p3
        out("### Start-up to the first 200\n")
        out("| App | Compile cache | Seconds |")
        out("|---|---|---|")
        shutil.rmtree(self.compile_cache, ignore_errors=True)
        for cache_state in ("cold", "warm"):
            with self.bantam_up(p3, "/") as s:
                out(f"| spin-sdk 7 hello ({p3.stat().st_size // 1024} KiB) | {cache_state} | {s.startup:.3f} |")
        # Large components, as the official JavaScript and Python toolchains
        # make them (several MiB of interpreter and runtime).
        for label, make in (("componentize-js", js_app), ("componentize-py", python_app)):
            large = make(self.cache) if not self.args.smoke else None
            if large is None:
                out(f"| {label} app | | skipped ({'smoke run' if self.args.smoke else 'toolchain missing'}) |")
                continue
            app, wasm = large
            for cache_state in ("cold", "warm"):
                with self.bantam_up(app, "/") as s:
                    out(f"| {label} app ({wasm.stat().st_size / (1 << 20):.0f} MiB) | {cache_state} | {s.startup:.3f} |")
        out("")

    def kv(self):
        out = self.out
        out("### Key-value (embedded SQLite store)\n")
        out("| Operation | Native rusqlite + hyper (req/s) | Bantam guest (req/s) | Ratio |")
        out("|---|---|---|---|")
        app = store_app(self.work / "kv", self.caps)
        for op in ("set", "get"):
            with self.native_up(f"/kv?op={op}", str(self.work / "native-kv.db")) as s:
                n = throughput(s, self.args)
            with self.bantam_up(app, kv_path(op)) as s:
                b = throughput(s, self.args)
            out(f"| {op} | {fmt_rps(n)} | {fmt_rps(b)} | {b['rps'] / n['rps']:.2f}x |")
        out("")

    def scaling(self):
        out = self.out
        out("### Scaling (spin-sdk 7 hello)\n")
        out("| Serving threads (--threads) | Connections | Requests/s | p99 ms | Peak RSS MiB |")
        out("|---|---|---|---|---|")
        for workers, connections in ((1, 64), (2, 64), (2, 256), (2, 1024)):
            with self.bantam_up(self.p3, "/", "--threads", str(workers)) as s:
                r = throughput(s, self.args, connections=connections)
                out(f"| {workers} | {connections} | {fmt_rps(r)} | {r['p99']:.2f} | {s.peak_rss_mib():.0f} |")
        out("")

    def bodies(self):
        out, plain = self.out, self.plain
        out("### Streaming bodies (a 1 MiB request body echoed back as it arrives)\n")
        out("| Server | Guest | MiB/s each way (requests/s) | server CPU ms per MiB | vs native | vs wasmtime serve |")
        out("|---|---|---|---|---|---|")
        mib, connections = 1 << 20, 16
        servers = [("native hyper", "-", lambda: self.native_up("/?stream"))]
        if self.wasmtime:
            servers.append((f"wasmtime serve {WASMTIME_VERSION}", "plain wasi:http 0.2",
                            lambda: self.wasmtime_serve(plain, "/?stream", *WASMTIME_FRESH)))
        servers.append(("bantam up", "plain wasi:http 0.2",
                        lambda: self.bantam_up(plain, "/?stream")))
        rows = []
        for name, guest, make in servers:
            with make() as s:
                rows.append((name, guest,
                             throughput(s, self.args, connections=connections, body_bytes=mib)))
        # One request is one MiB each way: requests/s are MiB/s.
        native_mibs = rows[0][2]["rps"]
        wasmtime_mibs = next((r["rps"] for name, _, r in rows if name.startswith("wasmtime")), None)
        for name, guest, r in rows:
            vs_wasmtime = (f"{r['rps'] / wasmtime_mibs:.2f}x"
                           if name == "bantam up" and wasmtime_mibs else "-")
            out(f"| {name} | {guest} | {fmt_rps(r)} | {r['cpu_us'] / 1000:.2f} | "
                f"{r['rps'] / native_mibs:.2f}x | {vs_wasmtime} |")
        out("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one short run of each step")
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--repeat", type=int, default=3, help="measured runs per figure")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", default=",".join(STEPS),
                        help=f"comma-separated steps to run, of: {', '.join(STEPS)}")
    args = parser.parse_args()
    steps = set(args.only.split(","))
    if steps - set(STEPS):
        sys.exit(f"unknown steps {', '.join(sorted(steps - set(STEPS)))}; known: {', '.join(STEPS)}")
    args.warmup = 2
    if args.smoke:
        args.duration, args.repeat, args.warmup = 1, 1, 1
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: sudo apt-get install -y wrk")

    bench = Bench(args)
    bench.out(f"## Results ({'smoke' if args.smoke else 'full'} run)\n")
    bench.out(f"Machine: {os.cpu_count()} cores; {args.repeat} runs of {args.duration}s after "
              f"{args.warmup}s of warm-up, wrk -t2 -c{args.connections}; spread is min–max.\n")
    for step in STEPS:
        if step in steps:
            getattr(bench, step)()
    shutil.rmtree(bench.work, ignore_errors=True)
    print("\n".join(bench.report))


def store_app(app, guest):
    """An app in `app` of the capabilities guest `guest` with the default
    key-value store and SQLite database (`.spin/sqlite_key_value.db` and
    `.spin/sqlite_db.db` in the app)."""
    app.mkdir(exist_ok=True)
    (app / "spin.toml").write_text(
        'spin_manifest_version = 2\n[application]\nname = "kv"\n[[trigger.http]]\nroute = "/..."\n'
        f'component = "kv"\n[component.kv]\nsource = "{guest}"\nkey_value_stores = ["default"]\n'
        'sqlite_databases = ["default"]\n')
    return app


def kv_path(op):
    """The capabilities guest's path for one key-value `op` (set or get)."""
    return f"/?cap=kv&store=default&op={op}&key=k&value=v"


def template_app(cache, template, name, component, prepare=lambda app: os.environ):
    """An app from one of `bantam new`'s templates, built once in the cache:
    (app directory, its component). `prepare` readies the toolchain in the
    new app and returns the environment its build runs in."""
    app = cache / name
    wasm = app / component
    if not wasm.exists():
        shutil.rmtree(app, ignore_errors=True)
        bantam = ROOT / "target/release/bantam"
        run([str(bantam), "new", "-t", template, name, "-a", "-o", str(app)], cwd=cache)
        run([str(bantam), "build"], cwd=app, env=prepare(app))
    return app, wasm


def python_app(cache):
    """A componentize-py app (http-py), its requirements in a virtual
    environment as the template's README says."""
    def venv(app):
        run([sys.executable, "-m", "venv", str(app / ".venv")])
        run([str(app / ".venv/bin/pip"), "install", "-q", "-r", "requirements.txt"], cwd=app)
        return {**os.environ, "PATH": f"{app / '.venv/bin'}:{os.environ['PATH']}"}
    return template_app(cache, "http-py", "py-app", "app.wasm", venv)


def js_app(cache):
    """A componentize-js app (http-js; its build runs npm), or None without
    npm."""
    if not shutil.which("npm"):
        return None
    return template_app(cache, "http-js", "js-app", "dist/js-app.wasm")


if __name__ == "__main__":
    main()
