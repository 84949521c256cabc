-- Schema of the donations demo app. Idempotent (IF NOT EXISTS): run on every start with
-- --init-schema, and by the lab on the primary.

CREATE TABLE IF NOT EXISTS donations (
    id         uuid          PRIMARY KEY,
    amount     numeric(12,2) NOT NULL CHECK (amount > 0),
    country    char(2)       NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    node       text          NOT NULL,  -- the app node that acknowledged the write
    epoch      bigint        NOT NULL,  -- failoverd's lease epoch when it was written
    created_at timestamptz   NOT NULL DEFAULT now()
);

-- The fencing token: failoverd writes its lease epoch here when it promotes this database, so
-- every acknowledged donation says which leadership term wrote it. At most one row (the unique
-- index on a constant): write it with an upsert,
--   INSERT INTO failoverd_epoch VALUES (n) ON CONFLICT ((true)) DO UPDATE SET epoch = EXCLUDED.epoch
-- The app reads COALESCE(max(epoch), 0): no row means epoch 0.
CREATE TABLE IF NOT EXISTS failoverd_epoch (
    epoch bigint NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS failoverd_epoch_one_row ON failoverd_epoch ((true));
