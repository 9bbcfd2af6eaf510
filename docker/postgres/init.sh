#!/usr/bin/env bash
# Creates one role and one database per service, and the read-only role pipeline_reader on the pipeline store
# (Grafana's data source and the monitoring page in Airflow's API server only read it).
#
# The postgres image runs this from /docker-entrypoint-initdb.d once, when its data volume is still empty;
# later password changes in .env need `ALTER ROLE ... PASSWORD` by hand (or a fresh volume).
# Passwords come from the environment (docker-compose.yml passes them from .env) and reach SQL only as
# psql variables, quoted by format(%L): no password is interpolated into SQL text by the shell.
set -Eeo pipefail

for required in AIRFLOW_DB_PASSWORD MLFLOW_DB_PASSWORD PIPELINE_DB_PASSWORD LABEL_STUDIO_DB_PASSWORD \
    PIPELINE_READER_DB_PASSWORD; do
    if [ -z "${!required}" ]; then
        echo "init.sh: $required is not set (see .env.example)" >&2
        exit 1
    fi
done

# create_db ROLE PASSWORD DATABASE: a login role that owns its database; nobody else may connect to it.
create_db() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$1" -v password="$2" -v db="$3" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I ENCODING %L', :'db', :'role', 'UTF8')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
}

create_db airflow "$AIRFLOW_DB_PASSWORD" airflow
create_db mlflow "$MLFLOW_DB_PASSWORD" mlflow
create_db pipeline "$PIPELINE_DB_PASSWORD" pipeline
create_db labelstudio "$LABEL_STUDIO_DB_PASSWORD" labelstudio

# create_reader ROLE PASSWORD DATABASE OWNER: a login role that may only SELECT, on the tables OWNER has made and
# will make. The store's tables do not exist yet (`pipeline db upgrade` creates them, as role pipeline, from
# airflow-init), hence the default privileges.
create_reader() {
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$3" \
        -v role="$1" -v password="$2" -v db="$3" -v owner="$4" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'role') \gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'role') \gexec
SELECT format('GRANT SELECT ON ALL TABLES IN SCHEMA public TO %I', :'role') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT ON TABLES TO %I',
    :'owner', :'role') \gexec
SQL
}

create_reader pipeline_reader "$PIPELINE_READER_DB_PASSWORD" pipeline pipeline
