"""Numbers in words for the three tools' messages: "1 image", "2 images"."""

from __future__ import annotations


def count(number: int, noun: str, plural: str | None = None) -> str:
    """`number` and `noun`, the noun plural unless the number is one ("{noun}s" unless
    `plural` is given); thousands separated."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"
