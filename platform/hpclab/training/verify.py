"""Compare saved model states (rank<r>.pt, checkpoint.pt): ``python -m hpclab.training.verify A B [C ...]``.

Prints JSON: for each file after the first, the largest absolute and relative difference to the first
over all floating-point tensors, and whether the keys match. Used by the data-parallel consistency tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["model"] if "model" in state and isinstance(state["model"], dict) else state


def compare(reference: dict[str, torch.Tensor], other: dict[str, torch.Tensor]) -> dict[str, object]:
    same_keys = set(reference) == set(other)
    max_abs = max_rel = 0.0
    worst = None
    for key in sorted(set(reference) & set(other)):
        a, b = reference[key], other[key]
        if not a.is_floating_point():
            if not torch.equal(a, b):
                max_abs, worst = float("inf"), key
            continue
        diff = (a.double() - b.double()).abs()
        d = float(diff.max()) if diff.numel() else 0.0
        rel = float((diff / a.double().abs().clamp_min(1e-3)).max()) if diff.numel() else 0.0
        if d > max_abs:
            max_abs, worst = d, key
        max_rel = max(max_rel, rel)
    return {"same_keys": same_keys, "max_abs": max_abs, "max_rel": max_rel, "worst": worst, "tensors": len(reference)}


def main(argv: list[str] | None = None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if len(paths) < 2:
        print("usage: python -m hpclab.training.verify REFERENCE OTHER [OTHER ...]", file=sys.stderr)
        return 2
    reference = load_state(paths[0])
    report = {p: compare(reference, load_state(p)) for p in paths[1:]}
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
