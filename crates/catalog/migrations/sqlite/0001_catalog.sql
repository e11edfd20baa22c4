CREATE TABLE categories (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL,
    parent_id  BLOB REFERENCES categories (id),
    attributes TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Sibling names are unique, case-insensitively (root categories are siblings too).
CREATE UNIQUE INDEX categories_sibling_name ON categories (parent_id, name_key);
CREATE UNIQUE INDEX categories_root_name ON categories (name_key) WHERE parent_id IS NULL;

CREATE TABLE products (
    id             BLOB PRIMARY KEY,
    sku            TEXT    NOT NULL,
    title          TEXT    NOT NULL,
    description    TEXT    NOT NULL,
    brand          TEXT    NOT NULL,
    category_id    BLOB    NOT NULL REFERENCES categories (id),
    price_amount   INTEGER NOT NULL CHECK (price_amount >= 0),
    price_currency TEXT    NOT NULL,
    attributes     TEXT    NOT NULL,
    images         TEXT    NOT NULL,
    promoted       BOOLEAN NOT NULL,
    seller_id      BLOB    NOT NULL,
    rating_sum     INTEGER NOT NULL DEFAULT 0 CHECK (rating_sum >= 0),
    rating_count   INTEGER NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    created_at     TEXT    NOT NULL,
    updated_at     TEXT    NOT NULL,
    deleted_at     TEXT
);
-- A SKU names one live product; a deleted product's SKU may be reused.
CREATE UNIQUE INDEX products_live_sku ON products (sku) WHERE deleted_at IS NULL;
CREATE INDEX products_category ON products (category_id, id);

CREATE TABLE reviews (
    id                BLOB PRIMARY KEY,
    product_id        BLOB    NOT NULL REFERENCES products (id),
    user_id           BLOB    NOT NULL,
    rating            INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    title             TEXT,
    body              TEXT,
    verified_purchase BOOLEAN NOT NULL,
    created_at        TEXT    NOT NULL,
    CONSTRAINT reviews_one_per_user UNIQUE (product_id, user_id)
);
