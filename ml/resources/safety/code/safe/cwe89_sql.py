import sqlite3


def find_user(db: sqlite3.Connection, name: str) -> list:
    return db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchall()
