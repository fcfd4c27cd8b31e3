"""Event ticketing hooks: sales take tickets from tier inventory and issue one ticket per seat;
refunds void tickets and return them to inventory; resale moves a ticket between fans."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("event_tickets.buy")
def buy(ctx: ToolContext, args: dict) -> dict:
    tier = ctx.require("tier", args["tier_id"])
    q = args["quantity"]
    if tier["remaining"] < q:
        raise ToolError(f"only {tier['remaining']} tickets left in tier {tier['tier_id']}")
    ctx.update("tier", tier["tier_id"], {"remaining": tier["remaining"] - q})
    order = ctx.insert("order", {"order_code": args["order_code"], "fan_id": args["fan_id"], "tier_id": tier["tier_id"],
                                 "quantity": q, "total": q * tier["price"], "status": "paid", "created_at": ctx.now})
    for i in range(q):
        # barcodes derive from the order id, so they are unique and deterministic
        ctx.insert("ticket", {"barcode": f"{order['order_id']}-{i + 1}", "order_id": order["order_id"],
                              "holder_fan_id": args["fan_id"], "seat": None, "status": "valid"})
    return order


@register_hook("event_tickets.refund_order")
def refund_order(ctx: ToolContext, args: dict) -> dict:
    order = ctx.require("order", args["order_id"])
    tier = ctx.require("tier", order["tier_id"])
    for t in ctx.select("ticket", {"order_id": order["order_id"]}):
        if t["status"] in ("scanned", "listed"):
            raise ToolError(f"ticket {t['ticket_id']} is {t['status']}")
        ctx.update("ticket", t["ticket_id"], {"status": "void"})
    ctx.update("tier", tier["tier_id"], {"remaining": tier["remaining"] + order["quantity"]})
    return ctx.update("order", order["order_id"], {"status": "refunded"})


@register_hook("event_tickets.list_ticket")
def list_ticket(ctx: ToolContext, args: dict) -> dict:
    t = ctx.require("ticket", args["ticket_id"])
    ctx.update("ticket", t["ticket_id"], {"status": "listed"})
    return ctx.insert("listing", {"ticket_id": t["ticket_id"], "price": args["price"], "status": "active"})


@register_hook("event_tickets.withdraw_listing")
def withdraw_listing(ctx: ToolContext, args: dict) -> dict:
    lst = ctx.require("listing", args["listing_id"])
    ctx.update("ticket", lst["ticket_id"], {"status": "valid"})
    return ctx.update("listing", lst["listing_id"], {"status": "withdrawn"})


@register_hook("event_tickets.buy_resale")
def buy_resale(ctx: ToolContext, args: dict) -> dict:
    lst = ctx.require("listing", args["listing_id"])
    ctx.update("ticket", lst["ticket_id"], {"holder_fan_id": args["fan_id"], "status": "valid"})
    return ctx.update("listing", lst["listing_id"], {"status": "sold"})
