"""Is a scan the right way up? Judged from Tesseract's own output on the page as it came, so that an
upright page costs nothing more: its words are read with high confidence and its lines lie flat.

Tesseract reads a page turned upside down as confident-looking garbage of low confidence, and a
sideways page as lines that stand upright (taller than wide; it reads them, but the layout rules,
which judge headings by a line's height, cannot). Only such pages are read again, turned: upside
down by 180 degrees, sideways by 90 one way and the other, and the reading with the best confidence
is kept. Pure functions of the TSV, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_WORDS = 5  # fewer: a blank page or a photo; nothing to judge by
GOOD_CONFIDENCE = 60.0  # Tesseract's mean word confidence on an upright page of print is 85-96
BETTER_BY = 15.0  # a turned reading must beat the first by this much to be kept
SIDEWAYS_RATIO = 2.0  # a line box this much taller than wide stands on its side


@dataclass(frozen=True)
class Reading:
    words: int
    confidence: float  # mean over the words
    sideways: bool  # most lines stand upright


def reading_of(tsv: str) -> Reading:
    confidences: list[float] = []
    upright = lines = 0
    for row in tsv.splitlines():
        cols = row.split("\t", 11)
        if len(cols) != 12:
            continue
        if cols[0] == "5" and cols[11].strip():
            try:
                confidences.append(float(cols[10]))
            except ValueError:
                continue
        elif cols[0] == "4" and cols[8].isdigit() and cols[9].isdigit():
            lines += 1
            upright += int(cols[9]) > SIDEWAYS_RATIO * max(1, int(cols[8]))
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return Reading(len(confidences), mean, lines > 0 and upright * 2 > lines)


def turns_to_try(first: Reading) -> tuple[int, ...]:
    """Clockwise turns (degrees) to read the page again at; () where the first reading stands."""
    if first.words < MIN_WORDS:
        return ()
    if first.sideways:
        return (90, 270)
    return (180,) if first.confidence < GOOD_CONFIDENCE else ()


def best_turn(readings: dict[int, Reading]) -> int:
    """The turn whose reading to keep: the unturned one (0) unless a turned one, lying flat, is
    clearly more confident."""
    first = readings[0]
    flat = {turn: r for turn, r in readings.items() if turn and not r.sideways and r.words >= MIN_WORDS}
    if not flat:
        return 0
    turn, best = max(flat.items(), key=lambda item: item[1].confidence)
    better = best.confidence >= first.confidence + BETTER_BY or (first.sideways and best.confidence >= first.confidence)
    return turn if better else 0
