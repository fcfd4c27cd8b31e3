"""Gym hooks: freezes spend the membership's freeze allowance; class bookings take and free spots."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("gym.freeze")
def freeze(ctx: ToolContext, args: dict) -> dict:
    m = ctx.require("membership", args["membership_id"])
    if m["freeze_days_left"] < args["days"]:
        raise ToolError("not enough freeze days left")
    return ctx.update("membership", m["membership_id"], {"status": "frozen",
                                                          "freeze_days_left": m["freeze_days_left"] - args["days"]})


@register_hook("gym.book_class")
def book_class(ctx: ToolContext, args: dict) -> dict:
    c = ctx.require("gym_class", args["class_id"])
    if c["spots_left"] <= 0:
        raise ToolError("the class is full")
    ctx.update("gym_class", c["class_id"], {"spots_left": c["spots_left"] - 1})
    return ctx.insert("class_booking", {"class_id": c["class_id"], "member_id": args["member_id"], "status": "booked"})


@register_hook("gym.cancel_booking")
def cancel_booking(ctx: ToolContext, args: dict) -> dict:
    b = ctx.require("class_booking", args["booking_id"])
    c = ctx.require("gym_class", b["class_id"])
    ctx.update("gym_class", c["class_id"], {"spots_left": c["spots_left"] + 1})
    return ctx.update("class_booking", b["booking_id"], {"status": "cancelled"})


@register_hook("gym.start_membership")
def start_membership(ctx: ToolContext, args: dict) -> dict:
    for status in ("active", "frozen"):
        if ctx.select("membership", {"member_id": args["member_id"], "status": status}, limit=1):
            raise ToolError(f"member {args['member_id']} already has a {status} membership")
    return ctx.insert("membership", {"member_id": args["member_id"], "plan_id": args["plan_id"],
                                     "starts_on": args["starts_on"], "freeze_days_left": 30, "status": "active"})
