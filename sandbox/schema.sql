-- The tables of the PostgreSQL template (made at image build, in single-user mode: one statement a line).
-- orders: the app's user requests; jobs_done: the worker's jobs; deeplops_work: the database's own /work;
-- deeplops_health: its health check's write, emptied each time. Each keeps its last rows only.
-- The app and the worker connect as deeplops, an ordinary role with what they need and no more, so the
-- server keeps its superuser_reserved_connections for the launcher's checks (as postgres) when they fill it.
CREATE TABLE orders (id bigserial PRIMARY KEY, service text NOT NULL, request text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE jobs_done (id bigserial PRIMARY KEY, worker text NOT NULL, job text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE deeplops_work (id bigserial PRIMARY KEY, service text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE deeplops_health (at timestamptz NOT NULL DEFAULT now());
CREATE ROLE deeplops LOGIN;
GRANT SELECT, INSERT, DELETE ON orders, jobs_done TO deeplops;
GRANT USAGE ON SEQUENCE orders_id_seq, jobs_done_id_seq TO deeplops;
