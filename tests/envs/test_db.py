import sqlite3

import pytest

from longcat.envs import db


def test_ddl_and_constraints(mini_db):
    dom, conn = mini_db
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")] == \
        ["order", "user"]
    bad = [("order", {"order_id": "O9", "user_id": "U1", "status": "lost", "qty": 1}),        # enum
           ("order", {"order_id": "O9", "user_id": "NOPE", "status": "pending", "qty": 1}),   # foreign key
           ("order", {"order_id": "O9", "user_id": "U1", "status": "pending", "qty": 0}),     # min
           ("order", {"order_id": "O9", "user_id": "U1", "status": "pending", "qty": 1.5}),   # integer
           ("order", {"order_id": "O9", "user_id": "U1", "status": "pending", "qty": 1, "due": "2025-02-30"}),
           ("user", {"user_id": "U9", "email": "a@x.io"}),                                      # unique
           ("user", {"user_id": "U1", "email": "new@x.io"})]                                    # primary key
    h = db.db_hash(conn, dom)
    for entity, row in bad:
        with pytest.raises(sqlite3.IntegrityError):
            db.load(conn, dom, {entity: [row]})
    assert db.db_hash(conn, dom) == h


def test_dump_types(mini_db):
    dom, conn = mini_db
    d = db.dump(conn, dom)
    assert d["order"][1] == {"order_id": "O2", "user_id": "U1", "status": "shipped", "qty": 1, "gift": True,
                             "due": "2025-02-01"}
    assert d["user"][0]["balance"] == 0.0 and isinstance(d["user"][0]["balance"], float)


def test_hash_is_stable_and_sensitive(mini_doc, mini_rows):
    from longcat.envs.spec import parse_domain
    dom = parse_domain(mini_doc, "mini.yaml")
    a, b = db.connect(dom), db.connect(dom)
    rows = mini_rows()
    db.load(a, dom, rows)
    db.load(b, dom, {"user": rows["user"][::-1], "order": rows["order"][::-1]})   # other insertion order
    assert db.db_hash(a, dom) == db.db_hash(b, dom)
    assert db.table_hashes(a, dom) == db.table_hashes(b, dom)
    b.execute("UPDATE \"order\" SET qty = 3 WHERE order_id = 'O1'")
    assert db.db_hash(a, dom) != db.db_hash(b, dom)
    assert db.table_hashes(a, dom)["user"] == db.table_hashes(b, dom)["user"]
    assert db.db_hash(a, dom, ["user"]) == db.db_hash(b, dom, ["user"])


def test_snapshot_restore(mini_db, mini_rows, tmp_path):
    dom, conn = mini_db
    h = db.db_hash(conn, dom)
    snap = db.snapshot(conn)
    conn.execute("DELETE FROM \"order\"")
    assert db.db_hash(conn, dom) != h
    db.restore(conn, snap)
    assert db.db_hash(conn, dom) == h
    conn.execute("UPDATE user SET balance = 5")
    db.restore(conn, snap)          # a snapshot can be restored again
    assert db.db_hash(conn, dom) == h
    # foreign keys stay enforced after a restore
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO \"order\" VALUES ('O9', 'NOPE', 'pending', 1, 0, NULL)")
    # a file-backed database, reopened, keeps its rows
    path = str(tmp_path / "mini.sqlite")
    f = db.connect(dom, path)
    db.load(f, dom, mini_rows())
    f.close()
    g = db.connect(dom, path)
    assert db.db_hash(g, dom) == h
    g.close()


def test_new_id(mini_db):
    dom, conn = mini_db
    assert db.new_id(conn, dom, "order") == "O000003"
    db.load(conn, dom, {"order": [{"order_id": "O000003", "user_id": "U1", "status": "pending", "qty": 1}]})
    assert db.new_id(conn, dom, "order") == "O000004"


def test_state_reads_bind_values(mini_db):
    dom, conn = mini_db
    st = db.DbState(conn, dom)
    assert st.exists("order", {"user_id": "U1", "status": "pending"})
    assert not st.exists("order", {"user_id": "U1' OR '1'='1"})
    assert st.count("order", {"gift": True}) == 1
    assert st.field("order", "O2", "gift") is True
    assert st.field("order", "O404", "gift") is None
    assert st.sum("order", "qty", {"user_id": "U1"}) == 3
