"""Hotel hooks: check-in/out (reservation, room and folio change together) and folio charges
(a charge row plus the folio balance)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("hotel.check_in")
def check_in(ctx: ToolContext, args: dict) -> dict:
    """The reservation becomes checked_in, its room occupied, and a folio with balance 0 opens."""
    res = ctx.require("reservation", args["reservation_id"])
    room = ctx.require("room", res["room_id"]) if res["room_id"] else None
    if room is None or room["status"] != "clean":
        raise ToolError("the assigned room is not ready")
    ctx.update("room", room["room_id"], {"status": "occupied"})
    ctx.insert("folio", {"reservation_id": res["reservation_id"], "balance": 0, "status": "open"})
    return ctx.update("reservation", res["reservation_id"], {"status": "checked_in"})


@register_hook("hotel.check_out")
def check_out(ctx: ToolContext, args: dict) -> dict:
    """The reservation becomes checked_out, its room dirty, and its open folios settled."""
    res = ctx.require("reservation", args["reservation_id"])
    if res["room_id"]:
        ctx.update("room", res["room_id"], {"status": "dirty"})
    for f in ctx.select("folio", {"reservation_id": res["reservation_id"], "status": "open"}):
        ctx.update("folio", f["folio_id"], {"status": "settled"})
    return ctx.update("reservation", res["reservation_id"], {"status": "checked_out"})


@register_hook("hotel.post_charge")
def post_charge(ctx: ToolContext, args: dict) -> dict:
    folio = ctx.require("folio", args["folio_id"])
    row = ctx.insert("charge", {"folio_id": folio["folio_id"], "category": args["category"],
                                "amount": args["amount"], "status": "posted", "posted_at": ctx.now})
    ctx.update("folio", folio["folio_id"], {"balance": folio["balance"] + args["amount"]})
    return row


@register_hook("hotel.void_charge")
def void_charge(ctx: ToolContext, args: dict) -> dict:
    ch = ctx.require("charge", args["charge_id"])
    folio = ctx.require("folio", ch["folio_id"])
    if folio["balance"] < ch["amount"]:
        raise ToolError("the folio balance is below the charge amount")
    ctx.update("folio", folio["folio_id"], {"balance": folio["balance"] - ch["amount"]})
    return ctx.update("charge", ch["charge_id"], {"status": "voided"})
