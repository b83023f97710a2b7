"""Scale to zero, measured (issue: many models on one machine). Run through run.sh.

With BACKEND (local or docker), starts a release `so1s serve` on a fresh data dir, deploys
MiniLM as MODELS models (`so1s deploy`), keeps the first busy (a request every 50 ms) and
measures:

- resident memory of everything so1s runs (the api server and its predict servers; on
  Docker plus the containers' memory as the engine counts it), all models awake, then with
  every model but the busy one scaled to zero (idle policy IDLE seconds);
- wake latency: WAKES times, once the second model has been scaled to zero, the time from
  sending one request to its answer (p50, p99, max).

Prints a markdown table. Environment: SO1S_WAKE_BACKEND (local), SO1S_WAKE_MODELS (10),
SO1S_WAKE_COUNT (20), SO1S_WAKE_IDLE (2), SO1S_WAKE_MODEL (.cache/models/all-MiniLM-L6-v2).
"""
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procfs import tree_rss_kib  # noqa: E402
from so1s_serve import Serve, remove_docker_leftovers  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
BACKEND = os.environ.get("SO1S_WAKE_BACKEND", "local")
MODELS = int(os.environ.get("SO1S_WAKE_MODELS", "10"))
WAKES = int(os.environ.get("SO1S_WAKE_COUNT", "20"))
IDLE = int(os.environ.get("SO1S_WAKE_IDLE", "2"))
MODEL = os.environ.get("SO1S_WAKE_MODEL", os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
INSTANCE = f"wake{os.getpid()}"


def tree_rss_mib(root):
    """Resident memory of `root` and all its descendants, in MiB."""
    return tree_rss_kib(root) / 1024


def containers_mib():
    """Memory of this run's containers as the engine counts it, in MiB."""
    if BACKEND != "docker":
        return 0.0
    ids = subprocess.run(["docker", "ps", "-q", "--filter", f"label=io.so1s.instance={INSTANCE}"],
                         capture_output=True, text=True).stdout.split()
    if not ids:
        return 0.0
    out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", *ids],
                         capture_output=True, text=True).stdout
    units = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "B": 1 / 2 ** 20}
    total = 0.0
    for line in out.splitlines():
        used = line.split("/")[0].strip()
        for unit, factor in units.items():
            if used.endswith(unit):
                total += float(used[: -len(unit)]) * factor
                break
    return total


class Api(Serve):
    def __init__(self, data):
        args = ["--predict-threads", "1"]
        if BACKEND == "docker":
            args += ["--backend", "docker", "--instance", INSTANCE]
        super().__init__(data, args)

    def deploy(self, name):
        super().deploy(MODEL, name)

    def running(self, name):
        return self.call("GET", f"/v1/models/{name}")["scale"]["running"]

    def predict(self, name):
        return self.call("POST", f"/inference/{name}/predict", {"text": "Hello world"}, auth=False)


def wait(check, limit=120):
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > limit:
            raise SystemExit("gave up waiting")
        time.sleep(0.05)


def clean_up(names):
    """Docker: this run's containers and images go."""
    if BACKEND == "docker":
        remove_docker_leftovers(INSTANCE, [f"so1s/{INSTANCE}/{name}:v1" for name in names])


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main():
    # Named after this run: on a shared Docker engine its images are its own.
    names = [f"{INSTANCE}m{i}" for i in range(MODELS)]
    with tempfile.TemporaryDirectory() as tmp:
        api = Api(os.path.join(tmp, "data"))
        busy = threading.Event()
        try:
            for name in names:
                api.deploy(name)

            def keep_busy():
                while not busy.is_set():
                    try:
                        api.predict(names[0])
                    except OSError:
                        pass
                    time.sleep(0.05)

            threading.Thread(target=keep_busy, daemon=True).start()
            time.sleep(2)
            awake = tree_rss_mib(api.child.pid) + containers_mib()
            for name in names[1:]:
                api.call("PATCH", f"/v1/models/{name}", {"idle_after_s": IDLE})
            wait(lambda: not any(api.running(name) for name in names[1:]))
            time.sleep(1)
            idle = tree_rss_mib(api.child.pid) + containers_mib()
            wakes = []
            for _ in range(WAKES):
                wait(lambda: not api.running(names[1]))
                started = time.monotonic()
                api.predict(names[1])
                wakes.append(time.monotonic() - started)
        finally:
            busy.set()
            api.stop()
            clean_up(names)
    flags = open("/proc/cpuinfo").read()
    wanted = [f for f in ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"] if f" {f}" in flags]
    print(f"### Scale to zero, backend {BACKEND}\n")
    print(f"{MODELS} MiniLM models, the first busy (a request every 50 ms), idle policy {IDLE} s, "
          f"release build, predict servers with 1 thread; CPU flags: {' '.join(wanted)}.\n")
    print("| backend | memory, all awake MiB | memory, all but one scaled to zero MiB | "
          f"wake to first answer p50 s | p99 s | max s | wakes |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| {BACKEND} | {awake:.0f} | {idle:.0f} | {percentile(wakes, 50):.2f} | "
          f"{percentile(wakes, 99):.2f} | {max(wakes):.2f} | {len(wakes)} |")


if __name__ == "__main__":
    main()
