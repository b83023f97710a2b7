"""A release `so1s serve` on a data dir, driven over HTTP and the CLI, for the benches."""
import json
import os
import subprocess
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.path.join(ROOT, "target/release")


class Serve:
    """`so1s serve --port 0` on `data` with the release binaries and `args`, until stop()."""

    def __init__(self, data, args):
        command = [os.path.join(BIN, "so1s"), "serve", "--port", "0", "--data-dir", data,
                   "--predict-bin", os.path.join(BIN, "so1s-predict"), *args]
        self.child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        self.base = self.child.stdout.readline().strip().removeprefix("listening on ")
        self.data = data
        self.token = open(os.path.join(data, "admin.token")).read().strip()

    def call(self, method, path, body=None, auth=True, timeout=120):
        """A JSON call (with the admin token unless `auth` is false); its JSON answer."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data, headers, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def deploy(self, model_dir, name):
        """`so1s deploy MODEL_DIR --name NAME`: returns once the version is live."""
        env = dict(os.environ, SO1S_SERVER=self.base, SO1S_DATA_DIR=self.data)
        subprocess.run([os.path.join(BIN, "so1s"), "deploy", model_dir, "--name", name],
                       env=env, check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        self.child.terminate()
        self.child.wait(timeout=60)


def remove_docker_leftovers(instance, images):
    """This run's containers (they outlive the api server) and `images` go."""
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=io.so1s.instance={instance}"],
                         capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
    if images:
        subprocess.run(["docker", "rmi", *images], capture_output=True)
