"""Search filters: what a photo must be besides matching the query (date taken, camera,
detected object, tag).

Every kind of search applies them before its limit, as a set of allowed row ids that
the catalogue's SQL picks (`Catalog.ids_matching`); a query of no words with filters
lists the matching photos newest-taken first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date


@dataclass(frozen=True)
class Filters:
    after: date | None = None  # taken_at >= after (00:00)
    before: date | None = None  # taken_at <= before (23:59:59)
    camera: str | None = None  # case-insensitive substring of "camera_make camera_model"
    object: str | None = None  # a detected object's label (exact, case-insensitive): "dog"
    tag: str | None = None  # a substring of an ImageNet tag's label (case-insensitive)

    def __post_init__(self) -> None:
        if self.after and self.before and self.after > self.before:
            raise ValueError(f"the date range is empty: after {self.after} but before "
                             f"{self.before}")
        for name in ("camera", "object", "tag"):  # "" and "  " filter nothing
            value = getattr(self, name)
            object.__setattr__(self, name, value.strip() or None if value else None)

    def is_empty(self) -> bool:
        return not any(asdict(self).values())

    def as_kwargs(self) -> dict:
        """The filters set, as the catalogue's `ids_matching` and friends take them."""
        return {name: value for name, value in asdict(self).items() if value}
