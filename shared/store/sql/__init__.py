"""What the SQL backends (SQLite, PostgreSQL) share, written once: the store's methods (:mod:`.store`),
the write, finalize and purge algorithms (:mod:`.writer`), the reads (:mod:`.reader`) and their
statements (:mod:`.statements`), the layout migration (:mod:`.migrate`). A backend supplies a
:class:`~.driver.SqlDriver` (its SQL and its driver calls) and its transactions.
"""
