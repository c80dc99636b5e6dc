"""What conversion reads (convert/inputs.py): the representative sample of the train split."""

from __future__ import annotations

from convert.inputs import stratified_sample
from smearscope_core.manifest import ManifestRow


def test_representative_sample_is_stratified_and_deterministic() -> None:
    rows = [
        ManifestRow(f"{c}/{i}.png", "0" * 64, c, "train", i)
        for c, k in (("A", 600), ("B", 300), ("C", 100))
        for i in range(k)
    ]
    sample = stratified_sample(rows, 200, seed=1)
    counts = {c: sum(r.class_name == c for r in sample) for c in "ABC"}
    assert counts == {"A": 120, "B": 60, "C": 20}
    assert sample == stratified_sample(list(reversed(rows)), 200, seed=1)
    assert sample != stratified_sample(rows, 200, seed=2)
    assert len(stratified_sample(rows, 5000, seed=1)) == len(rows)
    tiny = stratified_sample(rows, 3, seed=1)
    assert {r.class_name for r in tiny} == {"A", "B", "C"}  # every class at least once
