import copy

import pytest

from longcat.envs import db
from longcat.envs.spec import load_domain

MINI = {
    "domain": "mini",
    "description": "a shop with users and orders",
    "now": "2025-01-02T03:04:05",
    "user_held": ["email"],
    "entities": {
        "user": {"primary_key": "user_id", "id_prefix": "U",
                 "fields": {"user_id": {"type": "string"},
                            "email": {"type": "string", "unique": True, "key": "email"},
                            "status": {"type": "enum", "values": ["active", "closed"], "default": "active"},
                            "balance": {"type": "number", "min": 0, "default": 0}}},
        "order": {"primary_key": "order_id", "id_prefix": "O",
                  "fields": {"order_id": {"type": "string"},
                             "user_id": {"type": "string", "ref": "user.user_id"},
                             "status": {"type": "enum", "values": ["pending", "shipped", "cancelled"]},
                             "qty": {"type": "integer", "min": 1},
                             "gift": {"type": "boolean", "default": False},
                             "due": {"type": "date", "nullable": True}}},
    },
    "tools": [
        {"name": "get_user", "kind": "get", "entity": "user", "description": "get a user"},
        {"name": "find_user", "kind": "find_by", "entity": "user", "by": ["email"], "description": "find"},
        {"name": "list_orders", "kind": "list_by", "entity": "order", "by": ["user_id"],
         "optional": ["status"], "description": "list"},
        {"name": "place", "kind": "create", "entity": "order", "fields": ["user_id", "qty"],
         "set": {"status": "pending"}, "description": "place an order",
         "pre": [{"cond": "field(user, $user_id, status) == active", "message": "account closed"}]},
        {"name": "cancel", "kind": "cancel", "entity": "order", "from": ["pending"], "description": "cancel"},
        {"name": "credit", "kind": "adjust", "entity": "user", "field": "balance", "description": "credit"},
        {"name": "drop_user", "kind": "delete", "entity": "user", "description": "delete a user"},
    ],
}


@pytest.fixture
def mini_doc():
    return copy.deepcopy(MINI)


@pytest.fixture(scope="session")
def retail():
    return load_domain("retail")


@pytest.fixture(scope="session")
def airline():
    return load_domain("airline")


def _mini_rows():
    return {"user": [{"user_id": "U1", "email": "a@x.io"}, {"user_id": "U2", "email": "b@x.io", "status": "closed"}],
            "order": [{"order_id": "O1", "user_id": "U1", "status": "pending", "qty": 2},
                      {"order_id": "O2", "user_id": "U1", "status": "shipped", "qty": 1, "gift": True,
                       "due": "2025-02-01"}]}


@pytest.fixture
def mini_db(mini_doc):
    from longcat.envs.spec import parse_domain

    dom = parse_domain(mini_doc, "mini.yaml")
    conn = db.connect(dom)
    db.load(conn, dom, _mini_rows())
    yield dom, conn
    conn.close()


@pytest.fixture
def mini_rows():
    return _mini_rows
