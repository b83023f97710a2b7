"""Faults under load, measured (issue: faults without failed requests). Run through run.sh.

With BACKEND (local or docker), starts a release `so1s serve` on a fresh data dir, deploys
MiniLM, and for each fault drives `POST /inference/minilm/predict` with wrk (CLIENTS
connections, SECONDS s) while, SECONDS/3 in, the fault strikes the live predict server:

- `kill -9`: supervision (local) or the engine (docker) starts it again; the gateway holds
  the requests meanwhile and sends again those whose connection was refused or reset;
- `SIGSTOP`: the frozen server accepts connections and answers nothing; the gateway answers
  504 at the model's p99 + the slack (SLACK ms) and, after 3 in a row, has it killed and
  started again, holding the requests meanwhile.

Prints a markdown table: requests, failed (non-2xx and socket errors, and of those the 504s
of the frozen server), p50/p99/max latency, time until the server answered again.
Environment: SO1S_FAULTS_BACKEND (local), SO1S_FAULTS_CLIENTS (8), SO1S_FAULTS_SECONDS (15),
SO1S_FAULTS_SLACK_MS (2000), SO1S_FAULTS_MODEL (.cache/models/all-MiniLM-L6-v2).
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "benches"))
sys.path.insert(0, os.path.join(ROOT, "benches", "compare"))
from compare import to_ms  # noqa: E402
from so1s_serve import Serve, remove_docker_leftovers  # noqa: E402

BACKEND = os.environ.get("SO1S_FAULTS_BACKEND", "local")
CLIENTS = int(os.environ.get("SO1S_FAULTS_CLIENTS", "8"))
SECONDS = int(os.environ.get("SO1S_FAULTS_SECONDS", "15"))
SLACK_MS = int(os.environ.get("SO1S_FAULTS_SLACK_MS", "2000"))
MODEL = os.environ.get("SO1S_FAULTS_MODEL", os.path.join(ROOT, ".cache/models/all-MiniLM-L6-v2"))
INSTANCE = f"faults{os.getpid()}"
NAME = "minilm"


class Api(Serve):
    def __init__(self, data):
        args = ["--gateway-timeout-slack-ms", str(SLACK_MS), "--instance", INSTANCE]
        if BACKEND == "docker":
            args += ["--backend", "docker"]
        super().__init__(data, args)

    def model(self):
        return self.call("GET", f"/v1/models/{NAME}", timeout=30)

    def live_pid(self):
        """The live predict server's pid: the child process, or the container's."""
        name = self.model()["health"]["instances"][0]["name"]
        if name.startswith("pid "):
            return int(name.removeprefix("pid "))
        out = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", name],
                             capture_output=True, text=True, check=True).stdout
        return int(out.strip())


def strike(api, fault, delay, back):
    """After `delay` s, sends `fault` to the live server; records in `back` when the model
    is ready again on another process or after a restart."""
    time.sleep(delay)
    pid = api.live_pid()
    restarts = api.model()["health"]["restarts"]
    os.kill(pid, fault)
    struck = time.monotonic()
    while time.monotonic() - struck < 60:
        health = api.model()["health"]
        if health["ready"] and health["restarts"] > restarts:
            back.append(time.monotonic() - struck)
            return
        time.sleep(0.05)


def drive(api, fault):
    back = []
    striker = threading.Thread(target=strike, args=(api, fault, SECONDS / 3, back))
    striker.start()
    output = subprocess.run(
        ["wrk", "-t2", f"-c{CLIENTS}", f"-d{SECONDS}s", "--latency", "--timeout", "60s",
         "-s", os.path.join(ROOT, "benches/compare/post.lua"),
         f"{api.base}/inference/{NAME}/predict", "--", "so1s"],
        capture_output=True, text=True, check=True).stdout
    striker.join()
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    maximum = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", output).group(1)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket": sum(map(int, sockets.groups())) if sockets else 0,
        "p50": to_ms(latency["50"]), "p99": to_ms(latency["99"]), "max": to_ms(maximum),
        "back": back[0] if back else float("nan"),
    }


def clean_up():
    if BACKEND == "docker":
        remove_docker_leftovers(INSTANCE, [f"so1s/{INSTANCE}/{NAME}:v1"])


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        api = Api(os.path.join(tmp, "data"))
        try:
            api.deploy(MODEL, NAME)
            for label, fault in [("kill -9", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)]:
                rows.append((label, drive(api, fault)))
        finally:
            api.stop()
            clean_up()
    flags = open("/proc/cpuinfo").read()
    wanted = [f for f in ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"]
              if f" {f}" in flags]
    print(f"### Faults under load, backend {BACKEND}\n")
    print(f"MiniLM, release build, wrk -c{CLIENTS} for {SECONDS} s, the fault {SECONDS // 3} s in; "
          f"answer timeout p99 + {SLACK_MS} ms; {os.cpu_count()} cores, CPU flags: "
          f"{' '.join(wanted)}.\n")
    print("| fault | requests | non-2xx | socket errors | p50 ms | p99 ms | max ms | serves again after s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows:
        print(f"| {label} | {r['requests']} | {r['non_2xx']} | {r['socket']} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.0f} | {r['back']:.2f} |")


if __name__ == "__main__":
    main()
