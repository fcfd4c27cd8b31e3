"""Course platform hooks: enrolment takes a cohort seat and prices the course with an optional
coupon (using one of its uses); dropping frees the seat."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("courses.enroll")
def enroll(ctx: ToolContext, args: dict) -> dict:
    cohort = ctx.require("cohort", args["cohort_id"])
    if cohort["seats_left"] <= 0:
        raise ToolError("the cohort is full")
    course = ctx.require("course", cohort["course_id"])
    price = course["price"]
    code = args.get("coupon_code")
    if code is not None:
        coupon = ctx.require("coupon", code)
        if coupon["uses_left"] <= 0:
            raise ToolError(f"coupon {code} is used up")
        ctx.update("coupon", code, {"uses_left": coupon["uses_left"] - 1})
        price = price * (100 - coupon["percent_off"]) / 100
    ctx.update("cohort", cohort["cohort_id"], {"seats_left": cohort["seats_left"] - 1})
    return ctx.insert("enrollment", {"learner_id": args["learner_id"], "cohort_id": cohort["cohort_id"],
                                     "price_paid": price, "final_grade": None, "enrolled_at": ctx.now,
                                     "status": "active"})


@register_hook("courses.drop")
def drop(ctx: ToolContext, args: dict) -> dict:
    e = ctx.require("enrollment", args["enrollment_id"])
    cohort = ctx.require("cohort", e["cohort_id"])
    ctx.update("cohort", cohort["cohort_id"], {"seats_left": cohort["seats_left"] + 1})
    return ctx.update("enrollment", e["enrollment_id"], {"status": "dropped"})


@register_hook("courses.certify")
def certify(ctx: ToolContext, args: dict) -> dict:
    """One certificate per enrolment: the enrolment moves on to certified."""
    e = ctx.require("enrollment", args["enrollment_id"])
    if e["status"] != "completed":
        raise ToolError(f"enrolment {e['enrollment_id']} is {e['status']}, not completed")
    ctx.update("enrollment", e["enrollment_id"], {"status": "certified"})
    return ctx.insert("certificate", {"enrollment_id": e["enrollment_id"], "issued_on": ctx.now[:10], "status": "valid"})
