"""Reading past loads, and working the flags of loaded lines out again after a code list
changed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.audit.service import Actor, record_event
from core.clock import Clock
from reporting.claims.layout import MARK, DriverValues
from reporting.claims.loading import BATCH, execute_many
from reporting.code_lists import ClaimCodes, FlagSet, shipped_code_lists
from reporting.models import ClaimFile, ClaimType

# --- reading loads --------------------------------------------------------------------------


def list_loads(
    session: Session, *, state_ids: set[int] | None, limit: int = 100
) -> list[ClaimFile]:
    """The latest loads of these states (None: every state), newest first."""
    query = select(ClaimFile).order_by(ClaimFile.loaded_at.desc(), ClaimFile.id.desc())
    if state_ids is not None:
        query = query.where(ClaimFile.state_id.in_(state_ids or {-1}))
    return list(session.scalars(query.limit(limit)))


def get_load(session: Session, *, file_id: int, state_ids: set[int] | None) -> ClaimFile | None:
    """One load, when it is of one of these states (None: any)."""
    load = session.get(ClaimFile, file_id)
    if load is None or (state_ids is not None and load.state_id not in state_ids):
        return None
    return load


# --- the code lists changed -------------------------------------------------------------------


@dataclass(frozen=True)
class Rederived:
    lines: int  # lines read
    changed: int  # lines whose flags changed


def rederive_flags(
    session: Session, *, clock: Clock, actor: Actor, codes: ClaimCodes | None = None
) -> Rederived:
    """Work every loaded line's flags out again from the code lists (after a list changed):
    superseded lines too, so that a report as of a past date reads the same lists. Only
    lines whose flags change are written. Audited (`claims.rederive`)."""
    codes = codes or shipped_code_lists()
    connection = session.connection()
    binds = DriverValues(connection.dialect)
    table = binds.table
    lines = 0
    changes: list[tuple[Any, ...]] = []
    memo: dict[tuple[Any, ...], FlagSet] = {}
    last_id = 0
    while True:
        batch = list(
            connection.execute(
                select(
                    table.c.id,
                    table.c.claim_type,
                    table.c.diagnoses,
                    table.c.revenue_code,
                    table.c.place_of_service,
                    table.c.is_vaso_occlusive,
                    table.c.is_inpatient_stay,
                    table.c.is_ed_visit,
                )
                .where(table.c.id > last_id)
                .order_by(table.c.id)
                .limit(BATCH)
            )
        )
        if not batch:
            break
        last_id = batch[-1][0]
        for line_id, kind, diagnoses, revenue, place, *old in batch:
            key = (kind, tuple(diagnoses or ()), revenue, place)
            flags = memo.get(key)
            if flags is None:
                flags = codes.flags(
                    file_type=ClaimType(kind).value,
                    diagnoses=key[1],
                    revenue_code=revenue,
                    place_of_service=place,
                )
                memo[key] = flags
            lines += 1
            if tuple(bool(value) for value in old) != flags:
                changes.append((*(binds.true if flag else binds.false for flag in flags), line_id))
    if changes:
        execute_many(
            connection,
            f"UPDATE claim_lines SET is_vaso_occlusive = {MARK}, "  # noqa: S608 (constants only)
            f"is_inpatient_stay = {MARK}, is_ed_visit = {MARK} WHERE id = {MARK}",
            changes,
        )
    record_event(
        session,
        clock=clock,
        actor=actor,
        action="claims.rederive",
        detail={"lines": lines, "changed": len(changes), "code_lists": codes.digest[:16]},
    )
    return Rederived(lines=lines, changed=len(changes))
