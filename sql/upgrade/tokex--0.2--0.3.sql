-- tokex 0.2 -> 0.3, run by ALTER EXTENSION tokex UPDATE.
--
-- It turns a 0.2 installation into exactly what CREATE EXTENSION tokex
-- creates at 0.3 (test/upgrade/run.sh compares the two with pg_dump), and
-- keeps every row.  Function bodies are copies of src/sql/*.sql at 0.3
-- (test/upgrade/sync.py copies them): a changed body is replaced in place
-- (CREATE OR REPLACE keeps its grants); a function whose signature changed
-- is dropped and created, and granted below as 90_privileges.sql grants it;
-- a new function is created and its privileges set as 90_privileges.sql
-- sets them.  New columns go last, as in src/sql/, so tables keep their rows.
--
-- Until 0.3 is released, every change to src/sql/ lands here as well (the
-- upgrade check in CI fails until it does; see CONTRIBUTING in README.md).
\echo Use "ALTER EXTENSION tokex UPDATE TO '0.3'" to load this file. \quit

------------------------------------------------------------------------
-- Resources: the downstream token formats of the translation layer
------------------------------------------------------------------------
ALTER TABLE tokex.resource DROP CONSTRAINT resource_token_format_check,
  ADD CONSTRAINT resource_token_format_check
      CHECK (token_format IN ('jwt', 'reference', 'txn_token', 'credential'));
