"""The public FHIR R4 examples in tests/fixtures/fhir-examples (see its README for sources and
licences), as the tests use them: each file, each Bundle entry, each NDJSON line."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "fhir-examples" / "r4"


@dataclass(frozen=True)
class Example:
    """One example resource and where it comes from (`Bundle/x.json#entry[3]`)."""

    name: str
    resource: dict[str, Any]

    @property
    def resource_type(self) -> str:
        return str(self.resource["resourceType"])

    def copy(self) -> dict[str, Any]:
        """A deep copy to mutate."""
        return copy.deepcopy(self.resource)


@cache
def example_files() -> tuple[Example, ...]:
    """Every JSON file, whole (Bundles as Bundles)."""
    return tuple(
        Example(str(path.relative_to(EXAMPLES)), json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(EXAMPLES.glob("*/*.json"))
    )


@cache
def all_examples() -> tuple[Example, ...]:
    """Every file, every Bundle entry's resource, and every NDJSON line."""
    found = list(example_files())
    for example in example_files():
        if example.resource_type == "Bundle":
            for index, entry in enumerate(example.resource.get("entry", [])):
                if "resource" in entry:
                    found.append(Example(f"{example.name}#entry[{index}]", entry["resource"]))
    for path in sorted(EXAMPLES.glob("ndjson/*.ndjson")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                found.append(Example(f"{path.relative_to(EXAMPLES)}:{number}", json.loads(line)))
    return tuple(found)


def example(name: str) -> dict[str, Any]:
    """A deep copy of one example file's resource, by its path under r4/."""
    for candidate in example_files():
        if candidate.name == name:
            return candidate.copy()
    raise KeyError(name)
