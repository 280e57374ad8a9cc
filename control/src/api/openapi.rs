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
    info(title = "ml-assets-core control plane", description = "Ops modes and the model registry, with RBAC, two-person approval and audit."),
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

/// Adds to every `/v1` operation the answers the layers around the
/// handlers give, so the document lists every status an operation can
/// return: 401 (no or unknown token), 429 (`RATE_LIMITED`, or
/// `AUTH_THROTTLED` from the edge with `Retry-After`), 500; and for
/// operations with a body, 400 (malformed JSON), 413 (too large) and 415
/// (not JSON). A status a handler documents itself keeps its description,
/// except 429, which always names both codes.
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
