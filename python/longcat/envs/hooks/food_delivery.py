"""Food delivery hooks: wallet payment (a balance check plus two rows changed together) and the
subtotal of an order's lines."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("food_delivery.pay_with_wallet")
def pay_with_wallet(ctx: ToolContext, args: dict) -> dict:
    """Debits the order total from the customer's active wallet and marks the order wallet-paid."""
    order = ctx.require("order", args["order_id"])
    wallets = ctx.select("wallet", {"customer_id": order["customer_id"], "status": "active"}, limit=1)
    if not wallets:
        raise ToolError(f"customer {order['customer_id']} has no active wallet")
    w = wallets[0]
    if w["balance"] < order["total"]:
        raise ToolError(f"wallet balance {w['balance']:.2f} is below the order total {order['total']:.2f}")
    ctx.update("wallet", w["wallet_id"], {"balance": w["balance"] - order["total"]})
    return ctx.update("order", order["order_id"], {"payment": "wallet"})


@register_hook("food_delivery.lines_total")
def lines_total(ctx: ToolContext, args: dict) -> dict:
    lines = ctx.select("order_line", {"order_id": args["order_id"]})
    return {"order_id": args["order_id"], "subtotal": round(sum(r["quantity"] * r["unit_price"] for r in lines), 2),
            "lines": len(lines)}


@register_hook("food_delivery.apply_promo")
def apply_promo(ctx: ToolContext, args: dict) -> dict:
    """Sets the order's promo code and uses one of the code's remaining uses, in one transaction."""
    promo = ctx.require("promo", args["promo_code"])
    if promo["uses_left"] <= 0:
        raise ToolError(f"promo code {promo['code']} is used up")
    ctx.update("promo", promo["code"], {"uses_left": promo["uses_left"] - 1})
    return ctx.update("order", args["order_id"], {"promo_code": promo["code"]})
