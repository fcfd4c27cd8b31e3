"""Shipping hooks: delivery attempts move the shipment (delivered, or held after the third
failure); paying an invoice reduces the shipper's balance due."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext

MAX_ATTEMPTS = 3


@register_hook("shipping.attempt")
def attempt(ctx: ToolContext, args: dict) -> dict:
    sh = ctx.require("shipment", args["shipment_id"])
    done = ctx.select("delivery_attempt", {"shipment_id": sh["shipment_id"]})
    if len(done) >= MAX_ATTEMPTS:
        raise ToolError(f"{MAX_ATTEMPTS} attempts were already made")
    row = ctx.insert("delivery_attempt", {"shipment_id": sh["shipment_id"], "outcome": args["outcome"], "at": ctx.now})
    if args["outcome"] == "delivered":
        ctx.update("shipment", sh["shipment_id"], {"status": "delivered"})
    elif len(done) + 1 >= MAX_ATTEMPTS:
        ctx.update("shipment", sh["shipment_id"], {"status": "held"})
    return row


@register_hook("shipping.pay_invoice")
def pay_invoice(ctx: ToolContext, args: dict) -> dict:
    inv = ctx.require("invoice", args["invoice_id"])
    sh = ctx.require("shipper", inv["shipper_id"])
    if sh["balance_due"] < inv["amount"]:
        raise ToolError("the balance due does not include this invoice")
    ctx.update("shipper", sh["shipper_id"], {"balance_due": sh["balance_due"] - inv["amount"]})
    return ctx.update("invoice", inv["invoice_id"], {"status": "paid"})
