"""Side by side: so1s-predict and BentoML on the same model and the same cores, driven by
wrk. Run through run.sh, which prepares what this needs; see README.md.

Three cases (SO1S_COMPARE_CASES, default all): MiniLM embeddings, a DistilBERT classifier and
a MiniLM cross-encoder reranker. In each, every server is started fresh in each of two
alternating passes: its cold start (spawn to the first ready answer) and the peak memory of
its process tree are measured, its answers to the case's texts are compared with BentoML's
(Python's: sentence-transformers, transformers' pipeline, CrossEncoder), then wrk drives it at
1, 8 and 32 clients. Prints one markdown table per case.
"""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from procfs import tree_rss_kib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
MODELS = os.environ.get("SO1S_COMPARE_MODELS", os.path.join(ROOT, ".cache/models"))
MODEL = os.environ.get("SO1S_COMPARE_MODEL", os.path.join(MODELS, "all-MiniLM-L6-v2"))
VENV = os.environ.get("SO1S_COMPARE_VENV", os.path.join(ROOT, ".cache/venv-compare"))
PREDICT = os.environ.get("SO1S_COMPARE_PREDICT", os.path.join(ROOT, "target/release/so1s-predict"))
CORES = os.environ.get("SO1S_COMPARE_CORES", "0,1")
THREADS = os.environ.get("SO1S_COMPARE_THREADS", "2")
DURATION = int(os.environ.get("SO1S_COMPARE_SECONDS", "15"))
LEVELS = [int(c) for c in os.environ.get("SO1S_COMPARE_CLIENTS", "1,8,32").split(",")]
PASSES = int(os.environ.get("SO1S_COMPARE_PASSES", "2"))
# SO1S_COMPARE_ISA=avx2 runs every server with its kernels capped at AVX2 (PyTorch's own,
# oneDNN's, MKL's and fbgemm's, through their environment variables): an AVX-512 host then
# stands in for an AVX2-only one, and so1s's `precision = auto` follows the caps to f32.
ISA = os.environ.get("SO1S_COMPARE_ISA", "").lower()
ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                     "MKL_ENABLE_INSTRUCTIONS": "AVX2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}}
if ISA and ISA not in ISA_CAPS:
    raise SystemExit(f"SO1S_COMPARE_ISA={ISA}: only avx2 is known")
REFERENCE = json.load(open(os.path.join(ROOT, "so1s-inference/tests/fixtures/minilm-reference.json")))
TEXTS = [item["text"] for item in REFERENCE["items"]]


QUERIES = ["what is model serving?", "Where does the cat sleep?"]


def so1s(name, *flags):
    def command(model, port):
        return [PREDICT, "--model-dir", model, "--port", str(port), "--threads", THREADS, *flags]
    return {"name": name, "command": command, "style": "so1s", "ready": "/readyz"}


def bentoml(service):
    def command(model, port):
        return [os.path.join(VENV, "bin/bentoml"), "serve", f"service:{service}",
                "--host", "127.0.0.1", "--port", str(port)]
    return {"name": "BentoML 1.4.40", "command": command, "style": "bentoml", "ready": "/readyz",
            "cwd": HERE}


def embeddings(server, base):
    if server["style"] == "bentoml":
        return post(base + "/predict", {"texts": TEXTS})
    return [r["result"] for r in post(base + "/predict", {"texts": TEXTS})["results"]]


def labels(server, base):
    if server["style"] == "bentoml":
        return [(r["label"], r["score"]) for r in post(base + "/predict", {"texts": TEXTS})]
    return [(r["result"], r["score"]) for r in post(base + "/predict", {"texts": TEXTS})["results"]]


def rankings(server, base):
    return [post(base + "/rerank", {"query": q, "texts": TEXTS}) for q in QUERIES]


def least_cosine(mine, theirs):
    return f"cosine {min(cosine(a, b) for a, b in zip(mine, theirs)):.5f}"


def label_agreement(mine, theirs):
    same = sum(a[0] == b[0] for a, b in zip(mine, theirs))
    change = max(abs(a[1] - b[1]) for a, b in zip(mine, theirs))
    return f"labels {same}/{len(theirs)}, score Δ ≤ {change:.4f}"


def rank_agreement(mine, theirs):
    same = sum([r["index"] for r in a] == [r["index"] for r in b] for a, b in zip(mine, theirs))
    score = lambda ranked: {r["index"]: r["score"] for r in ranked}
    change = max(abs(score(a)[i] - score(b)[i]) for a, b in zip(mine, theirs) for i in score(b))
    return f"order {same}/{len(theirs)}, score Δ ≤ {change:.4f}"


CASES = {
    "minilm": {
        "title": "MiniLM embeddings (all-MiniLM-L6-v2)",
        "model": MODEL,
        "servers": [
            so1s("so1s-predict defaults"),
            so1s("so1s-predict --precision f32", "--precision", "f32"),
            so1s("so1s-predict --precision int8", "--precision", "int8"),
            so1s("so1s-predict --forward-pass rust-bert", "--forward-pass", "rust-bert"),
            bentoml("Embedder"),
        ],
        "peer": "sentence-transformers",
        "path": {"so1s": "/predict", "bentoml": "/predict"},
        "answers": embeddings, "agreement": least_cosine,
    },
    "classifier": {
        "title": "DistilBERT classifier (distilbert-base-uncased-finetuned-sst-2-english's shape, "
                 "random weights)",
        "model": os.path.join(MODELS, "bench-distilbert-sst2"),
        "servers": [
            so1s("so1s-predict defaults"),
            so1s("so1s-predict --precision f32", "--precision", "f32"),
            so1s("so1s-predict --precision int8", "--precision", "int8"),
            bentoml("Classifier"),
        ],
        "peer": "transformers' pipeline",
        "path": {"so1s": "/predict", "bentoml": "/predict"},
        "answers": labels, "agreement": label_agreement,
    },
    "reranker": {
        "title": "MiniLM cross-encoder reranking one query against 8 texts per request "
                 "(cross-encoder/ms-marco-MiniLM-L-6-v2's shape, random weights)",
        "model": os.path.join(MODELS, "bench-minilm-reranker"),
        "servers": [
            so1s("so1s-predict defaults"),
            so1s("so1s-predict --precision f32", "--precision", "f32"),
            so1s("so1s-predict --precision int8", "--precision", "int8"),
            bentoml("Reranker"),
        ],
        "peer": "sentence-transformers' CrossEncoder",
        "path": {"so1s": "/rerank", "bentoml": "/rerank"},
        "lua": "rerank",
        "answers": rankings, "agreement": rank_agreement,
    },
}
SELECTED = os.environ.get("SO1S_COMPARE_CASES", ",".join(CASES)).split(",")


def cpu_flags():
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni", "amx_int8"]
    with open("/proc/cpuinfo") as f:
        info = f.read()
    flags = next((l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags")), [])
    model = next((l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name")), "?")
    return model, [w for w in wanted if w in flags], os.cpu_count()


class Peak(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, False

    def run(self):
        while not self.done:
            self.peak = max(self.peak, tree_rss_kib(self.pid))
            time.sleep(0.2)


def post(url, body, timeout=30):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server, model):
    port = free_port()
    env = dict(os.environ, SO1S_COMPARE_MODEL=model, SO1S_COMPARE_THREADS=THREADS,
               BENTOML_DO_NOT_TRACK="True", OMP_NUM_THREADS=THREADS, RUST_LOG="warn",
               **ISA_CAPS.get(ISA, {}))
    log = open(os.path.join(OUT, f"{server['name'].split()[0]}-{port}.log"), "w")
    started = time.monotonic()
    child = subprocess.Popen(["taskset", "-c", CORES, *server["command"](model, port)], cwd=server.get("cwd", ROOT),
                             env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    peak = Peak(child.pid)
    peak.start()
    base = f"http://127.0.0.1:{port}"
    while True:
        if child.poll() is not None:
            raise SystemExit(f"{server['name']} exited with {child.returncode}: see {log.name}")
        try:
            with urllib.request.urlopen(base + server["ready"], timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() - started > 180:
            raise SystemExit(f"{server['name']} not ready after 180 s: see {log.name}")
        time.sleep(0.05)
    return child, peak, base, time.monotonic() - started


def stop(child):
    os.killpg(child.pid, signal.SIGTERM)
    try:
        child.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def to_ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def drive(case, server, base, clients):
    output = subprocess.run(
        ["taskset", "-c", CORES, "wrk", "-t1", f"-c{clients}", f"-d{DURATION}s", "--latency",
         "--timeout", "30s", "-s", os.path.join(HERE, "post.lua"), base + case["path"][server["style"]],
         "--", case.get("lua", server["style"])],
        capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    if set(latency) != {"50", "99"}:
        raise SystemExit(f"wrk gave no latency distribution for {server['name']} at c={clients}:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": to_ms(latency["50"]),
        "p99": to_ms(latency["99"]),
        "failed": (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
    }


def forward_passes(base):
    """so1s-predict's own count and total seconds of forward passes (its /metrics)."""
    with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    # Every series carries the model's and version's labels.
    value = lambda name: float(re.search(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M).group(1))
    return value("so1s_forward_pass_seconds_count"), value("so1s_forward_pass_seconds_sum")


def spread(values, fmt):
    low, high = min(values), max(values)
    return fmt.format(low) if fmt.format(low) == fmt.format(high) else (fmt.format(low) + "–" + fmt.format(high))


def run_case(case, model_name, flags):
    servers = case["servers"]
    results = {s["name"]: {"runs": [], "cold": [], "memory": [], "pass": None} for s in servers}
    reference = None
    for p in range(PASSES):
        for server in (servers if p % 2 == 0 else servers[::-1]):
            child, peak, base, cold = start(server, case["model"])
            try:
                answers = case["answers"](server, base)
                if server["style"] == "so1s":
                    with urllib.request.urlopen(base + "/v1/model", timeout=5) as r:
                        results[server["name"]]["pass"] = json.loads(r.read())["model"]["forward_pass"]
                for clients in LEVELS:
                    before = forward_passes(base) if server["style"] == "so1s" else None
                    run = drive(case, server, base, clients)
                    if before:
                        # The mean forward pass in this level, timed by the server itself:
                        # what one client's latency adds HTTP and batching to.
                        count, seconds = (a - b for a, b in zip(forward_passes(base), before))
                        run["forward_ms"] = 1000 * seconds / count if count else None
                    run["clients"] = clients
                    run["pass"] = p
                    results[server["name"]]["runs"].append(run)
                    print(f"pass {p + 1} {server['name']} c={clients}: {run}", file=sys.stderr)
            finally:
                peak.done = True
                stop(child)
                peak.join()
            if server["style"] == "bentoml":
                reference = answers
            results[server["name"]]["answers"] = answers
            results[server["name"]]["cold"].append(cold)
            results[server["name"]]["memory"].append(peak.peak / 1024)

    # Ratios to BentoML within a pass: both measured minutes apart on the same machine.
    bento = {(run["pass"], run["clients"]): run for run in results[servers[-1]["name"]]["runs"]}
    print(f"### {case['title']}\n")
    print(f"{THREADS} threads, server and `wrk -t1` pinned to cores {CORES}, "
          f"{DURATION} s per level, {PASSES} alternating passes (ranges over the passes; ratios to "
          f"BentoML within each pass). CPU: {model_name}; flags: {' '.join(flags) or 'none of AVX2/AVX-512'}"
          + (f"; every server's kernels capped at {ISA.upper()} ({', '.join(f'{k}={v}' for k, v in ISA_CAPS[ISA].items())})"
             if ISA else "") + ".\n")
    header = "| server | forward pass | " + " | ".join(f"c={c} req/s" for c in LEVELS) + \
             f" | c={max(LEVELS)} vs BentoML | c={min(LEVELS)} p50 ms | c={min(LEVELS)} p50 / forward pass | c={max(LEVELS)} p99 ms | p99 vs BentoML | failed" \
             f" | cold start s | peak memory MiB | against {case['peer']} |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for server in servers:
        r = results[server["name"]]
        by = lambda c: [run for run in r["runs"] if run["clients"] == c]
        rps = [spread([run["rps"] for run in by(c)], "{:.0f}") for c in LEVELS]
        top = max(LEVELS)
        ratio = spread([run["rps"] / bento[(run["pass"], top)]["rps"] for run in by(top)], "{:.1f}×")
        p99_ratio = spread([run["p99"] / bento[(run["pass"], top)]["p99"] for run in by(top)], "{:.2f}")
        p50 = spread([run["p50"] for run in by(min(LEVELS))], "{:.1f}")
        overhead = [run["p50"] / run["forward_ms"] for run in by(min(LEVELS)) if run.get("forward_ms")]
        overhead = spread(overhead, "{:.2f}×") if overhead else "—"
        p99 = spread([run["p99"] for run in by(top)], "{:.0f}")
        failed = sum(run["failed"] for run in r["runs"])
        sent = sum(run["requests"] for run in r["runs"])
        agreement = case["agreement"](r["answers"], reference) if reference else "—"
        print(f"| {server['name']} | {r['pass'] or case['peer']} | " + " | ".join(rps) +
              f" | {ratio} | {p50} | {overhead} | {p99} | {p99_ratio} | {failed} of {sent} | {spread(r['cold'], '{:.1f}')} | "
              f"{spread(r['memory'], '{:.0f}')} | {agreement} |")
    print()


def main():
    global OUT
    OUT = os.environ.get("SO1S_COMPARE_OUT", os.path.join(ROOT, "target/compare"))
    os.makedirs(OUT, exist_ok=True)
    model, flags, cores = cpu_flags()
    print(f"CPU: {model}, {cores} cores, flags: {' '.join(flags) or 'none of AVX2/AVX-512'}", file=sys.stderr)
    for name in SELECTED:
        if name not in CASES:
            raise SystemExit(f"SO1S_COMPARE_CASES: unknown case {name!r} (known: {', '.join(CASES)})")
        run_case(CASES[name], model, flags)


if __name__ == "__main__":
    main()
