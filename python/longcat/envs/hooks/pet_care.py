"""Pet care hooks: boarding stays occupy, free and bill kennels; invoice payments reduce the
owner's balance due."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("pet_care.book_boarding")
def book_boarding(ctx: ToolContext, args: dict) -> dict:
    kennel = ctx.require("kennel", args["kennel_id"])
    if kennel["status"] != "free":
        raise ToolError(f"kennel {kennel['kennel_id']} is {kennel['status']}")
    ctx.update("kennel", kennel["kennel_id"], {"status": "occupied"})
    return ctx.insert("boarding_stay", {"pet_id": args["pet_id"], "kennel_id": kennel["kennel_id"],
                                        "check_in": args["check_in"], "nights": args["nights"], "status": "booked"})


@register_hook("pet_care.end_boarding")
def end_boarding(ctx: ToolContext, args: dict) -> dict:
    """The kennel goes to cleaning; the stay (nights x nightly rate) is invoiced to the owner."""
    stay = ctx.require("boarding_stay", args["stay_id"])
    kennel = ctx.require("kennel", stay["kennel_id"])
    owner = ctx.require("owner", ctx.require("pet", stay["pet_id"])["owner_id"])
    amount = stay["nights"] * kennel["nightly_rate"]
    ctx.update("kennel", kennel["kennel_id"], {"status": "cleaning"})
    ctx.insert("invoice", {"owner_id": owner["owner_id"], "amount": amount, "status": "open"})
    ctx.update("owner", owner["owner_id"], {"balance_due": owner["balance_due"] + amount})
    return ctx.update("boarding_stay", stay["stay_id"], {"status": "completed"})


@register_hook("pet_care.cancel_boarding")
def cancel_boarding(ctx: ToolContext, args: dict) -> dict:
    stay = ctx.require("boarding_stay", args["stay_id"])
    ctx.update("kennel", stay["kennel_id"], {"status": "free"})
    return ctx.update("boarding_stay", stay["stay_id"], {"status": "cancelled"})


@register_hook("pet_care.pay_invoice")
def pay_invoice(ctx: ToolContext, args: dict) -> dict:
    inv = ctx.require("invoice", args["invoice_id"])
    owner = ctx.require("owner", inv["owner_id"])
    if owner["balance_due"] < inv["amount"]:
        raise ToolError("the balance due does not include this invoice")
    ctx.update("owner", owner["owner_id"], {"balance_due": owner["balance_due"] - inv["amount"]})
    return ctx.update("invoice", inv["invoice_id"], {"status": "paid"})
