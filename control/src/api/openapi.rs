//! The OpenAPI document's frame (title, security scheme, shared schemas);
//! its paths come from the same list that builds the routes
//! (`api::router`), served at `/openapi.json`.

use utoipa::OpenApi;

/// `{code, message, details}`.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // describes the JSON of `ApiError` for the document only
pub struct ErrorBody {
    /// Stable machine code, e.g. `OPS_APPROVAL_SELF`.
    code: String,
    /// Human message.
    message: String,
    /// Structured detail (may be null).
    details: Option<serde_json::Value>,
}

/// The API description.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "ml-assets-core control plane", description = "Ops modes, the model registry and retraining runs, with RBAC, two-person approval and audit."),
    components(schemas(ErrorBody)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Path ids are what the handlers accept (`error::text_field`): 1 to
/// `ID_MAX` characters, none of them a control character.
fn constrain_path_ids(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::{RefOr, Schema};
    for param in op.parameters.iter_mut().flatten() {
        if !matches!(param.parameter_in, ParameterIn::Path) {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(obj))) = param.schema.as_mut() {
            obj.min_length = Some(1);
            obj.max_length = Some(super::error::ID_MAX);
            obj.pattern = Some("^[^\\x00-\\x1F\\x7F-\\x9F]+$".to_owned());
        }
    }
}

/// Adds to every `/v1` operation the answers the layers around the
/// handlers give, so the document lists every status an operation can
/// return: 401 (no or unknown token), 429 (`RATE_LIMITED`, or
/// `AUTH_THROTTLED` from the edge with `Retry-After`), 500; and for
/// operations with a body, 400 (malformed JSON), 413 (too large), 415
/// (not JSON) and 422 (JSON of the wrong shape). A status a handler documents itself keeps its description,
/// except 429, which always names both codes. Path ids get the constraints
/// the handlers enforce.
pub fn add_edge_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::content::ContentBuilder;
    use utoipa::openapi::{Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        if !path.starts_with("/v1") {
            continue;
        }
        let ops = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for op in ops.into_iter().flatten() {
            constrain_path_ids(op);
            let has_body = op.request_body.is_some();
            let answers = &mut op.responses.responses;
            let mut add = |status: &str, description: &str| {
                answers
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description).into());
            };
            add("401", "missing or unknown token (AUTH_MISSING, AUTH_INVALID)");
            add("500", "internal error (INTERNAL_ERROR)");
            if has_body {
                add("400", "malformed JSON or a field with a control character");
                add("413", "body larger than max_body_bytes (REQUEST_TOO_LARGE)");
                add("415", "body not declared as JSON (REQUEST_NOT_JSON)");
                add("422", "body JSON of the wrong shape (REQUEST_MALFORMED)");
            }
            answers.insert(
                "429".to_owned(),
                error(
                    "rate limited per principal (RATE_LIMITED), or too many failed authentications from this address (AUTH_THROTTLED, with Retry-After)",
                )
                .into(),
            );
        }
    }
}

/// Names the values the server accepts where they are a closed set known
/// when it starts: `action` (the ops actions), `scope` (the universe's
/// strategies and `global`) and a registration's `strategy`, so a request
/// valid by the document is one the server can take. An ops request is one
/// of two shapes: a mode change for a strategy or `global`, or a
/// `rollback` of one strategy (never `global`: a model change is per
/// strategy).
pub fn enumerate_known(doc: &mut utoipa::openapi::OpenApi, strategies: &[String]) {
    use utoipa::openapi::schema::{Object, OneOf};
    use utoipa::openapi::{RefOr, Schema};
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    let values = |v: &[&str]| Some(v.iter().map(|s| serde_json::Value::from(*s)).collect());
    let set = |obj: &mut Object, field: &str, allowed: Option<Vec<serde_json::Value>>| {
        if let Some(RefOr::T(Schema::Object(prop))) = obj.properties.get_mut(field) {
            prop.pattern = None;
            prop.enum_values = allowed;
        }
    };
    let strategies: Vec<&str> = strategies.iter().map(String::as_str).collect();
    for body in ["RegisterBody", "RetrainBody"] {
        if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get_mut(body) {
            set(obj, "strategy", values(&strategies));
        }
    }
    if let Some(RefOr::T(Schema::Object(obj))) = components.schemas.get("OpsRequestBody") {
        use crate::ops::OpsAction;
        let modes: Vec<&str> = OpsAction::ALL
            .iter()
            .filter(|a| **a != OpsAction::Rollback)
            .map(|a| a.as_str())
            .collect();
        let mut scopes = strategies.clone();
        scopes.push("global");
        let mut mode_change = obj.clone();
        set(&mut mode_change, "action", values(&modes));
        set(&mut mode_change, "scope", values(&scopes));
        let mut rollback = obj.clone();
        set(&mut rollback, "action", values(&[OpsAction::Rollback.as_str()]));
        set(&mut rollback, "scope", values(&strategies));
        let mut one_of = OneOf::new();
        one_of.items = vec![mode_change.into(), rollback.into()];
        one_of.description = obj.description.clone();
        components
            .schemas
            .insert("OpsRequestBody".to_owned(), Schema::OneOf(one_of).into());
    }
}
