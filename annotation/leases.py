"""The open-lease rule, in the three forms the code needs: Python, ORM and SQL.

A lease is open while `status = leased AND expires_at > now`. Nothing else decides it: a
lease past its time frees its slot at once, whether or not `leases_expire` has marked it
expired yet, so serving never depends on housekeeping. A leased row past its time is
"lapsed". Every check of the rule (the queue's SQL, the services, the stats) goes through
these functions, which are defined side by side so they cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.db.models import Q

from annotation.models import Assignment

_LEASED = Assignment.Status.LEASED.value
_STATUS = Assignment._meta.get_field("status").column
_EXPIRES_AT = Assignment._meta.get_field("expires_at").column


def lease_is_open(assignment: Assignment, now: datetime) -> bool:
    """Whether this assignment holds an open lease at `now`."""
    return assignment.status == _LEASED and assignment.expires_at > now


def open_lease_q(now: datetime, *, prefix: str = "") -> Q:
    """The rule as an ORM filter on Assignment (`prefix`: a lookup path such as "assignments__")."""
    return Q(**{f"{prefix}status": _LEASED, f"{prefix}expires_at__gt": now})


def lapsed_lease_q(now: datetime, *, prefix: str = "") -> Q:
    """Leases still marked leased whose time ran out: leased and not open."""
    return Q(**{f"{prefix}status": _LEASED, f"{prefix}expires_at__lte": now})


def open_lease_sql(alias: str) -> str:
    """The rule as a SQL condition on the assignment table under `alias`; see open_lease_params."""
    return f"{alias}.{_STATUS} = %s AND {alias}.{_EXPIRES_AT} > %s"


def open_lease_params(now: datetime) -> list:
    """The parameters of `open_lease_sql`, in order."""
    return [_LEASED, connection.ops.adapt_datetimefield_value(now)]
