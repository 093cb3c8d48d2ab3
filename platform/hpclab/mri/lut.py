"""Colour look-up tables: FreeSurfer's aseg subset, the three-class tissue table, and a LUT reader."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LutEntry:
    """One row of a FreeSurfer colour table: label id, name and RGBA colour (0-255, A=0 opaque)."""

    id: int
    name: str
    rgba: tuple[int, int, int, int]


Lut = Mapping[int, LutEntry]

# The labels FreeSurfer reports in aseg.stats (its ASegStatsLUT.txt, a subset of FreeSurferColorLUT.txt).
_ASEG_ROWS = """
0 Unknown 0 0 0
2 Left-Cerebral-White-Matter 245 245 245
3 Left-Cerebral-Cortex 205 62 78
4 Left-Lateral-Ventricle 120 18 134
5 Left-Inf-Lat-Vent 196 58 250
7 Left-Cerebellum-White-Matter 220 248 164
8 Left-Cerebellum-Cortex 230 148 34
10 Left-Thalamus-Proper 0 118 14
11 Left-Caudate 122 186 220
12 Left-Putamen 236 13 176
13 Left-Pallidum 12 48 255
14 3rd-Ventricle 204 182 142
15 4th-Ventricle 42 204 164
16 Brain-Stem 119 159 176
17 Left-Hippocampus 220 216 20
18 Left-Amygdala 103 255 255
24 CSF 60 60 60
26 Left-Accumbens-area 255 165 0
28 Left-VentralDC 165 42 42
30 Left-vessel 160 32 240
31 Left-choroid-plexus 0 200 200
41 Right-Cerebral-White-Matter 0 225 0
42 Right-Cerebral-Cortex 205 62 78
43 Right-Lateral-Ventricle 120 18 134
44 Right-Inf-Lat-Vent 196 58 250
46 Right-Cerebellum-White-Matter 220 248 164
47 Right-Cerebellum-Cortex 230 148 34
49 Right-Thalamus-Proper 0 118 14
50 Right-Caudate 122 186 220
51 Right-Putamen 236 13 176
52 Right-Pallidum 13 48 255
53 Right-Hippocampus 220 216 20
54 Right-Amygdala 103 255 255
58 Right-Accumbens-area 255 165 0
60 Right-VentralDC 165 42 42
62 Right-vessel 160 32 240
63 Right-choroid-plexus 0 200 221
72 5th-Ventricle 120 190 150
77 WM-hypointensities 200 70 255
78 Left-WM-hypointensities 255 148 10
79 Right-WM-hypointensities 255 148 10
80 non-WM-hypointensities 164 108 226
81 Left-non-WM-hypointensities 164 108 226
82 Right-non-WM-hypointensities 164 108 226
85 Optic-Chiasm 234 169 30
251 CC_Posterior 0 0 64
252 CC_Mid_Posterior 0 0 112
253 CC_Central 0 0 160
254 CC_Mid_Anterior 0 0 208
255 CC_Anterior 0 0 255
"""


def _parse_rows(text: str, source: str) -> dict[int, LutEntry]:
    entries: dict[int, LutEntry] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        try:
            label = int(fields[0])
            name = fields[1]
            rgb = [int(v) for v in fields[2:5]] if len(fields) >= 5 else [0, 0, 0]
            alpha = int(fields[5]) if len(fields) >= 6 else 0
        except (ValueError, IndexError):
            raise ValueError(f"{source}:{lineno}: not a colour-table row (id name R G B [A]): {raw!r}") from None
        entries[label] = LutEntry(label, name, (rgb[0], rgb[1], rgb[2], alpha))
    return entries


#: FreeSurfer's aseg labels (ASegStatsLUT.txt), for ``segstats`` of an aseg volume.
ASEG_LUT: dict[int, LutEntry] = _parse_rows(_ASEG_ROWS, "ASEG_LUT")

#: The three tissue classes ``process`` writes (0 background, 1 CSF, 2 GM, 3 WM).
TISSUE_LUT: dict[int, LutEntry] = {
    0: LutEntry(0, "Unknown", (0, 0, 0, 0)),
    1: LutEntry(1, "CSF", (40, 120, 255, 0)),
    2: LutEntry(2, "Gray-Matter", (220, 60, 60, 0)),
    3: LutEntry(3, "White-Matter", (250, 220, 90, 0)),
}


def load_lut(source: str | Path | Mapping[int, str] | Mapping[int, LutEntry]) -> dict[int, LutEntry]:
    """A colour table from a FreeSurferColorLUT-format file, the names ``"aseg"``/``"tissue"``, or a mapping.

    A mapping may give plain names ({4: "Left-Lateral-Ventricle"}); colours then default to black.
    """
    if isinstance(source, Mapping):
        return {int(k): v if isinstance(v, LutEntry) else LutEntry(int(k), str(v), (0, 0, 0, 0)) for k, v in source.items()}
    if str(source) == "aseg":
        return dict(ASEG_LUT)
    if str(source) == "tissue":
        return dict(TISSUE_LUT)
    path = Path(source)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"cannot read colour table {path}: {exc.strerror}") from None
    entries = _parse_rows(text, str(path))
    if not entries:
        raise ValueError(f"{path}: no colour-table rows found (expected 'id name R G B A' lines)")
    return entries
