"""Tests of after.py with a fake identity header: no signoff, no browser.

    python3 -m unittest test_after.py

Flask's test client sends requests from 127.0.0.1 by default, the address
after.py trusts, so a test signs a user in by sending the headers signoff
would send.
"""

import time
import unittest

from after import app


def signed_in(name="alice", auth_time=None):
    if auth_time is None:
        auth_time = int(time.time())
    return {"X-Signoff-User": name, "X-Signoff-Auth-Time": str(auth_time)}


class AfterTests(unittest.TestCase):
    def setUp(self):
        self.client = app.test_client()

    def test_home_shows_the_signed_in_user(self):
        r = self.client.get("/", headers=signed_in("alice"))
        self.assertEqual(r.status_code, 200)
        self.assertIn(b'<b id="user">alice</b>', r.data)

    def test_no_identity_is_refused(self):
        self.assertEqual(self.client.get("/").status_code, 401)

    def test_a_header_from_elsewhere_is_not_believed(self):
        r = self.client.get("/", headers=signed_in("alice"),
                            environ_base={"REMOTE_ADDR": "203.0.113.9"})
        self.assertEqual(r.status_code, 403)

    def test_settings_need_a_fresh_password(self):
        r = self.client.get("/settings", headers=signed_in("alice"))
        self.assertEqual(r.status_code, 200)
        stale = signed_in("alice", auth_time=int(time.time()) - 3600)
        r = self.client.get("/settings?tab=2", headers=stale)
        self.assertEqual(r.status_code, 302)
        self.assertEqual(r.headers["Location"],
                         "/.signoff/reauth?next=%2Fsettings%3Ftab%3D2")


if __name__ == "__main__":
    unittest.main()
