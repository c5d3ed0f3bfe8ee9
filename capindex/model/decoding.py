"""Batched greedy and beam search over a CaptionDecoder.

Both run on the device of the features they are given, forbid <unk>/<start>/<pad>,
and forbid any word that would repeat a trigram already in the caption (the guard
against "a dog runs on the grass on the grass"). Scores are the mean log-probability
per generated token, <end> included; beam search ranks finished hypotheses by
sum(log p) / length ** length_penalty. With `n_best` > 1 beam search also returns each
image's next best finished captions (at most beam_size - 1 of them), best first.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


def _banned_by_trigrams(seqs: list[list[int]]) -> list[list[int]]:
    """For each sequence, the tokens that would complete a trigram it already holds."""
    banned = []
    for seq in seqs:
        if len(seq) < 2:
            banned.append([])
            continue
        last = (seq[-2], seq[-1])
        banned.append([seq[i + 2] for i in range(len(seq) - 2) if (seq[i], seq[i + 1]) == last])
    return banned


def _guard(logp: torch.Tensor, seqs: list[list[int]], vocab) -> torch.Tensor:
    """Mask forbidden tokens in log-probabilities (rows, V) in place."""
    logp[:, [vocab.pad, vocab.start, vocab.unk]] = NEG_INF
    for row, tokens in enumerate(_banned_by_trigrams(seqs)):
        if tokens:
            logp[row, tokens] = NEG_INF
    return logp


def _boost(logp: torch.Tensor, pending: list[list[tuple[int, ...]]], bonus: float) -> torch.Tensor:
    """Add `bonus` to the log-probabilities (rows, V) of each row's pending word groups."""
    for row, groups in enumerate(pending):
        for ids in groups:
            logp[row, list(ids)] += bonus
    return logp


def _left(groups: list[tuple[int, ...]], word: int) -> list[tuple[int, ...]]:
    """The groups still pending once `word` is in the caption."""
    return [g for g in groups if word not in g] if groups else groups


@torch.inference_mode()
def _keep_images(kept: list[int], width: int, active: list[int], projected: torch.Tensor,
                 keys: torch.Tensor) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The beam rows' images that go on (`kept`: positions in `active`), and their grid rows
    (`width` rows an image). The grids are the same in all rows of an image, so they only
    move when images leave."""
    if len(kept) < len(active):
        rows = torch.tensor([pos * width + j for pos in kept for j in range(width)],
                            device=projected.device)
        projected, keys = projected[rows], keys[rows]
    return [active[pos] for pos in kept], projected, keys


def greedy_search(decoder, features: torch.Tensor, vocab, max_len: int = 20,
                  guides: list[list[tuple[int, ...]]] | None = None, bonus: float = 0.0):
    """features (B, P, D) -> (token lists without <end>, mean log-prob per caption).

    `guides`: per image, word-id groups (`guide.Guide.groups`) whose words get `bonus`
    added to their log-probability until the caption holds one of them.
    """
    batch = features.size(0)
    pending = [list(g) for g in guides] if guides and bonus else None
    projected, keys, state = decoder.start(features)
    tokens = torch.full((batch,), vocab.start, dtype=torch.long, device=features.device)
    seqs: list[list[int]] = [[] for _ in range(batch)]
    total = torch.zeros(batch, device=features.device)
    length = torch.zeros(batch, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logp = _guard(logits.float().log_softmax(dim=-1), seqs, vocab)
        if step == max_len:  # out of room: only <end> is left
            logp = torch.where(torch.arange(logp.size(1), device=logp.device) == vocab.end,
                               logp, torch.full_like(logp, NEG_INF))
        raw = logp
        if pending:
            logp = _boost(logp.clone(), pending, bonus)
        tokens = logp.argmax(dim=-1)
        best = raw.gather(1, tokens.unsqueeze(1)).squeeze(1)
        if pending:
            pending = [_left(g, t) for g, t in zip(pending, tokens.tolist())]
        live = ~done
        total += torch.where(live, best, torch.zeros_like(best))
        length += live.float()
        for i, (tok, alive) in enumerate(zip(tokens.tolist(), live.tolist())):
            if alive and tok != vocab.end:
                seqs[i].append(tok)
        done |= tokens == vocab.end
        if bool(done.all()):
            break
    return seqs, (total / length).tolist()


@torch.inference_mode()
def beam_search(decoder, features: torch.Tensor, vocab, beam_size: int = 3, max_len: int = 20,
                length_penalty: float = 0.7, n_best: int = 1,
                guides: list[list[tuple[int, ...]]] | None = None, bonus: float = 0.0):
    """Batched beam search: features (B, P, D) -> (token lists, mean log-prob per caption),
    and with `n_best` > 1 the other finished token lists of each image (best first).

    `guides`, `bonus`: as `greedy_search`; the bonus counts in the ranking, not in the
    mean log-probability returned.

    An image leaves the batch as soon as its search is done, so the steps after
    that run on the images still searching only.
    """
    batch, k = features.size(0), beam_size
    device = features.device
    projected, keys, state = decoder.start(features)
    # Every image gets k beams: rows are (image, beam) flattened, image-major, for the
    # images in `active` (all at first).
    repeat = torch.arange(batch, device=device).repeat_interleave(k)
    projected, keys, state = projected[repeat], keys[repeat], state[repeat]
    tokens = torch.full((batch * k,), vocab.start, dtype=torch.long, device=device)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = NEG_INF  # all beams start identical: keep only the first
    seqs: list[list[int]] = [[] for _ in range(batch * k)]
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(batch)]
    active = list(range(batch))
    vocab_size = decoder.config.vocab_size
    guided = bool(guides and bonus)
    # Per row: the word groups not yet in its caption, and the bonus its score holds.
    pending = [list(guides[b]) for b in range(batch) for _ in range(k)] if guided else None
    gained = [0.0] * (batch * k)

    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logp = _guard(logits.float().log_softmax(dim=-1), seqs, vocab)  # (A*k, V)
        if step == max_len:
            keep_end = torch.arange(vocab_size, device=device) == vocab.end
            logp = torch.where(keep_end, logp, torch.full_like(logp, NEG_INF))
        if guided:
            logp = _boost(logp, pending, bonus)
        candidates = (scores.unsqueeze(2) + logp.view(len(active), k, vocab_size))
        # Take 2k so that k live beams remain even if up to k of them end here.
        top_scores, top_ids = candidates.view(len(active), -1).topk(2 * k, dim=1)  # (A, 2k)
        beam_ids, word_ids = top_ids // vocab_size, top_ids % vocab_size

        next_rows, next_tokens, next_scores, next_seqs, kept_positions = [], [], [], [], []
        next_pending, next_gained = [], []
        for pos, (b, row_scores, row_beams, row_words) in enumerate(
                zip(active, top_scores.tolist(), beam_ids.tolist(), word_ids.tolist())):
            rows, words, kept_scores, kept_seqs, pend, gain = [], [], [], [], [], []
            for rank, (s, beam, word) in enumerate(zip(row_scores, row_beams, row_words)):
                if s == NEG_INF or len(rows) == k:
                    break
                row = pos * k + beam
                if word == vocab.end:
                    # Only an ending among the k best candidates counts (as in fairseq/HF);
                    # a poor early ending must not fill the list of finished captions.
                    if rank < k:
                        n = len(seqs[row]) + 1
                        finished[b].append((s / n**length_penalty, (s - gained[row]) / n,
                                            seqs[row]))
                        finished[b] = sorted(finished[b], key=lambda f: f[0], reverse=True)[:k]
                    continue
                rows.append(row)
                words.append(word)
                kept_scores.append(s)
                kept_seqs.append(seqs[row] + [word])
                if guided:
                    left = _left(pending[row], word)
                    pend.append(left)
                    gain.append(gained[row] + bonus * (len(pending[row]) - len(left)))
            # An image is done once k captions ended and no live beam ranks above the
            # worst, or when no live candidate is left.
            if not rows or (len(finished[b]) == k and max(kept_scores) / (step + 2) ** length_penalty
                            <= finished[b][-1][0]):
                continue
            while len(rows) < k:  # fewer live candidates than beams: pad with dead rows
                rows.append(pos * k)
                words.append(vocab.end)
                kept_scores.append(NEG_INF)
                kept_seqs.append([])
                pend.append([])
                gain.append(0.0)
            kept_positions.append(pos)
            next_rows += rows
            next_tokens += words
            next_scores += kept_scores
            next_seqs += kept_seqs
            next_pending += pend
            next_gained += gain
        if not kept_positions or step == max_len:
            break
        state = state[torch.tensor(next_rows, device=device)]
        active, projected, keys = _keep_images(kept_positions, k, active, projected, keys)
        tokens = torch.tensor(next_tokens, device=device)
        scores = torch.tensor(next_scores, device=device).view(len(active), k)
        seqs = next_seqs
        if guided:
            pending, gained = next_pending, next_gained

    results, mean_logps, others = [], [], []
    for b in range(batch):
        ranked = sorted(finished[b], key=lambda f: f[0], reverse=True) or [(0.0, 0.0, [])]
        results.append(ranked[0][2])
        mean_logps.append(ranked[0][1])
        others.append([f[2] for f in ranked[1:n_best]])
    if n_best > 1:
        return results, mean_logps, others
    return results, mean_logps


@torch.inference_mode()
def constrained_beam_search(decoder, features: torch.Tensor, vocab, guides, beam_size: int = 3,
                            max_len: int = 20, length_penalty: float = 0.7, n_best: int = 1):
    """Constrained beam search (Anderson et al. 2017) with one disjunctive constraint: the
    caption must hold a word of one of the image's `guides` groups.

    Two beams of `beam_size` per image, one per state of the constraint's automaton:
    captions without a guide word yet, and captions with one. The answer is the best
    finished caption with a guide word; only when none finished, the best without. An
    image without guides gets plain `beam_search`. Returns as `beam_search`.
    """
    batch, k = features.size(0), beam_size
    plain = [b for b in range(batch) if not guides[b]]
    guided = [b for b in range(batch) if guides[b]]
    results: list = [None] * batch
    means: list = [None] * batch
    others: list = [[] for _ in range(batch)]
    if plain:
        r, m, o = beam_search(decoder, features[plain], vocab, k, max_len, length_penalty,
                              n_best=max(n_best, 2))
        for j, b in enumerate(plain):
            results[b], means[b], others[b] = r[j], m[j], o[j][:n_best - 1]
    if guided:
        r, m, o = _two_state_search(decoder, features[guided], vocab,
                                    [guides[b] for b in guided], k, max_len, length_penalty)
        for j, b in enumerate(guided):
            results[b], means[b], others[b] = r[j], m[j], o[j][:n_best - 1]
    if n_best > 1:
        return results, means, others
    return results, means


def _two_state_search(decoder, features, vocab, guides, k, max_len, length_penalty):
    """`constrained_beam_search` for images that all have guides; rows are (image, state,
    beam) flattened: per image k rows without a guide word, then k rows with one."""
    batch, device = features.size(0), features.device
    width = 2 * k
    vocab_size = decoder.config.vocab_size
    projected, keys, state = decoder.start(features)
    repeat = torch.arange(batch, device=device).repeat_interleave(width)
    projected, keys, state = projected[repeat], keys[repeat], state[repeat]
    target = torch.zeros(batch, vocab_size, dtype=torch.bool, device=device)
    for b, groups in enumerate(guides):
        target[b, [w for g in groups for w in g]] = True
    tokens = torch.full((batch * width,), vocab.start, dtype=torch.long, device=device)
    scores = torch.full((batch, width), NEG_INF, device=device)
    scores[:, 0] = 0.0  # one live beam, without a guide word
    seqs: list[list[int]] = [[] for _ in range(batch * width)]
    finished = [([], []) for _ in range(batch)]  # (without, with a guide word), best first
    active = list(range(batch))
    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logp = _guard(logits.float().log_softmax(dim=-1), seqs, vocab)  # (A*2k, V)
        if step == max_len:
            keep_end = torch.arange(vocab_size, device=device) == vocab.end
            logp = torch.where(keep_end, logp, torch.full_like(logp, NEG_INF))
        cand = scores.unsqueeze(2) + logp.view(len(active), width, vocab_size)  # (A, 2k, V)
        hits = target[active].unsqueeze(1)  # (A, 1, V)
        without = torch.where(hits, NEG_INF, cand[:, :k])  # stays without a guide word
        with_word = torch.cat([torch.where(hits, cand[:, :k], NEG_INF), cand[:, k:]], 1)
        top = [without.reshape(len(active), -1).topk(2 * k, dim=1),
               with_word.reshape(len(active), -1).topk(2 * k, dim=1)]
        # with_word's candidate c comes from row c // V of the image (0..2k-1); without's
        # from row c // V too (0..k-1): both index the image's 2k rows.
        picked = [(t.values.tolist(), (t.indices // vocab_size).tolist(),
                   (t.indices % vocab_size).tolist()) for t in top]
        next_rows, next_tokens, next_scores, next_seqs, kept_positions = [], [], [], [], []
        for pos, b in enumerate(active):
            rows, words, kept_scores, kept_seqs, live = [], [], [], [], []
            for st in (0, 1):
                st_rows, st_words, st_scores, st_seqs = [], [], [], []
                values, beams, wids = (p[pos] for p in picked[st])
                for rank, (s, beam, word) in enumerate(zip(values, beams, wids)):
                    if s == NEG_INF or len(st_rows) == k:
                        break
                    row = pos * width + beam
                    if word == vocab.end:
                        if rank < k:
                            n = len(seqs[row]) + 1
                            done = finished[b][st]
                            done.append((s / n**length_penalty, s / n, seqs[row]))
                            done.sort(key=lambda f: f[0], reverse=True)
                            del done[k:]
                        continue
                    st_rows.append(row)
                    st_words.append(word)
                    st_scores.append(s)
                    st_seqs.append(seqs[row] + [word])
                live.append(max(st_scores, default=NEG_INF))
                while len(st_rows) < k:
                    st_rows.append(pos * width)
                    st_words.append(vocab.end)
                    st_scores.append(NEG_INF)
                    st_seqs.append([])
                rows += st_rows
                words += st_words
                kept_scores += st_scores
                kept_seqs += st_seqs
            # Done once k captions with a guide word ended and no live beam can beat the
            # worst of them, or when no live beam is left.
            best_live = max(live)
            done_with = finished[b][1]
            if best_live == NEG_INF or (len(done_with) == k and best_live / (step + 2)
                                        ** length_penalty <= done_with[-1][0]):
                continue
            kept_positions.append(pos)
            next_rows += rows
            next_tokens += words
            next_scores += kept_scores
            next_seqs += kept_seqs
        if not kept_positions or step == max_len:
            break
        state = state[torch.tensor(next_rows, device=device)]
        active, projected, keys = _keep_images(kept_positions, width, active, projected, keys)
        tokens = torch.tensor(next_tokens, device=device)
        scores = torch.tensor(next_scores, device=device).view(len(active), width)
        seqs = next_seqs
    results, means, others = [], [], []
    for b in range(batch):
        ranked = finished[b][1] or finished[b][0] or [(0.0, 0.0, [])]
        results.append(ranked[0][2])
        means.append(ranked[0][1])
        others.append([f[2] for f in ranked[1:]])
    return results, means, others


@torch.inference_mode()
def beam_search_batched(decoder, features: torch.Tensor, vocab, beam_size: int = 3,
                        max_len: int = 20, length_penalty: float = 0.7, n_best: int = 1):
    """`beam_search` with its bookkeeping in tensors, for a GPU: the same captions.

    `beam_search` walks each image's candidates in Python and copies between host and
    device several times a word, which leaves a GPU idle (docs/performance.md, GPU). Here
    each word is a fixed set of tensor operations and one host sync (to stop once every
    image is done). No image leaves the batch: a finished one keeps its rows but no live
    beam, which costs nothing on a GPU and would on a CPU.
    """
    batch, k = features.size(0), beam_size
    device = features.device
    vocab_size = decoder.config.vocab_size
    projected, keys, state = decoder.start(features)
    repeat = torch.arange(batch, device=device).repeat_interleave(k)
    projected, keys, state = projected[repeat], keys[repeat], state[repeat]
    first_row = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1)
    rank = torch.arange(2 * k, device=device)
    special = torch.tensor([vocab.pad, vocab.start, vocab.unk], device=device)
    tokens = torch.full((batch * k,), vocab.start, dtype=torch.long, device=device)
    scores = torch.zeros(batch, k, device=device)
    scores[:, 1:] = NEG_INF  # all beams start identical: keep only the first
    seqs = torch.zeros(batch * k, 0, dtype=torch.long, device=device)  # the words so far
    active = torch.ones(batch, dtype=torch.bool, device=device)
    # The k best finished captions of each image, best first (norm -inf: none yet).
    fin_norm = torch.full((batch, k), NEG_INF, dtype=torch.float64, device=device)
    fin_mean = torch.zeros(batch, k, dtype=torch.float64, device=device)
    fin_len = torch.zeros(batch, k, dtype=torch.long, device=device)
    fin_seq = torch.zeros(batch, k, max_len + 1, dtype=torch.long, device=device)

    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logp = logits.float().log_softmax(dim=-1)  # (B*k, V)
        logp[:, special] = NEG_INF
        length = seqs.size(1)  # = step
        if length >= 3:  # the trigram guard: ban seq[i + 2] where seq[i:i+2] is the last pair
            repeats = ((seqs[:, :-2] == seqs[:, -2:-1]) & (seqs[:, 1:-1] == seqs[:, -1:]))
            logp.scatter_(1, torch.where(repeats, seqs[:, 2:], vocab.pad), NEG_INF)
        if step == max_len:
            keep_end = torch.arange(vocab_size, device=device) == vocab.end
            logp = torch.where(keep_end, logp, torch.full_like(logp, NEG_INF))
        candidates = scores.unsqueeze(2) + logp.view(batch, k, vocab_size)
        top_scores, top_ids = candidates.view(batch, -1).topk(2 * k, dim=1)  # (B, 2k)
        beam_ids, word_ids = top_ids // vocab_size, top_ids % vocab_size
        source_rows = first_row + beam_ids
        alive = top_scores > NEG_INF
        ends = word_ids == vocab.end
        total = top_scores.double()

        # Endings among the k best candidates join the finished captions (sorted, stable).
        n = length + 1
        new_norm = torch.where(ends & alive & (rank < k), total / n ** length_penalty,
                               torch.full_like(total, NEG_INF))
        ranked = torch.cat([fin_norm, new_norm], 1).sort(dim=1, descending=True, stable=True)
        fin_norm, order = ranked.values[:, :k], ranked.indices[:, :k]
        fin_mean = torch.cat([fin_mean, total / n], 1).gather(1, order)
        fin_len = torch.cat([fin_len, torch.full_like(source_rows, length)], 1).gather(1, order)
        padded = torch.nn.functional.pad(seqs, (0, max_len + 1 - length))[source_rows]
        fin_seq = torch.cat([fin_seq, padded], 1).gather(
            1, order.unsqueeze(2).expand(-1, -1, max_len + 1))

        # The first k live candidates, in rank order, are the next beams.
        live = alive & ~ends
        kept = live & (live.long().cumsum(1) <= k)
        best_live = torch.where(kept, total, torch.full_like(total, NEG_INF)).max(1).values
        full = (fin_norm > NEG_INF).sum(1) == k
        beaten = best_live / (step + 2) ** length_penalty <= fin_norm[:, -1]
        done = ~kept.any(1) | (full & beaten)  # no live beam can overtake the k finished
        active &= ~done
        if step == max_len or not bool(active.any()):
            break
        slots = ((~kept).long() * (2 * k) + rank).argsort(dim=1)[:, :k]
        use = kept.gather(1, slots) & active.unsqueeze(1)
        rows = torch.where(use, source_rows.gather(1, slots), first_row).view(-1)
        tokens = torch.where(use, word_ids.gather(1, slots), vocab.end).view(-1)
        scores = torch.where(use, top_scores.gather(1, slots), torch.full_like(scores, NEG_INF))
        state = state[rows]
        seqs = torch.cat([seqs[rows], tokens.unsqueeze(1)], 1)

    count = (fin_norm > NEG_INF).sum(1).tolist()
    lengths, means, words = fin_len[:, 0].tolist(), fin_mean[:, 0].tolist(), fin_seq[:, 0].tolist()
    results = [words[b][:lengths[b]] if count[b] else [] for b in range(batch)]
    means = [means[b] if count[b] else 0.0 for b in range(batch)]
    if n_best > 1:
        all_lengths, all_words = fin_len.tolist(), fin_seq.tolist()
        others = [[all_words[b][j][:all_lengths[b][j]] for j in range(1, min(n_best, count[b]))]
                  for b in range(batch)]
        return results, means, others
    return results, means
