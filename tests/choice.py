"""What converters.convert_job.choose_candidate ships, recomputed from a manifest's records."""

from __future__ import annotations


def shipped(found: dict[str, dict], eligible: list[str], speed: str) -> str:
    """The fastest eligible candidate by the ``speed`` records, or a more accurate eligible one timing within
    ``SPEED_TIE`` of it (a tie)."""
    from converters.convert_job import SPEED_TIE

    fastest = max(found[k][speed] for k in eligible)
    return max((k for k in eligible if found[k][speed] * SPEED_TIE >= fastest),
               key=lambda k: (found[k]["cosine"], found[k][speed]))
