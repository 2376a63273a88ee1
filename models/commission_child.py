"""Commission one asset in a short-lived process: ``python -m models.commission_child``.

The lean (ONNX Runtime) agent never imports torch, but learning a baseline means
fine-tuning the autoencoder, which needs it. The agent writes the asset's samples
to a ``.npy`` file and runs this module; it trains, saves the baseline (torch
weights, JSON) and its ONNX graph into ``--out``, and exits 0. Any failure exits
non-zero with one line on stderr; the agent then keeps the asset's previous state
and tries again later. Being a separate process, it also gives all its memory back
to the system when it ends.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from agent.errors import EdgewatchError

#: Exit codes the agent tells apart in its log.
EXIT_FAILED = 1
EXIT_USAGE = 2


def convert(sources: list[Path], out_root: Path) -> int:
    """Give torch-only baselines (saved by a torch-backend agent) their ONNX graphs:
    each ``source`` is copied to ``out_root/<its name>`` and exported there, so that
    switching backend does not cost every asset a new day of baseline readings."""
    from models.commission import AssetBaseline
    from models.onnx_export import export_baseline

    failed = 0
    for source in sources:
        try:
            baseline = AssetBaseline.load(source)
            export_baseline(baseline, baseline.save(out_root / source.name))
        except (EdgewatchError, OSError, ValueError) as exc:
            sys.stderr.write(f"converting {source} failed: {exc}\n")
            failed += 1
    return EXIT_FAILED if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["convert"]:
        parser = argparse.ArgumentParser(prog="python -m models.commission_child convert")
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("sources", type=Path, nargs="+")
        parsed = parser.parse_args(args[1:])
        return convert(parsed.sources, parsed.out)
    return commission_one(args)


def commission_one(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.commission_child")
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--samples", type=Path, required=True, help=".npy (time, sensors)")
    parser.add_argument("--sensors", required=True, help="JSON list of the columns' names")
    parser.add_argument("--asset", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu-budget", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--scratch", action="store_true", help="never start from the bundle's fleet weights"
    )
    parser.add_argument("--run-sensor", help="own model: the sensor that says the machine runs")
    parser.add_argument("--run-min-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        import torch

        from models.bundle import load_bundle
        from models.commission import commission
        from models.onnx_export import export_baseline
        from models.scoring import RunCondition

        torch.set_num_threads(args.threads)
        samples = np.load(args.samples, allow_pickle=False)
        sensors = [str(s) for s in json.loads(args.sensors)]
        baseline = commission(
            samples,
            load_bundle(args.bundle),
            sensors=sensors,
            asset=args.asset,
            scratch=args.scratch,
            run_condition=(
                RunCondition(args.run_sensor, args.run_min_fraction) if args.run_sensor else None
            ),
            cpu_budget_s=args.cpu_budget,
            threads=args.threads,
        )
        baseline.asset = args.asset
        # What commissioning cost this process, for the agent's event and the docs'
        # sizing (ru_maxrss is in KiB on Linux).
        baseline.info["child_peak_rss_mb"] = round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1
        )
        baseline.info["child_cpu_s"] = round(time.process_time(), 2)
        folder = baseline.save(args.out)
        export_baseline(baseline, folder)
    except (EdgewatchError, OSError, ValueError) as exc:
        sys.stderr.write(f"commissioning {args.asset} failed: {exc}\n")
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
