"""Where the diffusion sampler's steps fall: the same weights sampled with each ``sample_spacing`` from the same
starting noise, so the comparison is paired (docs/diffusion.md, "Where the sampler stops").

    python benchmarks/sample_spacing.py                     # the demo's diffusion model, generation seeds 0 and 1
    python benchmarks/sample_spacing.py --model full        # diffusion-cpu as shipped (about 20 min of training)

Setting: br35h at 32x32 (``resolution/r32``), prepared under ``--work`` when missing. The model trains once (seed
0). Each synthetic set is scored by the demo's classifier (DenseNet-121, 4 epochs, seed 0) on the real test fold
against one real classifier: the gap AUC_real - AUC_syn, and real-on-syn (the real classifier on the synthetic
test fold). Sharpness is the mean absolute difference between horizontal neighbours (0-1 scale) over the
training fold, real or synthetic. Every finished piece is kept under ``--work``, so a rerun continues.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sample_efficiency import prepare_data, quiet

from synthmed.benchmark.presets import load_preset
from synthmed.data import BenchmarkSetting
from synthmed.evaluation.classifier import ClassifierConfig
from synthmed.evaluation.eval_dir import EvalDir
from synthmed.evaluation.utility import evaluate_utility
from synthmed.models.diffusion import SPACINGS
from synthmed.synthesis import generate
from synthmed.training.config import load_config
from synthmed.training.loop import start_run, train


def sharpness(setting: BenchmarkSetting) -> float:
    images = setting.images("train").astype(np.float32) / 255.0
    return float(np.abs(np.diff(images, axis=-1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["demo", "full"], default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="generation seeds")
    parser.add_argument("--spacings", nargs="+", choices=SPACINGS, default=list(SPACINGS))
    parser.add_argument("--work", type=Path, default=Path("runs/sample-spacing"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    real_dir = prepare_data(args.work) / "resolution" / "r32"
    run = args.work / f"run-{args.model}"
    if not (run / "run.json").is_file():
        # the demo's diffusion model is its preset entry's config with the entry's overrides
        entry = load_preset("demo").models["diffusion"] if args.model == "demo" else {"config": "diffusion-cpu"}
        config = load_config(entry["config"], {**entry.get("set", {}), "seed": 0, "threads": args.threads})
        start_run(config, real_dir, run)
    train(run, progress=False, log=quiet)
    classifier = ClassifierConfig(input_size=None, max_epochs=4, threads=args.threads, seed=0)
    print(f"real training fold: sharpness {sharpness(BenchmarkSetting(real_dir)):.4f}", flush=True)
    for seed in args.seeds:
        for spacing in args.spacings:
            out = args.work / args.model / spacing / f"seed{seed}"
            timing = out / "sample_seconds.json"
            if not EvalDir(out).utility.is_file():
                started = time.time()
                generate(run, out / "synthetic", seed=seed, sample_spacing=spacing, export_png=False,
                         overwrite=True, progress=False, log=quiet)
                timing.parent.mkdir(parents=True, exist_ok=True)
                timing.write_text(json.dumps({"seconds": round(time.time() - started, 1)}))
                evaluate_utility(real_dir, out / "synthetic" / "setting", classifier, out, log=quiet, progress=False,
                                 real_classifier_path=args.work / f"real_classifier-{args.model}.pt")
            utility = json.loads(EvalDir(out).utility.read_text())
            print(f"{args.model} seed {seed} {spacing}: gap {utility['auc_real_minus_auc_syn']:.4f}, real-on-syn "
                  f"{utility['auc_real_on_syn']['mean']:.4f}, AUC_real {utility['auc_real']['mean']:.4f}, sharpness "
                  f"{sharpness(BenchmarkSetting(out / 'synthetic' / 'setting')):.4f}, sampling "
                  f"{json.loads(timing.read_text())['seconds']} s", flush=True)


if __name__ == "__main__":
    main()
