"""The shared versioned-schema opener, on a package of schema files made here."""

import os
import sqlite3
import sys

from twisted.trial.unittest import SynchronousTestCase

from nymtx.schema import SchemaError, open_versioned


class Versioned(SynchronousTestCase):
    def setUp(self):
        # a throwaway package "fakeschema" with schema/v1.sql, v2.sql, v1-to-v2.sql
        root = self.mktemp()
        folder = os.path.join(root, "fakeschema", "schema")
        os.makedirs(folder)
        open(os.path.join(root, "fakeschema", "__init__.py"), "w").close()
        files = {
            "v1.sql": "CREATE TABLE version (version INTEGER NOT NULL);"
                      "CREATE TABLE t (a);INSERT INTO version VALUES (1);",
            "v2.sql": "CREATE TABLE version (version INTEGER NOT NULL);"
                      "CREATE TABLE t (a, b);INSERT INTO version VALUES (2);",
            "v1-to-v2.sql": "ALTER TABLE t ADD COLUMN b; UPDATE t SET b = a * 2;"
                            "UPDATE version SET version = 2;",
        }
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
        sys.path.insert(0, root)
        self.addCleanup(sys.path.remove, root)
        self.addCleanup(sys.modules.pop, "fakeschema", None)
        self.path = os.path.join(root, "db.sqlite")

    def open(self, version=2):
        db = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(db.close)
        return db, open_versioned(db, self.path, "fakeschema", "test store", version)

    def test_new_database_gets_the_newest_schema(self):
        db, before = self.open()
        self.assertEqual(before, 0)
        self.assertEqual(db.execute("SELECT version FROM version").fetchall(), [(2,)])
        db.execute("INSERT INTO t VALUES (1, 2)")

    def test_old_database_is_upgraded_with_its_rows(self):
        db, _ = self.open(version=1)
        db.execute("INSERT INTO t VALUES (21)")
        db, before = self.open()
        self.assertEqual(before, 1)
        self.assertEqual(db.execute("SELECT a, b FROM t").fetchall(), [(21, 42)])

    def test_newer_database_is_refused(self):
        self.open()
        e = self.assertRaises(SchemaError, self.open, 1)
        self.assertIn("version 2, written by a newer nymtx", str(e))
        self.assertIn(self.path, str(e))

    def test_missing_upgrade_step_is_a_clear_error(self):
        self.open(version=1)
        e = self.assertRaises(SchemaError, self.open, 3)
        self.assertIn("cannot upgrade version 2", str(e))

    def test_foreign_database_is_refused(self):
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE other (x)")
        db.commit()
        db.close()
        e = self.assertRaises(SchemaError, self.open)
        self.assertIn("not a nymtx test store", str(e))
