"""The structures LungAutoSeg knows: TG-263 names, colours, SNOMED CT codes, ROI name aliases.

ROI names in clinical RTSTRUCTs vary ('RT LUNG', 'Lung Right', 'Lt Lung'). A name
matches a structure when its normalised form (lower case, every run of non-letters
and non-digits turned into one space) is the TG-263 name or one of its aliases. There
is no fuzzy matching: 'Lung_R-GTV' or 'Lungs' must never pass for a lung.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError

SCT = "SCT"
ANATOMICAL_STRUCTURE = (SCT, "123037004", "Anatomical Structure")


@dataclass(frozen=True)
class Structure:
    name: str  # TG-263
    colour: tuple[int, int, int]
    snomed_type: tuple[str, str, str]  # (scheme, code, meaning)
    snomed_modifier: tuple[str, str, str] | None
    aliases: tuple[str, ...]


RIGHT = (SCT, "24028007", "Right")
LEFT = (SCT, "7771000", "Left")
LUNG = (SCT, "39607008", "Lung")

STRUCTURES: dict[str, Structure] = {
    s.name: s
    for s in (
        Structure("Lung_R", (80, 160, 220), LUNG, RIGHT,
                  ("lung r", "lung right", "right lung", "rt lung", "lung rt", "r lung",
                   "rlung", "lungr", "lung rechts", "lung d", "poumon d", "poumon droit")),
        Structure("Lung_L", (220, 180, 80), LUNG, LEFT,
                  ("lung l", "lung left", "left lung", "lt lung", "lung lt", "l lung",
                   "llung", "lungl", "lung links", "lung g", "poumon g", "poumon gauche")),
        Structure("Heart", (220, 60, 60), (SCT, "80891009", "Heart"), None,
                  ("heart", "coeur")),
        Structure("Esophagus", (150, 110, 60), (SCT, "32849002", "Esophagus"), None,
                  ("esophagus", "oesophagus", "esoph", "oesoph")),
        Structure("SpinalCord", (250, 230, 90), (SCT, "2748008", "Spinal cord"), None,
                  ("spinalcord", "spinal cord", "cord", "myelon")),
    )
}


def normalise(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", " ", name.lower()).strip()


class AliasTable:
    """Maps clinical ROI names to TG-263 structure names."""

    def __init__(self, extra: dict[str, list[str]] | None = None):
        self.aliases: dict[str, set[str]] = {
            s.name: {normalise(s.name), *map(normalise, s.aliases)} for s in STRUCTURES.values()
        }
        for structure, names in (extra or {}).items():
            self.aliases.setdefault(structure, {normalise(structure)}).update(map(normalise, names))

    @classmethod
    def from_file(cls, path: str | Path | None) -> "AliasTable":
        """Built-in aliases, extended by a JSON file ``{"Lung_R": ["Poumon droit", ...]}``."""
        if path is None:
            return cls()
        try:
            extra = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"cannot read alias table ({error})", path) from error
        if not isinstance(extra, dict) or not all(
            isinstance(v, list) and all(isinstance(n, str) for n in v) for v in extra.values()
        ):
            raise InputError('alias table must map structure names to lists of names', path)
        return cls(extra)

    def match(self, structure: str, roi_names: list[str]) -> list[str]:
        """ROI names that denote ``structure``; the exact TG-263 name first if present."""
        wanted = self.aliases.get(structure, {normalise(structure)})
        found = [name for name in roi_names if normalise(name) in wanted]
        return sorted(found, key=lambda name: name != structure)

    def identify(self, roi_name: str) -> str | None:
        """The structure an ROI name denotes, or None."""
        key = normalise(roi_name)
        return next((s for s, names in self.aliases.items() if key in names), None)

    def fingerprint(self) -> str:
        return json.dumps({k: sorted(v) for k, v in sorted(self.aliases.items())})


def structure_entries(names: list[str]) -> list[dict]:
    """Model-package entries (label n = n-th name) with colour and SNOMED codes when known."""
    entries = []
    for label, name in enumerate(names, start=1):
        known = STRUCTURES.get(name)
        entries.append({
            "name": name, "label": label,
            "colour": list(known.colour) if known else [0, 200, 0],
            "snomed": None if not known else {
                "category": list(ANATOMICAL_STRUCTURE),
                "type": list(known.snomed_type),
                "modifier": list(known.snomed_modifier) if known.snomed_modifier else None,
            },
        })
    return entries
