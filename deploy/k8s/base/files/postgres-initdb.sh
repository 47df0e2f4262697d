#!/bin/sh
# PostgreSQL init script (runs once, on an empty data directory): create the databases listed in
# SEDTUNE_EXTRA_DATABASES (space- or comma-separated) next to POSTGRES_DB, owned by POSTGRES_USER.
# MLflow and the sedtune job store get a database each (both have a table named "jobs").
# Used by docker-compose.yml (bind mount) and deploy/k8s/base (ConfigMap).
set -eu
for db in $(echo "${SEDTUNE_EXTRA_DATABASES:-}" | tr ',' ' '); do
  echo "postgres-initdb: creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<SQL
SELECT 'CREATE DATABASE "$db" OWNER "$POSTGRES_USER"'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db')\gexec
SQL
done
