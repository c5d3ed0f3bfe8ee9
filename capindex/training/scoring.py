"""BLEU-1..4, ROUGE-L and CIDEr-D with the coco-caption scorers (pycocoevalcap).

Hypotheses and references are tokenised by `vocab.tokenize` (lower-case, no
punctuation) instead of coco-caption's Java PTB tokenizer, so no JVM is needed.
"""

from __future__ import annotations

import contextlib
import io

from capindex.errors import CapindexError
from capindex.model.vocab import tokenize

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D")


def score_captions(hypotheses: dict[str, str], references: dict[str, list[str]]) -> dict[str, float]:
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge
    except ImportError as exc:
        raise CapindexError("scoring captions needs the training extra: "
                            "pip install 'capindex[train]' (pycocoevalcap)") from exc

    keys = sorted(hypotheses)
    res = {k: [" ".join(tokenize(hypotheses[k])) or "empty"] for k in keys}
    gts = {k: [" ".join(tokenize(r)) for r in references[k]] for k in keys}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internals
        bleu, _ = Bleu(4).compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)  # coco-caption's Cider is CIDEr-D
    return dict(zip(METRICS, [*map(float, bleu), float(rouge), float(cider)]))
