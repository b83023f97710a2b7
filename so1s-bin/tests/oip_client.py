"""An Open Inference Protocol client session, with Triton's Python client (tritonclient[http]):
what users of KServe and Triton bring. Run by so1s-bin/tests/oip.rs with the venv that
scripts/setup.sh makes (.cache/venv-oip).

    python oip_client.py URL MODEL VERSION TEXTS_JSON OUTPUTS

URL is host:port. OUTPUTS is a comma-separated list of output names. Prints one JSON object:
the health and metadata answers, then for binary and for JSON tensors the outputs (as lists)
of one infer of the texts — first with the model's name alone, then with the version named.
"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException


def infer(client, model, version, texts, outputs, binary):
    text = httpclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=np.object_), binary_data=binary)
    requested = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    result = client.infer(model, [text], model_version=version, outputs=requested, request_id="so1s-test")
    answer = {"id": result.get_response()["id"], "model_version": result.get_response()["model_version"]}
    for name in outputs:
        array = result.as_numpy(name)
        if array.dtype == np.object_:
            array = np.vectorize(lambda b: b.decode() if isinstance(b, bytes) else b)(array)
        answer[name] = {"shape": list(array.shape), "data": array.tolist()}
    return answer


def main():
    url, model, version, texts, outputs = sys.argv[1:6]
    texts = json.loads(texts)
    outputs = outputs.split(",")
    client = httpclient.InferenceServerClient(url)
    report = {
        "server_live": client.is_server_live(),
        "server_ready": client.is_server_ready(),
        "server_metadata": client.get_server_metadata(),
        "model_ready": client.is_model_ready(model),
        "model_ready_version": client.is_model_ready(model, version),
        "model_metadata": client.get_model_metadata(model),
        "binary": infer(client, model, "", texts, outputs, True),
        "json": infer(client, model, version, texts, outputs, False),
    }
    # Errors come back as the client's exception with the server's message.
    try:
        client.get_model_metadata(model + "-unknown")
        report["unknown_model"] = None
    except InferenceServerException as e:
        report["unknown_model"] = {"status": e.status(), "message": e.message()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
