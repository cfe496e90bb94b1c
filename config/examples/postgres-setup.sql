-- Mindscape on an external PostgreSQL (15 to 18, pgvector >= 0.8): what an administrator runs once.
--
--   psql -v migrator_password="$(openssl rand -base64 24)" -f config/examples/postgres-setup.sql \
--        "postgresql://postgres@db:5432/postgres"
--
-- Run it as a superuser (or, on a managed service, the administrator role that may create roles
-- and databases and the vector extension). Then `mindscape db upgrade` as mindscape_migrator
-- creates the schema and the two other roles (docs/operations.md: External PostgreSQL).
-- tests/support/external_db.py runs this very file before every external-database test run.
\set ON_ERROR_STOP on

-- Runs the migrations and tenant administration: no superuser, no BYPASSRLS. CREATEROLE lets the
-- first migration create mindscape_app and mindscape_tenant.
CREATE ROLE mindscape_migrator LOGIN CREATEROLE PASSWORD :'migrator_password';

-- Owns the mindscape schema and every object in it. Created here, not by the migration, because
-- from PostgreSQL 16 on a CREATEROLE role may not SET ROLE to a role it created itself (unless
-- createrole_self_grant says so), and the migrations switch to it. Granted by the administrator,
-- the membership carries SET (and INHERIT) on every version from 15 to 18.
CREATE ROLE mindscape_owner NOLOGIN;
GRANT mindscape_owner TO mindscape_migrator;

CREATE DATABASE mindscape OWNER mindscape_migrator;
\connect mindscape
-- Creating an extension needs more than a database owner has (pgvector is not trusted).
CREATE EXTENSION IF NOT EXISTS vector;
