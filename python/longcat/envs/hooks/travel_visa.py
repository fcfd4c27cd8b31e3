"""Visa hooks: a decision closes the application; fee payment and refund keep the application's
fee_paid flag in step with the payment row."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("travel_visa.decide")
def decide(ctx: ToolContext, args: dict) -> dict:
    """approve_application / refuse_application: the tool decides the outcome."""
    app = ctx.require("application", args["application_id"])
    outcome = "approved" if ctx.tool.name == "approve_application" else "refused"
    ctx.update("application", app["application_id"], {"status": outcome})
    return ctx.insert("decision", {"application_id": app["application_id"], "outcome": outcome,
                                   "valid_until": args.get("valid_until"), "reason": args.get("reason")})


@register_hook("travel_visa.pay_fee")
def pay_fee(ctx: ToolContext, args: dict) -> dict:
    app = ctx.require("application", args["application_id"])
    if app["fee_paid"]:
        raise ToolError("the fee is already paid")
    vt = ctx.require("visa_type", app["visa_type_id"])
    ctx.update("application", app["application_id"], {"fee_paid": True})
    return ctx.insert("payment", {"application_id": app["application_id"], "amount": vt["fee"],
                                  "method": args["method"], "status": "captured"})


@register_hook("travel_visa.refund_fee")
def refund_fee(ctx: ToolContext, args: dict) -> dict:
    pay = ctx.require("payment", args["payment_id"])
    ctx.update("application", pay["application_id"], {"fee_paid": False})
    return ctx.update("payment", pay["payment_id"], {"status": "refunded"})


@register_hook("travel_visa.appeal")
def appeal(ctx: ToolContext, args: dict) -> dict:
    app = ctx.require("application", args["application_id"])
    if app["status"] != "refused":
        raise ToolError(f"application {app['application_id']} is {app['status']}, not refused")
    ctx.update("application", app["application_id"], {"status": "appealed"})
    return ctx.insert("appeal", {"application_id": app["application_id"], "grounds": args["grounds"], "status": "lodged"})
