"""IT helpdesk hooks: licence seats keep the pool's seats_used in step; assigning an incident
counts against the technician's queue."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("it_helpdesk.grant_seat")
def grant_seat(ctx: ToolContext, args: dict) -> dict:
    lic = ctx.require("license", args["license_id"])
    if lic["seats_used"] >= lic["seats_total"]:
        raise ToolError(f"licence {lic['license_id']} has no seats left")
    ctx.update("license", lic["license_id"], {"seats_used": lic["seats_used"] + 1})
    return ctx.insert("license_seat", {"license_id": lic["license_id"], "user_id": args["user_id"], "status": "active"})


@register_hook("it_helpdesk.revoke_seat")
def revoke_seat(ctx: ToolContext, args: dict) -> dict:
    seat = ctx.require("license_seat", args["seat_id"])
    lic = ctx.require("license", seat["license_id"])
    if lic["seats_used"] <= 0:
        raise ToolError("the pool has no seats in use")
    ctx.update("license", lic["license_id"], {"seats_used": lic["seats_used"] - 1})
    return ctx.update("license_seat", seat["seat_id"], {"status": "revoked"})


@register_hook("it_helpdesk.assign_incident")
def assign_incident(ctx: ToolContext, args: dict) -> dict:
    tech = ctx.require("technician", args["technician_id"])
    if tech["open_tickets"] >= 40:
        raise ToolError("the technician's queue is full")
    ctx.update("technician", tech["technician_id"], {"open_tickets": tech["open_tickets"] + 1})
    return ctx.update("incident", args["incident_id"], {"technician_id": tech["technician_id"], "status": "assigned"})
