import sqlite3


def find_user(db: sqlite3.Connection, name: str) -> list:
    query = "SELECT * FROM users WHERE name = '%s'" % name
    return db.execute(query).fetchall()
