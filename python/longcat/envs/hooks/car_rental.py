"""Car rental hooks: pickup and return change the agreement, the car and the reservation together."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import ToolError, register_hook

if TYPE_CHECKING:  # annotations only: hooks need not import the runtime
    from ..toolgen import ToolContext


@register_hook("car_rental.pick_up")
def pick_up(ctx: ToolContext, args: dict) -> dict:
    res = ctx.require("reservation", args["reservation_id"])
    car = ctx.require("car", args["car_id"])
    if car["status"] != "available":
        raise ToolError(f"car {car['car_id']} is not available")
    ctx.update("car", car["car_id"], {"status": "rented"})
    ctx.update("reservation", res["reservation_id"], {"status": "picked_up"})
    return ctx.insert("agreement", {"reservation_id": res["reservation_id"], "car_id": car["car_id"],
                                    "pickup_mileage": car["mileage"], "return_mileage": None,
                                    "return_location_id": None, "status": "open"})


@register_hook("car_rental.return_car")
def return_car(ctx: ToolContext, args: dict) -> dict:
    ag = ctx.require("agreement", args["agreement_id"])
    if args["return_mileage"] < ag["pickup_mileage"]:
        raise ToolError("return mileage is below pickup mileage")
    ctx.update("car", ag["car_id"], {"status": "available", "mileage": args["return_mileage"],
                                     "location_id": args["return_location_id"]})
    ctx.update("reservation", ag["reservation_id"], {"status": "completed"})
    return ctx.update("agreement", ag["agreement_id"], {"status": "closed", "return_mileage": args["return_mileage"],
                                                        "return_location_id": args["return_location_id"]})
