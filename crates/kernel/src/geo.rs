//! Coordinates and distances. Addresses (users), warehouses (inventory) and search's
//! deliverability all speak these types, so a coordinate is validated the same way everywhere.

use serde::{Deserialize, Serialize};

macro_rules! bounded_degrees {
    ($name:ident, $max:expr, $what:literal) => {
        #[derive(Clone, Copy, Debug, PartialEq, PartialOrd, Serialize)]
        #[serde(transparent)]
        pub struct $name(f64);

        impl $name {
            pub fn parse(value: f64) -> Result<$name, String> {
                if value.is_finite() && (-$max..=$max).contains(&value) {
                    Ok($name(value))
                } else {
                    Err(format!(concat!("must be a ", $what, " between -{} and {}"), $max, $max))
                }
            }
            pub fn degrees(self) -> f64 {
                self.0
            }
        }

        impl Eq for $name {}

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = f64::deserialize(deserializer)?;
                $name::parse(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

bounded_degrees!(Latitude, 90.0, "latitude");
bounded_degrees!(Longitude, 180.0, "longitude");

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoPoint {
    pub lat: Latitude,
    pub lon: Longitude,
}

/// Mean Earth radius (IUGG), the usual choice for great-circle distances.
const EARTH_RADIUS_KM: f64 = 6371.0088;

impl GeoPoint {
    pub fn new(lat: f64, lon: f64) -> Result<GeoPoint, String> {
        Ok(GeoPoint { lat: Latitude::parse(lat)?, lon: Longitude::parse(lon)? })
    }

    /// Great-circle distance (haversine); good to well under 1% for delivery radii.
    pub fn distance_km(self, other: GeoPoint) -> f64 {
        let (lat1, lat2) = (self.lat.0.to_radians(), other.lat.0.to_radians());
        let d_lat = lat2 - lat1;
        let d_lon = (other.lon.0 - self.lon.0).to_radians();
        let a = (d_lat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (d_lon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().asin()
    }
}

/// A `lat`/`lon` pair of query parameters: both or neither. Errors name the field.
pub fn optional_point(lat: Option<&str>, lon: Option<&str>) -> Result<Option<GeoPoint>, Vec<(&'static str, String)>> {
    // Text that is not a number fails the range check like an out-of-range number.
    let number = |raw: &str| raw.trim().parse::<f64>().unwrap_or(f64::NAN);
    optional_pair(lat.map(number), lon.map(number))
}

/// A `lat`/`lon` pair of JSON fields: both or neither. Errors name the field.
pub fn optional_pair(lat: Option<f64>, lon: Option<f64>) -> Result<Option<GeoPoint>, Vec<(&'static str, String)>> {
    if lat.is_none() && lon.is_none() {
        return Ok(None);
    }
    let lat = lat.and_then(|v| Latitude::parse(v).ok());
    let lon = lon.and_then(|v| Longitude::parse(v).ok());
    match (lat, lon) {
        (Some(lat), Some(lon)) => Ok(Some(GeoPoint { lat, lon })),
        _ => {
            let mut errors = Vec::new();
            if lat.is_none() {
                errors.push(("lat", "must be a latitude between -90 and 90, given together with lon".into()));
            }
            if lon.is_none() {
                errors.push(("lon", "must be a longitude between -180 and 180, given together with lat".into()));
            }
            Err(errors)
        }
    }
}

/// Where a shipment should go, as far as it is known.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub point: Option<GeoPoint>,
    pub postal_code: Option<String>,
}

impl Destination {
    pub fn is_known(&self) -> bool {
        self.point.is_some() || self.postal_code.is_some()
    }
}

/// Whether an area — within `radius_km` of `center`, or postal codes starting with one of
/// `postal_prefixes` (normalised) — takes in `to`, and how far `to` is from `center` when known.
/// Warehouses' deliveries and delivery partners' service areas are both such areas.
pub fn coverage(center: GeoPoint, radius_km: f64, postal_prefixes: &[String], to: &Destination) -> Coverage {
    let distance_km = to.point.map(|p| center.distance_km(p));
    let by_radius = distance_km.is_some_and(|d| d <= radius_km);
    let by_postal = to.postal_code.as_deref().is_some_and(|code| {
        let code = normalise_postal_code(code);
        postal_prefixes.iter().any(|prefix| code.starts_with(prefix.as_str()))
    });
    Coverage { covers: by_radius || by_postal, distance_km }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coverage {
    pub covers: bool,
    pub distance_km: Option<f64>,
}

/// An area's postal prefixes, normalised, sorted and deduplicated; an invalid one is named by
/// its field (`postal_prefixes[i]`) with the reason.
pub fn postal_prefixes(raw: Vec<String>) -> Result<Vec<String>, (String, &'static str)> {
    let mut out = Vec::new();
    for (i, raw) in raw.iter().enumerate() {
        let prefix = normalise_postal_code(raw);
        if prefix.is_empty() || prefix.len() > 12 || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err((format!("postal_prefixes[{i}]"), "must be 1 to 12 letters, digits or dashes"));
        }
        out.push(prefix);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Postal codes compare without spaces and case ("sw1a 1aa" = "SW1A1AA").
pub fn normalise_postal_code(raw: &str) -> String {
    raw.chars().filter(|c| !c.is_whitespace()).flat_map(char::to_uppercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_area_takes_in_a_place_by_radius_or_postal_prefix() {
        let berlin = GeoPoint::new(52.52, 13.405).unwrap();
        let prefixes = postal_prefixes(vec!["10".into(), " 12".into(), "10".into()]).unwrap();
        assert_eq!(prefixes, ["10", "12"]);
        let potsdam = Destination { point: Some(GeoPoint::new(52.39, 13.06).unwrap()), postal_code: None };
        let near = coverage(berlin, 50.0, &prefixes, &potsdam);
        assert!(near.covers && near.distance_km.unwrap() < 40.0);
        assert!(!coverage(berlin, 10.0, &prefixes, &potsdam).covers);
        let by_code = Destination { point: None, postal_code: Some("10 115".into()) };
        assert!(coverage(berlin, 0.0, &prefixes, &by_code).covers);
        assert_eq!(coverage(berlin, 0.0, &prefixes, &by_code).distance_km, None);
        assert!(!Destination::default().is_known());
        assert_eq!(normalise_postal_code(" sw1a 1aa"), "SW1A1AA");
        assert_eq!(postal_prefixes(vec!["".into()]).unwrap_err().0, "postal_prefixes[0]");
    }

    #[test]
    fn coordinates_are_bounded() {
        assert!(Latitude::parse(52.52).is_ok());
        assert!(Latitude::parse(90.5).is_err());
        assert!(Longitude::parse(-180.0).is_ok());
        assert!(Longitude::parse(f64::NAN).is_err());
        assert!(serde_json::from_str::<Latitude>("91").is_err());
    }

    #[test]
    fn distances_match_known_city_pairs() {
        let berlin = GeoPoint::new(52.5200, 13.4050).unwrap();
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        let d = berlin.distance_km(paris);
        assert!((870.0..890.0).contains(&d), "Berlin–Paris is about 878 km, got {d}");
        assert_eq!(berlin.distance_km(berlin), 0.0);
        assert!((berlin.distance_km(paris) - paris.distance_km(berlin)).abs() < 1e-9);
    }

    #[test]
    fn pairs_are_both_or_neither() {
        assert_eq!(optional_point(None, None), Ok(None));
        assert!(optional_point(Some("52.5"), Some("13.4")).unwrap().is_some());
        let fields: Vec<_> = optional_point(Some("52.5"), None).unwrap_err().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["lon"]);
        let fields: Vec<_> =
            optional_point(Some("abc"), Some("200")).unwrap_err().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["lat", "lon"]);
        assert!(optional_pair(Some(52.5), Some(13.4)).unwrap().is_some());
        let fields: Vec<_> = optional_pair(Some(91.0), None).unwrap_err().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["lat", "lon"]);
    }
}
