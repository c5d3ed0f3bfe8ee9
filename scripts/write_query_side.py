"""Write the torch-free query side (embedding.query.safetensors) beside an embedding checkpoint.

`capindex train-embedding` writes it with the checkpoint; run this after replacing a
checkpoint by other means (default: the shipped capindex/weights/embedding.pt):

    python scripts/write_query_side.py [CHECKPOINT]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's capindex

from capindex.model import DEFAULT_EMBEDDING
from capindex.model.embedding import rewrite_query_side

if __name__ == "__main__":
    print(rewrite_query_side(sys.argv[1] if len(sys.argv) > 1 else DEFAULT_EMBEDDING))
