"""Restaurant hooks: booking prices the deposit from the restaurant's per-guest rate and refuses
a table taken in the service; a no-show keeps the deposit and counts against the diner."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("restaurant.book")
def book(ctx: ToolContext, args: dict) -> dict:
    svc = ctx.require("service", args["service_id"])
    taken = ctx.select("reservation", {"service_id": svc["service_id"], "table_id": args["table_id"], "status": "confirmed"}, limit=1)
    if taken:
        raise ToolError(f"table {args['table_id']} is taken in this service")
    rest = ctx.require("restaurant", svc["restaurant_id"])
    return ctx.insert("reservation", {"diner_id": args["diner_id"], "service_id": svc["service_id"],
                                      "table_id": args["table_id"], "party_size": args["party_size"],
                                      "occasion": args["occasion"],
                                      "deposit": args["party_size"] * rest["deposit_per_guest"], "status": "confirmed"})


@register_hook("restaurant.no_show")
def no_show(ctx: ToolContext, args: dict) -> dict:
    res = ctx.require("reservation", args["reservation_id"])
    diner = ctx.require("diner", res["diner_id"])
    ctx.update("diner", diner["diner_id"], {"no_shows": diner["no_shows"] + 1})
    return ctx.update("reservation", res["reservation_id"], {"status": "no_show"})
