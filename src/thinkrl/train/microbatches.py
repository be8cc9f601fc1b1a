"""Micro-batches by token count: the rows of an update go through the model a few at a time,
packed end to end, so what bounds memory is tokens, not rows x the longest row.

The caller orders the rows (by length, so that a padded micro-batch holds rows of similar
length) and they are cut into consecutive groups; a row longer than the budget goes alone. Under FSDP every process must run as many forward/backward
passes as the others (each one is a collective), so launched runs cut every process's rows
into the largest count any of them needs (`split_to`).
"""

from __future__ import annotations


def token_microbatches(lengths: list[int], max_tokens: int, max_rows: int, padded: bool = False) -> list[list[int]]:
    """Consecutive positions into `lengths`, grouped so that a group holds at most `max_rows`
    rows and `max_tokens` tokens (a longer row alone): packed tokens, or with `padded` the
    rows x the longest row the padded batch computes."""
    if max_tokens < 1 or max_rows < 1:
        raise ValueError(f"need max_tokens >= 1 and max_rows >= 1, got {max_tokens} and {max_rows}")
    groups: list[list[int]] = []
    tokens = longest = 0
    for i, n in enumerate(lengths):
        cost = (len(groups[-1]) + 1) * max(longest, n) if padded and groups else tokens + n
        if groups and len(groups[-1]) < max_rows and cost <= max_tokens:
            groups[-1].append(i)
            tokens, longest = tokens + n, max(longest, n)
        else:
            groups.append([i])
            tokens = longest = n
    return groups


def split_to(groups: list[list[int]], lengths: list[int], parts: int) -> list[list[int]]:
    """`groups` (from `token_microbatches`) cut further, the one with the most tokens in half
    each time, until there are `parts` of them: still within the budget, still in order.
    Needs `len(groups) <= parts <= len(lengths)`."""
    if not len(groups) <= parts <= len(lengths):
        raise ValueError(f"cannot make {len(groups)} groups of {len(lengths)} rows into {parts}")
    groups = [list(g) for g in groups]
    while len(groups) < parts:
        g = max((i for i, rows in enumerate(groups) if len(rows) > 1), key=lambda i: sum(lengths[j] for j in groups[i]))
        rows = groups[g]
        groups[g:g + 1] = [rows[:len(rows) // 2], rows[len(rows) // 2:]]
    return groups
