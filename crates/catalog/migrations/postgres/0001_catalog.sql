CREATE TABLE categories (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL,
    parent_id  UUID REFERENCES categories (id),
    attributes JSONB NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
-- Sibling names are unique, case-insensitively (root categories are siblings too).
CREATE UNIQUE INDEX categories_sibling_name ON categories (parent_id, name_key);
CREATE UNIQUE INDEX categories_root_name ON categories (name_key) WHERE parent_id IS NULL;

CREATE TABLE products (
    id             UUID PRIMARY KEY,
    sku            TEXT    NOT NULL,
    title          TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    brand          TEXT    NOT NULL,
    category_id    UUID    NOT NULL REFERENCES categories (id),
    price_amount   BIGINT  NOT NULL CHECK (price_amount >= 0),
    price_currency TEXT    NOT NULL,
    attributes     JSONB   NOT NULL,
    images         JSONB   NOT NULL,
    promoted       BOOLEAN NOT NULL,
    seller_id      UUID    NOT NULL,
    rating_sum     BIGINT  NOT NULL DEFAULT 0 CHECK (rating_sum >= 0),
    rating_count   BIGINT  NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    deleted_at     TIMESTAMPTZ
);
-- A SKU names one live product; a deleted product's SKU may be reused.
CREATE UNIQUE INDEX products_live_sku ON products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_category ON products (category_id, id);

CREATE TABLE reviews (
    id                UUID PRIMARY KEY,
    product_id        UUID    NOT NULL REFERENCES products (id),
    user_id           UUID    NOT NULL,
    rating            INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title             TEXT,
    body              TEXT,
    verified_purchase BOOLEAN NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL,
    CONSTRAINT reviews_one_per_user UNIQUE (product_id, user_id)
);
