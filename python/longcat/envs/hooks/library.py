"""Library hooks: circulation (loan and copy change together; a returned copy goes to the hold
shelf when someone waits), fines kept in step with the member's fines due, event seats."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("library.check_out")
def check_out(ctx: ToolContext, args: dict) -> dict:
    copy = ctx.require("copy", args["copy_id"])
    if copy["status"] != "available":
        raise ToolError(f"copy {copy['copy_id']} is not available")
    ctx.update("copy", copy["copy_id"], {"status": "on_loan"})
    return ctx.insert("loan", {"copy_id": copy["copy_id"], "member_id": args["member_id"],
                               "due_date": args["due_date"], "renewals": 0, "status": "active"})


@register_hook("library.check_in")
def check_in(ctx: ToolContext, args: dict) -> dict:
    loan = ctx.require("loan", args["loan_id"])
    copy = ctx.require("copy", loan["copy_id"])
    waiting = ctx.select("hold", {"title_id": copy["title_id"], "status": "waiting"}, limit=1)
    ctx.update("copy", copy["copy_id"], {"status": "on_hold_shelf" if waiting else "available"})
    return ctx.update("loan", loan["loan_id"], {"status": "returned"})


@register_hook("library.charge_fine")
def charge_fine(ctx: ToolContext, args: dict) -> dict:
    m = ctx.require("member", args["member_id"])
    ctx.update("member", m["member_id"], {"fines_due": m["fines_due"] + args["amount"]})
    return ctx.insert("fine", {"member_id": m["member_id"], "loan_id": args.get("loan_id"),
                               "amount": args["amount"], "reason": args["reason"], "status": "unpaid"})


@register_hook("library.settle_fine")
def settle_fine(ctx: ToolContext, args: dict) -> dict:
    """pay_fine and waive_fine: the fine leaves the member's fines due either way."""
    fine = ctx.require("fine", args["fine_id"])
    m = ctx.require("member", fine["member_id"])
    if m["fines_due"] < fine["amount"]:
        raise ToolError("the member's fines due do not include this fine")
    ctx.update("member", m["member_id"], {"fines_due": m["fines_due"] - fine["amount"]})
    return ctx.update("fine", fine["fine_id"], {"status": "waived" if ctx.tool.name == "waive_fine" else "paid"})


@register_hook("library.register")
def register(ctx: ToolContext, args: dict) -> dict:
    ev = ctx.require("event", args["event_id"])
    if ev["seats_left"] <= 0:
        raise ToolError("the event is full")
    ctx.update("event", ev["event_id"], {"seats_left": ev["seats_left"] - 1})
    return ctx.insert("registration", {"event_id": ev["event_id"], "member_id": args["member_id"],
                                       "status": "registered"})


@register_hook("library.unregister")
def unregister(ctx: ToolContext, args: dict) -> dict:
    reg = ctx.require("registration", args["registration_id"])
    ev = ctx.require("event", reg["event_id"])
    ctx.update("event", ev["event_id"], {"seats_left": ev["seats_left"] + 1})
    return ctx.update("registration", reg["registration_id"], {"status": "cancelled"})
