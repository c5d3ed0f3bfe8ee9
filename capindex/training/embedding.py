"""Train the image side of search by meaning against frozen MiniLM caption embeddings.

Symmetric InfoNCE with in-batch negatives and a learned temperature, on cached
encoder features and cached caption embeddings; early-stopped on the first
dataset's val split (text -> image R@10). `prepare_data` once, then `fit` as often
as an experiment needs; `train_embedding` does both and writes the checkpoint.
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from capindex.model.embedding import (
    ConceptTable,
    EmbeddingConfig,
    EmbeddingNet,
    combine_members,
    load_embedding,
    save_embedding,
)
from capindex.model.encoder import ENCODER_ID, Encoder, weights_sha256
from capindex.model.text_encoder import TEXT_MODEL_ID, TextEncoder
from capindex.model.vocab import tokenize
from capindex.training.datasets import CaptionDataset
from capindex.training.features import cached_features
from capindex.training.retrieval import retrieval_scores, text_to_image_ranks
from capindex.training.search_eval import WORDS
from capindex.training.text_features import cached_text_embeddings


def _shipped_model() -> dict:
    return {"dropout": 0.5, "text_adapter": True}


def _shipped_second_stage() -> dict:
    """Words as queries: from the first stage's best network, at a lower rate, with the
    best epoch chosen by caption R@10 + word P@10 (docs/embedding.md)."""
    return {"word_weight": 1.0, "lr": 3e-4, "captions_per_image": 2, "epochs": 4,
            "patience": 2, "select_words": True}


@dataclass
class EmbeddingTrainConfig:
    """Defaults = the shipped recipe (docs/embedding.md has the lever study behind it)."""

    epochs: int = 10  # most epochs (early stopping may end sooner)
    batch_size: int = 256
    lr: float = 5e-4
    weight_decay: float = 0.0
    captions_per_image: int = 5  # passes over the images per epoch, each with another caption
    centroid_weight: float = 0.5  # auxiliary InfoNCE against the mean of an image's captions
    hard_batches: float = 0.0  # share of passes whose batches hold images of one cluster
    clusters: int = 32  # k-means clusters of caption centroids, for hard batches
    patience: int = 2  # epochs without a better val R@10 before stopping
    word_weight: float = 0.3  # auxiliary loss: single words of the captions as queries
    word_min_images: int = 5  # a word is a training query when this many train images use it
    init: str | None = None  # a checkpoint to start from (its model config is kept), or None
    concept_z: float = 2.0  # a concept word's threshold: its mean cosine over the train images
    # plus this many standard deviations (ConceptTable)
    concept_limit: int = 10  # most concept words per image
    # overrides of a second stage that starts from the first's best network (None: one stage)
    then: dict | None = field(default_factory=_shipped_second_stage)
    select_words: bool = False  # the best epoch: by val R@10 + word P@10 (else R@10 alone)
    crop: float = 0.0  # share of training images pooled over a random window of the grid
    crop_min: int = 5  # the smallest window side (cells of the 7 x 7 grid)
    ema: float = 0.0  # evaluate and keep an exponential moving average of the weights (0: off)
    cosine: bool = False  # the learning rate decays to 0 over `epochs` by a half cosine
    members: int = 3  # networks trained apart (seeds seed, seed + 1, ...), then combined
    seed: int = 0
    model: dict = field(default_factory=_shipped_model)  # overrides of EmbeddingConfig fields


@dataclass
class ValSplit:
    name: str
    images: torch.Tensor  # (I,) indices into EmbeddingData's image rows
    captions: torch.Tensor  # (Q,) indices into EmbeddingData.text
    targets: torch.Tensor  # (Q,) position of each caption's image within `images`
    words: torch.Tensor | None = None  # (W, 384) MiniLM vectors of search_eval.WORDS found here
    word_relevant: torch.Tensor | None = None  # (W, I) bool: image relevant to the word


@dataclass
class WordQueries:
    """Single caption words as training queries (`word_weight`)."""

    words: list[str]  # content words used by `word_min_images` train images or more
    vectors: torch.Tensor  # (V, 384) float32 unit MiniLM vectors of the words
    positive: torch.Tensor  # (images, V) bool: the image's captions use the word (two of
    # them; the one caption when it has one), as the word or its plural
    unsure: torch.Tensor  # (images, V) bool: fewer captions use it: neither positive nor negative


@dataclass
class EmbeddingData:
    """Everything training reads, one row per image / caption of every dataset."""

    grids: torch.Tensor  # (images, 49, 1280) fp16
    pooled: torch.Tensor  # (images, 1280) float32: grid mean
    logits: torch.Tensor  # (images, 1000) float32: ImageNet logits
    text: torch.Tensor  # (captions, 384) float32 unit MiniLM vectors
    caption_image: torch.Tensor  # (captions,) image row of each caption
    train_images: torch.Tensor  # (T,) image rows of every dataset's train split
    val: list[ValSplit]
    data: list[dict]  # provenance: dataset names and sizes
    timings: dict  # seconds spent on image features and text embeddings
    words: WordQueries | None = None
    classifier: torch.nn.Linear | None = None  # the encoder's ImageNet head (grid mean -> logits)

    def captions_of(self) -> list[torch.Tensor]:
        """Caption indices of each image row."""
        order = torch.argsort(self.caption_image, stable=True)
        counts = torch.bincount(self.caption_image, minlength=len(self.pooled)).tolist()
        return list(order.split(counts))

    def centroids(self) -> torch.Tensor:
        """(images, 384) unit mean of each image's caption vectors."""
        sums = torch.zeros(len(self.pooled), self.text.shape[1], device=self.text.device)
        sums.index_add_(0, self.caption_image.to(self.text.device), self.text)
        return F.normalize(sums, dim=-1)


def prepare_data(datasets: list[CaptionDataset], cache_dir: Path,
                 log: Callable[[str], None] = print, word_min_images: int = 5) -> EmbeddingData:
    """Encoder grids + logits of every image and MiniLM vectors of every caption (both cached),
    the caption words as training queries and the evaluation's word queries of each val split."""
    encoder: list[Encoder] = []  # built only when features or logits are needed
    text_encoder: list[TextEncoder] = []

    def encoder_factory() -> Encoder:
        if not encoder:
            encoder.append(Encoder().to(memory_format=torch.channels_last))
        return encoder[0]

    def text_factory() -> TextEncoder:
        if not text_encoder:
            text_encoder.append(TextEncoder.load())
        return text_encoder[0]

    grids, text_vectors, texts, caption_image, train, val, data = [], [], [], [], [], [], []
    image_seconds = text_seconds = 0.0
    for ds in datasets:
        names = sorted(ds.captions)  # the captioning trainer's order: one shared cache
        start = time.perf_counter()
        feats = cached_features(ds.image_dir, names, cache_dir, encoder_factory)
        image_seconds += time.perf_counter() - start
        offset = sum(len(g) for g in grids)
        rows = {n: offset + i for i, n in enumerate(names)}
        grids.append(torch.stack([feats[n] for n in names]))  # (n, 49, 1280) fp16
        del feats
        first_caption = len(texts)
        for n in names:
            texts += ds.captions[n]
            caption_image += [rows[n]] * len(ds.captions[n])
        start = time.perf_counter()
        vectors = cached_text_embeddings(texts[first_caption:], cache_dir, text_factory,
                                         label=f"{ds.name}-captions")
        text_seconds += time.perf_counter() - start
        text_vectors.append(vectors)
        train += [rows[n] for n in ds.train]
        if ds.val:
            val_rows = [rows[n] for n in ds.val]
            position = {r: i for i, r in enumerate(val_rows)}
            caps = [c for c in range(first_caption, len(texts)) if caption_image[c] in position]
            val.append(ValSplit(ds.name, torch.tensor(val_rows), torch.tensor(caps),
                                torch.tensor([position[caption_image[c]] for c in caps])))
        data.append({"name": ds.name, "train_images": len(ds.train), "val_images": len(ds.val),
                     "captions": len(texts) - first_caption})
        log(f"{ds.name}: {len(names)} images, {len(texts) - first_caption} captions")
    grid = torch.cat(grids)  # (images, 49, 1280) fp16
    pooled = torch.cat([g.float().mean(dim=1) for g in grid.split(1024)])  # (images, 1280)
    with torch.no_grad():  # the classifier head on the grid mean, as Encoder.forward does
        fc = copy.deepcopy(encoder_factory().net._fc).float().eval().requires_grad_(False)
        logits = torch.cat([fc(p) for p in pooled.split(1024)])  # (images, 1000)
    encoder.clear()
    caption_image = torch.tensor(caption_image)
    tokens = [set(tokenize(t)) for t in texts]
    train = torch.tensor(train)
    start = time.perf_counter()
    words = _word_queries(tokens, caption_image, len(pooled), train, word_min_images,
                          cache_dir, text_factory)
    eval_words = cached_text_embeddings(list(WORDS), cache_dir, text_factory, label="eval-words")
    relevant_all = _enough(_mentions(list(WORDS), tokens, caption_image, len(pooled),
                                     plurals=False), caption_image, len(pooled))[0]
    for split in val:
        relevant = relevant_all[split.images].T  # (W, I)
        found = relevant.any(dim=1)
        split.words, split.word_relevant = eval_words[found], relevant[found]
    text_seconds += time.perf_counter() - start
    log(f"word queries: {len(words.words)} words, {int(words.positive.sum())} image-word pairs")
    return EmbeddingData(grid, pooled, logits, torch.cat(text_vectors).float(),
                         caption_image, train, val, data,
                         {"image_features_s": round(image_seconds, 1),
                          "text_embeddings_s": round(text_seconds, 1)}, words, fc)


def _mentions(words: list[str], tokens: list[set[str]], caption_image: torch.Tensor,
              images: int, plurals: bool = True) -> torch.Tensor:
    """(images, words) int: how many of each image's captions use each word, as the word or
    its plural (+s, +es). `plurals`: a caption word is also read as its singular when that
    is one of `words` ("dogs" counts for "dog"), instead of looking for each word's forms."""
    index = {w: i for i, w in enumerate(words)}
    forms = {} if plurals else {f: i for w, i in index.items() for f in (w, w + "s", w + "es")}
    rows, cols = [], []
    for caption, row in zip(tokens, caption_image.tolist()):
        found = set()
        for t in caption:
            if plurals:
                found.update(index[f] for f in (t, t[:-1] if t.endswith("s") else "",
                                                t[:-2] if t.endswith("es") else "") if f in index)
            elif t in forms:
                found.add(forms[t])
        rows += [row] * len(found)
        cols += found
    counts = torch.zeros(images, len(words), dtype=torch.int16)
    counts.index_put_((torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)),
                      torch.ones(len(rows), dtype=torch.int16), accumulate=True)
    return counts


# Words of the train captions that say nothing about what a photo shows: no concept words.
FUNCTION_WORDS = frozenset("""
    about above across after against all along among another any around away back because
    before behind being below beneath beside besides between both down during each either
    else every few from front he her here hers him his how into its itself just many more
    most much near next nothing off one onto other others out over own past some someone
    something still such than their them then there these they those through together too
    toward towards under until upon very what where which while whilst who whose why within
    without
""".split())


def concept_table(net: EmbeddingNet, data: EmbeddingData, z: float, limit: int) -> ConceptTable:
    """The words the shipped embedding tags images with: the train captions' words as queries,
    each with the cosine threshold `z` standard deviations above its mean over the train
    images (calibrated on train; `limit` and `z` chosen by keyword search on val)."""
    keep = [i for i, w in enumerate(data.words.words) if w not in FUNCTION_WORDS]
    with torch.no_grad():
        net.eval()
        words = net.text(data.words.vectors[keep])  # (V, dim)
        images = torch.cat([_image_vectors(net, data, rows) for rows in data.train_images.split(1024)])
        sims = images @ words.T  # (T, V)
    mean, std = sims.mean(dim=0), sims.std(dim=0)
    return ConceptTable([data.words.words[i] for i in keep], words, mean + z * std, std, limit)


def _enough(counts: torch.Tensor, caption_image: torch.Tensor,
            images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(relevant, unsure) bool (images, words): used by two captions (the one caption of an
    image that has one), as search_eval's relevance; used by fewer but not none."""
    need = torch.bincount(caption_image, minlength=images).clamp(max=2).unsqueeze(1)  # (images, 1)
    return counts >= need, (counts > 0) & (counts < need)


def _word_queries(tokens: list[set[str]], caption_image: torch.Tensor, images: int,
                  train: torch.Tensor, min_images: int, cache_dir: Path,
                  text_factory: Callable) -> WordQueries:
    """The content words of the train captions as queries: each with its positive images."""
    from capindex.store.keyword_query import STOP_WORDS

    used: dict[str, set[int]] = {}
    is_train = set(train.tolist())
    for caption, row in zip(tokens, caption_image.tolist()):
        if row in is_train:
            for t in caption:
                used.setdefault(t, set()).add(row)
    words = sorted(w for w, rows in used.items() if len(rows) >= min_images and len(w) > 1
                   and w not in STOP_WORDS and not w.isdigit())
    vectors = cached_text_embeddings(words, cache_dir, text_factory, label="train-words")
    positive, unsure = _enough(_mentions(words, tokens, caption_image, images), caption_image,
                               images)
    return WordQueries(words, vectors.float(), positive, unsure)


def _info_nce(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE over matching rows: images (B, D), texts (B, D)."""
    logits = scale * images @ texts.T  # (B, B)
    labels = torch.arange(len(images), device=images.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@torch.no_grad()
def _cropped(data: EmbeddingData, rows: torch.Tensor, config: EmbeddingTrainConfig,
             generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid means and their logits, a random window of the grid for a `config.crop` share of
    `rows` (the whole grid for the rest): a crop of the photo, as far as mean pooling sees."""
    n = len(rows)
    side = math.isqrt(data.grids.shape[1])
    size = torch.randint(config.crop_min, side + 1, (n,), generator=generator)
    size = torch.where(torch.rand(n, generator=generator) < config.crop, size, side)
    y0 = (torch.rand(n, generator=generator) * (side - size + 1)).long()
    x0 = (torch.rand(n, generator=generator) * (side - size + 1)).long()
    cells = torch.arange(side)
    inside_y = (cells >= y0[:, None]) & (cells < (y0 + size)[:, None])  # (n, side)
    inside_x = (cells >= x0[:, None]) & (cells < (x0 + size)[:, None])
    mask = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(n, -1, 1).float()  # (n, 49, 1)
    pooled = (data.grids[rows].float() * mask).sum(dim=1) / mask.sum(dim=1)  # (n, 1280)
    return pooled, data.classifier(pooled)


def _image_vectors(net: EmbeddingNet, data: EmbeddingData, rows: torch.Tensor,
                   crop: tuple | None = None) -> torch.Tensor:
    if crop is not None and net.config.pooling == "mean":
        return net.image_from_pooled(*_cropped(data, rows, *crop))
    if net.config.pooling == "mean":  # the grid mean is precomputed: same numbers, faster
        return net.image_from_pooled(data.pooled[rows], data.logits[rows])
    return net(data.grids[rows].float(), data.logits[rows])


@torch.no_grad()
def evaluate(net: EmbeddingNet, data: EmbeddingData, split: ValSplit) -> dict:
    """Text -> image retrieval of every caption of `split` over its images."""
    net.eval()
    images = torch.cat([_image_vectors(net, data, rows) for rows in split.images.split(256)])
    queries = net.text(data.text[split.captions])
    scores = retrieval_scores(text_to_image_ranks(queries, images, split.targets))
    if split.words is not None and len(split.words):
        top = (net.text(split.words) @ images.T).topk(min(10, len(images)), dim=1).indices
        hits = split.word_relevant.gather(1, top).sum(dim=1)  # (W,)
        wanted = split.word_relevant.sum(dim=1).clamp(max=10)
        scores["words_P@10"] = round(float((hits / wanted).mean()), 4)
    return scores


def _kmeans(vectors: torch.Tensor, k: int, generator: torch.Generator, steps: int = 20) -> torch.Tensor:
    """Spherical k-means cluster of each unit row vector."""
    centres = vectors[torch.randperm(len(vectors), generator=generator)[:k]].clone()
    for _ in range(steps):
        assign = (vectors @ centres.T).argmax(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, vectors)
        centres = F.normalize(sums, dim=-1)
    return assign


def _epoch_pairs(images: torch.Tensor, captions_of: list[torch.Tensor], config: EmbeddingTrainConfig,
                 clusters: torch.Tensor | None, generator: torch.Generator) -> list[tuple]:
    """(image rows, caption indices) batches of one epoch; no image twice in a batch."""
    batches = []
    choice = {int(r): captions_of[int(r)][torch.randperm(len(captions_of[int(r)]), generator=generator)]
              for r in images}
    for p in range(config.captions_per_image):
        order = images[torch.randperm(len(images), generator=generator)]
        hard = clusters is not None and torch.rand((), generator=generator) < config.hard_batches
        if hard:  # whole clusters in a row: a batch holds similar images
            rank = torch.randperm(int(clusters.max()) + 1, generator=generator)[clusters[order]]
            order = order[torch.argsort(rank, stable=True)]
        caps = torch.stack([choice[int(r)][p % len(choice[int(r)])] for r in order])
        for rows, cs in zip(order.split(config.batch_size), caps.split(config.batch_size)):
            if len(rows) > 1:
                batches.append((rows, cs))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def _word_loss(net: EmbeddingNet, words: WordQueries, rows: torch.Tensor,
               images: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Multi-positive InfoNCE of each word used in the batch over the batch's images: the
    images whose captions use it are its positives, those with a single mention are left out."""
    positive, unsure = words.positive[rows], words.unsure[rows]  # (B, V)
    used = positive.any(dim=0).nonzero().squeeze(1)  # (W,)
    positive, unsure = positive[:, used].T, unsure[:, used].T  # (W, B)
    logits = scale * net.text(words.vectors[used]) @ images.T  # (W, B)
    logits = logits.masked_fill(unsure, -math.inf)
    return (logits.logsumexp(dim=1) - logits.masked_fill(~positive, -math.inf).logsumexp(dim=1)).mean()


def fit_members(data: EmbeddingData, config: EmbeddingTrainConfig,
                log: Callable[[str], None] = print) -> tuple[EmbeddingNet, dict]:
    """`config.members` networks, each trained by `fit` with seed `config.seed + k`, made
    one by `combine_members` (an ensemble: docs/embedding.md); its val scores and each
    member's report."""
    nets, reports = [], []
    for k in range(config.members):
        log(f"member {k + 1} of {config.members} (seed {config.seed + k})")
        net, report = fit(data, replace(config, seed=config.seed + k, members=1), log)
        nets.append(net)
        reports.append(report)
    net = combine_members(nets)
    scores = {split.name: evaluate(net, data, split) for split in data.val}
    log("combined: " + "  ".join(f"{name} R@10 {s['R@10']:.3f} words P@10 "
                                 f"{s.get('words_P@10', float('nan')):.3f}"
                                 for name, s in scores.items()))
    return net, {"best": {"epoch": [r["best"]["epoch"] for r in reports], "val": scores},
                 "members": reports,
                 "train_seconds": round(sum(r["train_seconds"] for r in reports), 1)}


def fit(data: EmbeddingData, config: EmbeddingTrainConfig,
        log: Callable[[str], None] = print) -> tuple[EmbeddingNet, dict]:
    """Train; return the network of the best epoch (by the first val split's R@10, plus its
    word P@10 with `select_words`) and a report.
    With `config.then`, train on from that network with those overrides (a second stage)."""
    torch.manual_seed(config.seed)
    net = (load_embedding(config.init)[0] if config.init
           else EmbeddingNet(EmbeddingConfig(**config.model)))
    net, report = _fit_stage(net, data, config, log)
    if not config.then:
        return net, report
    log(f"second stage: {config.then}")
    second = replace(config, **{**config.then, "then": None, "init": None})
    net, last = _fit_stage(net, data, second, log)
    return net, {"best": last["best"], "first": report,
                 "history": last["history"],
                 "train_seconds": round(report["train_seconds"] + last["train_seconds"], 1)}


def _fit_stage(net: EmbeddingNet, data: EmbeddingData, config: EmbeddingTrainConfig,
               log: Callable[[str], None]) -> tuple[EmbeddingNet, dict]:
    torch.manual_seed(config.seed)  # a stage starting from a saved network repeats as one run
    net.to(data.pooled.device).train()
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    rest = [p for n, p in net.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    captions_of = data.captions_of()
    centroids = data.centroids() if config.centroid_weight or config.hard_batches else None
    clusters = None
    if config.hard_batches:
        clusters = torch.full((len(data.pooled),), -1, dtype=torch.long)
        clusters[data.train_images] = _kmeans(centroids[data.train_images], config.clusters, generator)
    best, best_key, best_state, stale, history = None, (-math.inf,), None, 0, []
    averaged = copy.deepcopy(net) if config.ema else None
    steps_done, total_steps = 0, None
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        net.train()
        total, steps = 0.0, 0
        pairs = _epoch_pairs(data.train_images, captions_of, config, clusters, generator)
        total_steps = total_steps or len(pairs) * config.epochs
        for rows, caps in pairs:
            if config.cosine:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr * 0.5 * (1 + math.cos(math.pi * steps_done / total_steps))
            crop = (config, generator) if config.crop else None
            images = _image_vectors(net, data, rows, crop)  # (B, 384)
            scale = net.scale()
            loss = _info_nce(images, net.text(data.text[caps]), scale)
            if config.centroid_weight:
                loss = loss + config.centroid_weight * _info_nce(images, net.text(centroids[rows]), scale)
            if config.word_weight:
                loss = loss + config.word_weight * _word_loss(net, data.words, rows, images, scale)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps_done += 1
            if averaged is not None:
                with torch.no_grad():
                    for a, p in zip(averaged.parameters(), net.parameters()):
                        a.lerp_(p, 1 - config.ema)
            total, steps = total + loss.item(), steps + 1
        judged = averaged if averaged is not None else net
        scores = {split.name: evaluate(judged, data, split) for split in data.val}
        primary = scores[data.val[0].name]
        history.append({"epoch": epoch, "loss": round(total / max(steps, 1), 4),
                        "temperature": round(1 / float(net.scale().detach()), 4), "val": scores})
        log(f"epoch {epoch}: loss {total / max(steps, 1):.3f}  " + "  ".join(
            f"{name} R@1 {s['R@1']:.3f} R@5 {s['R@5']:.3f} R@10 {s['R@10']:.3f} "
            f"medr {s['median_rank']:g} words P@10 {s.get('words_P@10', float('nan')):.3f}"
            for name, s in scores.items()))
        key = (primary["R@10"] + (primary.get("words_P@10", 0.0) if config.select_words else 0.0),
               primary["R@5"], primary["R@1"])
        if key > best_key:
            best_key, best, stale = key, {"epoch": epoch, "val": scores}, 0
            best_state = copy.deepcopy(judged.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                break
    net.load_state_dict(best_state)
    return net.eval(), {"best": best, "history": history,
                        "train_seconds": round(time.perf_counter() - start, 1)}


def train_embedding(datasets: list[CaptionDataset], out_path: str | Path,
                    config: EmbeddingTrainConfig, cache_dir: str | Path,
                    log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """Prepare features, train, write the best epoch's checkpoint to `out_path`; the report."""
    data = prepare_data(datasets, Path(cache_dir), log, config.word_min_images)
    net, report = fit_members(data, config, log)
    provenance = {
        "model_id": f"capindex-embedding-{dt.date.today():%Y%m%d}",
        "text_model": TEXT_MODEL_ID,
        "encoder": ENCODER_ID, "encoder_sha256": weights_sha256(),
        "data": data.data,
        "epochs": report["best"]["epoch"],
        "val": report["best"]["val"],
        "train_config": asdict(config),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "torch": str(torch.__version__),
    }
    save_embedding(out_path, net, provenance,
                   concepts=concept_table(net, data, config.concept_z, config.concept_limit))
    return {**report, "timings": {**data.timings, "train_s": report["train_seconds"]},
            "out": str(out_path)}


def train_embedding_from_dirs(data_dirs: list[str | Path], out: str | Path,
                              epochs: int | None = None, batch_size: int | None = None,
                              lr: float | None = None, patience: int | None = None, seed: int = 0,
                              holdout: int = 200, cache_dir: str | Path | None = None,
                              log: Callable[[str], None] = print, command: str | None = None) -> dict:
    """What `capindex train-embedding --data DIR [--data DIR ...] --out FILE` runs: the
    shipped recipe (EmbeddingTrainConfig's defaults) with `capindex train`'s options;
    None keeps a default. The first dataset's val split drives early stopping."""
    from capindex.training.datasets import read_dataset

    overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size, "lr": lr,
                                   "patience": patience}.items() if v is not None}
    config = EmbeddingTrainConfig(seed=seed, **overrides)
    if cache_dir is None:
        from platformdirs import user_cache_dir

        cache_dir = Path(user_cache_dir("capindex")) / "features"
    datasets = [read_dataset(d, holdout=holdout, seed=seed) for d in data_dirs]
    return train_embedding(datasets, out, config, cache_dir, log, command)
