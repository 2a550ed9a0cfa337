"""Map each source's own label names onto the task's classes."""

from __future__ import annotations

from dataclasses import dataclass, field

from multimix.core.errors import ConfigError, DataError


def parse_list(text: str | None) -> tuple[str, ...]:
    """``"normal,pneumonia"`` -> ``("normal", "pneumonia")``, lower-cased."""
    return tuple(p.strip().lower() for p in (text or "").split(",") if p.strip())


def parse_label_map(text: str | None) -> dict[str, str]:
    """``"covid=pneumonia,ards=pneumonia"`` -> ``{"covid": "pneumonia", "ards": "pneumonia"}``."""
    out: dict[str, str] = {}
    for item in parse_list(text):
        if "=" not in item:
            raise ConfigError(f"--label-map entry {item!r} is not of the form source=class")
        src, dst = (s.strip() for s in item.split("=", 1))
        out[src] = dst
    return out


@dataclass(frozen=True)
class LabelSpace:
    """The task's classes and how raw labels reach them (case-insensitive)."""

    classes: tuple[str, ...]
    mapping: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise ConfigError("--classes needs at least two classes, e.g. normal,pneumonia")
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"--classes has duplicates: {','.join(self.classes)}")
        unknown = sorted({v for v in self.mapping.values() if v not in self.classes})
        if unknown:
            raise ConfigError(f"--label-map maps onto {unknown}, which are not in --classes")

    target_shape: tuple[int, ...] = ()  # a bank row's target: one class index
    blank: int = -1  # the target of a row without a label

    def encode(self, raw: str, where: object) -> int:
        """A bank row's target: the class index."""
        return self.index(raw, where)

    def stratum(self, raw: str, where: object) -> int:
        """The split's stratum of a label: its class."""
        return self.index(raw, where)

    def index(self, raw: str, where: object) -> int:
        """Class index of a raw label; a label that maps nowhere names the file and the label."""
        key = raw.strip().lower()
        key = self.mapping.get(key, key)
        if key not in self.classes:
            raise DataError(
                str(where),
                f"label {raw!r} is not one of the classes {','.join(self.classes)}"
                " (use --label-map to map it)",
            )
        return self.classes.index(key)
