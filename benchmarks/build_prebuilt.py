"""Build the default run's models from nothing and write them into ``rlaif/prebuilt``.

    RLAIF_CACHE=$(mktemp -d) python benchmarks/build_prebuilt.py [--threads 1] [--note TEXT]

``rlaif run`` on the embedded world needs an SFT policy, a caption-tuned captioner, a world
judge and that judge adapted to the captioner's narratives (``rlaif.train.prebuilt``). This
builds whichever of them ``$RLAIF_CACHE`` lacks, by the same code a run uses, never reading
the shipped set (``RLAIF_PREBUILT=off``), then replaces ``rlaif/prebuilt`` with them and a
manifest of file digests. From an empty cache: about 36 min on two cores at two threads,
about 65 min of one core at one thread. The thread count changes the result (float sums in
another order; at two threads the SFT policy answered 0.378 of the test split, at one
0.416), so the manifest records it; the shipped set was built at one thread.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ["RLAIF_PREBUILT"] = "off"  # before rlaif reads it: build, never copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the builds (default 1)")
    parser.add_argument("--out", default=None, help="where to write the set (default: the package's rlaif/prebuilt)")
    parser.add_argument("--note", default="", help="free text for the manifest (how and where it was built)")
    args = parser.parse_args()

    import torch

    from rlaif.core.cache import PREBUILT_DIR, cache_root, ship
    from rlaif.plugins.encoders.tiny_conv import default_benchmark
    from rlaif.train.prebuilt import BUILD_COMMAND, default_models

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    benchmark = default_benchmark(0)
    models = default_models(benchmark, build=True, progress=True)
    out = Path(args.out) if args.out else PREBUILT_DIR
    about = {"built_by": f"{BUILD_COMMAND} --threads {args.threads}", "torch": torch.__version__,
             "torch_threads": args.threads, "python": platform.python_version(), "note": args.note,
             "shipped": time.strftime("%Y-%m-%d")}
    manifest = ship(models, out, exclude=("stages",), about=about)
    for name, entry in manifest["entries"].items():
        size = sum((out / name / rel).stat().st_size for rel in entry["files"])
        print(f"{entry['what']:<40} {name:<40} {size / 2**20:5.1f} MiB")
    print(f"from {cache_root()} into {out} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
