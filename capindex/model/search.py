"""Batched greedy and beam search over a CaptionDecoder.

Both run on the device of the features they are given, forbid <unk>/<start>/<pad>,
and forbid any word that would repeat a trigram already in the caption (the guard
against "a dog runs on the grass on the grass"). Scores are the mean log-probability
per generated token, <end> included; beam search ranks finished hypotheses by
sum(log p) / length ** length_penalty.
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


@torch.inference_mode()
def greedy_search(decoder, features: torch.Tensor, vocab, max_len: int = 20):
    """features (B, P, D) -> (token lists without <end>, mean log-prob per caption)."""
    batch = features.size(0)
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
        best, tokens = logp.max(dim=-1)
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
                length_penalty: float = 0.7):
    """Batched beam search: features (B, P, D) -> (token lists, mean log-prob per caption).

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

    for step in range(max_len + 1):
        logits, state, _ = decoder.step(tokens, state, projected, keys)
        logp = _guard(logits.float().log_softmax(dim=-1), seqs, vocab)  # (A*k, V)
        if step == max_len:
            keep_end = torch.arange(vocab_size, device=device) == vocab.end
            logp = torch.where(keep_end, logp, torch.full_like(logp, NEG_INF))
        candidates = (scores.unsqueeze(2) + logp.view(len(active), k, vocab_size))
        # Take 2k so that k live beams remain even if up to k of them end here.
        top_scores, top_ids = candidates.view(len(active), -1).topk(2 * k, dim=1)  # (A, 2k)
        beam_ids, word_ids = top_ids // vocab_size, top_ids % vocab_size

        next_rows, next_tokens, next_scores, next_seqs, kept_positions = [], [], [], [], []
        for pos, (b, row_scores, row_beams, row_words) in enumerate(
                zip(active, top_scores.tolist(), beam_ids.tolist(), word_ids.tolist())):
            rows, words, kept_scores, kept_seqs = [], [], [], []
            for rank, (s, beam, word) in enumerate(zip(row_scores, row_beams, row_words)):
                if s == NEG_INF or len(rows) == k:
                    break
                row = pos * k + beam
                if word == vocab.end:
                    # Only an ending among the k best candidates counts (as in fairseq/HF);
                    # a poor early ending must not fill the list of finished captions.
                    if rank < k:
                        n = len(seqs[row]) + 1
                        finished[b].append((s / n**length_penalty, s / n, seqs[row]))
                        finished[b] = sorted(finished[b], key=lambda f: f[0], reverse=True)[:k]
                    continue
                rows.append(row)
                words.append(word)
                kept_scores.append(s)
                kept_seqs.append(seqs[row] + [word])
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
            kept_positions.append(pos)
            next_rows += rows
            next_tokens += words
            next_scores += kept_scores
            next_seqs += kept_seqs
        if not kept_positions or step == max_len:
            break
        state = state[torch.tensor(next_rows, device=device)]
        if len(kept_positions) < len(active):
            # The image grids are the same in all k rows of an image, so they only
            # move when images leave.
            grid_rows = torch.tensor([pos * k + j for pos in kept_positions for j in range(k)],
                                     device=device)
            projected, keys = projected[grid_rows], keys[grid_rows]
        active = [active[pos] for pos in kept_positions]
        tokens = torch.tensor(next_tokens, device=device)
        scores = torch.tensor(next_scores, device=device).view(len(active), k)
        seqs = next_seqs

    results, mean_logps = [], []
    for b in range(batch):
        best = max(finished[b], key=lambda f: f[0]) if finished[b] else (0.0, 0.0, [])
        results.append(best[2])
        mean_logps.append(best[1])
    return results, mean_logps
