"""Benchmark: the service's image built by podman on the base made from Debian's packages: its size, and what each
build costs.

    python bench/image.py [--runs 3]

Every run starts from an empty cache folder (a temporary $HAR_CONTAINERS_CACHE: the working tree's
.cache/containers is neither used nor touched) and times, in this order:

    base_s               scripts/build_base_image.sh: debootstrap from the Debian mirror, then podman import
    image_cold_s         the Dockerfile on that base with no layer cached: pip fetches the serving requirements
    image_code_change_s  the same build after a change to serve/ (in a copy of the build context): what a commit
                         that changes only code costs when the cache folder is kept
    image_cached_s       the same build again, nothing changed

Medians over the runs; the load average before and after, since the build shares the machine. Sizes are what
podman reports for the image (uncompressed layers), in MB of 10^6 bytes as `podman images` prints them.
Writes metrics/bench_image.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.timing import report  # noqa: E402

PODMAN = ROOT / "scripts" / "podman.sh"
BASE, IMAGE = "localhost/har-base:bookworm", "localhost/har-serve:bench"
CONTEXT = ("Dockerfile", ".dockerignore", "requirements.lock", "params.yaml", "har", "serve", "store")


def run(command: list, env: dict) -> float:
    """Seconds `command` took; its output in the error when it fails."""
    start = time.perf_counter()
    result = subprocess.run([str(c) for c in command], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def inspect(image: str, template: str, env: dict) -> str:
    return subprocess.run([PODMAN, "image", "inspect", "--format", template, image], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()


def one_run(scratch: Path) -> dict:
    env = {**os.environ, "HAR_CONTAINERS_CACHE": str(scratch / "cache")}
    context = scratch / "context"
    context.mkdir()
    for name in CONTEXT:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name, context / name)
    build = [PODMAN, "build", "--build-arg", f"BASE={BASE}", "-t", IMAGE, context]
    try:
        times = {"base_s": run([ROOT / "scripts" / "build_base_image.sh"], env),
                 "image_cold_s": run(build, env)}
        with open(context / "serve" / "__init__.py", "a") as changed:
            changed.write("\n# a change to the code only\n")
        times["image_code_change_s"] = run(build, env)
        times["image_cached_s"] = run(build, env)
        probe = ("import importlib.metadata as m, sys; print(sys.version.split()[0], m.version('onnxruntime'))")
        versions = subprocess.run([PODMAN, "run", "--rm", "--entrypoint", "python", IMAGE, "-c", probe], env=env,
                                  check=True, capture_output=True, text=True).stdout.split()
        return {**times, "image_bytes": int(inspect(IMAGE, "{{.Size}}", env)),
                "base_bytes": int(inspect(BASE, "{{.Size}}", env)),
                "layers": len(json.loads(inspect(IMAGE, "{{json .RootFS.Layers}}", env))),
                "python": versions[0], "onnxruntime": versions[1],
                "debian_python3_11": inspect(BASE, '{{index .Labels "har.base.python"}}', env)}
    finally:
        subprocess.run([PODMAN, "system", "reset", "--force"], env=env, capture_output=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench-image-") as scratch:
            runs.append(one_run(Path(scratch)))
    last = runs[-1]
    median = {key: round(statistics.median(r[key] for r in runs), 1)
              for key in ("base_s", "image_cold_s", "image_code_change_s", "image_cached_s")}
    report({"runs": args.runs, **median,
            "image_size_mb": round(last["image_bytes"] / 1e6, 1), "base_size_mb": round(last["base_bytes"] / 1e6, 1),
            "image_layers": last["layers"], "python": last["python"], "onnxruntime": last["onnxruntime"],
            "debian_python3_11": last["debian_python3_11"],
            "seconds_per_run": [{k: round(r[k], 1) for k in median} for r in runs],
            "load_average_before": load_before, "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "cpus": os.cpu_count(),
            "command": "python bench/image.py" + (f" --runs {args.runs}" if args.runs != 3 else "")}, "image")


if __name__ == "__main__":
    main()
