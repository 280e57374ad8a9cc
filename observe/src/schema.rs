//! The JSON Schemas shipped with the repository (`observe/schemas/`) and
//! validation against them: every violation is reported with where it is
//! (a JSON pointer into the document) and what is wrong.

use serde_json::Value;

use crate::ObserveError;

/// A schema: its file name and text.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// File name under `observe/schemas/`.
    pub file: &'static str,
    /// The schema.
    pub text: &'static str,
}

/// The weekly health report's schema.
pub const WEEKLY_REPORT: Schema = Schema {
    file: "observability_weekly_report.schema.json",
    text: include_str!("../schemas/observability_weekly_report.schema.json"),
};

/// The dashboard bundle manifest's schema.
pub const DASHBOARD_MANIFEST: Schema = Schema {
    file: "dashboard_manifest.schema.json",
    text: include_str!("../schemas/dashboard_manifest.schema.json"),
};

/// Checks `doc` (named `document` in errors) against `schema`.
pub fn validate(schema: Schema, document: &str, doc: &Value) -> Result<(), ObserveError> {
    let bad = |errors: Vec<String>| ObserveError::Schema {
        document: document.to_owned(),
        schema: schema.file,
        errors,
    };
    let parsed: Value =
        serde_json::from_str(schema.text).map_err(|e| bad(vec![format!("the schema itself: {e}")]))?;
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&parsed)
        .map_err(|e| bad(vec![format!("the schema itself: {e}")]))?;
    let errors: Vec<String> = validator
        .iter_errors(doc)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!("{}: {e}", if at.is_empty() { "/" } else { &at })
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(bad(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_schemas_compile() {
        for s in [WEEKLY_REPORT, DASHBOARD_MANIFEST] {
            let v: Value = serde_json::from_str(s.text).unwrap();
            jsonschema::validator_for(&v).unwrap();
        }
    }
}
