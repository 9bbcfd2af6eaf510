"""Benchmark: simulated studies per second (phantom + DICOM write) and inference-service studies per second on CPU.

    python bench/bench_simulate.py --out bench/results/simulate.json

Generation: the planned studies of a stable-scenario day rendered to DICOM at 128x128 and
1024x1024 (phantom, device effects, synthetic PHI, atomic file write). Inference: the service
(DICOM read, tags and statistics, preprocessing, the bootstrap-sized network with 8 MC-dropout
passes, embedding) over the 128x128 files, batch 64, on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import torch

from pipeline.inference import InferenceRequest, InferenceService
from pipeline.model import NetConfig, NormalFilterNet
from pipeline.registry import LoadedModel
from pipeline.simulate.generate import render_study
from pipeline.simulate.plan import plan_day
from pipeline.simulate.scenario import load_scenario

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "stable.yaml"


def rate(count: int, seconds: list[float]) -> float:
    return round(count / statistics.median(seconds), 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--studies-128", type=int, default=300)
    parser.add_argument("--studies-1024", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64, help="network input size (the bootstrap default)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/simulate.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)

    planned = plan_day(load_scenario(SCENARIO), 0)
    result: dict[str, object] = {"benchmark": "simulate", "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for size, count in ((128, args.studies_128), (1024, args.studies_1024)):
            times = []
            for r in range(args.repeats):
                started = time.perf_counter()
                for p in planned[:count]:
                    render_study(p, storage_root=root / f"{size}-{r}", key="k", image_size=size)
                times.append(time.perf_counter() - started)
                print(f"generate {size}x{size}: repeat {r + 1}: {count / times[-1]:.1f} studies/s", flush=True)
            result[f"generate_{size}_studies_per_s"] = rate(count, times)

        files = sorted((root / "128-0").rglob("*.dcm"))
        received = datetime(2026, 1, 5, tzinfo=UTC)
        requests = [InferenceRequest(f, "st-anna", received + timedelta(seconds=i)) for i, f in enumerate(files)]
        model = LoadedModel(NormalFilterNet(NetConfig()), "bench", "1", threshold=0.2, image_size=args.image_size)
        service = InferenceService(model, key="k", mc_samples=8, batch_size=64)
        service.process(requests[:64])  # warm-up
        times = []
        for r in range(args.repeats):
            started = time.perf_counter()
            out = service.process(requests)
            times.append(time.perf_counter() - started)
            print(f"inference: repeat {r + 1}: {len(requests) / times[-1]:.1f} studies/s", flush=True)
        assert len(out.logs) == len(requests)
        result["inference_studies_per_s"] = rate(len(requests), times)
        result["inference_setup"] = {
            "input": "128x128 DICOM",
            "network": "densenet_small",
            "network_input": args.image_size,
            "mc_dropout_passes": 8,
            "batch": 64,
            "device": "cpu",
        }
    result["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__}
    result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
