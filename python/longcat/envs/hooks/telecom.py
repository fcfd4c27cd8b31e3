"""Telecom hooks: SIM swap (the new card takes the line, the old ones retire) and bill payment
(a payment row plus the bill's amount due and status)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("telecom.swap_sim")
def swap_sim(ctx: ToolContext, args: dict) -> dict:
    line = ctx.require("line", args["line_id"])
    new = ctx.require("sim", args["iccid"])
    if new["status"] != "in_stock":
        raise ToolError(f"SIM {new['iccid']} is not in stock")
    for old in ctx.select("sim", {"line_id": line["line_id"], "status": "active"}):
        ctx.update("sim", old["iccid"], {"status": "retired"})
    return ctx.update("sim", new["iccid"], {"line_id": line["line_id"], "status": "active"})


@register_hook("telecom.pay_bill")
def pay_bill(ctx: ToolContext, args: dict) -> dict:
    bill = ctx.require("bill", args["bill_id"])
    if args["amount"] > bill["amount_due"]:
        raise ToolError("the payment exceeds the amount due")
    left = bill["amount_due"] - args["amount"]
    ctx.update("bill", bill["bill_id"], {"amount_due": left, "status": "paid" if left <= 0 else bill["status"]})
    return ctx.insert("payment", {"bill_id": bill["bill_id"], "amount": args["amount"], "method": args["method"],
                                  "paid_at": ctx.now})
