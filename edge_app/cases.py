"""A case is one sample (one smear): its identifiers, its screened fields, their summary and the case verdict.

A technician photographs several fields of view of one patient's smear and reports per sample, so the page
gathers fields (uploads, a folder, a watched folder) into the open case, and the report, the CSV, the history
and the FHIR export are per case. No Streamlit here: the page, the exports and the tests share this model.

The case verdict (``case_verdict``, parameters in ``VERDICT_RULE``, documented in docs/app.md):

- "Suspected ALL" when at least ``min_malignant`` assessed fields are malignant; the most frequent malignant
  class is added as a research subtype suggestion when the model names subtypes;
- "No leukemia suggested" only when at least ``min_assessed`` fields were assessed, none is malignant, and no
  more than ``max_referred_share`` of the screened fields were referred;
- otherwise "Inconclusive - refer for manual review", with the sentence saying why.

A referred field is not a diagnosis: it never counts as a finding, for or against leukemia. So the case
verdict is never stronger than its fields: it names no class unless assessed fields do, and one malignant
field (fewer than ``min_malignant``) makes the case inconclusive, never "no leukemia suggested".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
from PIL import Image

from edge_app.classify import REFER_VERDICT, Result

THUMBNAIL_PX = 320  # the longer side of the thumbnail a field keeps for the page and the report


@dataclass(frozen=True)
class VerdictRule:
    """The case verdict's parameters, in one place (docs/app.md, "The case verdict")."""

    # "Suspected ALL" needs this many assessed fields that are malignant: one malignant field among many can be
    # a single misread cell or artefact, so it makes the case inconclusive (refer), never negative.
    min_malignant: int = 2
    # "No leukemia suggested" needs this many assessed (not referred) fields, none malignant.
    min_assessed: int = 5
    # ... and no more than this share of the screened fields referred: a smear the model mostly cannot read is
    # not shown to be free of blasts by the few fields it could.
    max_referred_share: float = 0.5


VERDICT_RULE = VerdictRule()

SUSPECTED = "Suspected ALL"
NEGATIVE = "No leukemia suggested"
# outcome word (for machines, CSS classes and FHIR) -> the verdict as the page shows it
OUTCOMES = {"suspected": SUSPECTED, "negative": NEGATIVE, "refer": REFER_VERDICT}
UNASSIGNED = "Unassigned (saved before cases)"  # the history's results from before cases, shown as one list
SAMPLE_ID_MAX = 64


@dataclass
class Field:
    """One screened image (a field of view) of a case, as the page keeps it between reruns.

    Only a thumbnail and the model-sized pixels are kept, never the decoded camera image or the file's
    bytes: ten 12-megapixel fields would otherwise hold hundreds of MB for as long as the tab is open.
    A field read back from the history has neither (unless its image was kept, ``image_file``).
    """

    key: str  # what the page screened it from (an upload, a folder file) or "history-<id>"
    result: Result
    when: str  # UTC, ISO 8601
    thumbnail: Image.Image | None = None
    pixels: np.ndarray | None = None  # what the model took (Screener.pixels), for the heatmap on demand
    history_id: int | None = None
    review: str = ""
    note: str = ""
    review_saved: str = ""  # when the review was last saved (UTC), shown until the page is closed
    image_file: str | None = None  # the kept image's file name in the history's image folder, if kept
    heat: np.ndarray | None = None  # the occlusion heatmap, once computed
    also_named: list[str] = field(default_factory=list)  # the same image added again under other names
    in_other_cases: list[str] = field(default_factory=list)  # sample IDs of other cases that hold this image

    @property
    def sha256(self) -> str:
        return self.result.image_sha256


@dataclass
class CaseInfo:
    """A case's identifiers. Times are stored in UTC with the zone they were entered in."""

    sample_id: str
    patient_ref: str = ""  # pseudonymous: a code the lab can resolve, never a name
    operator: str = ""
    opened_utc: str = ""  # when its first field was saved ("" before)
    tz_name: str = ""  # the local zone at opening, e.g. "CET"
    tz_offset: str = ""  # its offset from UTC then, e.g. "+01:00"
    closed_utc: str = ""  # "" while open
    case_id: int | None = None  # its row in the history; None when not saved (no field yet, or history off)
    proposed: bool = False  # the sample ID is the page's proposal, not one the technician typed
    unassigned: bool = False  # the pseudo-case of results saved before cases (no sample, no verdict)

    @property
    def title(self) -> str:
        return UNASSIGNED if self.unassigned else self.sample_id

    def zone(self) -> timezone | None:
        """The zone the case was opened in, or None (then the computer's own zone is used)."""
        offset = parse_offset(self.tz_offset)
        return None if offset is None else timezone(offset, self.tz_name or None)


@dataclass
class Case:
    """A sample and its fields, in the order they were added."""

    info: CaseInfo
    fields: list[Field] = field(default_factory=list)
    # what the page already did with each upload or folder file (its Field, or why it could not be read), so a
    # rerun of the page neither reads nor screens it again; not saved
    outcomes: dict[str, Field | str] = field(default_factory=dict, repr=False)

    def find(self, image_sha256: str) -> Field | None:
        """The field of this image, if the case has it (an image is in a case once)."""
        if not image_sha256:
            return None
        return next((f for f in self.fields if f.sha256 == image_sha256), None)

    @property
    def summary(self) -> Summary:
        return summarize([f.result for f in self.fields], [f.review for f in self.fields])

    @property
    def verdict(self) -> CaseVerdict:
        return case_verdict(self.summary)


@dataclass(frozen=True)
class Summary:
    """The slide-level summary. Class counts and P(malignant) are over assessed fields only."""

    screened: int = 0
    referred: int = 0
    malignant: int = 0
    per_class: tuple[tuple[str, int], ...] = ()  # (display name, assessed fields), in the model's class order
    max_p_malignant: float | None = None
    mean_p_malignant: float | None = None
    subtypes: tuple[str, ...] = ()  # the most frequent malignant class(es), when the model names subtypes
    reviewed: int = 0
    overridden: int = 0

    @property
    def assessed(self) -> int:
        return self.screened - self.referred


@dataclass(frozen=True)
class CaseVerdict:
    outcome: str  # "suspected", "negative" or "refer"
    reason: str  # one sentence: why this verdict
    subtype: str = ""  # the research subtype suggestion ("" unless suspected and the model names subtypes)

    @property
    def text(self) -> str:
        """The verdict as the page shows it (the History filter matches this text)."""
        if self.subtype:
            return f"{SUSPECTED} (research subtype suggestion: {self.subtype})"
        return OUTCOMES[self.outcome]


def has_subtypes(malignant: Iterable[bool]) -> bool:
    """Whether a model's classes (their ``malignant`` flags) split malignancy into subtypes: two or more."""
    return sum(bool(flag) for flag in malignant) > 1


def summarize(results: Sequence[Result], reviews: Sequence[str] = ()) -> Summary:
    """Counts, per-class counts and P(malignant) statistics over the assessed (not referred) fields, and how
    many fields the technician reviewed (``reviews``: each field's review, "" when not reviewed)."""
    findings = [r.finding for r in results if r.finding is not None]
    order = [p.display_name for r in results for p in r.probabilities]
    counts = Counter(f.display_label for f in findings)
    per_class = sorted(counts.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    malignant = Counter(f.display_label for f in findings if f.malignant)
    subtypes: tuple[str, ...] = ()
    if malignant and has_subtypes(p.malignant for p in results[0].probabilities):
        top = max(malignant.values())
        subtypes = tuple(name for name, _ in per_class if malignant.get(name) == top)
    p_values = [f.p_malignant for f in findings]
    return Summary(
        screened=len(results),
        referred=len(results) - len(findings),
        malignant=sum(malignant.values()),
        per_class=tuple(per_class),
        max_p_malignant=max(p_values) if p_values else None,
        mean_p_malignant=sum(p_values) / len(p_values) if p_values else None,
        subtypes=subtypes,
        reviewed=sum(bool(review) for review in reviews),
        overridden=sum(review.startswith("overridden") for review in reviews),
    )


def _fields(count: int) -> str:
    return f"{count} field{'s' if count != 1 else ''}"


def _suggest(count: int) -> str:
    return "suggests" if count == 1 else "suggest"


def case_verdict(summary: Summary, rule: VerdictRule = VERDICT_RULE) -> CaseVerdict:
    """The case verdict from the summary of its fields; referred fields never count for or against."""
    if summary.malignant >= rule.min_malignant:
        return CaseVerdict(
            "suspected",
            f"{_fields(summary.malignant)} of {summary.assessed} assessed {_suggest(summary.malignant)} leukemic cells "
            f"(the rule needs {rule.min_malignant}): a hematologist must review the smear.",
            " or ".join(summary.subtypes),
        )
    if summary.malignant:
        return CaseVerdict(
            "refer",
            f"{_fields(summary.malignant)} of {summary.assessed} assessed {_suggest(summary.malignant)} leukemic "
            f"cells, fewer than the {rule.min_malignant} a suspected ALL needs: review the smear by eye.",
        )
    if summary.screened == 0:
        return CaseVerdict("refer", "No field has been screened yet.")
    if summary.assessed == 0:
        return CaseVerdict("refer", f"Every field was referred ({summary.screened}): review the smear by eye.")
    if summary.assessed < rule.min_assessed:
        return CaseVerdict(
            "refer",
            f"Only {_fields(summary.assessed)} could be assessed; {rule.min_assessed} without leukemic cells are "
            "needed to suggest no leukemia: screen more fields of this smear.",
        )
    if summary.referred > rule.max_referred_share * summary.screened:
        return CaseVerdict(
            "refer",
            f"{summary.referred} of {summary.screened} fields were referred, more than the rule allows for a "
            "negative screen: review the smear by eye.",
        )
    return CaseVerdict(
        "negative", f"None of {summary.assessed} assessed fields suggests leukemic cells ({summary.referred} referred)."
    )


def rule_sentence(rule: VerdictRule = VERDICT_RULE) -> str:
    """The rule in words, for the page and the report (no percentages: a referral shows no figure)."""
    share = "half" if rule.max_referred_share == 0.5 else f"a share of {rule.max_referred_share:g}"
    return (
        f"Case verdict rule: suspected ALL when at least {rule.min_malignant} assessed fields are malignant; no "
        f"leukemia suggested only when at least {rule.min_assessed} fields were assessed, none is malignant and "
        f"no more than {share} of the fields were referred; otherwise inconclusive - refer. Referred fields "
        "never count as findings."
    )


# The History tab's "reviewed" filter: its choices as shown, each with the test a case must pass.
REVIEW_FILTERS = {
    "any": lambda summary: True,
    "every field reviewed": lambda summary: summary.screened > 0 and summary.reviewed == summary.screened,
    "not every field reviewed": lambda summary: summary.reviewed < summary.screened,
}


def case_matches(case: Case, verdict: str = "", reviewed: str = "any") -> bool:
    """The History tab's filters on a case: its verdict as shown on screen contains ``verdict`` (any case;
    results saved before cases have no verdict), and its review state (a ``REVIEW_FILTERS`` key)."""
    shown = "" if case.info.unassigned else case.verdict.text
    if verdict.strip() and verdict.strip().casefold() not in shown.casefold():
        return False
    return REVIEW_FILTERS[reviewed](case.summary)


# ---------------------------------------------------------------- identifiers


def sample_id_problem(text: str) -> str | None:
    """Why ``text`` cannot be a sample ID (one sentence), or None."""
    if not text.strip():
        return "Enter a sample ID (the accession number on the slide) to screen and save fields."
    if len(text.strip()) > SAMPLE_ID_MAX:
        return f"A sample ID has at most {SAMPLE_ID_MAX} characters."
    if any(ord(c) < 32 for c in text):
        return "A sample ID cannot hold control characters (a barcode scanner's Tab or Enter?)."
    return None


PROPOSAL = re.compile(r"^S-(\d{8})-(\d{3,})$")


def propose_sample_id(taken: Iterable[str], today: date) -> str:
    """The next free date-based sample ID, ``S-YYYYMMDD-NNN``, after those already used today."""
    prefix = f"S-{today:%Y%m%d}"
    numbers = [int(m[2]) for m in map(PROPOSAL.match, taken) if m and m[1] == f"{today:%Y%m%d}"]
    return f"{prefix}-{max(numbers, default=0) + 1:03d}"


# ---------------------------------------------------------------- local time


def parse_offset(text: str) -> timedelta | None:
    """``+01:00`` -> timedelta(hours=1); None for "" or anything else."""
    match = re.fullmatch(r"([+-])(\d{2}):(\d{2})", text or "")
    if not match:
        return None
    delta = timedelta(hours=int(match[2]), minutes=int(match[3]))
    return -delta if match[1] == "-" else delta


def format_offset(delta: timedelta | None) -> str:
    minutes = int((delta or timedelta()).total_seconds() // 60)
    sign, minutes = ("-" if minutes < 0 else "+"), abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def local_zone(utc_iso: str) -> tuple[str, str]:
    """The computer's zone name and offset at that moment (DST included), e.g. ("CET", "+01:00")."""
    local = parse_utc(utc_iso).astimezone()
    return local.tzname() or "", format_offset(local.utcoffset())


def parse_utc(utc_iso: str) -> datetime:
    moment = datetime.fromisoformat(utc_iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def local_time(utc_iso: str, info: CaseInfo | None = None) -> datetime:
    """A stored UTC time in the case's zone (where it was opened), else in the computer's zone."""
    moment = parse_utc(utc_iso)
    zone = info.zone() if info is not None else None
    return moment.astimezone(zone) if zone is not None else moment.astimezone()


def shown_time(utc_iso: str, info: CaseInfo | None = None, seconds: bool = False) -> str:
    """``2026-11-25 11:02 CET (UTC+01:00)``: local time with its zone, as the page and the report show it."""
    if not utc_iso:
        return ""
    try:
        local = local_time(utc_iso, info)
    except ValueError:
        return utc_iso
    clock = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    offset = format_offset(local.utcoffset())
    name = local.tzname() or ""
    if name in ("UTC", "GMT") and offset == "+00:00":
        zone = name
    else:
        zone = f"{name} (UTC{offset})" if name and name != f"UTC{offset}" else f"UTC{offset}"
    return f"{local.strftime(clock)} {zone}"


def thumbnail(image: Image.Image, side: int = THUMBNAIL_PX) -> Image.Image:
    """A small RGB copy for the page and the report (the caller drops the full image). Resized straight from
    the full image (no full-size copy first), by whole-factor reduction and then bilinear."""
    width, height = image.size
    scale = min(1.0, side / max(width, height, 1))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0) if size != image.size else image.copy()
    return small.convert("RGB")
