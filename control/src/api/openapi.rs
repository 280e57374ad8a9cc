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
