"""Pharmacy hooks: a fill takes the prescribed quantity from the store's stock and uses a refill;
returning an uncollected fill puts both back."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


def _stock(ctx: ToolContext, rx: dict) -> dict:
    rows = ctx.select("stock", {"store_id": rx["store_id"], "drug_id": rx["drug_id"]}, limit=1)
    if not rows:
        raise ToolError(f"store {rx['store_id']} does not stock drug {rx['drug_id']}")
    return rows[0]


@register_hook("pharmacy.fill")
def fill(ctx: ToolContext, args: dict) -> dict:
    rx = ctx.require("prescription", args["prescription_id"])
    if rx["refills_left"] <= 0:
        raise ToolError("no refills left")
    st = _stock(ctx, rx)
    if st["units"] < rx["quantity"]:
        raise ToolError(f"only {st['units']} units in stock")
    ctx.update("stock", st["stock_id"], {"units": st["units"] - rx["quantity"]})
    ctx.update("prescription", rx["prescription_id"], {"refills_left": rx["refills_left"] - 1})
    return ctx.insert("fill", {"prescription_id": rx["prescription_id"], "units": rx["quantity"],
                               "status": "queued", "filled_at": ctx.now})


@register_hook("pharmacy.return_to_stock")
def return_to_stock(ctx: ToolContext, args: dict) -> dict:
    f = ctx.require("fill", args["fill_id"])
    rx = ctx.require("prescription", f["prescription_id"])
    st = _stock(ctx, rx)
    ctx.update("stock", st["stock_id"], {"units": st["units"] + f["units"]})
    ctx.update("prescription", rx["prescription_id"], {"refills_left": rx["refills_left"] + 1})
    return ctx.update("fill", f["fill_id"], {"status": "returned_to_stock"})
