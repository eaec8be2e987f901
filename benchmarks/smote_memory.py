"""Peak memory of the data stage with and without SMOTE-NC on a 100,000-row table (issue 11, target: with SMOTE
at most 2x without).

The table is UCI Adult (the default config's 13 features, income and hours_per_week) repeated to ``--rows`` rows
and written as Parquet; each measurement is one fresh process running ``mtl.data.load_data`` on the default config
pointed at it, with or without ``training.smote: {task: income}``, and reports its peak RSS (``ru_maxrss``) and
wall time. ``--baseline-mtl DIR`` also measures an older ``mtl`` package the same way.

    .venv/bin/python benchmarks/smote_memory.py
    .venv/bin/python benchmarks/smote_memory.py --rows 100000 --baseline-mtl /tmp/old   # DIR holds mtl/
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
from mtl.config import load_config
from mtl.data import load_data
config = load_config(sys.argv[1])
start = time.perf_counter()
data, _ = load_data(config)
print(json.dumps({"seconds": time.perf_counter() - start, "train_rows": len(data.train),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def write_table(rows: int, work: Path) -> Path:
    import pandas as pd

    sys.path.insert(0, str(REPO))
    from mtl.data import DATASETS

    adult = DATASETS["adult"]()
    frame = pd.concat([adult] * (rows // len(adult) + 1), ignore_index=True).iloc[:rows]
    path = work / "adult_repeated.parquet"
    frame.to_parquet(path)
    return path


def write_config(table: Path, smote: bool, work: Path) -> Path:
    import yaml

    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config["data"] = {**config["data"], "path": str(table)}
    config["data"].pop("dataset", None)
    if smote:
        config["training"]["smote"] = {"task": "income"}
    path = work / ("smote.yaml" if smote else "plain.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def measure(config: Path, mtl_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(mtl_path), "TF_CPP_MIN_LOG_LEVEL": "2"}
    # cwd: ``python -c`` puts the working directory first on sys.path, where a checkout's own ``mtl`` would shadow
    # ``mtl_path``
    done = subprocess.run([sys.executable, "-c", CHILD, str(config)], env=env, capture_output=True, text=True,
                          cwd=config.parent)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--baseline-mtl", default=None, help="a directory holding an older mtl package")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mtl-smote-"))
    table = write_table(args.rows, work)
    configs = {"without SMOTE": write_config(table, False, work), "SMOTE-NC on income": write_config(table, True, work)}
    packages = {"mtl": REPO} | ({"baseline": Path(args.baseline_mtl)} if args.baseline_mtl else {})
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{args.rows:,} rows (UCI Adult repeated), data stage only; load average {load}\n")
    print("| code | run | training rows | peak RSS MiB | seconds | RSS / without SMOTE |")
    print("|---|---|---:|---:|---:|---:|")
    results = {}
    for package, path in packages.items():
        base = None
        for run, config in configs.items():
            r = results[f"{package}, {run}"] = measure(config, path)
            base = base or r["peak_rss_mib"]
            print(f"| {package} | {run} | {r['train_rows']:,} | {r['peak_rss_mib']:,.0f} | {r['seconds']:.1f} "
                  f"| {r['peak_rss_mib'] / base:.2f}x |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
