-- The groups a user is in (signoff user add --group, signoff user import):
-- their names, sorted and separated by single spaces, '' for none. A group
-- name is 1 to 64 characters from A-Z a-z 0-9 . _ - : (checked by the
-- engine, src/users/mod.rs check_groups), so a space never occurs in one.
-- The column is not called "groups", a reserved word in PostgreSQL.
ALTER TABLE users ADD COLUMN group_names TEXT NOT NULL DEFAULT '';
