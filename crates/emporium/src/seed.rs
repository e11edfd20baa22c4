//! A realistic, deterministic demo catalog: categories with their attributes, brands, price
//! ranges, and products generated from an index (product `i` is always the same product), so
//! benchmarks and demos are reproducible.

use emporium_catalog::model::{AttributeDef, AttributeKind};
use emporium_catalog::service::ProductDraft;
use emporium_kernel::ids::CategoryId;
use emporium_kernel::money::{Currency, Money};
use serde_json::{Map, Value, json};

pub struct CategorySpec {
    pub name: &'static str,
    pub parent: Option<&'static str>,
    pub attributes: Vec<AttributeDef>,
    /// Product nouns; `None` marks a parent category that holds no products itself.
    pub nouns: Option<&'static [&'static str]>,
    pub brands: &'static [&'static str],
    /// Price range in minor units.
    pub price: (i64, i64),
}

fn attr(name: &str, kind: AttributeKind, required: bool, values: Option<&[&str]>, unit: Option<&str>) -> AttributeDef {
    AttributeDef {
        name: name.into(),
        kind,
        required,
        values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        unit: unit.map(Into::into),
    }
}

const COLOURS: &[&str] = &["Black", "White", "Silver", "Blue", "Red", "Green", "Grey"];

pub fn categories() -> Vec<CategorySpec> {
    use AttributeKind::*;
    let parent =
        |name, attributes| CategorySpec { name, parent: None, attributes, nouns: None, brands: &[], price: (0, 0) };
    vec![
        parent("Electronics", vec![attr("warranty_years", Number, false, None, Some("years"))]),
        CategorySpec {
            name: "Laptops",
            parent: Some("Electronics"),
            attributes: vec![
                attr("ram_gb", Number, true, None, Some("GB")),
                attr("storage_gb", Number, false, None, Some("GB")),
                attr("processor", Enum, false, Some(&["Intel i5", "Intel i7", "Ryzen 5", "Ryzen 7", "M3"]), None),
                attr("screen_in", Number, false, None, Some("in")),
                attr("colour", Enum, false, Some(COLOURS), None),
            ],
            nouns: Some(&["Laptop", "Notebook", "Ultrabook", "Chromebook"]),
            brands: &["Acme", "Zento", "Novabook", "Lumen", "Kestrel", "Orbit"],
            price: (29_900, 349_900),
        },
        CategorySpec {
            name: "Phones",
            parent: Some("Electronics"),
            attributes: vec![
                attr("storage_gb", Number, true, None, Some("GB")),
                attr("colour", Enum, false, Some(COLOURS), None),
            ],
            nouns: Some(&["Smartphone", "Phone", "Mobile"]),
            brands: &["Pixelo", "Galaxon", "Nokra", "Fairfone", "Acme"],
            price: (9_900, 159_900),
        },
        CategorySpec {
            name: "TVs",
            parent: Some("Electronics"),
            attributes: vec![
                attr("screen_in", Number, true, None, Some("in")),
                attr("resolution", Enum, false, Some(&["HD", "4K", "8K"]), None),
            ],
            nouns: Some(&["Television", "Smart TV", "OLED TV", "QLED TV"]),
            brands: &["Sonar", "Vistra", "Lumen", "Galaxon"],
            price: (19_900, 399_900),
        },
        CategorySpec {
            name: "Headphones",
            parent: Some("Electronics"),
            attributes: vec![
                attr("wireless", Bool, false, None, None),
                attr("colour", Enum, false, Some(COLOURS), None),
            ],
            nouns: Some(&["Headphones", "Earbuds", "Headset"]),
            brands: &["Sonar", "Beatbox", "Quietude", "Acme"],
            price: (1_900, 49_900),
        },
        parent("Fashion", vec![]),
        CategorySpec {
            name: "Shirts",
            parent: Some("Fashion"),
            attributes: vec![
                attr("size", Enum, true, Some(&["XS", "S", "M", "L", "XL", "XXL"]), None),
                attr("colour", Enum, false, Some(COLOURS), None),
                attr("material", Enum, false, Some(&["Cotton", "Linen", "Polyester", "Wool"]), None),
            ],
            nouns: Some(&["Shirt", "T-Shirt", "Polo", "Blouse"]),
            brands: &["Threadly", "Northwind", "Loom & Co", "Basics"],
            price: (999, 8_999),
        },
        CategorySpec {
            name: "Shoes",
            parent: Some("Fashion"),
            attributes: vec![
                attr("size_eu", Number, true, None, None),
                attr("colour", Enum, false, Some(COLOURS), None),
            ],
            nouns: Some(&["Sneakers", "Trainers", "Boots", "Loafers"]),
            brands: &["Stride", "Northwind", "Runfast"],
            price: (2_999, 19_999),
        },
        CategorySpec {
            name: "Books",
            parent: None,
            attributes: vec![
                attr("author", Text, true, None, None),
                attr("pages", Number, false, None, None),
                attr("isbn", Text, false, None, None),
            ],
            nouns: Some(&["Novel", "Cookbook", "Guide", "Handbook", "Biography"]),
            brands: &["Penwright Press", "Harbor Books", "Quill House"],
            price: (699, 4_999),
        },
        parent("Grocery", vec![]),
        CategorySpec {
            name: "Rice",
            parent: Some("Grocery"),
            attributes: vec![
                attr("weight_kg", Number, true, None, Some("kg")),
                attr("variety", Enum, false, Some(&["Basmati", "Jasmine", "Arborio", "Brown", "Sushi"]), None),
            ],
            nouns: Some(&["Rice"]),
            brands: &["Golden Field", "Paddy Co", "Riverbend"],
            price: (199, 2_999),
        },
        parent("Home", vec![]),
        CategorySpec {
            name: "Kitchen",
            parent: Some("Home"),
            attributes: vec![attr("material", Enum, false, Some(&["Steel", "Cast Iron", "Ceramic", "Glass"]), None)],
            nouns: Some(&["Kettle", "Frying Pan", "Saucepan", "Knife Set", "Blender"]),
            brands: &["Brew", "Chefmate", "Ironside"],
            price: (1_499, 24_999),
        },
        CategorySpec {
            name: "Furniture",
            parent: Some("Home"),
            attributes: vec![
                attr("material", Enum, false, Some(&["Oak", "Pine", "Steel", "Fabric", "Leather"]), None),
                attr("colour", Enum, false, Some(COLOURS), None),
            ],
            nouns: Some(&["Sofa", "Armchair", "Desk", "Bookshelf", "Dining Table"]),
            brands: &["Hearth", "Oakline", "Nordhem"],
            price: (4_999, 149_999),
        },
    ]
}

const MODELS: &[&str] =
    &["Pro", "Air", "Max", "Lite", "Ultra", "Plus", "Neo", "Prime", "Core", "Edge", "Nova", "Classic"];
const ADJECTIVES: &[&str] = &[
    "lightweight",
    "durable",
    "elegant",
    "compact",
    "powerful",
    "quiet",
    "everyday",
    "premium",
    "affordable",
    "versatile",
];
const AUTHORS: &[&str] = &[
    "Ada Byron",
    "Alan Turing",
    "Grace Hopper",
    "Mary Shelley",
    "Leo Tolstoy",
    "Jane Austen",
    "Toni Morrison",
    "Haruki Murakami",
];

/// splitmix64: tiny, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn number_for(name: &str, rng: &mut Rng) -> Value {
    match name {
        "ram_gb" => json!(rng.pick(&[4, 8, 16, 32, 64])),
        "storage_gb" => json!(rng.pick(&[64, 128, 256, 512, 1024, 2048])),
        "screen_in" => json!(rng.pick(&[11, 13, 14, 15, 16, 17, 32, 43, 55, 65, 75])),
        "weight_kg" => json!(rng.pick(&[0.5, 1.0, 2.0, 5.0, 10.0])),
        "size_eu" => json!(36 + rng.below(12)),
        "pages" => json!(80 + rng.below(1100)),
        "warranty_years" => json!(1 + rng.below(3)),
        _ => json!(rng.below(100)),
    }
}

/// Product `i` of the generated catalog, in one of `leaves` (leaf categories with their ids).
pub fn product(i: u64, leaves: &[(&CategorySpec, CategoryId, Vec<AttributeDef>)]) -> ProductDraft {
    let mut rng = Rng::new(i);
    let (spec, category_id, defs) = &leaves[rng.below(leaves.len() as u64) as usize];
    let brand = *rng.pick(spec.brands);
    let noun = *rng.pick(spec.nouns.unwrap_or(&["Item"]));
    let model = format!("{} {}", rng.pick(MODELS), 1 + rng.below(20));
    let mut attributes = Map::new();
    for def in defs {
        if !def.required && rng.below(4) == 0 {
            continue;
        }
        let value = match def.kind {
            AttributeKind::Number => number_for(&def.name, &mut rng),
            AttributeKind::Enum => json!(rng.pick(def.values.as_deref().unwrap_or_default())),
            AttributeKind::Bool => json!(rng.below(2) == 1),
            AttributeKind::Text if def.name == "isbn" => json!(format!("978{:010}", rng.below(10_000_000_000))),
            AttributeKind::Text => json!(rng.pick(AUTHORS)),
        };
        attributes.insert(def.name.clone(), value);
    }
    let spec_suffix = attributes
        .get("ram_gb")
        .map(|v| format!(" {v}GB"))
        .or_else(|| attributes.get("screen_in").map(|v| format!(" {v}\"")))
        .unwrap_or_default();
    let title = format!("{brand} {model} {noun}{spec_suffix}");
    let adjective = rng.pick(ADJECTIVES);
    let description = format!(
        "A {adjective} {} from {brand}. {title} for everyday use, backed by {brand}'s service.",
        noun.to_lowercase()
    );
    let (min, max) = spec.price;
    // Prices end in 99 like real shelf prices.
    let amount = ((min + rng.below((max - min).max(1) as u64) as i64) / 100) * 100 + 99;
    ProductDraft {
        sku: format!("SEED-{i:08}"),
        title,
        description,
        brand: brand.into(),
        category_id: *category_id,
        price: Money::new(amount, Currency::USD),
        attributes,
        promoted: rng.below(50) == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_catalog::model::validate_attributes;

    fn leaves(specs: &[CategorySpec]) -> Vec<(&CategorySpec, CategoryId, Vec<AttributeDef>)> {
        specs
            .iter()
            .filter(|s| s.nouns.is_some())
            .map(|s| {
                let mut defs: Vec<AttributeDef> = s
                    .parent
                    .map(|p| specs.iter().find(|c| c.name == p).unwrap().attributes.clone())
                    .unwrap_or_default();
                defs.extend(s.attributes.clone());
                (s, CategoryId::new(), defs)
            })
            .collect()
    }

    #[test]
    fn generation_is_deterministic_and_valid() {
        let specs = categories();
        let leaves = leaves(&specs);
        for i in 0..2_000 {
            let a = product(i, &leaves);
            let b = product(i, &leaves);
            assert_eq!(
                (a.title.clone(), a.price, a.attributes.clone()),
                (b.title, b.price, b.attributes),
                "product {i} is stable"
            );
            let (_, _, defs) = leaves.iter().find(|(_, id, _)| *id == a.category_id).unwrap();
            assert!(validate_attributes(defs, &a.attributes).is_ok(), "product {i} passes its category's rules");
            assert!(a.price.amount > 0);
        }
        let titles: std::collections::HashSet<String> = (0..2_000).map(|i| product(i, &leaves).title).collect();
        assert!(titles.len() > 1_000, "titles vary");
    }
}

/// Writing the generated catalog through the catalog service (validation, events and all).
pub mod load {
    use super::{categories, product};
    use crate::app::App;
    use crate::progress::Progress;
    use anyhow::Context;
    use emporium_catalog::api::resolve_category;
    use emporium_catalog::service::NewCategory;
    use emporium_kernel::auth::{AuthUser, Role};
    use emporium_users::model::{Email, Password, PersonName};
    use emporium_users::service::Registration;

    pub const DEMO_SELLER: (&str, &str) = ("seller@demo.emporium.dev", "demo-seller-pass");
    const BATCH: u64 = 1_000;

    /// Adds `count` generated products (after any already there) and returns how many exist.
    pub async fn seed_products(app: &App, count: u64) -> anyhow::Result<i64> {
        let users = app.users_service().context("seeding needs the users service")?;
        let catalog = app.catalog_service().context("seeding needs the catalog service")?;
        let email = Email::parse(DEMO_SELLER.0).map_err(anyhow::Error::msg)?;
        let seller = match users.user_by_email(&email).await? {
            Some(user) => user,
            None => {
                let registration = Registration {
                    email,
                    password: Password::parse(DEMO_SELLER.1).map_err(anyhow::Error::msg)?,
                    name: PersonName::parse("Demo Seller").map_err(anyhow::Error::msg)?,
                };
                users.create_user(registration, vec![Role::Customer, Role::Seller]).await?.user
            }
        };
        // The operator running the command creates the categories and promotes some products;
        // the products belong to the seller (a product's owner is the id that creates it).
        let operator = AuthUser::new(seller.id, vec![Role::Admin, Role::Seller]);

        let specs = categories();
        for spec in &specs {
            let existing = catalog.categories().await?;
            let parent_id = spec.parent.and_then(|p| existing.iter().find(|c| c.name == p).map(|c| c.id));
            if !existing.iter().any(|c| c.name == spec.name && c.parent_id == parent_id) {
                let new = NewCategory { name: spec.name.into(), parent_id, attributes: spec.attributes.clone() };
                catalog
                    .create_category(&operator, new)
                    .await
                    .map_err(|e| anyhow::anyhow!("creating category {}: {e}", spec.name))?;
            }
        }
        let all = catalog.categories().await?;
        let leaves: Vec<_> = specs
            .iter()
            .filter(|s| s.nouns.is_some())
            .filter_map(|s| {
                let category = all.iter().find(|c| c.name == s.name)?;
                let resolved = resolve_category(&all, category.id)?;
                Some((s, category.id, resolved.attributes))
            })
            .collect();

        let start = catalog.count_products().await? as u64;
        let mut progress = Progress::new("seeding products", count);
        let mut done = 0;
        while done < count {
            let n = BATCH.min(count - done);
            let drafts = (start + done..start + done + n).map(|i| product(i, &leaves)).collect();
            catalog.import_products(&operator, drafts).await.map_err(|e| anyhow::anyhow!("importing products: {e}"))?;
            done += n;
            progress.update(done);
        }
        progress.finish(done);
        Ok(catalog.count_products().await?)
    }
}
