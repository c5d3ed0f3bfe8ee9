"""Every capindex name the benchmarks use, imported here and nowhere else.

When capindex's modules move, only this file follows them. It imports `capindex`
first, so that its OpenMP setting (GOMP_SPINCOUNT) applies before torch loads, as
in `capindex ingest`. The benchmark's modules import it inside the functions that
need it, so that making images or checking options loads no torch.
"""

from __future__ import annotations

import capindex  # noqa: F401  (first: it sets GOMP_SPINCOUNT before torch loads)
from capindex.model import EMBEDDING_DIM, embedding_id
from capindex.model.captioner import Caption, Captioner
from capindex.model.decoding import beam_search, beam_search_batched
from capindex.model.embedding import ImageEmbedder
from capindex.model.encoder import imagenet_labels
from capindex.model.preprocess import resize
from capindex.model.query_encoder import QueryEncoder
from capindex.model.text_encoder import TextEncoder
from capindex.pipeline.decode import DecodeDataset
from capindex.pipeline.ingest import decode_loader, ingest
from capindex.pipeline.options import IngestOptions, tuned_options
from capindex.search.ranking import search
from capindex.store import keyword as keyword_module
from capindex.store.catalog import Changes
from capindex.store.keyword import KeywordIndex
from capindex.store.library_dir import LibraryDir
from capindex.store.vectors import VectorIndex

__all__ = ["EMBEDDING_DIM", "Caption", "Captioner", "Changes", "DecodeDataset", "ImageEmbedder",
           "IngestOptions", "KeywordIndex", "LibraryDir", "QueryEncoder", "TextEncoder",
           "VectorIndex", "beam_search", "beam_search_batched", "decode_loader", "embedding_id",
           "imagenet_labels", "ingest", "keyword_module", "resize", "search", "tuned_options"]
