"""The release gate: may this int8 model replace the float one in the app?

Defaults (overridable with flags): top-1 agreement >= 99%, accuracy drop <= 1 percentage point, no
class's recall drops by more than 2 points, and the model is integer-only unless float ops were
explicitly allowed. The verdict is one sentence that names every broken threshold and its flag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from smearscope_core.options import option

# Drift figures are ratios of small integer counts; a threshold met exactly must pass.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Thresholds:
    """The gate's limits; each field's metadata is its command-line flag and help (convert/__main__.py)."""

    min_agreement_percent: float = field(
        default=99.0,
        metadata=option("--min-agreement", "minimum top-1 agreement with the float model, percent"),
    )
    max_accuracy_drop_points: float = field(
        default=1.0,
        metadata=option("--max-accuracy-drop", "maximum test accuracy drop, percentage points"),
    )
    max_recall_drop_points: float = field(
        default=2.0,
        metadata=option("--max-recall-drop", "maximum recall drop of any class, percentage points"),
    )

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateResult:
    passed: bool
    sentence: str  # one sentence, printed as is
    checks: list[dict]
    thresholds: Thresholds
    allow_float_ops: bool

    def as_dict(self) -> dict:
        return {
            "passed": self.passed,
            "verdict": "pass" if self.passed else "fail",
            "sentence": self.sentence,
            "thresholds": self.thresholds.as_dict(),
            "allow_float_ops": self.allow_float_ops,
            "checks": self.checks,
        }


def _join(clauses: list[str]) -> str:
    if len(clauses) == 1:
        return clauses[0]
    return "; ".join(clauses[:-1]) + "; and " + clauses[-1]


def evaluate(
    drift: dict,
    thresholds: Thresholds,
    integer_problem: str | None = None,
    allow_float_ops: bool = False,
    integer_only: bool = True,
) -> GateResult:
    """Apply the thresholds to ``drift`` (as made by convert.drift.compare) and the op check's verdict.

    ``integer_problem`` is convert.inspect_ops.integer_only_problem's clause (None when acceptable).
    """
    checks: list[dict] = []
    broken: list[str] = []

    agreement = drift["agreement"] * 100.0
    ok = agreement >= thresholds.min_agreement_percent - TOLERANCE
    checks.append(
        {
            "check": "top-1 agreement (percent)",
            "value": agreement,
            "limit": f">= {thresholds.min_agreement_percent}",
            "flag": "--min-agreement",
            "passed": ok,
        }
    )
    if not ok:
        broken.append(
            f"top-1 agreement is {agreement:.2f}% ({drift['disagreement_count']} of {drift['n']} test images "
            f"disagree), below the {thresholds.min_agreement_percent:.2f}% minimum (--min-agreement)"
        )

    accuracy = drift["accuracy"]
    drop = -accuracy["delta_points"] + 0.0  # + 0.0: no "-0.00"
    ok = drop <= thresholds.max_accuracy_drop_points + TOLERANCE
    checks.append(
        {
            "check": "accuracy drop (points)",
            "value": drop,
            "limit": f"<= {thresholds.max_accuracy_drop_points}",
            "flag": "--max-accuracy-drop",
            "passed": ok,
        }
    )
    if not ok:
        broken.append(
            f"accuracy dropped {drop:.2f} points ({accuracy['float']:.2%} float, {accuracy['int8']:.2%} int8), "
            f"more than the {thresholds.max_accuracy_drop_points:.2f} allowed (--max-accuracy-drop)"
        )

    for name, recall in drift["per_class_recall"].items():
        drop = -recall["delta_points"] + 0.0
        ok = drop <= thresholds.max_recall_drop_points + TOLERANCE
        checks.append(
            {
                "check": f"{name} recall drop (points)",
                "value": drop,
                "limit": f"<= {thresholds.max_recall_drop_points}",
                "flag": "--max-recall-drop",
                "passed": ok,
            }
        )
        if not ok:
            broken.append(
                f"{name} recall dropped {drop:.2f} points ({recall['float']:.2%} float, {recall['int8']:.2%} int8), "
                f"more than the {thresholds.max_recall_drop_points:.2f} allowed (--max-recall-drop)"
            )

    checks.append(
        {
            "check": "integer-only ops",
            "value": "integer-only" if integer_only else integer_problem or "float ops, explicitly allowed",
            "limit": "integer-only unless --allow-float-ops",
            "flag": "--allow-float-ops",
            "passed": integer_problem is None,
        }
    )
    if integer_problem:
        broken.append(integer_problem)

    if broken:
        sentence = f"Gate failed: {_join(broken)}."
    else:
        worst_recall = max((-r["delta_points"] for r in drift["per_class_recall"].values()), default=0.0)
        worst_recall = worst_recall if worst_recall > 0 else 0.0  # no "-0.00"
        sentence = (
            f"Gate passed: top-1 agreement {agreement:.2f}% (>= {thresholds.min_agreement_percent:.2f}%), accuracy "
            f"change {accuracy['delta_points']:+.2f} points (drop <= {thresholds.max_accuracy_drop_points:.2f}), "
            f"largest recall drop {worst_recall:.2f} points (<= {thresholds.max_recall_drop_points:.2f})"
            f"{', integer-only' if integer_only else ', NOT integer-only (float ops explicitly allowed)'}."
        )
    return GateResult(not broken, sentence, checks, thresholds, allow_float_ops)
