-- The tree-order scan (search reindex) reads a category's products by brand, so that a brand's
-- products lie next to each other in the search index.
CREATE INDEX products_category_brand ON products (category_id, brand, id);
