"""Writes the users of before.py's database as JSON lines for
`signoff user import` (docs/migrate-from-flask-login.md).

    python3 export_users.py users.db > users.jsonl
    signoff user import users.jsonl

The Werkzeug hashes are copied as they are: signoff checks them at sign-in
and replaces each with its own Argon2id hash the first time its user signs
in. Admins become members of the group "admins"; inactive users come over
disabled.
"""

import json
import sqlite3
import sys


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 export_users.py USERS.DB > users.jsonl")
    conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    for row in conn.execute("SELECT name, password_hash, is_admin, active FROM users ORDER BY name"):
        print(json.dumps({
            "name": row["name"],
            "hash": row["password_hash"],
            "groups": ["admins"] if row["is_admin"] else [],
            "disabled": not row["active"],
        }))


if __name__ == "__main__":
    main()
