"""Letting hooks: a listing, its unit and a lease move together (listed -> leased -> vacant)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("real_estate.list_unit")
def list_unit(ctx: ToolContext, args: dict) -> dict:
    unit = ctx.require("unit", args["unit_id"])
    if unit["status"] != "vacant":
        raise ToolError(f"unit {unit['unit_id']} is {unit['status']}")
    ctx.update("unit", unit["unit_id"], {"status": "listed"})
    return ctx.insert("listing", {"listing_ref": args["listing_ref"], "unit_id": unit["unit_id"],
                                  "asking_rent": args["asking_rent"], "status": "active"})


@register_hook("real_estate.withdraw_listing")
def withdraw_listing(ctx: ToolContext, args: dict) -> dict:
    lst = ctx.require("listing", args["listing_id"])
    unit = ctx.require("unit", lst["unit_id"])
    if unit["status"] == "listed":
        ctx.update("unit", unit["unit_id"], {"status": "vacant"})
    return ctx.update("listing", lst["listing_id"], {"status": "withdrawn"})


@register_hook("real_estate.sign_lease")
def sign_lease(ctx: ToolContext, args: dict) -> dict:
    app = ctx.require("application", args["application_id"])
    lst = ctx.require("listing", app["listing_id"])
    unit = ctx.require("unit", lst["unit_id"])
    if unit["status"] != "listed":
        raise ToolError(f"unit {unit['unit_id']} is {unit['status']}")
    ctx.update("unit", unit["unit_id"], {"status": "leased"})
    ctx.update("listing", lst["listing_id"], {"status": "let"})
    return ctx.insert("lease", {"unit_id": unit["unit_id"], "person_id": app["person_id"],
                                "application_id": app["application_id"], "monthly_rent": app["offered_rent"],
                                "deposit": args["deposit"], "starts_on": args["starts_on"], "status": "active"})


@register_hook("real_estate.end_lease")
def end_lease(ctx: ToolContext, args: dict) -> dict:
    lease = ctx.require("lease", args["lease_id"])
    ctx.update("unit", lease["unit_id"], {"status": "vacant"})
    return ctx.update("lease", lease["lease_id"], {"status": "ended"})
