"""Parking hooks: sessions and reservations occupy and free spaces; ending a session charges the
zone's hourly rate to the driver's wallet; appeals move their citation."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


def _take_space(ctx: ToolContext, space_id, status: str) -> dict:
    space = ctx.require("space", space_id)
    if space["status"] != "free":
        raise ToolError(f"space {space_id} is {space['status']}")
    return ctx.update("space", space_id, {"status": status})


@register_hook("parking.start")
def start(ctx: ToolContext, args: dict) -> dict:
    _take_space(ctx, args["space_id"], "occupied")
    return ctx.insert("parking_session", {"vehicle_id": args["vehicle_id"], "space_id": args["space_id"],
                                          "hours": args["hours"], "started_at": ctx.now, "charged": 0,
                                          "status": "active"})


@register_hook("parking.end")
def end(ctx: ToolContext, args: dict) -> dict:
    s = ctx.require("parking_session", args["session_id"])
    space = ctx.require("space", s["space_id"])
    zone = ctx.require("zone", space["zone_id"])
    driver = ctx.require("driver", ctx.require("vehicle", s["vehicle_id"])["driver_id"])
    fee = s["hours"] * zone["hourly_rate"]
    if driver["wallet_balance"] < fee:
        raise ToolError(f"the wallet ({driver['wallet_balance']:.2f}) cannot cover the fee ({fee:.2f})")
    ctx.update("driver", driver["driver_id"], {"wallet_balance": driver["wallet_balance"] - fee})
    ctx.update("space", space["space_id"], {"status": "free"})
    return ctx.update("parking_session", s["session_id"], {"status": "ended", "charged": fee})


@register_hook("parking.reserve")
def reserve(ctx: ToolContext, args: dict) -> dict:
    _take_space(ctx, args["space_id"], "reserved")
    return ctx.insert("reservation", {"vehicle_id": args["vehicle_id"], "space_id": args["space_id"],
                                      "starts_at": args["starts_at"], "status": "booked"})


@register_hook("parking.release_reservation")
def release_reservation(ctx: ToolContext, args: dict) -> dict:
    r = ctx.require("reservation", args["reservation_id"])
    ctx.update("space", r["space_id"], {"status": "free"})
    return ctx.update("reservation", r["reservation_id"], {"status": "cancelled"})


@register_hook("parking.appeal")
def appeal(ctx: ToolContext, args: dict) -> dict:
    c = ctx.require("citation", args["citation_id"])
    if c["status"] != "issued":
        raise ToolError(f"citation {c['citation_id']} is {c['status']}")
    ctx.update("citation", c["citation_id"], {"status": "appealed"})
    return ctx.insert("appeal", {"citation_id": c["citation_id"], "statement": args["statement"], "status": "pending"})


@register_hook("parking.decide_appeal")
def decide_appeal(ctx: ToolContext, args: dict) -> dict:
    a = ctx.require("appeal", args["appeal_id"])
    ctx.update("citation", a["citation_id"], {"status": "cancelled" if args["accept"] else "upheld"})
    return ctx.update("appeal", a["appeal_id"], {"status": "accepted" if args["accept"] else "rejected"})
