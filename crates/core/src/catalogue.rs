//! The ASIC catalogue: nameplate hashrate, power and efficiency of current SHA-256 miners.
//!
//! The bundled catalogue is `data/asic_models.csv` (vendor spec sheets and price indexes, see
//! `data/ATTRIBUTION.md`), embedded at build time. Users name a model by its full name
//! ("Antminer S21 XP"), with or without the make, in any case, with spaces, dashes or nothing
//! between words ("s21xp", "s21-xp", "Bitmain Antminer S21 XP").

use hashsink_units::{HashRate, JoulesPerTerahash, Usd, Watts};
use serde::Deserialize;

const BUNDLED_CSV: &str = include_str!("../../../data/asic_models.csv");

/// One miner model from the catalogue.
#[derive(Clone, Debug, PartialEq)]
pub struct AsicModel {
    pub make: String,
    pub model: String,
    pub nameplate_hashrate: HashRate,
    pub nameplate_power: Watts,
    pub cooling: String,
    pub price: Option<Usd>,
    pub spec_source: String,
}

impl AsicModel {
    pub fn efficiency(&self) -> JoulesPerTerahash {
        JoulesPerTerahash::of(self.nameplate_power, self.nameplate_hashrate)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("catalogue line {line}: {message}")]
    BadRow { line: u64, message: String },
    #[error("unknown miner model '{name}'; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("'{name}' matches several models ({matches}); write the full model name")]
    Ambiguous { name: String, matches: String },
}

#[derive(Deserialize)]
struct Row {
    make: String,
    model: String,
    hashrate_ths: f64,
    power_w: f64,
    #[allow(dead_code)]
    efficiency_j_per_th: f64,
    cooling: String,
    price_usd_approx: Option<f64>,
    #[allow(dead_code)]
    price_as_of: String,
    spec_source: String,
}

/// The set of models hashsink knows.
#[derive(Clone, Debug)]
pub struct Catalogue {
    models: Vec<AsicModel>,
}

/// Lower-case letters and digits only: "Antminer S21-XP" and "antminer s21xp" compare equal.
fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

impl Catalogue {
    /// The catalogue shipped inside the binary.
    pub fn bundled() -> Self {
        Self::from_csv(BUNDLED_CSV).expect("the bundled catalogue is valid (checked by a test)")
    }

    /// Parses a catalogue in the bundled CSV layout.
    pub fn from_csv(text: &str) -> Result<Self, CatalogueError> {
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let mut models = Vec::new();
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            let line = i as u64 + 2;
            let row = row.map_err(|e| CatalogueError::BadRow {
                line,
                message: e.to_string(),
            })?;
            if !(row.hashrate_ths > 0.0 && row.power_w > 0.0) {
                return Err(CatalogueError::BadRow {
                    line,
                    message: "hashrate_ths and power_w must be positive".into(),
                });
            }
            models.push(AsicModel {
                make: row.make,
                model: row.model,
                nameplate_hashrate: HashRate::from_ths(row.hashrate_ths),
                nameplate_power: Watts(row.power_w),
                cooling: row.cooling,
                price: row.price_usd_approx.map(Usd),
                spec_source: row.spec_source,
            });
        }
        Ok(Self { models })
    }

    pub fn models(&self) -> &[AsicModel] {
        &self.models
    }

    /// Finds a model by name: an exact match of the normalised full name (with or without the
    /// make) wins; otherwise a unique match of the name without the product line ("s21xp").
    pub fn find(&self, name: &str) -> Result<&AsicModel, CatalogueError> {
        let wanted = normalise(name);
        let exact: Vec<&AsicModel> = self
            .models
            .iter()
            .filter(|m| {
                normalise(&m.model) == wanted
                    || normalise(&format!("{} {}", m.make, m.model)) == wanted
            })
            .collect();
        if let [one] = exact.as_slice() {
            return Ok(one);
        }
        // "s21xp" for "Antminer S21 XP": drop the product line (first word of the model name).
        let short: Vec<&AsicModel> = self
            .models
            .iter()
            .filter(|m| {
                let tail = m.model.split_once(' ').map(|(_, t)| t).unwrap_or(&m.model);
                normalise(tail) == wanted
            })
            .collect();
        match short.as_slice() {
            [one] => Ok(one),
            [] => Err(CatalogueError::UnknownModel {
                name: name.to_string(),
                known: self
                    .models
                    .iter()
                    .map(|m| m.model.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            many => Err(CatalogueError::Ambiguous {
                name: name.to_string(),
                matches: many
                    .iter()
                    .map(|m| m.model.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_catalogue_parses_and_efficiency_matches_the_csv_column() {
        let cat = Catalogue::bundled();
        assert_eq!(cat.models().len(), 13);
        let mut reader = csv::Reader::from_reader(BUNDLED_CSV.as_bytes());
        for (row, model) in reader.deserialize::<Row>().zip(cat.models()) {
            let row = row.unwrap();
            let diff = (model.efficiency().j_per_th() - row.efficiency_j_per_th).abs();
            assert!(
                diff < 0.1,
                "{}: {} vs {}",
                model.model,
                model.efficiency(),
                row.efficiency_j_per_th
            );
        }
    }

    #[test]
    fn finds_models_by_loose_names() {
        let cat = Catalogue::bundled();
        assert_eq!(
            cat.find("Antminer S21 XP").unwrap().model,
            "Antminer S21 XP"
        );
        assert_eq!(cat.find("s21xp").unwrap().model, "Antminer S21 XP");
        assert_eq!(cat.find("s21").unwrap().model, "Antminer S21");
        assert_eq!(
            cat.find("bitmain antminer s19j-pro").unwrap().model,
            "Antminer S19j Pro"
        );
        assert_eq!(cat.find("M60S").unwrap().nameplate_power, Watts(3441.0));
    }

    #[test]
    fn unknown_model_lists_the_known_ones() {
        let err = Catalogue::bundled().find("S9").unwrap_err().to_string();
        assert!(err.contains("unknown miner model 'S9'"), "{err}");
        assert!(err.contains("Antminer S21 XP"), "{err}");
    }

    #[test]
    fn bad_row_names_its_line() {
        let text = "make,model,hashrate_ths,power_w,efficiency_j_per_th,cooling,price_usd_approx,price_as_of,spec_source\n\
                    A,B,100,3000,30,air,,2026,x\nA,C,abc,3000,30,air,,2026,x\n";
        let err = Catalogue::from_csv(text).unwrap_err().to_string();
        assert!(err.starts_with("catalogue line 3:"), "{err}");
    }
}
