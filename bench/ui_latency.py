"""The web UI's latency vs the Pipeline call `difflab sample` makes, for the same images.

    python bench/ui_latency.py [--model RUN_OR_FILE] [--n 16] [--steps 40] [--reps 3]

A: `pipe.sample` + PNGs with settings (what `difflab sample` does), in this process.
B: the same request through `difflab serve` (its own process) on loopback, driven by gradio_client (preview every
step). Prints the medians (A/B/A/B) of the time to the first step / first x̂0 preview and of the
total (until the gallery's file list arrives; fetching the PNGs, as a browser then does, is not
counted), and the ratios B/A (target ≤ 1.1 for the total). Without --model, a random-weight
U-Net of the digits config is used (its speed is that of a trained one).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
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


def direct(pipe, source: Path, n: int, steps: int, out: Path) -> tuple[float, float]:
    """(seconds to the first step, total seconds) of the CLI's path after loading: sample + PNGs."""
    t0, first = time.perf_counter(), []
    cb = lambda info: first or first.append(time.perf_counter() - t0)
    result = pipe.sample(n, seed=0, sampler="euler", steps=steps, batch_size=n, callback=cb)
    base = provenance.run_settings(source, pipe, result)
    save_images(pipe.to_images(result.x).numpy(), out, meta=provenance.image_settings(base, result, {}))
    return first[0], time.perf_counter() - t0


def through_ui(client, label: str, n: int, steps: int) -> tuple[float, float]:
    """(seconds to the first preview the client sees, total seconds to the gallery)."""
    t0 = time.perf_counter()
    job = client.submit(label, "euler", "", steps, "karras", "", 0, n, [], "", "", None, None,
                        0.6, 1, api_name="/generate")  # fmt: skip
    first = None
    while not job.done():
        if first is None and job.outputs():
            first = time.perf_counter() - t0
        time.sleep(0.002)
    gallery = job.result()[2]
    total = time.perf_counter() - t0
    assert len(gallery) == n
    return first if first is not None else total, total


def serve(source: Path, out: Path, port: int = 7870):
    """`difflab serve` in its own process (as a user runs it); (process, url) once it answers."""
    cmd = [sys.executable, "-m", "difflab", "serve", str(source), "--port", str(port), "--out",
           str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
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
        client = Client(url, verbose=False, download_files=False)  # gallery message, not fetches
        label, pipe = Path(source).resolve().name, load(source)
        through_ui(client, label, args.n, 2)  # warm-up: the first request sets up the queue
        a, b = [], []
        for rep in range(args.reps):  # A/B/A/B
            a.append(direct(pipe, source, args.n, args.steps, Path(tmp) / f"a{rep}"))
            b.append(through_ui(client, label, args.n, args.steps))
        server.terminate()
        server.wait(30)
    med = lambda runs, k: statistics.median(r[k] for r in runs)
    print(f"n={args.n} steps={args.steps} reps={args.reps} threads={torch.get_num_threads()}")
    print(f"difflab sample (Pipeline): first step {med(a, 0):.3f}s  total {med(a, 1):.3f}s")
    print(f"web UI (loopback client) : first preview {med(b, 0):.3f}s  total {med(b, 1):.3f}s")
    print(f"ratio UI / sample: first {med(b, 0) / med(a, 0):.2f}  total {med(b, 1) / med(a, 1):.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
