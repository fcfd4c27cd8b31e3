"""Utilities hooks: readings advance the meter's last reading; payments keep bills in step; a
payment plan absorbs the account's overdue bills into monthly instalments."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("utilities.submit_reading")
def submit_reading(ctx: ToolContext, args: dict) -> dict:
    meter = ctx.require("meter", args["meter_id"])
    if args["value"] < meter["last_reading"]:
        raise ToolError("the reading is below the previous one")
    ctx.update("meter", meter["meter_id"], {"last_reading": args["value"]})
    return ctx.insert("reading", {"meter_id": meter["meter_id"], "value": args["value"], "source": args["source"],
                                  "read_at": ctx.now})


@register_hook("utilities.pay_bill")
def pay_bill(ctx: ToolContext, args: dict) -> dict:
    bill = ctx.require("bill", args["bill_id"])
    if args["amount"] > bill["amount_due"]:
        raise ToolError("the payment exceeds the amount due")
    left = bill["amount_due"] - args["amount"]
    ctx.update("bill", bill["bill_id"], {"amount_due": left, "status": "paid" if left <= 0 else bill["status"]})
    return ctx.insert("payment", {"bill_id": bill["bill_id"], "amount": args["amount"], "method": args["method"],
                                  "paid_at": ctx.now})


@register_hook("utilities.create_plan")
def create_plan(ctx: ToolContext, args: dict) -> dict:
    overdue = ctx.select("bill", {"account_id": args["account_id"], "status": "overdue"})
    if not overdue:
        raise ToolError("no overdue bill to spread")
    total = sum(b["amount_due"] for b in overdue)
    # instalments round up to the cent so the plan always covers the debt
    monthly = max(1.0, math.ceil(total * 100 / args["months"]) / 100)
    for b in overdue:
        ctx.update("bill", b["bill_id"], {"status": "in_plan"})
    return ctx.insert("payment_plan", {"account_id": args["account_id"], "monthly_amount": monthly,
                                       "months": args["months"], "status": "active"})
