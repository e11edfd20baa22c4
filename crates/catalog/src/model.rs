//! Catalog domain: categories declare typed attributes (inherited by sub-categories), products
//! carry attribute values validated against them. Pure: no I/O.

use chrono::{DateTime, Utc};
use emporium_kernel::error::FieldError;
use emporium_kernel::ids::{CategoryId, OrderId, ProductId, ReviewId, UserId};
use emporium_kernel::money::Money;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttributeKind {
    Text,
    Number,
    Enum,
    Bool,
}

/// What a category says about one attribute of its products.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttributeDef {
    /// Lower-case identifier (`ram_gb`), also the `attr.NAME` search parameter.
    pub name: String,
    #[serde(rename = "type")]
    pub kind: AttributeKind,
    #[serde(default)]
    pub required: bool,
    /// Allowed values of an `enum` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
    /// Display unit of a `number` attribute (`GB`, `kg`, `in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

pub const MAX_ATTRIBUTES: usize = 50;
pub const MAX_ENUM_VALUES: usize = 200;

/// Checks a category's own definitions against each other and against those it inherits.
/// Field names are `attributes[i].…` as the client sent them.
pub fn validate_attribute_defs(own: &[AttributeDef], inherited: &[AttributeDef]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if own.len() > MAX_ATTRIBUTES {
        errors.push(FieldError::new("attributes", format!("at most {MAX_ATTRIBUTES} attributes per category")));
    }
    let mut seen: HashSet<&str> = inherited.iter().map(|d| d.name.as_str()).collect();
    for (i, def) in own.iter().enumerate() {
        let field = |part: &str| format!("attributes[{i}].{part}");
        let name_ok = (1..=40).contains(&def.name.len())
            && def.name.starts_with(|c: char| c.is_ascii_lowercase())
            && def.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            errors.push(FieldError::new(
                field("name"),
                "must be 1-40 characters of a-z, 0-9 and _, starting with a letter",
            ));
        } else if !seen.insert(def.name.as_str()) {
            errors.push(FieldError::new(
                field("name"),
                format!("{} is already an attribute of this category or a parent", def.name),
            ));
        }
        match (def.kind, &def.values) {
            (AttributeKind::Enum, None) => {
                errors.push(FieldError::new(field("values"), "is required for an enum attribute"))
            }
            (AttributeKind::Enum, Some(values)) => {
                let distinct: HashSet<&String> = values.iter().collect();
                if values.is_empty() || values.len() > MAX_ENUM_VALUES {
                    errors.push(FieldError::new(field("values"), format!("must list 1 to {MAX_ENUM_VALUES} values")));
                } else if distinct.len() != values.len() {
                    errors.push(FieldError::new(field("values"), "must not repeat a value"));
                } else if values.iter().any(|v| v.trim().is_empty() || v.chars().count() > 60) {
                    errors.push(FieldError::new(field("values"), "each value must be 1-60 characters"));
                }
            }
            (_, Some(_)) => errors.push(FieldError::new(field("values"), "only enum attributes have values")),
            (_, None) => {}
        }
        if let Some(unit) = &def.unit {
            if def.kind != AttributeKind::Number {
                errors.push(FieldError::new(field("unit"), "only number attributes have a unit"));
            } else if unit.trim().is_empty() || unit.chars().count() > 20 {
                errors.push(FieldError::new(field("unit"), "must be 1-20 characters"));
            }
        }
    }
    errors
}

/// Validates product attribute values against the category's effective definitions, returning
/// them normalised (enum values in their declared spelling). Errors name `attributes.NAME`.
pub fn validate_attributes(
    defs: &[AttributeDef],
    given: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, Value>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut values = BTreeMap::new();
    for (name, value) in given {
        let field = format!("attributes.{name}");
        let Some(def) = defs.iter().find(|d| &d.name == name) else {
            errors.push(FieldError::new(field, "is not an attribute of this category"));
            continue;
        };
        if value.is_null() {
            continue;
        }
        match check_value(def, value) {
            Ok(v) => {
                values.insert(name.clone(), v);
            }
            Err(message) => errors.push(FieldError::new(field, message)),
        }
    }
    for def in defs.iter().filter(|d| d.required) {
        if !values.contains_key(&def.name) && !errors.iter().any(|e| e.field == format!("attributes.{}", def.name)) {
            errors.push(FieldError::new(format!("attributes.{}", def.name), "is required in this category"));
        }
    }
    if errors.is_empty() { Ok(values) } else { Err(errors) }
}

fn check_value(def: &AttributeDef, value: &Value) -> Result<Value, String> {
    match def.kind {
        AttributeKind::Text => match value.as_str().map(str::trim) {
            Some(s) if !s.is_empty() && s.chars().count() <= 500 => Ok(Value::String(s.to_owned())),
            Some(_) => Err("must be 1-500 characters".into()),
            None => Err("must be a string".into()),
        },
        AttributeKind::Number => match value.as_f64() {
            Some(n) if n.is_finite() => Ok(value.clone()),
            _ => Err("must be a number".into()),
        },
        AttributeKind::Bool => value.as_bool().map(Value::Bool).ok_or_else(|| "must be true or false".into()),
        AttributeKind::Enum => {
            let allowed = def.values.as_deref().unwrap_or_default();
            let given = value.as_str().ok_or("must be a string")?;
            allowed
                .iter()
                .find(|v| v.eq_ignore_ascii_case(given.trim()))
                .map(|v| Value::String(v.clone()))
                .ok_or_else(|| format!("must be one of: {}", allowed.join(", ")))
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Category {
    pub id: CategoryId,
    pub name: String,
    pub parent_id: Option<CategoryId>,
    /// Definitions declared by this category itself (its products also get the ancestors').
    pub attributes: Vec<AttributeDef>,
    pub created_at: DateTime<Utc>,
}

/// A category with its ancestors resolved: the path from the root and every definition in force.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedCategory {
    pub category: Category,
    /// Ids from the root down to this category.
    pub path: Vec<CategoryId>,
    pub path_names: Vec<String>,
    /// Ancestors' definitions first, then this category's own.
    pub attributes: Vec<AttributeDef>,
}

/// Resolves `id` against all categories. `None` if it does not exist.
pub fn resolve_category(all: &[Category], id: CategoryId) -> Option<ResolvedCategory> {
    let by_id: std::collections::HashMap<CategoryId, &Category> = all.iter().map(|c| (c.id, c)).collect();
    let mut chain = Vec::new();
    let mut current = by_id.get(&id).copied();
    while let Some(category) = current {
        // Categories are created under existing parents only, so there are no cycles; the bound
        // guards against corrupted data rather than looping forever.
        if chain.len() > 64 {
            break;
        }
        chain.push(category);
        current = category.parent_id.and_then(|p| by_id.get(&p).copied());
    }
    let leaf = (*chain.first()?).clone();
    chain.reverse();
    Some(ResolvedCategory {
        path: chain.iter().map(|c| c.id).collect(),
        path_names: chain.iter().map(|c| c.name.clone()).collect(),
        attributes: chain.iter().flat_map(|c| c.attributes.iter().cloned()).collect(),
        category: leaf,
    })
}

/// `id` and every category below it.
pub fn descendants_of(all: &[Category], id: CategoryId) -> Vec<CategoryId> {
    let mut result = vec![id];
    let mut i = 0;
    while i < result.len() {
        let parent = result[i];
        result.extend(all.iter().filter(|c| c.parent_id == Some(parent)).map(|c| c.id));
        i += 1;
    }
    result
}

pub const MAX_CATEGORY_DEPTH: usize = 8;

/// A stock-keeping unit: 1-64 characters of letters, digits, `-`, `_`, `.`; upper-cased.
pub fn parse_sku(raw: &str) -> Result<String, &'static str> {
    let sku = raw.trim().to_ascii_uppercase();
    if sku.is_empty() || sku.len() > 64 || !sku.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err("must be 1-64 characters of letters, digits, - _ and .");
    }
    Ok(sku)
}

/// Prices are non-negative and below a sanity cap (10 billion major units).
pub fn parse_price(price: Money) -> Result<Money, &'static str> {
    if price.amount < 0 {
        Err("amount must not be negative")
    } else if price.amount > 1_000_000_000_000 {
        Err("amount is implausibly large")
    } else {
        Ok(price)
    }
}

pub fn parse_rating(rating: i64) -> Result<i32, &'static str> {
    if (1..=5).contains(&rating) { Ok(rating as i32) } else { Err("must be an integer from 1 to 5") }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub sku: String,
    pub title: String,
    pub description: String,
    pub brand: String,
    pub category_id: CategoryId,
    pub price: Money,
    pub attributes: BTreeMap<String, Value>,
    pub images: Vec<String>,
    pub promoted: bool,
    pub seller_id: UserId,
    pub rating: Rating,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Ratings are kept as an integer sum and count so the average never drifts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    pub sum: i64,
    pub count: i64,
}

impl Rating {
    /// Mean rating rounded to two decimals; 0 when unrated.
    pub fn average(&self) -> f64 {
        if self.count == 0 { 0.0 } else { ((self.sum as f64 / self.count as f64) * 100.0).round() / 100.0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Review {
    pub id: ReviewId,
    pub product_id: ProductId,
    pub user_id: UserId,
    pub rating: i32,
    pub title: Option<String>,
    pub body: Option<String>,
    pub verified_purchase: bool,
    pub created_at: DateTime<Utc>,
}

/// Category ids depth first (parents before their children, siblings by name), so a sub-tree's
/// categories are consecutive.
pub fn tree_order(categories: &[Category]) -> Vec<CategoryId> {
    let mut children: HashMap<Option<CategoryId>, Vec<&Category>> = HashMap::new();
    for category in categories {
        children.entry(category.parent_id).or_default().push(category);
    }
    for siblings in children.values_mut() {
        siblings.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    }
    let mut order = Vec::with_capacity(categories.len());
    let mut stack: Vec<CategoryId> = children.get(&None).into_iter().flatten().rev().map(|c| c.id).collect();
    while let Some(id) = stack.pop() {
        order.push(id);
        stack.extend(children.get(&Some(id)).into_iter().flatten().rev().map(|c| c.id));
    }
    // Unreachable from a root only if the tree were broken; their products still count.
    let reached: HashSet<CategoryId> = order.iter().copied().collect();
    order.extend(categories.iter().map(|c| c.id).filter(|id| !reached.contains(id)));
    order
}

/// The largest width or height an uploaded image may have, in pixels.
pub const MAX_IMAGE_SIDE: u32 = 8_000;

/// Decodes a whole uploaded image of the type its first bytes named (`mime`, from
/// `blob::sniff_image`), within limits on its size and on the memory decoding may take; returns
/// its width and height, or why it is not a usable image.
pub fn decode_image(bytes: &[u8], mime: &str) -> Result<(u32, u32), String> {
    let format = match mime {
        "image/jpeg" => image::ImageFormat::Jpeg,
        "image/png" => image::ImageFormat::Png,
        "image/webp" => image::ImageFormat::WebP,
        "image/gif" => image::ImageFormat::Gif,
        other => return Err(format!("{other} is not an accepted image type")),
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(256 * 1024 * 1024);
    reader.limits(limits);
    let image = reader.decode().map_err(|err| match err {
        image::ImageError::Limits(_) => format!("must be at most {MAX_IMAGE_SIDE} × {MAX_IMAGE_SIDE} pixels"),
        _ => "is not a readable image (its content is damaged or not what its first bytes say)".to_owned(),
    })?;
    Ok((image.width(), image.height()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(name: &str, kind: AttributeKind, required: bool) -> AttributeDef {
        AttributeDef { name: name.into(), kind, required, values: None, unit: None }
    }

    fn laptop_defs() -> Vec<AttributeDef> {
        vec![
            AttributeDef { unit: Some("GB".into()), ..def("ram_gb", AttributeKind::Number, true) },
            def("processor", AttributeKind::Text, false),
            AttributeDef {
                values: Some(vec!["Silver".into(), "Black".into()]),
                ..def("colour", AttributeKind::Enum, false)
            },
            def("touchscreen", AttributeKind::Bool, false),
        ]
    }

    fn map(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn valid_attributes_are_normalised() {
        let values = validate_attributes(
            &laptop_defs(),
            &map(json!({"ram_gb": 16, "processor": "  M3 ", "colour": "silver", "touchscreen": false})),
        )
        .unwrap();
        assert_eq!(values["processor"], "M3");
        assert_eq!(values["colour"], "Silver", "enum values take their declared spelling");
        assert_eq!(values["ram_gb"], 16);
    }

    #[test]
    fn invalid_attributes_name_the_attribute() {
        let errors = validate_attributes(
            &laptop_defs(),
            &map(json!({"ram_gb": "lots", "colour": "pink", "touchscreen": "yes", "wheels": 4})),
        )
        .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["attributes.colour", "attributes.ram_gb", "attributes.touchscreen", "attributes.wheels"]);
        assert!(errors[0].message.contains("Silver, Black"));
        let missing = validate_attributes(&laptop_defs(), &map(json!({}))).unwrap_err();
        assert_eq!(missing[0].field, "attributes.ram_gb");
        assert_eq!(missing[0].message, "is required in this category");
    }

    #[test]
    fn attribute_definitions_are_checked() {
        let inherited = vec![def("brand_line", AttributeKind::Text, false)];
        let own = vec![
            def("Bad Name", AttributeKind::Text, false),
            def("brand_line", AttributeKind::Text, false),
            def("size", AttributeKind::Enum, true),
            AttributeDef { values: Some(vec!["a".into()]), ..def("weight", AttributeKind::Number, false) },
            AttributeDef { unit: Some("kg".into()), ..def("note", AttributeKind::Text, false) },
        ];
        let errors = validate_attribute_defs(&own, &inherited);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "attributes[0].name",
                "attributes[1].name",
                "attributes[2].values",
                "attributes[3].values",
                "attributes[4].unit"
            ]
        );
        assert!(validate_attribute_defs(&laptop_defs(), &[]).is_empty());
    }

    fn category(name: &str, parent: Option<&Category>, attributes: Vec<AttributeDef>) -> Category {
        Category {
            id: CategoryId::new(),
            name: name.into(),
            parent_id: parent.map(|p| p.id),
            attributes,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn sub_categories_inherit_attributes() {
        let electronics = category("Electronics", None, vec![def("warranty_years", AttributeKind::Number, false)]);
        let computers = category("Computers", Some(&electronics), vec![]);
        let laptops = category("Laptops", Some(&computers), laptop_defs());
        let books = category("Books", None, vec![]);
        let all = vec![electronics.clone(), computers.clone(), laptops.clone(), books.clone()];
        let resolved = resolve_category(&all, laptops.id).unwrap();
        assert_eq!(resolved.path, vec![electronics.id, computers.id, laptops.id]);
        assert_eq!(resolved.path_names, ["Electronics", "Computers", "Laptops"]);
        assert_eq!(resolved.attributes.len(), 5);
        assert_eq!(resolved.attributes[0].name, "warranty_years");
        let mut below = descendants_of(&all, electronics.id);
        below.sort();
        let mut expected = vec![electronics.id, computers.id, laptops.id];
        expected.sort();
        assert_eq!(below, expected);
        assert!(resolve_category(&all, CategoryId::new()).is_none());
    }

    #[test]
    fn skus_titles_prices_and_ratings() {
        assert_eq!(parse_sku(" lap-13.pro_2 ").unwrap(), "LAP-13.PRO_2");
        assert!(parse_sku("has space").is_err());
        assert!(parse_sku("").is_err());
        let usd = emporium_kernel::money::Currency::USD;
        assert!(parse_price(Money::new(-1, usd)).is_err());
        assert!(parse_price(Money::new(0, usd)).is_ok());
        assert!(parse_rating(0).is_err() && parse_rating(6).is_err() && parse_rating(5).is_ok());
        assert_eq!(Rating { sum: 14, count: 3 }.average(), 4.67);
        assert_eq!(Rating::default().average(), 0.0);
    }

    #[test]
    fn tree_order_keeps_each_sub_tree_together() {
        let home = category("Home", None, vec![]);
        let electronics = category("Electronics", None, vec![]);
        let phones = category("Phones", Some(&electronics), vec![]);
        let laptops = category("Laptops", Some(&electronics), vec![]);
        let gaming = category("Gaming", Some(&laptops), vec![]);
        let kitchen = category("Kitchen", Some(&home), vec![]);
        let all =
            vec![kitchen.clone(), phones.clone(), home.clone(), gaming.clone(), laptops.clone(), electronics.clone()];
        let names: Vec<&str> =
            tree_order(&all).into_iter().map(|id| all.iter().find(|c| c.id == id).unwrap().name.as_str()).collect();
        assert_eq!(names, ["Electronics", "Laptops", "Gaming", "Phones", "Home", "Kitchen"]);
    }

    #[test]
    fn only_whole_images_decode() {
        let mut png = Vec::new();
        image::RgbImage::from_pixel(3, 2, image::Rgb([200, 10, 10]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode_image(&png, "image/png"), Ok((3, 2)));
        let mut junk = png[..16].to_vec();
        junk.extend(std::iter::repeat_n(0xA5, 4096));
        assert!(decode_image(&junk, "image/png").is_err(), "a PNG header followed by junk");
        assert!(decode_image(&png[..png.len() - 20], "image/png").is_err(), "cut short");
        assert!(decode_image(&png, "image/jpeg").is_err(), "not what it was taken for");
    }
}

/// An order's products counted as bought (`bought`, once paid) or no longer (cancelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurchaseChange {
    pub order: OrderId,
    pub user: UserId,
    pub products: Vec<ProductId>,
    pub bought: bool,
}
