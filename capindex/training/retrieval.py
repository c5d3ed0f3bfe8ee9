"""Text-to-image retrieval scores: each caption queries the images, its own image is the hit."""

from __future__ import annotations

import torch


def text_to_image_ranks(queries: torch.Tensor, images: torch.Tensor, targets: torch.Tensor,
                        chunk: int = 1024) -> torch.Tensor:
    """1-based rank of each query's target image among `images` by cosine (dot product of
    unit vectors): queries (Q, D), images (I, D), targets (Q,) indices into images."""
    ranks = []
    for start in range(0, len(queries), chunk):
        sims = queries[start : start + chunk] @ images.T  # (q, I)
        own = sims.gather(1, targets[start : start + chunk, None])  # (q, 1)
        ranks.append((sims > own).sum(dim=1) + 1)  # (q,)
    return torch.cat(ranks) if ranks else torch.empty(0, dtype=torch.long)


def retrieval_scores(ranks: torch.Tensor) -> dict:
    """Recall at 1, 5 and 10 and the median rank of 1-based `ranks`."""
    r = ranks.float()
    return {"R@1": round(float((r <= 1).float().mean()), 4),
            "R@5": round(float((r <= 5).float().mean()), 4),
            "R@10": round(float((r <= 10).float().mean()), 4),
            "median_rank": float(r.median()) if len(r) else float("nan"),
            "queries": len(r)}
