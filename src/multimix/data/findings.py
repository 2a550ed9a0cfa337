"""Multi-label findings: the two label conventions, and what to do with uncertain labels.

A labels.csv can say which findings an image has in two ways:

* **NIH ChestX-ray14**: a ``label`` column with findings separated by ``|``
  (``Effusion|Infiltration``) or ``No Finding``; a finding not listed is negative.
* **CheXpert**: one column per finding holding ``1`` (positive), ``0`` (negative), ``-1``
  (uncertain) or blank (not mentioned). Such a row is carried through the data layer as the
  explicit string ``effusion=1|edema=-1`` (see :func:`wide_label`), which can also be written in
  a ``label`` column directly; in this form a finding not listed is *not mentioned*.

Each finding of each image gets one of four codes; a bank holds them as an (N, F) tensor.
How uncertain and unmentioned codes become training targets is a policy (:func:`resolve`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from multimix.core.errors import ConfigError, DataError

NEGATIVE, POSITIVE, UNCERTAIN, UNMENTIONED = 0, 1, 2, 3
MAX_FINDINGS = 31  # two bits each in a signed 64-bit integer
NO_FINDING = ("no finding", "no_finding", "nofinding")
UNCERTAIN_POLICIES = ("ignore", "negative", "positive", "soft")
UNMENTIONED_POLICIES = ("negative", "ignore")
_VALUES = {"1": POSITIVE, "1.0": POSITIVE, "0": NEGATIVE, "0.0": NEGATIVE, "-1": UNCERTAIN}
_VALUES["-1.0"] = UNCERTAIN


@dataclass(frozen=True)
class FindingSpace:
    """The task's findings and how raw finding names reach them (case-insensitive).

    Shares :class:`~multimix.data.labels.LabelSpace`'s interface (``classes``, ``encode``,
    ``stratum``, ``target_shape``, ``blank``), so splits and banks take either.
    """

    classes: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.classes:
            raise ConfigError("--classes needs at least one finding for --task multilabel")
        if len(self.classes) > MAX_FINDINGS:
            raise ConfigError(f"at most {MAX_FINDINGS} findings are supported")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"--classes has duplicates: {','.join(self.classes)}")
        unknown = sorted(
            {v for v in self.mapping.values() if v not in self.classes and v not in NO_FINDING}
        )
        if unknown:
            raise ConfigError(f"--label-map maps onto {unknown}, which are not in --classes")

    @property
    def findings(self) -> tuple[str, ...]:
        return self.classes

    def _key(self, raw: str) -> str:
        key = raw.strip().lower()
        return self.mapping.get(key, key)

    def lookup(self, raw: str) -> int | None:
        """Index of a raw finding name; None when it is not one of the task's findings (a box
        list usually covers more findings than one task uses)."""
        key = self._key(raw)
        return self.classes.index(key) if key in self.classes else None

    def _finding(self, raw: str, where: object) -> int | None:
        key = self._key(raw)
        if key in NO_FINDING:
            return None
        if key not in self.classes:
            raise DataError(
                str(where),
                f"finding {raw.strip()!r} is not one of --classes {','.join(self.classes)}"
                " (use --label-map to map it)",
            )
        return self.classes.index(key)

    def codes(self, raw: str, where: object) -> tuple[int, ...]:
        """One code per finding for a label string in either convention."""
        tokens = [t.strip() for t in raw.split("|") if t.strip()]
        explicit = any("=" in t for t in tokens)
        codes = [UNMENTIONED if explicit else NEGATIVE] * len(self.classes)
        no_finding = False
        for token in tokens:
            name, _, value = token.partition("=")
            code = POSITIVE
            if "=" in token:
                value = value.strip()
                if value == "":
                    continue  # CheXpert blank: not mentioned
                if value not in _VALUES:
                    raise DataError(str(where), f"finding value {token!r} is not 1, 0, -1 or blank")
                code = _VALUES[value]
            index = self._finding(name, where)
            if index is None:
                no_finding = no_finding or code == POSITIVE
                continue
            codes[index] = code
        if no_finding:
            if POSITIVE in codes:
                raise DataError(str(where), f"label {raw!r} has 'No Finding' and a finding")
            codes = [NEGATIVE if c == UNMENTIONED else c for c in codes]
        return tuple(codes)

    blank = UNMENTIONED  # the codes of a row without a label

    @property
    def target_shape(self) -> tuple[int, ...]:
        return (len(self.classes),)

    def encode(self, raw: str, where: object) -> tuple[int, ...]:
        """A bank row's target: one code per finding."""
        return self.codes(raw, where)

    def stratum(self, raw: str, where: object) -> int:
        """The split's stratum of a label: its codes as one integer, two bits per finding."""
        return sum(int(c) << (2 * i) for i, c in enumerate(self.codes(raw, where)))


def resolve(
    codes: torch.Tensor,
    uncertain: str = "ignore",
    unmentioned: str = "negative",
    soft_target: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes -> (target, weight), floats of the same shape; weight 0 means not supervised.

    ``uncertain``: ``ignore`` (U-Ignore), ``negative`` (U-Zeros), ``positive`` (U-Ones) or
    ``soft`` (target ``soft_target``); ``unmentioned``: ``negative`` or ``ignore``.
    """
    check_policies(uncertain, unmentioned, soft_target)
    target = (codes == POSITIVE).float()
    weight = torch.ones_like(target)
    is_unc, is_unm = codes == UNCERTAIN, codes == UNMENTIONED
    uncertain_target = {"negative": 0.0, "positive": 1.0, "soft": soft_target, "ignore": 0.0}
    target = torch.where(is_unc, torch.full_like(target, uncertain_target[uncertain]), target)
    if uncertain == "ignore":
        weight = torch.where(is_unc, torch.zeros_like(weight), weight)
    if unmentioned == "ignore":
        weight = torch.where(is_unm, torch.zeros_like(weight), weight)
    return target, weight


def check_policies(uncertain: str, unmentioned: str, soft_target: float) -> None:
    if uncertain not in UNCERTAIN_POLICIES:
        raise ConfigError(
            f"--uncertain must be one of {', '.join(UNCERTAIN_POLICIES)}, not {uncertain!r}"
        )
    if unmentioned not in UNMENTIONED_POLICIES:
        raise ConfigError(
            f"--unmentioned must be one of {', '.join(UNMENTIONED_POLICIES)}, not {unmentioned!r}"
        )
    if not 0.0 <= soft_target <= 1.0:
        raise ConfigError("--soft-target must lie in [0, 1]")


def wide_label(row: dict[str, str], columns: list[str]) -> str | None:
    """A CheXpert-style row (one 1/0/-1/blank column per finding) as ``name=value|...``.

    None when every finding column is blank (the image is then unlabeled).
    """
    parts = [f"{c}={row.get(c, '').strip()}" for c in columns if row.get(c, "").strip()]
    return "|".join(parts) or None


def finding_columns(rows: list[dict[str, str]], exclude: set[str]) -> list[str]:
    """Columns whose values are all 1/0/-1/blank: the finding columns of a CheXpert table.

    Other columns (sex, age, view, path) are metadata and are left alone.
    """
    if not rows:
        return []
    names = [c for c in rows[0] if c not in exclude]
    return [c for c in names if all(r.get(c, "").strip() in (*_VALUES, "") for r in rows)]
