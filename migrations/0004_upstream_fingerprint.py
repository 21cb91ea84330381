"""Step 4: what each listed page held, so a resume can tell that the upstream drew a new data set under a run,
and the listing items set aside because their id is not one the journal can hold."""

from sqlite_utils import Database


def migrate(db: Database) -> None:
    db["pages"].add_column("digest", str)  # of the page's items (id, name, born_at); NULL for pages listed before
    db["pages"].add_column("bad_items", str)  # JSON [{"item", "reason"}], NULL when every item was usable
