"""HR leave hooks: approving leave takes its days from the balance; cancelling approved leave
gives them back."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("hr_leave.approve")
def approve(ctx: ToolContext, args: dict) -> dict:
    req = ctx.require("leave_request", args["request_id"])
    bal = ctx.require("leave_balance", req["balance_id"])
    if bal["days_left"] < req["days"]:
        raise ToolError("not enough days left")
    ctx.update("leave_balance", bal["balance_id"], {"days_left": bal["days_left"] - req["days"]})
    return ctx.update("leave_request", req["request_id"], {"status": "approved", "approver_id": args["approver_id"]})


@register_hook("hr_leave.cancel")
def cancel(ctx: ToolContext, args: dict) -> dict:
    req = ctx.require("leave_request", args["request_id"])
    if req["status"] == "approved":
        bal = ctx.require("leave_balance", req["balance_id"])
        ctx.update("leave_balance", bal["balance_id"], {"days_left": bal["days_left"] + req["days"]})
    return ctx.update("leave_request", req["request_id"], {"status": "cancelled"})
