"""Retail hooks: logic beyond the generated tool kinds."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("retail.order_total")
def order_total(ctx: ToolContext, args: dict) -> dict:
    """Sum of quantity x unit price over the lines of an order (every line, returned ones too)."""
    lines = ctx.select("order_item", {"order_id": args["order_id"]})
    total = round(sum(r["quantity"] * r["unit_price"] for r in lines), 2)
    return {"order_id": args["order_id"], "items_total": total, "lines": len(lines)}
