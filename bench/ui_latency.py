"""The web UI's latency vs the Pipeline call `difflab sample` makes, for the same images.

    python bench/ui_latency.py [--model RUN_OR_FILE] [--n 16] [--steps 40] [--reps 3]

A: `pipe.sample` + PNGs with settings (what `difflab sample` does), in a worker process.
B: the same request through `difflab serve` (its own process) on loopback, read as a browser
reads it (POST queue/join, then the server-sent events; a preview every step); C: the same through
gradio_client (which polls its message queue every 50 ms, so it overstates the latency).
Prints the medians (A/B/C, repeated) of the time to the first step / first x̂0 preview and of the
total (until the gallery's file list arrives; fetching the PNGs, as a browser then does, is not
counted), and the ratios B/A (target ≤ 1.1 for the total). Without --model, a random-weight
U-Net of the digits config is used (its speed is that of a trained one).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import torch

from difflab.core.config import load_config
from difflab.core.imageio import save_images
from difflab.inference import provenance
from difflab.inference.pipeline import load
from difflab.storage import checkpoint as ckpt
from difflab.storage.models import build_denoiser


def random_model(run: Path) -> Path:
    cfg = load_config("digits", ["sample.sampler={name='euler'}"])
    cfg.model.shape = [1, 8, 8]
    torch.manual_seed(0)
    model = build_denoiser(cfg.model)
    ckpt.save_model(ckpt.model_path(run, 1), model.state_dict(), cfg.to_dict(), {"step": 1})
    return run


_PIPES: dict = {}


def direct_worker(source: Path, n: int, steps: int, out: Path) -> tuple[float, float]:
    """`direct` in a worker process of its own (as `difflab sample` and the server run), with
    the Pipeline loaded once."""
    torch.set_num_threads(1)
    if source not in _PIPES:
        _PIPES[source] = load(source)
    return direct(_PIPES[source], source, n, steps, out)


def direct(pipe, source: Path, n: int, steps: int, out: Path) -> tuple[float, float]:
    """(seconds to the first step, total seconds) of the CLI's path after loading: sample + PNGs."""
    t0, first = time.perf_counter(), []
    cb = lambda info: first or first.append(time.perf_counter() - t0)
    result = pipe.sample(n, seed=0, sampler="euler", steps=steps, batch_size=n, callback=cb)
    base = provenance.run_settings(source, pipe, result.asked, result.settings)
    metas = provenance.image_settings(base, result.asked, len(result.x), {})
    save_images(pipe.to_images(result.x).numpy(), out, meta=metas)
    return first[0], time.perf_counter() - t0


INPUTS = ("euler", "", None, "karras", "", 0, None, [], "", "", None, None, 0.6, 1, 1, 1, 0.0, None)


def form(label: str, n: int, steps: int) -> list:
    """The /generate inputs: `label`, euler, `steps`, seed 0, `n` samples, a preview every step."""
    data = [label, *INPUTS]
    data[3], data[7] = steps, n
    return data


def through_client(client, label: str, n: int, steps: int) -> tuple[float, float]:
    """(seconds to the first preview gradio_client sees, total seconds to the gallery); the
    client polls its message queue every 50 ms, so this overstates what a browser sees."""
    t0 = time.perf_counter()
    job = client.submit(*form(label, n, steps), api_name="/generate")
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - t0
        time.sleep(0.002)
    gallery = job.result()[2]
    total = time.perf_counter() - t0
    assert len(gallery) == n
    return first if first is not None else total, total


def through_sse(client, label: str, n: int, steps: int) -> tuple[float, float]:
    """(seconds to the first preview, total seconds to the gallery) as a browser's EventSource
    sees them: POST queue/join, then read the session's server-sent events as they come."""
    import httpx

    session = uuid.uuid4().hex
    body = {"data": form(label, n, steps), "fn_index": client._infer_fn_index("/generate", None),
            "session_hash": session, "event_data": None, "trigger_id": None}  # fmt: skip
    t0, first = time.perf_counter(), None
    with httpx.Client(timeout=None) as http:
        http.post(client.sse_data_url, json=body).raise_for_status()
        with http.stream("GET", client.sse_url, params={"session_hash": session}) as events:
            for line in events.iter_lines():
                if not line.startswith("data:"):
                    continue
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_generating" and first is None:
                    first = time.perf_counter() - t0
                if msg.get("msg") == "process_completed":
                    total = time.perf_counter() - t0
                    assert msg.get("success"), msg
                    assert len(msg["output"]["data"][2]) == n
                    return first if first is not None else total, total
    raise RuntimeError("the event stream ended before the job completed")


def serve(source: Path, out: Path, port: int = 7870):
    """`difflab serve` in its own process (as a user runs it); (process, url) once it answers."""
    cmd = [sys.executable, "-m", "difflab", "serve", str(source), "--port", str(port), "--out",
           str(out)]  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    try:
        urllib.request.urlopen(url, timeout=1)
        raise RuntimeError(f"{url} already answers (an earlier server?); stop it or pick a port")
    except OSError:
        pass
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"difflab serve did not answer on {url}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="run dir or model file (default: a random-weight digits U-Net)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    from gradio_client import Client

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(args.model) if args.model else random_model(Path(tmp) / "run")
        server, url = serve(source, Path(tmp) / "web-out")
        try:
            client = Client(url, verbose=False, download_files=False)  # gallery message only
            label = Path(source).resolve().name
            worker = multiprocessing.get_context("spawn").Pool(1)
            worker.apply(direct_worker, (source, args.n, 2, Path(tmp) / "warm"))
            through_sse(client, label, args.n, 2)  # warm-up: the first request sets up the queue
            a, b, c = [], [], []
            for rep in range(args.reps):  # A/B/C/A/B/C
                a.append(worker.apply(direct_worker, (source, args.n, args.steps,
                                                      Path(tmp) / f"a{rep}")))  # fmt: skip
                b.append(through_sse(client, label, args.n, args.steps))
                c.append(through_client(client, label, args.n, args.steps))
            worker.close()
        finally:  # a server left running would answer the next run's requests
            server.terminate()
            server.wait(30)
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    print(f"n={args.n} steps={args.steps} reps={args.reps} threads={torch.get_num_threads()}")
    print(f"difflab sample (Pipeline): first step {med(a, 0):.3f}s  total {med(a, 1):.3f}s")
    print(f"web UI (SSE, as a browser): first preview {med(b, 0):.3f}s  total {med(b, 1):.3f}s")
    print(f"web UI (gradio_client)    : first preview {med(c, 0):.3f}s  total {med(c, 1):.3f}s")
    print(f"ratio UI (SSE) / sample: first {med(b, 0) / med(a, 0):.2f}  total "
          f"{med(b, 1) / med(a, 1):.2f}; gradio_client total {med(c, 1) / med(a, 1):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
